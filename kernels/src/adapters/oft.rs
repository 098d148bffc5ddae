//! OFT (Qiu et al. 2023, "Controlling text-to-image diffusion by orthogonal finetuning"; the
//! block-diagonal form of Liu et al. 2024) with peft's semantics (`OFTConfig`, peft >= 0.18):
//! each targeted layer's input is split into r blocks of `block_size` features and block i is
//! rotated by R_i, y = W (x R) + b with R = diag(R_1, ..., R_r). Each R_i is the Cayley
//! transform of a skew-symmetric Q_i built from its b(b-1)/2 trainable upper-triangle entries
//! (row-major, as `torch.triu_indices`): exactly R = (I - Q)(I + Q)^-1, or by default peft's
//! truncated Neumann series R = I + 2Q + 2Q^2 + ... + 2Q^(n-2) + Q^(n-1) (n terms, not exactly
//! orthogonal). The entries start at zero, so R = I. `block_share` uses one R_1 for every
//! block. Merging multiplies W by R^T (the inverse undoes it).
//!
//! Not supported: peft's `coft` (it rewrites the weights inside the forward pass),
//! `module_dropout`, and the patch embedding (peft's Conv2d OFT rotates overlapping
//! stride-1 patches in its forward, which its own merge does not reproduce).
use super::{push_adapter, sites, sites_of};
use crate::config::VitConfig;
use crate::linear::{Adapter, Linear, Role, Visit};
use crate::method::{
    from_serde, refuse_slices, targets_label, validate_targets, Buffers, Method, MethodInfo,
    MethodSpec, Param, ParamKind, PeftReader, Target,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use crate::Error;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OftSpec {
    /// Features per rotated block (0: from `r`).
    pub block_size: i64,
    /// Blocks per layer (0: from `block_size`); exactly one of the two is set.
    pub r: i64,
    /// Neumann-series Cayley transform (peft's default) instead of the exact one.
    pub cayley_neumann: bool,
    /// Terms of the Neumann series.
    pub neumann_terms: i64,
    /// One rotation shared by every block of a layer.
    pub block_share: bool,
    pub targets: Vec<Target>,
}

/// The largest block size (a block has b(b-1)/2 parameters and a b x b solve per step).
pub const MAX_BLOCK: i64 = 4096;

pub static INFO: MethodInfo = MethodInfo {
    name: "oft",
    about: "OFT: block-diagonal orthogonal rotation (Cayley) of each targeted layer's input",
    params: &[
        Param {
            key: "block_size",
            kind: ParamKind::Int {
                min: 0,
                max: MAX_BLOCK,
            },
            labelled: true,
        },
        Param {
            key: "r",
            kind: ParamKind::Int {
                min: 0,
                max: MAX_BLOCK,
            },
            labelled: true,
        },
        Param {
            key: "cayley_neumann",
            kind: ParamKind::Bool,
            labelled: false,
        },
        Param {
            key: "neumann_terms",
            kind: ParamKind::Int { min: 1, max: 64 },
            labelled: false,
        },
        Param {
            key: "block_share",
            kind: ParamKind::Bool,
            labelled: false,
        },
        Param::TARGETS,
    ],
    from_fields,
    peft: Some(PeftReader {
        peft_type: "OFT",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "oft_qkv_b16",
            Method::new(OftSpec {
                block_size: 16,
                r: 0,
                cayley_neumann: true,
                neumann_terms: 5,
                block_share: false,
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

/// peft's defaults: block_size 32 (unless r is given), the 5-term Neumann series.
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    let r_given = f.get("r").is_some_and(|v| v.as_i64() != Some(0));
    f.entry("block_size")
        .or_insert(json!(if r_given { 0 } else { 32 }));
    f.entry("r").or_insert(json!(0));
    f.entry("cayley_neumann").or_insert(json!(true));
    f.entry("neumann_terms").or_insert(json!(5));
    f.entry("block_share").or_insert(json!(false));
    from_serde::<OftSpec>(f)
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    if c.flag("coft") {
        return Err(c.err("`coft` is true: constrained OFT is not supported"));
    }
    if c.number("module_dropout", Some(0.0))? != 0.0 {
        return Err(c.err("`module_dropout` is not 0: OFT's block dropout is not supported"));
    }
    if !c.cfg.get("oft_block_size").is_some_and(|v| v.is_number()) {
        return Err(c.err(
            "no `oft_block_size`: an OFT adapter from peft < 0.14, whose weights peft itself \
             no longer reads",
        ));
    }
    Ok(Method::new(OftSpec {
        block_size: c.integer("oft_block_size", Some(0), 0..=MAX_BLOCK)?,
        r: c.integer("r", Some(0), 0..=MAX_BLOCK)?,
        cayley_neumann: c.cfg["use_cayley_neumann"].as_bool().unwrap_or(true),
        neumann_terms: c.integer("num_cayley_neumann_terms", Some(5), 1..=64)?,
        block_share: c.flag("block_share"),
        targets: c.targets()?,
    }))
}

impl OftSpec {
    /// (blocks, block size) on a layer with `in_f` inputs, or why the sizes do not fit it.
    fn blocks(&self, in_f: i64, layer: &str) -> Result<(i64, i64), String> {
        let (key, n) = if self.r == 0 {
            ("block_size", self.block_size)
        } else {
            ("r", self.r)
        };
        if n > in_f || in_f % n != 0 {
            return Err(format!(
                "oft: `{key}` = {n} does not divide the {in_f} inputs of {layer} (choose a \
                 divisor of every targeted layer's input width)"
            ));
        }
        Ok(if self.r == 0 {
            (in_f / n, n)
        } else {
            (n, in_f / n)
        })
    }
}

impl MethodSpec for OftSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        let size = if self.r == 0 {
            format!("b={}", self.block_size)
        } else {
            format!("r={}", self.r)
        };
        format!(
            "oft {size}{}{} {}",
            if self.cayley_neumann {
                String::new()
            } else {
                " exact".into()
            },
            if self.block_share { " shared" } else { "" },
            targets_label(&self.targets)
        )
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("oft", &self.targets)?;
        refuse_slices(
            "oft",
            &self.targets,
            "OFT rotates a layer's input, which the three slices of qkv share",
        )?;
        if self.targets.contains(&Target::PatchEmbed) {
            return Err(
                "oft: `targets` has patch_embed: peft's OFT on a convolution rotates \
                 overlapping patches in its forward pass, which its merge does not reproduce \
                 (BOFT adapts the patch embedding)"
                    .into(),
            );
        }
        match (self.block_size, self.r) {
            (0, 0) => return Err("oft: set one of `block_size` and `r`".into()),
            (b, r) if b != 0 && r != 0 => {
                return Err(format!(
                    "oft: `block_size` = {b} and `r` = {r} are both set: set one (the other \
                     follows from each layer's width)"
                ))
            }
            (1, _) => {
                return Err("oft: `block_size` = 1 has no rotation to train (use >= 2)".into())
            }
            _ => {}
        }
        Ok(())
    }

    fn fits(&self, cfg: &VitConfig) -> Result<(), String> {
        for site in sites_of(cfg, &self.targets) {
            self.blocks(site.in_features, &site.name)?;
        }
        Ok(())
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let device = vit.device();
        for site in sites(vit, &self.targets) {
            let (r, b) = self
                .blocks(site.in_features, &site.name)
                .map_err(Error::Config)?;
            let stored = if self.block_share { 1 } else { r };
            let a = Oft {
                name: site.name,
                weight: Tensor::zeros([stored, b * (b - 1) / 2], (Kind::Float, device)),
                upper: upper_triangle(b, device),
                blocks: r,
                block_size: b,
                neumann_terms: self.cayley_neumann.then_some(self.neumann_terms),
            };
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        let v = json!({
            "peft_type": "OFT", "r": self.r, "oft_block_size": self.block_size,
            "use_cayley_neumann": self.cayley_neumann,
            "num_cayley_neumann_terms": self.neumann_terms, "block_share": self.block_share,
            "coft": false, "eps": 6e-5, "module_dropout": 0.0, "init_weights": true,
            "bias": "none", "fan_in_fan_out": false,
            // The Neumann series changed in peft 0.18; peft warns on configs without a version.
            "peft_version": "0.21.0",
        });
        Ok(v.as_object().expect("json object").clone())
    }
}

/// Flat indices (row * b + col) of a b x b matrix's strict upper triangle, row-major.
pub(crate) fn upper_triangle(b: i64, device: Device) -> Tensor {
    let rc = Tensor::triu_indices(b, b, 1, (Kind::Int64, device));
    rc.get(0) * b + rc.get(1)
}

pub struct Oft {
    pub name: String,
    /// [r or 1, b(b-1)/2]: the upper triangles of the skew-symmetric Q_i.
    pub weight: Tensor,
    upper: Tensor,
    blocks: i64,
    block_size: i64,
    /// `Some(n)`: the n-term Neumann series; `None`: the exact Cayley transform.
    neumann_terms: Option<i64>,
}

impl Oft {
    /// The rotations [r, b, b] (fp32), as peft's `OFTRotationModule._cayley_batch`.
    pub fn rotations(&self) -> Tensor {
        let b = self.block_size;
        let n = self.weight.size()[0];
        let opts = (Kind::Float, self.weight.device());
        let q = Tensor::zeros([n, b * b], opts)
            .index_copy(1, &self.upper, &self.weight)
            .view([n, b, b]);
        let q = &q - q.transpose(-2, -1);
        let eye = Tensor::eye(b, opts).expand([n, b, b], false);
        let r = match self.neumann_terms {
            None => Tensor::linalg_solve(&(&eye + &q), &(&eye - &q), false),
            Some(terms) => {
                // peft's loop, term for term (the sum's order is the rounding's).
                let mut r = eye.copy();
                if terms > 1 {
                    r += &q * 2.0;
                    if terms > 2 {
                        let q2 = q.bmm(&q);
                        r += &q2 * 2.0;
                        let mut power = q2;
                        for _ in 3..terms - 1 {
                            power = power.bmm(&q);
                            r += &power * 2.0;
                        }
                        power = power.bmm(&q);
                        r += power;
                    }
                }
                r
            }
        };
        if n == 1 && self.blocks > 1 {
            r.repeat([self.blocks, 1, 1])
        } else {
            r
        }
    }

    /// The whole rotation diag(R_1, ..., R_r) [in, in].
    fn full(&self) -> Tensor {
        Tensor::block_diag(&self.rotations().unbind(0))
    }
}

impl Adapter for Oft {
    fn changes_input(&self) -> bool {
        true
    }

    /// Block i of x times R_i.
    fn on_input(&self, x: Tensor) -> Tensor {
        let shape = x.size();
        let lead: Vec<i64> = shape[..shape.len() - 1].to_vec();
        let mut split = lead.clone();
        split.extend([self.blocks, self.block_size]);
        let r = self.rotations().to_kind(x.kind());
        Tensor::einsum("...rk,rkc->...rc", &[x.reshape(&split), r], None::<&[i64]>).reshape(&shape)
    }

    fn merge(&self, base: &mut Linear) {
        let w = base
            .weight
            .to_kind(Kind::Float)
            .matmul(&self.full().transpose(0, 1));
        base.weight.copy_(&w.to_kind(base.weight.kind()));
    }

    /// W' R^-T, solved in fp64: the Neumann series' R is not exactly orthogonal.
    fn unmerge(&self, base: &mut Linear) {
        let rt = self.full().transpose(0, 1).to_kind(Kind::Double);
        let w = Tensor::linalg_solve(&rt, &base.weight.to_kind(Kind::Double), false);
        base.weight.copy_(&w.to_kind(base.weight.kind()));
    }

    fn visit(&mut self, f: &mut Visit) {
        f(
            &format!("{}.oft_R.weight", self.name),
            &mut self.weight,
            Role::Adapter,
        );
    }
}
