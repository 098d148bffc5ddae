"""Load an adapter directory written by vtab-orch with peft.PeftModel.from_pretrained on a
timm ViT and write its logits: the interoperability check run by kernels/tests/parity.rs.

usage: peft_check.py CONFIG_JSON BASE_WEIGHTS ADAPTER_DIR INPUT OUTPUT
  CONFIG_JSON  timm VisionTransformer kwargs (img_size, patch_size, embed_dim, ...)
  BASE_WEIGHTS safetensors state dict of the base model (timm names)
  INPUT        safetensors with tensor `x`; OUTPUT gets `logits` and `trainable`
"""
import json
import sys

import timm
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

import peft_shims

peft_shims.install()  # BOFT's butterfly factors on the CPU

cfg_path, base_path, adapter_dir, in_path, out_path = sys.argv[1:6]
cfg = json.load(open(cfg_path))
model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **cfg)
model.load_state_dict(load_file(base_path))
model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True).eval()
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
with torch.no_grad():
    logits = model(load_file(in_path)["x"])
save_file({"logits": logits.contiguous(), "trainable": torch.tensor([trainable])}, out_path)
