//! eval: top-1 and per-class accuracy of a trained run on a prepared split, with adapters
//! merged into the backbone; streams the split chunk by chunk.
use super::{write_json, Result};
use crate::graph::{BuildNode, EvalNode, TrainNode};
use crate::nodes::{prep, train};
use kernels::accel::synchronize;
use kernels::train::eval_logits;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub const METRICS: &str = "metrics.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    pub top1: f64,
    /// Per-class top-1 (None for a class absent from the split).
    pub per_class: Vec<Option<f64>>,
    pub n: i64,
    pub eval_img_s: f64,
    pub train: train::TrainLog,
}

pub fn run(
    e: &EvalNode,
    t: &TrainNode,
    b: &BuildNode,
    dirs: [&Path; 3],
    out: &Path,
    device: Device,
) -> Result<Metrics> {
    let prep_dir = dirs[1];
    let (mut model, log, info) = train::load_trained(t, b, dirs, device)?;
    model.merge();
    if device.is_cuda() {
        if let Some(kind) = e.numerics.precision.autocast_kind(device) {
            model.cast_frozen(kind);
        }
    }
    let classes = log.num_classes;
    let mut correct = Tensor::zeros([classes], (Kind::Int64, device));
    let mut seen = Tensor::zeros([classes], (Kind::Int64, device));
    let mut secs = 0.0;
    for chunk in &info.chunks {
        let (images, labels) = prep::load_chunk(prep_dir, chunk)?;
        let (images, labels) = (images.to_device(device), labels.to_device(device));
        synchronize(device);
        let t0 = Instant::now();
        let n = images.size()[0];
        for start in (0..n).step_by(e.eval_batch_size as usize) {
            let len = e.eval_batch_size.min(n - start);
            let x = super::fit::normalise(&images.narrow(0, start, len), b.mean, b.std);
            let y = labels.narrow(0, start, len);
            let pred = eval_logits(&model, &x, e.numerics.precision)?.argmax(-1, false);
            let hit = pred.eq_tensor(&y).to_kind(Kind::Int64);
            correct = correct.index_add(0, &y, &hit);
            seen = seen.index_add(0, &y, &Tensor::ones_like(&y));
        }
        synchronize(device);
        secs += t0.elapsed().as_secs_f64();
        super::progress(serde_json::json!({"eval_chunk": chunk}));
    }
    let correct: Vec<i64> = Vec::try_from(correct.to_device(Device::Cpu))?;
    let seen: Vec<i64> = Vec::try_from(seen.to_device(Device::Cpu))?;
    let n: i64 = seen.iter().sum();
    let top1 = 100.0 * correct.iter().sum::<i64>() as f64 / n.max(1) as f64;
    let per_class = correct
        .iter()
        .zip(&seen)
        .map(|(c, s)| (*s > 0).then(|| 100.0 * *c as f64 / *s as f64))
        .collect();
    let m = Metrics {
        top1,
        per_class,
        n,
        eval_img_s: n as f64 / secs.max(1e-9),
        train: log,
    };
    write_json(&out.join(METRICS), &m)?;
    Ok(m)
}
