#!/usr/bin/env bash
# Our train step against peft eager, in the same run, for every bench configuration peft can
# express (scripts/peft_bench.py), with the same shapes, steps and precision; prints a
# Markdown table with the ratio (ours img/s / peft img/s) per method and writes both JSON
# files and the table under OUT (default docs/bench/<date>-cpu). The two run one after the
# other, alternating method by method, so a change of machine load hits both sides alike.
#
#   scripts/bench_compare.sh                      # CPU: ViT-B/16 at 64 px, batch 16, fp32
#   METHODS="dora_qkv_r8 hra_qkv_r8" scripts/bench_compare.sh          # some rows only
#   DEVICE=cuda ARGS="--batch 64" AMP=1 scripts/bench_compare.sh    # a GPU, bf16
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}
OUT=${OUT:-docs/bench/$(date +%F)-$DEVICE}
ARGS=${ARGS:---img-size 64 --batch 16 --warmup 1 --steps 4}
VTAB=${VTAB_ORCH:-target/release/vtab-orch}
PY=${VTAB_ORCH_PYTHON:-python3}
mkdir -p "$OUT"
precision=fp32; amp=()
if [[ -n "${AMP:-}" ]]; then precision=bf16; amp=(--amp); fi
all=$("$PY" - <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("pb", "scripts/peft_bench.py")
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
print(" ".join(m.CONFIGS))
PY
)
# METHODS="a b" measures only those (the table lists every method measured in OUT).
methods=${METHODS:-$all}
ours=(); peft=()
for m in $methods; do
    echo "== $m" >&2
    # shellcheck disable=SC2086
    "$VTAB" bench --preset vit_base_patch16_224 $ARGS --eval-steps 1 --eval-batch 8 \
        --device "$DEVICE" --precision "$precision" --methods "$m" --json "$OUT/ours_$m.json" >/dev/null
    # shellcheck disable=SC2086
    "$PY" scripts/peft_bench.py "$OUT/peft_$m.json" --device "$DEVICE" $ARGS "${amp[@]}" --methods "$m" >/dev/null
done
"$PY" - "$OUT" $all <<'PY' | tee "$OUT/compare.md"
import json, os, sys
out, methods = sys.argv[1], sys.argv[2:]
print("| method | trainable (ours / peft) | ours img/s | peft eager img/s | ratio |")
print("|---|---|---:|---:|---:|")
for m in methods:
    if not (os.path.exists(f"{out}/ours_{m}.json") and os.path.exists(f"{out}/peft_{m}.json")):
        continue
    o = json.load(open(f"{out}/ours_{m}.json"))[0]; p = json.load(open(f"{out}/peft_{m}.json"))[0]
    print(f"| {m} | {o['trainable']:,} / {p['trainable']:,} | {o['train_img_s']:.1f} | {p['train_img_s']:.1f} | {o['train_img_s'] / p['train_img_s']:.2f} |")
PY
