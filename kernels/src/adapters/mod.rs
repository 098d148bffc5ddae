//! The method catalogue: one file per method (its spec, validation, adapters, peft form and
//! registry entry), listed in [`REGISTRY`], plus where adapters go in a ViT ([`sites`]).
//! Adding a method: a new file here with a `MethodSpec` implementation and an `INFO`, one
//! line in `REGISTRY`, and its parity fixture in `scripts/gen_fixtures.py`.
pub mod adaptformer;
pub mod bitfit;
pub mod boft;
pub mod c3a;
pub mod fourierft;
pub mod full;
pub mod houlsby;
pub mod hra;
pub mod ia3;
pub mod linear_probe;
pub mod ln_tuning;
pub mod loha;
pub mod lokr;
pub mod lora;
pub mod oft;
pub mod randlora;
pub mod shira;
pub mod ssf;
pub mod vblora;
pub mod vera;
pub mod vpt;

pub use ia3::{Ia3, Ia3Spec};
pub use lora::{lora_scale, Lora, LoraSpec};
pub use vera::{Vera, VeraProjections, VeraSpec};

use crate::config::VitConfig;
use crate::linear::{add_weight_on_range, Adapter, Base, Linear, OutRange, Visit};
use crate::method::{MethodInfo, Target};
use crate::vit::VisionTransformer;
use tch::Tensor;

/// Every method vtab-orch knows, in the order tables list them.
pub static REGISTRY: &[&MethodInfo] = &[
    &linear_probe::INFO,
    &full::INFO,
    &bitfit::INFO,
    &lora::INFO,
    &vera::INFO,
    &ia3::INFO,
    &ln_tuning::INFO,
    &loha::INFO,
    &lokr::INFO,
    &hra::INFO,
    &fourierft::INFO,
    &oft::INFO,
    &boft::INFO,
    &shira::INFO,
    &c3a::INFO,
    &vblora::INFO,
    &randlora::INFO,
    &adaptformer::INFO,
    &houlsby::INFO,
    &ssf::INFO,
    &vpt::INFO,
];

/// One place an adapter goes: a target in one block (the patch embedding: once).
#[derive(Debug, Clone)]
pub struct Site {
    pub block: usize,
    pub target: Target,
    /// The adapted (virtual) module's name, e.g. `blocks.0.attn.q`: its tensors' prefix.
    pub name: String,
    pub in_features: i64,
    pub out_features: i64,
    /// The output rows it changes (a q/k/v slice of the fused qkv), `None` for all.
    pub range: OutRange,
}

/// (in, out, output range) of the module a target names in `vit`.
pub fn geometry(vit: &VisionTransformer, t: Target) -> (i64, i64, OutRange) {
    geometry_of(&vit.cfg, t)
}

/// (in, out, output range) of the module a target names in a model of `cfg`.
pub fn geometry_of(cfg: &VitConfig, t: Target) -> (i64, i64, OutRange) {
    let (d, hidden) = (cfg.embed_dim, cfg.mlp_hidden());
    let patch_in = cfg.in_chans * cfg.patch_size * cfg.patch_size;
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
pub fn target_name(i: usize, t: Target) -> String {
    match t {
        Target::PatchEmbed => "patch_embed.proj".into(),
        Target::Q | Target::K | Target::V | Target::Qkv | Target::Proj => {
            format!("blocks.{i}.attn.{t}")
        }
        Target::Fc1 | Target::Fc2 => format!("blocks.{i}.mlp.{t}"),
    }
}

/// Every site of `targets` in `vit`: the patch embedding first (once), then block by block
/// in `Target` order, whatever order `targets` lists them in.
pub fn sites(vit: &VisionTransformer, targets: &[Target]) -> Vec<Site> {
    sites_of(&vit.cfg, targets)
}

/// `sites` on a model of `cfg` (no model needed: what `MethodSpec::fits` checks).
pub fn sites_of(cfg: &VitConfig, targets: &[Target]) -> Vec<Site> {
    let mut targets = targets.to_vec();
    targets.sort();
    let site = |block: usize, target: Target| {
        let (in_features, out_features, range) = geometry_of(cfg, target);
        Site {
            block,
            target,
            name: target_name(block, target),
            in_features,
            out_features,
            range,
        }
    };
    let mut out: Vec<Site> = targets
        .iter()
        .filter(|t| **t == Target::PatchEmbed)
        .map(|t| site(0, *t))
        .collect();
    for i in 0..cfg.depth as usize {
        out.extend(
            targets
                .iter()
                .filter(|t| **t != Target::PatchEmbed)
                .map(|t| site(i, *t)),
        );
    }
    out
}

/// That `key` = `n` divides both widths of `site` (C3A's block size, VB-LoRA's vector length).
pub fn divides_widths(method: &str, key: &str, n: i64, site: &Site) -> Result<(), String> {
    let (in_f, out_f) = (site.in_features, site.out_features);
    if in_f % n != 0 || out_f % n != 0 {
        return Err(format!(
            "{method}: `{key}` = {n} does not divide both widths of {} ({out_f} x {in_f})",
            site.name
        ));
    }
    Ok(())
}

/// Adds `a` to the layer holding target `t` of block `block` (a q/k/v slice: the qkv).
pub fn push_adapter(vit: &mut VisionTransformer, block: usize, t: Target, a: Box<dyn Adapter>) {
    let b = &mut vit.blocks[block];
    let layer = match t {
        Target::PatchEmbed => return vit.patch_embed.adapters.push(a),
        Target::Q | Target::K | Target::V | Target::Qkv => &mut b.attn.qkv,
        Target::Proj => &mut b.attn.proj,
        Target::Fc1 => &mut b.mlp.fc1,
        Target::Fc2 => &mut b.mlp.fc2,
    };
    layer.adapters.push(a);
}

/// The base weight rows a site adapts, as a linear layer's `[out, in]` (a view: the patch
/// embedding's conv weight flattened, a q/k/v slice's rows of the qkv).
pub fn site_rows(vit: &VisionTransformer, site: &Site) -> tch::Tensor {
    let b = &vit.blocks[site.block];
    let w = match site.target {
        Target::PatchEmbed => {
            let w = &vit.patch_embed.weight;
            return w.view([w.size()[0], -1]);
        }
        Target::Q | Target::K | Target::V | Target::Qkv => &b.attn.qkv.base.weight,
        Target::Proj => &b.attn.proj.base.weight,
        Target::Fc1 => &b.mlp.fc1.base.weight,
        Target::Fc2 => &b.mlp.fc2.base.weight,
    };
    match site.range {
        None => w.shallow_clone(),
        Some((start, len)) => w.narrow(0, start, len),
    }
}

/// An adapter whose whole change is a weight update dW of some output rows (LoHa, LoKr,
/// FourierFT): y = W x + b + dW x, and merging adds dW. Implementing this is its `Adapter`.
pub trait WeightDelta: Send {
    /// dW, shaped like the adapted rows of the base weight, fp32.
    fn delta_weight(&self) -> Tensor;
    /// The output rows it changes.
    fn range(&self) -> OutRange;
    /// Its trainable tensors, named from the model root.
    fn visit_tensors(&mut self, f: &mut Visit);
}

impl<T: WeightDelta> Adapter for T {
    fn delta(&self, x: &Tensor, _base: Base, _train: bool) -> Option<(Tensor, OutRange)> {
        let dw = self.delta_weight().to_kind(x.kind());
        Some((x.linear::<&Tensor>(&dw, None), self.range()))
    }

    fn merge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), self.range(), 1.0);
    }

    fn unmerge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), self.range(), -1.0);
    }

    fn visit(&mut self, f: &mut Visit) {
        self.visit_tensors(f);
    }
}
