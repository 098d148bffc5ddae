//! timm's `VisionTransformer`, one struct per timm module so that parameter names are
//! timm's own (`blocks.0.attn.qkv.weight`). Holds no training or adapter logic beyond
//! routing through `AdaptedLinear`.
use crate::config::VitConfig;
use crate::linear::{
    add_deltas_and_scale, merge_all, unmerge_all, AdaptedLinear, Adapter, Linear, Role, Visit,
};
use tch::{Device, Kind, Tensor};

/// timm's `LayerNorm` (eps 1e-6 in ViT). Adapters on it change its output only (SSF's scale
/// and shift, `on_output`); merging folds them into the affine weight and bias, which they
/// see as a linear layer with a `[D, 1]` weight.
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
    pub adapters: Vec<Box<dyn Adapter>>,
    merged: bool,
}

impl LayerNorm {
    fn new(dim: i64, device: Device) -> Self {
        LayerNorm {
            weight: Tensor::ones([dim], (Kind::Float, device)),
            bias: Tensor::zeros([dim], (Kind::Float, device)),
            eps: 1e-6,
            adapters: Vec::new(),
            merged: false,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let dim = *x.size().last().expect("layer_norm input has a last dim");
        let y = x.layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, true);
        if self.merged {
            return y;
        }
        self.adapters.iter().fold(y, |y, a| a.on_output(y))
    }

    /// The affine part as a linear layer whose tensors are views of the norm's.
    fn as_linear(&self) -> Linear {
        Linear {
            weight: self.weight.unsqueeze(1),
            bias: Some(self.bias.shallow_clone()),
        }
    }

    pub fn merge(&mut self) {
        if !self.merged && !self.adapters.is_empty() {
            merge_all(&self.adapters, &mut self.as_linear());
            self.merged = true;
        }
    }

    pub fn unmerge(&mut self) {
        if self.merged {
            unmerge_all(&self.adapters, &mut self.as_linear());
            self.merged = false;
        }
    }

    fn visit(&mut self, prefix: &str, f: &mut Visit) {
        f(
            &format!("{prefix}.weight"),
            &mut self.weight,
            Role::Backbone,
        );
        f(&format!("{prefix}.bias"), &mut self.bias, Role::Backbone);
        for a in &mut self.adapters {
            a.visit(f);
        }
    }
}

/// `patch_embed.proj`: a conv with kernel = stride = patch size, flattened to tokens.
/// Adapters on it (peft's Conv2d LoRA and IA3) see it as the equivalent linear layer over
/// flattened patches: weight `[D, C*p*p]` (a view of the conv's), input `patches(x)`.
pub struct PatchEmbed {
    pub weight: Tensor,
    pub bias: Tensor,
    pub patch_size: i64,
    pub adapters: Vec<Box<dyn Adapter>>,
    merged: bool,
}

impl PatchEmbed {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let p = self.patch_size;
        if !self.merged && self.adapters.iter().any(|a| a.changes_input()) {
            // An adapter changes the conv's input: run it as the linear layer it is.
            let patches = self.patches(x);
            let mut h = patches.shallow_clone();
            for a in &self.adapters {
                h = a.on_input(h);
            }
            let lin = self.as_linear();
            let y = lin.forward(&h);
            return add_deltas_and_scale(&self.adapters, &patches, y, &lin, train);
        }
        // [B, C, H, W] -> [B, D, H/p, W/p] -> [B, N, D]
        let y = x
            .conv2d(&self.weight, Some(&self.bias), [p, p], [0, 0], [1, 1], 1)
            .flatten(2, 3)
            .transpose(1, 2);
        if self.merged || self.adapters.is_empty() {
            return y;
        }
        add_deltas_and_scale(
            &self.adapters,
            &self.patches(x),
            y,
            &self.as_linear(),
            train,
        )
    }

    /// The conv's input as tokens [B, N, C*p*p]: non-overlapping patches in the conv's
    /// token order, each flattened as (channel, row, column) like the conv weight.
    pub fn patches(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("patch embedding input is [B, C, H, W]");
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        x.narrow(2, 0, gh * p)
            .narrow(3, 0, gw * p)
            .reshape([b, c, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([b, gh * gw, c * p * p])
    }

    /// The conv as a linear layer whose tensors are views of the conv's: in-place changes
    /// (merging) reach the conv.
    fn as_linear(&self) -> Linear {
        Linear {
            weight: self.weight.view([self.weight.size()[0], -1]),
            bias: Some(self.bias.shallow_clone()),
        }
    }

    pub fn is_merged(&self) -> bool {
        self.merged
    }

    /// Folds the adapters into the conv weight and bias.
    pub fn merge(&mut self) {
        if !self.merged {
            merge_all(&self.adapters, &mut self.as_linear());
            self.merged = true;
        }
    }

    /// Exactly undoes `merge`.
    pub fn unmerge(&mut self) {
        if self.merged {
            unmerge_all(&self.adapters, &mut self.as_linear());
            self.merged = false;
        }
    }

    fn visit(&mut self, f: &mut Visit) {
        f("patch_embed.proj.weight", &mut self.weight, Role::Backbone);
        f("patch_embed.proj.bias", &mut self.bias, Role::Backbone);
        for a in &mut self.adapters {
            a.visit(f);
        }
    }
}

pub struct Attention {
    pub qkv: AdaptedLinear,
    pub proj: AdaptedLinear,
    pub num_heads: i64,
}

impl Attention {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, n, c) = x.size3().expect("attention input is [B, N, C]");
        let h = self.num_heads;
        // [B, N, 3C] -> [3, B, heads, N, head_dim]
        let qkv = self
            .qkv
            .forward(x, train)
            .reshape([b, n, 3, h, c / h])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let o = Tensor::scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, false, None, false,
        );
        self.proj
            .forward(&o.transpose(1, 2).reshape([b, n, c]), train)
    }
}

pub struct Mlp {
    pub fc1: AdaptedLinear,
    pub fc2: AdaptedLinear,
}

impl Mlp {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.fc2
            .forward(&self.fc1.forward(x, train).gelu("none"), train)
    }
}

pub struct Block {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    /// A module beside the MLP sub-layer (AdaptFormer): its output, computed from the
    /// sub-layer's input before `norm2`, is added to the MLP's.
    pub mlp_branch: Option<Box<dyn Branch>>,
    /// Modules after the attention and MLP sub-layers (Houlsby's sequential adapters): each
    /// reads its sub-layer's output f, which becomes f + module(f).
    pub attn_out: Option<Box<dyn Branch>>,
    pub mlp_out: Option<Box<dyn Branch>>,
}

/// A module a block runs beside a sub-layer: not a change of one linear layer, so it cannot be
/// merged into the backbone.
pub trait Branch: Send {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor;
    /// Its trainable tensors, named from the model root.
    fn visit(&mut self, f: &mut Visit);
}

impl Block {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut a = self.attn.forward(&self.norm1.forward(x), train);
        if let Some(s) = &self.attn_out {
            a = &a + s.forward(&a, train);
        }
        let x = x + a;
        let mut m = self.mlp.forward(&self.norm2.forward(&x), train);
        if let Some(s) = &self.mlp_out {
            m = &m + s.forward(&m, train);
        }
        if let Some(b) = &self.mlp_branch {
            m += b.forward(&x, train);
        }
        &x + m
    }
}

/// Tokens a method puts into the sequence (VPT's prompts), not a change of any layer.
pub trait Prompts: Send {
    /// The tokens entering block `block` ([B, T, D] in, [B, T', D] out): the class token
    /// stays first, so the head still pools token 0.
    fn enter(&self, block: usize, x: Tensor, train: bool) -> Tensor;
    /// Its trainable tensors, named from the model root.
    fn visit(&mut self, f: &mut Visit);
}

pub struct VisionTransformer {
    pub cfg: VitConfig,
    pub patch_embed: PatchEmbed,
    /// [1, 1, D]
    pub cls_token: Tensor,
    /// [1, 1 + N, D]
    pub pos_embed: Tensor,
    pub blocks: Vec<Block>,
    pub norm: LayerNorm,
    /// `None` when `num_classes == 0` (timm's `nn.Identity` head).
    pub head: Option<Linear>,
    /// Prompt tokens (VPT), put in before the blocks.
    pub prompts: Option<Box<dyn Prompts>>,
}

impl VisionTransformer {
    /// A randomly initialised model (timm's scheme: N(0, .02) weights, zero biases,
    /// cls token N(0, 1e-6)); every tensor starts frozen (`requires_grad = false`).
    pub fn new(cfg: &VitConfig, device: Device) -> crate::Result<Self> {
        cfg.validate().map_err(crate::Error::Config)?;
        let opts = (Kind::Float, device);
        let d = cfg.embed_dim;
        let lin = |i, o| AdaptedLinear::new(Linear::new(i, o, true, device));
        let blocks = (0..cfg.depth)
            .map(|_| Block {
                norm1: LayerNorm::new(d, device),
                attn: Attention {
                    qkv: AdaptedLinear::new(Linear::new(d, 3 * d, cfg.qkv_bias, device)),
                    proj: lin(d, d),
                    num_heads: cfg.num_heads,
                },
                norm2: LayerNorm::new(d, device),
                mlp: Mlp {
                    fc1: lin(d, cfg.mlp_hidden()),
                    fc2: lin(cfg.mlp_hidden(), d),
                },
                mlp_branch: None,
                attn_out: None,
                mlp_out: None,
            })
            .collect();
        Ok(VisionTransformer {
            cfg: cfg.clone(),
            patch_embed: PatchEmbed {
                weight: Tensor::randn([d, cfg.in_chans, cfg.patch_size, cfg.patch_size], opts)
                    * 0.02,
                bias: Tensor::zeros([d], opts),
                patch_size: cfg.patch_size,
                adapters: Vec::new(),
                merged: false,
            },
            cls_token: Tensor::randn([1, 1, d], opts) * 1e-6,
            pos_embed: Tensor::randn([1, 1 + cfg.num_patches(), d], opts) * 0.02,
            blocks,
            norm: LayerNorm::new(d, device),
            head: (cfg.num_classes > 0).then(|| Linear::new(d, cfg.num_classes, true, device)),
            prompts: None,
        })
    }

    pub fn device(&self) -> Device {
        self.pos_embed.device()
    }

    /// Final-normed tokens [B, 1 + N, D] for images [B, C, H, W] (normalised floats).
    pub fn forward_features(&self, x: &Tensor, train: bool) -> Tensor {
        let x = self.patch_embed.forward(x, train);
        let b = x.size()[0];
        // Under autocast `cat` promotes to fp32, as in timm: the residual stream stays fp32.
        let cls = self.cls_token.expand([b, -1, -1], false);
        let mut x = Tensor::cat(&[cls, x], 1) + &self.pos_embed;
        for (i, blk) in self.blocks.iter().enumerate() {
            if let Some(p) = &self.prompts {
                x = p.enter(i, x, train);
            }
            x = blk.forward(&x, train);
        }
        self.norm.forward(&x)
    }

    /// Class-token pooling and the head: logits [B, num_classes] (features if no head).
    pub fn forward_head(&self, feats: &Tensor) -> Tensor {
        let pooled = feats.select(1, 0);
        match &self.head {
            Some(h) => h.forward(&pooled),
            None => pooled,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_head(&self.forward_features(x, train))
    }

    /// Every LayerNorm with its timm name: each block's two, then the final one.
    pub fn norms_mut(&mut self) -> impl Iterator<Item = (String, &mut LayerNorm)> {
        self.blocks
            .iter_mut()
            .enumerate()
            .flat_map(|(i, b)| {
                [
                    (format!("blocks.{i}.norm1"), &mut b.norm1),
                    (format!("blocks.{i}.norm2"), &mut b.norm2),
                ]
            })
            .chain(std::iter::once(("norm".to_string(), &mut self.norm)))
    }

    /// Every linear layer of the blocks with its timm name.
    pub fn linears_mut(&mut self) -> impl Iterator<Item = (String, &mut AdaptedLinear)> {
        self.blocks.iter_mut().enumerate().flat_map(|(i, b)| {
            [
                (format!("blocks.{i}.attn.qkv"), &mut b.attn.qkv),
                (format!("blocks.{i}.attn.proj"), &mut b.attn.proj),
                (format!("blocks.{i}.mlp.fc1"), &mut b.mlp.fc1),
                (format!("blocks.{i}.mlp.fc2"), &mut b.mlp.fc2),
            ]
        })
    }

    /// Visits every parameter (backbone, adapters, head) under its timm name, in a fixed order.
    pub fn visit(&mut self, f: &mut Visit) {
        self.patch_embed.visit(f);
        f("cls_token", &mut self.cls_token, Role::Backbone);
        f("pos_embed", &mut self.pos_embed, Role::Backbone);
        if let Some(p) = &mut self.prompts {
            p.visit(f);
        }
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.norm1.visit(&format!("blocks.{i}.norm1"), f);
            b.attn.qkv.visit(&format!("blocks.{i}.attn.qkv"), f);
            b.attn.proj.visit(&format!("blocks.{i}.attn.proj"), f);
            if let Some(s) = &mut b.attn_out {
                s.visit(f);
            }
            b.norm2.visit(&format!("blocks.{i}.norm2"), f);
            b.mlp.fc1.visit(&format!("blocks.{i}.mlp.fc1"), f);
            b.mlp.fc2.visit(&format!("blocks.{i}.mlp.fc2"), f);
            if let Some(s) = &mut b.mlp_out {
                s.visit(f);
            }
            if let Some(branch) = &mut b.mlp_branch {
                branch.visit(f);
            }
        }
        self.norm.visit("norm", f);
        if let Some(h) = &mut self.head {
            h.visit("head", Role::Head, f);
        }
    }

    /// (name, shallow handle) of every parameter; the handles share storage and grads.
    pub fn named_tensors(&mut self) -> Vec<(String, Tensor, Role)> {
        let mut out = Vec::new();
        self.visit(&mut |n, t, r| out.push((n.to_string(), t.shallow_clone(), r)));
        out
    }
}
