//! BOFT (Liu et al. 2024, "Parameter-efficient orthogonal finetuning via butterfly
//! factorization") with peft's semantics (`BOFTConfig`): the layer's input is rotated by
//! M = M_m ... M_1, each M_i = P_i B_i P_i^T a block-diagonal rotation B_i (D blocks of H) seen
//! through the i-th butterfly permutation P_i (P_1 = I; m = `butterfly_factor`, 1 is plain
//! block-diagonal OFT), and the output rows are scaled: y = s * (W (x M) + b - b) + b, i.e.
//! W' = diag(s) W M^T, bias unchanged. Each block is the exact Cayley transform
//! (I - S)(I + S)^-1 of S = (R - R^T) / 2, R a trainable H x H matrix starting at zero; s starts
//! at one. On the patch embedding the rotation acts on flattened patches (channel, row,
//! column), as peft rotates the conv's flattened filters, and s is stored as `[1, out]`.
//!
//! peft runs m > 1 only with its CUDA block-diagonal extension; without it (any CPU) peft
//! quietly trains m = 1. The parity fixture gives peft that extension's op in PyTorch.
use super::{push_adapter, sites, sites_of};
use crate::config::VitConfig;
use crate::linear::{Adapter, Base, Linear, OutRange, Role, Visit};
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
pub struct BoftSpec {
    /// Features per block H (0: from `block_num`).
    pub block_size: i64,
    /// Blocks per factor D (0: from `block_size`); exactly one of the two is set.
    pub block_num: i64,
    /// Butterfly factors m (1: block-diagonal only).
    pub butterfly_factor: i64,
    pub targets: Vec<Target>,
}

/// The largest block size or count.
pub const MAX_BLOCK: i64 = 4096;

pub static INFO: MethodInfo = MethodInfo {
    name: "boft",
    about: "BOFT: butterfly-factored orthogonal rotation of the input, scaled outputs",
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
            key: "block_num",
            kind: ParamKind::Int {
                min: 0,
                max: MAX_BLOCK,
            },
            labelled: true,
        },
        Param {
            key: "butterfly_factor",
            kind: ParamKind::Int { min: 1, max: 16 },
            labelled: true,
        },
        Param::TARGETS,
    ],
    from_fields,
    peft: Some(PeftReader {
        peft_type: "BOFT",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "boft_qkv_b8",
            Method::new(BoftSpec {
                block_size: 8,
                block_num: 0,
                butterfly_factor: 1,
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

/// peft's defaults: block_size 4 (unless block_num is given), one butterfly factor.
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    let num_given = f.get("block_num").is_some_and(|v| v.as_i64() != Some(0));
    f.entry("block_size")
        .or_insert(json!(if num_given { 0 } else { 4 }));
    f.entry("block_num").or_insert(json!(0));
    f.entry("butterfly_factor").or_insert(json!(1));
    from_serde::<BoftSpec>(f)
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    if c.number("boft_dropout", Some(0.0))? != 0.0 {
        return Err(c.err("`boft_dropout` is not 0: BOFT's block dropout is not supported"));
    }
    Ok(Method::new(BoftSpec {
        block_size: c.integer("boft_block_size", Some(4), 0..=MAX_BLOCK)?,
        block_num: c.integer("boft_block_num", Some(0), 0..=MAX_BLOCK)?,
        butterfly_factor: c.integer("boft_n_butterfly_factor", Some(1), 1..=16)?,
        targets: c.targets()?,
    }))
}

impl BoftSpec {
    /// (D, H) on a layer with `n` inputs, with peft's checks.
    fn blocks(&self, n: i64, layer: &str) -> Result<(i64, i64), String> {
        let extra = self.butterfly_factor - 1;
        let bad = |why: String| format!("boft on {layer} ({n} inputs): {why}");
        let (d, h) = if self.block_size == 0 {
            let d = self.block_num;
            if n % d != 0 {
                return Err(bad(format!("`block_num` = {d} does not divide {n}")));
            }
            if extra > 0 && (1i64 << extra > d || d % (1i64 << extra) != 0) {
                return Err(bad(format!(
                    "`block_num` = {d} is not a multiple of 2^(butterfly_factor - 1) = {}",
                    1i64 << extra
                )));
            }
            (d, n / d)
        } else {
            let h = self.block_size;
            if n % h != 0 {
                return Err(bad(format!("`block_size` = {h} does not divide {n}")));
            }
            if extra > 0 && n % (h << extra) != 0 {
                return Err(bad(format!(
                    "`block_size` x 2^(butterfly_factor - 1) = {} does not divide {n}",
                    h << extra
                )));
            }
            (n / h, h)
        };
        if extra > 0 && (d % 2 != 0 || h % 2 != 0) {
            return Err(bad(format!(
                "with butterfly factors the block count ({d}) and size ({h}) must be even"
            )));
        }
        Ok((d, h))
    }
}

impl MethodSpec for BoftSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        let size = if self.block_size == 0 {
            format!("d={}", self.block_num)
        } else {
            format!("b={}", self.block_size)
        };
        format!(
            "boft {size} m={} {}",
            self.butterfly_factor,
            targets_label(&self.targets)
        )
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("boft", &self.targets)?;
        refuse_slices(
            "boft",
            &self.targets,
            "BOFT rotates a layer's input, which the three slices of qkv share",
        )?;
        match (self.block_size, self.block_num) {
            (0, 0) => Err("boft: set one of `block_size` and `block_num`".into()),
            (b, d) if b != 0 && d != 0 => Err(format!(
                "boft: `block_size` = {b} and `block_num` = {d} are both set: set one (the other \
                 follows from each layer's width)"
            )),
            (1, _) => Err("boft: `block_size` = 1 has no rotation to train (use >= 2)".into()),
            _ => Ok(()),
        }
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
            let (d, h) = self
                .blocks(site.in_features, &site.name)
                .map_err(Error::Config)?;
            let m = self.butterfly_factor;
            let perms = (0..m)
                .map(|i| butterfly_perm(site.in_features, d >> i, h / 2, m - 1, device))
                .collect();
            // peft's Conv2d keeps s as [1, out], its Linear as [out, 1].
            let s_shape = if site.target == Target::PatchEmbed {
                [1, site.out_features]
            } else {
                [site.out_features, 1]
            };
            let a = Boft {
                name: site.name,
                r: Tensor::zeros([m, d, h, h], (Kind::Float, device)),
                s: Tensor::ones(s_shape, (Kind::Float, device)),
                perms,
            };
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        let v = json!({
            "peft_type": "BOFT", "boft_block_size": self.block_size,
            "boft_block_num": self.block_num, "boft_n_butterfly_factor": self.butterfly_factor,
            "boft_dropout": 0.0, "init_weights": true, "bias": "none", "fan_in_fan_out": false,
        });
        Ok(v.as_object().expect("json object").clone())
    }
}

/// peft's `block_butterfly_perm(n, b, r, n_butterfly_factor)`: the index order of the i-th
/// butterfly permutation (row k of P_i picks input `idx[k]`).
fn butterfly_perm(n: i64, b: i64, r: i64, extra_factors: i64, device: Device) -> Tensor {
    let mut idx: Vec<i64> = (0..n).collect();
    if extra_factors > 0 {
        let block = n / b;
        // sort_block(block, r): groups of r in even-then-odd order.
        let step = block / r;
        let seq: Vec<i64> = (0..step).step_by(2).chain((1..step).step_by(2)).collect();
        let mut order = vec![0i64; block as usize];
        for (i, pos) in seq.iter().enumerate() {
            for k in 0..r {
                order[(i as i64 * r + k) as usize] = pos * r + k;
            }
        }
        for chunk in idx.chunks_mut(block as usize) {
            let old = chunk.to_vec();
            for (dst, &o) in chunk.iter_mut().zip(&order) {
                *dst = old[o as usize];
            }
        }
    }
    Tensor::from_slice(&idx).to_device(device)
}

pub struct Boft {
    pub name: String,
    /// [m, D, H, H]
    pub r: Tensor,
    /// The output scale: [out, 1] ([1, out] on the patch embedding).
    pub s: Tensor,
    /// The butterfly permutations' index orders, one per factor.
    perms: Vec<Tensor>,
}

impl Boft {
    /// M = M_m ... M_1 [in, in] (fp32), as peft's `get_delta_weight`.
    pub fn rotation(&self) -> Tensor {
        let (m, d, h) = {
            let s = self.r.size();
            (s[0], s[1], s[2])
        };
        let r = self.r.view([m * d, h, h]);
        let skew = (&r - r.transpose(1, 2)) * 0.5;
        let eye = Tensor::eye(h, (Kind::Float, r.device())).expand([m * d, h, h], false);
        let q = Tensor::linalg_solve(&(&eye + &skew), &(&eye - &skew), false).view([m, d, h, h]);
        let mut total: Option<Tensor> = None;
        for (i, p) in self.perms.iter().enumerate() {
            let blocks = Tensor::block_diag(&q.get(i as i64).unbind(0));
            let mi = blocks.index_select(0, p).index_select(1, p);
            total = Some(match total {
                None => mi,
                Some(t) => mi.matmul(&t),
            });
        }
        total.expect("at least one butterfly factor")
    }

    fn scale(&self) -> Tensor {
        self.s.reshape([-1])
    }
}

impl Adapter for Boft {
    fn changes_input(&self) -> bool {
        true
    }

    fn on_input(&self, x: Tensor) -> Tensor {
        x.matmul(&self.rotation().to_kind(x.kind()))
    }

    /// (y - b)(s - 1): with the base output y this is (y - b) s + b.
    fn delta(&self, _x: &Tensor, base: Base, _train: bool) -> Option<(Tensor, OutRange)> {
        let y = base.y;
        let s = self.scale().to_kind(y.kind()) - 1.0;
        let wx = match &base.layer.bias {
            Some(b) => y - b.to_kind(y.kind()),
            None => y.shallow_clone(),
        };
        Some((wx * s, None))
    }

    fn merge(&self, base: &mut Linear) {
        let w = base
            .weight
            .to_kind(Kind::Float)
            .matmul(&self.rotation().transpose(0, 1))
            * self.scale().unsqueeze(1);
        base.weight.copy_(&w.to_kind(base.weight.kind()));
    }

    /// M is orthogonal (the exact Cayley transform): W = diag(1/s) W' M.
    fn unmerge(&self, base: &mut Linear) {
        let w =
            base.weight.to_kind(Kind::Float).matmul(&self.rotation()) / self.scale().unsqueeze(1);
        base.weight.copy_(&w.to_kind(base.weight.kind()));
    }

    fn visit(&mut self, f: &mut Visit) {
        f(&format!("{}.boft_R", self.name), &mut self.r, Role::Adapter);
        f(&format!("{}.boft_s", self.name), &mut self.s, Role::Adapter);
    }
}
