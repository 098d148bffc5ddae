//! Fuzz target `suite`: the body is orchestrator::fuzzing's (replayed by its regression test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    orchestrator::fuzzing::run("suite", data);
});
