//! Hugging Face peft's on-disk adapter format (`adapter_config.json` +
//! `adapter_model.safetensors`) for a peft model made from a timm ViT: export here, import
//! in `peft_import.rs`. Names there are ours prefixed with `base_model.model.`.
use crate::error::{Error, Result};
use crate::method::{Method, Target};
use crate::model::AdaptedVit;
use serde_json::json;
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

/// Whether peft can hold `method` on a fused-qkv timm ViT (its spec's `peft_config`).
pub fn has_peft_form(method: &Method) -> bool {
    method.spec().peft_config().is_ok()
}

/// Writes `model`'s adapter and head so that `peft.PeftModel.from_pretrained(timm_model, dir)`
/// reproduces our logits. Methods without a peft form ([`has_peft_form`]) are refused.
pub fn export_peft(model: &AdaptedVit, dir: &Path) -> Result<()> {
    let spec = model.method.spec();
    let own = spec.peft_config().map_err(|why| {
        file_err(
            dir,
            format!(
                "`{}` has no peft equivalent on a fused-qkv timm model: {why}",
                model.method.label()
            ),
        )
    })?;
    let mut modules: Vec<&str> = model
        .method
        .targets()
        .iter()
        .map(|&t| peft_module(t))
        .collect();
    modules.dedup();
    let mut cfg = json!({
        "modules_to_save": ["head"], "target_modules": modules, "base_model_name_or_path": null,
        "task_type": null, "inference_mode": true, "revision": null,
    });
    cfg.as_object_mut().expect("json object").extend(own);
    let mut tensors = spec.peft_tensors(model.trainable(), &model.vit.cfg);
    tensors.extend(
        model
            .buffers
            .iter()
            .map(|(n, t)| (format!("base_model.{n}"), t.shallow_clone())),
    );
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
