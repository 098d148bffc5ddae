//! SHiRA (Bhardwaj et al. 2024, "Sparse high rank adapters") with peft's semantics
//! (`ShiraConfig`, mask_type "random"): a fixed random set of r * (in + out) entries of each
//! targeted weight trains (as many parameters as LoRA of rank r), dW = scatter(values), and
//! merging adds dW. The entries are `randperm(out * in)` from a generator of their own seeded
//! with `random_seed` (peft's unseeded default is torch's initial seed, 67280421310721), in
//! row-major order; values start at zero. The entries' (row, column) pairs are frozen buffers
//! (`shira_indices`, int32 [2, K] as peft saves them): an import loads peft's, whatever mask
//! function made them.
use super::{push_adapter, sites, sites_of, Site, WeightDelta};
use crate::config::VitConfig;
use crate::linear::{OutRange, Role, Visit};
use crate::method::{
    from_serde, refuse_patch_embed, refuse_slices, targets_label, validate_rank, validate_targets,
    Buffers, Method, MethodInfo, MethodSpec, Param, ParamKind, PeftReader, Target,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiraSpec {
    /// r * (in + out) trained entries per layer.
    pub r: i64,
    /// The mask generator's seed.
    pub random_seed: i64,
    pub targets: Vec<Target>,
}

/// `torch.Generator().initial_seed()`: peft's mask seed when `random_seed` is None.
pub const TORCH_DEFAULT_SEED: i64 = 67_280_421_310_721;

pub static INFO: MethodInfo = MethodInfo {
    name: "shira",
    about: "SHiRA: a fixed random sparse set of weight entries trains",
    params: &[
        Param::RANK,
        Param {
            key: "random_seed",
            kind: ParamKind::Int {
                min: 0,
                max: i64::MAX,
            },
            labelled: false,
        },
        Param::TARGETS,
    ],
    from_fields,
    peft: Some(PeftReader {
        peft_type: "SHIRA",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "shira_qkv_r32",
            Method::new(ShiraSpec {
                r: 32,
                random_seed: TORCH_DEFAULT_SEED,
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

/// peft's defaults: r = 32, the unseeded generator's seed.
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    f.entry("r").or_insert(json!(32));
    f.entry("random_seed").or_insert(json!(TORCH_DEFAULT_SEED));
    from_serde::<ShiraSpec>(f)
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    if c.cfg["mask_type"].as_str().is_some_and(|t| t != "random") {
        return Err(c.err(format!(
            "`mask_type` = {}: only peft's \"random\" masks are supported",
            c.cfg["mask_type"]
        )));
    }
    let random_seed = match &c.cfg["random_seed"] {
        Value::Null => TORCH_DEFAULT_SEED,
        _ => c.integer("random_seed", None, 0..=i64::MAX)?,
    };
    Ok(Method::new(ShiraSpec {
        r: c.rank(Some(32))?,
        random_seed,
        targets: c.targets()?,
    }))
}

impl ShiraSpec {
    fn fits_site(&self, site: &Site) -> Result<(), String> {
        let (in_f, out_f) = (site.in_features, site.out_features);
        let k = self.r * (in_f + out_f);
        if k > in_f * out_f {
            return Err(format!(
                "shira: `r` = {} trains {k} entries, more than the {} weights of {} \
                 ({out_f} x {in_f})",
                self.r,
                in_f * out_f,
                site.name
            ));
        }
        Ok(())
    }
}

impl MethodSpec for ShiraSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!("shira r={} {}", self.r, targets_label(&self.targets))
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("shira", &self.targets)?;
        refuse_patch_embed("shira", &self.targets)?;
        refuse_slices("shira", &self.targets, "peft's SHiRA masks whole layers")?;
        validate_rank("shira", self.r)?;
        if self.random_seed < 0 {
            return Err(format!(
                "shira: `random_seed` must be >= 0, got {}",
                self.random_seed
            ));
        }
        Ok(())
    }

    fn fits(&self, cfg: &VitConfig) -> Result<(), String> {
        sites_of(cfg, &self.targets)
            .iter()
            .try_for_each(|s| self.fits_site(s))
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let device = vit.device();
        let mut buffers = Vec::new();
        for site in sites(vit, &self.targets) {
            self.fits_site(&site).map_err(crate::Error::Config)?;
            let (in_f, out_f) = (site.in_features, site.out_features);
            let k = self.r * (in_f + out_f);
            let (flat, _) = crate::accel::seeded_randperm(out_f * in_f, self.random_seed as u64)?
                .narrow(0, 0, k)
                .sort(0, false);
            let indices = Tensor::stack(
                &[flat.divide_scalar_mode(in_f, "floor"), flat.remainder(in_f)],
                0,
            )
            .to_kind(Kind::Int)
            .to_device(device);
            buffers.push((
                format!("model.{}.shira_indices", site.name),
                indices.shallow_clone(),
            ));
            let a = Shira {
                name: site.name.clone(),
                weight: Tensor::zeros([k], (Kind::Float, device)),
                indices,
                out_f,
                in_f,
                range: site.range,
            };
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(buffers)
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        let v = json!({
            "peft_type": "SHIRA", "r": self.r, "mask_type": "random",
            "random_seed": self.random_seed, "init_weights": true, "fan_in_fan_out": false,
        });
        Ok(v.as_object().expect("json object").clone())
    }
}

pub struct Shira {
    pub name: String,
    /// [K]: the trained entries, in row-major order of their positions.
    pub weight: Tensor,
    /// [2, K] int32: (row, column) of each entry (a view of the model's buffer).
    indices: Tensor,
    out_f: i64,
    in_f: i64,
    range: OutRange,
}

impl WeightDelta for Shira {
    fn delta_weight(&self) -> Tensor {
        let idx = self.indices.to_kind(Kind::Int64);
        let flat = idx.get(0) * self.in_f + idx.get(1);
        Tensor::zeros(
            [self.out_f * self.in_f],
            (Kind::Float, self.weight.device()),
        )
        .index_copy(0, &flat, &self.weight.to_kind(Kind::Float))
        .view([self.out_f, self.in_f])
    }

    fn range(&self) -> OutRange {
        self.range
    }

    fn visit_tensors(&mut self, f: &mut Visit) {
        f(
            &format!("{}.shira_weight", self.name),
            &mut self.weight,
            Role::Adapter,
        );
    }
}
