//! One training step and batched evaluation: autocast, loss, clipping, AdamW and the
//! schedule. Owns no data loading; batches arrive as normalised float tensors.
use crate::accel::Autocast;
use crate::error::Result;
use crate::model::AdaptedVit;
use crate::optim::{AdamW, AdamWConfig};
use crate::schedule::WarmupCosine;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Reduction, Tensor};

/// Numeric precision of forward/backward. Trainable tensors and optimiser state are fp32
/// in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 autocast on CUDA, fp32 on the CPU.
    Auto,
    Fp32,
    /// bf16 autocast (as `torch.autocast(dtype=torch.bfloat16)`).
    Bf16,
    /// fp32 tensors, TF32 tensor-core matmuls on CUDA (what PyTorch code that sets
    /// `allow_tf32 = True` calls fp32); plain fp32 on the CPU.
    Tf32,
}

impl Precision {
    /// The autocast dtype this precision means on `device`, if any.
    pub fn autocast_kind(self, device: Device) -> Option<Kind> {
        match self {
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Auto if device.is_cuda() => Some(Kind::BFloat16),
            _ => None,
        }
    }

    /// Enters this precision's autocast region (if any) and sets libtorch's TF32 flags for
    /// it (on for `tf32`, off otherwise) on CUDA.
    pub fn enter(self, device: Device) -> Result<Option<Autocast>> {
        if device.is_cuda() {
            crate::accel::set_tf32(self == Precision::Tf32)?;
        }
        self.autocast_kind(device)
            .map(|k| Autocast::enter(device, k))
            .transpose()
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Precision::Auto),
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "tf32" => Ok(Precision::Tf32),
            other => Err(format!(
                "unknown precision `{other}` (auto, fp32, bf16, tf32)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub schedule: WarmupCosine,
    pub adamw: AdamWConfig,
    pub label_smoothing: f64,
    /// Clip the global gradient norm to this value (`clip_grad_norm_`).
    pub clip_grad_norm: Option<f64>,
    pub precision: Precision,
}

/// Seeds every generator libtorch draws from (CPU and all CUDA devices).
pub fn seed_everything(seed: i64) {
    tch::manual_seed(seed);
}

pub struct Trainer {
    pub model: AdaptedVit,
    pub opt: AdamW,
    pub cfg: TrainConfig,
    pub step: u64,
}

impl Trainer {
    pub fn new(model: AdaptedVit, cfg: TrainConfig) -> Self {
        let opt = AdamW::new(model.trainable(), cfg.adamw.clone());
        Trainer {
            model,
            opt,
            cfg,
            step: 0,
        }
    }

    /// Forward, backward and update on one batch; returns the loss as a 0-d tensor (reading
    /// it synchronises the device, so callers read it only when they log).
    pub fn train_step(&mut self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let device = x.device();
        let loss = {
            let _ac = self.cfg.precision.enter(device)?;
            let logits = self.model.forward(x, true);
            logits.cross_entropy_loss::<Tensor>(
                y,
                None,
                Reduction::Mean,
                -100,
                self.cfg.label_smoothing,
            )
        };
        loss.backward();
        if let Some(max) = self.cfg.clip_grad_norm {
            let _total_norm = clip_grad_norm(self.opt.params(), max);
        }
        self.opt.step(self.cfg.schedule.lr(self.step))?;
        self.opt.zero_grad()?;
        self.step += 1;
        Ok(loss.detach())
    }
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` (L2, no host synchronisation).
pub fn clip_grad_norm<'a>(params: impl Iterator<Item = &'a Tensor>, max_norm: f64) -> Tensor {
    tch::no_grad(|| {
        let grads: Vec<Tensor> = params.map(|p| p.grad()).filter(|g| g.defined()).collect();
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm();
        let coef =
            (Tensor::from(max_norm).to_device(total.device()) / (&total + 1e-6)).clamp_max(1.0);
        for mut g in grads {
            let _ = g.g_mul_(&coef);
        }
        total
    })
}

/// Logits for `x` without autograd, in the given precision.
pub fn eval_logits(model: &AdaptedVit, x: &Tensor, precision: Precision) -> Result<Tensor> {
    tch::no_grad(|| {
        let _ac = precision.enter(x.device())?;
        Ok(model.forward(x, false).to_kind(Kind::Float))
    })
}
