#!/usr/bin/env bash
# The GPU measurements of issue 13 in one device call (about 7 minutes on an H200), so a
# session that is lent a GPU spends it on measuring, not on preparing.
#
#   bash scripts/gpu_session.sh prepare   # here (CPU machine): release build -> .device/
#   bash .device/gpu_session.sh run       # there, from the project root; device tool:
#                                         #   carry [".device"], timeout_s 590
#   DRY=1 bash .device/gpu_session.sh run # a CPU dry run of the same steps, tiny shapes
#
# `run` prints, and packs into $OUT/session.tgz (commit it under docs/bench/<date>-<gpu>/):
#   1. `vtab-orch bench` (ViT-B/16, batch 64, bf16) and peft eager (shared/anchors/
#      peft_bench.py) in the same run: train img/s, peak memory, ratios;
#   2. the probe suite (shared/anchors/probe.toml: ViT-B/16, 224 px, every method, 3 epochs of
#      1000 images) three ways: a process per node at --jobs-per-gpu 1 and 4, and warm workers
#      at --jobs-per-gpu 1; wall time, mean GPU utilisation, and `report`'s summary.csv
#      (train_wall_s, epochs_s, overhead_s per run) for each;
#   3. the DataLoader comparison (scripts/loader_compare.sh);
#   4. (`methods`) every method of the catalogue against peft eager, ratio per method
#      (scripts/peft_bench.py; about 13 x 30 s: with all four parts a session needs two
#      calls, e.g. SKIP=probe,loader then SKIP=bench,methods).
# Set SKIP=bench,methods,probe,loader (any of them) to leave parts out on a rerun, SKIP=anchor
# to leave peft's anchor run out of the bench part, and METHODS="a b" to measure only those
# rows in the methods part (names of scripts/peft_bench.py's CONFIGS).
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

prepare() {
    local root
    root="$(cd "$here/.." && pwd)"
    cd "$root"
    eval "$(./x env)"
    cargo build --release --quiet || exit 1
    rm -rf .device && mkdir .device
    cp target/release/vtab-orch .device/ && strip .device/vtab-orch
    cp ../shared/anchors/{probe.toml,peft_bench.py,loader_bench.py} .device/
    cp scripts/loader_compare.sh scripts/gpu_session.sh .device/
    cp scripts/peft_bench.py .device/peft_bench_all.py
    local mib
    mib=$(du -sm .device | cut -f1)
    echo "prepared .device/ ($mib MiB; the device tool carries at most 64 MiB)"
    [ "$mib" -lt 64 ] || { echo "error: .device/ is too large to carry" >&2; exit 1; }
}

# Mean of the first column of an nvidia-smi CSV (GPU utilisation %), or "n/a".
mean_util() {
    if [ -s "$1" ]; then
        awk -F, '{s+=$1; n++} END {printf "%.0f", s/n}' "$1"
    else
        printf "n/a"
    fi
}

run() {
    cd "$here"
    local out="${OUT:-/tmp}" w=/tmp/session-out skip=",${SKIP:-},"
    rm -rf "$w" && mkdir -p "$w"
    export LD_LIBRARY_PATH
    LD_LIBRARY_PATH="$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib"
    chmod +x vtab-orch
    local gpus=() bench=(--preset vit_base_patch16_224 --batch 64 --precision bf16)
    local sets=()
    if [ -n "${DRY:-}" ]; then
        echo "DRY=1: CPU, tiny shapes; the numbers mean nothing"
        gpus=(--gpus none)
        bench=(--preset vit_tiny_patch16_224 --img-size 32 --depth 2 --batch 8 --steps 3 \
            --warmup 1 --eval-steps 2 --device cpu)
        sets=(--set backbone.img_size=32 --set defaults.img_size=32 --set backbone.depth=2
            --set defaults.epochs=1 --set backbone.embed_dim=48 --set backbone.num_heads=2)
    else
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    fi
    ./vtab-orch env > "$w/env.txt" 2>&1; head -4 "$w/env.txt"

    if [[ $skip != *,bench,* ]]; then
        echo "== vtab-orch bench ${bench[*]}"
        timeout 150 ./vtab-orch bench "${bench[@]}" --json "$w/ours_bench.json" \
            > "$w/ours_bench.txt" 2>&1; echo "rc=$?"; grep '^|' "$w/ours_bench.txt"
        if [ -z "${DRY:-}" ] && [[ $skip != *,anchor,* ]]; then
            echo "== peft eager (same machine, same run)"
            AMP_ONLY=1 OUT="$w" timeout 150 python3 peft_bench.py 2>&1 | tail -7
        fi
    fi

    if [[ $skip != *,methods,* ]]; then
        # Every method of the catalogue against peft eager (scripts/peft_bench.py), one
        # after the other per method, as scripts/bench_compare.sh does on the CPU.
        local dev=cuda pargs=(--batch 64 --amp) names
        if [ -n "${DRY:-}" ]; then
            dev=cpu; pargs=(--preset vit_tiny_patch16_224 --img-size 32 --batch 8 --warmup 1 --steps 3)
        fi
        names=$(python3 -c "import importlib.util as u; s=u.spec_from_file_location('p','peft_bench_all.py'); m=u.module_from_spec(s); s.loader.exec_module(m); print(' '.join(m.CONFIGS))")
        [ -n "${METHODS:-}" ] && names="$METHODS"
        echo "== every method: ours and peft eager (${pargs[*]})"
        for m in $names; do
            timeout 60 ./vtab-orch bench "${bench[@]}" --methods "$m" \
                --json "$w/m_ours_$m.json" > /dev/null 2>&1 || echo "ours $m: rc=$?"
            timeout 90 python3 peft_bench_all.py "$w/m_peft_$m.json" --device "$dev" "${pargs[@]}" \
                --methods "$m" > /dev/null 2>&1 || echo "peft $m: rc=$?"
        done
        python3 - "$w" $names <<'PY' | tee "$w/methods_compare.md"
import json, os, sys
w, names = sys.argv[1], sys.argv[2:]
print("| method | trainable (ours / peft) | ours img/s | peft eager img/s | ratio |")
print("|---|---|---:|---:|---:|")
for m in names:
    o, p = f"{w}/m_ours_{m}.json", f"{w}/m_peft_{m}.json"
    if os.path.exists(o) and os.path.exists(p):
        o, p = json.load(open(o))[0], json.load(open(p))[0]
        print(f"| {m} | {o['trainable']:,} / {p['trainable']:,} | {o['train_img_s']:.1f} | {p['train_img_s']:.1f} | {o['train_img_s'] / p['train_img_s']:.2f} |")
PY
    fi

    if [[ $skip != *,probe,* ]]; then
        # The probe's backbone: timm's random init (it measures time, not accuracy).
        local shape="{}"
        [ -n "${DRY:-}" ] && shape="dict(img_size=32, depth=2, embed_dim=48, num_heads=2)"
        python3 -c "import timm; from safetensors.torch import save_file; m=timm.create_model('vit_base_patch16_224', pretrained=False, **$shape); save_file({k:v.contiguous() for k,v in m.state_dict().items()}, 'vitb16.safetensors')"
        for variant in cold_j1 cold_j4 warm_j1; do
            local args=("${gpus[@]}") store="store_$variant"
            case $variant in
                cold_j4) args+=(--jobs-per-gpu 4) ;;
                warm_j1) args+=(--warm-workers) ;;
            esac
            rm -rf "$store"
            sed "s/^store = .*/store = \"$store\"/" probe.toml > "probe_$variant.toml"
            local sm=""
            if [ -z "${DRY:-}" ]; then
                nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
                    -lms 500 > "$w/util_$variant.csv" 2>/dev/null &
                sm=$!
            fi
            local t0 t1 rc
            t0=$(date +%s.%N)
            timeout 240 ./vtab-orch run "probe_$variant.toml" "${sets[@]}" "${args[@]}" \
                > "$w/run_$variant.log" 2>&1
            rc=$?
            t1=$(date +%s.%N)
            [ -n "$sm" ] && kill "$sm" 2>/dev/null
            echo "== probe suite $variant (${args[*]}): rc=$rc, wall $(python3 -c "print(round($t1-$t0,1))") s, mean GPU util $(mean_util "$w/util_$variant.csv") %"
            ./vtab-orch report "probe_$variant.toml" "${sets[@]}" "${gpus[@]}" \
                --out "$w/report_$variant" > /dev/null 2>&1
            python3 - "$w/report_$variant/summary.csv" <<'PY'
import csv, sys
try:
    rows = list(csv.DictReader(open(sys.argv[1])))
except OSError:
    sys.exit(print("   no summary.csv (report failed)"))
for kind in ("train_wall_s", "epochs_s", "overhead_s"):
    vals = [float(r[kind]) for r in rows if r.get(kind)]
    if vals:
        print(f"   {kind:13s} sum {sum(vals):7.1f} s  mean {sum(vals)/len(vals):6.2f} s  ({len(vals)} runs)")
PY
        done
    fi

    if [[ $skip != *,loader,* ]] && [ -z "${DRY:-}" ]; then
        echo "== DataLoader comparison"
        VTAB_ORCH="$PWD/vtab-orch" WORK=/tmp/lc timeout 150 bash loader_compare.sh \
            "$PWD/loader_bench.py" > "$w/loader.txt" 2>&1
        echo "rc=$?"; grep -E '^\{' "$w/loader.txt"
    fi
    tar czf "$out/session.tgz" -C "$w" . && echo "wrote $out/session.tgz"
}

case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: gpu_session.sh prepare|run" >&2; exit 2 ;;
esac
