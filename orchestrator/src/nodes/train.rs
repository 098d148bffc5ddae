//! train: adapts the backbone to a prepared split (method + optimisation + seed) and saves
//! the trainable tensors and a per-epoch log. The training loop itself lives in `fit`.
use super::checkpoint::Checkpoints;
use super::fit::{fit, EpochLog, FitConfig};
use super::{write_json, NodeError, Result};
use crate::graph::{BuildNode, TrainNode};
use crate::nodes::{build, prep};
use crate::numerics::{DeviceKind, Numerics};
use kernels::{AdaptedVit, Method, ParamCounts, VisionTransformer};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::Device;

pub const TRAINABLE: &str = "trainable.safetensors";
pub const LOG: &str = "log.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainLog {
    pub epochs: Vec<EpochLog>,
    pub counts: ParamCounts,
    pub trainable_pct: f64,
    pub num_classes: i64,
    pub device: String,
    pub wall_s: f64,
    /// On the CPU: the node process's peak resident set, MiB (`VmHWM`, reset at the node's
    /// start: a warm worker runs many nodes). `None` on a GPU (the epochs' CUDA allocator
    /// peak is the figure there) and in logs written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

impl TrainLog {
    pub fn mean_epoch_s(&self) -> f64 {
        self.epochs.iter().map(|e| e.time_s).sum::<f64>() / self.epochs.len().max(1) as f64
    }
    pub fn peak_mem_mib(&self) -> Option<f64> {
        self.epochs
            .iter()
            .filter_map(|e| e.peak_mem_mib)
            .reduce(f64::max)
    }
    pub fn mean_img_s(&self) -> f64 {
        self.epochs.iter().map(|e| e.img_s).sum::<f64>() / self.epochs.len().max(1) as f64
    }
}

/// The device a child process computes on: CUDA (as pinned by CUDA_VISIBLE_DEVICES) unless
/// the parent said `--device cpu`.
/// A child given a GPU slot (CUDA_VISIBLE_DEVICES set) that cannot see CUDA fails rather
/// than quietly training on the CPU (an fp32 result under a slot meant for bf16 on a GPU).
/// The device a node keyed for `numerics` computes on. A node keyed for CUDA never falls
/// back to the CPU (its result would be stored under a key that says `cuda-...`).
pub fn device(numerics: Numerics, cpu: bool) -> Result<Device> {
    if numerics.device == DeviceKind::Cpu {
        return Ok(Device::Cpu);
    }
    let no_gpu = |why: String| {
        NodeError::Failed(format!(
            "this node is keyed for {numerics} but {why}; run it where CUDA is visible (`vtab-orch env`), or plan and run with --gpus none for CPU results"
        ))
    };
    if cpu {
        return Err(no_gpu("it was started with --cpu".into()));
    }
    if !tch::Cuda::is_available() {
        return Err(no_gpu(match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(v) => format!("libtorch sees no CUDA device (CUDA_VISIBLE_DEVICES={v})"),
            Err(_) => "libtorch sees no CUDA device".into(),
        }));
    }
    Ok(Device::Cuda(0))
}

/// Backbone from a build entry at `img_size` (the position embedding is resampled when the
/// size differs), with `method` applied and a fresh `num_classes` head.
pub fn model(
    build_dir: &Path,
    b: &BuildNode,
    img_size: i64,
    method: &Method,
    num_classes: i64,
    seed: u64,
    device: Device,
) -> Result<AdaptedVit> {
    let mut arch = b.arch.clone();
    arch.img_size = img_size;
    arch.num_classes = 0;
    let mut vit = tch::no_grad(|| VisionTransformer::new(&arch, device))?;
    kernels::checkpoint::load_timm(
        &mut vit,
        &build_dir.join(build::BACKBONE),
        kernels::checkpoint::HeadPolicy::Ignore,
    )?;
    Ok(AdaptedVit::new(
        vit,
        method,
        Some(num_classes),
        seed as i64,
    )?)
}

/// A finished train entry's model (adapters not merged), with its log and the info of the
/// split it was trained on: what eval and export start from.
pub fn load_trained(
    t: &TrainNode,
    b: &BuildNode,
    [train_dir, prep_dir, build_dir]: [&Path; 3],
    device: Device,
) -> Result<(AdaptedVit, TrainLog, prep::PrepInfo)> {
    let log: TrainLog = super::read_json(&train_dir.join(LOG))?;
    let info = prep::info(prep_dir)?;
    let mut model = model(
        build_dir,
        b,
        info.img_size,
        &t.method,
        log.num_classes,
        t.seed,
        device,
    )?;
    model.load_trainable(&train_dir.join(TRAINABLE))?;
    Ok((model, log, info))
}

pub fn run(
    t: &TrainNode,
    b: &BuildNode,
    prep_dir: &Path,
    build_dir: &Path,
    out: &Path,
    ckpt_dir: &Path,
    device: Device,
) -> Result<TrainLog> {
    let t0 = Instant::now();
    let rss = device == Device::Cpu && super::peak_rss::reset();
    let (images, labels, info) = prep::load_all(prep_dir)?;
    let (images, labels) = (images.to_device(device), labels.to_device(device));
    let mut model = model(
        build_dir,
        b,
        t.opt.img_size,
        &t.method,
        info.class_names.len() as i64,
        t.seed,
        device,
    )?;
    if device.is_cuda() {
        if let Some(kind) = t.numerics.precision.autocast_kind(device) {
            model.cast_frozen(kind);
        }
    }
    let counts = model.counts();
    let c = FitConfig {
        epochs: t.opt.epochs,
        batch_size: t.opt.batch_size,
        warmup_epochs: t.opt.warmup_epochs,
        lr: t.opt.lr,
        min_lr: t.opt.min_lr,
        weight_decay: t.opt.weight_decay,
        label_smoothing: t.opt.label_smoothing,
        clip_grad_norm: t.opt.clip_grad_norm,
        precision: t.numerics.precision,
        flip: t.opt.augment == "flip" || t.opt.augment == "crop+flip",
        crop: t.opt.augment == "crop+flip",
        mean: b.mean,
        std: b.std,
    };
    let checkpoints = Checkpoints::new(ckpt_dir, t.opt.checkpoint_every);
    let (model, epochs) = fit(model, &images, &labels, &c, t.seed, Some(checkpoints))?;
    model.save_trainable(&out.join(TRAINABLE))?;
    let log = TrainLog {
        epochs,
        counts,
        trainable_pct: counts.trainable_percent(),
        num_classes: info.class_names.len() as i64,
        device: format!("{device:?}"),
        wall_s: t0.elapsed().as_secs_f64(),
        peak_rss_mib: rss.then(super::peak_rss::read_mib).flatten(),
    };
    write_json(&out.join(LOG), &log)?;
    Ok(log)
}
