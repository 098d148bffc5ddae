//! AdaptFormer (Chen et al. 2022, "AdaptFormer: Adapting Vision Transformers for Scalable
//! Visual Recognition"), the parallel variant of its official code: beside each block's MLP
//! sub-layer a bottleneck reads the sub-layer's input x (before norm2) and adds
//! s * up(ReLU(down(x))) to the MLP's output: x' = x + MLP(LN2(x)) + s * up(ReLU(down(x))).
//! down starts kaiming-uniform (a = sqrt 5), up and both biases at zero (the official
//! `init_option = "lora"`), so the block starts unchanged. peft has no AdaptFormer; the
//! reference is `scripts/gen_fixtures.py`'s, written from the paper and the official code.
//! Not mergeable: the bottleneck is non-linear.
use crate::linear::{Linear, Role, Visit};
use crate::method::{
    from_serde, validate_dropout, Buffers, Method, MethodInfo, MethodSpec, Param, ParamKind,
};
use crate::vit::{Branch, VisionTransformer};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptformerSpec {
    /// The bottleneck width (the paper's d-hat; 64 for ViT-B).
    #[serde(default = "bottleneck")]
    pub bottleneck: i64,
    /// The branch's scale s (0.1 in the paper).
    #[serde(default = "scale")]
    pub scale: f64,
    /// Dropout on the bottleneck activations while training.
    #[serde(default)]
    pub dropout: f64,
}

fn bottleneck() -> i64 {
    64
}
fn scale() -> f64 {
    0.1
}

/// The widest bottleneck (it allocates `bottleneck x width` twice per block).
pub const MAX_BOTTLENECK: i64 = 4096;

pub static INFO: MethodInfo = MethodInfo {
    name: "adaptformer",
    about: "AdaptFormer: a scaled bottleneck beside each block's MLP",
    params: &[
        Param {
            key: "bottleneck",
            kind: ParamKind::Int {
                min: 1,
                max: MAX_BOTTLENECK,
            },
            labelled: true,
        },
        Param {
            key: "scale",
            kind: ParamKind::Float,
            labelled: true,
        },
        Param {
            key: "dropout",
            kind: ParamKind::Float,
            labelled: false,
        },
    ],
    from_fields: from_serde::<AdaptformerSpec>,
    peft: None,
    bench: || {
        vec![(
            "adaptformer_b64",
            Method::new(AdaptformerSpec {
                bottleneck: 64,
                scale: 0.1,
                dropout: 0.0,
            }),
        )]
    },
};

impl MethodSpec for AdaptformerSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!("adaptformer b={} s={}", self.bottleneck, self.scale)
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_BOTTLENECK).contains(&self.bottleneck) {
            return Err(format!(
                "adaptformer: `bottleneck` must be from 1 to {MAX_BOTTLENECK}, got {}",
                self.bottleneck
            ));
        }
        if !self.scale.is_finite() {
            return Err(format!(
                "adaptformer: `scale` must be finite, got {}",
                self.scale
            ));
        }
        validate_dropout("adaptformer", self.dropout)?;
        Ok(())
    }

    fn mergeable(&self) -> bool {
        false
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let (d, device) = (vit.cfg.embed_dim, vit.device());
        for (i, b) in vit.blocks.iter_mut().enumerate() {
            b.mlp_branch = Some(Box::new(Bottleneck::new(
                format!("blocks.{i}.adaptmlp"),
                d,
                self,
                device,
            )));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        Err(
            "peft has no AdaptFormer (vtab-orch checks it against a reference written from \
             the paper)"
                .into(),
        )
    }
}

/// down [b, d] + bias, ReLU, dropout, up [d, b] + bias, times the scale.
pub struct Bottleneck {
    pub name: String,
    pub down: Linear,
    pub up: Linear,
    pub scale: f64,
    pub dropout: f64,
}

impl Bottleneck {
    fn new(name: String, d: i64, spec: &AdaptformerSpec, device: Device) -> Self {
        let b = spec.bottleneck;
        let bound = 1.0 / (d as f64).sqrt();
        let opts = (Kind::Float, device);
        Bottleneck {
            name,
            down: Linear {
                weight: Tensor::empty([b, d], opts).uniform_(-bound, bound),
                bias: Some(Tensor::zeros([b], opts)),
            },
            up: Linear {
                weight: Tensor::zeros([d, b], opts),
                bias: Some(Tensor::zeros([d], opts)),
            },
            scale: spec.scale,
            dropout: spec.dropout,
        }
    }
}

impl Branch for Bottleneck {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.down.forward(x).relu();
        let h = if self.dropout > 0.0 && train {
            h.dropout(self.dropout, true)
        } else {
            h
        };
        self.up.forward(&h) * self.scale
    }

    fn visit(&mut self, f: &mut Visit) {
        self.down
            .visit(&format!("{}.down_proj", self.name), Role::Adapter, f);
        self.up
            .visit(&format!("{}.up_proj", self.name), Role::Adapter, f);
    }
}
