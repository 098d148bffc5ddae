//! Every input kept in fuzz/regressions/<target>/ (crashes the fuzzer found, and hand-made
//! hostile files) goes through its fuzz target's body in the normal test suite, so a fixed
//! crash stays fixed without running libFuzzer. An input with a `<name>.expect` file beside it
//! must also be refused with each of its lines in the errors (a fix that stopped refusing it,
//! e.g. a `../` path accepted again, fails here too).
use std::path::{Path, PathBuf};

/// (target, input file) of every kept input.
fn kept_inputs() -> Vec<(String, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
    let mut out = Vec::new();
    for target in std::fs::read_dir(&dir).unwrap().flatten() {
        if !target.path().is_dir() {
            continue; // README.md
        }
        let name = target.file_name().to_string_lossy().into_owned();
        for input in std::fs::read_dir(target.path()).unwrap().flatten() {
            let path = input.path();
            if path.extension().is_none_or(|e| e != "expect") {
                out.push((name.clone(), path));
            }
        }
    }
    out.sort();
    out
}

fn errors_of(target: &str, input: &Path) -> Vec<String> {
    let bytes = std::fs::read(input).unwrap();
    orchestrator::fuzzing::run(target, &bytes)
        .unwrap_or_else(|| panic!("fuzz/regressions/{target}: no such fuzz target"))
}

#[test]
fn every_kept_fuzz_input_runs_clean_and_is_refused_as_expected() {
    let inputs = kept_inputs();
    let mut expected = 0;
    for (target, input) in &inputs {
        let said = errors_of(target, input).join("\n");
        let Ok(want) = std::fs::read_to_string(input.with_extension("expect")) else {
            continue;
        };
        for line in want.lines().map(str::trim).filter(|l| !l.is_empty()) {
            assert!(
                said.contains(line),
                "{}: expected an error containing {line:?}, got:\n{said}",
                input.display()
            );
        }
        expected += 1;
    }
    orchestrator::fuzzing::remove_scratch();
    // Not an empty folder: this test checks something.
    assert!(
        expected > 0,
        "{} kept inputs, none with an .expect",
        inputs.len()
    );
}

/// Prints what every kept input is refused with (`--ignored --nocapture`, to write a new
/// `.expect` file).
#[test]
#[ignore]
fn print_the_errors_of_every_kept_input() {
    for (target, input) in kept_inputs() {
        println!("{}: {:?}", input.display(), errors_of(&target, &input));
    }
    orchestrator::fuzzing::remove_scratch();
}
