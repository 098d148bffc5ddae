//! Parity with timm and peft (fp32, CPU) on fixtures made by scripts/gen_fixtures.py.
mod common;

use common::*;
use kernels::checkpoint::{load_timm, resample_abs_pos_embed, HeadPolicy};
use kernels::optim::{AdamW, AdamWConfig};
use kernels::peft_format::{export_peft, import_peft};
use kernels::{AdaptedVit, Ia3Spec, LoraSpec, Method, Target, VeraSpec, VisionTransformer};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Every peft adapter fixture of `scripts/gen_fixtures.py` (two configurations per method).
const PEFT_FIXTURES: [&str; 34] = [
    "lora",
    "lora_rs",
    "vera",
    "ia3",
    "lora_suffix",
    "ia3_suffix",
    "lora_regex",
    "lora_headless",
    "dora",
    "dora_rs_conv",
    "lora_pissa",
    "lora_olora_rs",
    "ln_tuning",
    "ln_tuning_norm1",
    "loha",
    "loha_conv",
    "lokr",
    "lokr_both",
    "hra",
    "hra_gs_conv",
    "fourierft",
    "fourierft_s",
    "oft",
    "oft_exact_shared",
    "boft",
    "boft_butterfly_conv",
    "shira",
    "shira_seeded",
    "c3a",
    "c3a_zeros_b48",
    "vblora",
    "vblora_top3",
    "randlora",
    "randlora_sparse",
];

fn adapter_entry(name: &str) -> serde_json::Value {
    manifest()["adapters"][name].clone()
}

fn import(name: &str) -> AdaptedVit {
    import_peft(
        vit_a(),
        &fixtures().join(adapter_entry(name)["dir"].as_str().unwrap()),
    )
    .unwrap()
}

#[test]
fn vit_logits_match_timm() {
    let (x, want) = vit_a_io();
    let got = tch::no_grad(|| vit_a().forward(&x, false));
    assert_close("vit_a logits", &got, &want, TOL);
}

#[test]
fn vit_resampled_pos_embed_matches_timm() {
    let m = manifest();
    let mut cfg = vit_config(&m["vit_b"]);
    cfg.img_size = m["vit_b"]["model_img_size"].as_i64().unwrap();
    let mut vit = VisionTransformer::new(&cfg, Device::Cpu).unwrap();
    load_timm(
        &mut vit,
        &fixtures().join("vit_b32.safetensors"),
        HeadPolicy::Load,
    )
    .unwrap();
    let io = tensors("vit_b48_io.safetensors");
    assert_close("resampled pos_embed", &vit.pos_embed, &io["pos_embed"], TOL);
    let got = tch::no_grad(|| vit.forward(&io["x"], false));
    assert_close("vit_b logits at 48 px", &got, &io["logits"], TOL);
}

#[test]
fn resample_is_identity_at_same_size() {
    let pe = Tensor::randn([1, 17, 8], (Kind::Float, Device::Cpu));
    assert_close(
        "same grid",
        &resample_abs_pos_embed(&pe, 4, 1).unwrap(),
        &pe,
        0.0,
    );
    assert!(
        resample_abs_pos_embed(&Tensor::zeros([1, 18, 8], (Kind::Float, Device::Cpu)), 4, 1)
            .is_err()
    );
}

#[test]
fn peft_adapters_match_peft_logits_and_counts() {
    let (x, base_logits) = vit_a_io();
    for name in PEFT_FIXTURES {
        let entry = adapter_entry(name);
        let io = tensors(entry["io"].as_str().unwrap());
        let mut model = import(name);
        let got = tch::no_grad(|| model.forward(&x, false));
        eprintln!(
            "{name}: max |logit - peft's| {:.2e}",
            max_abs_diff(&got, &io["logits"])
        );
        assert_close(&format!("{name} logits vs peft"), &got, &io["logits"], TOL);
        assert!(
            max_abs_diff(&got, &base_logits) > 1e-2,
            "{name}: the adapter changes nothing; the test would be blind"
        );
        // Without a saved head peft trains the adapter only; we count the backbone's head
        // apart (`trainable_backbone`).
        let ours = if entry["head_saved"].as_bool().unwrap() {
            model.counts().trainable
        } else {
            model.counts().trainable_backbone
        };
        assert_eq!(
            ours,
            entry["trainable"].as_i64().unwrap(),
            "{name}: trainable count differs from peft"
        );
        // peft's fresh adapter is the identity: its logits are the base model's. Except HRA
        // with Gram-Schmidt (orthonormalising peft's paired columns leaves r reflections that
        // no longer cancel), FourierFT (standard-normal coefficients by default) and C3A
        // (xavier-uniform kernels by default); VB-LoRA's random bank (+-0.02) and logits make
        // a small update.
        let fresh = max_abs_diff(&io["fresh_logits"], &base_logits);
        if ["hra_gs_conv", "fourierft", "c3a"].contains(&name) {
            assert!(fresh > 1e-3, "{name}: peft's fresh adapter is the identity");
        } else if name.starts_with("vblora") {
            assert!(fresh > 0.0, "{name}: peft's fresh adapter is the identity");
        } else {
            assert_close(
                &format!("{name} fresh peft logits"),
                &io["fresh_logits"],
                &base_logits,
                TOL,
            );
        }
        // Merged and unmerged forwards agree; unmerge restores the base weights.
        let before: Vec<Tensor> = model
            .vit
            .named_tensors()
            .into_iter()
            .map(|(_, t, _)| t.copy())
            .collect();
        model.merge();
        let merged = tch::no_grad(|| model.forward(&x, false));
        // Relative to the logits' size: merging reorders float sums (peft's own merged
        // lora_suffix model differs from its unmerged one by 1.1e-5 at logits up to 5.5).
        let scale = got.abs().max().double_value(&[]).max(1.0);
        assert_close(
            &format!("{name} merged vs unmerged"),
            &merged,
            &got,
            TOL * scale,
        );
        model.unmerge();
        let after: Vec<Tensor> = model
            .vit
            .named_tensors()
            .into_iter()
            .map(|(_, t, _)| t.copy())
            .collect();
        for (a, b) in before.iter().zip(&after) {
            assert_close(&format!("{name} unmerge restores weights"), a, b, 1e-6);
        }
    }
}

/// After a few SGD steps on cross-entropy from the same start, our logits are peft's: every
/// trainable tensor got peft's gradient (DoRA's detached norm included).
#[test]
fn peft_adapters_train_like_peft() {
    let m = manifest();
    let (steps, lr, y) = train_protocol();
    let (x, _) = vit_a_io();
    let mut checked = Vec::new();
    for (name, entry) in m["adapters"].as_object().unwrap() {
        if !entry["trained"].as_bool().unwrap_or(false) {
            continue;
        }
        let io = tensors(entry["io"].as_str().unwrap());
        let model = import(name);
        sgd_steps(&model, &x, &y, steps, lr);
        let got = tch::no_grad(|| model.forward(&x, false));
        assert!(
            max_abs_diff(&got, &io["logits"]) > 1e-2,
            "{name}: training changed nothing; the test would be blind"
        );
        eprintln!(
            "{name}: after {steps} SGD steps max |logit - peft's| {:.2e}",
            max_abs_diff(&got, &io["trained_logits"])
        );
        assert_close(
            &format!("{name} logits after {steps} steps vs peft"),
            &got,
            &io["trained_logits"],
            TOL,
        );
        checked.push(name.clone());
    }
    // Every fixture but the two UNTRAINED in gen_fixtures.py says why (no head; lora_suffix).
    for want in PEFT_FIXTURES
        .iter()
        .filter(|n| !["lora_headless", "lora_suffix"].contains(n))
    {
        assert!(checked.iter().any(|c| c == want), "{want} was not trained");
    }
}

/// Methods peft lacks, against their references: the ones `gen_fixtures.py` writes from the
/// papers (no maintained library implements them) and the Houlsby adapter run by the
/// `adapters` package itself (`gen_adapters_fixtures.py`): logits on perturbed weights, the
/// trainable count, the logits after three SGD steps, and a fresh model being the backbone.
#[test]
fn paper_methods_match_their_references() {
    let m = manifest();
    let (steps, lr, y) = train_protocol();
    let (x, base) = vit_a_io();
    let text = std::fs::read_to_string(fixtures().join("adapters_manifest.json"))
        .expect("fixtures/adapters_manifest.json (run ./x fixtures)");
    let from_adapters: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut refs = m["references"].as_object().unwrap().clone();
    refs.extend(from_adapters["references"].as_object().unwrap().clone());
    for want in [
        "adaptformer",
        "adaptformer_b4_s1",
        "ssf",
        "vpt_deep",
        "vpt_shallow_n1",
        "houlsby",
        "houlsby_rf4_relu",
    ] {
        assert!(refs.contains_key(want), "no reference {want}");
    }
    for (name, e) in &refs {
        let method: Method = serde_json::from_value(e["method"].clone()).unwrap();
        let io = tensors(e["io"].as_str().unwrap());
        if method.spec().fresh_is_identity() {
            assert_close(
                &format!("{name} fresh reference"),
                &io["fresh_logits"],
                &base,
                TOL,
            );
        }
        let mut model = AdaptedVit::new(vit_a(), &method, None, 0).unwrap();
        assert_eq!(
            model.counts().trainable,
            e["trainable"].as_i64().unwrap(),
            "{name}: trainable count"
        );
        let weights = e["weights"].as_str().unwrap();
        model
            .load_trainable_map(tensors(weights), Path::new(weights))
            .unwrap();
        let got = tch::no_grad(|| model.forward(&x, false));
        eprintln!(
            "{name}: max |logit - reference's| {:.2e}",
            max_abs_diff(&got, &io["logits"])
        );
        assert_close(&format!("{name} logits"), &got, &io["logits"], TOL);
        assert!(max_abs_diff(&got, &base) > 1e-2, "{name}: blind");
        if model.can_merge() {
            model.merge();
            let merged = tch::no_grad(|| model.forward(&x, false));
            let scale = got.abs().max().double_value(&[]).max(1.0);
            assert_close(&format!("{name} merged"), &merged, &got, TOL * scale);
            model.unmerge();
            let again = tch::no_grad(|| model.forward(&x, false));
            assert_close(&format!("{name} unmerged"), &again, &got, TOL * scale);
        }
        sgd_steps(&model, &x, &y, steps, lr);
        let got = tch::no_grad(|| model.forward(&x, false));
        eprintln!(
            "{name}: after {steps} SGD steps max |logit - reference's| {:.2e}",
            max_abs_diff(&got, &io["trained_logits"])
        );
        assert!(
            max_abs_diff(&got, &io["logits"]) > 1e-2,
            "{name}: training blind"
        );
        assert_close(&format!("{name} trained"), &got, &io["trained_logits"], TOL);
    }
}

#[test]
fn vera_projections_are_peft_s() {
    let dir = fixtures().join(adapter_entry("vera")["dir"].as_str().unwrap());
    let file =
        kernels::checkpoint::read_safetensors(&dir.join("adapter_model.safetensors")).unwrap();
    let (a, b) = (&file["base_model.vera_A"], &file["base_model.vera_B"]);
    let ours = kernels::adapters::VeraProjections::generate(
        a.size()[0],
        a.size()[1],
        b.size()[0],
        7,
        Device::Cpu,
    )
    .unwrap();
    assert_close("vera_A from the seeded generator", &ours.a, a, 0.0);
    assert_close("vera_B from the seeded generator", &ours.b, b, 0.0);
}

#[test]
fn fresh_adapters_are_the_identity() {
    let (x, want) = vit_a_io();
    use Target::*;
    let methods = [
        Method::new(LoraSpec {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            rslora: false,
            targets: vec![PatchEmbed, Q, V, Proj, Fc1, Fc2],
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
            targets: vec![PatchEmbed, K, V, Fc2],
        }),
        Method::bitfit(),
        Method::full(),
        Method::linear(),
    ];
    // And every registered method's bench configurations.
    let registered = kernels::bench::standard_methods()
        .into_iter()
        .map(|(_, m)| m);
    for m in methods
        .into_iter()
        .chain(registered)
        .filter(|m| m.spec().fresh_is_identity())
    {
        let model = AdaptedVit::new(vit_a(), &m, None, 3).unwrap();
        let got = tch::no_grad(|| model.forward(&x, false));
        assert_close(&format!("fresh {}", m.label()), &got, &want, 1e-6);
    }
}

/// LoRA on the q and v slices of the fused qkv, against a hand-merged timm model.
#[test]
fn lora_on_qkv_slices_matches_hand_merge() {
    let m = manifest();
    let e = &m["lora_qv"];
    let method = Method::new(LoraSpec {
        r: e["r"].as_i64().unwrap(),
        alpha: e["alpha"].as_f64().unwrap(),
        dropout: 0.0,
        rslora: false,
        targets: vec![Target::Q, Target::V],
        use_dora: false,
        init: Default::default(),
    });
    let mut model = AdaptedVit::new(vit_a(), &method, None, 0).unwrap();
    assert_eq!(
        model.counts().trainable_backbone,
        e["trainable"].as_i64().unwrap()
    );
    let mut file = tensors(e["weights"].as_str().unwrap());
    let head = model.vit.head.as_ref().unwrap();
    file.insert("head.weight".into(), head.weight.copy());
    file.insert("head.bias".into(), head.bias.as_ref().unwrap().copy());
    model
        .load_trainable_map(file, Path::new("lora_qv.safetensors"))
        .unwrap();
    let (x, _) = vit_a_io();
    let want = &tensors(e["io"].as_str().unwrap())["logits"];
    let got = tch::no_grad(|| model.forward(&x, false));
    assert_close("lora q,v slices", &got, want, TOL);
    model.merge();
    assert_close(
        "lora q,v merged",
        &tch::no_grad(|| model.forward(&x, false)),
        want,
        TOL,
    );
}

/// The scale multiplies only the adapter's delta, never the base output.
#[test]
fn lora_scale_multiplies_only_the_delta() {
    let (x, base) = vit_a_io();
    let spec = |alpha| {
        Method::new(LoraSpec {
            r: 4,
            alpha,
            dropout: 0.0,
            rslora: false,
            targets: vec![Target::Fc2],
            use_dora: false,
            init: Default::default(),
        })
    };
    let mut outs = Vec::new();
    for alpha in [4.0, 8.0] {
        let mut model = AdaptedVit::new(vit_a(), &spec(alpha), None, 5).unwrap();
        // The same non-zero A and B in both models, set rather than drawn: the default
        // generator is shared with the tests running beside this one.
        tch::no_grad(|| {
            for (name, t) in model.trainable() {
                if name.ends_with("lora_B.weight") {
                    t.shallow_clone().copy_(&(Tensor::ones_like(t) * 0.05));
                } else if name.ends_with("lora_A.weight") {
                    let n = t.numel() as i64;
                    let a = Tensor::arange(n, (Kind::Float, Device::Cpu)).view(t.size().as_slice());
                    t.shallow_clone().copy_(&((a * 0.37).sin() * 0.1));
                }
            }
        });
        let _ = &mut model;
        outs.push(tch::no_grad(|| {
            model.vit.blocks[0]
                .mlp
                .fc2
                .forward(&x.flatten(1, -1).narrow(1, 0, 192).view([4, 1, 192]), false)
        }));
    }
    let plain = tch::no_grad(|| {
        vit_a().blocks[0]
            .mlp
            .fc2
            .forward(&x.flatten(1, -1).narrow(1, 0, 192).view([4, 1, 192]), false)
    });
    let (d4, d8) = (&outs[0] - &plain, &outs[1] - &plain);
    assert!(
        d4.abs().max().double_value(&[]) > 1e-3,
        "delta is zero: test would be blind"
    );
    assert_close("delta doubles with alpha", &d8, &(&d4 * 2.0), 1e-6);
    let _ = base;
}

#[test]
fn adamw_matches_pytorch() {
    let m = manifest();
    let e = &m["adamw"];
    let io = tensors(e["file"].as_str().unwrap());
    let names = ["w", "b", "norm"];
    let params: Vec<(String, Tensor)> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                io[&format!("init.{n}")].copy().set_requires_grad(true),
            )
        })
        .collect();
    let betas = e["betas"].as_array().unwrap();
    let cfg = AdamWConfig {
        weight_decay: e["weight_decay"].as_f64().unwrap(),
        betas: (betas[0].as_f64().unwrap(), betas[1].as_f64().unwrap()),
        eps: e["eps"].as_f64().unwrap(),
    };
    let mut opt = AdamW::new(&params, cfg);
    for step in 0..e["steps"].as_i64().unwrap() {
        for (n, p) in &params {
            // Set .grad through autograd: d/dp sum(p * g) = g.
            (p * &io[&format!("grad{step}.{n}")])
                .sum(Kind::Float)
                .backward();
        }
        opt.step(e["lr"].as_f64().unwrap()).unwrap();
        opt.zero_grad().unwrap();
        for (n, p) in &params {
            assert_close(
                &format!("AdamW step {step} {n}"),
                p,
                &io[&format!("after{step}.{n}")],
                TOL,
            );
        }
    }
}

#[test]
fn trainable_tensors_roundtrip() {
    let model = import("lora");
    let dir = std::env::temp_dir().join(format!("vtab-kernels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("trainable.safetensors");
    model.save_trainable(&path).unwrap();
    let method = model.method.clone();
    let mut other = AdaptedVit::new(vit_a(), &method, Some(10), 99).unwrap();
    other.load_trainable(&path).unwrap();
    let (x, _) = vit_a_io();
    assert_close(
        "reloaded",
        &tch::no_grad(|| other.forward(&x, false)),
        &tch::no_grad(|| model.forward(&x, false)),
        0.0,
    );
    // A file for another method is refused with the tensor's name.
    let mut wrong = AdaptedVit::new(
        vit_a(),
        &Method::new(Ia3Spec {
            targets: vec![Target::Fc2],
        }),
        Some(10),
        0,
    )
    .unwrap();
    let err = wrong.load_trainable(&path).unwrap_err().to_string();
    assert!(err.contains("ia3_l"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn checkpoint_errors_name_the_tensor() {
    let m = manifest();
    // Config b weights into a config-a model: shapes differ.
    let mut vit = VisionTransformer::new(&vit_config(&m["vit_a"]), Device::Cpu).unwrap();
    let err = load_timm(
        &mut vit,
        &fixtures().join("vit_b32.safetensors"),
        HeadPolicy::Load,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("has shape") && err.contains("expects"),
        "{err}"
    );
    // A headless checkpoint: fine when the head is ignored, an error when it is required.
    let dir = std::env::temp_dir().join(format!("vtab-headless-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = tensors("vit_a.safetensors");
    file.retain(|k, _| !k.starts_with("head."));
    let path = dir.join("headless.safetensors");
    Tensor::write_safetensors(
        &file
            .iter()
            .map(|(k, v)| (k.as_str(), v.shallow_clone()))
            .collect::<Vec<_>>(),
        &path,
    )
    .unwrap();
    load_timm(&mut vit, &path, HeadPolicy::Ignore).unwrap();
    let err = load_timm(&mut vit, &path, HeadPolicy::Load)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("head.weight") && err.contains("missing"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn python() -> String {
    std::env::var("VTAB_ORCH_PYTHON").expect(
        "VTAB_ORCH_PYTHON is not set: the peft interoperability test needs Python with torch, timm and peft. \
         Run the tests through `./x test`, which installs them and sets it.",
    )
}

/// Exported adapters load in peft (`PeftModel.from_pretrained`) and give our logits;
/// re-importing the export gives them too.
#[test]
fn export_loads_in_peft_with_our_logits() {
    let m = manifest();
    let dir = std::env::temp_dir().join(format!("vtab-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = m["vit_a"].clone();
    for k in ["weights", "io"] {
        cfg.as_object_mut().unwrap().remove(k);
    }
    std::fs::write(dir.join("cfg.json"), cfg.to_string()).unwrap();
    let (x, _) = vit_a_io();
    Tensor::write_safetensors(&[("x", x.shallow_clone())], dir.join("x.safetensors")).unwrap();
    // Every peft fixture, as imported.
    let mut models: Vec<(String, AdaptedVit)> = PEFT_FIXTURES
        .iter()
        .map(|n| (n.to_string(), import(n)))
        .collect();
    // IA3 on k and v only: exported as a qkv vector whose q part is 1.
    let mut kv = AdaptedVit::new(
        vit_a(),
        &Method::new(Ia3Spec {
            targets: vec![Target::K, Target::V, Target::Fc2],
        }),
        Some(10),
        1,
    )
    .unwrap();
    tch::no_grad(|| {
        kv.trainable()
            .iter()
            .for_each(|(_, t)| t.shallow_clone().copy_(&(Tensor::rand_like(t) + 0.5)))
    });
    let _ = &mut kv;
    models.push(("ia3_kv".into(), kv));
    // LoRA on the patch embedding alone (peft's Conv2d LoRA), with a non-zero B.
    let mut pe = AdaptedVit::new(
        vit_a(),
        &Method::new(LoraSpec {
            r: 2,
            alpha: 3.0,
            dropout: 0.0,
            rslora: false,
            targets: vec![Target::PatchEmbed],
            use_dora: false,
            init: Default::default(),
        }),
        None, // the checkpoint's head: the logits differ from the base model's by the adapter only
        2,
    )
    .unwrap();
    tch::no_grad(|| {
        pe.trainable()
            .iter()
            .filter(|(n, _)| n.contains("lora_"))
            .for_each(|(_, t)| t.shallow_clone().copy_(&(Tensor::randn_like(t) * 0.3)))
    });
    let _ = &mut pe;
    assert!(
        max_abs_diff(&tch::no_grad(|| pe.forward(&x, false)), &vit_a_io().1) > 1e-2,
        "the patch-embedding LoRA changes nothing: the export check would be blind"
    );
    models.push(("lora_patch_embed".into(), pe));
    for (name, model) in &models {
        let out = dir.join(name);
        export_peft(model, &out).unwrap();
        let ours = tch::no_grad(|| model.forward(&x, false));
        let reimported = import_peft(vit_a(), &out).unwrap();
        assert_close(
            &format!("{name} re-imported"),
            &tch::no_grad(|| reimported.forward(&x, false)),
            &ours,
            TOL,
        );
        let result = dir.join(format!("{name}_out.safetensors"));
        let status = std::process::Command::new(python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peft_check.py"))
            .args([
                dir.join("cfg.json"),
                fixtures().join("vit_a.safetensors"),
                out.clone(),
                dir.join("x.safetensors"),
                result.clone(),
            ])
            .output()
            .expect("running the peft check script");
        let said = String::from_utf8_lossy(&status.stderr);
        assert!(
            status.status.success(),
            "{name}: peft could not load our export:\n{said}"
        );
        // A key peft's config class lacks makes it warn that the adapter comes from a newer
        // peft: our exports write only the keys of the method's own config.
        assert!(
            !said.contains("Unexpected keyword arguments"),
            "{name}: peft warned about our adapter_config.json:\n{said}"
        );
        let got = tensors_at(&result);
        assert_close(
            &format!("{name}: peft logits of our export"),
            &got["logits"],
            &ours,
            TOL,
        );
        // peft trains the whole qkv vector where we train the k and v parts only.
        if name != "ia3_kv" {
            assert_eq!(
                got["trainable"].int64_value(&[0]),
                model.counts().trainable,
                "{name}: peft's trainable count of our export"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn tensors_at(p: &Path) -> std::collections::BTreeMap<String, Tensor> {
    kernels::checkpoint::read_safetensors(p).unwrap()
}

#[test]
fn slice_lora_is_refused_by_peft_export() {
    let m = AdaptedVit::new(
        vit_a(),
        &Method::new(LoraSpec {
            r: 2,
            alpha: 2.0,
            dropout: 0.0,
            rslora: false,
            targets: vec![Target::Q, Target::V],
            use_dora: false,
            init: Default::default(),
        }),
        Some(10),
        0,
    )
    .unwrap();
    let err = export_peft(&m, &std::env::temp_dir().join("never"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no peft equivalent"), "{err}");
}
