#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/*.rs) for SECONDS each under libFuzzer, seeded with
# scripts/fuzz_corpus.py's corpus (target/fuzz-corpus/, where libFuzzer also keeps what it
# finds) and the kept inputs in fuzz/regressions/<target>/. Prints executions per second and
# total executions per target (also in target/fuzz/last-run.md) and exits 1 naming the input
# of every crash, with the command that replays it.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (through ./x fuzz, which sets up the build)
#
# Stable Rust: coverage comes from LLVM's sancov pass (-Cpasses=sancov-module, stable flags);
# no sanitizer (that needs nightly). A panic, an abort (stack overflow, failed allocation), a
# timeout (10 s per input) or more than 2 GB of memory is a crash.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
secs="${1:-60}"
[[ $# -gt 0 ]] && shift
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  targets=()
  for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
host="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
echo "[fuzz] building ${#targets[@]} targets (coverage-instrumented, target/fuzz)" >&2
# --target: the flags reach the targets' code, not build scripts or proc macros.
cargo build --quiet --locked --release --manifest-path fuzz/Cargo.toml --target "$host" \
  --target-dir target/fuzz --bins
bin="target/fuzz/$host/release"
"${VTAB_ORCH_PYTHON:-python3}" scripts/fuzz_corpus.py target/fuzz-corpus >&2
summary="target/fuzz/last-run.md"
{
  echo "| target | seconds | executions | exec/s | corpus | result |"
  echo "| :--- | ---: | ---: | ---: | ---: | :--- |"
} >"$summary"
failed=0
for t in "${targets[@]}"; do
  corpus="target/fuzz-corpus/$t"
  arts="target/fuzz-artifacts/$t"
  rm -rf "$arts" # a crash named below is this run's
  mkdir -p "$corpus" "$arts"
  seeds=("$corpus")
  [[ -d "fuzz/regressions/$t" ]] && seeds+=("fuzz/regressions/$t")
  log="target/fuzz/$t.log"
  echo "[fuzz] $t for ${secs}s" >&2
  set +e
  "$bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$arts/" "${seeds[@]}" >"$log" 2>&1 &
  pid=$!
  wait "$pid"
  rc=$?
  set -e
  # The archive targets' scratch folder (orchestrator/src/fuzzing.rs), named by the pid.
  rm -rf "/dev/shm/vtab-orch-fuzz-$pid" "${TMPDIR:-/tmp}/vtab-orch-fuzz-$pid"
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  size="$(find "$corpus" -type f | wc -l)"
  if [[ $rc -eq 0 ]]; then
    result=ok
  else
    failed=1
    crash="$(ls -t "$arts" 2>/dev/null | head -1)"
    result="CRASH ($arts/$crash)"
    echo "[fuzz] $t crashed (exit $rc); the last lines of $log:" >&2
    tail -30 "$log" >&2
    echo "[fuzz] replay: $bin/$t $arts/$crash ; keep it: cp $arts/$crash fuzz/regressions/$t/" >&2
  fi
  echo "| $t | $secs | ${execs:-?} | ${rate:-?} | $size | $result |" >>"$summary"
done
cat "$summary"
exit $failed
