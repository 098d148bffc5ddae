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
    Exit(String, bool),
}

/// Per-node leases: `<store>/leases/<key>` holds "<pid> <host>" of the run executing the
/// node, created exclusively, so two runs on one store never execute a node twice. A lease
/// whose process is gone (same host, no such pid) is stale and taken over.
fn lease_path(store: &Store, key: &str) -> PathBuf {
    store.root.join("leases").join(key)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The live holder of a node's lease ("<run pid> <host> [<child pid>]"), if any; removes a
/// stale lease (same host, neither process alive: a killed run and its node are both gone).
fn lease_holder(store: &Store, key: &str) -> Option<String> {
    let p = lease_path(store, key);
    let text = std::fs::read_to_string(&p).ok()?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    // An empty lease is one being written right now, or one whose writer died before
    // writing: trust it for a few seconds only.
    if fields.is_empty() {
        let age = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|a| a > std::time::Duration::from_secs(10)) {
            let _ = std::fs::remove_file(&p);
            return None;
        }
        return Some(text);
    }
    let pid = |i: usize| fields.get(i).and_then(|x| x.parse::<u32>().ok());
    let same_host = fields
        .get(1)
        .is_some_and(|h| *h == crate::store::host_name());
    if !same_host {
        return Some(text);
    }
    if pid(0) == Some(std::process::id()) {
        return None;
    }
    if [pid(0), pid(2)].into_iter().flatten().any(pid_alive) {
        Some(text)
    } else {
        let _ = std::fs::remove_file(&p);
        None
    }
}

/// Takes the node's lease for this process: Ok(false) if another live run holds it, an
/// error if the lease cannot be written (a full disk, permissions): the node then fails
/// rather than waiting for a lease nobody holds.
fn take_lease(store: &Store, key: &str) -> Result<bool, String> {
    let p = lease_path(store, key);
    let _ = std::fs::create_dir_all(p.parent().expect("leases dir"));
    let me = format!("{} {}", std::process::id(), crate::store::host_name());
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
    {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(me.as_bytes())
                .and_then(|_| f.sync_all())
                .map(|_| true)
                .map_err(|e| {
                    let _ = std::fs::remove_file(&p);
                    format!("writing the lease {}: {e}", p.display())
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!("creating the lease {}: {e}", p.display())),
    }
}

/// Records the child executing the node in its lease: if this run is killed, the orphaned
/// child keeps the lease alive until it ends, so no second run starts the same node.
fn note_lease_child(store: &Store, key: &str, child: u32) {
    let me = format!(
        "{} {} {child}",
        std::process::id(),
        crate::store::host_name()
    );
    let _ = std::fs::write(lease_path(store, key), me);
}

fn release_lease(store: &Store, key: &str) {
    let _ = std::fs::remove_file(lease_path(store, key));
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
            state.insert(key.clone(), State::Done);
            summary.cached += 1;
            on_event(&Event::Cached {
                key: key.clone(),
                label: node.label(),
            });
        } else {
            state.insert(key.clone(), State::Pending);
        }
    }
    let slots = device_slots(o);
    let cpu_only = slots.iter().all(|s| s.1.is_none());
    let mut free_slots: BTreeSet<usize> = (0..slots.len()).collect();
    let mut prep_busy = false;
    let mut running: BTreeMap<String, (Option<usize>, Instant)> = BTreeMap::new();
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
                state.insert(key.clone(), State::Done);
                summary.cached += 1;
                on_event(&Event::Cached {
                    key: key.clone(),
                    label: node.label(),
                });
                continue;
            }
            if lease_holder(store, key).is_some() {
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
            match take_lease(store, key) {
                Ok(true) => {}
                Ok(false) => {
                    waiting = true;
                    continue;
                }
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
                    continue;
                }
            }
            let spawned = write_spec(store, key, node)
                .map_err(|e| e.to_string())
                .and_then(|_| {
                    let mut cmd = Command::new(&o.exe);
                    cmd.arg("exec").arg(key).arg("--store").arg(&store.root);
                    match slot.and_then(|s| slots[s].1) {
                        Some(gpu) => {
                            cmd.env("CUDA_VISIBLE_DEVICES", gpu.to_string());
                        }
                        None if cpu_only || slot.is_none() => {
                            cmd.arg("--cpu");
                        }
                        None => {}
                    }
                    let err = std::fs::File::create(&log)
                        .map_err(|e| format!("{}: {e}", log.display()))?;
                    cmd.stdout(Stdio::piped())
                        .stderr(Stdio::from(err))
                        .stdin(Stdio::null())
                        .spawn()
                        .map_err(|e| format!("spawning {}: {e}", o.exe.display()))
                });
            match spawned {
                Err(e) => {
                    release_lease(store, key);
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
                    note_lease_child(store, key, child.id());
                    let stdout = child.stdout.take().expect("piped stdout");
                    let (tx, k) = (tx.clone(), key.clone());
                    std::thread::spawn(move || {
                        for line in std::io::BufReader::new(stdout)
                            .lines()
                            .map_while(Result::ok)
                        {
                            let _ = tx.send(Msg::Line(k.clone(), line));
                        }
                        let ok = child.wait().map(|s| s.success()).unwrap_or(false);
                        let _ = tx.send(Msg::Exit(k, ok));
                    });
                    match slot {
                        Some(s) => {
                            free_slots.remove(&s);
                        }
                        None => prep_busy = true,
                    }
                    state.insert(key.clone(), State::Running);
                    running.insert(key.clone(), (slot, Instant::now()));
                    let slot_name = slot.map_or("cpu-prep".to_string(), |s| slots[s].0.clone());
                    on_event(&Event::Started {
                        key: key.clone(),
                        label: node.label(),
                        slot: slot_name,
                    });
                }
            }
        }
        if running.is_empty() && !waiting {
            break;
        }
        // Nodes leased by another run are polled twice a second.
        let msg = if waiting {
            match rx.recv_timeout(std::time::Duration::from_millis(500)) {
                Ok(m) => m,
                Err(_) => continue,
            }
        } else {
            rx.recv().expect("a running child always reports")
        };
        match msg {
            Msg::Line(key, line) => {
                let label = g.node(&key).map(|n| n.label()).unwrap_or_default();
                let data = serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                on_event(&Event::Progress { key, label, data });
            }
            Msg::Exit(key, ok) => {
                release_lease(store, &key);
                let node = g.node(&key).expect("node");
                let (slot, started) = running.remove(&key).expect("was running");
                match slot {
                    Some(s) => {
                        free_slots.insert(s);
                    }
                    None => prep_busy = false,
                }
                if ok && store.is_complete(node.kind(), &key) {
                    state.insert(key.clone(), State::Done);
                    summary.ran += 1;
                    on_event(&Event::Finished {
                        key,
                        label: node.label(),
                        wall_s: started.elapsed().as_secs_f64(),
                    });
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
        let s = crate::suite::load(&suite, &[]).unwrap();
        let g = crate::graph::expand(&s, &|_| Err("no weights file".into())).unwrap();
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
