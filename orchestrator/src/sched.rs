//! The scheduler: runs a sealed graph in dependency order, skipping cached nodes. Every
//! node runs in a child process (`vtab-orch exec <key>`); device nodes take a numbered GPU
//! slot (CUDA_VISIBLE_DEVICES pinned for the child's lifetime), prep nodes a CPU lane. A
//! failure blocks only its dependants. It emits events; it prints nothing itself.
use crate::exec::write_spec;
use crate::graph::Graph;
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

/// Where device nodes run.
#[derive(Debug, Clone, PartialEq)]
pub enum Gpus {
    /// Every GPU libtorch sees (CPU when there is none).
    Auto,
    /// CPU only.
    None,
    List(Vec<usize>),
}

impl std::str::FromStr for Gpus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Gpus::Auto),
            "none" => Ok(Gpus::None),
            list => list
                .split(',')
                .map(|x| {
                    x.trim().parse::<usize>().map_err(|_| {
                        format!("--gpus `{s}`: expected auto, none or a list like 0,2")
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Gpus::List),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub gpus: Gpus,
    pub jobs_per_gpu: usize,
    /// The `vtab-orch` binary to spawn for `exec`.
    pub exe: PathBuf,
}

#[derive(Debug, Clone)]
pub enum Event {
    Cached {
        key: String,
        label: String,
    },
    Started {
        key: String,
        label: String,
        slot: String,
    },
    /// A JSON progress line from the child (epoch, loss, img/s, ...).
    Progress {
        key: String,
        label: String,
        data: serde_json::Value,
    },
    Finished {
        key: String,
        label: String,
        wall_s: f64,
    },
    Failed {
        key: String,
        label: String,
        log: PathBuf,
        tail: String,
    },
    Blocked {
        key: String,
        label: String,
        by: String,
    },
    /// Another `vtab-orch run` holds the node's lease; it is retried until done there.
    Waiting {
        key: String,
        label: String,
    },
}

#[derive(Debug, Default)]
pub struct Summary {
    pub cached: usize,
    pub ran: usize,
    pub failed: Vec<(String, PathBuf)>,
    pub blocked: usize,
    pub wall_s: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Pending,
    Running,
    Done,
    Failed,
    Blocked,
}

enum Msg {
    Line(String, String),
    /// The child's exit code (None: killed by a signal).
    Exit(String, Option<i32>),
}

/// Exit code of `vtab-orch exec` when another process holds the node's lease (EX_TEMPFAIL).
pub const EXIT_LEASED: i32 = 75;
/// How long a node leased by another run waits before it is tried again.
const LEASE_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Records a node found in the store and reports it.
fn mark_cached(
    state: &mut BTreeMap<String, State>,
    summary: &mut Summary,
    on_event: &mut dyn FnMut(&Event),
    key: &str,
    label: String,
) {
    state.insert(key.to_string(), State::Done);
    summary.cached += 1;
    on_event(&Event::Cached {
        key: key.to_string(),
        label,
    });
}

/// Records a failed node and reports it.
fn mark_failed(
    state: &mut BTreeMap<String, State>,
    summary: &mut Summary,
    on_event: &mut dyn FnMut(&Event),
    key: &str,
    label: String,
    log: PathBuf,
    tail: String,
) {
    state.insert(key.to_string(), State::Failed);
    summary.failed.push((label.clone(), log.clone()));
    on_event(&Event::Failed {
        key: key.to_string(),
        label,
        log,
        tail,
    });
}

/// Slot names for device nodes: `gpu<i>` repeated `jobs_per_gpu` times, or one `cpu` slot.
fn device_slots(o: &RunOptions) -> Vec<(String, Option<usize>)> {
    let gpus: Vec<usize> = match &o.gpus {
        Gpus::None => Vec::new(),
        Gpus::List(l) => l.clone(),
        Gpus::Auto => (0..tch::Cuda::device_count().max(0) as usize).collect(),
    };
    if gpus.is_empty() {
        return vec![("cpu".into(), None)];
    }
    gpus.iter()
        .flat_map(|g| (0..o.jobs_per_gpu.max(1)).map(move |j| (format!("gpu{g}.{j}"), Some(*g))))
        .collect()
}

pub fn run(g: &Graph, store: &Store, o: &RunOptions, on_event: &mut dyn FnMut(&Event)) -> Summary {
    let t0 = Instant::now();
    store.clean_stale_staging();
    let mut summary = Summary::default();
    let order = g.topo();
    let mut state: BTreeMap<String, State> = BTreeMap::new();
    for key in &order {
        let node = g.node(key).expect("node");
        if store.is_complete(node.kind(), key) {
            mark_cached(&mut state, &mut summary, on_event, key, node.label());
        } else {
            state.insert(key.clone(), State::Pending);
        }
    }
    let slots = device_slots(o);
    let cpu_only = slots.iter().all(|s| s.1.is_none());
    let mut free_slots: BTreeSet<usize> = (0..slots.len()).collect();
    let mut prep_busy = false;
    // key -> (slot, spawn time, whether the child reported holding the lease)
    let mut running: BTreeMap<String, (Option<usize>, Instant, bool)> = BTreeMap::new();
    let mut retry_at: BTreeMap<String, Instant> = BTreeMap::new();
    let mut announced: BTreeSet<String> = BTreeSet::new();
    let (tx, rx) = mpsc::channel::<Msg>();
    let logs = store.root.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    loop {
        // Block what cannot run; start what can.
        let mut waiting = false;
        for key in &order {
            if state[key] != State::Pending {
                continue;
            }
            let node = g.node(key).expect("node");
            let deps = node.deps();
            if let Some(bad) = deps
                .iter()
                .find(|d| matches!(state[*d], State::Failed | State::Blocked))
            {
                state.insert(key.clone(), State::Blocked);
                summary.blocked += 1;
                on_event(&Event::Blocked {
                    key: key.clone(),
                    label: node.label(),
                    by: g.node(bad).map(|n| n.label()).unwrap_or_default(),
                });
                continue;
            }
            if !deps.iter().all(|d| state[d] == State::Done) {
                continue;
            }
            // Another run may have finished it meanwhile, or be running it now.
            if store.is_complete(node.kind(), key) {
                mark_cached(&mut state, &mut summary, on_event, key, node.label());
                continue;
            }
            if retry_at.get(key).is_some_and(|t| Instant::now() < *t) {
                waiting = true;
                continue;
            }
            let slot = if node.uses_device() {
                match free_slots.iter().next().copied() {
                    Some(s) => Some(s),
                    None => continue,
                }
            } else if prep_busy {
                continue;
            } else {
                None
            };
            let log = logs.join(format!("{key}.log"));
            let spawned = write_spec(store, key, node)
                .map_err(|e| e.to_string())
                .and_then(|spec| {
                    let mut cmd = Command::new(&o.exe);
                    cmd.arg("exec")
                        .arg(key)
                        .arg("--store")
                        .arg(&store.root)
                        .arg("--spec")
                        .arg(spec);
                    match slot.and_then(|s| slots[s].1) {
                        Some(gpu) => {
                            cmd.env("CUDA_VISIBLE_DEVICES", gpu.to_string());
                        }
                        None if cpu_only || slot.is_none() => {
                            cmd.arg("--cpu");
                        }
                        None => {}
                    }
                    // Appended: another run's child may be writing this node's log.
                    let err = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .map_err(|e| format!("{}: {e}", log.display()))?;
                    cmd.stdout(Stdio::piped())
                        .stderr(Stdio::from(err))
                        .stdin(Stdio::null())
                        .spawn()
                        .map_err(|e| format!("spawning {}: {e}", o.exe.display()))
                });
            match spawned {
                Err(e) => {
                    mark_failed(
                        &mut state,
                        &mut summary,
                        on_event,
                        key,
                        node.label(),
                        log,
                        e,
                    );
                }
                Ok(mut child) => {
                    let stdout = child.stdout.take().expect("piped stdout");
                    let (tx, k) = (tx.clone(), key.clone());
                    std::thread::spawn(move || {
                        for line in std::io::BufReader::new(stdout)
                            .lines()
                            .map_while(Result::ok)
                        {
                            let _ = tx.send(Msg::Line(k.clone(), line));
                        }
                        let code = child.wait().ok().and_then(|s| s.code());
                        let _ = tx.send(Msg::Exit(k, code));
                    });
                    match slot {
                        Some(s) => {
                            free_slots.remove(&s);
                        }
                        None => prep_busy = true,
                    }
                    state.insert(key.clone(), State::Running);
                    // `Started` is reported when the child says it holds the lease.
                    running.insert(key.clone(), (slot, Instant::now(), false));
                }
            }
        }
        if running.is_empty() && !waiting {
            break;
        }
        // Nodes leased by another run are tried again after LEASE_RETRY.
        let msg = if waiting {
            match rx.recv_timeout(LEASE_RETRY) {
                Ok(m) => m,
                Err(_) => continue,
            }
        } else {
            rx.recv().expect("a running child always reports")
        };
        match msg {
            Msg::Line(key, line) => {
                let label = g.node(&key).map(|n| n.label()).unwrap_or_default();
                let data: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                if data.get("started").is_some() {
                    if let Some(r) = running.get_mut(&key) {
                        r.2 = true;
                        let slot = r.0.map_or("cpu-prep".to_string(), |s| slots[s].0.clone());
                        on_event(&Event::Started { key, label, slot });
                    }
                } else {
                    on_event(&Event::Progress { key, label, data });
                }
            }
            Msg::Exit(key, code) => {
                let _ = std::fs::remove_file(crate::exec::spec_path(store, &key));
                let node = g.node(&key).expect("node");
                let (slot, started, began) = running.remove(&key).expect("was running");
                match slot {
                    Some(s) => {
                        free_slots.insert(s);
                    }
                    None => prep_busy = false,
                }
                if code == Some(EXIT_LEASED) {
                    // Another run is executing it: wait, then look again.
                    state.insert(key.clone(), State::Pending);
                    retry_at.insert(key.clone(), Instant::now() + LEASE_RETRY);
                    if announced.insert(key.clone()) {
                        on_event(&Event::Waiting {
                            key,
                            label: node.label(),
                        });
                    }
                } else if code == Some(0) && store.is_complete(node.kind(), &key) {
                    if began {
                        state.insert(key.clone(), State::Done);
                        summary.ran += 1;
                        on_event(&Event::Finished {
                            key,
                            label: node.label(),
                            wall_s: started.elapsed().as_secs_f64(),
                        });
                    } else {
                        // Finished by another run between our check and the child's.
                        mark_cached(&mut state, &mut summary, on_event, &key, node.label());
                    }
                } else {
                    let log = logs.join(format!("{key}.log"));
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail = text
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    let tail = if text.contains("out of memory") {
                        format!("{tail}\nhint: the GPU ran out of memory; lower --jobs-per-gpu or the suite's batch_size")
                    } else {
                        tail
                    };
                    mark_failed(
                        &mut state,
                        &mut summary,
                        on_event,
                        &key,
                        node.label(),
                        log,
                        tail,
                    );
                }
            }
        }
    }
    summary.wall_s = t0.elapsed().as_secs_f64();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that dies of a CUDA out-of-memory error fails only its node, and the failure
    /// points at --jobs-per-gpu and the batch size. (The child is a stand-in script: CI has
    /// no GPU to run out of.)
    #[test]
    fn an_oom_child_fails_only_its_node_with_a_hint() {
        let dir = std::env::temp_dir().join(format!("vtab-sched-oom-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("fake-vtab-orch");
        std::fs::write(&exe, "#!/bin/sh\necho 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB' >&2\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let suite = dir.join("s.toml");
        std::fs::write(
            &suite,
            "[backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\n[backbone.pretrain]\n\
             [defaults]\nimg_size = 16\n[datasets.a]\nformat = \"synthetic\"\ntask = \"count\"\n[methods.linear]\n",
        )
        .unwrap();
        let g = crate::load::load(&suite, &[], None, crate::numerics::DeviceKind::Cpu)
            .unwrap()
            .graph;
        let store = Store::open(&dir.join("store")).unwrap();
        let mut events = Vec::new();
        let o = RunOptions {
            gpus: Gpus::None,
            jobs_per_gpu: 1,
            exe,
        };
        let summary = run(&g, &store, &o, &mut |e| events.push(e.clone()));
        let failed: Vec<&String> = events
            .iter()
            .filter_map(|e| {
                if let Event::Failed { tail, .. } = e {
                    Some(tail)
                } else {
                    None
                }
            })
            .collect();
        // The three roots (build, two preps) fail; train and eval are blocked, not run.
        assert_eq!(failed.len(), 3, "{events:?}");
        assert!(
            failed
                .iter()
                .all(|t| t.contains("CUDA out of memory") && t.contains("--jobs-per-gpu")),
            "{failed:?}"
        );
        assert_eq!(summary.blocked, 2);
        assert_eq!(summary.ran, 0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
