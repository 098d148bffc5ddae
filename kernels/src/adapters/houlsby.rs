//! The Houlsby bottleneck adapter (Houlsby et al. 2019, "Parameter-efficient transfer learning
//! for NLP"), sequential, as the maintained `adapters` package (AdapterHub) runs it on a ViT
//! (`DoubleSeqBnConfig`, alias "houlsby"): after the attention and after the MLP of every block
//! a bottleneck reads the sub-layer's output f and adds to it, f' = f + s * up(act(down(f))),
//! before the block's residual: x + f'. No LayerNorm is added or trained. The bottleneck is
//! embed_dim // `reduction_factor` (16: 48 at ViT-B). `init` "bert" (the package's default)
//! draws both weights N(0, 0.02) and zero biases, so a fresh adapter is close to but not the
//! identity; "houlsby" draws them truncated N(0, 0.01) within +-0.02; "mam_adapter" starts the
//! up-projection at zero (the identity). The parity fixture is made by `adapters` itself
//! (`scripts/gen_adapters_fixtures.py`, with the weight mapping). Not mergeable.
use crate::linear::{Linear, Role, Visit};
use crate::method::{
    from_serde, validate_dropout, Buffers, Method, MethodInfo, MethodSpec, Param, ParamKind,
};
use crate::vit::{Branch, VisionTransformer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoulsbySpec {
    /// The bottleneck is embed_dim // reduction_factor (at least 1).
    pub reduction_factor: f64,
    /// The bottleneck's activation (`adapters`' `non_linearity`).
    pub non_linearity: String,
    /// s, the bottleneck output's scale.
    pub scaling: f64,
    /// How the bottleneck starts (`adapters`' `init_weights`).
    pub init: String,
    /// Dropout on the bottleneck's output while training.
    pub dropout: f64,
}

const ACTIVATIONS: &[&str] = &["swish", "relu", "gelu", "tanh"];
const INITS: &[&str] = &["bert", "houlsby", "mam_adapter"];

pub static INFO: MethodInfo = MethodInfo {
    name: "houlsby",
    about: "Houlsby adapter: a bottleneck after each attention and MLP sub-layer",
    params: &[
        Param {
            key: "reduction_factor",
            kind: ParamKind::Float,
            labelled: true,
        },
        Param {
            key: "non_linearity",
            kind: ParamKind::Choice(ACTIVATIONS),
            labelled: false,
        },
        Param {
            key: "scaling",
            kind: ParamKind::Float,
            labelled: false,
        },
        Param {
            key: "init",
            kind: ParamKind::Choice(INITS),
            labelled: false,
        },
        Param {
            key: "dropout",
            kind: ParamKind::Float,
            labelled: false,
        },
    ],
    from_fields,
    peft: None,
    bench: || {
        vec![(
            "houlsby_rf16",
            Method::new(HoulsbySpec {
                reduction_factor: 16.0,
                non_linearity: "swish".into(),
                scaling: 1.0,
                init: "bert".into(),
                dropout: 0.0,
            }),
        )]
    },
};

/// `adapters`' defaults for DoubleSeqBnConfig.
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    f.entry("reduction_factor").or_insert(json!(16.0));
    f.entry("non_linearity").or_insert(json!("swish"));
    f.entry("scaling").or_insert(json!(1.0));
    f.entry("init").or_insert(json!("bert"));
    f.entry("dropout").or_insert(json!(0.0));
    from_serde::<HoulsbySpec>(f)
}

impl HoulsbySpec {
    fn bottleneck(&self, d: i64) -> i64 {
        ((d as f64 / self.reduction_factor).floor() as i64).max(1)
    }
}

impl MethodSpec for HoulsbySpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!("houlsby rf={}", self.reduction_factor)
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.reduction_factor >= 1.0 && self.reduction_factor.is_finite()) {
            return Err(format!(
                "houlsby: `reduction_factor` must be >= 1, got {}",
                self.reduction_factor
            ));
        }
        if !ACTIVATIONS.contains(&self.non_linearity.as_str()) {
            return Err(format!(
                "houlsby: `non_linearity` must be one of {}, got {:?}",
                ACTIVATIONS.join(", "),
                self.non_linearity
            ));
        }
        if !INITS.contains(&self.init.as_str()) {
            return Err(format!(
                "houlsby: `init` must be one of {}, got {:?}",
                INITS.join(", "),
                self.init
            ));
        }
        if !self.scaling.is_finite() {
            return Err(format!(
                "houlsby: `scaling` must be finite, got {}",
                self.scaling
            ));
        }
        validate_dropout("houlsby", self.dropout)?;
        Ok(())
    }

    fn fresh_is_identity(&self) -> bool {
        self.init == "mam_adapter"
    }

    fn mergeable(&self) -> bool {
        false
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let (d, device) = (vit.cfg.embed_dim, vit.device());
        let b = self.bottleneck(d);
        for (i, blk) in vit.blocks.iter_mut().enumerate() {
            blk.attn_out = Some(Box::new(Bottleneck::new(
                format!("blocks.{i}.adapter_attn"),
                d,
                b,
                self,
                device,
            )));
            blk.mlp_out = Some(Box::new(Bottleneck::new(
                format!("blocks.{i}.adapter_mlp"),
                d,
                b,
                self,
                device,
            )));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        Err(
            "peft has no Houlsby adapter (vtab-orch checks it against the `adapters` package)"
                .into(),
        )
    }
}

/// `torch.nn.init.trunc_normal_(t, 0, std, -2 std, 2 std)`'s distribution (inverse CDF).
fn trunc_normal(shape: [i64; 2], std: f64, device: Device) -> Tensor {
    let cdf = |z: f64| 0.5 * (1.0 + libm_erf(z / std::f64::consts::SQRT_2));
    let (lo, hi) = (cdf(-2.0), cdf(2.0));
    let u = Tensor::empty(shape, (Kind::Float, device)).uniform_(2.0 * lo - 1.0, 2.0 * hi - 1.0);
    (u.erfinv() * (std * std::f64::consts::SQRT_2)).clamp(-2.0 * std, 2.0 * std)
}

/// erf for a scalar, through libtorch (the std library has none).
fn libm_erf(z: f64) -> f64 {
    Tensor::from(z).erf().double_value(&[])
}

/// down [b, d] + bias, activation, up [d, b] + bias, times the scale, dropout.
pub struct Bottleneck {
    pub name: String,
    pub down: Linear,
    pub up: Linear,
    act: String,
    scale: f64,
    dropout: f64,
}

impl Bottleneck {
    fn new(name: String, d: i64, b: i64, spec: &HoulsbySpec, device: Device) -> Self {
        let opts = (Kind::Float, device);
        let (down_w, up_w) = match spec.init.as_str() {
            "houlsby" => (
                trunc_normal([b, d], 0.01, device),
                trunc_normal([d, b], 0.01, device),
            ),
            "mam_adapter" => {
                let bound = 1.0 / (d as f64).sqrt();
                (
                    Tensor::empty([b, d], opts).uniform_(-bound, bound),
                    Tensor::zeros([d, b], opts),
                )
            }
            _ => (
                Tensor::randn([b, d], opts) * 0.02,
                Tensor::randn([d, b], opts) * 0.02,
            ),
        };
        Bottleneck {
            name,
            down: Linear {
                weight: down_w,
                bias: Some(Tensor::zeros([b], opts)),
            },
            up: Linear {
                weight: up_w,
                bias: Some(Tensor::zeros([d], opts)),
            },
            act: spec.non_linearity.clone(),
            scale: spec.scaling,
            dropout: spec.dropout,
        }
    }
}

impl Branch for Bottleneck {
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.down.forward(x);
        let h = match self.act.as_str() {
            "relu" => h.relu(),
            "gelu" => h.gelu("none"),
            "tanh" => h.tanh(),
            _ => h.silu(),
        };
        let out = self.up.forward(&h) * self.scale;
        if self.dropout > 0.0 && train {
            out.dropout(self.dropout, true)
        } else {
            out
        }
    }

    fn visit(&mut self, f: &mut Visit) {
        self.down
            .visit(&format!("{}.down", self.name), Role::Adapter, f);
        self.up
            .visit(&format!("{}.up", self.name), Role::Adapter, f);
    }
}
