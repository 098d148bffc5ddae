#!/usr/bin/env bash
# Epoch time of vtab-orch's device-resident data path against a torchvision ImageFolder +
# DataLoader(8 workers) epoch (shared/anchors/loader_bench.py), same images, same machine,
# one command. Needs a CUDA machine with python3 (torch, torchvision, timm, peft, PIL).
#
#   VTAB_ORCH=target/release/vtab-orch bash scripts/loader_compare.sh path/to/loader_bench.py
#
# The anchor writes 1000 random 256-px JPEGs (10 classes) to /tmp/fakevtab and trains timm
# ViT-B/16 + peft LoRA (qkv, r=8) for 6 epochs in bf16. vtab-orch then runs the same method on
# the same files (a CSV list of all 1000 as the training pool, so an epoch is 1000 images):
# prep decodes them once, training reads uint8 tensors already on the GPU.
# Extra arguments are passed to `vtab-orch run` (e.g. --set defaults.img_size=32 for a CPU try).
set -euo pipefail
bench="${1:?usage: loader_compare.sh path/to/loader_bench.py [vtab-orch run args]}"
shift
exe="${VTAB_ORCH:-target/release/vtab-orch}"
work="${WORK:-/tmp/vtab-loader-compare}"
rm -rf "$work" && mkdir -p "$work"
echo "== anchor: torchvision DataLoader (8 workers) =="
OUT="$work" python3 "$bench"
python3 - "$work" <<'PY'
import os, sys
work, root = sys.argv[1], "/tmp/fakevtab"
rows = [f"{c}/{f},{c}" for c in sorted(os.listdir(root)) for f in sorted(os.listdir(f"{root}/{c}"))]
open(f"{root}/train.csv", "w").write("\n".join(rows) + "\n")
open(f"{root}/test.csv", "w").write("\n".join(rows[::10]) + "\n")
open(f"{work}/suite.toml", "w").write(f'''name = "loader-compare"
store = "store"
[defaults]
img_size = 224
epochs = 6
batch_size = 64
warmup_epochs = 0
precision = "bf16"
[backbone]
arch = "vit_base_patch16_224"
[backbone.pretrain]
images = 64
epochs = 1
batch_size = 64
[datasets.fake]
format = "csv"
root = "{root}"
train_csv = "train.csv"
test_csv = "test.csv"
[methods.lora]
r = 8
alpha = 8
targets = "qkv"
''')
PY
echo "== vtab-orch: device-resident uint8 batches =="
"$exe" run "$work/suite.toml" "$@"
python3 - "$work" <<'PY'
import glob, json, sys
log = json.load(open(glob.glob(f"{sys.argv[1]}/store/train/*/log.json")[0]))
ep = log["epochs"]
times = [round(e["time_s"], 3) for e in ep]
n = ep[0]["img_s"] * ep[0]["time_s"]
steady = n / (sum(times[1:]) / max(1, len(times) - 1))
print(json.dumps({"epoch_s": times, "imgs_per_epoch": round(n), "steady_img_s": round(steady, 1)}))
PY
