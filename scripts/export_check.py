"""Load exports written by `vtab-orch export` the way a user would, and write their logits:
the interoperability check run by tests/export.rs.

usage: export_check.py JOBS_JSON INPUT
  JOBS_JSON  a list of {"dir": OUT, "out": RESULT}; each OUT holds vtab-orch.json (its format)
  INPUT      safetensors with tensor `x` (normalised images)
Each RESULT gets `logits`; a merged export also `overlay_logits`: the same file loaded through
timm.create_model(ARCH, pretrained_cfg_overlay=dict(file=...)) instead of local-dir.
"""
import json
import os
import sys

import timm
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

jobs_path, in_path = sys.argv[1:3]
x = load_file(in_path)["x"]
for job in json.load(open(jobs_path)):
    out_dir = job["dir"]
    rec = json.load(open(os.path.join(out_dir, "vtab-orch.json")))
    arch, args, n = rec["timm_architecture"], rec["model_args"], rec["num_classes"]
    result = {}
    with torch.no_grad():
        if rec["format"] == "merged":
            model = timm.create_model("local-dir:" + out_dir, pretrained=True).eval()
            result["logits"] = model(x)
            weights = os.path.join(out_dir, "model.safetensors")
            overlay = timm.create_model(
                arch,
                pretrained=True,
                pretrained_cfg_overlay=dict(file=weights, num_classes=n),
                num_classes=n,
                **args,
            ).eval()
            result["overlay_logits"] = overlay(x)
        else:
            base = rec["base_weights"]
            if base.startswith("OUT/"):
                base = os.path.join(out_dir, base[len("OUT/"):])
            model = timm.create_model(
                arch,
                pretrained=True,
                pretrained_cfg_overlay=dict(file=base),
                num_classes=n,
                **args,
            )
            model = PeftModel.from_pretrained(model, out_dir).eval()
            result["logits"] = model(x)
    save_file({k: v.contiguous() for k, v in result.items()}, job["out"])
