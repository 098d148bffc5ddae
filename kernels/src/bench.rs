//! The train-step benchmark (`vtab-orch bench`): per method, train img/s, ms/step, peak
//! allocator memory, merged-eval img/s and parameter counts, mirroring
//! shared/anchors/peft_bench.py so the two tables compare line by line.
use crate::accel::{memory_stats, reset_peak_memory, synchronize};
use crate::config::VitConfig;
use crate::error::Result;
use crate::method::Method;
use crate::model::AdaptedVit;
use crate::optim::AdamWConfig;
use crate::schedule::WarmupCosine;
use crate::train::{eval_logits, Precision, TrainConfig, Trainer};
use crate::vit::VisionTransformer;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub cfg: VitConfig,
    pub num_classes: i64,
    pub batch: i64,
    pub eval_batch: i64,
    pub warmup: usize,
    pub steps: usize,
    pub eval_steps: usize,
    pub precision: Precision,
    pub device: Device,
    /// Store frozen weights in the autocast dtype (see `AdaptedVit::cast_frozen`).
    pub cast_frozen: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub method: String,
    pub trainable: i64,
    pub total: i64,
    pub train_img_s: f64,
    pub step_ms: f64,
    /// Peak allocated memory in GiB (None on CPU).
    pub peak_gib: Option<f64>,
    pub eval_img_s: f64,
    pub final_loss: f64,
}

/// The rows `vtab-orch bench` measures: every registered method's bench entries (the
/// methods of `peft_bench.py` by its names, plus BitFit, LoRA on q,v slices and LoRA on all
/// linears with peft's own target set, `lora_all_pe_r8`).
pub fn standard_methods() -> Vec<(&'static str, Method)> {
    crate::adapters::REGISTRY
        .iter()
        .flat_map(|m| (m.bench)())
        .collect()
}

fn time_it(device: Device, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    synchronize(device);
    let t = Instant::now();
    for _ in 0..n {
        f()?;
    }
    synchronize(device);
    Ok(t.elapsed().as_secs_f64() / n.max(1) as f64)
}

/// Benchmarks one method on random data (the backbone is randomly initialised, as in
/// peft_bench.py: speed does not depend on the weights).
pub fn bench_method(name: &str, method: &Method, o: &BenchOptions) -> Result<BenchRow> {
    tch::manual_seed(0);
    let vit = tch::no_grad(|| VisionTransformer::new(&o.cfg, o.device))?;
    let mut model = AdaptedVit::new(vit, method, Some(o.num_classes), 0)?;
    if o.cast_frozen {
        if let Some(kind) = o.precision.autocast_kind(o.device) {
            model.cast_frozen(kind);
        }
    }
    let counts = model.counts();
    let cfg = TrainConfig {
        schedule: WarmupCosine {
            base_lr: 1e-3,
            min_lr: 1e-3,
            warmup_steps: 0,
            total_steps: 1,
        },
        adamw: AdamWConfig {
            weight_decay: 0.05,
            ..Default::default()
        },
        label_smoothing: 0.0,
        clip_grad_norm: None,
        precision: o.precision,
    };
    let mut trainer = Trainer::new(model, cfg);
    let x = Tensor::randn(
        [o.batch, o.cfg.in_chans, o.cfg.img_size, o.cfg.img_size],
        (Kind::Float, o.device),
    );
    let y = Tensor::randint(o.num_classes, [o.batch], (Kind::Int64, o.device));
    synchronize(o.device);
    reset_peak_memory(o.device)?;
    let mut loss = Tensor::zeros([], (Kind::Float, o.device));
    let mut step = || -> Result<()> {
        loss = trainer.train_step(&x, &y)?;
        Ok(())
    };
    for _ in 0..o.warmup {
        step()?;
    }
    let dt = time_it(o.device, o.steps, &mut step)?;
    let final_loss = loss.double_value(&[]);
    let peak_gib = memory_stats(o.device)?.map(|s| s.peak_allocated as f64 / (1u64 << 30) as f64);
    let mut model = trainer.model;
    model.merge();
    let xe = Tensor::randn(
        [o.eval_batch, o.cfg.in_chans, o.cfg.img_size, o.cfg.img_size],
        (Kind::Float, o.device),
    );
    for _ in 0..2 {
        let _ = eval_logits(&model, &xe, o.precision)?;
    }
    let de = time_it(o.device, o.eval_steps, || {
        eval_logits(&model, &xe, o.precision).map(|_| ())
    })?;
    Ok(BenchRow {
        method: name.to_string(),
        trainable: counts.trainable,
        total: counts.total,
        train_img_s: o.batch as f64 / dt,
        step_ms: dt * 1e3,
        peak_gib,
        eval_img_s: o.eval_batch as f64 / de,
        final_loss,
    })
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[BenchRow]) -> String {
    let mut s = String::from("| method | trainable | total | train img/s | ms/step | peak GiB | merged eval img/s |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let peak = r.peak_gib.map_or("-".to_string(), |g| format!("{g:.2}"));
        s += &format!(
            "| {} | {} | {} | {:.1} | {:.2} | {} | {:.1} |\n",
            r.method, r.trainable, r.total, r.train_img_s, r.step_ms, peak, r.eval_img_s
        );
    }
    s
}
