//! FourierFT (Gao et al. 2024, "Parameter-Efficient Fine-Tuning with Discrete Fourier
//! Transform") with peft's semantics (`FourierFTConfig`): n trained spectral coefficients at
//! fixed random (row, column) positions of a layer's weight, dW = Re(ifft2(S)) * scaling, with
//! S zero elsewhere. The positions are the first n of `randperm(out * in)` drawn from a
//! generator seeded with `random_loc_seed` (the same draw as peft's; not saved, redrawn). The
//! coefficients start standard-normal (peft's default, `init_weights = false`: the layer does
//! not start unchanged) or at zero (`init_weights = true`).
use super::{push_adapter, sites, Site, WeightDelta};
use crate::linear::{OutRange, Role, Visit};
use crate::method::{
    from_serde, refuse_patch_embed, targets_label, validate_targets, Buffers, Method, MethodInfo,
    MethodSpec, Param, ParamKind, PeftReader, Target,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FourierftSpec {
    /// Trained coefficients per adapted layer (peft's default 1000).
    #[serde(default = "n_frequency")]
    pub n_frequency: i64,
    /// The delta's scale (peft's default 150).
    #[serde(default = "scaling")]
    pub scaling: f64,
    /// The seed of the coefficients' positions (peft's default 777).
    #[serde(default = "random_loc_seed")]
    pub random_loc_seed: i64,
    /// Start the coefficients at zero (the layer unchanged) rather than standard-normal.
    #[serde(default)]
    pub init_weights: bool,
    pub targets: Vec<Target>,
}

fn n_frequency() -> i64 {
    1000
}
fn scaling() -> f64 {
    150.0
}
fn random_loc_seed() -> i64 {
    777
}

/// The most coefficients per layer (a ViT-L MLP has 4.2M weights).
pub const MAX_FREQUENCIES: i64 = 1 << 24;

pub static INFO: MethodInfo = MethodInfo {
    name: "fourierft",
    about: "FourierFT: n trained coefficients of each weight update's 2-D spectrum",
    params: &[
        Param {
            key: "n_frequency",
            kind: ParamKind::Int {
                min: 1,
                max: MAX_FREQUENCIES,
            },
            labelled: true,
        },
        Param {
            key: "scaling",
            kind: ParamKind::Float,
            labelled: true,
        },
        Param {
            key: "random_loc_seed",
            kind: ParamKind::Int {
                min: 0,
                max: i64::MAX,
            },
            labelled: false,
        },
        Param {
            key: "init_weights",
            kind: ParamKind::Bool,
            labelled: false,
        },
        Param::TARGETS,
    ],
    from_fields: from_serde::<FourierftSpec>,
    peft: Some(PeftReader {
        peft_type: "FOURIERFT",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "fourierft_qkv_n1000",
            Method::new(FourierftSpec {
                n_frequency: 1000,
                scaling: 150.0,
                random_loc_seed: 777,
                init_weights: false,
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    if c.cfg["n_frequency_pattern"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        return Err(
            c.err("`n_frequency_pattern` is set: per-layer frequency counts are not supported")
        );
    }
    Ok(Method::new(FourierftSpec {
        n_frequency: c.integer("n_frequency", Some(1000), 1..=MAX_FREQUENCIES)?,
        scaling: c.number("scaling", Some(150.0))?,
        random_loc_seed: c.integer("random_loc_seed", Some(777), 0..=i64::MAX)?,
        init_weights: c.flag("init_weights"),
        targets: c.targets()?,
    }))
}

impl MethodSpec for FourierftSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!(
            "fourierft n={} s={} {}",
            self.n_frequency,
            self.scaling,
            targets_label(&self.targets)
        )
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("fourierft", &self.targets)?;
        refuse_patch_embed("fourierft", &self.targets)?;
        if !(1..=MAX_FREQUENCIES).contains(&self.n_frequency) {
            return Err(format!(
                "fourierft: `n_frequency` must be from 1 to {MAX_FREQUENCIES}, got {}",
                self.n_frequency
            ));
        }
        if !self.scaling.is_finite() {
            return Err(format!(
                "fourierft: `scaling` must be finite, got {}",
                self.scaling
            ));
        }
        if self.random_loc_seed < 0 {
            return Err(format!(
                "fourierft: `random_loc_seed` must be >= 0, got {}",
                self.random_loc_seed
            ));
        }
        Ok(())
    }

    fn fresh_is_identity(&self) -> bool {
        self.init_weights
    }

    fn fits(&self, cfg: &crate::config::VitConfig) -> Result<(), String> {
        for site in super::sites_of(cfg, &self.targets) {
            let cells = site.in_features * site.out_features;
            if self.n_frequency > cells {
                return Err(format!(
                    "fourierft: `n_frequency` {} exceeds the {} weights of {} ({} x {})",
                    self.n_frequency, cells, site.name, site.out_features, site.in_features
                ));
            }
        }
        Ok(())
    }

    fn insert(&self, vit: &mut VisionTransformer, seed: i64) -> crate::Result<Buffers> {
        let device = vit.device();
        let mut layers = Vec::new();
        for site in sites(vit, &self.targets) {
            let cells = site.in_features * site.out_features;
            if self.n_frequency > cells {
                return Err(crate::Error::Config(format!(
                    "fourierft: `n_frequency` {} exceeds the {} weights of {} ({} x {})",
                    self.n_frequency, cells, site.name, site.out_features, site.in_features
                )));
            }
            layers.push((Fourierft::new(&site, self, device)?, site));
        }
        // The coefficients from the model's seed.
        tch::manual_seed(seed.wrapping_add(2));
        for (mut a, site) in layers {
            if !self.init_weights {
                a.spectrum =
                    Tensor::randn([self.n_frequency], (Kind::Float, Device::Cpu)).to_device(device);
            }
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        if self.targets.iter().any(|t| t.qkv_slice().is_some()) {
            return Err(
                "peft adapts whole modules: FourierFT on q/k/v slices of the fused qkv has no \
                 peft form"
                    .into(),
            );
        }
        let v = json!({
            "peft_type": "FOURIERFT", "n_frequency": self.n_frequency, "scaling": self.scaling,
            "random_loc_seed": self.random_loc_seed, "init_weights": self.init_weights,
            "bias": "none", "fan_in_fan_out": false,
            "n_frequency_pattern": {},
        });
        Ok(v.as_object().expect("json object").clone())
    }
}

pub struct Fourierft {
    pub name: String,
    /// [n]
    pub spectrum: Tensor,
    /// Row and column of each coefficient, [n] each.
    rows: Tensor,
    cols: Tensor,
    out_f: i64,
    in_f: i64,
    pub scaling: f64,
    pub range: OutRange,
}

impl Fourierft {
    /// The positions: `randperm(out * in)` from a generator of their own seeded with the
    /// spec's seed, as peft draws them.
    fn new(site: &Site, spec: &FourierftSpec, device: Device) -> crate::Result<Self> {
        let (in_f, out_f) = (site.in_features, site.out_features);
        let idx = crate::accel::seeded_randperm(out_f * in_f, spec.random_loc_seed as u64)?
            .narrow(0, 0, spec.n_frequency)
            .to_device(device);
        Ok(Fourierft {
            name: site.name.clone(),
            spectrum: Tensor::zeros([spec.n_frequency], (Kind::Float, device)),
            rows: idx.divide_scalar_mode(in_f, "floor"),
            cols: idx.remainder(in_f),
            out_f,
            in_f,
            scaling: spec.scaling,
            range: site.range,
        })
    }
}

impl WeightDelta for Fourierft {
    fn delta_weight(&self) -> Tensor {
        let dense = Tensor::zeros(
            [self.out_f, self.in_f],
            (Kind::Float, self.spectrum.device()),
        )
        .index_put(
            &[Some(&self.rows), Some(&self.cols)],
            &self.spectrum.to_kind(Kind::Float),
            false,
        );
        dense
            .fft_ifft2(None::<&[i64]>, [-2i64, -1].as_slice(), "backward")
            .real()
            * self.scaling
    }

    fn range(&self) -> OutRange {
        self.range
    }

    fn visit_tensors(&mut self, f: &mut Visit) {
        f(
            &format!("{}.fourierft_spectrum", self.name),
            &mut self.spectrum,
            Role::Adapter,
        );
    }
}
