//! VB-LoRA (Li et al. 2024, "VB-LoRA: extreme parameter efficient fine-tuning with vector
//! banks") with peft's semantics (`VBLoRAConfig`): every targeted layer's LoRA factors are
//! assembled from one vector bank [N, L] shared by all layers and trained with them. A [r, in]
//! is r x in/L sub-vectors, B [out, r] out/L x r, each a softmax-weighted sum of the bank
//! vectors with the top-k of its N trained logits; y = W x + b + B A drop(x). The bank starts
//! uniform(-bound, bound), the logits N(0, std), so a fresh model is not the backbone (peft
//! likewise). In peft's files the bank is `base_model.vblora_vector_bank`.
use super::{divides_widths, push_adapter, sites, sites_of, Site};
use crate::config::VitConfig;
use crate::linear::{Adapter, Base, Linear, OutRange, Role, Visit};
use crate::method::{
    from_serde, refuse_patch_embed, refuse_slices, targets_label, validate_dropout, validate_rank,
    validate_targets, Buffers, Method, MethodInfo, MethodSpec, Param, ParamKind, PeftReader,
    Target,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use crate::Error;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VbloraSpec {
    pub r: i64,
    /// N, the bank's vectors.
    pub num_vectors: i64,
    /// L, their length (divides every targeted layer's widths).
    pub vector_length: i64,
    /// Bank vectors mixed per sub-vector.
    pub topk: i64,
    /// The bank starts uniform(-bound, bound).
    pub init_vector_bank_bound: f64,
    /// The logits start N(0, std).
    pub init_logits_std: f64,
    pub dropout: f64,
    pub targets: Vec<Target>,
}

/// The bank's name among the model's trainable tensors (and peft's, under `base_model.`).
const BANK: &str = "vblora_vector_bank";
/// The largest bank dimension.
pub const MAX_BANK: i64 = 1 << 16;

pub static INFO: MethodInfo = MethodInfo {
    name: "vblora",
    about: "VB-LoRA: LoRA factors mixed from one shared, trained vector bank (top-k)",
    params: &[
        Param::RANK,
        Param {
            key: "num_vectors",
            kind: ParamKind::Int {
                min: 1,
                max: MAX_BANK,
            },
            labelled: true,
        },
        Param {
            key: "vector_length",
            kind: ParamKind::Int {
                min: 1,
                max: MAX_BANK,
            },
            labelled: true,
        },
        Param {
            key: "topk",
            kind: ParamKind::Int {
                min: 1,
                max: MAX_BANK,
            },
            labelled: true,
        },
        Param {
            key: "init_vector_bank_bound",
            kind: ParamKind::Float,
            labelled: false,
        },
        Param {
            key: "init_logits_std",
            kind: ParamKind::Float,
            labelled: false,
        },
        Param::DROPOUT,
        Param::TARGETS,
    ],
    from_fields,
    peft: Some(PeftReader {
        peft_type: "VBLORA",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "vblora_qkv_r4_l48",
            Method::new(VbloraSpec {
                r: 4,
                num_vectors: 256,
                vector_length: 48,
                topk: 2,
                init_vector_bank_bound: 0.02,
                init_logits_std: 0.1,
                dropout: 0.0,
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

/// peft's defaults: r 4, 256 vectors of 256, top-2, bound 0.02, std 0.1.
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    f.entry("r").or_insert(json!(4));
    f.entry("num_vectors").or_insert(json!(256));
    f.entry("vector_length").or_insert(json!(256));
    f.entry("topk").or_insert(json!(2));
    f.entry("init_vector_bank_bound").or_insert(json!(0.02));
    f.entry("init_logits_std").or_insert(json!(0.1));
    f.entry("dropout").or_insert(json!(0.0));
    from_serde::<VbloraSpec>(f)
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    if c.flag("save_only_topk_weights") {
        return Err(c.err(
            "`save_only_topk_weights` is true: the file holds only the top-k weights (peft \
             can run but not train it); save the adapter with its full logits",
        ));
    }
    Ok(Method::new(VbloraSpec {
        r: c.rank(Some(4))?,
        num_vectors: c.integer("num_vectors", Some(256), 1..=MAX_BANK)?,
        vector_length: c.integer("vector_length", Some(256), 1..=MAX_BANK)?,
        topk: c.integer("topk", Some(2), 1..=MAX_BANK)?,
        init_vector_bank_bound: c.number("init_vector_bank_bound", Some(0.02))?,
        init_logits_std: c.number("init_logits_std", Some(0.1))?,
        dropout: c.number("vblora_dropout", Some(0.0))?,
        targets: c.targets()?,
    }))
}

impl VbloraSpec {
    fn fits_site(&self, site: &Site) -> Result<(), String> {
        divides_widths("vblora", "vector_length", self.vector_length, site)
    }
}

impl MethodSpec for VbloraSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!(
            "vblora r={} n={} l={} k={} {}",
            self.r,
            self.num_vectors,
            self.vector_length,
            self.topk,
            targets_label(&self.targets)
        )
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("vblora", &self.targets)?;
        refuse_patch_embed("vblora", &self.targets)?;
        refuse_slices(
            "vblora",
            &self.targets,
            "peft's VB-LoRA adapts whole layers",
        )?;
        validate_rank("vblora", self.r)?;
        if self.topk > self.num_vectors {
            return Err(format!(
                "vblora: `topk` = {} exceeds `num_vectors` = {}",
                self.topk, self.num_vectors
            ));
        }
        for (key, v) in [
            ("init_vector_bank_bound", self.init_vector_bank_bound),
            ("init_logits_std", self.init_logits_std),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("vblora: `{key}` must be >= 0, got {v}"));
            }
        }
        validate_dropout("vblora", self.dropout)?;
        Ok(())
    }

    fn fresh_is_identity(&self) -> bool {
        false
    }

    fn fits(&self, cfg: &VitConfig) -> Result<(), String> {
        sites_of(cfg, &self.targets)
            .iter()
            .try_for_each(|s| self.fits_site(s))
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let opts = (Kind::Float, vit.device());
        let (n, l) = (self.num_vectors, self.vector_length);
        let bound = self.init_vector_bank_bound;
        let bank = Tensor::empty([n, l], opts).uniform_(-bound, bound);
        for (i, site) in sites(vit, &self.targets).into_iter().enumerate() {
            self.fits_site(&site).map_err(Error::Config)?;
            let (in_f, out_f) = (site.in_features, site.out_features);
            let std = self.init_logits_std;
            let a = Vblora {
                name: site.name.clone(),
                logits_a: Tensor::randn([self.r, in_f / l, n], opts) * std,
                logits_b: Tensor::randn([out_f / l, self.r, n], opts) * std,
                bank: bank.shallow_clone(),
                owns_bank: i == 0,
                topk: self.topk,
                dropout: self.dropout,
            };
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        let v = json!({
            "peft_type": "VBLORA", "r": self.r, "num_vectors": self.num_vectors,
            "vector_length": self.vector_length, "topk": self.topk,
            "init_vector_bank_bound": self.init_vector_bank_bound,
            "init_logits_std": self.init_logits_std, "vblora_dropout": self.dropout,
            "save_only_topk_weights": false, "bias": "none", "fan_in_fan_out": false,
        });
        Ok(v.as_object().expect("json object").clone())
    }

    /// The bank is peft's `base_model.vblora_vector_bank`, the layers' logits as usual.
    fn peft_tensors(&self, trainable: &[(String, Tensor)], _cfg: &VitConfig) -> Buffers {
        trainable
            .iter()
            .map(|(n, t)| {
                let key = if n == BANK {
                    format!("base_model.{BANK}")
                } else {
                    format!("{}{n}", crate::peft_format::PREFIX)
                };
                (key, t.detach())
            })
            .collect()
    }
}

pub struct Vblora {
    pub name: String,
    /// [r, in/L, N]
    pub logits_a: Tensor,
    /// [out/L, r, N]
    pub logits_b: Tensor,
    /// [N, L], shared by every layer (the same tensor).
    bank: Tensor,
    /// Whether this layer names the bank among the trainable tensors (the first one does).
    owns_bank: bool,
    topk: i64,
    dropout: f64,
}

impl Vblora {
    /// peft's `_get_low_rank_matrix`: [..., N] logits -> [..., L] top-k mixtures.
    fn mix(&self, logits: &Tensor) -> Tensor {
        let (values, indices) = logits.topk(self.topk, -1, true, true);
        let weights = values.softmax(-1, Kind::Float);
        let mut shape = indices.size();
        let picked = self.bank.index_select(0, &indices.flatten(0, -1)).view({
            shape.push(self.bank.size()[1]);
            shape.as_slice()
        });
        (weights.unsqueeze(-1) * picked).sum_dim_intlist(-2, false, Kind::Float)
    }

    /// (A [r, in], B [out, r]), fp32.
    fn factors(&self) -> (Tensor, Tensor) {
        let r = self.logits_a.size()[0];
        let a = self.mix(&self.logits_a).reshape([r, -1]);
        let b = self
            .mix(&self.logits_b)
            .transpose(1, 2)
            .reshape([-1, self.logits_b.size()[1]]);
        (a, b)
    }

    fn delta_weight(&self) -> Tensor {
        let (a, b) = self.factors();
        b.matmul(&a)
    }
}

impl Adapter for Vblora {
    fn delta(&self, x: &Tensor, _base: Base, train: bool) -> Option<(Tensor, OutRange)> {
        let (a, b) = self.factors();
        let x = if self.dropout > 0.0 && train {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        let h = x.linear::<&Tensor>(&a.to_kind(x.kind()), None);
        Some((h.linear::<&Tensor>(&b.to_kind(x.kind()), None), None))
    }

    fn merge(&self, base: &mut Linear) {
        let w = base.weight.to_kind(Kind::Float) + self.delta_weight();
        base.weight.copy_(&w.to_kind(base.weight.kind()));
    }

    fn unmerge(&self, base: &mut Linear) {
        let w = base.weight.to_kind(Kind::Float) - self.delta_weight();
        base.weight.copy_(&w.to_kind(base.weight.kind()));
    }

    fn visit(&mut self, f: &mut Visit) {
        if self.owns_bank {
            f(BANK, &mut self.bank, Role::Adapter);
        }
        f(
            &format!("{}.vblora_logits_A", self.name),
            &mut self.logits_a,
            Role::Adapter,
        );
        f(
            &format!("{}.vblora_logits_B", self.name),
            &mut self.logits_b,
            Role::Adapter,
        );
    }
}
