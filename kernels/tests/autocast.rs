//! Under bf16 autocast every adapter keeps the layer output in bf16 (no silent promotion of
//! a whole [B, N, 3D] activation to fp32 by an fp32 adapter vector), and the bf16 result
//! stays close to the fp32 one. Checked with CPU autocast, which follows the same rules.
mod common;

use common::*;
use kernels::accel::Autocast;
use kernels::{AdaptedVit, Ia3Spec, LoraSpec, Method, Target, VeraSpec};
use tch::{Device, Kind, Tensor};

#[test]
fn adapters_stay_in_bf16_under_autocast() {
    use Target::*;
    let methods = [
        Method::new(LoraSpec {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            rslora: false,
            targets: vec![Q, V, Fc2],
            use_dora: false,
            init: Default::default(),
        }),
        Method::new(VeraSpec {
            r: 8,
            d_initial: 0.1,
            projection_prng_key: 0,
            dropout: 0.0,
            targets: vec![Qkv, Fc1, Fc2],
        }),
        Method::new(Ia3Spec {
            targets: vec![K, V, Fc2],
        }),
        Method::new(Ia3Spec {
            targets: vec![Qkv, Fc1],
        }),
    ];
    let (x, _) = vit_a_io();
    for m in methods {
        let mut model = AdaptedVit::new(vit_a(), &m, Some(10), 0).unwrap();
        // Non-trivial adapter values of a trained adapter's size (IA3 vectors near 1,
        // everything else small; the head is left as initialised).
        tch::no_grad(|| {
            for (name, t) in model.trainable() {
                let base = if name.ends_with("ia3_l") { 1.0 } else { 0.0 };
                if !name.starts_with("head.") {
                    t.shallow_clone()
                        .copy_(&((Tensor::rand_like(t) - 0.5) * 0.2 + base));
                }
            }
        });
        let _ = &mut model;
        assert_bf16(&m.label(), &model, &x, 0.05);
    }
}

/// Under bf16 autocast the qkv and fc2 outputs of `model`'s first block stay bf16 and its
/// logits for `x` are within `bound` x the logit scale of fp32's.
fn assert_bf16(label: &str, model: &AdaptedVit, x: &Tensor, bound: f64) {
    let tokens = Tensor::randn([2, 17, 48], (Kind::Float, Device::Cpu));
    let fp32 = tch::no_grad(|| model.forward(x, false));
    let (qkv, fc2, bf16) = tch::no_grad(|| {
        let _ac = Autocast::enter(Device::Cpu, Kind::BFloat16).unwrap();
        let b = &model.vit.blocks[0];
        let qkv = b.attn.qkv.forward(&tokens, false);
        let fc2 = b.mlp.fc2.forward(&b.mlp.fc1.forward(&tokens, false), false);
        (qkv, fc2, model.forward(x, false))
    });
    assert_eq!(qkv.kind(), Kind::BFloat16, "{label}: qkv output promoted");
    assert_eq!(fc2.kind(), Kind::BFloat16, "{label}: fc2 output promoted");
    let err = max_abs_diff(&bf16.to_kind(Kind::Float), &fp32);
    let scale = fp32.abs().max().double_value(&[]);
    eprintln!("{label}: bf16 logits off by {err:.2e} (logit scale {scale:.2e})");
    assert!(
        err <= bound * scale,
        "{label}: bf16 logits off by {err} (logit scale {scale})"
    );
}

/// Every registered method's bench configurations (the GPU path trains them under bf16
/// autocast): the qkv and fc2 outputs stay bf16, the logits stay near fp32's, and a training
/// step gives every trainable tensor a finite gradient.
#[test]
fn every_method_runs_under_bf16_autocast() {
    let (x, _) = vit_a_io();
    let y = Tensor::from_slice(&[1i64, 7, 3, 0]);
    for (row, m) in kernels::bench::standard_methods() {
        let mut model = AdaptedVit::new(vit_a(), &m, Some(10), 0).unwrap();
        // Near each tensor's start (zero-started ones become small, scales stay near 1).
        tch::no_grad(|| {
            for (_, t) in model.trainable() {
                let _ = t
                    .shallow_clone()
                    .g_add_(&((Tensor::rand_like(t) - 0.5) * 0.04));
            }
        });
        let _ = &mut model;
        // 0.4-0.8 % of the logit scale measured for every row but FourierFT's, whose
        // standard-normal coefficients (peft's default) times 150 make a delta some 30 times
        // the weights of this 48-wide model: 12.8 % measured.
        let bound = if row.starts_with("fourierft") {
            0.2
        } else {
            0.02
        };
        assert_bf16(row, &model, &x, bound);
        let loss = {
            let _ac = Autocast::enter(Device::Cpu, Kind::BFloat16).unwrap();
            model
                .forward(&x, true)
                .to_kind(Kind::Float)
                .cross_entropy_for_logits(&y)
        };
        loss.backward();
        for (name, t) in model.trainable() {
            let g = t.grad();
            assert!(g.defined(), "{row}: no gradient for {name}");
            assert!(
                bool::try_from(g.isfinite().all()).unwrap(),
                "{row}: non-finite gradient for {name}"
            );
        }
    }
}

/// Gradients through LoRA on the q and v slices equal those of the same update written as
/// one full-width LoRA whose B is zero on the k rows.
#[test]
fn slice_lora_gradients_match_block_lora() {
    let d = 48;
    let spec = |targets| {
        Method::new(LoraSpec {
            r: 2,
            alpha: 2.0,
            dropout: 0.0,
            rslora: false,
            targets,
            use_dora: false,
            init: Default::default(),
        })
    };
    let slices = AdaptedVit::new(vit_a(), &spec(vec![Target::Q, Target::V]), Some(10), 0).unwrap();
    let full = AdaptedVit::new(vit_a(), &spec(vec![Target::Qkv]), Some(10), 0).unwrap();
    let x = Tensor::randn([3, 5, d], (Kind::Float, Device::Cpu));
    let get = |m: &AdaptedVit, name: &str| {
        m.trainable()
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .shallow_clone()
    };
    let (aq, bq) = (
        get(&slices, "blocks.0.attn.q.lora_A.weight"),
        get(&slices, "blocks.0.attn.q.lora_B.weight"),
    );
    let (av, bv) = (
        get(&slices, "blocks.0.attn.v.lora_A.weight"),
        get(&slices, "blocks.0.attn.v.lora_B.weight"),
    );
    tch::no_grad(|| {
        bq.shallow_clone().copy_(&Tensor::randn_like(&bq));
        bv.shallow_clone().copy_(&Tensor::randn_like(&bv));
    });
    // Full-width equivalent: A = [A_q; A_v] (2r x d), B = [[B_q, 0], [0, 0], [0, B_v]].
    let a = Tensor::cat(&[&aq, &av], 0).detach().set_requires_grad(true);
    let z = Tensor::zeros([d, 2], (Kind::Float, Device::Cpu));
    let b = Tensor::cat(
        &[
            Tensor::cat(&[&bq.detach(), &z], 1),
            Tensor::cat(&[&z, &z], 1),
            Tensor::cat(&[&z, &bv.detach()], 1),
        ],
        0,
    )
    .set_requires_grad(true);
    let base = &full.vit.blocks[0].attn.qkv.base;
    let y_ref = base.forward(&x) + x.linear::<Tensor>(&a, None).linear::<Tensor>(&b, None);
    let y = slices.vit.blocks[0].attn.qkv.forward(&x, true);
    assert_close("forward", &y, &y_ref, 1e-5);
    let w = Tensor::randn_like(&y);
    (&y * &w).sum(Kind::Float).backward();
    (&y_ref * &w).sum(Kind::Float).backward();
    let ga = a.grad();
    let gb = b.grad();
    assert_close("dA_q", &aq.grad(), &ga.narrow(0, 0, 2), 1e-4);
    assert_close("dA_v", &av.grad(), &ga.narrow(0, 2, 2), 1e-4);
    assert_close(
        "dB_q",
        &bq.grad(),
        &gb.narrow(0, 0, d).narrow(1, 0, 2),
        1e-4,
    );
    assert_close(
        "dB_v",
        &bv.grad(),
        &gb.narrow(0, 2 * d, d).narrow(1, 2, 2),
        1e-4,
    );
}
