//! LoKr (Edalati et al. 2022; LyCORIS) with peft's semantics (`LoKrConfig`): the update is a
//! Kronecker product, dW = s * (W1 kron W2), s = alpha / r, with out = a*b and in = c*d split
//! by peft's `factorization`; W1 [a, c] (or W1a W1b with `decompose_both` when r is small)
//! starts at zero, W2 [b, d] (or W2a W2b [b, r] [r, d] when r < max(b, d) / 2) kaiming-uniform.
//! On the patch embedding's conv, d counts input channels and W2's columns carry the kernel
//! (peft's non-effective Conv2d form).
use super::loha::{kaiming, lycoris_config, refuse_lycoris_extras};
use super::{push_adapter, sites, Site, WeightDelta};
use crate::config::VitConfig;
use crate::linear::{OutRange, Role, Visit};
use crate::method::{
    default_rank_alpha, from_serde, targets_label, validate_alpha, validate_rank, validate_targets,
    Buffers, Method, MethodInfo, MethodSpec, Param, ParamKind, PeftReader, Target,
};
use crate::peft_format::PREFIX;
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokrSpec {
    pub r: i64,
    pub alpha: f64,
    /// Factor W1 too (W1a W1b) when r < max(a, c) / 2.
    #[serde(default)]
    pub decompose_both: bool,
    /// The dimension split: one factor as close to this as divides (-1: near the square root).
    #[serde(default = "minus_one")]
    pub decompose_factor: i64,
    pub targets: Vec<Target>,
}

fn minus_one() -> i64 {
    -1
}

/// The largest `decompose_factor` (it only needs to reach a layer's width).
pub const MAX_FACTOR: i64 = 1 << 20;

pub static INFO: MethodInfo = MethodInfo {
    name: "lokr",
    about: "LoKr: a Kronecker product of two small factors",
    params: &[
        Param::RANK,
        Param::ALPHA,
        Param {
            key: "decompose_both",
            kind: ParamKind::Bool,
            labelled: false,
        },
        Param {
            key: "decompose_factor",
            kind: ParamKind::Int {
                min: -1,
                max: MAX_FACTOR,
            },
            labelled: false,
        },
        Param::TARGETS,
    ],
    from_fields,
    peft: Some(PeftReader {
        peft_type: "LOKR",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "lokr_qkv_r8",
            Method::new(LokrSpec {
                r: 8,
                alpha: 8.0,
                decompose_both: false,
                decompose_factor: -1,
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

/// Defaults: r = 8, alpha = r (peft's defaults, scale 1).
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    default_rank_alpha(&mut f, 8);
    from_serde::<LokrSpec>(f)
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    let targets = c.targets()?;
    refuse_lycoris_extras(c, &targets)?;
    if c.cfg["init_weights"].as_str() == Some("lycoris") {
        return Err(c.err(
            "`init_weights` is \"lycoris\": only peft's default initialisation is supported",
        ));
    }
    Ok(Method::new(LokrSpec {
        r: c.rank(Some(8))?,
        alpha: c.number("alpha", Some(8.0))?,
        decompose_both: c.flag("decompose_both"),
        decompose_factor: c.integer("decompose_factor", Some(-1), -1..=MAX_FACTOR)?,
        targets,
    }))
}

/// peft's `factorization`: (m, n) with m * n = dimension, m <= n, m the divisor closest to
/// `factor` from below (-1: the divisors closest to each other).
pub fn factorization(dimension: i64, factor: i64) -> (i64, i64) {
    if factor > 0 && dimension % factor == 0 {
        return (factor, dimension / factor);
    }
    let factor = if factor == -1 { dimension } else { factor };
    let (mut m, mut n) = (1, dimension);
    let length = m + n;
    while m < n {
        let mut new_m = m + 1;
        while dimension % new_m != 0 {
            new_m += 1;
        }
        let new_n = dimension / new_m;
        if new_m + new_n > length || new_m > factor {
            break;
        }
        (m, n) = (new_m, new_n);
    }
    if m > n {
        (m, n) = (n, m);
    }
    (m, n)
}

impl MethodSpec for LokrSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!(
            "lokr r={} a={} {}",
            self.r,
            self.alpha,
            targets_label(&self.targets)
        )
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("lokr", &self.targets)?;
        validate_rank("lokr", self.r)?;
        validate_alpha("lokr", self.alpha)?;
        if !(self.decompose_factor == -1 || (1..=MAX_FACTOR).contains(&self.decompose_factor)) {
            return Err(format!(
                "lokr: `decompose_factor` must be -1 (near the square root) or from 1 to \
                 {MAX_FACTOR}, got {}",
                self.decompose_factor
            ));
        }
        Ok(())
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let device = vit.device();
        let kernel = vit.cfg.patch_size * vit.cfg.patch_size;
        for site in sites(vit, &self.targets) {
            let kk = if site.target == Target::PatchEmbed {
                kernel
            } else {
                1
            };
            let a = Lokr::new(self, &site, kk, device);
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        lycoris_config(
            "LoKr",
            &self.targets,
            json!({
                "peft_type": "LOKR", "r": self.r, "alpha": self.alpha,
                "decompose_both": self.decompose_both, "decompose_factor": self.decompose_factor,
                "rank_dropout_scale": false,
            }),
        )
    }

    /// A full W2 of the conv is [b, d, p, p] in peft, [b, d*p*p] here.
    fn peft_tensors(&self, trainable: &[(String, Tensor)], cfg: &VitConfig) -> Buffers {
        let p = cfg.patch_size;
        trainable
            .iter()
            .map(|(name, t)| {
                let t = t.detach();
                let t = if name == "patch_embed.proj.lokr_w2" {
                    t.view([t.size()[0], -1, p, p])
                } else {
                    t
                };
                (format!("{PREFIX}{name}"), t)
            })
            .collect()
    }

    fn peft_tensor_in(&self, name: &str, t: Tensor) -> (String, Tensor) {
        let t = if name == "patch_embed.proj.lokr_w2" && t.dim() == 4 {
            t.flatten(1, -1)
        } else {
            t
        };
        (name.to_string(), t)
    }
}

/// A Kronecker factor: whole, or a rank-r product (a [rows, r], b [r, cols]).
enum Factor {
    Whole(Tensor),
    Product(Tensor, Tensor),
}

impl Factor {
    fn weight(&self) -> Tensor {
        match self {
            Factor::Whole(w) => w.shallow_clone(),
            Factor::Product(a, b) => a.matmul(b),
        }
    }
}

pub struct Lokr {
    pub name: String,
    w1: Factor,
    w2: Factor,
    pub scale: f64,
    pub range: OutRange,
}

impl Lokr {
    /// peft's shapes and initialisation for one site; `kk` is the kernel area (the patch
    /// embedding's conv) or 1.
    fn new(spec: &LokrSpec, site: &Site, kk: i64, device: Device) -> Self {
        let r = spec.r;
        let (in_m, in_n) = factorization(site.in_features / kk, spec.decompose_factor);
        let (out_l, out_k) = factorization(site.out_features, spec.decompose_factor);
        let opts = (Kind::Float, device);
        let w1 = if spec.decompose_both && (r as f64) < out_l.max(in_m) as f64 / 2.0 {
            Factor::Product(Tensor::zeros([out_l, r], opts), kaiming(r, in_m, device))
        } else {
            Factor::Whole(Tensor::zeros([out_l, in_m], opts))
        };
        let w2 = if (r as f64) < out_k.max(in_n) as f64 / 2.0 {
            Factor::Product(kaiming(out_k, r, device), kaiming(r, in_n * kk, device))
        } else {
            // kaiming_uniform_ of peft's [b, d(, p, p)]: fan_in = d * p * p.
            Factor::Whole(kaiming(out_k, in_n * kk, device))
        };
        Lokr {
            name: site.name.clone(),
            w1,
            w2,
            scale: spec.alpha / r as f64,
            range: site.range,
        }
    }
}

impl WeightDelta for Lokr {
    fn delta_weight(&self) -> Tensor {
        self.w1.weight().kron(&self.w2.weight()) * self.scale
    }

    fn range(&self) -> OutRange {
        self.range
    }

    fn visit_tensors(&mut self, f: &mut Visit) {
        for (which, factor) in [("w1", &mut self.w1), ("w2", &mut self.w2)] {
            match factor {
                Factor::Whole(w) => f(&format!("{}.lokr_{which}", self.name), w, Role::Adapter),
                Factor::Product(a, b) => {
                    f(&format!("{}.lokr_{which}_a", self.name), a, Role::Adapter);
                    f(&format!("{}.lokr_{which}_b", self.name), b, Role::Adapter);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::factorization;

    /// peft's docstring examples, and the ViT widths.
    #[test]
    fn factorization_is_peft_s() {
        assert_eq!(factorization(256, -1), (16, 16));
        assert_eq!(factorization(128, -1), (8, 16));
        assert_eq!(factorization(127, -1), (1, 127));
        assert_eq!(factorization(128, 4), (4, 32));
        assert_eq!(factorization(768, -1), (24, 32));
        assert_eq!(factorization(3, 4), (1, 3));
    }
}
