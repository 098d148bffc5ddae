//! Hugging Face peft's on-disk adapter format (`adapter_config.json` +
//! `adapter_model.safetensors`) for a peft model made from a timm ViT: export here, import
//! in `peft_import.rs`. Names there are ours prefixed with `base_model.model.`.
use crate::error::{Error, Result};
use crate::method::{Method, Target};
use crate::model::AdaptedVit;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

pub use crate::peft_import::{import_peft, read_peft_method};

pub(crate) const PREFIX: &str = "base_model.model.";
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// peft `target_modules` entries (matched as name suffixes). `attn.proj`, not `proj`:
/// a bare `proj` also matches timm's `patch_embed.proj`.
fn peft_module(t: Target) -> &'static str {
    match t {
        Target::PatchEmbed => "patch_embed.proj",
        Target::Qkv | Target::Q | Target::K | Target::V => "qkv",
        Target::Proj => "attn.proj",
        Target::Fc1 => "fc1",
        Target::Fc2 => "fc2",
    }
}

fn file_err(dir: &Path, msg: impl Into<String>) -> Error {
    Error::File {
        path: dir.to_path_buf(),
        msg: msg.into(),
    }
}

/// Whether peft can hold `method` on a fused-qkv timm ViT: LoRA and VeRA on whole modules and
/// IA3 (whose q/k/v slices become one qkv vector). LoRA or VeRA on q/k/v slices, full
/// fine-tuning, BitFit and linear probes have no peft adapter form.
pub fn has_peft_form(method: &Method) -> bool {
    let slices = method.targets().iter().any(|t| t.qkv_slice().is_some());
    match method {
        Method::Lora(_) | Method::Vera(_) => !slices,
        Method::Ia3(_) => true,
        Method::Linear | Method::Full | Method::Bitfit => false,
    }
}

/// Writes `model`'s adapter and head so that `peft.PeftModel.from_pretrained(timm_model, dir)`
/// reproduces our logits. Methods without a peft form ([`has_peft_form`]) are refused.
pub fn export_peft(model: &AdaptedVit, dir: &Path) -> Result<()> {
    let targets = model.method.targets();
    let peft_form = has_peft_form(&model.method);
    let mut modules: Vec<&str> = targets.iter().map(|&t| peft_module(t)).collect();
    modules.dedup();
    let common = json!({
        "modules_to_save": ["head"], "target_modules": modules, "base_model_name_or_path": null,
        "task_type": null, "inference_mode": true, "fan_in_fan_out": false, "revision": null,
    });
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut cfg = common;
    let obj = cfg.as_object_mut().expect("json object");
    match &model.method {
        Method::Lora(s) if peft_form => {
            obj.insert("peft_type".into(), json!("LORA"));
            obj.insert("bias".into(), json!("none"));
            obj.insert("r".into(), json!(s.r));
            obj.insert("lora_alpha".into(), json!(s.alpha));
            obj.insert("lora_dropout".into(), json!(s.dropout));
            obj.insert("use_rslora".into(), json!(s.rslora));
            obj.insert("use_dora".into(), json!(false));
            obj.insert("init_lora_weights".into(), json!(true));
        }
        Method::Vera(s) if peft_form => {
            let vera = model.vera.as_ref().expect("a VeRA model holds its projections");
            obj.insert("peft_type".into(), json!("VERA"));
            obj.insert("bias".into(), json!("none"));
            obj.insert("r".into(), json!(s.r));
            obj.insert("projection_prng_key".into(), json!(s.projection_prng_key));
            obj.insert("save_projection".into(), json!(true));
            obj.insert("vera_dropout".into(), json!(s.dropout));
            obj.insert("d_initial".into(), json!(s.d_initial));
            obj.insert("init_weights".into(), json!(true));
            tensors.push(("base_model.vera_A".into(), vera.a.shallow_clone()));
            tensors.push(("base_model.vera_B".into(), vera.b.shallow_clone()));
        }
        Method::Ia3(s) => {
            obj.insert("peft_type".into(), json!("IA3"));
            let ff: Vec<&str> = s.targets.iter().filter(|t| **t == Target::Fc2).map(|_| "fc2").collect();
            obj.insert("feedforward_modules".into(), json!(ff));
            obj.insert("init_ia3_weights".into(), json!(true));
        }
        m => {
            return Err(file_err(dir, format!(
                "`{}` has no peft equivalent on a fused-qkv timm model (peft supports LoRA/VeRA on whole modules and IA3)",
                m.label()
            )))
        }
    }
    // Adapter and head tensors; IA3 q/k/v slices become one qkv vector (fixed parts = 1).
    let mut ia3_qkv: BTreeMap<String, Vec<(usize, Tensor)>> = BTreeMap::new();
    let (cfg_c, cfg_p) = (model.vit.cfg.in_chans, model.vit.cfg.patch_size);
    for (name, t) in model.trainable() {
        let t = t.detach();
        if let (Method::Ia3(_), Some(rest)) = (&model.method, name.strip_suffix(".ia3_l")) {
            if let Some((block, part)) = rest
                .rsplit_once(".attn.")
                .filter(|(_, p)| ["q", "k", "v"].contains(p))
            {
                let idx = ["q", "k", "v"].iter().position(|p| *p == part).unwrap_or(0);
                ia3_qkv
                    .entry(format!("{block}.attn.qkv"))
                    .or_default()
                    .push((idx, t));
                continue;
            }
            // Output scaling is [out, 1] (the conv's [1, out, 1, 1]); feed-forward input
            // scaling [1, in].
            let shaped = if rest == "patch_embed.proj" {
                t.view([1, -1, 1, 1])
            } else if rest.ends_with(".fc2") {
                t.unsqueeze(0)
            } else {
                t.unsqueeze(-1)
            };
            tensors.push((format!("{PREFIX}{rest}.ia3_l"), shaped));
            continue;
        }
        // The conv LoRA: A [r, C*p*p] is peft's conv [r, C, p, p], B [D, r] its 1x1 conv.
        let t = match name.strip_prefix("patch_embed.proj.") {
            Some("lora_A.weight") => t.view([t.size()[0], cfg_c, cfg_p, cfg_p]),
            Some("lora_B.weight") => t.view([t.size()[0], -1, 1, 1]),
            _ => t,
        };
        tensors.push((format!("{PREFIX}{name}"), t));
    }
    for (module, parts) in ia3_qkv {
        let d = parts[0].1.size()[0];
        let mut full: Vec<Tensor> = (0..3)
            .map(|_| Tensor::ones([d], (tch::Kind::Float, parts[0].1.device())))
            .collect();
        for (i, t) in parts {
            full[i] = t;
        }
        tensors.push((
            format!("{PREFIX}{module}.ia3_l"),
            Tensor::cat(&full, 0).unsqueeze(-1),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = serde_json::to_string_pretty(&cfg).expect("json");
    std::fs::write(dir.join(CONFIG_FILE), text).map_err(|e| Error::io(dir.join(CONFIG_FILE), e))?;
    let cpu: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n, t.to_device(tch::Device::Cpu).contiguous()))
        .collect();
    let path = dir.join(WEIGHTS_FILE);
    Tensor::write_safetensors(&cpu, &path).map_err(|e| Error::File {
        path,
        msg: e.to_string(),
    })
}
