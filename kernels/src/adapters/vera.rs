//! VeRA (Kopiczko et al. 2024) with peft's semantics: one frozen pair A [r, max_in],
//! B [max_out, r] shared by every adapted layer and sliced per layer; trainable
//! lambda_d [r] (init d_initial) and lambda_b [out] (zeros);
//! y = W0 x + b + lambda_b * B (lambda_d * A drop(x)).
use super::{geometry, push_adapter, sites};
use crate::linear::{add_weight_on_range, Adapter, Base, Linear, OutRange, Role, Visit};
use crate::method::{
    from_serde, targets_label, validate_dropout, validate_targets, Buffers, Method, MethodInfo,
    MethodSpec, Param, ParamKind, PeftReader, Target, MAX_RANK,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

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

fn vera_r() -> i64 {
    256
}
fn d_initial() -> f64 {
    0.1
}

pub static INFO: MethodInfo = MethodInfo {
    name: "vera",
    about: "VeRA: frozen shared random projections, trained scaling vectors",
    params: &[
        Param::RANK,
        Param {
            key: "d_initial",
            kind: ParamKind::Float,
            labelled: false,
        },
        Param {
            key: "projection_prng_key",
            kind: ParamKind::Int {
                min: 0,
                max: i64::MAX,
            },
            labelled: false,
        },
        Param::DROPOUT,
        Param::TARGETS,
    ],
    from_fields: from_serde::<VeraSpec>,
    peft: Some(PeftReader {
        peft_type: "VERA",
        read: read_peft,
    }),
    bench: || {
        use Target::*;
        vec![(
            "vera_qkv_mlp_r256",
            Method::new(VeraSpec {
                r: 256,
                d_initial: 0.1,
                projection_prng_key: 0,
                dropout: 0.0,
                targets: vec![Qkv, Fc1, Fc2],
            }),
        )]
    },
};

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    let targets = c.targets()?;
    if targets.contains(&Target::PatchEmbed) {
        return Err(c.err(
            "`target_modules` selects patch_embed.proj, a Conv2d: peft's VeRA adapts \
             linear layers only (write `attn.proj` rather than `proj`)",
        ));
    }
    Ok(Method::new(VeraSpec {
        r: c.rank(Some(256))?,
        d_initial: c.number("d_initial", Some(0.1))?,
        projection_prng_key: c.integer("projection_prng_key", Some(0), 0..=i64::MAX)?,
        dropout: c.number("vera_dropout", Some(0.0))?,
        targets,
    }))
}

impl MethodSpec for VeraSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!("vera r={} {}", self.r, targets_label(&self.targets))
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("vera", &self.targets)?;
        if self.targets.contains(&Target::PatchEmbed) {
            return Err(
                "vera: `targets` has patch_embed, a Conv2d: VeRA (like peft's) adapts \
                        linear layers only (with peft_suffix_match, `proj` selects \
                        patch_embed.proj too: write `attn.proj` rather than `proj`)"
                    .into(),
            );
        }
        if self.r <= 0 {
            return Err(format!("vera: `r` must be >= 1, got {}", self.r));
        }
        if self.r > MAX_RANK {
            return Err(format!(
                "vera: `r` must be at most {MAX_RANK}, got {}",
                self.r
            ));
        }
        if !self.d_initial.is_finite() {
            return Err(format!(
                "vera: `d_initial` must be finite, got {}",
                self.d_initial
            ));
        }
        validate_dropout("vera", self.dropout)?;
        Ok(())
    }

    fn insert(&self, vit: &mut VisionTransformer, seed: i64) -> crate::Result<Buffers> {
        // peft sizes the shared pair by the largest adapted input and output.
        let geo: Vec<_> = self.targets.iter().map(|&t| geometry(vit, t)).collect();
        let d = vit.cfg.embed_dim;
        let max_in = geo.iter().map(|g| g.0).max().unwrap_or(d);
        let max_out = geo.iter().map(|g| g.1).max().unwrap_or(d);
        let shared = VeraProjections::generate(
            self.r,
            max_in,
            max_out,
            self.projection_prng_key,
            vit.device(),
        )?;
        // Reseeded as when the key was drawn from the default generator, so that later draws
        // (dropout) are those of earlier versions.
        tch::manual_seed(seed.wrapping_add(1));
        for site in sites(vit, &self.targets) {
            let a = Vera::new(
                site.name,
                &shared,
                site.in_features,
                site.out_features,
                self.d_initial,
                self.dropout,
                site.range,
            );
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        // Layers hold views of these two: copying into them (an import) updates every layer.
        Ok(vec![
            ("vera_A".into(), shared.a),
            ("vera_B".into(), shared.b),
        ])
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        if self.targets.iter().any(|t| t.qkv_slice().is_some()) {
            return Err(
                "peft adapts whole modules: VeRA on q/k/v slices of the fused qkv has no peft form"
                    .into(),
            );
        }
        let v = json!({
            "peft_type": "VERA", "bias": "none", "r": self.r, "fan_in_fan_out": false,
            "projection_prng_key": self.projection_prng_key, "save_projection": true,
            "vera_dropout": self.dropout, "d_initial": self.d_initial, "init_weights": true,
        });
        Ok(v.as_object().expect("json object").clone())
    }
}

/// The shared frozen projections.
pub struct VeraProjections {
    pub a: Tensor,
    pub b: Tensor,
}

impl VeraProjections {
    /// peft's `_kaiming_init` for A then B, drawn on the CPU from a generator seeded with
    /// `prng_key` (the same numbers peft draws), then moved to `device`. The generator is
    /// the projections' own: other threads' draws cannot interleave.
    pub fn generate(
        r: i64,
        max_in: i64,
        max_out: i64,
        prng_key: i64,
        device: Device,
    ) -> crate::Result<Self> {
        let bound = |fan_in: i64| 3f64.sqrt() * 2f64.sqrt() / (fan_in as f64).sqrt();
        let key = u64::try_from(prng_key).map_err(|_| {
            crate::Error::Config(format!(
                "vera: `projection_prng_key` must be >= 0, got {prng_key}"
            ))
        })?;
        let mut ab = crate::accel::seeded_uniform(
            key,
            &[(&[r, max_in], bound(max_in)), (&[max_out, r], bound(r))],
        )?
        .into_iter();
        let (a, b) = (ab.next().expect("two draws"), ab.next().expect("two draws"));
        Ok(VeraProjections {
            a: a.to_device(device),
            b: b.to_device(device),
        })
    }
}

pub struct Vera {
    pub name: String,
    /// Views of the shared projections: [r, in] and [out, r].
    a: Tensor,
    b: Tensor,
    pub lambda_d: Tensor,
    pub lambda_b: Tensor,
    pub dropout: f64,
    pub range: OutRange,
}

impl Vera {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        shared: &VeraProjections,
        in_f: i64,
        out_f: i64,
        d_initial: f64,
        dropout: f64,
        range: OutRange,
    ) -> Self {
        let r = shared.a.size()[0];
        let device = shared.a.device();
        Vera {
            name,
            // Slices, not copies: A's rows keep their stride (a valid BLAS leading dimension).
            a: shared.a.narrow(1, 0, in_f),
            b: shared.b.narrow(0, 0, out_f),
            lambda_d: Tensor::full([r], d_initial, (Kind::Float, device)),
            lambda_b: Tensor::zeros([out_f], (Kind::Float, device)),
            dropout,
            range,
        }
    }

    /// diag(lambda_b) B diag(lambda_d) A.
    pub fn delta_weight(&self) -> Tensor {
        (self
            .b
            .matmul(&(self.a.shallow_clone() * self.lambda_d.unsqueeze(-1))))
            * self.lambda_b.unsqueeze(-1)
    }
}

impl Adapter for Vera {
    fn delta(&self, x: &Tensor, _base: Base, train: bool) -> Option<(Tensor, OutRange)> {
        let x = if self.dropout > 0.0 && train {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        // Lambdas are cast to the activations' dtype so a bf16 path stays bf16 (peft lets
        // the fp32 lambda_b promote the whole layer output to fp32); in fp32 nothing changes.
        let h = x.linear::<&Tensor>(&self.a, None);
        let h = &h * self.lambda_d.to_kind(h.kind());
        let delta = h.linear::<&Tensor>(&self.b, None);
        let delta = &delta * self.lambda_b.to_kind(delta.kind());
        Some((delta, self.range))
    }

    fn merge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), self.range, 1.0);
    }

    fn unmerge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), self.range, -1.0);
    }

    fn visit(&mut self, f: &mut Visit) {
        f(
            &format!("{}.vera_lambda_b", self.name),
            &mut self.lambda_b,
            Role::Adapter,
        );
        f(
            &format!("{}.vera_lambda_d", self.name),
            &mut self.lambda_d,
            Role::Adapter,
        );
    }
}
