//! Fuzz target `vtab1k_list`: the body is orchestrator::fuzzing's (replayed by its regression test).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    orchestrator::fuzzing::run("vtab1k_list", data);
});
