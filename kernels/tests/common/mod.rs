//! Shared helpers for the kernels' integration tests: fixture paths and tensor comparison.
#![allow(dead_code)]
use kernels::checkpoint::{load_timm, read_safetensors, HeadPolicy};
use kernels::{AdaptedVit, VisionTransformer, VitConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Tensor};

pub const TOL: f64 = 1e-5;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures().join("manifest.json"))
        .expect("fixtures/manifest.json (run ./x fixtures)");
    serde_json::from_str(&text).expect("manifest.json is JSON")
}

pub fn tensors(file: &str) -> BTreeMap<String, Tensor> {
    read_safetensors(&fixtures().join(file)).unwrap_or_else(|e| panic!("{e}"))
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

#[track_caller]
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f64) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs error {d:.3e} > {tol:.0e}");
}

/// The timm config of a manifest entry (`vit_a`, `vit_b`).
pub fn vit_config(entry: &Value) -> VitConfig {
    VitConfig {
        img_size: entry["img_size"].as_i64().unwrap(),
        patch_size: entry["patch_size"].as_i64().unwrap(),
        in_chans: 3,
        num_classes: entry["num_classes"].as_i64().unwrap(),
        embed_dim: entry["embed_dim"].as_i64().unwrap(),
        depth: entry["depth"].as_i64().unwrap(),
        num_heads: entry["num_heads"].as_i64().unwrap(),
        mlp_ratio: entry["mlp_ratio"].as_f64().unwrap(),
        qkv_bias: true,
    }
}

/// Config a with its fixture weights (head included), fp32 on the CPU.
pub fn vit_a() -> VisionTransformer {
    let m = manifest();
    let mut vit = VisionTransformer::new(&vit_config(&m["vit_a"]), Device::Cpu).unwrap();
    load_timm(
        &mut vit,
        &fixtures().join("vit_a.safetensors"),
        HeadPolicy::Load,
    )
    .unwrap();
    vit
}

pub fn vit_a_io() -> (Tensor, Tensor) {
    let mut io = tensors("vit_a_io.safetensors");
    (io.remove("x").unwrap(), io.remove("logits").unwrap())
}

/// The fixtures' training protocol (manifest `train`): steps, learning rate, labels.
pub fn train_protocol() -> (i64, f64, Tensor) {
    let m = manifest();
    let t = &m["train"];
    let labels: Vec<i64> = t["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    (
        t["steps"].as_i64().unwrap(),
        t["lr"].as_f64().unwrap(),
        Tensor::from_slice(&labels),
    )
}

/// `steps` plain SGD steps on cross-entropy over every trainable tensor, as
/// `scripts/gen_fixtures.py` takes them.
pub fn sgd_steps(model: &AdaptedVit, x: &Tensor, y: &Tensor, steps: i64, lr: f64) {
    for _ in 0..steps {
        model
            .forward(x, true)
            .cross_entropy_for_logits(y)
            .backward();
        tch::no_grad(|| {
            for (_, p) in model.trainable() {
                let _ = p.shallow_clone().g_sub_(&(p.grad() * lr));
                let _ = p.grad().zero_();
            }
        });
    }
}
