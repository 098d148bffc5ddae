//! LoRA (Hu et al. 2021) with peft's semantics: y = W0 x + b + s * B A drop(x),
//! A kaiming-uniform(a = sqrt 5), B zeros, s = alpha / r (rsLoRA: alpha / sqrt r).
//! `init` is peft's `init_lora_weights`: PiSSA (Meng et al. 2024) starts B A at the r
//! principal singular directions of W0 (A = sqrt(S_r / s) V_r^T, B = U_r sqrt(S_r / s)) and
//! OLoRA (Büyükakyüz 2024) at its QR factors (B = Q_r, A = R_r); both move s B A out of the
//! frozen weight (W0 - s B A), so the layer starts unchanged up to rounding.
use super::{push_adapter, site_rows, sites, sites_of};
use crate::config::VitConfig;
use crate::linear::{add_weight_on_range, Adapter, Base, Linear, OutRange, Role, Visit};
use crate::method::{
    default_rank_alpha, from_serde, targets_label, validate_dropout, validate_targets, Buffers,
    Method, MethodInfo, MethodSpec, Param, ParamKind, PeftReader, Target, MAX_RANK,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

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
    /// DoRA: a trained magnitude per output row on top (peft's `use_dora`). Left out of the
    /// key when off, so keys of plain LoRA runs are those from before it existed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_dora: bool,
    /// How A and B start; left out of the key at the default, like `use_dora`.
    #[serde(default, skip_serializing_if = "LoraInit::is_default")]
    pub init: LoraInit,
}

/// peft's `init_lora_weights` values vtab-orch implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraInit {
    /// A kaiming-uniform, B zero (peft's `true`).
    #[default]
    Default,
    /// The principal singular directions of the base weight (peft's `"pissa"`, exact SVD).
    Pissa,
    /// The QR factors of the base weight (peft's `"olora"`).
    Olora,
}

impl LoraInit {
    pub const NAMES: &'static [&'static str] = &["default", "pissa", "olora"];

    fn is_default(&self) -> bool {
        *self == LoraInit::Default
    }

    fn name(&self) -> &'static str {
        match self {
            LoraInit::Default => "default",
            LoraInit::Pissa => "pissa",
            LoraInit::Olora => "olora",
        }
    }
}

impl LoraSpec {
    /// Rank `r`, alpha = r (scale 1), no dropout, plain LoRA.
    pub fn new(r: i64, targets: Vec<Target>) -> Self {
        LoraSpec {
            r,
            alpha: r as f64,
            dropout: 0.0,
            rslora: false,
            targets,
            use_dora: false,
            init: LoraInit::Default,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

pub static INFO: MethodInfo = MethodInfo {
    name: "lora",
    about: "LoRA: a scaled low-rank update B A of each targeted layer",
    params: &[
        Param::RANK,
        Param::ALPHA,
        Param::DROPOUT,
        Param {
            key: "rslora",
            kind: ParamKind::Bool,
            labelled: true,
        },
        Param::TARGETS,
        Param {
            key: "use_dora",
            kind: ParamKind::Bool,
            labelled: true,
        },
        Param {
            key: "init",
            kind: ParamKind::Choice(LoraInit::NAMES),
            labelled: true,
        },
    ],
    from_fields,
    peft: Some(PeftReader {
        peft_type: "LORA",
        read: read_peft,
    }),
    bench,
};

/// Defaults: r = 8, alpha = r.
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    default_rank_alpha(&mut f, 8);
    from_serde::<LoraSpec>(f)
}

fn bench() -> Vec<(&'static str, Method)> {
    use Target::*;
    let lora = |targets: Vec<Target>| {
        Method::new(LoraSpec {
            r: 8,
            alpha: 8.0,
            dropout: 0.0,
            rslora: false,
            targets,
            use_dora: false,
            init: LoraInit::Default,
        })
    };
    vec![
        ("lora_qkv_r8", lora(vec![Qkv])),
        ("lora_all_r8", lora(vec![Qkv, Proj, Fc1, Fc2])),
        // peft's `lora_all_r8` config exactly: its suffix-matched `proj` also adapts
        // patch_embed.proj, so this row has peft's trainable count (the one above, kept for
        // comparisons with earlier runs, adapts attn.proj only).
        (
            "lora_all_pe_r8",
            lora(vec![PatchEmbed, Qkv, Proj, Fc1, Fc2]),
        ),
        ("lora_qv_r8", lora(vec![Q, V])),
        (
            "dora_qkv_r8",
            Method::new(LoraSpec {
                use_dora: true,
                ..LoraSpec::new(8, vec![Qkv])
            }),
        ),
        (
            "pissa_qkv_r8",
            Method::new(LoraSpec {
                init: LoraInit::Pissa,
                ..LoraSpec::new(8, vec![Qkv])
            }),
        ),
    ]
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    // Inits that only draw A and B differently need nothing: the file holds A and B.
    let init = match &c.cfg["init_lora_weights"] {
        Value::Null | Value::Bool(_) => LoraInit::Default,
        Value::String(s) if s == "gaussian" => LoraInit::Default,
        Value::String(s) if s == "pissa" => LoraInit::Pissa,
        Value::String(s) if s.eq_ignore_ascii_case("olora") => LoraInit::Olora,
        other => {
            return Err(c.err(format!(
                "`init_lora_weights` = {other}: vtab-orch implements true/false/\"gaussian\", \
                 \"pissa\" (exact SVD; not the randomised \"pissa_niter_*\") and \"olora\""
            )))
        }
    };
    Ok(Method::new(LoraSpec {
        r: c.rank(None)?,
        alpha: c.number("lora_alpha", Some(8.0))?,
        dropout: c.number("lora_dropout", Some(0.0))?,
        rslora: c.flag("use_rslora"),
        targets: c.targets()?,
        use_dora: c.flag("use_dora"),
        init,
    }))
}

impl MethodSpec for LoraSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!(
            "{} r={} a={}{}{} {}",
            if self.use_dora { "dora" } else { "lora" },
            self.r,
            self.alpha,
            if self.rslora { " rs" } else { "" },
            match self.init {
                LoraInit::Default => String::new(),
                other => format!(" {}", other.name()),
            },
            targets_label(&self.targets)
        )
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("lora", &self.targets)?;
        if self.r <= 0 {
            return Err(format!("lora: `r` must be >= 1, got {}", self.r));
        }
        if self.r > MAX_RANK {
            return Err(format!(
                "lora: `r` must be at most {MAX_RANK}, got {}",
                self.r
            ));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(format!("lora: `alpha` must be > 0, got {}", self.alpha));
        }
        validate_dropout("lora", self.dropout)?;
        if self.init != LoraInit::Default {
            let init = self.init.name();
            if self.use_dora {
                return Err(format!(
                    "lora: `init` = \"{init}\" with `use_dora`: not supported (DoRA starts from \
                     the default init)"
                ));
            }
            if self.targets.contains(&Target::PatchEmbed) {
                return Err(format!(
                    "lora: `init` = \"{init}\" on patch_embed: peft factors only linear layers \
                     this way (drop patch_embed from `targets`)"
                ));
            }
        }
        Ok(())
    }

    /// PiSSA and OLoRA take r singular directions (QR columns) of each targeted weight.
    fn fits(&self, cfg: &VitConfig) -> Result<(), String> {
        if self.init == LoraInit::Default {
            return Ok(());
        }
        for site in sites_of(cfg, &self.targets) {
            let rank = site.in_features.min(site.out_features);
            if self.r > rank {
                return Err(format!(
                    "lora: `r` = {} exceeds the rank of {} ({} x {}) for `init` = \"{}\"",
                    self.r,
                    site.name,
                    site.out_features,
                    site.in_features,
                    self.init.name()
                ));
            }
        }
        Ok(())
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let scale = lora_scale(self.r, self.alpha, self.rslora);
        let device = vit.device();
        for site in sites(vit, &self.targets) {
            if self.init != LoraInit::Default {
                let rows = site_rows(vit, &site);
                let (a, b) = principal_factors(&rows, self.r, scale, self.init, &site.name)?;
                let lora =
                    Lora::from_factors(site.name.clone(), a, b, scale, self.dropout, site.range);
                push_adapter(vit, site.block, site.target, Box::new(lora));
                continue;
            }
            let rows = self.use_dora.then(|| site_rows(vit, &site));
            let a = Lora::new(
                site.name.clone(),
                site.in_features,
                site.out_features,
                self.r,
                scale,
                self.dropout,
                site.range,
                device,
            );
            let a = match rows {
                Some(rows) => a.with_dora(&rows),
                None => a,
            };
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        if self.targets.iter().any(|t| t.qkv_slice().is_some()) {
            return Err(
                "peft adapts whole modules: LoRA on q/k/v slices of the fused qkv has no peft form"
                    .into(),
            );
        }
        let v = json!({
            "peft_type": "LORA", "bias": "none", "r": self.r, "lora_alpha": self.alpha,
            "fan_in_fan_out": false,
            "lora_dropout": self.dropout, "use_rslora": self.rslora, "use_dora": self.use_dora,
            // peft redoes a PiSSA or OLoRA init when it loads the adapter onto the original
            // weights, which moves the same s B0 A0 out of them as here.
            "init_lora_weights": match self.init {
                LoraInit::Default => json!(true),
                other => json!(other.name()),
            },
        });
        Ok(v.as_object().expect("json object").clone())
    }

    /// The conv LoRA: A [r, C*p*p] is peft's conv [r, C, p, p], B [D, r] its 1x1 conv.
    fn peft_tensors(&self, trainable: &[(String, Tensor)], cfg: &VitConfig) -> Buffers {
        let (c, p) = (cfg.in_chans, cfg.patch_size);
        trainable
            .iter()
            .map(|(name, t)| {
                let t = t.detach();
                let t = match name.strip_prefix("patch_embed.proj.") {
                    Some("lora_A.weight") => t.view([t.size()[0], c, p, p]),
                    Some("lora_B.weight") => t.view([t.size()[0], -1, 1, 1]),
                    // The conv DoRA magnitude is [1, D, 1, 1].
                    Some("lora_magnitude_vector") => t.view([1, -1, 1, 1]),
                    _ => t,
                };
                (format!("{}{name}", crate::peft_format::PREFIX), t)
            })
            .collect()
    }

    fn peft_tensor_in(&self, name: &str, t: Tensor) -> (String, Tensor) {
        let t = if name == "patch_embed.proj.lora_magnitude_vector" {
            t.flatten(0, -1)
        } else if name.starts_with("patch_embed.proj.lora_") && t.dim() == 4 {
            t.flatten(1, -1)
        } else {
            t
        };
        (name.to_string(), t)
    }
}

pub struct Lora {
    /// Name of the adapted (virtual) module, e.g. `blocks.0.attn.qkv` or `blocks.0.attn.q`.
    pub name: String,
    /// [r, in]
    pub a: Tensor,
    /// [out, r]
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f64,
    pub range: OutRange,
    /// DoRA's magnitude, when `use_dora`.
    pub dora: Option<Dora>,
}

/// PiSSA's or OLoRA's starting (A, B) from `rows` (the adapted rows of the base weight,
/// [out, in]), as peft's `pissa_init` / `olora_init`; moves s B A out of `rows` in place.
fn principal_factors(
    rows: &Tensor,
    r: i64,
    scale: f64,
    init: LoraInit,
    layer: &str,
) -> crate::Result<(Tensor, Tensor)> {
    let (out_f, in_f) = rows.size2().expect("weight rows are [out, in]");
    if r > out_f.min(in_f) {
        return Err(crate::Error::Config(format!(
            "lora: `r` = {r} exceeds the rank of {layer} ({out_f} x {in_f}) for `init` = \"{}\"",
            init.name()
        )));
    }
    let w = rows.to_kind(Kind::Float);
    let (a, b) = match init {
        LoraInit::Pissa => {
            // torch.svd is linalg.svd(full_matrices=False) returning V = Vh^T.
            let (u, s, v) = w.svd(true, true);
            let vh = v.transpose(0, 1);
            let sr = s.narrow(0, 0, r) / scale;
            let root = Tensor::diag(&sr.sqrt(), 0);
            (
                root.matmul(&vh.narrow(0, 0, r)),
                u.narrow(1, 0, r).matmul(&root),
            )
        }
        LoraInit::Olora => {
            let (q, rr) = Tensor::linalg_qr(&w, "reduced");
            (
                rr.narrow(0, 0, r).contiguous(),
                q.narrow(1, 0, r).contiguous(),
            )
        }
        LoraInit::Default => unreachable!("the default init draws A"),
    };
    // peft: weight - scaling * lora_B @ lora_A, i.e. (s B) A.
    let residual = &w - (&b * scale).matmul(&a);
    rows.shallow_clone().copy_(&residual.to_kind(rows.kind()));
    Ok((a, b))
}

/// The LoRA scale: alpha / r, or alpha / sqrt(r) for rsLoRA.
pub fn lora_scale(r: i64, alpha: f64, rslora: bool) -> f64 {
    if rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

impl Lora {
    /// A fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_ with a = sqrt 5),
    /// B = 0, so the layer starts as the identity change.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        in_f: i64,
        out_f: i64,
        r: i64,
        scale: f64,
        dropout: f64,
        range: OutRange,
        device: Device,
    ) -> Self {
        let bound = 1.0 / (in_f as f64).sqrt();
        let a = Tensor::empty([r, in_f], (Kind::Float, device)).uniform_(-bound, bound);
        let b = Tensor::zeros([out_f, r], (Kind::Float, device));
        Self::from_factors(name, a, b, scale, dropout, range)
    }

    /// An adapter starting from given factors (PiSSA, OLoRA).
    pub fn from_factors(
        name: String,
        a: Tensor,
        b: Tensor,
        scale: f64,
        dropout: f64,
        range: OutRange,
    ) -> Self {
        Lora {
            name,
            a,
            b,
            scale,
            dropout,
            range,
            dora: None,
        }
    }

    /// DoRA on top: the magnitude starts as the row norms of W + s B A (`base_rows`, the
    /// adapted rows of the base weight), so the layer still starts unchanged.
    pub fn with_dora(mut self, base_rows: &Tensor) -> Self {
        let magnitude = self.weight_norm(base_rows, &self.delta_weight());
        self.dora = Some(Dora {
            magnitude,
            merged_norm: Mutex::new(None),
        });
        self
    }

    /// s * B A, shaped like the adapted rows of the base weight.
    pub fn delta_weight(&self) -> Tensor {
        self.b.matmul(&self.a) * self.scale
    }

    /// ||W + delta||, row by row (peft's `get_weight_norm`), in fp32 and detached: DoRA's
    /// gradient does not flow through the norm (paper, section 4.3; peft likewise).
    fn weight_norm(&self, rows: &Tensor, delta: &Tensor) -> Tensor {
        (rows.to_kind(Kind::Float) + delta.detach())
            .norm_scalaropt_dim(2.0, [1i64].as_slice(), false)
            .detach()
    }

    /// The adapted rows of `layer`'s weight.
    fn rows(&self, layer: &Linear) -> Tensor {
        match self.range {
            None => layer.weight.shallow_clone(),
            Some((start, len)) => layer.weight.narrow(0, start, len),
        }
    }
}

/// DoRA (Liu et al. 2024) with peft's semantics: the adapted rows become
/// m * (W + s B A) / ||W + s B A||, a trained magnitude m per output row times the LoRA-updated
/// direction; in the forward pass, with the norm detached,
/// y = W x + b + (m / n - 1) * (W x) + (m / n) * s B A x.
pub struct Dora {
    /// [rows], peft's `lora_magnitude_vector`.
    pub magnitude: Tensor,
    /// The norm at `merge`, which `unmerge` divides back out (peft caches it the same way).
    merged_norm: Mutex<Option<Tensor>>,
}

impl Adapter for Lora {
    fn delta(&self, x: &Tensor, base: Base, train: bool) -> Option<(Tensor, OutRange)> {
        let dropped = self.dropout > 0.0 && train;
        let xd = if dropped {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        // The scale is applied to the rank-r activations, the smallest tensor on the path.
        let h = xd.linear::<&Tensor>(&self.a, None) * self.scale;
        let lora = h.linear::<&Tensor>(&self.b, None);
        let Some(dora) = &self.dora else {
            return Some((lora, self.range));
        };
        let rows = self.rows(base.layer);
        let norm = self.weight_norm(&rows, &self.delta_weight());
        let mag_scale = &dora.magnitude / norm;
        // W x without the bias: the base output less its bias (with dropout, peft recomputes
        // it from the dropped input).
        let wx = if dropped {
            xd.linear::<&Tensor>(&rows.to_kind(xd.kind()), None)
        } else {
            let y = match self.range {
                None => base.y.shallow_clone(),
                Some((start, len)) => base.y.narrow(-1, start, len),
            };
            match &base.layer.bias {
                None => y,
                Some(b) => {
                    let b = match self.range {
                        None => b.shallow_clone(),
                        Some((start, len)) => b.narrow(0, start, len),
                    };
                    y - b.to_kind(base.y.kind())
                }
            }
        };
        // (m/n - 1) is formed in fp32 (close to 0: bf16 would round it coarsely), then cast
        // to the activations' dtype.
        let k = lora.kind();
        let delta = wx * (&mag_scale - 1.0).to_kind(k) + lora * mag_scale.to_kind(k);
        Some((delta, self.range))
    }

    fn merge(&self, base: &mut Linear) {
        let Some(dora) = &self.dora else {
            return add_weight_on_range(base, &self.delta_weight(), self.range, 1.0);
        };
        let rows = self.rows(base);
        let updated = rows.to_kind(Kind::Float) + self.delta_weight();
        let norm = self.weight_norm(&rows, &self.delta_weight());
        let factor = (&dora.magnitude / &norm).unsqueeze(-1);
        rows.shallow_clone()
            .copy_(&(updated * factor).to_kind(rows.kind()));
        *dora.merged_norm.lock().expect("DoRA norm lock") = Some(norm);
    }

    fn unmerge(&self, base: &mut Linear) {
        let Some(dora) = &self.dora else {
            return add_weight_on_range(base, &self.delta_weight(), self.range, -1.0);
        };
        let Some(norm) = dora.merged_norm.lock().expect("DoRA norm lock").take() else {
            return; // never merged
        };
        let rows = self.rows(base);
        let factor = (&dora.magnitude / norm).unsqueeze(-1);
        let restored = rows.to_kind(Kind::Float) / factor - self.delta_weight();
        rows.shallow_clone().copy_(&restored.to_kind(rows.kind()));
    }

    fn visit(&mut self, f: &mut Visit) {
        f(
            &format!("{}.lora_A.weight", self.name),
            &mut self.a,
            Role::Adapter,
        );
        f(
            &format!("{}.lora_B.weight", self.name),
            &mut self.b,
            Role::Adapter,
        );
        if let Some(d) = &mut self.dora {
            f(
                &format!("{}.lora_magnitude_vector", self.name),
                &mut d.magnitude,
                Role::Adapter,
            );
        }
    }
}
