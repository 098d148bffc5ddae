//! LoHa (Hyeon-Woo et al. 2022, FedPara; LyCORIS) with peft's semantics (`LoHaConfig`): the
//! update is the Hadamard product of two rank-r products,
//! dW = s * (W1a W1b) * (W2a W2b), s = alpha / r; y = W0 x + b + dW x. W1a, W1b, W2a start
//! kaiming-uniform (a = sqrt 5), W2b at zero, so the layer starts unchanged.
use super::{push_adapter, sites, WeightDelta};
use crate::linear::{OutRange, Role, Visit};
use crate::method::{
    default_rank_alpha, from_serde, targets_label, validate_alpha, validate_rank, validate_targets,
    Buffers, Method, MethodInfo, MethodSpec, Param, PeftReader, Target,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LohaSpec {
    pub r: i64,
    pub alpha: f64,
    pub targets: Vec<Target>,
}

pub static INFO: MethodInfo = MethodInfo {
    name: "loha",
    about: "LoHa: a Hadamard product of two low-rank updates",
    params: &[Param::RANK, Param::ALPHA, Param::TARGETS],
    from_fields,
    peft: Some(PeftReader {
        peft_type: "LOHA",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "loha_qkv_r8",
            Method::new(LohaSpec {
                r: 8,
                alpha: 8.0,
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

/// Defaults: r = 8, alpha = r (peft's defaults, scale 1).
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    default_rank_alpha(&mut f, 8);
    from_serde::<LohaSpec>(f)
}

/// Keys of peft's LoHa/LoKr configs that change what they compute and that vtab-orch does
/// not model, with the value that means "off".
pub(crate) fn refuse_lycoris_extras(c: &PeftConfig, targets: &[Target]) -> crate::Result<()> {
    for key in ["rank_dropout", "module_dropout"] {
        let p = c.number(key, Some(0.0))?;
        if p != 0.0 {
            return Err(c.err(format!(
                "`{key}` is {p}: vtab-orch's LyCORIS adapters have no {key} (set it to 0)"
            )));
        }
    }
    if c.flag("use_effective_conv2d") && targets.contains(&Target::PatchEmbed) {
        return Err(c.err(
            "`use_effective_conv2d` is set for the patch embedding's conv: vtab-orch adapts it \
             as a linear layer over flattened patches (use_effective_conv2d = false)",
        ));
    }
    Ok(())
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    let targets = c.targets()?;
    refuse_lycoris_extras(c, &targets)?;
    Ok(Method::new(LohaSpec {
        r: c.rank(Some(8))?,
        alpha: c.number("alpha", Some(8.0))?,
        targets,
    }))
}

/// The peft config keys of a LyCORIS method with whole-module targets.
pub(crate) fn lycoris_config(
    name: &str,
    targets: &[Target],
    keys: Value,
) -> Result<Map<String, Value>, String> {
    if targets.iter().any(|t| t.qkv_slice().is_some()) {
        return Err(format!(
            "peft adapts whole modules: {name} on q/k/v slices of the fused qkv has no peft form"
        ));
    }
    let mut m = json!({
        "rank_dropout": 0.0, "module_dropout": 0.0, "use_effective_conv2d": false,
        "init_weights": true,
    })
    .as_object()
    .expect("json object")
    .clone();
    m.extend(keys.as_object().expect("json object").clone());
    Ok(m)
}

impl MethodSpec for LohaSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!(
            "loha r={} a={} {}",
            self.r,
            self.alpha,
            targets_label(&self.targets)
        )
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("loha", &self.targets)?;
        validate_rank("loha", self.r)?;
        validate_alpha("loha", self.alpha)?;
        Ok(())
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let device = vit.device();
        for site in sites(vit, &self.targets) {
            let a = Loha::new(
                site.name,
                site.in_features,
                site.out_features,
                self.r,
                self.alpha / self.r as f64,
                site.range,
                device,
            );
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        lycoris_config(
            "LoHa",
            &self.targets,
            json!({"peft_type": "LOHA", "r": self.r, "alpha": self.alpha}),
        )
    }
}

pub struct Loha {
    pub name: String,
    /// [out, r], [r, in], [out, r], [r, in]
    pub w1a: Tensor,
    pub w1b: Tensor,
    pub w2a: Tensor,
    pub w2b: Tensor,
    pub scale: f64,
    pub range: OutRange,
}

/// `kaiming_uniform_(a = sqrt 5)` of a [rows, fan_in] tensor: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
pub(crate) fn kaiming(rows: i64, fan_in: i64, device: Device) -> Tensor {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Tensor::empty([rows, fan_in], (Kind::Float, device)).uniform_(-bound, bound)
}

impl Loha {
    pub fn new(
        name: String,
        in_f: i64,
        out_f: i64,
        r: i64,
        scale: f64,
        range: OutRange,
        device: Device,
    ) -> Self {
        Loha {
            name,
            w1a: kaiming(out_f, r, device),
            w1b: kaiming(r, in_f, device),
            w2a: kaiming(out_f, r, device),
            w2b: Tensor::zeros([r, in_f], (Kind::Float, device)),
            scale,
            range,
        }
    }
}

impl WeightDelta for Loha {
    fn delta_weight(&self) -> Tensor {
        self.w1a.matmul(&self.w1b) * self.w2a.matmul(&self.w2b) * self.scale
    }

    fn range(&self) -> OutRange {
        self.range
    }

    fn visit_tensors(&mut self, f: &mut Visit) {
        for (suffix, t) in [
            ("hada_w1_a", &mut self.w1a),
            ("hada_w1_b", &mut self.w1b),
            ("hada_w2_a", &mut self.w2a),
            ("hada_w2_b", &mut self.w2b),
        ] {
            f(&format!("{}.{suffix}", self.name), t, Role::Adapter);
        }
    }
}
