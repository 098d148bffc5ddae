//! The one way a test says it could not run here, shared by every test crate of the workspace
//! (`#[path = ".../tests/support/skip.rs"] mod skip;`). Must not decide what a test needs.
//!
//! A skip is written to the stderr handle directly, past the harness's capture (`eprintln!`
//! is captured: a skip would pass silently), and appended to the file `$VTAB_ORCH_SKIP_LOG`
//! (`./x test` lists that file at the end). When `$VTAB_ORCH_REQUIRE` (a comma list, e.g.
//! `slurm,gpu`) names the capability, the test fails instead: the test command said this
//! machine has it, so its absence is a fault, not a reason to skip.
use std::io::Write;

/// Environment variable: the file each skip appends its line to.
pub const SKIP_LOG: &str = "VTAB_ORCH_SKIP_LOG";
/// Environment variable: capabilities whose absence fails a test rather than skipping it.
pub const REQUIRE: &str = "VTAB_ORCH_REQUIRE";

/// `test` cannot run here: it needs `capability` (e.g. "slurm", "gpu", "root") and `why`
/// says what is missing. Panics if the capability was declared required; otherwise reports
/// the skip and returns, and the test returns right after.
pub fn skipped(capability: &str, test: &str, why: &str) {
    let required = std::env::var(REQUIRE).unwrap_or_default();
    if required.split(',').any(|c| c.trim() == capability) {
        panic!("{test}: {why}; but {REQUIRE}={required} says this machine has `{capability}`, so this is a failure, not a skip");
    }
    let line = format!("SKIPPED {test} (needs {capability}): {why}");
    let _ = writeln!(std::io::stderr().lock(), "\n*** {line} ***\n");
    if let Some(path) = std::env::var_os(SKIP_LOG) {
        // One write of one line per skip: lines of concurrent tests do not interleave.
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = appended {
            panic!("{test}: could not record its skip in {SKIP_LOG}={path:?}: {e}");
        }
    }
}
