//! Warm workers on Slurm (`[slurm] workers = N`): pilot jobs running `vtab-orch worker --pool`,
//! each running node after node, so a study of thousands of nodes submits tens of jobs and
//! loads libtorch (and makes a CUDA context) once per worker. The driver and the workers talk
//! through a folder of the store, `<store>/slurm/pool/`, which survives either side's death:
//! - `queue/<gpu|cpu>/<key>.json`: an assignment ([`Assignment`]) the driver wrote;
//! - `running/<key>@<job>.json`: claimed by worker job `<job>` (a rename: one worker wins);
//! - `done/<key>@<job>.json`: `{"code": N}`, the exit code `vtab-orch exec` would have.
//!
//! The node's progress goes to `<store>/logs/<key>.<job>.out`, read at polls. A worker that
//! dies (preempted, node failure, time limit, scancel) loses at most the node it ran: the
//! driver sees its job end and puts that assignment back in the queue; the node resumes from
//! its epoch checkpoint in another worker (whose `exec` takes the dead one's lease over).
use super::super::worker::Assignment;
use super::super::{Job, Report};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A node handed to the pool.
struct Pooled {
    kind: &'static str,
    /// The worker job running it, once one claimed it.
    worker: Option<String>,
    /// Bytes of its output file already read, and an unfinished last line.
    offset: u64,
    partial: String,
    /// Workers that ended while running it.
    lost: u32,
}

pub struct Pool {
    dir: PathBuf,
    store: PathBuf,
    nodes: BTreeMap<String, Pooled>,
    /// Worker job id -> the queue it serves.
    pub pilots: BTreeMap<String, &'static str>,
    /// Node -> the worker job that finished it (its last lines are reported with its end).
    ran_on: BTreeMap<String, String>,
}

/// `(node key, worker job)` of every `<key>@<job>.json` in `<pool>/<sub>` (`running`, `done`).
pub fn claims(pool: &Path, sub: &str) -> Vec<(String, String)> {
    let Ok(rd) = std::fs::read_dir(pool.join(sub)) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (key, job) = name.strip_suffix(".json")?.split_once('@')?;
            Some((key.to_string(), job.to_string()))
        })
        .collect()
}

/// The pool folder of `store`.
pub fn dir_of(store: &Path) -> PathBuf {
    store.join("slurm").join("pool")
}

/// The queues: GPU nodes and CPU nodes have workers of their own.
pub const KINDS: [&str; 2] = ["gpu", "cpu"];

impl Pool {
    pub fn new(store: &Path) -> Pool {
        Pool {
            dir: dir_of(store),
            store: store.to_path_buf(),
            nodes: BTreeMap::new(),
            pilots: BTreeMap::new(),
            ran_on: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn queued_path(&self, kind: &str, key: &str) -> PathBuf {
        self.dir
            .join("queue")
            .join(kind)
            .join(format!("{key}.json"))
    }

    /// Hands `job` to the workers of queue `kind` (written whole, then renamed into place).
    /// A node a worker already runs (claimed for a driver that died) is watched, not queued
    /// again: then the worker's job id.
    pub fn enqueue(&mut self, job: &Job, kind: &'static str) -> Result<Option<String>, String> {
        if let Some((_, worker)) = self
            .claims("running")
            .into_iter()
            .find(|(k, _)| *k == job.key)
        {
            // Its worker is watched too: if it has died, the node goes back to the queue.
            self.pilots.entry(worker.clone()).or_insert(kind);
            self.nodes.insert(
                job.key.clone(),
                Pooled {
                    kind,
                    worker: Some(worker.clone()),
                    offset: 0,
                    partial: String::new(),
                    lost: 0,
                },
            );
            return Ok(Some(worker));
        }
        let a = Assignment {
            key: job.key.clone(),
            spec: job.spec.clone(),
            log: job.log.clone(),
            run: Some(job.run.clone()),
            expected_s: job.expected_s,
        };
        let path = self.queued_path(kind, &job.key);
        let tmp = path.with_extension("tmp");
        std::fs::create_dir_all(path.parent().expect("queue dir"))
            .and_then(|_| std::fs::write(&tmp, serde_json::to_string(&a).expect("serialises")))
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.nodes.insert(
            job.key.clone(),
            Pooled {
                kind,
                worker: None,
                offset: 0,
                partial: String::new(),
                lost: 0,
            },
        );
        Ok(None)
    }

    /// Nodes of queue `kind` not done yet (queued or running).
    pub fn wanted(&self, kind: &str) -> usize {
        self.nodes.values().filter(|n| n.kind == kind).count()
    }

    /// A node of queue `kind` that no worker has claimed yet, if any.
    pub fn waiting(&self, kind: &str) -> Option<String> {
        self.nodes
            .iter()
            .find(|(_, n)| n.kind == kind && n.worker.is_none())
            .map(|(k, _)| k.clone())
    }

    /// Whether node `key` was handed to the pool (running, queued, or finished by a worker).
    pub fn has(&self, key: &str) -> bool {
        self.nodes.contains_key(key) || self.ran_on.contains_key(key)
    }

    /// The worker job running (or that ran) `key`, if one claimed it.
    pub fn worker_of(&self, key: &str) -> Option<&str> {
        match self.nodes.get(key) {
            Some(n) => n.worker.as_deref(),
            None => self.ran_on.get(key).map(String::as_str),
        }
    }

    /// `<key>@<job>` names of a pool subfolder, split.
    fn claims(&self, sub: &str) -> Vec<(String, String)> {
        claims(&self.dir, sub)
    }

    /// One look at the pool folder (at a poll): claims, new output lines, ends.
    pub fn scan(&mut self, out: &mut Vec<Report>) {
        for (key, job) in self.claims("running") {
            if let Some(n) = self.nodes.get_mut(&key) {
                if n.worker.as_deref() != Some(&job) {
                    n.worker = Some(job);
                    n.offset = 0;
                    n.partial.clear();
                }
            }
        }
        let keys: Vec<String> = self.nodes.keys().cloned().collect();
        for key in &keys {
            self.tail(key, out);
        }
        for (key, job) in self.claims("done") {
            let path = self.dir.join("done").join(format!("{key}@{job}.json"));
            if !self.nodes.contains_key(&key) {
                continue; // another driver's, or one this driver stopped watching
            }
            let code = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v.get("code")?.as_i64())
                .map(|c| c as i32);
            if let Some(n) = self.nodes.get_mut(&key) {
                n.worker = Some(job.clone());
            }
            self.tail(&key, out);
            self.nodes.remove(&key);
            self.ran_on.insert(key.clone(), job.clone());
            let _ = std::fs::remove_file(&path);
            out.push(Report::Exit {
                key,
                code,
                note: Some(format!("run by warm worker job {job}")),
            });
        }
    }

    /// New lines of `key`'s output in its worker's file.
    fn tail(&mut self, key: &str, out: &mut Vec<Report>) {
        let Some(n) = self.nodes.get_mut(key) else {
            return;
        };
        let Some(job) = &n.worker else { return };
        let file = self.store.join("logs").join(format!("{key}.{job}.out"));
        let Ok(mut f) = std::fs::File::open(&file) else {
            return;
        };
        let mut buf = String::new();
        if f.seek(SeekFrom::Start(n.offset)).is_ok() && f.read_to_string(&mut buf).is_ok() {
            n.offset += buf.len() as u64;
            n.partial.push_str(&buf);
            while let Some(i) = n.partial.find('\n') {
                let line: String = n.partial.drain(..=i).collect();
                out.push(Report::Line {
                    key: key.to_string(),
                    line: line.trim_end().to_string(),
                });
            }
        }
    }

    /// Worker job `id` ended (`why`): the nodes it had claimed and not finished go back to
    /// the queue, to resume in another worker, up to `max_lost` times per node; a node that
    /// has ended that many workers (it kills them: out of memory, say) fails.
    pub fn pilot_ended(&mut self, id: &str, why: &str, max_lost: u32, out: &mut Vec<Report>) {
        self.pilots.remove(id);
        // A node it finished just before its end is done, not lost.
        self.scan(out);
        let lost: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.worker.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in lost {
            let n = self.nodes.get_mut(&key).expect("pooled");
            let running = self.dir.join("running").join(format!("{key}@{id}.json"));
            let queued = self
                .dir
                .join("queue")
                .join(n.kind)
                .join(format!("{key}.json"));
            n.worker = None;
            n.offset = 0;
            n.partial.clear();
            n.lost += 1;
            if n.lost > max_lost {
                let lost = n.lost;
                let _ = std::fs::remove_file(&running);
                self.nodes.remove(&key);
                out.push(Report::Exit {
                    key,
                    code: None,
                    note: Some(format!(
                        "{lost} warm workers ended while running it (the last, job {id}, ended {why}); \
                         slurm.max_requeues = {max_lost}"
                    )),
                });
                continue;
            }
            if std::fs::rename(&running, &queued).is_ok() {
                out.push(Report::Requeued {
                    key,
                    why: format!("its warm worker job {id} ended {why}; queued again"),
                });
            }
        }
    }

    /// Gives up node `key` (cancelled): its unclaimed assignment goes.
    pub fn forget(&mut self, key: &str) {
        if let Some(n) = self.nodes.remove(key) {
            let _ = std::fs::remove_file(self.queued_path(n.kind, key));
        }
    }

    /// Whether no node of this run is in the pool.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn keys(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::state::{Resources, Slot};

    /// A node whose workers keep ending under it goes back to the queue `max_lost` times,
    /// then fails with what happened; a claim of a live worker is left alone.
    #[test]
    fn a_node_that_keeps_losing_its_workers_fails_after_max_lost() {
        let store = std::env::temp_dir().join(format!("vtab-pool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        let mut pool = Pool::new(&store);
        let job = Job {
            key: "k".into(),
            label: "train x".into(),
            kind: "train",
            slot: Slot::Cluster,
            resources: Resources {
                gpus: 1,
                cpu_threads: 4,
                tiny: false,
            },
            spec: store.join("k.json"),
            log: store.join("k.log"),
            run: "r".into(),
            expected_s: 1.0,
        };
        assert_eq!(pool.enqueue(&job, "gpu").unwrap(), None);
        let dir = pool.dir().to_path_buf();
        let queued = dir.join("queue/gpu/k.json");
        let claim = |job: &str| {
            let running = dir.join("running").join(format!("k@{job}.json"));
            std::fs::create_dir_all(running.parent().unwrap()).unwrap();
            std::fs::rename(&queued, &running).unwrap();
        };
        for (i, job) in ["1", "2"].into_iter().enumerate() {
            claim(job);
            let mut out = Vec::new();
            pool.scan(&mut out);
            assert_eq!(pool.worker_of("k"), Some(job));
            pool.pilot_ended("0", "NODE_FAIL", 2, &mut out);
            assert_eq!(pool.worker_of("k"), Some(job), "another worker's end");
            pool.pilot_ended(job, "OUT_OF_MEMORY", 2, &mut out);
            assert!(queued.exists(), "queued again after loss {}", i + 1);
            assert!(
                matches!(out.last(), Some(Report::Requeued { .. })),
                "{out:?}"
            );
        }
        claim("3");
        let mut out = Vec::new();
        pool.scan(&mut out);
        pool.pilot_ended("3", "OUT_OF_MEMORY", 2, &mut out);
        match out.last() {
            Some(Report::Exit {
                key,
                code: None,
                note: Some(n),
            }) => {
                assert_eq!(key, "k");
                assert!(
                    n.starts_with("3 warm workers ended while running it"),
                    "{n}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(pool.is_empty() && !queued.exists());
        std::fs::remove_dir_all(&store).ok();
    }
}
