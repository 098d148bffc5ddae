//! RandLoRA (Albert et al. 2025, "RandLoRA: full-rank parameter-efficient fine-tuning of large
//! models") with peft's semantics (`RandLoraConfig`): frozen random bases shared by every
//! targeted layer, A [r, 1, min] and B [max, nb, r] (sized by the largest targeted layer,
//! nb = ceil(min / r) so the sum is full rank), and per layer trained scales lambda [r, nb]
//! and gamma [nb, min]. With S = lambda[:, :, None] * A * gamma [r, nb, min] flattened to
//! [r nb, min] and B flattened to [max, nb r], the update is y += s * B (S x) (in = min) or
//! s * S^T (B^T x) (in = max), s = alpha / r. lambda starts at zero (the identity), gamma at
//! 1 / its largest dimension. The bases are peft's own draw: kaiming-uniform in bf16 from a
//! generator seeded with `projection_prng_key`, each divided by its standard deviation (or,
//! `sparse`, ternary {-1, 0, 1} with 1/6 each side, `very_sparse` with 1/(2 sqrt(min)));
//! peft's layers then hold them in fp32.
use super::{push_adapter, sites};
use crate::linear::{add_weight_on_range, Adapter, Base, Linear, OutRange, Role, Visit};
use crate::method::{
    from_serde, refuse_patch_embed, refuse_slices, targets_label, validate_alpha, validate_dropout,
    validate_rank, validate_targets, Buffers, Method, MethodInfo, MethodSpec, Param, ParamKind,
    PeftReader, Target,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandloraSpec {
    /// The bases' rank r (nb = ceil(min / r) bases per layer).
    pub r: i64,
    /// s = alpha / r.
    pub alpha: f64,
    pub projection_prng_key: i64,
    /// Ternary bases with 1/6 of the entries at each of -1 and 1.
    pub sparse: bool,
    /// Ternary bases with 1/(2 sqrt(min)) at each of -1 and 1.
    pub very_sparse: bool,
    pub dropout: f64,
    pub targets: Vec<Target>,
}

pub static INFO: MethodInfo = MethodInfo {
    name: "randlora",
    about: "RandLoRA: full-rank updates from shared frozen random bases, trained scales",
    params: &[
        Param::RANK,
        Param::ALPHA,
        Param {
            key: "projection_prng_key",
            kind: ParamKind::Int {
                min: 0,
                max: i64::MAX,
            },
            labelled: false,
        },
        Param {
            key: "sparse",
            kind: ParamKind::Bool,
            labelled: true,
        },
        Param {
            key: "very_sparse",
            kind: ParamKind::Bool,
            labelled: true,
        },
        Param::DROPOUT,
        Param::TARGETS,
    ],
    from_fields,
    peft: Some(PeftReader {
        peft_type: "RANDLORA",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "randlora_qkv_r32",
            Method::new(RandloraSpec {
                r: 32,
                alpha: 640.0,
                projection_prng_key: 0,
                sparse: false,
                very_sparse: false,
                dropout: 0.0,
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

/// peft's defaults: r 32, alpha 640, key 0, dense bases.
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    f.entry("r").or_insert(json!(32));
    f.entry("alpha").or_insert(json!(640.0));
    f.entry("projection_prng_key").or_insert(json!(0));
    f.entry("sparse").or_insert(json!(false));
    f.entry("very_sparse").or_insert(json!(false));
    f.entry("dropout").or_insert(json!(0.0));
    from_serde::<RandloraSpec>(f)
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    Ok(Method::new(RandloraSpec {
        r: c.rank(Some(32))?,
        alpha: c.number("randlora_alpha", Some(640.0))?,
        projection_prng_key: c.integer("projection_prng_key", Some(0), 0..=i64::MAX)?,
        sparse: c.flag("sparse"),
        very_sparse: c.flag("very_sparse"),
        dropout: c.number("randlora_dropout", Some(0.0))?,
        targets: c.targets()?,
    }))
}

/// peft's `_kaiming_init` bound (a = sqrt 5) for a fan-in.
fn kaiming_bound(fan_in: i64) -> f64 {
    let a = 5f64.sqrt();
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    3f64.sqrt() * (gain / (fan_in as f64).sqrt())
}

impl RandloraSpec {
    /// The shared bases (A [r, 1, min], B [max, nb, r]) for the largest (out, in) targeted.
    fn bases(&self, out_max: i64, in_max: i64) -> crate::Result<(Tensor, Tensor)> {
        let (max_d, min_d) = (out_max.max(in_max), out_max.min(in_max));
        let r = self.r;
        let nb = (min_d + r - 1) / r;
        let seed = self.projection_prng_key as u64;
        if self.sparse || self.very_sparse {
            let sparsity = if self.very_sparse {
                (min_d as f64).sqrt()
            } else {
                3.0
            };
            let mut u = crate::accel::seeded_rand(seed, &[&[r, 1, min_d], &[max_d, nb, r]])?;
            let (ub, ua) = (u.pop().expect("two"), u.pop().expect("two"));
            let ternary = |x: &Tensor| {
                let lo = x.lt(1.0 / (2.0 * sparsity)).to_kind(Kind::Float);
                let hi = x.gt(1.0 - 1.0 / (2.0 * sparsity)).to_kind(Kind::Float);
                let t = hi - lo;
                &t / t.std(true)
            };
            return Ok((ternary(&ua), ternary(&ub)));
        }
        let mut shapes: Vec<(&[i64], f64)> = Vec::new();
        let a_shape = [r, 1, min_d];
        let b_shape = [max_d, 1, r];
        shapes.push((&a_shape, kaiming_bound(min_d)));
        for _ in 0..nb {
            shapes.push((&b_shape, kaiming_bound(r)));
        }
        let mut ts = crate::accel::seeded_uniform_of(seed, Kind::BFloat16, &shapes)?;
        let a = ts.remove(0);
        let b = Tensor::cat(&ts, 1);
        // Normalised in bf16, then held in fp32 as peft's layers hold them.
        let norm = |t: &Tensor| (t / t.std(true)).to_kind(Kind::Float);
        Ok((norm(&a), norm(&b)))
    }
}

impl MethodSpec for RandloraSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!(
            "randlora r={} a={}{} {}",
            self.r,
            self.alpha,
            if self.very_sparse {
                " very_sparse"
            } else if self.sparse {
                " sparse"
            } else {
                ""
            },
            targets_label(&self.targets)
        )
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("randlora", &self.targets)?;
        refuse_patch_embed("randlora", &self.targets)?;
        refuse_slices(
            "randlora",
            &self.targets,
            "peft's RandLoRA adapts whole layers",
        )?;
        validate_rank("randlora", self.r)?;
        validate_alpha("randlora", self.alpha)?;
        if self.projection_prng_key < 0 {
            return Err(format!(
                "randlora: `projection_prng_key` must be >= 0, got {}",
                self.projection_prng_key
            ));
        }
        validate_dropout("randlora", self.dropout)?;
        Ok(())
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let device = vit.device();
        let all = sites(vit, &self.targets);
        let out_max = all.iter().map(|s| s.out_features).max().unwrap_or(1);
        let in_max = all.iter().map(|s| s.in_features).max().unwrap_or(1);
        let (a, b) = self.bases(out_max, in_max)?;
        let (a, b) = (a.to_device(device), b.to_device(device));
        for site in all {
            let (in_f, out_f) = (site.in_features, site.out_features);
            let (max_l, min_l) = (in_f.max(out_f), in_f.min(out_f));
            let nb = (min_l + self.r - 1) / self.r;
            let opts = (Kind::Float, device);
            let layer = Randlora {
                name: site.name.clone(),
                lambda: Tensor::zeros([self.r, nb], opts),
                gamma: Tensor::full([nb, min_l], 1.0 / nb.max(min_l) as f64, opts),
                a: a.narrow(2, 0, min_l),
                b: b.narrow(0, 0, max_l).narrow(1, 0, nb),
                in_is_min: min_l == in_f,
                scale: self.alpha / self.r as f64,
                dropout: self.dropout,
            };
            push_adapter(vit, site.block, site.target, Box::new(layer));
        }
        // Layers hold views of these two: copying into them (an import) updates every layer.
        Ok(vec![("randlora_A".into(), a), ("randlora_B".into(), b)])
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        let v = json!({
            "peft_type": "RANDLORA", "r": self.r, "randlora_alpha": self.alpha,
            "projection_prng_key": self.projection_prng_key, "save_projection": true,
            "sparse": self.sparse, "very_sparse": self.very_sparse,
            "randlora_dropout": self.dropout, "init_weights": true, "bias": "none",
            "fan_in_fan_out": false,
        });
        Ok(v.as_object().expect("json object").clone())
    }
}

pub struct Randlora {
    pub name: String,
    /// [r, nb]
    pub lambda: Tensor,
    /// [nb, min]
    pub gamma: Tensor,
    /// Views of the shared bases: A [r, 1, min], B [max, nb, r].
    a: Tensor,
    b: Tensor,
    in_is_min: bool,
    scale: f64,
    dropout: f64,
}

impl Randlora {
    /// (first, second) as peft's `get_scaled_bases`: y += s * second(first(x)), fp32.
    fn scaled_bases(&self) -> (Tensor, Tensor) {
        let a = self.a.to_kind(Kind::Float);
        let b = self.b.to_kind(Kind::Float);
        let scaled = (self.lambda.unsqueeze(2) * a * self.gamma.unsqueeze(0)).flatten(0, 1);
        let b = b.flatten(1, -1);
        if self.in_is_min {
            (scaled, b)
        } else {
            (b.transpose(0, 1), scaled.transpose(0, 1))
        }
    }

    fn delta_weight(&self) -> Tensor {
        let (first, second) = self.scaled_bases();
        second.matmul(&first) * self.scale
    }
}

impl Adapter for Randlora {
    fn delta(&self, x: &Tensor, _base: Base, train: bool) -> Option<(Tensor, OutRange)> {
        let (first, second) = self.scaled_bases();
        let x = if self.dropout > 0.0 && train {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        let h = x.linear::<&Tensor>(&first.to_kind(x.kind()), None);
        Some((
            h.linear::<&Tensor>(&second.to_kind(x.kind()), None) * self.scale,
            None,
        ))
    }

    fn merge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), None, 1.0);
    }

    fn unmerge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), None, -1.0);
    }

    fn visit(&mut self, f: &mut Visit) {
        f(
            &format!("{}.randlora_lambda", self.name),
            &mut self.lambda,
            Role::Adapter,
        );
        f(
            &format!("{}.randlora_gamma", self.name),
            &mut self.gamma,
            Role::Adapter,
        );
    }
}
