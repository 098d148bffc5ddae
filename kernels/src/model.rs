//! The PEFT wrapper: a backbone with a method applied (adapters inserted, a new head,
//! the right tensors frozen), parameter counts, trainable-only save/load, merge/unmerge.
use crate::adapters::{lora_scale, Ia3, Lora, Vera, VeraProjections};
use crate::checkpoint::{copy_into, read_safetensors};
use crate::error::{Error, Result};
use crate::linear::{Adapter, Linear, OutRange, Role};
use crate::method::{Method, Target};
use crate::vit::VisionTransformer;
use std::collections::BTreeSet;
use std::path::Path;
use tch::{Kind, Tensor};

/// Trainable and total parameter counts (frozen VeRA projections are buffers, as in peft,
/// and are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamCounts {
    pub trainable: i64,
    /// Trainable minus the classification head (what PEFT papers quote).
    pub trainable_backbone: i64,
    pub total: i64,
}

impl ParamCounts {
    pub fn trainable_percent(&self) -> f64 {
        100.0 * self.trainable as f64 / self.total as f64
    }
}

pub struct AdaptedVit {
    pub vit: VisionTransformer,
    pub method: Method,
    /// Shared frozen VeRA projections (kept here; layers hold views).
    pub vera: Option<VeraProjections>,
    trainable: Vec<(String, Tensor)>,
    counts: ParamCounts,
    merged: bool,
}

impl AdaptedVit {
    /// Applies `method` to `vit`. With `num_classes = Some(n)` a fresh n-way head replaces
    /// the backbone's; random draws (head, LoRA A, dropout later) follow `seed`.
    pub fn new(
        mut vit: VisionTransformer,
        method: &Method,
        num_classes: Option<i64>,
        seed: i64,
    ) -> Result<Self> {
        method.validate().map_err(Error::Config)?;
        let device = vit.device();
        tch::manual_seed(seed);
        if let Some(n) = num_classes {
            if n <= 0 {
                return Err(Error::Config(format!("num_classes must be >= 1, got {n}")));
            }
            vit.head = Some(tch::no_grad(|| {
                Linear::new(vit.cfg.embed_dim, n, true, device)
            }));
            vit.cfg.num_classes = n;
        }
        if vit.head.is_none() {
            return Err(Error::Config(
                "the model has no head: pass num_classes".into(),
            ));
        }
        let vera = tch::no_grad(|| insert_adapters(&mut vit, method, seed))?;
        let mut model = AdaptedVit {
            vit,
            method: method.clone(),
            vera,
            trainable: Vec::new(),
            counts: ParamCounts {
                trainable: 0,
                trainable_backbone: 0,
                total: 0,
            },
            merged: false,
        };
        model.freeze();
        Ok(model)
    }

    /// Sets `requires_grad` by the method's rule and caches the trainable handles.
    fn freeze(&mut self) {
        let method = self.method.clone();
        let mut trainable = Vec::new();
        let mut counts = ParamCounts {
            trainable: 0,
            trainable_backbone: 0,
            total: 0,
        };
        self.vit.visit(&mut |name, t, role| {
            let train = match (&method, role) {
                (_, Role::Head) | (_, Role::Adapter) => true,
                (Method::Full, Role::Backbone) => true,
                (Method::Bitfit, Role::Backbone) => name.ends_with(".bias"),
                _ => false,
            };
            let n = t.numel() as i64;
            counts.total += n;
            let _ = t.set_requires_grad(train);
            if train {
                counts.trainable += n;
                if role != Role::Head {
                    counts.trainable_backbone += n;
                }
                trainable.push((name.to_string(), t.shallow_clone()));
            }
        });
        self.trainable = trainable;
        self.counts = counts;
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.vit.forward(x, train)
    }

    pub fn counts(&self) -> ParamCounts {
        self.counts
    }

    /// (name, handle) of every trainable tensor, in a fixed order.
    pub fn trainable(&self) -> &[(String, Tensor)] {
        &self.trainable
    }

    /// Writes the trainable tensors (adapter + head, or everything for full fine-tuning).
    pub fn save_trainable(&self, path: &Path) -> Result<()> {
        let named: Vec<(&str, Tensor)> = self
            .trainable
            .iter()
            .map(|(n, t)| (n.as_str(), t.detach().to_device(tch::Device::Cpu)))
            .collect();
        Tensor::write_safetensors(&named, path).map_err(|e| Error::File {
            path: path.into(),
            msg: e.to_string(),
        })
    }

    /// Reads tensors written by `save_trainable` for the same method and architecture.
    pub fn load_trainable(&mut self, path: &Path) -> Result<()> {
        let file = read_safetensors(path)?;
        self.load_trainable_map(file, path)
    }

    /// Like `load_trainable`, from tensors already in memory (`path` names their origin).
    pub fn load_trainable_map(
        &mut self,
        file: std::collections::BTreeMap<String, Tensor>,
        path: &Path,
    ) -> Result<()> {
        let names: BTreeSet<String> = self.trainable.iter().map(|(n, _)| n.clone()).collect();
        copy_into_named(&mut self.vit, file, path, &names)
    }

    /// Folds every adapter into its base weights (evaluation runs at plain-ViT speed).
    pub fn merge(&mut self) {
        self.vit.patch_embed.merge();
        self.vit.linears_mut().for_each(|(_, l)| l.merge());
        self.merged = true;
    }

    pub fn unmerge(&mut self) {
        self.vit.patch_embed.unmerge();
        self.vit.linears_mut().for_each(|(_, l)| l.unmerge());
        self.merged = false;
    }

    pub fn is_merged(&self) -> bool {
        self.merged
    }

    /// Stores frozen linear and patch-embedding weights in `kind` (bf16): autocast would
    /// cast them on every forward anyway, so results are unchanged and the per-step casts
    /// of the frozen backbone disappear. Only for autocast training/eval on an accelerator.
    pub fn cast_frozen(&mut self, kind: Kind) {
        let cast = |t: &mut Tensor| {
            if !t.requires_grad() && t.kind() != kind {
                *t = t.to_kind(kind);
            }
        };
        self.vit.linears_mut().for_each(|(_, l)| {
            cast(&mut l.base.weight);
            if let Some(b) = &mut l.base.bias {
                cast(b);
            }
        });
        cast(&mut self.vit.patch_embed.weight);
        cast(&mut self.vit.patch_embed.bias);
    }
}

fn copy_into_named(
    vit: &mut VisionTransformer,
    file: std::collections::BTreeMap<String, Tensor>,
    path: &Path,
    names: &BTreeSet<String>,
) -> Result<()> {
    copy_into(vit, file, path, |name, _| names.contains(name))
}

/// (in, out, output range) of the module a target names: `d` the width, `hidden` the MLP
/// width, `patch_in` the patch embedding's input per token (C * p * p).
fn target_geometry(t: Target, d: i64, hidden: i64, patch_in: i64) -> (i64, i64, OutRange) {
    match t {
        Target::PatchEmbed => (patch_in, d, None),
        Target::Q | Target::K | Target::V => (d, d, Some((t.qkv_slice().unwrap_or(0) * d, d))),
        Target::Qkv => (d, 3 * d, None),
        Target::Proj => (d, d, None),
        Target::Fc1 => (d, hidden, None),
        Target::Fc2 => (hidden, d, None),
    }
}

/// Name of the (virtual) module a target adapts in block `i` (the patch embedding: once).
fn target_name(i: usize, t: Target) -> String {
    match t {
        Target::PatchEmbed => "patch_embed.proj".into(),
        Target::Q | Target::K | Target::V | Target::Qkv | Target::Proj => {
            format!("blocks.{i}.attn.{t}")
        }
        Target::Fc1 | Target::Fc2 => format!("blocks.{i}.mlp.{t}"),
    }
}

/// Every (block, target) an adapter goes on: block targets in every block, the patch
/// embedding once (block index 0, unused).
fn sites(targets: &[Target], depth: usize) -> Vec<(usize, Target)> {
    let mut out: Vec<(usize, Target)> = targets
        .iter()
        .filter(|t| **t == Target::PatchEmbed)
        .map(|t| (0, *t))
        .collect();
    for i in 0..depth {
        out.extend(
            targets
                .iter()
                .filter(|t| **t != Target::PatchEmbed)
                .map(|t| (i, *t)),
        );
    }
    out
}

fn push_adapter(vit: &mut VisionTransformer, i: usize, t: Target, a: Box<dyn Adapter>) {
    let b = &mut vit.blocks[i];
    let layer = match t {
        Target::PatchEmbed => return vit.patch_embed.adapters.push(a),
        Target::Q | Target::K | Target::V | Target::Qkv => &mut b.attn.qkv,
        Target::Proj => &mut b.attn.proj,
        Target::Fc1 => &mut b.mlp.fc1,
        Target::Fc2 => &mut b.mlp.fc2,
    };
    layer.adapters.push(a);
}

fn insert_adapters(
    vit: &mut VisionTransformer,
    method: &Method,
    seed: i64,
) -> Result<Option<VeraProjections>> {
    let (d, hidden, depth) = (vit.cfg.embed_dim, vit.cfg.mlp_hidden(), vit.blocks.len());
    let patch_in = vit.cfg.in_chans * vit.cfg.patch_size * vit.cfg.patch_size;
    let geometry = |t| target_geometry(t, d, hidden, patch_in);
    let device = vit.device();
    let mut targets = method.targets().to_vec();
    targets.sort();
    let mut vera = None;
    match method {
        Method::Linear | Method::Full | Method::Bitfit => {}
        Method::Lora(s) => {
            let scale = lora_scale(s.r, s.alpha, s.rslora);
            for (i, t) in sites(&targets, depth) {
                let (fi, fo, range) = geometry(t);
                let a = Lora::new(
                    target_name(i, t),
                    fi,
                    fo,
                    s.r,
                    scale,
                    s.dropout,
                    range,
                    device,
                );
                push_adapter(vit, i, t, Box::new(a));
            }
        }
        Method::Vera(s) => {
            // peft sizes the shared pair by the largest adapted input and output.
            let geo: Vec<_> = targets.iter().map(|&t| geometry(t)).collect();
            let max_in = geo.iter().map(|g| g.0).max().unwrap_or(d);
            let max_out = geo.iter().map(|g| g.1).max().unwrap_or(d);
            let shared =
                VeraProjections::generate(s.r, max_in, max_out, s.projection_prng_key, device);
            tch::manual_seed(seed.wrapping_add(1)); // leave the key's stream
            for (i, t) in sites(&targets, depth) {
                let (fi, fo, range) = geometry(t);
                let a = Vera::new(
                    target_name(i, t),
                    &shared,
                    fi,
                    fo,
                    s.d_initial,
                    s.dropout,
                    range,
                );
                push_adapter(vit, i, t, Box::new(a));
            }
            vera = Some(shared);
        }
        Method::Ia3(_) => {
            // q, k, v slices share one vector over the fused qkv output; a slice that is
            // not adapted keeps fixed ones.
            let slices: Vec<Target> = targets
                .iter()
                .copied()
                .filter(|t| t.qkv_slice().is_some())
                .collect();
            if !slices.is_empty() {
                for i in 0..depth {
                    let parts: Vec<(Option<String>, i64)> = [Target::Q, Target::K, Target::V]
                        .iter()
                        .map(|t| (slices.contains(t).then(|| target_name(i, *t)), d))
                        .collect();
                    let a = Box::new(Ia3::new(&parts, false, device));
                    push_adapter(vit, i, Target::Qkv, a);
                }
            }
            let whole: Vec<Target> = targets
                .iter()
                .copied()
                .filter(|t| t.qkv_slice().is_none())
                .collect();
            for (i, t) in sites(&whole, depth) {
                let (fi, fo, _) = geometry(t);
                let on_input = t == Target::Fc2;
                let len = if on_input { fi } else { fo };
                let a = Ia3::new(&[(Some(target_name(i, t)), len)], on_input, device);
                push_adapter(vit, i, t, Box::new(a));
            }
        }
    }
    Ok(vera)
}
