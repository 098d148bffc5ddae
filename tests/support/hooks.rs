//! Test hooks (`VTAB_ORCH_TEST_*`, orchestrator/src/test_hooks.rs) for the tests that drive
//! the binary (`#[path = "support/hooks.rs"] mod hooks;`). Owns the check that the binary has
//! them; must not pick hook values for a test.
use std::ffi::OsStr;
use std::sync::OnceLock;

/// The environment entry `(name, value)` of a hook, after making sure the binary under test
/// was built with them (`--features test-hooks`). Without them the variable would be ignored
/// and the test would pass or fail blind, so this fails it.
pub fn hook<V: AsRef<OsStr>>(name: &'static str, value: V) -> (&'static str, V) {
    static COMPILED_IN: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = COMPILED_IN.get_or_init(|| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
            .arg("env")
            .output()
            .map_err(|e| format!("running vtab-orch env: {e}"))?;
        let out = String::from_utf8_lossy(&o.stdout);
        match out.lines().find_map(|l| l.strip_prefix("test hooks: ")) {
            Some("on") => Ok(()),
            _ => Err(format!(
                "vtab-orch was built without its test hooks, which would ignore the variable: \
                 run the tests with `cargo test --features test-hooks` (./x test does).\n\
                 vtab-orch env said:\n{out}"
            )),
        }
    });
    if let Err(e) = checked {
        panic!("{name}: {e}");
    }
    (name, value)
}
