//! The local launcher: each node is a child process `vtab-orch exec <key>` on this machine;
//! a GPU slot pins the child to one entry of this process's own CUDA_VISIBLE_DEVICES.
use super::state::{Capacity, Slot};
use super::{Gpus, Job, Launcher, Report};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

pub struct LocalLauncher {
    o: LocalOptions,
    tx: Sender<Report>,
    rx: Receiver<Report>,
    running: BTreeMap<String, Running>,
}

impl LocalLauncher {
    pub fn new(o: LocalOptions) -> LocalLauncher {
        let (tx, rx) = channel();
        LocalLauncher {
            o,
            tx,
            rx,
            running: BTreeMap::new(),
        }
    }

    /// The child's command line and environment for `job` (not yet spawned).
    pub fn command(&self, job: &Job) -> Command {
        let mut cmd = Command::new(&self.o.exe);
        cmd.arg("exec")
            .arg(&job.key)
            .arg("--store")
            .arg(&self.o.store)
            .arg("--spec")
            .arg(&job.spec);
        match job.slot {
            Slot::Gpu { gpu, .. } => {
                cmd.env("CUDA_VISIBLE_DEVICES", &self.o.gpus[gpu]);
            }
            Slot::CpuDevice | Slot::Cpu { .. } | Slot::Cluster => {
                cmd.arg("--cpu");
            }
        }
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
            // Polled, so that `cancel_all` can take the lock to kill it meanwhile.
            let code = loop {
                if let Ok(Some(status)) = c.lock().expect("child lock").try_wait() {
                    break status.code();
                }
                std::thread::sleep(Duration::from_millis(10));
            };
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
        let t0 = std::time::Instant::now();
        for r in &running {
            let mut c = r.child.lock().expect("child lock");
            while matches!(c.try_wait(), Ok(None)) && t0.elapsed() < STOP_GRACE {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        n
    }
}

/// How long stopped nodes get to checkpoint and exit before they are killed.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
