//! Hugging Face peft's on-disk adapter format (`adapter_config.json` +
//! `adapter_model.safetensors`) for a peft model made from a timm ViT: export and import.
//! Names there are ours prefixed with `base_model.model.`.
use crate::checkpoint::read_safetensors;
use crate::error::{Error, Result};
use crate::method::{Ia3Spec, LoraSpec, Method, Target, VeraSpec};
use crate::model::AdaptedVit;
use crate::vit::VisionTransformer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

const PREFIX: &str = "base_model.model.";
pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// peft `target_modules` entries (matched as name suffixes). `attn.proj`, not `proj`:
/// a bare `proj` also matches timm's `patch_embed.proj`.
fn peft_module(t: Target) -> &'static str {
    match t {
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

/// Writes `model`'s adapter and head so that `peft.PeftModel.from_pretrained(timm_model, dir)`
/// reproduces our logits. LoRA and VeRA on q/k/v slices have no peft equivalent and are refused.
pub fn export_peft(model: &AdaptedVit, dir: &Path) -> Result<()> {
    let targets = model.method.targets();
    let slices = targets.iter().any(|t| t.qkv_slice().is_some());
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
        Method::Lora(s) if !slices => {
            obj.insert("peft_type".into(), json!("LORA"));
            obj.insert("bias".into(), json!("none"));
            obj.insert("r".into(), json!(s.r));
            obj.insert("lora_alpha".into(), json!(s.alpha));
            obj.insert("lora_dropout".into(), json!(s.dropout));
            obj.insert("use_rslora".into(), json!(s.rslora));
            obj.insert("use_dora".into(), json!(false));
            obj.insert("init_lora_weights".into(), json!(true));
        }
        Method::Vera(s) if !slices => {
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
            // Output scaling is [out, 1]; feed-forward input scaling [1, in].
            let shaped = if rest.ends_with(".fc2") {
                t.unsqueeze(0)
            } else {
                t.unsqueeze(-1)
            };
            tensors.push((format!("{PREFIX}{rest}.ia3_l"), shaped));
            continue;
        }
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

fn targets_from(cfg: &Value, dir: &Path) -> Result<Vec<Target>> {
    let list = match &cfg["target_modules"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect::<Vec<_>>(),
        Value::String(s) => {
            return Err(file_err(
                dir,
                format!("regex target_modules `{s}` is not supported; list module names"),
            ))
        }
        _ => return Err(file_err(dir, "adapter_config.json has no target_modules")),
    };
    let mut out = Vec::new();
    for m in list {
        let t = match m.rsplit('.').next().unwrap_or(&m) {
            "qkv" => Target::Qkv,
            "proj" => Target::Proj,
            "fc1" => Target::Fc1,
            "fc2" => Target::Fc2,
            _ => {
                return Err(file_err(
                    dir,
                    format!(
                        "target module `{m}` is not a ViT block linear (qkv, attn.proj, fc1, fc2)"
                    ),
                ))
            }
        };
        out.push(t);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn reject_unsupported(cfg: &Value, dir: &Path) -> Result<()> {
    let set = |k: &str| match &cfg[k] {
        Value::Null | Value::Bool(false) => false,
        Value::Object(o) => !o.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    };
    for k in [
        "use_dora",
        "layers_to_transform",
        "rank_pattern",
        "alpha_pattern",
        "fan_in_fan_out",
        "lora_bias",
    ] {
        if set(k) {
            return Err(file_err(
                dir,
                format!("`{k}` is set in adapter_config.json; vtab-orch does not support it"),
            ));
        }
    }
    if cfg["bias"].as_str().is_some_and(|b| b != "none") {
        return Err(file_err(dir, "`bias` other than \"none\" is not supported"));
    }
    Ok(())
}

/// The method an adapter directory describes.
pub fn read_peft_method(dir: &Path) -> Result<Method> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: Value =
        serde_json::from_str(&text).map_err(|e| file_err(&path, format!("invalid JSON: {e}")))?;
    reject_unsupported(&cfg, &path)?;
    let targets = targets_from(&cfg, &path)?;
    let num = |k: &str, default: Option<f64>| {
        cfg[k]
            .as_f64()
            .or(default)
            .ok_or_else(|| file_err(&path, format!("missing numeric `{k}`")))
    };
    let method = match cfg["peft_type"].as_str() {
        Some("LORA") => Method::Lora(LoraSpec {
            r: num("r", None)? as i64,
            alpha: num("lora_alpha", Some(8.0))?,
            dropout: num("lora_dropout", Some(0.0))?,
            rslora: cfg["use_rslora"].as_bool().unwrap_or(false),
            targets,
        }),
        Some("VERA") => Method::Vera(VeraSpec {
            r: num("r", Some(256.0))? as i64,
            d_initial: num("d_initial", Some(0.1))?,
            projection_prng_key: num("projection_prng_key", Some(0.0))? as i64,
            dropout: num("vera_dropout", Some(0.0))?,
            targets,
        }),
        Some("IA3") => {
            let ff: Vec<String> = cfg["feedforward_modules"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if ff.iter().any(|m| !m.ends_with("fc2"))
                || (targets.contains(&Target::Fc2) && ff.is_empty())
            {
                return Err(file_err(&path, "IA3 feedforward_modules must be exactly fc2 (input scaling) when fc2 is targeted"));
            }
            Method::Ia3(Ia3Spec { targets })
        }
        other => {
            return Err(file_err(
                &path,
                format!("peft_type {other:?} is not supported (LORA, VERA, IA3)"),
            ))
        }
    };
    method.validate().map_err(|m| file_err(&path, m))?;
    Ok(method)
}

/// Loads a peft adapter directory onto `backbone` (whose weights must already be loaded).
pub fn import_peft(backbone: VisionTransformer, dir: &Path) -> Result<AdaptedVit> {
    let method = read_peft_method(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let mut file = read_safetensors(&path)?;
    let head = file.get(&format!("{PREFIX}head.weight")).ok_or_else(|| {
        file_err(
            &path,
            "no head (`base_model.model.head.weight`): save with modules_to_save=[\"head\"]",
        )
    })?;
    let num_classes = head.size()[0];
    let vera_ab = (
        file.remove("base_model.vera_A"),
        file.remove("base_model.vera_B"),
    );
    let mut model = AdaptedVit::new(backbone, &method, Some(num_classes), 0)?;
    if let (Some(vera), (Some(a), Some(b))) = (&model.vera, vera_ab) {
        if a.size() != vera.a.size() || b.size() != vera.b.size() {
            return Err(file_err(
                &path,
                format!(
                    "vera_A/vera_B shapes {:?}/{:?} differ from {:?}/{:?}",
                    a.size(),
                    b.size(),
                    vera.a.size(),
                    vera.b.size()
                ),
            ));
        }
        // Layers hold views of these two tensors: copying updates every layer.
        tch::no_grad(|| {
            vera.a.shallow_clone().copy_(&a);
            vera.b.shallow_clone().copy_(&b);
        });
    }
    let mut ours = BTreeMap::new();
    for (name, t) in file {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            return Err(file_err(&path, format!("unexpected tensor `{name}`")));
        };
        if rest.starts_with("patch_embed") {
            return Err(file_err(
                &path,
                format!("`{name}`: adapters on the patch embedding are not supported"),
            ));
        }
        let t = if rest.ends_with(".ia3_l") {
            t.flatten(0, -1)
        } else {
            t
        };
        ours.insert(rest.to_string(), t);
    }
    model.load_trainable_map(ours, &path)?;
    Ok(model)
}
