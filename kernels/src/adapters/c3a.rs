//! C3A (Chen et al. 2025, "Parameter-efficient fine-tuning via circular convolution") with
//! peft's semantics (`C3AConfig`): the update of each targeted layer is a block-circulant
//! matrix, out/b x in/b circulant blocks of size b, each defined by one trained kernel row
//! [b]; y = W x + b + C(x) / in, where C applies the blocks by FFT (circular convolution):
//! C(x)_m = real(fft(sum_n ifft(x_n) * fft(w_mn))). peft starts the kernels xavier-uniform
//! (so a fresh model is not the backbone); `init = "zeros"` (peft's `init_weights = true`)
//! starts at the identity. Computed in fp32 (FFTs have no bf16), as peft does.
use super::{divides_widths, push_adapter, sites, sites_of, Site};
use crate::config::VitConfig;
use crate::linear::{Adapter, Base, Linear, OutRange, Role, Visit};
use crate::method::{
    from_serde, refuse_patch_embed, refuse_slices, targets_label, validate_targets, Buffers,
    Method, MethodInfo, MethodSpec, Param, ParamKind, PeftReader, Target,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use crate::Error;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct C3aSpec {
    /// The circulant block size b (divides every targeted layer's input and output width).
    pub block_size: i64,
    /// How the kernels start: peft's `init_weights`.
    pub init: String,
    pub targets: Vec<Target>,
}

const INITS: &[&str] = &["xavier_uniform", "kaiming_uniform", "gaussian", "zeros"];

/// The largest block size.
pub const MAX_BLOCK: i64 = 1 << 16;

pub static INFO: MethodInfo = MethodInfo {
    name: "c3a",
    about: "C3A: a block-circulant update applied by FFT (circular convolution)",
    params: &[
        Param {
            key: "block_size",
            kind: ParamKind::Int {
                min: 1,
                max: MAX_BLOCK,
            },
            labelled: true,
        },
        Param {
            key: "init",
            kind: ParamKind::Choice(INITS),
            labelled: false,
        },
        Param::TARGETS,
    ],
    from_fields,
    peft: Some(PeftReader {
        peft_type: "C3A",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "c3a_qkv_b48",
            Method::new(C3aSpec {
                block_size: 48,
                init: "xavier_uniform".into(),
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

/// peft's defaults: block_size 256, xavier-uniform kernels.
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    f.entry("block_size").or_insert(json!(256));
    f.entry("init").or_insert(json!("xavier_uniform"));
    from_serde::<C3aSpec>(f)
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    if c.cfg["block_size_pattern"]
        .as_object()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(c.err("`block_size_pattern` is set: per-layer block sizes are not supported"));
    }
    let init = match &c.cfg["init_weights"] {
        Value::Bool(true) => "zeros".to_string(),
        Value::Bool(false) | Value::Null => "xavier_uniform".to_string(),
        Value::String(s) if INITS.contains(&s.as_str()) && s != "zeros" => s.clone(),
        other => return Err(c.err(format!("`init_weights` = {other} is not one of peft's"))),
    };
    Ok(Method::new(C3aSpec {
        block_size: c.integer("block_size", Some(256), 1..=MAX_BLOCK)?,
        init,
        targets: c.targets()?,
    }))
}

impl C3aSpec {
    fn fits_site(&self, site: &Site) -> Result<(), String> {
        divides_widths("c3a", "block_size", self.block_size, site)
    }
}

impl MethodSpec for C3aSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!("c3a b={} {}", self.block_size, targets_label(&self.targets))
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("c3a", &self.targets)?;
        refuse_patch_embed("c3a", &self.targets)?;
        refuse_slices("c3a", &self.targets, "peft's C3A adapts whole layers")?;
        if !INITS.contains(&self.init.as_str()) {
            return Err(format!(
                "c3a: `init` must be one of {}, got {:?}",
                INITS.join(", "),
                self.init
            ));
        }
        Ok(())
    }

    fn fresh_is_identity(&self) -> bool {
        self.init == "zeros"
    }

    fn fits(&self, cfg: &VitConfig) -> Result<(), String> {
        sites_of(cfg, &self.targets)
            .iter()
            .try_for_each(|s| self.fits_site(s))
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let device = vit.device();
        let b = self.block_size;
        for site in sites(vit, &self.targets) {
            self.fits_site(&site).map_err(Error::Config)?;
            let (in_f, out_f) = (site.in_features, site.out_features);
            let shape = [out_f / b, in_f / b, b];
            let opts = (Kind::Float, device);
            let kernel = match self.init.as_str() {
                "zeros" => Tensor::zeros(shape, opts),
                "gaussian" => Tensor::randn(shape, opts),
                "kaiming_uniform" => {
                    let a = (1.0 / in_f as f64).sqrt();
                    Tensor::empty(shape, opts).uniform_(-a, a)
                }
                _ => {
                    let a = 3f64.sqrt() * (2.0 / (in_f + out_f) as f64).sqrt();
                    Tensor::empty(shape, opts).uniform_(-a, a)
                }
            };
            let a = C3a {
                name: site.name.clone(),
                kernel,
                in_f,
            };
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        let init = if self.init == "zeros" {
            json!(true)
        } else {
            json!(self.init)
        };
        let v = json!({
            "peft_type": "C3A", "block_size": self.block_size, "block_size_pattern": {},
            "init_weights": init, "bias": "none",
        });
        Ok(v.as_object().expect("json object").clone())
    }
}

pub struct C3a {
    pub name: String,
    /// [out/b, in/b, b]
    pub kernel: Tensor,
    in_f: i64,
}

/// peft's `BlockCircularConvolution` forward: x [..., n*b] with kernels w [m, n, b].
fn circular(x: &Tensor, w: &Tensor) -> Tensor {
    let (n, b) = (w.size()[1], w.size()[2]);
    let shape = x.size();
    let mut split = shape[..shape.len() - 1].to_vec();
    split.extend([n, b]);
    let xf = x.reshape(&split).fft_ifft(None, -1, "backward");
    let wf = w.fft_fft(None, -1, "backward");
    let y = Tensor::einsum("...nb,mnb->...mb", &[xf, wf], None::<&[i64]>)
        .fft_fft(None, -1, "backward")
        .real();
    y.flatten(-2, -1)
}

impl C3a {
    /// The dense update [out, in], as peft's `get_delta_weight` (fp32).
    pub fn delta_weight(&self) -> Tensor {
        let w = self.kernel.to_kind(Kind::Float);
        let eye = Tensor::eye(self.in_f, (Kind::Float, w.device()));
        circular(&eye, &w).transpose(0, 1) / self.in_f as f64
    }
}

impl Adapter for C3a {
    fn delta(&self, x: &Tensor, _base: Base, _train: bool) -> Option<(Tensor, OutRange)> {
        let y =
            circular(&x.to_kind(Kind::Float), &self.kernel.to_kind(Kind::Float)) / self.in_f as f64;
        Some((y.to_kind(x.kind()), None))
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
        f(
            &format!("{}.c3a_kernel", self.name),
            &mut self.kernel,
            Role::Adapter,
        );
    }
}
