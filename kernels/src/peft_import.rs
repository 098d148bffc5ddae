//! Reading a peft adapter directory (`adapter_config.json` + `adapter_model.safetensors`)
//! onto a loaded timm ViT; module matching is `peft_targets.rs`, writing is `peft_format.rs`.
use crate::checkpoint::read_safetensors;
use crate::error::{Error, Result};
use crate::method::{Ia3Spec, LoraSpec, Method, Target, VeraSpec};
use crate::model::AdaptedVit;
use crate::peft_format::{CONFIG_FILE, PREFIX, WEIGHTS_FILE};
use crate::peft_targets::{feedforward_mismatch, select, ModuleSpec};
use crate::vit::VisionTransformer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn file_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Config keys that change what the adapter computes and that vtab-orch does not model;
/// `null`, `false`, `{}` and `[]` (what peft writes by default) mean "not set".
const REFUSED: [&str; 15] = [
    "rank_pattern",
    "alpha_pattern",
    "layers_to_transform",
    "layers_pattern",
    "use_dora",
    "fan_in_fan_out",
    "lora_bias",
    "target_parameters",
    "trainable_token_indices",
    "layer_replication",
    "alora_invocation_tokens",
    "use_bdlora",
    "velora_config",
    "arrow_config",
    "kasa_config",
];

fn is_set(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => false,
        Value::Object(o) => !o.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

fn reject_unsupported(cfg: &Value, path: &Path) -> Result<()> {
    if let Some(k) = REFUSED.iter().find(|k| is_set(&cfg[**k])) {
        let what = match *k {
            "rank_pattern" | "alpha_pattern" | "layers_to_transform" | "layers_pattern" => {
                "per-layer ranks, scales or layer subsets are not supported (one setting for every block)"
            }
            _ => "vtab-orch does not support it",
        };
        return Err(file_err(
            path,
            format!("`{k}` is set ({}): {what}", cfg[*k]),
        ));
    }
    if cfg["bias"].as_str().is_some_and(|b| b != "none") {
        return Err(file_err(
            path,
            "`bias` other than \"none\" is not supported",
        ));
    }
    Ok(())
}

/// A `target_modules`-like key: a regex string or a list of names (`None` when absent).
fn module_spec(cfg: &Value, key: &str, path: &Path) -> Result<Option<ModuleSpec>> {
    match &cfg[key] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(ModuleSpec::Regex(s.clone()))),
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|l| Some(ModuleSpec::List(l)))
            .ok_or_else(|| file_err(path, format!("`{key}` lists a non-string"))),
        other => Err(file_err(
            path,
            format!("`{key}` must be a regex string or a list of module names, not {other}"),
        )),
    }
}

/// `modules_to_save`: only the classifier head can travel with the adapter.
fn saved_modules(cfg: &Value, path: &Path) -> Result<Vec<String>> {
    let list = match module_spec(cfg, "modules_to_save", path)? {
        None => Vec::new(),
        Some(ModuleSpec::List(l)) => l,
        Some(ModuleSpec::Regex(s)) => vec![s],
    };
    if let Some(m) = list.iter().find(|m| *m != "head") {
        return Err(file_err(
            path,
            format!("`modules_to_save` lists `{m}`: only the classifier `head` is supported"),
        ));
    }
    Ok(list)
}

fn targets_from(cfg: &Value, depth: usize, path: &Path) -> Result<Vec<Target>> {
    let wanted = module_spec(cfg, "target_modules", path)?
        .ok_or_else(|| file_err(path, "adapter_config.json has no target_modules"))?;
    let exclude = module_spec(cfg, "exclude_modules", path)?;
    let saved = saved_modules(cfg, path)?;
    let sel = select(&wanted, exclude.as_ref(), &saved, depth).map_err(|m| file_err(path, m))?;
    if sel.targets.is_empty() {
        return Err(file_err(
            path,
            "`target_modules` selects no module of this ViT (peft would refuse it too)",
        ));
    }
    Ok(sel.targets)
}

/// The method an adapter directory describes, for a ViT with `depth` blocks.
pub fn read_peft_method(dir: &Path, depth: usize) -> Result<Method> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: Value =
        serde_json::from_str(&text).map_err(|e| file_err(&path, format!("invalid JSON: {e}")))?;
    reject_unsupported(&cfg, &path)?;
    let targets = targets_from(&cfg, depth, &path)?;
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
        Some("VERA") => {
            if targets.contains(&Target::PatchEmbed) {
                return Err(file_err(
                    &path,
                    "`target_modules` selects patch_embed.proj, a Conv2d: peft's VeRA adapts \
                     linear layers only (write `attn.proj` rather than `proj`)",
                ));
            }
            Method::Vera(VeraSpec {
                r: num("r", Some(256.0))? as i64,
                d_initial: num("d_initial", Some(0.1))?,
                projection_prng_key: num("projection_prng_key", Some(0.0))? as i64,
                dropout: num("vera_dropout", Some(0.0))?,
                targets,
            })
        }
        Some("IA3") => {
            let ff = module_spec(&cfg, "feedforward_modules", &path)?
                .unwrap_or(ModuleSpec::List(Vec::new()));
            let mismatch =
                feedforward_mismatch(&ff, &targets, depth).map_err(|m| file_err(&path, m))?;
            if let Some(m) = mismatch {
                return Err(file_err(
                    &path,
                    format!(
                        "IA3 `feedforward_modules` marks `{m}` differently from vtab-orch's IA3, \
                         which scales the input of fc2 only (feedforward_modules = [\"fc2\"])"
                    ),
                ));
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
/// An adapter saved without its head (no `modules_to_save=["head"]`) uses the backbone's.
pub fn import_peft(backbone: VisionTransformer, dir: &Path) -> Result<AdaptedVit> {
    let method = read_peft_method(dir, backbone.blocks.len())?;
    let path = dir.join(WEIGHTS_FILE);
    let mut file = read_safetensors(&path)?;
    let num_classes = match file.get(&format!("{PREFIX}head.weight")) {
        Some(head) => Some(head.size()[0]),
        None if backbone.head.is_some() => None,
        None => {
            return Err(file_err(
                &path,
                "the adapter has no head (no `base_model.model.head.weight`: saved without \
                 modules_to_save=[\"head\"]) and the backbone has none either: load the backbone \
                 with its classifier head (timm num_classes > 0) or save the adapter with its head",
            ))
        }
    };
    let vera_ab = (
        file.remove("base_model.vera_A"),
        file.remove("base_model.vera_B"),
    );
    let mut model = AdaptedVit::new(backbone, &method, num_classes, 0)?;
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
        // IA3 vectors are [out, 1], [1, in] or [1, D, 1, 1] in peft, flat here; the conv
        // LoRA's A [r, C, p, p] and B [D, r, 1, 1] are our [r, C*p*p] and [D, r].
        let t = if rest.ends_with(".ia3_l") {
            t.flatten(0, -1)
        } else if rest.starts_with("patch_embed.proj.lora_") && t.dim() == 4 {
            t.flatten(1, -1)
        } else {
            t
        };
        ours.insert(rest.to_string(), t);
    }
    if num_classes.is_none() {
        // The backbone's head is trainable in the model but not in the file: keep it.
        let head = model.vit.head.as_ref().expect("checked above");
        ours.insert("head.weight".into(), head.weight.copy());
        if let Some(b) = &head.bias {
            ours.insert("head.bias".into(), b.copy());
        }
    }
    model.load_trainable_map(ours, &path)?;
    Ok(model)
}
