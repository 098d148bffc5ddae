//! Test hooks: `VTAB_ORCH_TEST_*` variables through which the end-to-end tests crash, pause or
//! slow a run at a chosen point. Compiled only with the `test-hooks` feature (`./x test` turns
//! it on); without it every hook does nothing and the binary carries none of their names.
//! Owns reading those variables and acting on them; must not change what a run computes.

/// Whether the hooks are compiled in (`vtab-orch env` says so; tests that use them check it).
pub const COMPILED_IN: bool = cfg!(feature = "test-hooks");

/// The value of hook variable `$name`: always None without the `test-hooks` feature, and the
/// name itself is then not compiled in.
macro_rules! hook {
    ($name:literal) => {{
        #[cfg(feature = "test-hooks")]
        let v = std::env::var($name).ok();
        #[cfg(not(feature = "test-hooks"))]
        let v: Option<String> = None;
        v
    }};
}

/// `VTAB_ORCH_TEST_ABORT_AFTER_SELECT` (any value): the driver dies (abort, as if killed)
/// right after a select node it ran is done, before its final runs join the run.
pub fn abort_after_select() {
    if hook!("VTAB_ORCH_TEST_ABORT_AFTER_SELECT").is_some() {
        std::process::abort();
    }
}

/// `VTAB_ORCH_TEST_CRASH_AFTER_EPOCH=N`, standing in for `kill -9`: whether the node aborts
/// right after `epoch` (and its checkpoint, if the policy wrote one).
pub fn crash_after_epoch(epoch: u64) -> bool {
    hook!("VTAB_ORCH_TEST_CRASH_AFTER_EPOCH").and_then(|v| v.parse().ok()) == Some(epoch)
}

/// `VTAB_ORCH_TEST_EPOCH_DELAY_MS=MS`: sleep this long after each epoch's checkpoint, so that
/// a test can cancel or requeue a node mid-way (tiny test models train in milliseconds).
pub fn epoch_delay() {
    if let Some(ms) = hook!("VTAB_ORCH_TEST_EPOCH_DELAY_MS").and_then(|v| v.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// `VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH=EPOCH:MARKER`: the first process to create the file
/// MARKER (others go on) writes its pid into it after EPOCH's checkpoint and waits until
/// `MARKER.go` exists or the process is asked to stop (a stop signal, see
/// `nodes/checkpoint.rs`). A test then acts while a node is certainly mid-run (its staging
/// directory and lease live), however fast or slow the machine is.
pub fn pause_after_epoch(epoch: u64) {
    use std::io::Write;
    let Some((at, marker)) = hook!("VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH").and_then(|v| {
        v.split_once(':')
            .map(|(e, m)| (e.to_string(), m.to_string()))
    }) else {
        return;
    };
    if at.parse() != Ok(epoch) {
        return;
    }
    let Ok(mut f) = std::fs::File::create_new(&marker) else {
        return;
    };
    let _ = write!(f, "{}", std::process::id());
    drop(f);
    let go = format!("{marker}.go");
    while !std::path::Path::new(&go).exists() && !crate::nodes::checkpoint::stop_requested() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
