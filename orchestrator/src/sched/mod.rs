//! The scheduler: drives the core state machine (`state`) over the nodes of a [`Work`] with a
//! launcher (`local` child processes or `slurm` jobs), skipping nodes already done, waiting on
//! the leases other runs hold, and reporting events. It prints nothing itself, and knows no
//! node kind: what a node is, where its spec and log go and how the work grows once a node is
//! done are the `Work`'s (`crate::work::GraphWork` for a suite's graph).
pub mod events;
pub mod lease;
pub mod local;
pub mod slurm;
pub mod state;
pub mod worker;

pub use events::Event;
use state::{Capacity, Core, Exit, Launch, NodeSpec, Slot};

use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Exit code of `vtab-orch exec` when another process holds the node's lease (EX_TEMPFAIL).
pub const EXIT_LEASED: i32 = 75;

/// Set by a signal handler (Ctrl-C, SIGTERM): the run cancels what it started and stops.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Where device nodes run (`--gpus`).
#[derive(Debug, Clone, PartialEq)]
pub enum Gpus {
    /// Every GPU visible to this process (CPU when there is none); on Slurm, a GPU per job.
    Auto,
    /// CPU only.
    None,
    /// Positions in the list of GPUs visible to this process (its CUDA_VISIBLE_DEVICES).
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

/// One node handed to a launcher.
#[derive(Debug, Clone)]
pub struct Job {
    pub key: String,
    pub label: String,
    pub kind: &'static str,
    pub slot: Slot,
    pub resources: state::Resources,
    /// The node's spec for `vtab-orch exec --spec`.
    pub spec: PathBuf,
    /// Where the node's stderr goes (appended).
    pub log: PathBuf,
    /// The run launching it (`vtab-orch exec --run`, kept in the node's manifest).
    pub run: String,
    /// Seconds it is expected to take ([`Work::expected_s`]).
    pub expected_s: f64,
}

/// What a launcher reports about the nodes it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A line the node printed on stdout (JSON progress).
    Line { key: String, line: String },
    /// The node's process ended: its exit code (None: killed by a signal, or unknown), and
    /// what the launcher knows about why (a Slurm state).
    Exit {
        key: String,
        code: Option<i32>,
        note: Option<String>,
    },
    /// The launcher runs the node again (a preempted or timed-out cluster job).
    Requeued { key: String, why: String },
    /// The launcher found the node's job, submitted by a driver that died, still queued or
    /// running, and watches it instead of starting the node again.
    Adopted { key: String, job: String },
}

/// Carries nodes out: child processes, cluster jobs. The driver decides what runs when.
pub trait Launcher {
    /// What may run at once.
    fn capacity(&self) -> Capacity;
    /// Starts `job`. An error means it did not start (the node fails with that message).
    fn launch(&mut self, job: &Job) -> Result<(), String>;
    /// The next report, waiting at most `timeout` for one.
    fn wait(&mut self, timeout: Duration) -> Option<Report>;
    /// Where a running node runs, for the terminal (`gpu0.1`, `slurm job 42`).
    fn place(&self, key: &str) -> String;
    /// Stops every node this launcher started that still runs; returns how many.
    fn cancel_all(&mut self) -> usize;
    /// The run is over: let go of what is left idle (a cluster's warm workers).
    fn finish(&mut self) {}
}

#[derive(Debug, Default)]
pub struct Summary {
    pub cached: usize,
    pub ran: usize,
    pub failed: Vec<(String, PathBuf)>,
    pub blocked: usize,
    pub wall_s: f64,
    pub interrupted: bool,
    /// The run record (`<store>/runs/<run-id>.jsonl`).
    pub record: PathBuf,
}

/// The nodes a run schedules, as the scheduler sees them: keys, inputs and resources, and
/// the few things it asks of a node it does not otherwise understand.
pub trait Work {
    /// Every node known now, each after its inputs.
    fn order(&self) -> Vec<String>;
    /// What node `key` reads and needs.
    fn spec(&self, key: &str) -> NodeSpec;
    /// How the terminal names it (`train shape lora s0`).
    fn label(&self, key: &str) -> String;
    /// Its kind's name, for job names (`train`).
    fn kind(&self, key: &str) -> &'static str;
    /// Whether its result is in the store (as this host sees it).
    fn is_done(&self, key: &str) -> bool;
    /// Where its result goes (for messages).
    fn entry(&self, key: &str) -> PathBuf;
    /// Writes what its process reads; returns the spec file it is started with.
    fn prepare(&self, key: &str) -> Result<PathBuf, String>;
    /// Where its process's stderr goes.
    fn log(&self, key: &str) -> PathBuf;
    /// Its process ended: whatever `prepare` wrote for it may go.
    fn ended(&self, key: &str);
    /// Seconds it is expected to take (a warm worker near its time limit leaves it to another).
    fn expected_s(&self, key: &str) -> f64;
    /// The run that launched the process which made its result, and how long that took.
    fn made_by(&self, key: &str) -> Option<(Option<String>, f64)>;
    /// Node `key` is done (`ran`: by this run): the nodes that join the run because of it
    /// (the final runs a select node chose).
    fn grow(&mut self, key: &str, ran: bool) -> Vec<String>;
    /// Node `key` failed (`why`: its log's tail and error) or, with `by`, was blocked by the
    /// failure of node `by`: kept where a tolerant consumer (a select) can read it.
    fn failed(&self, _key: &str, _why: &str, _by: Option<&str>) {}
}

/// How a run treats a store that other hosts may share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// How long a node that ended well may take to show its store entry here (a shared
    /// filesystem's attribute caches) before it counts as failed.
    pub entry_wait: Duration,
    /// When a lease's holder on another host counts as dead.
    pub lease: crate::lease::Timing,
}

/// The default entry wait: well past the 30-60 s attribute caches of NFS and Lustre clients.
pub const DEFAULT_ENTRY_WAIT_S: f64 = 120.0;

impl Default for Options {
    fn default() -> Self {
        Options {
            entry_wait: Duration::from_secs_f64(DEFAULT_ENTRY_WAIT_S),
            lease: crate::lease::Timing::default(),
        }
    }
}

/// Runs every node of `work` not done yet through `launcher`; the work may grow as nodes
/// finish ([`Work::grow`]). `store` holds the run record and the leases.
pub fn run(
    work: &mut dyn Work,
    store: &Store,
    launcher: &mut dyn Launcher,
    opts: Options,
    on_event: &mut dyn FnMut(&Event),
) -> Summary {
    let run_id = events::new_run_id();
    let mut record = events::Record::create(&store.root, &run_id);
    let mut d = Driver {
        run_id: run_id.clone(),
        work,
        store,
        core: Core::new(),
        summary: Summary {
            record: record.path.clone(),
            ..Summary::default()
        },
        on_event: &mut |e: &Event| {
            record.write(e);
            on_event(e);
        },
        began: BTreeMap::new(),
        announced: BTreeSet::new(),
        errors: BTreeMap::new(),
        leases: lease::Waiter::new(store, opts.lease),
        settling: BTreeMap::new(),
        opts,
        adopted: BTreeSet::new(),
    };
    d.go(launcher);
    d.summary
}

struct Driver<'a> {
    run_id: String,
    /// The nodes; they grow as nodes are done.
    work: &'a mut dyn Work,
    store: &'a Store,
    core: Core,
    summary: Summary,
    on_event: &'a mut dyn FnMut(&Event),
    /// Running nodes whose process said it holds the lease: when it did.
    began: BTreeMap<String, Instant>,
    /// Nodes whose wait on another run's lease was reported.
    announced: BTreeSet<String>,
    /// The error a node reported on its progress channel before failing: its log may not
    /// hold it (a full disk cannot take the log line that says so).
    errors: BTreeMap<String, String>,
    leases: lease::Waiter,
    /// Nodes whose process ended well but whose entry this host does not see yet (a shared
    /// filesystem shows it late): until when to look, and what the launcher said.
    settling: BTreeMap<String, (Instant, Option<String>)>,
    opts: Options,
    /// Nodes whose job this run adopted from a driver that died.
    adopted: BTreeSet<String>,
}

impl Driver<'_> {
    fn label(&self, key: &str) -> String {
        self.work.label(key)
    }

    fn emit(&mut self, e: Event) {
        (self.on_event)(&e);
    }

    fn go(&mut self, launcher: &mut dyn Launcher) {
        let t0 = Instant::now();
        let (root, timing) = (self.store.root.clone(), self.opts.lease);
        self.store.clean_stale_staging(
            &|key, host, pid| crate::lease::holds(&root, key, host, pid, timing),
            timing.stale,
        );
        let order = self.work.order();
        let specs: Vec<NodeSpec> = order.iter().map(|k| self.work.spec(k)).collect();
        self.core
            .extend(specs)
            .expect("the work's nodes read only its nodes");
        for key in &order {
            if self.work.is_done(key) {
                self.cached(key);
            }
        }
        let cap = launcher.capacity();
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                let cancelled = launcher.cancel_all();
                self.summary.interrupted = true;
                self.emit(Event::Interrupted { cancelled });
                break;
            }
            self.launch_ready(launcher, &cap);
            if self.core.is_finished() {
                break;
            }
            // Leases freed by other runs make their nodes ready again.
            for key in self.leases.freed() {
                if self.core.lease_free(&key).is_ok() {
                    self.launch_ready(launcher, &cap);
                }
            }
            self.settle();
            let tick = if self.leases.waiting() > 0 || !self.settling.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(500)
            };
            if let Some(r) = launcher.wait(tick) {
                self.on_report(r, launcher);
            }
        }
        launcher.finish();
        self.summary.wall_s = t0.elapsed().as_secs_f64();
    }

    /// Starts whatever the core says fits, again until nothing more does (a node found in
    /// the store frees its slot at once).
    fn launch_ready(&mut self, launcher: &mut dyn Launcher, cap: &Capacity) {
        loop {
            let launches = self.core.next(cap);
            if launches.is_empty() {
                return;
            }
            for l in launches {
                self.launch(l, launcher);
            }
        }
    }

    fn launch(&mut self, l: Launch, launcher: &mut dyn Launcher) {
        // Another run may have finished it meanwhile.
        if self.work.is_done(&l.key) {
            self.cached(&l.key);
            return;
        }
        let log = self.work.log(&l.key);
        let spec = match self.work.prepare(&l.key) {
            Ok(p) => p,
            Err(e) => {
                self.failed(&l.key, log, e);
                return;
            }
        };
        let started = launcher.launch(&Job {
            key: l.key.clone(),
            label: self.work.label(&l.key),
            kind: self.work.kind(&l.key),
            slot: l.slot,
            resources: self.work.spec(&l.key).resources,
            spec,
            log: log.clone(),
            run: self.run_id.clone(),
            expected_s: self.work.expected_s(&l.key),
        });
        if let Err(e) = started {
            self.failed(&l.key, log, e);
        }
    }

    fn on_report(&mut self, r: Report, launcher: &mut dyn Launcher) {
        match r {
            Report::Line { key, line } => {
                let label = self.label(&key);
                let data: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line));
                if let Some(e) = data.get("error").and_then(|e| e.as_str()) {
                    self.errors.insert(key, e.to_string());
                    return;
                }
                if data.get("started").is_some() {
                    if self.began.contains_key(&key) {
                        return; // a requeued job starting again: already reported
                    }
                    self.began.insert(key.clone(), Instant::now());
                    let slot = launcher.place(&key);
                    let devices = data
                        .get("cuda_visible_devices")
                        .and_then(|v| v.as_str())
                        .map(str::to_string);
                    self.emit(Event::Started {
                        key,
                        label,
                        slot,
                        devices,
                    });
                } else {
                    self.emit(Event::Progress { key, label, data });
                }
            }
            Report::Requeued { key, why } => {
                let label = self.label(&key);
                self.emit(Event::Requeued { key, label, why });
            }
            Report::Adopted { key, job } => {
                self.adopted.insert(key.clone());
                let label = self.label(&key);
                self.emit(Event::Adopted { key, label, job });
            }
            Report::Exit { key, code, note } => self.on_exit(&key, code, note),
        }
    }

    fn on_exit(&mut self, key: &str, code: Option<i32>, note: Option<String>) {
        self.work.ended(key);
        let began = self.began.remove(key);
        if code == Some(EXIT_LEASED) {
            // Another run executes it: wait on its lease here, then look again.
            self.core
                .on_exit(key, Exit::Leased)
                .expect("a running node");
            let holder = self.leases.wait_for(key);
            if self.announced.insert(key.to_string()) {
                let label = self.work.label(key);
                self.emit(Event::Waiting {
                    key: key.to_string(),
                    label,
                    holder: holder.map(|h| h.describe()),
                });
            }
            return;
        }
        // Success is the entry in the store, whatever the exit code or side files say.
        if self.work.is_done(key) {
            self.done(key, began);
        } else if code == Some(0) && !self.opts.entry_wait.is_zero() {
            if let Some(t) = began {
                self.began.insert(key.to_string(), t);
            }
            let until = Instant::now() + self.opts.entry_wait;
            self.settling.insert(key.to_string(), (until, note));
        } else {
            self.failed_with_log(key, note);
        }
    }

    /// Nodes that ended well: done once their entry shows, failed past the entry wait.
    fn settle(&mut self) {
        let keys: Vec<String> = self.settling.keys().cloned().collect();
        for key in keys {
            if self.work.is_done(&key) {
                self.settling.remove(&key);
                let began = self.began.remove(&key);
                self.done(&key, began);
            } else if Instant::now() >= self.settling[&key].0 {
                let (_, note) = self.settling.remove(&key).expect("settling");
                self.began.remove(&key);
                let why = format!(
                    "its process ended well, but its store entry {} did not show up here within {:.0} s (on a shared filesystem raise --entry-wait; see the node's log)",
                    self.work.entry(&key).display(),
                    self.opts.entry_wait.as_secs_f64()
                );
                let note = Some(note.map_or(why.clone(), |n| format!("{n}\n{why}")));
                self.failed_with_log(&key, note);
            }
        }
    }

    /// A node whose entry is in the store.
    fn done(&mut self, key: &str, began: Option<Instant>) {
        // None of its output was seen (a shared filesystem shows the job's output late), but
        // its manifest says this run launched it (or this run adopted its job): it ran here.
        let made_by = self.work.made_by(key);
        let ours = made_by
            .as_ref()
            .is_some_and(|(run, _)| run.as_deref() == Some(self.run_id.as_str()))
            || self.adopted.contains(key);
        let began = began.or_else(|| {
            let (_, wall_s) = made_by.filter(|_| ours)?;
            Instant::now().checked_sub(Duration::from_secs_f64(wall_s.max(0.0)))
        });
        match began {
            Some(t) => {
                self.core.on_exit(key, Exit::Done).expect("a running node");
                self.summary.ran += 1;
                let label = self.label(key);
                self.emit(Event::Finished {
                    key: key.to_string(),
                    label,
                    wall_s: t.elapsed().as_secs_f64(),
                });
                self.grow(key, true);
            }
            // Finished by another run between our check and the node's.
            None => self.cached(key),
        }
    }

    /// A node that failed: the tail of its log, the error it reported, the launcher's note.
    fn failed_with_log(&mut self, key: &str, note: Option<String>) {
        let log = self.work.log(key);
        let mut tail = log_tail(&log);
        if let Some(e) = self.errors.remove(key) {
            if !tail.contains(&e) {
                tail = format!("{tail}\nerror: {e}").trim_start().to_string();
            }
        }
        if let Some(n) = note {
            tail = format!("{tail}\n{n}");
        }
        self.failed(key, log, tail);
    }

    fn cached(&mut self, key: &str) {
        self.core.on_exit(key, Exit::Cached).expect("not finished");
        self.summary.cached += 1;
        let label = self.label(key);
        self.emit(Event::Cached {
            key: key.to_string(),
            label,
        });
        self.grow(key, false);
    }

    /// Node `key` is done: the nodes the work adds because of it (the final runs a select
    /// node chose) join the run; those already done count as cached.
    fn grow(&mut self, key: &str, ran: bool) {
        let added = self.work.grow(key, ran);
        if added.is_empty() {
            return;
        }
        let specs: Vec<NodeSpec> = added.iter().map(|k| self.work.spec(k)).collect();
        let blocked = self
            .core
            .extend(specs)
            .expect("finals read only known nodes");
        // A final whose (shared) prep failed earlier in this run.
        self.blocked(blocked);
        for k in added {
            let blocked = self.core.state(&k) == Some(state::State::Blocked);
            if !blocked && self.work.is_done(&k) {
                self.cached(&k);
            }
        }
    }

    /// Counts and reports nodes blocked by a failed input.
    fn blocked(&mut self, blocked: Vec<state::Blocked>) {
        for b in blocked {
            self.work.failed(&b.key, "", Some(&b.by));
            self.summary.blocked += 1;
            let (label, by) = (self.label(&b.key), self.label(&b.by));
            self.emit(Event::Blocked {
                key: b.key,
                label,
                by,
            });
        }
    }

    fn failed(&mut self, key: &str, log: PathBuf, tail: String) {
        // Written before its dependants may start (a select reads why a candidate lost).
        self.work.failed(key, &tail, None);
        let blocked = self
            .core
            .on_exit(key, Exit::Failed)
            .expect("a running node");
        let label = self.label(key);
        self.summary.failed.push((label.clone(), log.clone()));
        self.emit(Event::Failed {
            key: key.to_string(),
            label,
            log,
            tail,
        });
        self.blocked(blocked);
    }
}

/// The last lines of a node's log, with a hint when the GPU ran out of memory.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    if text.contains("out of memory") {
        format!("{tail}\nhint: the GPU ran out of memory; lower --jobs-per-gpu or the suite's batch_size")
    } else {
        tail
    }
}
