//! The local launcher: each node is a child process `vtab-orch exec <key>` on this machine;
//! a GPU slot pins the child to one entry of this process's own CUDA_VISIBLE_DEVICES.
use super::state::{Capacity, Slot};
use super::{Gpus, Job, Launcher, Report};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The `vtab-orch` binary to spawn for `exec`.
    pub exe: PathBuf,
    pub store: PathBuf,
    /// The CUDA_VISIBLE_DEVICES value of each GPU position (slot `gpu<i>.*` gets entry i).
    pub gpus: Vec<String>,
    pub per_gpu: usize,
    /// CPU threads shared by the nodes that need no GPU.
    pub cpu_threads: u32,
    /// Device nodes run in one warm `vtab-orch worker` per slot instead of a process each.
    pub warm: bool,
}

/// The GPUs this process sees, as the entries to give a child: the parent's own
/// CUDA_VISIBLE_DEVICES entries (indices, UUIDs or MIG ids) when it is set, else the
/// ordinals `0..count`. `count` is how many devices CUDA reports, which stops at an invalid
/// entry, so only the entries it accepted are used.
pub fn visible_devices(parent: Option<&str>, count: usize) -> Vec<String> {
    match parent {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .take(count)
            .map(str::to_string)
            .collect(),
        None => (0..count).map(|i| i.to_string()).collect(),
    }
}

/// `--gpus` resolved against the visible list: positions in it, not physical ordinals.
pub fn select_gpus(gpus: &Gpus, visible: &[String]) -> Result<Vec<String>, String> {
    match gpus {
        Gpus::None => Ok(Vec::new()),
        Gpus::Auto => Ok(visible.to_vec()),
        Gpus::List(list) => list
            .iter()
            .map(|&p| {
                visible.get(p).cloned().ok_or_else(|| {
                    format!(
                        "--gpus: position {p} does not exist: this process sees {} GPU(s){} (`vtab-orch env` lists them)",
                        visible.len(),
                        if visible.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", visible.join(", "))
                        }
                    )
                })
            })
            .collect(),
    }
}

/// Threads shared by CPU nodes: this machine's, and at least one.
pub fn default_cpu_threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

struct Running {
    child: Arc<Mutex<Child>>,
    slot: Slot,
}

/// A warm worker (see `worker.rs`) and the node it runs now, if any.
struct Worker {
    child: Arc<Mutex<Child>>,
    stdin: ChildStdin,
    busy: Arc<Mutex<Option<String>>>,
}

pub struct LocalLauncher {
    o: LocalOptions,
    tx: Sender<Report>,
    rx: Receiver<Report>,
    running: BTreeMap<String, Running>,
    /// Warm workers by slot name (`gpu0.1`, `cpu`).
    workers: BTreeMap<String, Worker>,
}

impl LocalLauncher {
    pub fn new(o: LocalOptions) -> LocalLauncher {
        let (tx, rx) = channel();
        LocalLauncher {
            o,
            tx,
            rx,
            running: BTreeMap::new(),
            workers: BTreeMap::new(),
        }
    }

    /// Pins a child (a node process or a warm worker) to `slot`'s device.
    fn pin(&self, cmd: &mut Command, slot: Slot) {
        match slot {
            Slot::Gpu { gpu, .. } => {
                cmd.env("CUDA_VISIBLE_DEVICES", &self.o.gpus[gpu]);
            }
            Slot::CpuDevice | Slot::Cpu { .. } | Slot::Cluster => {
                cmd.arg("--cpu");
            }
        }
    }

    /// Hands `job` to its slot's warm worker, starting one if there is none alive.
    fn launch_warm(&mut self, job: &Job) -> Result<(), String> {
        let name = job.slot.to_string();
        let alive = self
            .workers
            .get(&name)
            .is_some_and(|w| matches!(w.child.lock().expect("child lock").try_wait(), Ok(None)));
        if !alive {
            let w = self.spawn_worker(job)?;
            self.workers.insert(name.clone(), w);
        }
        let w = self.workers.get_mut(&name).expect("a worker");
        *w.busy.lock().expect("busy lock") = Some(job.key.clone());
        let a = super::worker::Assignment {
            key: job.key.clone(),
            spec: job.spec.clone(),
            log: job.log.clone(),
            run: Some(job.run.clone()),
            expected_s: job.expected_s,
        };
        let line = serde_json::to_string(&a).expect("assignment serialises");
        writeln!(w.stdin, "{line}")
            .and_then(|_| w.stdin.flush())
            .map_err(|e| format!("handing {} to the {name} worker: {e}", job.key))?;
        self.running.insert(
            job.key.clone(),
            Running {
                child: w.child.clone(),
                slot: job.slot,
            },
        );
        Ok(())
    }

    fn spawn_worker(&self, job: &Job) -> Result<Worker, String> {
        // Until its first node points stderr at that node's log, the worker writes there.
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&job.log)
            .map_err(|e| format!("{}: {e}", job.log.display()))?;
        let mut cmd = Command::new(&self.o.exe);
        cmd.arg("worker").arg("--store").arg(&self.o.store);
        self.pin(&mut cmd, job.slot);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", self.o.exe.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let child = Arc::new(Mutex::new(child));
        let busy: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let (tx, c, b) = (self.tx.clone(), child.clone(), busy.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let exit = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get(super::worker::EXIT_FIELD)?.as_i64());
                let key = match exit {
                    Some(_) => b.lock().expect("busy lock").take(),
                    None => b.lock().expect("busy lock").clone(),
                };
                let Some(key) = key else { continue };
                let _ = tx.send(match exit {
                    Some(code) => Report::Exit {
                        key,
                        code: Some(code as i32),
                        note: None,
                    },
                    None => Report::Line { key, line },
                });
            }
            // The worker ended: the node it was running (if any) ends with it.
            let Some(key) = b.lock().expect("busy lock").take() else {
                return;
            };
            let code = wait_polled(&c);
            let _ = tx.send(Report::Exit {
                key,
                code,
                note: Some("its warm worker process ended while running it".into()),
            });
        });
        Ok(Worker { child, stdin, busy })
    }

    /// Nodes running now.
    pub fn busy(&self) -> usize {
        self.running.len()
    }

    /// Whether node `key` runs here now.
    pub fn runs(&self, key: &str) -> bool {
        self.running.contains_key(key)
    }

    /// The child's command line and environment for `job` (not yet spawned).
    pub fn command(&self, job: &Job) -> Command {
        let mut cmd = Command::new(&self.o.exe);
        cmd.arg("exec")
            .arg(&job.key)
            .arg("--store")
            .arg(&self.o.store)
            .arg("--spec")
            .arg(&job.spec)
            .arg("--run")
            .arg(&job.run);
        self.pin(&mut cmd, job.slot);
        cmd
    }
}

impl Launcher for LocalLauncher {
    fn capacity(&self) -> Capacity {
        Capacity::Local {
            gpus: self.o.gpus.len(),
            per_gpu: self.o.per_gpu.max(1),
            cpu_threads: self.o.cpu_threads.max(1),
        }
    }

    fn launch(&mut self, job: &Job) -> Result<(), String> {
        if self.o.warm && matches!(job.slot, Slot::Gpu { .. } | Slot::CpuDevice) {
            return self.launch_warm(job);
        }
        // Appended: another run's child may be writing this node's log.
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&job.log)
            .map_err(|e| format!("{}: {e}", job.log.display()))?;
        let mut child = self
            .command(job)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", self.o.exe.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let child = Arc::new(Mutex::new(child));
        let (tx, key, c) = (self.tx.clone(), job.key.clone(), child.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(Report::Line {
                    key: key.clone(),
                    line,
                });
            }
            let code = wait_polled(&c);
            let _ = tx.send(Report::Exit {
                key,
                code,
                note: None,
            });
        });
        self.running.insert(
            job.key.clone(),
            Running {
                child,
                slot: job.slot,
            },
        );
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Option<Report> {
        let r = self.rx.recv_timeout(timeout).ok()?;
        if let Report::Exit { key, .. } = &r {
            self.running.remove(key);
        }
        Some(r)
    }

    fn place(&self, key: &str) -> String {
        self.running
            .get(key)
            .map_or_else(|| "?".into(), |r| r.slot.to_string())
    }

    /// Asks every running node to stop (SIGTERM: a training node writes a checkpoint at
    /// the end of its epoch and exits, removing its staging folder), waits up to
    /// `STOP_GRACE` for them, then kills what is left.
    fn cancel_all(&mut self) -> usize {
        let running: Vec<_> = std::mem::take(&mut self.running).into_values().collect();
        let mut n = 0;
        for r in &running {
            let c = r.child.lock().expect("child lock");
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            if unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) } == 0 {
                n += 1;
            }
        }
        let t0 = Instant::now();
        for r in &running {
            reap_within_grace(&mut r.child.lock().expect("child lock"), t0);
        }
        n
    }
}

impl Drop for LocalLauncher {
    /// Idle warm workers end when their stdin closes; reap them.
    fn drop(&mut self) {
        for (_, w) in std::mem::take(&mut self.workers) {
            drop(w.stdin);
            reap_within_grace(&mut w.child.lock().expect("child lock"), Instant::now());
        }
    }
}

/// How long stopped nodes get to checkpoint and exit before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Waits for a child to exit by polling, so that `cancel_all` can take the lock to stop it
/// meanwhile; its exit code (None if a signal ended it).
fn wait_polled(child: &Mutex<Child>) -> Option<i32> {
    loop {
        if let Ok(Some(status)) = child.lock().expect("child lock").try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Gives a child that was asked to stop until `STOP_GRACE` after `t0` to exit, kills it if it
/// has not, and reaps it.
fn reap_within_grace(c: &mut Child, t0: Instant) {
    while matches!(c.try_wait(), Ok(None)) && t0.elapsed() < STOP_GRACE {
        std::thread::sleep(Duration::from_millis(10));
    }
    if matches!(c.try_wait(), Ok(None)) {
        let _ = c.kill();
    }
    let _ = c.wait();
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
