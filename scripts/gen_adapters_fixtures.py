"""Parity fixtures for the Houlsby bottleneck adapter, made by the maintained `adapters`
package (AdapterHub) itself on Hugging Face's ViT, for `kernels/tests/parity.rs`.

Run `./x fixtures` (it runs this after gen_fixtures.py, in a venv of its own holding
`adapters` and the transformers it needs beside the project's torch and timm). Reads the
plain ViT fixture (`vit_a.safetensors`, its input and the training protocol from
manifest.json), loads it into `transformers.ViTForImageClassification` through the mapping
below, adds `adapters.DoubleSeqBnConfig` ("houlsby": a bottleneck after the attention and
after the MLP of every block), perturbs the adapters and the head, and writes the logits,
the logits after three SGD steps, the perturbed tensors under vtab-orch's (timm) names and
`adapters_manifest.json`.

What `adapters` 1.3.0 computes per block, in timm's names (models/vit/modeling_vit.py places
the two adapters; methods/modeling.py `Adapter`: residual_before_ln=True makes the adapter's
own residual its input, original_ln_after=True with no LayerNorm adds the block's):
    f = attn.proj(MHSA(attn.qkv(norm1(x))));  h = x + f + s * up_a(act(down_a(f)))
    g = mlp.fc2(GELU(mlp.fc1(norm2(h))));      y = h + g + s * up_m(act(down_m(g)))
bottleneck = hidden // reduction_factor, act "swish" = SiLU by default.

Weight mapping (HF ViT <- timm): embeddings.cls_token <- cls_token; position_embeddings <-
pos_embed; patch_embeddings.projection <- patch_embed.proj; encoder.layer.{i}:
attention.attention.{query,key,value} <- the three row blocks of blocks.{i}.attn.qkv;
attention.output.dense <- attn.proj; layernorm_before/after <- norm1/norm2;
intermediate.dense <- mlp.fc1; output.dense <- mlp.fc2; vit.layernorm <- norm; classifier <-
head (layer_norm_eps 1e-6 as timm). Adapters: encoder.layer.{i}.attention_adapters.adapters.
NAME.adapter_down.0 / adapter_up -> blocks.{i}.adapter_attn.down / .up, and
output.output_adapters... -> blocks.{i}.adapter_mlp.down / .up.
"""
import json
import os
import re
import sys

import adapters
import torch
import transformers
from adapters import DoubleSeqBnConfig
from safetensors.torch import load_file, save_file
from transformers import ViTConfig, ViTForImageClassification

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "kernels", "tests", "fixtures")
torch.use_deterministic_algorithms(True)
manifest = json.load(open(os.path.join(OUT, "manifest.json")))
cfg = manifest["vit_a"]
timm_sd = load_file(os.path.join(OUT, cfg["weights"]))
x = load_file(os.path.join(OUT, cfg["io"]))["x"]
TRAIN = manifest["train"]
D, DEPTH = cfg["embed_dim"], cfg["depth"]


def timm_to_hf(sd):
    out = {
        "vit.embeddings.cls_token": sd["cls_token"],
        "vit.embeddings.position_embeddings": sd["pos_embed"],
        "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "vit.layernorm.weight": sd["norm.weight"], "vit.layernorm.bias": sd["norm.bias"],
        "classifier.weight": sd["head.weight"], "classifier.bias": sd["head.bias"],
    }
    for i in range(DEPTH):
        h, t = f"vit.encoder.layer.{i}.", f"blocks.{i}."
        for wb in ("weight", "bias"):
            for j, k in enumerate(("query", "key", "value")):
                out[h + f"attention.attention.{k}.{wb}"] = sd[t + "attn.qkv." + wb][j * D:(j + 1) * D]
            for hn, tn in (("layernorm_before", "norm1"), ("attention.output.dense", "attn.proj"),
                           ("layernorm_after", "norm2"), ("intermediate.dense", "mlp.fc1"),
                           ("output.dense", "mlp.fc2")):
                out[h + hn + "." + wb] = sd[t + tn + "." + wb]
    return out


ADAPTER = re.compile(r"vit\.encoder\.layer\.(\d+)\.(attention_adapters|output\.output_adapters)"
                     r"\.adapters\.[^.]+\.(adapter_down\.0|adapter_up)\.(weight|bias)$")


def ours(name):
    """Our (timm-side) name of a trainable tensor of the HF model."""
    if name.startswith("classifier."):
        return "head." + name.split(".", 1)[1]
    i, where, lin, wb = ADAPTER.match(name).groups()
    return (f"blocks.{i}.adapter_{'attn' if where == 'attention_adapters' else 'mlp'}."
            f"{'down' if lin == 'adapter_down.0' else 'up'}.{wb}")


# name: (our method, adapters' config)
CASES = {
    "houlsby": (dict(method="houlsby"), DoubleSeqBnConfig()),
    "houlsby_rf4_relu": (dict(method="houlsby", reduction_factor=4, non_linearity="relu", scaling=0.5, init="houlsby"),
                         DoubleSeqBnConfig(reduction_factor=4, non_linearity="relu", scaling=0.5, init_weights="houlsby")),
}
out = {"versions": {"adapters": adapters.__version__, "transformers": transformers.__version__,
                    "torch": torch.__version__}, "references": {}}
for i, (name, (method, acfg)) in enumerate(CASES.items()):
    torch.manual_seed(70 + i)
    hcfg = ViTConfig(image_size=cfg["img_size"], patch_size=cfg["patch_size"], hidden_size=D,
                     num_hidden_layers=DEPTH, num_attention_heads=cfg["num_heads"],
                     intermediate_size=int(D * cfg["mlp_ratio"]), num_labels=cfg["num_classes"],
                     layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)
    m = ViTForImageClassification(hcfg)
    m.load_state_dict(timm_to_hf(timm_sd), strict=True)
    adapters.init(m)
    m.add_adapter(name, config=acfg)
    m.train_adapter(name)  # freezes m.vit (LayerNorms included); the classifier trains
    m.eval()
    with torch.no_grad():
        fresh = m(x).logits
    g = torch.Generator().manual_seed(80 + i)
    trainable = {n: p for n, p in sorted(m.named_parameters()) if p.requires_grad}
    with torch.no_grad():
        for p in trainable.values():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
        logits = m(x).logits
    save_file({ours(n): p.detach().clone().contiguous() for n, p in trainable.items()},
              os.path.join(OUT, f"ref_{name}.safetensors"))
    m.train()  # every dropout rate is 0
    labels = torch.tensor(TRAIN["labels"])
    for _ in range(TRAIN["steps"]):
        m.zero_grad()
        torch.nn.functional.cross_entropy(m(x).logits, labels).backward()
        with torch.no_grad():
            for p in trainable.values():
                p.sub_(TRAIN["lr"] * p.grad)
    m.eval()
    with torch.no_grad():
        trained = m(x).logits
    save_file({"fresh_logits": fresh, "logits": logits, "trained_logits": trained},
              os.path.join(OUT, f"ref_{name}_io.safetensors"))
    out["references"][name] = dict(method=method, weights=f"ref_{name}.safetensors", io=f"ref_{name}_io.safetensors",
                                   trainable=sum(p.numel() for p in trainable.values()),
                                   reference=f"adapters {adapters.__version__} {type(acfg).__name__}")

# ViT-B/16 with a 100-class head, adapters' defaults: the count the README quotes.
vb = ViTForImageClassification(ViTConfig(num_labels=100, layer_norm_eps=1e-6))
adapters.init(vb)
vb.add_adapter("houlsby", config=DoubleSeqBnConfig())
vb.train_adapter("houlsby")
out["vit_b16_100_trainable"] = sum(p.numel() for p in vb.parameters() if p.requires_grad)
with open(os.path.join(OUT, "adapters_manifest.json"), "w") as f:
    json.dump(out, f, indent=1, sort_keys=True)
print("adapters fixtures written to", os.path.abspath(OUT), "- ViT-B/16 count", out["vit_b16_100_trainable"])
