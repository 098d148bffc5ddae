//! The Slurm launcher: one `sbatch` job per node running `vtab-orch exec <key>`, watched by
//! one batched `squeue` call per poll (and `sacct` for the jobs that left the queue); the
//! jobs' output files and exit records are read at those polls only. Every job's comment
//! names its node and store, so that a driver started after one that died adopts the jobs
//! still queued or running instead of submitting them again. Tiny nodes (a select, a view of
//! a decoded split: seconds of work) never get a job: they run beside the driver, as child
//! processes of a local launcher. Cancels only its study's jobs;
//! knows nothing of the graph.
pub mod config;
pub mod poll;
pub mod pool;

pub use config::SlurmConfig;

use super::state::{Capacity, Slot};
use super::{Job, Launcher, Report};
use poll::Phase;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The `vtab-orch` binary the jobs run (on a filesystem the compute nodes see).
    pub exe: PathBuf,
    pub store: PathBuf,
    pub config: SlurmConfig,
    /// `--slurm-arg` values, after the suite's arguments (the last of a repeated option wins).
    pub cli_args: Vec<String>,
    /// GPU nodes ask for `config.gres` (false: `--gpus none`, everything on CPUs).
    pub gpus: bool,
}

/// Polls in a row on which neither squeue nor sacct knows a job before it counts as ended
/// (an empty answer is "unknown", not "gone": accounting may lag or be off).
const UNKNOWN_POLLS: u32 = 5;

/// The comment of every job of a node: how `status`, `cancel` and a later driver find the
/// study's jobs (`squeue --me -o %k`), and which driver submitted it (its lease key).
pub fn comment(key: &str, driver: &str, store: &std::path::Path) -> String {
    format!(
        "vtab-orch node {key} driver {driver} store {}",
        store.display()
    )
}

/// A job's comment written by [`comment`], read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub key: String,
    pub driver: String,
    pub store: String,
}

pub fn parse_comment(c: &str) -> Option<Comment> {
    let rest = c.strip_prefix("vtab-orch node ")?;
    let (key, rest) = rest.split_once(" driver ")?;
    let (driver, store) = rest.split_once(" store ")?;
    let word = |w: &str| !w.is_empty() && !w.contains(' ');
    (word(key) && word(driver)).then(|| Comment {
        key: key.to_string(),
        driver: driver.to_string(),
        store: store.to_string(),
    })
}

/// A job of the study, queued or running.
#[derive(Debug, Clone)]
pub struct StudyJob {
    pub id: String,
    pub listed: poll::Listed,
    /// The lease key of the driver that submitted it.
    pub driver: String,
}

/// The study's jobs queued or running now, by node key. One squeue call per cluster in
/// `clusters` (None: the default one).
pub fn study_jobs(
    store: &std::path::Path,
    clusters: &[Option<String>],
) -> Result<BTreeMap<String, StudyJob>, String> {
    let want = store.display().to_string();
    let mut out = BTreeMap::new();
    for c in clusters {
        for (id, l) in poll::squeue_mine(c.as_deref())? {
            if poll::phase(&l.state) != Phase::Alive {
                continue;
            }
            if let Some(cm) = parse_comment(&l.comment) {
                if cm.store == want {
                    out.insert(
                        cm.key,
                        StudyJob {
                            id,
                            listed: l,
                            driver: cm.driver,
                        },
                    );
                }
            }
        }
    }
    Ok(out)
}

/// Whether the driver with lease key `driver` still runs: its lease (held with heartbeats for
/// the driver's life) is there and alive.
pub fn driver_alive(store: &std::path::Path, driver: &str, timing: crate::lease::Timing) -> bool {
    crate::lease::owner(store, driver).is_some_and(|o| o.alive(timing))
}

/// The clusters a suite's sbatch arguments name (`-M`/`--clusters`), else the default one.
pub fn clusters_of(args: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = if a == "-M" || a == "--clusters" {
            it.next().cloned()
        } else {
            a.strip_prefix("--clusters=")
                .or_else(|| a.strip_prefix("-M"))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        if let Some(v) = v {
            out.extend(v.split(',').map(|c| Some(c.trim().to_string())));
        }
    }
    if out.is_empty() {
        out.push(None);
    }
    out
}

/// Runs `cmd`, killing it after `limit`: None if it could not run, failed or took too long
/// (sacctmgr waits long on a cluster without slurmdbd).
fn output_within(cmd: &mut Command, limit: Duration) -> Option<String> {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => {
                let mut out = String::new();
                child.stdout.take()?.read_to_string(&mut out).ok()?;
                return Some(out);
            }
            Ok(Some(_)) | Err(_) => return None,
            Ok(None) if t0.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The user's submit limit (`MaxSubmitJobs` of their associations, the smallest set), as
/// `sacctmgr` reports it; None where it is unset or cannot be read.
pub fn submit_limit() -> Option<usize> {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()?;
    let out = output_within(
        Command::new("sacctmgr").args([
            "-n",
            "-P",
            "show",
            "assoc",
            &format!("where user={user}"),
            "format=MaxSubmit",
        ]),
        Duration::from_secs(10),
    )?;
    parse_submit_limit(&out)
}

/// The smallest positive number among sacctmgr's lines.
pub fn parse_submit_limit(text: &str) -> Option<usize> {
    text.lines()
        .filter_map(|l| l.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .min()
}

struct InFlight {
    job: Job,
    id: String,
    /// Bytes of the output file already read, and an unfinished last line.
    offset: u64,
    partial: String,
    /// Submissions so far (1 = the first).
    attempts: u32,
    /// Polls in a row on which neither squeue nor sacct knew the job.
    unknown_polls: u32,
    last_state: Option<String>,
    /// Hosts it failed on (NODE_FAIL): its next submission excludes them.
    excluded: BTreeSet<String>,
}

/// A node whose submission sbatch refused for a passing reason (see [`transient_refusal`]):
/// it is submitted again at `next`, with a delay that doubles up to `max_poll_s`.
struct Deferred {
    job: Job,
    /// What [`InFlight::attempts`] will be once it is submitted.
    attempts: u32,
    /// Refusals in a row.
    refusals: u32,
    next: Instant,
}

/// Whether sbatch's refusal says nothing against the job itself: the controller is busy,
/// restarting or unreachable, or the user's submit limit is reached. Such a refusal is retried
/// with back-off and never fails the node; any other refusal (an unknown partition, an
/// impossible request) fails it with sbatch's message.
pub fn transient_refusal(message: &str) -> bool {
    const SIGNS: [&str; 11] = [
        "resource temporarily unavailable",
        "socket timed out",
        "temporarily unable to accept job",
        "unable to contact slurm controller",
        "zero bytes were transmitted",
        "transport endpoint is not connected",
        "communication connection failure",
        "job submit limit",
        "maxsubmitjob",
        "qosmaxsubmitjob",
        "slurm_persist_conn",
    ];
    let m = message.to_ascii_lowercase();
    SIGNS.iter().any(|s| m.contains(s))
}

pub struct SlurmLauncher {
    o: SlurmOptions,
    jobs: BTreeMap<String, InFlight>,
    deferred: BTreeMap<String, Deferred>,
    /// The last job id of every node submitted, kept after the job ends: a node that ends
    /// within one poll still reports where it ran.
    last_job: BTreeMap<String, String>,
    queue: VecDeque<Report>,
    interval: Duration,
    next_poll: Instant,
    /// Jobs of this study that a driver before this one submitted and that still run: node
    /// key -> job id. Read at the first launch; a launch of such a node adopts its job.
    adoptable: Option<BTreeMap<String, String>>,
    /// `max_jobs`, lowered to the cluster's submit limit for this user where one is set.
    max_jobs: usize,
    /// This driver's lease (`driver@<host>@<pid>`), taken at the first launch: a later driver
    /// adopts this one's jobs only once it is dead. None where it could not be taken (then
    /// nothing adopts our jobs).
    driver_lease: Option<crate::lease::Lease>,
    driver_key: String,
    timing: crate::lease::Timing,
    /// What the launcher found out about the cluster, for the terminal.
    pub notes: Vec<String>,
    /// Runs the tiny nodes beside the driver (made at the first one).
    local: Option<super::local::LocalLauncher>,
    /// Warm workers (`[slurm] workers > 0`): the pool folder and the pilot jobs.
    pool: pool::Pool,
    /// Polls in a row on which neither squeue nor sacct knew a pilot job.
    pilot_unknown: BTreeMap<String, u32>,
    /// Pilot jobs submitted so far (their comment's serial number).
    pilots_submitted: usize,
}

/// `'text'` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl SlurmLauncher {
    pub fn new(o: SlurmOptions) -> SlurmLauncher {
        let interval = Duration::from_secs_f64(o.config.poll_s);
        let mut notes = Vec::new();
        let mut max_jobs = o.config.max_jobs;
        if let Some(limit) = submit_limit() {
            if limit < max_jobs {
                notes.push(format!(
                    "the cluster lets this user queue at most {limit} jobs (sacctmgr MaxSubmitJobs): at most {limit} at once instead of slurm.max_jobs = {max_jobs}"
                ));
                max_jobs = limit;
            }
        }
        let timing = crate::lease::Timing::from_env().unwrap_or_default();
        let driver_key = format!(
            "driver@{}@{}",
            crate::store::host_name(),
            std::process::id()
        );
        let store_path = o.store.clone();
        SlurmLauncher {
            o,
            jobs: BTreeMap::new(),
            deferred: BTreeMap::new(),
            last_job: BTreeMap::new(),
            queue: VecDeque::new(),
            interval,
            next_poll: Instant::now(),
            adoptable: None,
            max_jobs,
            driver_lease: None,
            driver_key,
            timing,
            notes,
            local: None,
            pool: pool::Pool::new(&store_path),
            pilot_unknown: BTreeMap::new(),
            pilots_submitted: 0,
        }
    }

    fn dir(&self) -> PathBuf {
        self.o.store.join("slurm")
    }

    /// The stdout (JSON progress) of job `id` of node `key`: one file per job, so that two
    /// drivers' jobs of one node never read each other's lines; a requeued job keeps its id
    /// and appends.
    fn out_file(&self, key: &str, id: &str) -> PathBuf {
        let id = poll::split_id(id).0;
        self.o.store.join("logs").join(format!("{key}.{id}.out"))
    }

    /// Where the batch script leaves the exit code of `vtab-orch exec` when it ended by
    /// itself (not when Slurm killed, cancelled or requeued it).
    fn exit_record(&self, id: &str) -> PathBuf {
        let id = poll::split_id(id).0;
        self.dir().join(format!("{id}.exit"))
    }

    fn uses_gpu(&self, job: &Job) -> bool {
        self.o.gpus && job.resources.gpus > 0
    }

    /// The batch script of `job`: runs the node in the background so that the shell can
    /// take USR1 (the time limit is near: requeue, resume from the epoch checkpoint) and
    /// TERM (cancelled or requeued: leave no exit record).
    pub fn script(&self, job: &Job) -> String {
        let cpu = if self.uses_gpu(job) { "" } else { " --cpu" };
        format!(
            r#"#!/bin/bash
# vtab-orch node: {label}
record="{record_dir}/$SLURM_JOB_ID.exit"
signalled=
trap 'signalled=requeue; echo "vtab-orch: the time limit is near: requeueing job $SLURM_JOB_ID" >&2; scontrol requeue "$SLURM_JOB_ID"' USR1
trap 'signalled=term' TERM
{exe} exec {key} --store {store} --spec {spec} --run {run}{cpu} &
child=$!
wait "$child"; code=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
if [ -z "$signalled" ]; then
  echo "$code" > "$record.tmp" && mv "$record.tmp" "$record"
fi
exit "$code"
"#,
            label = job.label.replace('\n', " "),
            record_dir = self.dir().display(),
            exe = sh_quote(&self.o.exe.display().to_string()),
            key = sh_quote(&job.key),
            store = sh_quote(&self.o.store.display().to_string()),
            spec = sh_quote(&job.spec.display().to_string()),
            run = sh_quote(&job.run),
        )
    }

    /// Runs tiny node `job` as a child process of the driver.
    fn launch_beside(&mut self, job: &Job) -> Result<(), String> {
        let (exe, store) = (self.o.exe.clone(), self.o.store.clone());
        let local = self.local.get_or_insert_with(|| {
            super::local::LocalLauncher::new(super::local::LocalOptions {
                exe,
                store,
                gpus: Vec::new(),
                per_gpu: 1,
                cpu_threads: 1,
                warm: false,
            })
        });
        let mut job = job.clone();
        job.slot = Slot::Cpu { threads: 1 };
        local.launch(&job)
    }

    /// The suite's and the command line's extra sbatch arguments.
    fn all_args(&self) -> Vec<String> {
        let mut a = self.o.config.extra_args.clone();
        a.extend(self.o.cli_args.iter().cloned());
        a
    }

    /// The sbatch arguments of `job` (before the script path).
    pub fn sbatch_args(&self, job: &Job) -> Vec<String> {
        let c = &self.o.config;
        let mut a = vec![
            "--parsable".to_string(),
            format!(
                "--job-name=vtab:{}:{}",
                job.kind,
                &job.key[..job.key.len().min(12)]
            ),
            format!(
                "--comment={}",
                comment(&job.key, &self.driver_key, &self.o.store)
            ),
            format!("--output={}", self.out_file(&job.key, "%j").display()),
            format!("--error={}", job.log.display()),
            "--open-mode=append".into(),
            "--requeue".into(),
            format!("--signal=B:USR1@{}", c.signal_s),
            "--nodes=1".into(),
            "--ntasks=1".into(),
            format!(
                "--cpus-per-task={}",
                c.cpus_per_task.unwrap_or(job.resources.cpu_threads.max(1))
            ),
        ];
        if self.uses_gpu(job) {
            a.push(format!("--gres={}", c.gres));
        }
        a.extend(c.placement_args());
        a.extend(c.extra_args.iter().cloned());
        a.extend(self.o.cli_args.iter().cloned());
        a
    }

    fn submit(&self, job: &Job, excluded: &BTreeSet<String>) -> Result<String, String> {
        std::fs::create_dir_all(self.dir())
            .map_err(|e| format!("{}: {e}", self.dir().display()))?;
        let script = self.dir().join(format!("{}.sh", job.key));
        std::fs::write(&script, self.script(job))
            .map_err(|e| format!("{}: {e}", script.display()))?;
        let mut args = self.sbatch_args(job);
        if !excluded.is_empty() {
            let hosts: Vec<&str> = excluded.iter().map(String::as_str).collect();
            args.push(format!("--exclude={}", hosts.join(",")));
        }
        run_sbatch(&args, &script)
    }

    /// New output lines and exit records of every job (at polls only).
    fn tail(&mut self) {
        let keys: Vec<String> = self.jobs.keys().cloned().collect();
        for key in keys {
            let out = self.out_file(&key, &self.jobs[&key].id);
            let j = self.jobs.get_mut(&key).expect("in flight");
            if let Ok(mut f) = std::fs::File::open(&out) {
                let mut buf = String::new();
                if f.seek(SeekFrom::Start(j.offset)).is_ok() && f.read_to_string(&mut buf).is_ok() {
                    j.offset += buf.len() as u64;
                    j.partial.push_str(&buf);
                    while let Some(i) = j.partial.find('\n') {
                        let line: String = j.partial.drain(..=i).collect();
                        self.queue.push_back(Report::Line {
                            key: key.clone(),
                            line: line.trim_end().to_string(),
                        });
                    }
                }
            }
            let id = j.id.clone();
            let record = self.exit_record(&id);
            if let Ok(text) = std::fs::read_to_string(&record) {
                let code = text.trim().parse::<i32>().ok();
                let _ = std::fs::remove_file(&record);
                self.jobs.remove(&key);
                self.queue.push_back(Report::Exit {
                    key,
                    code,
                    note: None,
                });
            }
        }
    }

    /// Reads the jobs' output and exit records, then one batched squeue call (and sacct for
    /// the jobs it no longer lists); ends, requeues or keeps waiting on each job; backs off
    /// while nothing changes.
    fn poll(&mut self) {
        self.tail();
        let mut ids: Vec<String> = self.jobs.values().map(|j| j.id.clone()).collect();
        ids.extend(self.pool.pilots.keys().cloned());
        if ids.is_empty() {
            self.pool_scan();
            return;
        }
        let listed = match poll::squeue(&ids) {
            Ok(Some(m)) => m,
            Ok(None) => BTreeMap::new(),
            Err(_) => {
                // The controller may be busy or restarting: ask again later.
                self.back_off();
                return;
            }
        };
        let gone: Vec<String> = ids
            .iter()
            .filter(|i| !listed.contains_key(*i))
            .cloned()
            .collect();
        let accounted = if gone.is_empty() {
            BTreeMap::new()
        } else {
            poll::sacct(&gone)
        };
        let mut changed = false;
        let keys: Vec<String> = self.jobs.keys().cloned().collect();
        for key in keys {
            let j = self.jobs.get_mut(&key).expect("in flight");
            let (state, phase, code, node) = match (listed.get(&j.id), accounted.get(&j.id)) {
                (Some(l), _) => {
                    let code = (l.state == "COMPLETED").then_some(0);
                    (l.state.clone(), poll::phase(&l.state), code, l.node.clone())
                }
                (None, Some(e)) if e.state.starts_with("PREEMPTED") => {
                    (e.state.clone(), Phase::Lost, e.code, e.node.clone())
                }
                (None, Some(e)) => (
                    e.state.clone(),
                    poll::phase(&e.state),
                    e.code,
                    e.node.clone(),
                ),
                (None, None) => {
                    // Unknown, not gone: squeue forgot it and accounting has no record yet.
                    j.unknown_polls += 1;
                    if j.unknown_polls < UNKNOWN_POLLS {
                        continue;
                    }
                    let state = format!(
                        "unknown (neither squeue nor sacct knew it on {UNKNOWN_POLLS} polls)"
                    );
                    (state, Phase::Ended, None, String::new())
                }
            };
            j.unknown_polls = 0;
            if j.last_state.as_deref() != Some(&state) {
                changed = true;
                j.last_state = Some(state.clone());
            }
            if phase == Phase::Alive {
                continue;
            }
            let on = if node.is_empty() {
                String::new()
            } else {
                format!(" on {node}")
            };
            let note = format!("slurm job {} ended {state}{on}", j.id);
            if phase == Phase::Lost && j.attempts <= self.o.config.max_requeues {
                if state.starts_with("NODE_FAIL") && !node.is_empty() {
                    j.excluded.insert(node);
                }
                self.resubmit(&key, note);
            } else {
                self.jobs.remove(&key);
                self.queue.push_back(Report::Exit {
                    key,
                    code,
                    note: Some(note),
                });
            }
        }
        // Pilot jobs: one that ended gives its unfinished node back to the queue.
        let pilots: Vec<String> = self.pool.pilots.keys().cloned().collect();
        let mut reports = Vec::new();
        for id in pilots {
            let state = match (listed.get(&id), accounted.get(&id)) {
                (Some(l), _) => l.state.clone(),
                (None, Some(e)) => e.state.clone(),
                (None, None) => {
                    let n = self.pilot_unknown.entry(id.clone()).or_default();
                    *n += 1;
                    if *n < UNKNOWN_POLLS {
                        continue;
                    }
                    "unknown to squeue and sacct".to_string()
                }
            };
            if poll::phase(&state) == Phase::Alive && !state.starts_with("PREEMPTED") {
                self.pilot_unknown.remove(&id);
                continue;
            }
            self.pilot_unknown.remove(&id);
            let max_lost = self.o.config.max_requeues;
            self.pool.pilot_ended(&id, &state, max_lost, &mut reports);
            changed = true;
        }
        self.queue.extend(reports);
        changed |= self.pool_scan();
        if changed {
            self.interval = Duration::from_secs_f64(self.o.config.poll_s);
        } else {
            self.back_off();
        }
        self.next_poll = Instant::now() + self.interval;
    }

    /// Reads the pool folder and keeps enough workers; whether anything happened.
    fn pool_scan(&mut self) -> bool {
        if self.pool.is_empty() && self.pool.pilots.is_empty() {
            return false;
        }
        let mut reports = Vec::new();
        self.pool.scan(&mut reports);
        let changed = !reports.is_empty();
        self.queue.extend(reports);
        self.ensure_pilots();
        changed
    }

    /// Submits pilot jobs until each queue has as many as it has nodes, and all queues
    /// together at most `workers` (GPU queue first).
    fn ensure_pilots(&mut self) {
        let cap = self.o.config.pilots(self.max_jobs);
        for kind in pool::KINDS {
            let have = self.pool.pilots.values().filter(|k| **k == kind).count();
            let room = cap.saturating_sub(self.pool.pilots.len());
            let want = cap.min(self.pool.wanted(kind)).min(have + room);
            for _ in have..want {
                match self.submit_pilot(kind) {
                    Ok(id) => {
                        self.pool.pilots.insert(id, kind);
                        self.interval = Duration::from_secs_f64(self.o.config.poll_s);
                        self.next_poll = self.next_poll.min(Instant::now() + self.interval);
                    }
                    // Tried again at the next poll; said on a node that waits for it.
                    Err(e) if transient_refusal(&e) => {
                        if let Some(key) = self.pool.waiting(kind) {
                            let msg = e.trim();
                            self.queue.push_back(Report::Requeued {
                                key,
                                why: format!(
                                    "sbatch refused a warm worker for now ({msg}); asking again at the next poll"
                                ),
                            });
                        }
                        return;
                    }
                    Err(e) => {
                        // No worker can be had: the queue's nodes fail with sbatch's word.
                        for key in self.pool.keys() {
                            if self.pool.worker_of(&key).is_none() {
                                self.pool.forget(&key);
                                self.queue.push_back(Report::Exit {
                                    key,
                                    code: None,
                                    note: Some(format!("submitting a warm worker failed: {e}")),
                                });
                            }
                        }
                        return;
                    }
                }
            }
        }
    }

    /// The batch script of a pilot job serving queue `kind`.
    pub fn pilot_script(&self, kind: &str) -> String {
        let limit = self
            .o
            .config
            .time_limit_s()
            .map_or(String::new(), |s| format!(" --time-limit-s {s}"));
        let cpu = if kind == "cpu" { " --cpu" } else { "" };
        format!(
            "#!/bin/bash\n# vtab-orch warm worker ({kind})\nexec {exe} worker --store {store} --pool {pool} --kind {kind} --idle-s {idle}{limit}{cpu}\n",
            exe = sh_quote(&self.o.exe.display().to_string()),
            store = sh_quote(&self.o.store.display().to_string()),
            pool = sh_quote(&self.pool.dir().display().to_string()),
            idle = self.o.config.worker_idle_s,
        )
    }

    /// The sbatch arguments of a pilot job serving queue `kind`.
    pub fn pilot_args(&self, kind: &str, serial: usize) -> Vec<String> {
        let c = &self.o.config;
        let log = self.o.store.join("logs").join("worker.%j.log");
        let mut a = vec![
            "--parsable".to_string(),
            format!("--job-name=vtab:worker:{kind}"),
            format!(
                "--comment={}",
                comment(
                    // Unique among the drivers of a store: the driver's pid, then a serial.
                    &format!("worker-{kind}-{}.{serial}", std::process::id()),
                    &self.driver_key,
                    &self.o.store
                )
            ),
            format!("--output={}", log.display()),
            format!("--error={}", log.display()),
            "--open-mode=append".into(),
            "--no-requeue".into(),
            // Near its time limit (or preempted with a grace time) the worker is told to stop:
            // the node it runs checkpoints and goes back to the queue.
            format!("--signal=B:USR1@{}", c.signal_s),
            "--nodes=1".into(),
            "--ntasks=1".into(),
            format!("--cpus-per-task={}", c.cpus_per_task.unwrap_or(4)),
        ];
        if kind == "gpu" {
            a.push(format!("--gres={}", c.gres));
        }
        a.extend(c.placement_args());
        a.extend(self.all_args());
        a
    }

    fn submit_pilot(&mut self, kind: &str) -> Result<String, String> {
        self.pilots_submitted += 1;
        std::fs::create_dir_all(self.dir())
            .and_then(|_| std::fs::create_dir_all(self.o.store.join("logs")))
            .map_err(|e| format!("{}: {e}", self.dir().display()))?;
        let script = self.dir().join(format!("worker-{kind}.sh"));
        std::fs::write(&script, self.pilot_script(kind))
            .map_err(|e| format!("{}: {e}", script.display()))?;
        run_sbatch(&self.pilot_args(kind, self.pilots_submitted), &script)
    }

    /// Once, at the first launch: the jobs of this study that a driver before this one
    /// submitted and that still run, where that driver died (a live one watches its own).
    /// Node jobs are adopted when their node is launched; warm workers at once (watched, and
    /// cancelled with ours when the study ends).
    fn find_adoptable(&mut self) {
        if self.adoptable.is_some() {
            return;
        }
        let clusters = clusters_of(&self.all_args());
        let found = study_jobs(&self.o.store, &clusters).unwrap_or_default();
        let (store, timing) = (&self.o.store, self.timing);
        let mut nodes = BTreeMap::new();
        for (key, j) in found {
            if j.driver == self.driver_key || driver_alive(store, &j.driver, timing) {
                continue;
            }
            match key
                .strip_prefix("worker-")
                .and_then(|w| w.split('-').next())
            {
                Some(kind) => {
                    if let Some(kind) = pool::KINDS.into_iter().find(|k| *k == kind) {
                        self.pool.pilots.entry(j.id).or_insert(kind);
                    }
                }
                None => {
                    nodes.insert(key, j.id);
                }
            }
        }
        self.adoptable = Some(nodes);
    }

    fn back_off(&mut self) {
        let max = Duration::from_secs_f64(self.o.config.max_poll_s);
        self.interval = self.interval.mul_f64(1.5).min(max);
        self.next_poll = Instant::now() + self.interval;
    }

    /// Submits a lost node again; it resumes from its epoch checkpoint.
    fn resubmit(&mut self, key: &str, why: String) {
        let j = self.jobs.get(key).expect("in flight");
        let (job, excluded) = (j.job.clone(), j.excluded.clone());
        match self.submit(&job, &excluded) {
            Ok(id) => {
                self.last_job.insert(key.to_string(), id.clone());
                let j = self.jobs.get_mut(key).expect("in flight");
                j.id = id;
                j.offset = 0;
                j.partial.clear();
                j.attempts += 1;
                j.unknown_polls = 0;
                j.last_state = None;
                let avoid = if j.excluded.is_empty() {
                    String::new()
                } else {
                    let hosts: Vec<&str> = j.excluded.iter().map(String::as_str).collect();
                    format!(", excluding {}", hosts.join(","))
                };
                self.queue.push_back(Report::Requeued {
                    key: key.to_string(),
                    why: format!("{why}; submitted again as job {}{avoid}", j.id),
                });
            }
            Err(e) if transient_refusal(&e) => {
                let j = self.jobs.remove(key).expect("in flight");
                self.defer(j.job, j.attempts + 1, 0, &e);
            }
            Err(e) => {
                self.jobs.remove(key);
                self.queue.push_back(Report::Exit {
                    key: key.to_string(),
                    code: None,
                    note: Some(format!("{why}; submitting it again failed: {e}")),
                });
            }
        }
    }

    /// Keeps `job` for a later submission after sbatch's passing refusal `why`.
    fn defer(&mut self, job: Job, attempts: u32, refusals: u32, why: &str) {
        let first = Duration::from_secs_f64(self.o.config.poll_s);
        let delay = first
            .mul_f64(2f64.powi(refusals.min(30) as i32))
            .min(Duration::from_secs_f64(self.o.config.max_poll_s));
        self.queue.push_back(Report::Requeued {
            key: job.key.clone(),
            why: format!(
                "sbatch refused it for now ({}); submitting again in {:.0} s",
                why.trim(),
                delay.as_secs_f64()
            ),
        });
        let key = job.key.clone();
        let next = Instant::now() + delay;
        self.deferred.insert(
            key,
            Deferred {
                job,
                attempts,
                refusals: refusals + 1,
                next,
            },
        );
    }

    /// Submits the deferred nodes whose time has come.
    fn submit_deferred(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .deferred
            .iter()
            .filter(|(_, d)| d.next <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let d = self.deferred.remove(&key).expect("deferred");
            match self.submit(&d.job, &BTreeSet::new()) {
                Ok(id) => self.track(d.job, id, d.attempts),
                Err(e) if transient_refusal(&e) => self.defer(d.job, d.attempts, d.refusals, &e),
                Err(e) => self.queue.push_back(Report::Exit {
                    key,
                    code: None,
                    note: Some(format!("submitting it failed: {e}")),
                }),
            }
        }
    }

    /// Watches the new job `id` of `job`.
    fn track(&mut self, job: Job, id: String, attempts: u32) {
        let key = job.key.clone();
        self.last_job.insert(key.clone(), id.clone());
        self.jobs.insert(
            key,
            InFlight {
                job,
                id,
                offset: 0,
                partial: String::new(),
                attempts,
                unknown_polls: 0,
                last_state: None,
                excluded: BTreeSet::new(),
            },
        );
        // A new job: look at the queue soon again.
        self.interval = Duration::from_secs_f64(self.o.config.poll_s);
        self.next_poll = self.next_poll.min(Instant::now() + self.interval);
    }
}

impl Launcher for SlurmLauncher {
    fn capacity(&self) -> Capacity {
        Capacity::Cluster {
            max_jobs: self.max_jobs,
        }
    }

    fn launch(&mut self, job: &Job) -> Result<(), String> {
        debug_assert_eq!(job.slot, Slot::Cluster);
        if self.driver_lease.is_none() {
            let timing = self.timing;
            if let Ok(crate::lease::Acquired::Held(l)) =
                crate::lease::acquire(&self.o.store, &self.driver_key, timing, &|| false)
            {
                self.driver_lease = Some(l);
            }
        }
        if job.resources.tiny {
            return self.launch_beside(job);
        }
        // The job may start in another directory (`--chdir`): absolute paths only.
        let mut job = job.clone();
        for p in [&mut job.spec, &mut job.log] {
            *p = std::path::absolute(&*p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        self.find_adoptable();
        if self.o.config.pilots(self.max_jobs) > 0 {
            let kind = if self.uses_gpu(&job) { "gpu" } else { "cpu" };
            if let Some(worker) = self.pool.enqueue(&job, kind)? {
                // A worker of a driver that died runs it: watched from here on.
                self.queue.push_back(Report::Adopted {
                    key: job.key.clone(),
                    job: worker,
                });
            }
            self.ensure_pilots();
            return Ok(());
        }
        // A job of this node that a driver before this one submitted and that still runs.
        if let Some(id) = self.adoptable.as_mut().and_then(|a| a.remove(&job.key)) {
            self.queue.push_back(Report::Adopted {
                key: job.key.clone(),
                job: id.clone(),
            });
            self.track(job, id, 1);
            return Ok(());
        }
        match self.submit(&job, &BTreeSet::new()) {
            Ok(id) => self.track(job, id, 1),
            Err(e) if transient_refusal(&e) => self.defer(job, 1, 0, &e),
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Option<Report> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(r);
            }
            if let Some(r) = self.local.as_mut().and_then(|l| l.wait(Duration::ZERO)) {
                return Some(r);
            }
            let now = Instant::now();
            let watching =
                !self.jobs.is_empty() || !self.pool.pilots.is_empty() || !self.pool.is_empty();
            if now >= self.next_poll && watching {
                self.poll();
                if !self.queue.is_empty() {
                    continue;
                }
            }
            self.submit_deferred();
            if !self.queue.is_empty() {
                continue;
            }
            if now >= deadline {
                return None;
            }
            let retry = self.deferred.values().map(|d| d.next).min();
            let next = if !watching {
                deadline
            } else {
                self.next_poll.min(deadline)
            };
            // Tiny nodes beside the driver end within seconds: look at them often.
            let next = match &self.local {
                Some(l) if l.busy() > 0 => next.min(now + Duration::from_millis(50)),
                _ => next,
            };
            let next = retry.map_or(next, |r| next.min(r));
            std::thread::sleep(
                next.saturating_duration_since(now)
                    .max(Duration::from_millis(5)),
            );
        }
    }

    fn place(&self, key: &str) -> String {
        if self.local.as_ref().is_some_and(|l| l.runs(key)) {
            return "beside the driver".into();
        }
        if self.deferred.contains_key(key) {
            return "slurm (waiting to submit)".into();
        }
        if self.pool.has(key) {
            return self.pool.worker_of(key).map_or_else(
                || "slurm (queued for a warm worker)".into(),
                |w| format!("slurm worker job {w}"),
            );
        }
        let id = self.jobs.get(key).map(|j| &j.id).or(self.last_job.get(key));
        id.map_or_else(|| "slurm".into(), |id| format!("slurm job {id}"))
    }

    fn cancel_all(&mut self) -> usize {
        self.deferred.clear(); // never submitted: nothing to cancel
        let ids: Vec<String> = self.jobs.values().map(|j| j.id.clone()).collect();
        self.jobs.clear();
        let beside = self.local.as_mut().map_or(0, |l| l.cancel_all());
        // The pool's: unclaimed assignments go; the workers are cancelled (a node running in
        // one checkpoints at its epoch's end and resumes next time).
        let pooled = self.pool.keys();
        for key in &pooled {
            self.pool.forget(key);
        }
        let pilots: Vec<String> = std::mem::take(&mut self.pool.pilots).into_keys().collect();
        scancel(&pilots);
        // Only the jobs this launcher submitted or adopted, by id.
        scancel(&ids) + beside + pooled.len()
    }

    /// Idle warm workers are cancelled rather than left to time out.
    fn finish(&mut self) {
        let pilots: Vec<String> = std::mem::take(&mut self.pool.pilots).into_keys().collect();
        scancel(&pilots);
    }
}

/// `sbatch ARGS SCRIPT`: the job id, or sbatch's refusal.
fn run_sbatch(args: &[String], script: &std::path::Path) -> Result<String, String> {
    let mut cmd = Command::new("sbatch");
    cmd.args(args).arg(script);
    // A driver running inside a job must not pass its own allocation on (SLURM_* of the
    // outer job would override the node's request); SLURM_CONF names the cluster.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("SLURM_") && k != "SLURM_CONF" {
            cmd.env_remove(k.as_ref());
        }
    }
    let out = cmd.output().map_err(|e| {
        format!("running sbatch: {e} (is Slurm installed here, and SLURM_CONF set?)")
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match poll::parse_job_id(&stdout) {
        Some(id) if out.status.success() => Ok(id),
        _ => Err(format!(
            "sbatch refused the job: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        )),
    }
}

/// Cancels jobs by id (one scancel per cluster); returns how many were asked to stop.
pub fn scancel(ids: &[String]) -> usize {
    let mut by: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
    for id in ids {
        let (n, c) = poll::split_id(id);
        by.entry(c).or_default().push(n);
    }
    let mut n = 0;
    for (cluster, nums) in by {
        let ok = Command::new("scancel")
            .args(poll::cluster_args(cluster))
            .args(&nums)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            n += nums.len();
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::state::Resources;

    #[test]
    fn job_comments_round_trip_and_name_the_clusters() {
        let c = comment("abc", "driver@h@7", std::path::Path::new("/my store/s"));
        assert_eq!(
            parse_comment(&c),
            Some(Comment {
                key: "abc".into(),
                driver: "driver@h@7".into(),
                store: "/my store/s".into()
            })
        );
        for bad in [
            "",
            "vtab-orch node  driver d store /s",
            "vtab-orch store /s",
            "x",
        ] {
            assert_eq!(parse_comment(bad), None, "{bad:?}");
        }
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(clusters_of(&args(&["--exclusive"])), [None]);
        assert_eq!(
            clusters_of(&args(&["-M", "a,b", "--clusters=c", "-Md"])),
            [
                Some("a".into()),
                Some("b".into()),
                Some("c".into()),
                Some("d".into())
            ]
        );
        assert_eq!(parse_submit_limit("\n200\n50\n0\nx\n"), Some(50));
        assert_eq!(parse_submit_limit("\n\n"), None);
    }

    #[test]
    fn passing_sbatch_refusals_are_told_from_the_job_s_own() {
        for m in [
            "sbatch: error: Batch job submission failed: Resource temporarily unavailable",
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
            "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying",
            "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)",
            "sbatch: error: QOSMaxSubmitJobPerUserLimit",
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
        ] {
            assert!(transient_refusal(m), "{m}");
        }
        for m in [
            "sbatch: error: Batch job submission failed: Invalid partition name specified",
            "sbatch: error: Batch job submission failed: Requested node configuration is not available",
            "running sbatch: No such file or directory (os error 2) (is Slurm installed here, and SLURM_CONF set?)",
        ] {
            assert!(!transient_refusal(m), "{m}");
        }
    }

    fn launcher(config: SlurmConfig, gpus: bool) -> SlurmLauncher {
        SlurmLauncher::new(SlurmOptions {
            exe: "/opt/vtab orch/vtab-orch".into(),
            store: "/shared/store".into(),
            config,
            cli_args: vec!["--partition=debug".into()],
            gpus,
        })
    }

    fn job(gpus: u32) -> Job {
        Job {
            key: "0123456789abcdef".into(),
            label: "train shape lora s0".into(),
            kind: "train",
            slot: Slot::Cluster,
            resources: Resources {
                gpus,
                cpu_threads: 4,
                tiny: false,
            },
            spec: "/shared/store/specs/k.1.json".into(),
            log: "/shared/store/logs/0123456789abcdef.log".into(),
            run: "20261204T000000Z-1".into(),
            expected_s: 60.0,
        }
    }

    #[test]
    fn gpu_nodes_ask_for_the_gres_and_the_suite_then_the_cli_arguments_follow() {
        let c = SlurmConfig {
            partition: Some("gpu".into()),
            time: Some("1:00:00".into()),
            extra_args: vec!["--exclusive".into()],
            ..SlurmConfig::default()
        };
        let l = launcher(c.clone(), true);
        let a = l.sbatch_args(&job(1));
        for want in [
            "--parsable",
            "--job-name=vtab:train:0123456789ab",
            "--gres=gpu:1",
            "--cpus-per-task=4",
            "--requeue",
            "--signal=B:USR1@120",
            "--open-mode=append",
            "--output=/shared/store/logs/0123456789abcdef.%j.out",
            "--error=/shared/store/logs/0123456789abcdef.log",
            "--time=1:00:00",
        ] {
            assert!(a.contains(&want.to_string()), "{want} missing from {a:?}");
        }
        // The suite's partition, its extra arguments, then --slurm-arg (which wins).
        let p = |s: &str| a.iter().position(|x| x == s).unwrap();
        assert!(
            p("--partition=gpu") < p("--exclusive") && p("--exclusive") < p("--partition=debug")
        );
        assert!(!l.script(&job(1)).contains("--cpu"));
        // CPU nodes, and everything under --gpus none, ask for no GPU and compute on CPUs.
        assert!(!l
            .sbatch_args(&job(0))
            .iter()
            .any(|x| x.starts_with("--gres")));
        let none = launcher(c, false);
        assert!(!none
            .sbatch_args(&job(1))
            .iter()
            .any(|x| x.starts_with("--gres")));
        assert!(none.script(&job(1)).contains(" --cpu &"));
        let c = SlurmConfig {
            cpus_per_task: Some(2),
            gres: "gpu:a100:1".into(),
            ..SlurmConfig::default()
        };
        let a = launcher(c, true).sbatch_args(&job(1));
        assert!(a.contains(&"--cpus-per-task=2".into()) && a.contains(&"--gres=gpu:a100:1".into()));
    }

    #[test]
    fn warm_worker_jobs_ask_for_their_queue_s_resources_and_time() {
        let c = SlurmConfig {
            partition: Some("gpu".into()),
            time: Some("1:00:00".into()),
            workers: Some(4),
            worker_idle_s: 30.0,
            ..SlurmConfig::default()
        };
        let l = launcher(c, true);
        let g = l.pilot_args("gpu", 3);
        for want in [
            "--job-name=vtab:worker:gpu",
            "--gres=gpu:1",
            "--no-requeue",
            "--signal=B:USR1@120",
            "--partition=gpu",
            "--time=1:00:00",
            "--partition=debug",
        ] {
            assert!(g.contains(&want.to_string()), "{want} missing from {g:?}");
        }
        let comment = g.iter().find_map(|a| a.strip_prefix("--comment=")).unwrap();
        let parsed = parse_comment(comment).unwrap();
        assert_eq!(
            (parsed.key.as_str(), parsed.store.as_str()),
            (
                format!("worker-gpu-{}.3", std::process::id()).as_str(),
                "/shared/store"
            )
        );
        assert!(!l
            .pilot_args("cpu", 4)
            .iter()
            .any(|a| a.starts_with("--gres")));
        let gs = l.pilot_script("gpu");
        assert!(
            gs.contains("worker --store '/shared/store' --pool '/shared/store/slurm/pool' --kind gpu --idle-s 30 --time-limit-s 3600\n"),
            "{gs}"
        );
        assert!(l
            .pilot_script("cpu")
            .contains(" --time-limit-s 3600 --cpu\n"));
    }

    #[test]
    fn the_batch_script_quotes_paths_and_records_only_its_own_exit() {
        let s = launcher(SlurmConfig::default(), true).script(&job(1));
        assert!(
            s.contains(
                "'/opt/vtab orch/vtab-orch' exec '0123456789abcdef' --store '/shared/store'"
            ),
            "{s}"
        );
        assert!(
            s.contains("record=\"/shared/store/slurm/$SLURM_JOB_ID.exit\""),
            "{s}"
        );
        assert!(s.contains("scontrol requeue \"$SLURM_JOB_ID\""));
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
