//! Warm workers: one long-lived `vtab-orch worker` process per device slot runs the slot's
//! nodes one after another, so libtorch is loaded (and a CUDA context made) once per slot
//! instead of once per node. Owns the worker's side of the pipe protocol; the launcher's
//! side is in `local.rs`.
//!
//! Protocol, one JSON object per line. Launcher to worker (stdin): `{"key", "spec", "log"}`.
//! Worker to launcher (stdout): the node's own progress lines, then `{"worker_exit": CODE}`
//! (the code `vtab-orch exec` would exit with). A node that fails ends its worker too (a
//! fresh process for the next node: no state of a failed node, a CUDA error say, is carried
//! over); a worker that dies (a crash, an OOM kill) fails only the node it was running.
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One node handed to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct Assignment {
    pub key: String,
    pub spec: PathBuf,
    /// The node's log: the worker's stderr goes there while the node runs.
    pub log: PathBuf,
    /// The run that hands it over (recorded in the node's manifest).
    #[serde(default)]
    pub run: Option<String>,
}

/// The line that ends a node's output on the worker's stdout.
pub const EXIT_FIELD: &str = "worker_exit";

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
            Ok(crate::exec::Outcome::Leased) => super::EXIT_LEASED,
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
