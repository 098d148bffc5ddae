"""Generate the parity fixtures for `kernels/tests/` with timm and Hugging Face peft.

Run `./x fixtures` (or this script with the project's Python) to rebuild them; every
draw is seeded, so a rerun with the same torch/timm/peft versions gives the same bytes.
Everything is fp32 on CPU. Output: kernels/tests/fixtures/ (manifest.json + safetensors
files + one peft adapter directory per method).
"""
import json
import os
import sys

import peft
import timm
import torch
from peft import BOFTConfig, C3AConfig, RandLoraConfig, VBLoRAConfig, FourierFTConfig, HRAConfig, OFTConfig, ShiraConfig, IA3Config, LNTuningConfig, LoHaConfig, LoKrConfig, LoraConfig, VeraConfig, get_peft_model
from safetensors.torch import save_file
from timm.models.vision_transformer import checkpoint_filter_fn

import peft_shims

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "kernels", "tests", "fixtures")
os.makedirs(OUT, exist_ok=True)
torch.use_deterministic_algorithms(True)
manifest = {"versions": {"torch": torch.__version__, "timm": timm.__version__, "peft": peft.__version__}}

# Two tiny ViTs. "a": the default path. "b": other widths, a checkpoint made at 32 px
# loaded into a 48 px model, so the position embedding is resampled (bicubic, as timm).
CFG_A = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0, num_classes=10)
CFG_B = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=7)
B_IMG = 48


def vit(cfg, **over):
    c = dict(cfg, **over)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **c)


def perturb(model, seed):
    """timm zero-initialises biases; make every tensor non-trivial so the test can see it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def save(name, tensors):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(OUT, name))


# --- plain ViT, config a -------------------------------------------------------------
torch.manual_seed(0)
ma = vit(CFG_A).eval()
perturb(ma, 1)
save("vit_a.safetensors", ma.state_dict())
xa = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
with torch.no_grad():
    la = ma(xa)
save("vit_a_io.safetensors", {"x": xa, "logits": la})
manifest["vit_a"] = dict(CFG_A, weights="vit_a.safetensors", io="vit_a_io.safetensors")

# --- config b, checkpoint at 32 px, model at 48 px ------------------------------------
torch.manual_seed(3)
mb32 = vit(CFG_B)
perturb(mb32, 4)
ckpt = mb32.state_dict()
save("vit_b32.safetensors", ckpt)
mb48 = vit(CFG_B, img_size=B_IMG).eval()
mb48.load_state_dict(checkpoint_filter_fn(dict(ckpt), mb48))
xb = torch.randn(2, 3, B_IMG, B_IMG, generator=torch.Generator().manual_seed(5))
with torch.no_grad():
    lb = mb48(xb)
save("vit_b48_io.safetensors", {"x": xb, "logits": lb, "pos_embed": mb48.pos_embed})
manifest["vit_b"] = dict(CFG_B, weights="vit_b32.safetensors", model_img_size=B_IMG, io="vit_b48_io.safetensors")

# --- peft adapters on config a (new 10-class head saved with the adapter) -------------
ADAPTERS = {
    "lora": LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "lora_rs": LoraConfig(r=4, lora_alpha=6, use_rslora=True, target_modules=["qkv", "fc2"], modules_to_save=["head"]),
    "vera": VeraConfig(r=16, target_modules=["qkv", "fc1", "fc2"], projection_prng_key=7, modules_to_save=["head"]),
    "ia3": IA3Config(target_modules=["qkv", "fc1", "fc2"], feedforward_modules=["fc2"], modules_to_save=["head"]),
    # peft matches list entries as dotted suffixes: `proj` also puts a Conv2d LoRA / IA3
    # vector on patch_embed.proj.
    "lora_suffix": LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "proj", "fc1", "fc2"], modules_to_save=["head"]),
    "ia3_suffix": IA3Config(target_modules=["qkv", "proj", "fc1", "fc2"], feedforward_modules=["fc2"], modules_to_save=["head"]),
    # A regex string is matched against whole module names (re.fullmatch).
    "lora_regex": LoraConfig(r=3, lora_alpha=5, target_modules=r"blocks\.\d+\.(attn\.qkv|mlp\.fc2)|patch_embed\.proj", modules_to_save=["head"]),
    # No modules_to_save: the adapter has no head and uses the checkpoint's (timm's 10 classes).
    "lora_headless": LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "fc1"]),
    # DoRA: LoRA's defaults with use_dora, then another configuration (rsLoRA scale, the
    # suffix-matched `proj` putting a Conv2d DoRA on patch_embed.proj).
    "dora": LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "dora_rs_conv": LoraConfig(r=3, lora_alpha=5, use_dora=True, use_rslora=True, target_modules=["qkv", "proj", "fc2"], modules_to_save=["head"]),
    # LayerNorm tuning: every LayerNorm (a regex: the suffix `norm` would also hit timm's
    # parameterless attn.q_norm, which peft cannot wrap), then norm1 of each block only.
    "ln_tuning": LNTuningConfig(target_modules=r"blocks\.\d+\.norm[12]|norm", modules_to_save=["head"]),
    "ln_tuning_norm1": LNTuningConfig(target_modules=["norm1"], modules_to_save=["head"]),
    # LoHa: peft's defaults on the block linears, then another rank and scale with the
    # patch embedding's conv (as a linear layer over flattened patches).
    "loha": LoHaConfig(r=4, alpha=4, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "loha_conv": LoHaConfig(r=2, alpha=5, target_modules=["qkv", "proj", "fc2"], modules_to_save=["head"]),
    # LoKr: peft's defaults (the conv's W2 whole: [8, 3, 8, 8]), then decompose_both with a
    # rank small enough to factor W1 and a decompose_factor.
    "lokr": LoKrConfig(r=4, alpha=4, target_modules=["qkv", "proj", "fc1", "fc2"], modules_to_save=["head"]),
    "lokr_both": LoKrConfig(r=1, alpha=3, decompose_both=True, decompose_factor=4, target_modules=["qkv", "proj", "fc2"], modules_to_save=["head"]),
    # HRA: peft's default r = 8 on the block linears, then Gram-Schmidt with the conv.
    "hra": HRAConfig(r=8, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "hra_gs_conv": HRAConfig(r=4, apply_GS=True, target_modules=["qkv", "proj", "fc2"], modules_to_save=["head"]),
    # FourierFT: peft's defaults (standard-normal coefficients) but fewer coefficients (the
    # layers are small), then another count, scale and position seed with zero coefficients.
    "fourierft": FourierFTConfig(n_frequency=100, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "fourierft_s": FourierFTConfig(n_frequency=37, scaling=20.0, random_loc_seed=5, init_weights=True, target_modules=["qkv", "fc2"], modules_to_save=["head"]),
    # OFT: peft's defaults (5-term Neumann series) with blocks of 8 (the default 32 does not
    # divide 48), then r = 4 blocks per layer, the exact Cayley transform and one shared block.
    "oft": OFTConfig(oft_block_size=8, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "oft_exact_shared": OFTConfig(r=4, oft_block_size=0, use_cayley_neumann=False, block_share=True, target_modules=["qkv", "fc2"], modules_to_save=["head"]),
    # BOFT: peft's defaults (blocks of 4, one butterfly factor) on the block linears, then 4
    # blocks per factor and two butterfly factors, with the conv (peft runs a second factor
    # only with its CUDA block-diagonal op: PyTorch's own one stands in for it below).
    "boft": BOFTConfig(boft_block_size=4, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "boft_butterfly_conv": BOFTConfig(boft_block_size=0, boft_block_num=4, boft_n_butterfly_factor=2, target_modules=["qkv", "proj", "fc2"], modules_to_save=["head"]),
    # PiSSA and OLoRA: LoRA inits that start B A at the weight's principal factors (exact SVD;
    # QR) and move s B A out of the frozen weight; the second with rsLoRA's scale.
    "lora_pissa": LoraConfig(r=4, lora_alpha=8, init_lora_weights="pissa", target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "lora_olora_rs": LoraConfig(r=3, lora_alpha=5, use_rslora=True, init_lora_weights="olora", target_modules=["qkv", "fc2"], modules_to_save=["head"]),
    # SHiRA: random masks from the unseeded generator (peft's default), then a seeded one.
    "shira": ShiraConfig(r=4, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "shira_seeded": ShiraConfig(r=2, random_seed=3, target_modules=["qkv", "fc2"], modules_to_save=["head"]),
    # C3A: peft's default xavier-uniform kernels with blocks of 16 (the default 256 is wider
    # than these layers), then zero-started kernels (init_weights=True) with blocks of 48.
    "c3a": C3AConfig(block_size=16, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "c3a_zeros_b48": C3AConfig(block_size=48, init_weights=True, target_modules=["qkv", "fc2"], modules_to_save=["head"]),
    # VB-LoRA: peft's defaults but a smaller bank (32 vectors of 16: the default length 256
    # is wider than these layers), then rank 2, 8 vectors of 48 mixed three at a time.
    "vblora": VBLoRAConfig(r=4, num_vectors=32, vector_length=16, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "vblora_top3": VBLoRAConfig(r=2, num_vectors=8, vector_length=48, topk=3, target_modules=["qkv", "fc2"], modules_to_save=["head"]),
    # RandLoRA: peft's dense bf16 kaiming bases at rank 8 and scale 1 (the default alpha 640
    # would be 80: gradients near 1e1 then amplify fp32 rounding past 1e-5 in three steps,
    # in peft's own custom backward against autograd alike), then sparse ternary bases with
    # another key, rank and scale.
    "randlora": RandLoraConfig(r=8, randlora_alpha=8, target_modules=["qkv", "attn.proj", "fc1", "fc2"], modules_to_save=["head"]),
    "randlora_sparse": RandLoraConfig(r=5, randlora_alpha=20, projection_prng_key=3, sparse=True, target_modules=["qkv", "fc2"], modules_to_save=["head"]),
}

# peft runs BOFT's butterfly factors only with its CUDA block-diagonal op: ours stands in.
peft_shims.install()
# Training steps after the perturbation (fp32, CPU): plain SGD on cross-entropy, so the test
# compares peft's gradients (of every trainable tensor) with ours, not two optimisers. The
# perturbed adapters make gradients large; lr = 1e-3 still moves the logits by 0.03 to 5.
TRAIN = dict(steps=3, lr=0.001, labels=[1, 7, 3, 0])
# Adapters not trained, and why.
UNTRAINED = {
    # Without a saved head peft trains no head, while ours would.
    "lora_headless": "no head saved",
    # Its perturbed r=4 conv LoRA dominates the patch tokens: gradients near 1e3 amplify the
    # fp32 rounding of an equivalent op order (patches x matmul here, conv2d in peft) to
    # 3e-5 in three steps. The conv LoRA is trained in lora_regex (r=3) within 1e-5.
    "lora_suffix": "ill-conditioned: fp32 rounding amplified beyond 1e-5",
}
manifest["adapters"] = {}
for i, (name, cfg) in enumerate(ADAPTERS.items()):
    torch.manual_seed(10 + i)
    base = vit(CFG_A)
    base.load_state_dict(ma.state_dict())
    pm = get_peft_model(base, cfg)
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    # A fresh adapter must be the identity: record the fresh logits too.
    pm.eval()
    with torch.no_grad():
        fresh = pm(xa)
    g = torch.Generator().manual_seed(20 + i)
    with torch.no_grad():
        for pname, p in sorted(pm.named_parameters()):
            if p.requires_grad:
                if "ia3_l" in pname or "ln_tuning_layers.weight" in pname:
                    p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
                elif "randlora_gamma" in pname:
                    # Its own scale (it starts at 1 / min width): RandLoRA's default scale
                    # alpha / r = 80 would otherwise make the update dwarf the weights.
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
                elif "boft_s" in pname:
                    # Output scales near one (unmerging divides by them).
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                elif "oft_R" in pname and "boft_R" not in pname:
                    # Small angles, as after training: with 0.3 the truncated Neumann series
                    # is far from orthogonal and unmerging (a solve) loses digits to it.
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
                elif "lora_magnitude_vector" in pname:
                    # Around its start (the base rows' norms), as after some training.
                    p.mul_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
        logits = pm(xa)
    pm.save_pretrained(os.path.join(OUT, f"peft_{name}"))
    os.remove(os.path.join(OUT, f"peft_{name}", "README.md"))  # a generated model card, not data
    io = {"fresh_logits": fresh, "logits": logits}
    if name not in UNTRAINED:
        pm.train()
        labels = torch.tensor(TRAIN["labels"])
        for _ in range(TRAIN["steps"]):
            pm.zero_grad()
            torch.nn.functional.cross_entropy(pm(xa), labels).backward()
            with torch.no_grad():
                for p in pm.parameters():
                    if p.requires_grad:
                        p.sub_(TRAIN["lr"] * p.grad)
        pm.eval()
        with torch.no_grad():
            io["trained_logits"] = pm(xa)
    save(f"peft_{name}_io.safetensors", io)
    manifest["adapters"][name] = dict(dir=f"peft_{name}", io=f"peft_{name}_io.safetensors", trainable=trainable,
                                      head_saved="head" in (cfg.modules_to_save or []),
                                      trained="trained_logits" in io)
manifest["train"] = TRAIN

# --- Methods no maintained library implements: references written from their papers -----
# AdaptFormer (Chen et al. 2022, eq. 2) as its official code's parallel option
# (ShoufaChen/AdaptFormer: Block with ffn_option="parallel", adapter_layernorm_option="none"):
# x' = x + MLP(LN2(x)) + s * up(ReLU(down(x))), on timm's Block. Tensor names are ours.
class AdaptMLP(torch.nn.Module):
    def __init__(self, d, bottleneck, scale):
        super().__init__()
        self.down_proj = torch.nn.Linear(d, bottleneck)
        self.up_proj = torch.nn.Linear(bottleneck, d)
        self.scale = scale

    def forward(self, x):
        return self.up_proj(torch.relu(self.down_proj(x))) * self.scale


def adaptformer_block_forward(blk):
    def forward(x, attn_mask=None):
        x = x + blk.drop_path1(blk.ls1(blk.attn(blk.norm1(x), attn_mask=attn_mask)))
        return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x)))) + blk.adaptmlp(x)
    return forward


def with_adaptformer(m, bottleneck, scale):
    for blk in m.blocks:
        blk.adaptmlp = AdaptMLP(m.embed_dim, bottleneck, scale)
        torch.nn.init.zeros_(blk.adaptmlp.up_proj.weight)  # the official init_option="lora"
        torch.nn.init.zeros_(blk.adaptmlp.up_proj.bias)
        torch.nn.init.zeros_(blk.adaptmlp.down_proj.bias)
        blk.forward = adaptformer_block_forward(blk)
    return m


# SSF (Lian et al. 2022, eq. 4): y' = gamma * y + beta per channel after every operation its
# official code (dongzelian/SSF, models/vision_transformer.py) follows: patch_embed.proj,
# attn.qkv, attn.proj, mlp.fc1, mlp.fc2, norm1, norm2 and the final norm; gamma ~ N(1, .02),
# beta ~ N(0, .02) (`init_ssf_scale_shift`). Forward hooks on timm's modules.
def with_ssf(m):
    names = ["patch_embed.proj"] + [f"blocks.{i}.{n}" for i in range(len(m.blocks))
                                    for n in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")] + ["norm"]
    for name in names:
        mod = m.get_submodule(name)
        dim = mod.weight.shape[0]
        mod.ssf_scale = torch.nn.Parameter(torch.ones(dim))
        mod.ssf_shift = torch.nn.Parameter(torch.zeros(dim))
        torch.nn.init.normal_(mod.ssf_scale, mean=1, std=0.02)
        torch.nn.init.normal_(mod.ssf_shift, std=0.02)

        def hook(mod, inp, out):
            if out.dim() == 4:  # the conv's [B, D, H, W]
                return out * mod.ssf_scale.view(1, -1, 1, 1) + mod.ssf_shift.view(1, -1, 1, 1)
            return out * mod.ssf_scale + mod.ssf_shift
        mod.register_forward_hook(hook)
    return m


# VPT (Jia et al. 2022) as its official code (KMnP/vpt, models/vit_prompt/vit.py,
# PromptedTransformer with PROJECT = -1): n prompts after the class token, behind the
# position embedding (`incorporate_prompt`); VPT-deep replaces them before every later block
# with that block's own (`forward_deep_prompt`); prompts ~ U(-v, v), v = sqrt(6 / (3 p^2 + D)).
def with_vpt(m, tokens, deep):
    d, p = m.embed_dim, m.patch_embed.patch_size[0]
    v = (6.0 / float(3 * p * p + d)) ** 0.5
    m.prompt_embeddings = torch.nn.Parameter(torch.empty(1, tokens, d).uniform_(-v, v))
    if deep:
        m.deep_prompt_embeddings = torch.nn.Parameter(torch.empty(len(m.blocks) - 1, tokens, d).uniform_(-v, v))

    def forward_features(x, **_):  # timm passes attn_mask, is_causal
        x = m._pos_embed(m.patch_embed(x))  # [cls, patches] + pos_embed, as timm
        b = x.shape[0]
        x = torch.cat([x[:, :1], m.prompt_embeddings.expand(b, -1, -1), x[:, 1:]], dim=1)
        for i, blk in enumerate(m.blocks):
            if deep and i > 0:
                x = torch.cat([x[:, :1], m.deep_prompt_embeddings[i - 1].expand(b, -1, -1), x[:, 1 + tokens:]], dim=1)
            x = blk(x)
        return m.norm(x)
    m.forward_features = forward_features
    return m


# name: (our method, how to build the reference, which of its tensors train)
REFERENCES = {
    "adaptformer": (dict(method="adaptformer", bottleneck=8, scale=0.1), lambda m: with_adaptformer(m, 8, 0.1), ".adaptmlp."),
    "adaptformer_b4_s1": (dict(method="adaptformer", bottleneck=4, scale=1.0), lambda m: with_adaptformer(m, 4, 1.0), ".adaptmlp."),
    "ssf": (dict(method="ssf"), with_ssf, ".ssf_"),
    "vpt_deep": (dict(method="vpt", tokens=4, deep=True), lambda m: with_vpt(m, 4, True), "prompt_embeddings"),
    "vpt_shallow_n1": (dict(method="vpt", tokens=1, deep=False), lambda m: with_vpt(m, 1, False), "prompt_embeddings"),
}
manifest["references"] = {}
for i, (name, (method, build, trains)) in enumerate(REFERENCES.items()):
    torch.manual_seed(50 + i)
    m = vit(CFG_A)
    m.load_state_dict(ma.state_dict())
    m.requires_grad_(False)
    m = build(m)
    for pname, p in m.named_parameters():
        p.requires_grad = pname.startswith("head.") or trains in pname
    m.eval()
    with torch.no_grad():
        fresh = m(xa)
    g = torch.Generator().manual_seed(60 + i)
    trainable = {n: p for n, p in sorted(m.named_parameters()) if p.requires_grad}
    with torch.no_grad():
        for p in trainable.values():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
        logits = m(xa)
    save(f"ref_{name}.safetensors", trainable)
    m.train()
    labels = torch.tensor(TRAIN["labels"])
    for _ in range(TRAIN["steps"]):
        m.zero_grad()
        torch.nn.functional.cross_entropy(m(xa), labels).backward()
        with torch.no_grad():
            for p in trainable.values():
                p.sub_(TRAIN["lr"] * p.grad)
    m.eval()
    with torch.no_grad():
        trained = m(xa)
    save(f"ref_{name}_io.safetensors", {"fresh_logits": fresh, "logits": logits, "trained_logits": trained})
    manifest["references"][name] = dict(method=method, weights=f"ref_{name}.safetensors", io=f"ref_{name}_io.safetensors",
                                        trainable=sum(p.numel() for p in trainable.values()))

# --- LoRA on the q and v slices of the fused qkv, by hand (peft cannot slice qkv) ------
D, R, ALPHA = CFG_A["embed_dim"], 4, 8.0
g = torch.Generator().manual_seed(30)
slices, merged = {}, vit(CFG_A).eval()
merged.load_state_dict(ma.state_dict())
with torch.no_grad():
    for b in range(CFG_A["depth"]):
        qkv = merged.blocks[b].attn.qkv
        for j, part in enumerate("qkv"):
            if part == "k":
                continue
            a = 0.3 * torch.randn(R, D, generator=g)
            bb = 0.3 * torch.randn(D, R, generator=g)
            slices[f"blocks.{b}.attn.{part}.lora_A.weight"] = a
            slices[f"blocks.{b}.attn.{part}.lora_B.weight"] = bb
            qkv.weight[j * D:(j + 1) * D] += (ALPHA / R) * bb @ a
    lqv = merged(xa)
save("lora_qv.safetensors", slices)
save("lora_qv_io.safetensors", {"logits": lqv})
manifest["lora_qv"] = dict(r=R, alpha=ALPHA, weights="lora_qv.safetensors", io="lora_qv_io.safetensors",
                           trainable=sum(v.numel() for v in slices.values()))

# --- AdamW: three steps, decoupled decay on 2-D tensors only --------------------------
g = torch.Generator().manual_seed(40)
params = {"w": torch.randn(6, 5, generator=g), "b": torch.randn(6, generator=g), "norm": 1 + 0.1 * torch.randn(5, generator=g)}
ps = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
HP = dict(lr=3e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
opt = torch.optim.AdamW([{"params": [ps["w"]]}, {"params": [ps["b"], ps["norm"]], "weight_decay": 0.0}], **HP)
io = {f"init.{k}": v for k, v in params.items()}
for step in range(3):
    for k, p in ps.items():
        p.grad = torch.randn(p.shape, generator=g)
        io[f"grad{step}.{k}"] = p.grad.clone()
    opt.step()
    for k, p in ps.items():
        io[f"after{step}.{k}"] = p.detach().clone()
save("adamw.safetensors", io)
manifest["adamw"] = dict(HP, betas=list(HP["betas"]), steps=3, file="adamw.safetensors")

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
print("fixtures written to", os.path.abspath(OUT))
