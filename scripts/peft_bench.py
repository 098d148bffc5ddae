"""peft eager (timm + Hugging Face peft) train-step benchmark for every configuration of
`vtab-orch bench` that peft (or plain timm, for linear / full / BitFit) can express, with the
same protocol: random init, a new 100-class head, AdamW (lr 1e-3, weight decay 0.05), WARM
warm-up and STEPS timed steps on one random batch. shared/anchors/peft_bench.py is the GPU
anchor this extends (more methods, any device, any size); `scripts/bench_compare.sh` runs
it beside our bench and prints the ratios.

usage: peft_bench.py OUT_JSON [--device cpu|cuda] [--preset P] [--img-size N] [--batch B]
                     [--warmup W] [--steps S] [--amp] [--methods a,b,...]
"""
import argparse
import json
import time

import peft
import timm
import torch
from peft import (BOFTConfig, C3AConfig, RandLoraConfig, VBLoRAConfig, FourierFTConfig, HRAConfig, OFTConfig, ShiraConfig, IA3Config, LNTuningConfig, LoHaConfig, LoKrConfig, LoraConfig, VeraConfig,
                  get_peft_model)

NCLS = 100
# Our bench rows (kernels' registry) in peft terms: (peft config or a plain-timm rule).
LORA_ALL_PE = ["qkv", "proj", "fc1", "fc2"]  # peft's suffix `proj` is attn.proj and patch_embed.proj
CONFIGS = {
    "linear": "head",
    "full": "all",
    "bitfit": "bias",
    "lora_qkv_r8": LoraConfig(r=8, lora_alpha=8, target_modules=["qkv"], modules_to_save=["head"]),
    "lora_all_pe_r8": LoraConfig(r=8, lora_alpha=8, target_modules=LORA_ALL_PE, modules_to_save=["head"]),
    "pissa_qkv_r8": LoraConfig(r=8, lora_alpha=8, init_lora_weights="pissa", target_modules=["qkv"], modules_to_save=["head"]),
    "dora_qkv_r8": LoraConfig(r=8, lora_alpha=8, use_dora=True, target_modules=["qkv"], modules_to_save=["head"]),
    "vera_qkv_mlp_r256": VeraConfig(r=256, target_modules=["qkv", "fc1", "fc2"], modules_to_save=["head"]),
    "ia3_qkv_fc2": IA3Config(target_modules=["qkv", "fc2"], feedforward_modules=["fc2"], modules_to_save=["head"]),
    "ln_tuning": LNTuningConfig(target_modules=r"blocks\.\d+\.norm[12]|norm", modules_to_save=["head"]),
    "loha_qkv_r8": LoHaConfig(r=8, alpha=8, target_modules=["qkv"], modules_to_save=["head"]),
    "lokr_qkv_r8": LoKrConfig(r=8, alpha=8, target_modules=["qkv"], modules_to_save=["head"]),
    "hra_qkv_r8": HRAConfig(r=8, target_modules=["qkv"], modules_to_save=["head"]),
    "fourierft_qkv_n1000": FourierFTConfig(n_frequency=1000, target_modules=["qkv"], modules_to_save=["head"]),
    "oft_qkv_b16": OFTConfig(oft_block_size=16, target_modules=["qkv"], modules_to_save=["head"]),
    "shira_qkv_r32": ShiraConfig(r=32, target_modules=["qkv"], modules_to_save=["head"]),
    "c3a_qkv_b48": C3AConfig(block_size=48, target_modules=["qkv"], modules_to_save=["head"]),
    "vblora_qkv_r4_l48": VBLoRAConfig(r=4, num_vectors=256, vector_length=48, target_modules=["qkv"], modules_to_save=["head"]),
    "randlora_qkv_r32": RandLoraConfig(r=32, target_modules=["qkv"], modules_to_save=["head"]),
    "boft_qkv_b8": BOFTConfig(boft_block_size=8, target_modules=["qkv"], modules_to_save=["head"]),
}


def make(name, args):
    kw = dict(pretrained=False, num_classes=NCLS)
    if args.img_size:
        kw["img_size"] = args.img_size
    m = timm.create_model(args.preset, **kw)
    cfg = CONFIGS[name]
    if cfg == "head":
        for n, p in m.named_parameters():
            p.requires_grad = n.startswith("head")
    elif cfg == "bias":
        for n, p in m.named_parameters():
            p.requires_grad = n.startswith("head") or n.endswith(".bias")
    elif cfg != "all":
        m = get_peft_model(m, cfg)
    return m.to(args.device)


def sync(dev):
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def bench(name, args):
    torch.manual_seed(0)
    m = make(name, args).train()
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    size = args.img_size or 224
    x = torch.randn(args.batch, 3, size, size, device=args.device)
    y = torch.randint(0, NCLS, (args.batch,), device=args.device)
    dtype = torch.bfloat16

    def step():
        with torch.autocast(args.device.split(":")[0], dtype=dtype, enabled=args.amp):
            loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    sync(args.device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(args.device)
    dt = (time.perf_counter() - t) / args.steps
    return dict(method=name, trainable=sum(p.numel() for p in params),
                total=sum(p.numel() for p in m.parameters()),
                train_img_s=round(args.batch / dt, 2), step_ms=round(dt * 1e3, 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="vit_base_patch16_224")
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--methods", default=",".join(CONFIGS))
    args = ap.parse_args()
    print("torch", torch.__version__, "timm", timm.__version__, "peft", peft.__version__,
          "threads", torch.get_num_threads(), flush=True)
    rows = []
    for name in args.methods.split(","):
        r = bench(name, args)
        print(json.dumps(r), flush=True)
        rows.append(r)
    json.dump(rows, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
