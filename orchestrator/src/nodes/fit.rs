//! The training loop shared by build (pretraining) and train: seeded epochs over a split on
//! the device, augmentation, per-epoch logs, atomic resumable checkpoints. No node I/O.
use super::checkpoint::{AfterEpoch, Checkpoints};
pub use super::EpochLog;
use super::{NodeError, Result};
use crate::test_hooks;
use kernels::accel::{memory_stats, reset_peak_memory, synchronize};
use kernels::optim::AdamWConfig;
use kernels::schedule::WarmupCosine;
use kernels::train::{Precision, TrainConfig, Trainer};
use kernels::AdaptedVit;
use std::time::Instant;
use tch::{Kind, Tensor};

/// Everything `fit` needs besides the model and the data.
pub struct FitConfig {
    pub epochs: u64,
    pub batch_size: i64,
    pub warmup_epochs: u64,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub label_smoothing: f64,
    pub clip_grad_norm: Option<f64>,
    pub precision: Precision,
    /// Random horizontal flips.
    pub flip: bool,
    /// Random resized crops (before flips).
    pub crop: bool,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

/// uint8 [B,3,H,W] on the device -> normalised float.
pub fn normalise(x: &Tensor, mean: [f64; 3], std: [f64; 3]) -> Tensor {
    let dev = x.device();
    let m = Tensor::from_slice(&mean.map(|v| v as f32))
        .to_device(dev)
        .view([1, 3, 1, 1]);
    let s = Tensor::from_slice(&std.map(|v| v as f32))
        .to_device(dev)
        .view([1, 3, 1, 1]);
    (x.to_kind(Kind::Float) / 255.0 - m) / s
}

/// Trains `model` on (images u8, labels) already on the device, seeded draws throughout.
/// Random resized crops of a batch on its device, one per image, resized back to the input
/// size with bilinear interpolation (one `affine_grid` + `grid_sample`): area fraction
/// U(0.08, 1), log aspect ratio U(log 3/4, log 4/3), as torchvision's RandomResizedCrop
/// draws them; a crop side that would exceed the image is clamped to it instead of redrawn.
pub fn random_resized_crop(x: &Tensor) -> Tensor {
    let (b, c, h, w) = x.size4().expect("images are [B, C, H, W]");
    let opts = (Kind::Float, x.device());
    let area = Tensor::rand([b], opts) * 0.92 + 0.08;
    let log_ratio = (Tensor::rand([b], opts) - 0.5) * (2.0 * (4.0f64 / 3.0).ln());
    let ratio = log_ratio.exp();
    // Half-extents in normalised coordinates ([-1, 1] spans the image).
    let sx = (&area * &ratio).sqrt().clamp_max(1.0);
    let sy = (&area / &ratio).sqrt().clamp_max(1.0);
    let tx = (Tensor::rand([b], opts) * 2.0 - 1.0) * (1.0 - &sx);
    let ty = (Tensor::rand([b], opts) * 2.0 - 1.0) * (1.0 - &sy);
    let zero = Tensor::zeros([b], opts);
    let theta = Tensor::stack(
        &[
            Tensor::stack(&[&sx, &zero, &tx], 1),
            Tensor::stack(&[&zero, &sy, &ty], 1),
        ],
        1,
    );
    let grid = Tensor::affine_grid_generator(&theta.to_kind(x.kind()), [b, c, h, w], false);
    x.grid_sampler(&grid, 0, 1, false)
}

/// Trains `model` on (images u8, labels) already on the device. With `checkpoints`, resumes
/// from the checkpoint found there and writes them as its policy says (and stops, with a
/// checkpoint, when the process is asked to).
pub fn fit(
    model: AdaptedVit,
    images: &Tensor,
    labels: &Tensor,
    c: &FitConfig,
    seed: u64,
    mut checkpoints: Option<Checkpoints>,
) -> Result<(AdaptedVit, Vec<EpochLog>)> {
    let device = images.device();
    let n = images.size()[0];
    let steps_per_epoch = ((n + c.batch_size - 1) / c.batch_size) as u64;
    let cfg = TrainConfig {
        schedule: WarmupCosine {
            base_lr: c.lr,
            min_lr: c.min_lr,
            warmup_steps: c.warmup_epochs * steps_per_epoch,
            total_steps: c.epochs * steps_per_epoch,
        },
        adamw: AdamWConfig {
            weight_decay: c.weight_decay,
            ..Default::default()
        },
        label_smoothing: c.label_smoothing,
        clip_grad_norm: c.clip_grad_norm,
        precision: c.precision,
    };
    let mut trainer = Trainer::new(model, cfg);
    let (done, mut logs) = match checkpoints.as_mut() {
        Some(ck) => ck.restore(&mut trainer)?.unwrap_or_default(),
        None => (0, Vec::new()),
    };
    if done > 0 {
        super::progress(serde_json::json!({"resumed_after_epoch": done}));
    }
    reset_peak_memory(device)?;
    for epoch in done + 1..=c.epochs {
        tch::manual_seed(
            (seed as i64 ^ 0x5EED)
                .wrapping_mul(1_000_003)
                .wrapping_add(epoch as i64),
        );
        let t0 = Instant::now();
        let lr = trainer.cfg.schedule.lr(trainer.step);
        let perm = Tensor::randperm(n, (Kind::Int64, device));
        let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
        // First step (within the epoch) with a non-finite loss, tracked on the device so
        // that no step waits for the host; i64::MAX while all are finite.
        let mut first_bad = Tensor::full([], i64::MAX, (Kind::Int64, device));
        for b in 0..steps_per_epoch as i64 {
            let idx = perm.narrow(0, b * c.batch_size, c.batch_size.min(n - b * c.batch_size));
            let mut x = normalise(&images.index_select(0, &idx), c.mean, c.std);
            if c.crop {
                x = random_resized_crop(&x);
            }
            if c.flip {
                let flip = Tensor::rand([idx.size()[0], 1, 1, 1], (Kind::Float, device)).lt(0.5);
                x = x.flip([3]).where_self(&flip, &x);
            }
            let y = labels.index_select(0, &idx);
            let loss = trainer.train_step(&x, &y)?;
            let bad_here = Tensor::where_scalar(&loss.isfinite().logical_not(), b, i64::MAX);
            first_bad = first_bad.minimum(&bad_here);
            loss_sum += loss * idx.size()[0] as f64;
        }
        synchronize(device);
        let time_s = t0.elapsed().as_secs_f64();
        let loss = loss_sum.double_value(&[]) / n as f64;
        let bad_step = first_bad.int64_value(&[]);
        if bad_step != i64::MAX || !loss.is_finite() {
            let step = bad_step.min(steps_per_epoch as i64 - 1) + 1;
            return Err(NodeError::Failed(format!(
                "non-finite loss in epoch {epoch}, step {step} of {steps_per_epoch} (lr {lr:.3e}): lower the learning rate or set clip_grad_norm"
            )));
        }
        let peak_mem_mib =
            memory_stats(device)?.map(|s| s.peak_allocated as f64 / (1 << 20) as f64);
        let log = EpochLog {
            epoch,
            loss,
            lr,
            time_s,
            img_s: n as f64 / time_s,
            peak_mem_mib,
        };
        super::progress(
            serde_json::json!({"epoch": epoch, "epochs": c.epochs, "loss": loss, "img_s": log.img_s}),
        );
        logs.push(log);
        if let Some(ck) = checkpoints.as_mut() {
            if ck.after_epoch(&trainer, &logs, epoch, c.epochs)? == AfterEpoch::Stop {
                return Err(NodeError::Failed(format!(
                    "stopped by a signal after epoch {epoch} of {}; its checkpoint is saved and the next run resumes from it",
                    c.epochs
                )));
            }
        }
        test_hooks::pause_after_epoch(epoch);
        if test_hooks::crash_after_epoch(epoch) {
            // The checkpoint write in flight is waited for.
            if let Some(ck) = checkpoints.as_mut() {
                ck.finish()?;
            }
            std::process::abort();
        }
        test_hooks::epoch_delay();
    }
    if let Some(ck) = checkpoints.as_mut() {
        ck.finish()?;
    }
    Ok((trainer.model, logs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn random_resized_crops_stay_inside_and_differ_per_image() {
        tch::manual_seed(0);
        // A horizontal ramp 0..1: a crop can only show values from inside it.
        let ramp = Tensor::linspace(0.0, 1.0, 32, (Kind::Float, Device::Cpu))
            .view([1, 1, 1, 32])
            .expand([8, 3, 32, 32], false)
            .contiguous();
        let out = random_resized_crop(&ramp);
        assert_eq!(out.size(), vec![8, 3, 32, 32]);
        assert!(out.min().double_value(&[]) >= -1e-6 && out.max().double_value(&[]) <= 1.0 + 1e-6);
        // Zoomed in: each crop spans less of the ramp than the image, and crops differ.
        let span = out.amax([1, 2, 3], false) - out.amin([1, 2, 3], false);
        assert!(span.max().double_value(&[]) <= 1.0 + 1e-6);
        assert!(
            span.min().double_value(&[]) < 0.99,
            "no crop zoomed in: {span:?}"
        );
        let first = out.get(0);
        assert!((0..8).any(|i| (out.get(i) - &first).abs().max().double_value(&[]) > 1e-3));
        // A constant image stays constant.
        let flat = random_resized_crop(&Tensor::full(
            [4, 3, 16, 16],
            0.25,
            (Kind::Float, Device::Cpu),
        ));
        assert!((flat - 0.25).abs().max().double_value(&[]) < 1e-6);
    }
}
