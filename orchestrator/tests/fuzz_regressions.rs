//! Every input kept in fuzz/regressions/<target>/ (crashes the fuzzer found, and hand-made
//! hostile files) goes through its fuzz target's body in the normal test suite, so a fixed
//! crash stays fixed without running libFuzzer.
use std::path::Path;

#[test]
fn every_kept_fuzz_input_runs_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut ran = 0;
    for target in std::fs::read_dir(&dir).unwrap().flatten() {
        if !target.path().is_dir() {
            continue; // README.md
        }
        let name = target.file_name().to_string_lossy().into_owned();
        for input in std::fs::read_dir(target.path()).unwrap().flatten() {
            let bytes = std::fs::read(input.path()).unwrap();
            assert!(
                orchestrator::fuzzing::run(&name, &bytes),
                "fuzz/regressions/{name}: no such fuzz target"
            );
            ran += 1;
        }
    }
    orchestrator::fuzzing::remove_scratch();
    // The folder is not empty: this test checks something.
    assert!(ran > 0, "no inputs under {}", dir.display());
}
