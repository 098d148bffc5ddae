//! The worker's side of the warm-worker protocol (`sched::worker`): runs the nodes handed to it
//! on stdin, one after another, each under `exec`.
use crate::sched::worker::{Assignment, EXIT_FIELD};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

/// Points this process's stderr (fd 2) at `log` (appended), so each node keeps its own log.
fn stderr_to(log: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    // SAFETY: dup2 onto fd 2 of two valid descriptors; `f` is closed after, fd 2 stays.
    if unsafe { libc::dup2(f.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
        let code = match crate::exec::exec_since(store, &a.key, &a.spec, cpu, a.run.as_deref(), t0)
        {
            Ok(crate::exec::Outcome::Leased) => crate::sched::EXIT_LEASED,
            Ok(_) => 0,
            Err(e) => {
                let msg = format!("node {}: {e}", a.key);
                eprintln!("error: {msg}");
                say(serde_json::json!({ "error": msg }));
                1
            }
        };
        say(serde_json::json!({ EXIT_FIELD: code }));
        if code == 1 || crate::nodes::checkpoint::stop_requested() {
            return code;
        }
    }
    0
}
