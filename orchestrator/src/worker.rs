//! The worker's side of the warm-worker protocol (`sched::worker`): runs the nodes handed to it
//! on stdin, one after another, each under `exec`.
use crate::sched::worker::{Assignment, EXIT_FIELD};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

/// Points this process's file descriptor `fd` (1: stdout, 2: stderr) at `path`, appended.
fn redirect(fd: i32, path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    // SAFETY: dup2 onto `fd` of two valid descriptors; `f` is closed after, `fd` stays.
    if unsafe { libc::dup2(f.as_raw_fd(), fd) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Points this process's stderr at `log` (appended), so each node keeps its own log.
fn stderr_to(log: &Path) -> std::io::Result<()> {
    redirect(2, log)
}

fn say(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The worker loop: runs assignments from stdin until it closes (exit 0), a node fails
/// (exit 1, after reporting it), or a stop signal arrived (exit 0 after the current node).
pub fn serve(store: &Path, cpu: bool) -> i32 {
    crate::nodes::checkpoint::catch_stop_signals();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return 1 };
        let a: Assignment = match serde_json::from_str(&line) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("worker: bad assignment {line:?}: {e}");
                return 1;
            }
        };
        let t0 = Instant::now();
        if let Err(e) = stderr_to(&a.log) {
            say(serde_json::json!({ "error": format!("{}: {e}", a.log.display()) }));
            say(serde_json::json!({ EXIT_FIELD: 1 }));
            return 1;
        }
        let code = run_node(store, &a, cpu, t0);
        say(serde_json::json!({ EXIT_FIELD: code }));
        if code == 1 || crate::nodes::checkpoint::stop_requested() {
            return code;
        }
    }
    0
}

/// A warm worker on a cluster (a pilot job of `sched::slurm::pool`): takes assignments from
/// the pool folder in the store, one at a time, and runs each under `exec`.
pub struct PoolOptions {
    pub store: std::path::PathBuf,
    /// `<store>/slurm/pool`.
    pub pool: std::path::PathBuf,
    /// Which queue it serves: `gpu` or `cpu`.
    pub kind: String,
    /// Compute on the CPU.
    pub cpu: bool,
    /// Ends after this long without an assignment it could take.
    pub idle: std::time::Duration,
    /// When its job's time limit ends (None: no limit known): it takes no node whose
    /// expected time does not fit before it.
    pub deadline: Option<Instant>,
}

/// Seconds kept free before a worker's time limit beyond a node's expected time.
const DEADLINE_MARGIN_S: f64 = 60.0;

/// The pool worker's loop: claims an assignment by renaming `queue/<kind>/<key>.json` to
/// `running/<key>@<job>.json` (a rename only one worker can make), runs the node with its
/// stdout in `<store>/logs/<key>.<job>.out` and its stderr in its log, then writes
/// `done/<key>@<job>.json` with the exit code `exec` would have. Returns 0 when idle for
/// `idle` or asked to stop, 1 after a node that failed (a fresh process for the next one).
pub fn serve_pool(o: &PoolOptions) -> i32 {
    crate::nodes::checkpoint::catch_stop_signals();
    let job =
        std::env::var("SLURM_JOB_ID").unwrap_or_else(|_| format!("pid{}", std::process::id()));
    let mut idle_since = Instant::now();
    loop {
        if crate::nodes::checkpoint::stop_requested() {
            return 0;
        }
        let Some((a, running)) = claim(o, &job) else {
            if idle_since.elapsed() >= o.idle {
                return 0;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
            continue;
        };
        let code = run_claimed(o, &job, &a);
        if code != 0 && crate::nodes::checkpoint::stop_requested() {
            // Stopped (scancel, preemption, time limit) mid-node: its checkpoint stays, and
            // the claim too; the driver queues it again once this job has ended.
            return 0;
        }
        let done = o.pool.join("done").join(format!("{}@{job}.json", a.key));
        let tmp = done.with_extension("tmp");
        let wrote = std::fs::create_dir_all(o.pool.join("done"))
            .and_then(|_| std::fs::write(&tmp, serde_json::json!({ "code": code }).to_string()))
            .and_then(|_| std::fs::rename(&tmp, &done));
        if let Err(e) = wrote {
            eprintln!("worker: {}: {e}", done.display());
        }
        let _ = std::fs::remove_file(&running);
        idle_since = Instant::now();
        if code == 1 || crate::nodes::checkpoint::stop_requested() {
            return code;
        }
    }
}

/// The first assignment of this worker's queue that fits before its deadline, claimed.
fn claim(o: &PoolOptions, job: &str) -> Option<(Assignment, std::path::PathBuf)> {
    let dir = o.pool.join("queue").join(&o.kind);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for name in names {
        let src = dir.join(&name);
        let Some(a) = std::fs::read_to_string(&src)
            .ok()
            .and_then(|t| serde_json::from_str::<Assignment>(&t).ok())
        else {
            continue;
        };
        if let Some(d) = o.deadline {
            let need =
                std::time::Duration::from_secs_f64(a.expected_s.max(0.0) + DEADLINE_MARGIN_S);
            if Instant::now() + need > d {
                continue; // leave it to a worker with more time
            }
        }
        let running = o.pool.join("running").join(format!("{}@{job}.json", a.key));
        if std::fs::create_dir_all(o.pool.join("running")).is_ok()
            && std::fs::rename(&src, &running).is_ok()
        {
            return Some((a, running));
        }
    }
    None
}

/// Runs one claimed node; its exit code as `vtab-orch exec` would give it.
fn run_claimed(o: &PoolOptions, job: &str, a: &Assignment) -> i32 {
    let t0 = Instant::now();
    let out = o.store.join("logs").join(format!("{}.{job}.out", a.key));
    if let Err(e) = stdout_to(&out).and_then(|_| stderr_to(&a.log)) {
        eprintln!("worker: {}: {e}", out.display());
        return 1;
    }
    run_node(&o.store, a, o.cpu, t0)
}

/// Runs assignment `a` under `exec`; the exit code `vtab-orch exec` would give (an error is
/// reported on stderr and as an `error` line on stdout first).
fn run_node(store: &Path, a: &Assignment, cpu: bool, t0: Instant) -> i32 {
    match crate::exec::exec_since(store, &a.key, &a.spec, cpu, a.run.as_deref(), t0) {
        Ok(crate::exec::Outcome::Leased) => crate::sched::EXIT_LEASED,
        Ok(_) => 0,
        Err(e) => {
            let msg = format!("node {}: {e}", a.key);
            eprintln!("error: {msg}");
            say(serde_json::json!({ "error": msg }));
            1
        }
    }
}

/// Points this process's stdout (fd 1) at `path` (appended), after flushing what is buffered.
fn stdout_to(path: &Path) -> std::io::Result<()> {
    let _ = std::io::stdout().lock().flush();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    redirect(1, path)
}
