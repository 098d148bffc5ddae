//! Adaptation methods as data: what to train and with which hyper-parameters. Validation
//! lives here; building the adapted model is `model.rs`.
use serde::{Deserialize, Serialize};
use std::fmt;

/// A layer an adapter can target: a linear layer of every ViT block, or the patch
/// embedding's conv (`patch_embed.proj`, once per model). `q`, `k`, `v` are row slices of
/// the fused `qkv` (something peft cannot express on a timm model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `patch_embed.proj`, a conv with kernel = stride = patch size (peft's Conv2d LoRA/IA3).
    #[serde(rename = "patch_embed")]
    PatchEmbed,
    Q,
    K,
    V,
    Qkv,
    Proj,
    Fc1,
    Fc2,
}

impl Target {
    pub const ALL: [Target; 8] = [
        Target::PatchEmbed,
        Target::Q,
        Target::K,
        Target::V,
        Target::Qkv,
        Target::Proj,
        Target::Fc1,
        Target::Fc2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::PatchEmbed => "patch_embed",
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::Qkv => "qkv",
            Target::Proj => "proj",
            Target::Fc1 => "fc1",
            Target::Fc2 => "fc2",
        }
    }

    /// Index of the q/k/v slice inside the fused qkv, if this is a slice.
    pub fn qkv_slice(self) -> Option<i64> {
        match self {
            Target::Q => Some(0),
            Target::K => Some(1),
            Target::V => Some(2),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    pub r: i64,
    pub alpha: f64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub rslora: bool,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VeraSpec {
    #[serde(default = "vera_r")]
    pub r: i64,
    #[serde(default = "d_initial")]
    pub d_initial: f64,
    #[serde(default)]
    pub projection_prng_key: i64,
    #[serde(default)]
    pub dropout: f64,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ia3Spec {
    /// Output scaling for q/k/v/qkv/proj/fc1; input (feed-forward) scaling for fc2.
    pub targets: Vec<Target>,
}

fn vera_r() -> i64 {
    256
}
fn d_initial() -> f64 {
    0.1
}

/// The largest LoRA or VeRA rank (`r`): ranks allocate `r x width` per adapted layer, and
/// published ViT studies stay below a few hundred.
pub const MAX_RANK: i64 = 4096;

/// How a backbone is adapted. Every method trains a new classification head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    /// Linear probe: the head only.
    Linear,
    /// Full fine-tuning: every tensor.
    Full,
    /// BitFit: every bias (linear, conv and LayerNorm) and the head.
    Bitfit,
    Lora(LoraSpec),
    Vera(VeraSpec),
    Ia3(Ia3Spec),
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Linear => "linear",
            Method::Full => "full",
            Method::Bitfit => "bitfit",
            Method::Lora(_) => "lora",
            Method::Vera(_) => "vera",
            Method::Ia3(_) => "ia3",
        }
    }

    pub fn targets(&self) -> &[Target] {
        match self {
            Method::Lora(s) => &s.targets,
            Method::Vera(s) => &s.targets,
            Method::Ia3(s) => &s.targets,
            _ => &[],
        }
    }

    /// A short human label, e.g. `lora r=8 a=8 q,v`.
    pub fn label(&self) -> String {
        let t = self
            .targets()
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",");
        match self {
            Method::Lora(s) => format!(
                "lora r={} a={}{} {t}",
                s.r,
                s.alpha,
                if s.rslora { " rs" } else { "" }
            ),
            Method::Vera(s) => format!("vera r={} {t}", s.r),
            Method::Ia3(_) => format!("ia3 {t}"),
            other => other.name().to_string(),
        }
    }

    /// Checks ranks, rates and targets; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let targets = self.targets();
        if matches!(self, Method::Lora(_) | Method::Vera(_) | Method::Ia3(_)) {
            if targets.is_empty() {
                return Err(format!(
                    "{}: `targets` is empty (choose from patch_embed, q, k, v, qkv, proj, fc1, fc2)",
                    self.name()
                ));
            }
            let mut seen = targets.to_vec();
            seen.sort();
            if seen.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!(
                    "{}: `targets` lists a layer twice: {targets:?}",
                    self.name()
                ));
            }
            if seen.contains(&Target::Qkv) && seen.iter().any(|t| t.qkv_slice().is_some()) {
                return Err(format!(
                    "{}: `targets` has both qkv and a q/k/v slice of it",
                    self.name()
                ));
            }
        }
        if matches!(self, Method::Vera(_)) && targets.contains(&Target::PatchEmbed) {
            return Err(
                "vera: `targets` has patch_embed, a Conv2d: VeRA (like peft's) adapts \
                        linear layers only"
                    .into(),
            );
        }
        let dropout_ok = |p: f64| (0.0..1.0).contains(&p);
        match self {
            Method::Lora(s) if s.r <= 0 => Err(format!("lora: `r` must be >= 1, got {}", s.r)),
            Method::Lora(s) if s.r > MAX_RANK => {
                Err(format!("lora: `r` must be at most {MAX_RANK}, got {}", s.r))
            }
            Method::Lora(s) if !(s.alpha > 0.0 && s.alpha.is_finite()) => {
                Err(format!("lora: `alpha` must be > 0, got {}", s.alpha))
            }
            Method::Lora(s) if !dropout_ok(s.dropout) => Err(format!(
                "lora: `dropout` must be in [0, 1), got {}",
                s.dropout
            )),
            Method::Vera(s) if s.r <= 0 => Err(format!("vera: `r` must be >= 1, got {}", s.r)),
            Method::Vera(s) if s.r > MAX_RANK => {
                Err(format!("vera: `r` must be at most {MAX_RANK}, got {}", s.r))
            }
            Method::Vera(s) if !s.d_initial.is_finite() => Err(format!(
                "vera: `d_initial` must be finite, got {}",
                s.d_initial
            )),
            Method::Vera(s) if !dropout_ok(s.dropout) => Err(format!(
                "vera: `dropout` must be in [0, 1), got {}",
                s.dropout
            )),
            _ => Ok(()),
        }
    }
}
