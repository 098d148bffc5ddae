//! Importing what peft writes: suffix-matched and regex `target_modules`, the patch
//! embedding, head-less adapters, and the config keys that are refused (by name).
//! Logit parity of every fixture adapter is `parity.rs`.
mod common;

use common::*;
use kernels::checkpoint::{load_timm, HeadPolicy};
use kernels::peft_format::import_peft;
use kernels::{Target, VisionTransformer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

fn fixture_dir(name: &str) -> PathBuf {
    fixtures().join(manifest()["adapters"][name]["dir"].as_str().unwrap())
}

fn peft_logits(name: &str) -> Tensor {
    let m = manifest();
    tensors(m["adapters"][name]["io"].as_str().unwrap())
        .remove("logits")
        .unwrap()
}

/// A copy of a fixture adapter directory whose config `edit` changes.
fn edited(name: &str, tag: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let src = fixture_dir(name);
    let dir = std::env::temp_dir().join(format!("vtab-peft-{}-{name}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = "adapter_model.safetensors";
    std::fs::copy(src.join(file), dir.join(file)).unwrap();
    let text = std::fs::read_to_string(src.join("adapter_config.json")).unwrap();
    let mut cfg: Value = serde_json::from_str(&text).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    dir
}

fn import_err(dir: &Path) -> String {
    match import_peft(vit_a(), dir) {
        Ok(_) => panic!("{}: imported, expected an error", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// `["qkv", "proj", "fc1", "fc2"]` and the regex fixture put an adapter on
/// `patch_embed.proj`; dropping it moves the logits away from peft's, so the parity of
/// these fixtures (in `parity.rs`) depends on the conv adapter.
#[test]
fn suffix_and_regex_configs_adapt_the_patch_embedding() {
    let (x, _) = vit_a_io();
    for name in ["lora_suffix", "ia3_suffix", "lora_regex"] {
        let mut model = import_peft(vit_a(), &fixture_dir(name)).unwrap();
        assert!(
            model.method.targets().contains(&Target::PatchEmbed),
            "{name}: {:?}",
            model.method.targets()
        );
        let want = peft_logits(name);
        assert_close(name, &tch::no_grad(|| model.forward(&x, false)), &want, TOL);
        let _ = &mut model;
        model.vit.patch_embed.adapters.clear();
        let without = tch::no_grad(|| model.forward(&x, false));
        assert!(
            max_abs_diff(&without, &want) > 1e-3,
            "{name}: the patch-embedding adapter changes nothing"
        );
    }
    let regex = import_peft(vit_a(), &fixture_dir("lora_regex")).unwrap();
    assert_eq!(
        regex.method.targets(),
        &[Target::PatchEmbed, Target::Qkv, Target::Fc2]
    );
}

#[test]
fn a_headless_adapter_needs_a_backbone_head() {
    let m = manifest();
    let mut cfg = vit_config(&m["vit_a"]);
    cfg.num_classes = 0;
    let mut vit = VisionTransformer::new(&cfg, Device::Cpu).unwrap();
    load_timm(
        &mut vit,
        &fixtures().join("vit_a.safetensors"),
        HeadPolicy::Ignore,
    )
    .unwrap();
    let err = import_peft(vit, &fixture_dir("lora_headless"))
        .err()
        .expect("no head anywhere")
        .to_string();
    assert!(
        err.contains("the adapter has no head") && err.contains("the backbone has none either"),
        "{err}"
    );
    // With the checkpoint's head it imports (its logits: `parity.rs`), and the head is the
    // checkpoint's.
    let model = import_peft(vit_a(), &fixture_dir("lora_headless")).unwrap();
    let head = &tensors("vit_a.safetensors")["head.weight"];
    assert_close(
        "checkpoint head",
        &model.vit.head.as_ref().unwrap().weight,
        head,
        0.0,
    );
}

/// Keys vtab-orch cannot honour are refused with their name; peft's defaults (`{}`,
/// `null`) import.
#[test]
fn unsupported_config_keys_are_refused_by_name() {
    let cases: [(&str, Value); 6] = [
        ("rank_pattern", json!({"fc1": 8})),
        ("alpha_pattern", json!({"qkv": 16})),
        ("layers_to_transform", json!([0])),
        ("layers_pattern", json!("blocks")),
        ("lora_bias", json!(true)),
        ("modules_to_save", json!(["head", "norm"])),
    ];
    for (key, value) in cases {
        let dir = edited("lora", key, |c| c[key] = value);
        let err = import_err(&dir);
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        std::fs::remove_dir_all(&dir).ok();
    }
    let dir = edited("lora", "defaults", |c| {
        for k in ["rank_pattern", "alpha_pattern"] {
            c[k] = json!({});
        }
        for k in ["layers_to_transform", "layers_pattern", "exclude_modules"] {
            c[k] = Value::Null;
        }
    });
    import_peft(vit_a(), &dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn target_modules_that_cannot_be_modelled_are_refused() {
    let cases: [(&str, &str, Value, &[&str]); 4] = [
        // Some blocks only: per-layer adapters.
        (
            "lora",
            "some_blocks",
            json!(r"blocks\.0\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"),
            &["`target_modules`", "blocks.0 only"],
        ),
        // A LayerNorm.
        (
            "lora",
            "norm",
            json!(["qkv", "norm1"]),
            &["`blocks.0.norm1`"],
        ),
        // VeRA on patch_embed.proj: peft refuses a Conv2d too.
        (
            "vera",
            "conv",
            json!(["qkv", "proj"]),
            &["patch_embed.proj", "VeRA"],
        ),
        // Nothing matched.
        ("lora", "none", json!(["q_proj"]), &["selects no module"]),
    ];
    for (name, tag, target_modules, want) in cases {
        let dir = edited(name, tag, |c| c["target_modules"] = target_modules);
        let err = import_err(&dir);
        for w in want {
            assert!(err.contains(w), "{tag}: `{w}` not in: {err}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
    // IA3 whose feed-forward set is not exactly fc2.
    let dir = edited("ia3_suffix", "ff", |c| {
        c["feedforward_modules"] = json!(["fc1", "fc2"])
    });
    let err = import_err(&dir);
    assert!(
        err.contains("feedforward_modules") && err.contains("mlp.fc1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `exclude_modules` is honoured: excluding the patch embedding leaves its tensors
/// unexpected, and the error names them.
#[test]
fn exclude_modules_follows_peft() {
    let dir = edited("lora_suffix", "exclude", |c| {
        c["exclude_modules"] = json!(["patch_embed.proj"])
    });
    let err = import_err(&dir);
    assert!(err.contains("patch_embed.proj.lora_A.weight"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
