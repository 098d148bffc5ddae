//! SSF (Lian et al. 2022, "Scaling & Shifting Your Features: A New Baseline for Efficient
//! Model Tuning"): after every operation of the ViT (the patch embedding, qkv, the attention
//! projection, fc1, fc2, each block's two LayerNorms and the final one) the features are
//! scaled and shifted per channel, y' = gamma * y + beta; gamma starts N(1, 0.02), beta
//! N(0, 0.02), as the official code (dongzelian/SSF, `init_ssf_scale_shift`) draws them, so
//! a fresh model is close to, not exactly, the backbone. peft has no SSF; the reference is
//! `scripts/gen_fixtures.py`'s, written from the paper (eq. 4) and the official code.
//! Mergeable: into the preceding linear layer (W' = gamma W, b' = gamma b + beta) or
//! LayerNorm affine.
use super::{push_adapter, sites};
use crate::linear::{Adapter, Linear, Role, Visit};
use crate::method::{from_serde, Buffers, Method, MethodInfo, MethodSpec, Target};
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsfSpec {}

pub static INFO: MethodInfo = MethodInfo {
    name: "ssf",
    about: "SSF: a learned per-channel scale and shift after every operation",
    params: &[],
    from_fields: from_serde::<SsfSpec>,
    peft: None,
    bench: || vec![("ssf", Method::new(SsfSpec {}))],
};

/// The linear layers SSF follows (with the patch embedding's conv).
const LINEARS: [Target; 5] = [
    Target::PatchEmbed,
    Target::Qkv,
    Target::Proj,
    Target::Fc1,
    Target::Fc2,
];

impl MethodSpec for SsfSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn fresh_is_identity(&self) -> bool {
        false
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        if !vit.cfg.qkv_bias {
            return Err(crate::Error::Config(
                "ssf: the backbone's qkv has no bias (qkv_bias = false), which SSF's shift \
                 after qkv needs"
                    .into(),
            ));
        }
        let device = vit.device();
        for site in sites(vit, &LINEARS) {
            let a = ScaleShift::new(site.name, site.out_features, device);
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        let d = vit.cfg.embed_dim;
        for (name, norm) in vit.norms_mut() {
            norm.adapters
                .push(Box::new(ScaleShift::new(name, d, device)));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        Err(
            "peft has no SSF (vtab-orch checks it against a reference written from the paper)"
                .into(),
        )
    }
}

/// gamma * y + beta over the last (channel) dimension, named `<module>.ssf_scale` and
/// `<module>.ssf_shift`.
pub struct ScaleShift {
    pub name: String,
    pub scale: Tensor,
    pub shift: Tensor,
}

impl ScaleShift {
    fn new(name: String, dim: i64, device: Device) -> Self {
        let opts = (Kind::Float, device);
        ScaleShift {
            name,
            scale: Tensor::randn([dim], opts) * 0.02 + 1.0,
            shift: Tensor::randn([dim], opts) * 0.02,
        }
    }
}

impl Adapter for ScaleShift {
    fn on_output(&self, y: Tensor) -> Tensor {
        let k = y.kind();
        y * self.scale.to_kind(k) + self.shift.to_kind(k)
    }

    fn merge(&self, base: &mut Linear) {
        let _ = base
            .weight
            .g_mul_(&self.scale.to_kind(base.weight.kind()).unsqueeze(-1));
        let b = base.bias.as_mut().expect("SSF follows layers with a bias");
        let _ = b.g_mul_(&self.scale.to_kind(b.kind()));
        let _ = b.g_add_(&self.shift.to_kind(b.kind()));
    }

    fn unmerge(&self, base: &mut Linear) {
        let b = base.bias.as_mut().expect("SSF follows layers with a bias");
        let _ = b.g_sub_(&self.shift.to_kind(b.kind()));
        let _ = b.g_div_(&self.scale.to_kind(b.kind()));
        let _ = base
            .weight
            .g_div_(&self.scale.to_kind(base.weight.kind()).unsqueeze(-1));
    }

    fn visit(&mut self, f: &mut Visit) {
        f(
            &format!("{}.ssf_scale", self.name),
            &mut self.scale,
            Role::Adapter,
        );
        f(
            &format!("{}.ssf_shift", self.name),
            &mut self.shift,
            Role::Adapter,
        );
    }
}
