//! Reading a peft adapter directory (`adapter_config.json` + `adapter_model.safetensors`)
//! onto a loaded timm ViT; module matching is `peft_targets.rs`, writing is `peft_format.rs`.
use crate::checkpoint::read_safetensors;
use crate::error::{Error, Result};
use crate::method::{Method, Target, MAX_RANK};
use crate::model::AdaptedVit;
use crate::peft_format::{CONFIG_FILE, PREFIX, WEIGHTS_FILE};
use crate::peft_targets::{select, ModuleSpec};
use crate::vit::VisionTransformer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use tch::Tensor;

/// The most classes an imported head may have (as many as a list file's labels may name).
pub const MAX_CLASSES: i64 = 100_000;

fn file_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Config keys that change what the adapter computes and that vtab-orch does not model;
/// `null`, `false`, `{}` and `[]` (what peft writes by default) mean "not set".
const REFUSED: [&str; 14] = [
    "rank_pattern",
    "alpha_pattern",
    "layers_to_transform",
    "layers_pattern",
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

/// The method an adapter directory describes, for a ViT with `depth` blocks.
pub fn read_peft_method(dir: &Path, depth: usize) -> Result<Method> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse_peft_config(&text, depth, &path)
}

/// A number of `cfg` (`default` when absent), finite.
fn number(cfg: &Value, key: &str, default: Option<f64>, path: &Path) -> Result<f64> {
    let v = &cfg[key];
    match v {
        Value::Null => default.ok_or_else(|| file_err(path, format!("missing numeric `{key}`"))),
        _ => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| file_err(path, format!("`{key}` must be a number, not {v}"))),
    }
}

/// An integer of `cfg` in `range` (`default` when absent), read exactly: a JSON integer keeps
/// every digit (through a float, a key above 2^53 would round to another one); a whole float
/// such as `8.0` is taken too.
fn integer(
    cfg: &Value,
    key: &str,
    default: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
    path: &Path,
) -> Result<i64> {
    let v = &cfg[key];
    if v.is_null() {
        return default.ok_or_else(|| file_err(path, format!("missing integer `{key}`")));
    }
    const EXACT: f64 = (1u64 << 53) as f64;
    v.as_i64()
        .or_else(|| {
            v.as_f64()
                .filter(|x| x.fract() == 0.0 && x.abs() < EXACT)
                .map(|x| x as i64)
        })
        .filter(|x| range.contains(x))
        .ok_or_else(|| {
            file_err(
                path,
                format!(
                    "`{key}` must be an integer from {} to {}, not {v}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// An `adapter_config.json` being read, for a method's peft reader: typed access to its
/// keys (errors name the file and the key) and the targets its `target_modules` select.
pub struct PeftConfig<'a> {
    pub cfg: &'a Value,
    pub path: &'a Path,
    /// The ViT's depth (for module matching).
    pub depth: usize,
}

impl PeftConfig<'_> {
    pub fn err(&self, msg: impl Into<String>) -> Error {
        file_err(self.path, msg)
    }

    /// `target_modules` (required), `exclude_modules` and `modules_to_save`: what module
    /// matching reads.
    fn matching(&self) -> Result<(ModuleSpec, Option<ModuleSpec>, Vec<String>)> {
        let wanted = self
            .module_spec("target_modules")?
            .ok_or_else(|| self.err("adapter_config.json has no target_modules"))?;
        let exclude = self.module_spec("exclude_modules")?;
        Ok((wanted, exclude, saved_modules(self.cfg, self.path)?))
    }

    /// The adapter targets (linear layers, the patch embedding) that `target_modules` less
    /// `exclude_modules` selects, sorted; an error if it selects anything else or nothing.
    pub fn targets(&self) -> Result<Vec<Target>> {
        let (wanted, exclude, saved) = self.matching()?;
        let sel = select(&wanted, exclude.as_ref(), &saved, self.depth).map_err(|m| self.err(m))?;
        if sel.targets.is_empty() {
            return Err(self
                .err("`target_modules` selects no module of this ViT (peft would refuse it too)"));
        }
        Ok(sel.targets)
    }

    /// The timm module names `target_modules` less `exclude_modules` (and `modules_to_save`)
    /// selects, for methods that adapt other modules than linear layers.
    pub fn modules(&self) -> Result<Vec<String>> {
        let (wanted, exclude, saved) = self.matching()?;
        crate::peft_targets::select_names(&wanted, exclude.as_ref(), &saved, self.depth)
            .map_err(|m| self.err(m))
    }

    /// A finite number (`default` when absent).
    pub fn number(&self, key: &str, default: Option<f64>) -> Result<f64> {
        number(self.cfg, key, default, self.path)
    }

    /// An integer in `range` (`default` when absent), read exactly.
    pub fn integer(
        &self,
        key: &str,
        default: Option<i64>,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64> {
        integer(self.cfg, key, default, range, self.path)
    }

    /// `r`, an integer in 1..=[`MAX_RANK`].
    pub fn rank(&self, default: Option<i64>) -> Result<i64> {
        self.integer("r", default, 1..=MAX_RANK)
    }

    /// A boolean key (absent or not a boolean: false).
    pub fn flag(&self, key: &str) -> bool {
        self.cfg[key].as_bool().unwrap_or(false)
    }

    /// A `target_modules`-like key (`None` when absent).
    pub fn module_spec(&self, key: &str) -> Result<Option<ModuleSpec>> {
        module_spec(self.cfg, key, self.path)
    }
}

/// The method the `adapter_config.json` text `text` (read from `path`, named in errors)
/// describes, for a ViT with `depth` blocks: the registry method whose reader takes its
/// `peft_type`. Pure: no file is read. Ranks are integers in 1..=[`MAX_RANK`], every other
/// number finite.
pub fn parse_peft_config(text: &str, depth: usize, path: &Path) -> Result<Method> {
    let cfg: Value =
        serde_json::from_str(text).map_err(|e| file_err(path, format!("invalid JSON: {e}")))?;
    if !cfg.is_object() {
        return Err(file_err(path, "must hold a JSON object"));
    }
    reject_unsupported(&cfg, path)?;
    let readers: Vec<_> = crate::adapters::REGISTRY
        .iter()
        .filter_map(|m| m.peft.as_ref())
        .collect();
    let peft_type = cfg["peft_type"].as_str();
    let Some(reader) = readers.iter().find(|r| Some(r.peft_type) == peft_type) else {
        let known: Vec<&str> = readers.iter().map(|r| r.peft_type).collect();
        return Err(file_err(
            path,
            format!(
                "peft_type {peft_type:?} is not supported ({})",
                known.join(", ")
            ),
        ));
    };
    let c = PeftConfig {
        cfg: &cfg,
        path,
        depth,
    };
    let method = (reader.read)(&c)?;
    method.validate().map_err(|m| file_err(path, m))?;
    Ok(method)
}

/// The classes of the saved head `head` (`[classes, embed_dim]`, at most [`MAX_CLASSES`]).
fn head_classes(head: &Tensor, embed_dim: i64, path: &Path) -> Result<i64> {
    match head.size()[..] {
        [n, d] if d == embed_dim && (1..=MAX_CLASSES).contains(&n) => Ok(n),
        ref got => Err(file_err(
            path,
            format!(
                "tensor `{PREFIX}head.weight` has shape {got:?}, expected [classes, \
                 {embed_dim}] with 1 to {MAX_CLASSES} classes (the backbone's embed_dim): \
                 the adapter was saved from another model"
            ),
        )),
    }
}

/// Loads a peft adapter directory onto `backbone` (whose weights must already be loaded).
/// An adapter saved without its head (no `modules_to_save=["head"]`) uses the backbone's.
pub fn import_peft(backbone: VisionTransformer, dir: &Path) -> Result<AdaptedVit> {
    let method = read_peft_method(dir, backbone.blocks.len())?;
    let path = dir.join(WEIGHTS_FILE);
    let mut file = read_safetensors(&path)?;
    let num_classes = match file.get(&format!("{PREFIX}head.weight")) {
        Some(head) => Some(head_classes(head, backbone.cfg.embed_dim, &path)?),
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
    let mut model = AdaptedVit::new(backbone, &method, num_classes, 0)?;
    // Shared frozen tensors (VeRA's projections) saved with the adapter replace the ones
    // drawn from the config's key; layers hold views of them, so copying updates them all.
    for (name, ours) in &model.buffers {
        let key = format!("base_model.{name}");
        if let Some(t) = file.remove(&key) {
            if t.size() != ours.size() {
                return Err(file_err(
                    &path,
                    format!(
                        "tensor `{key}` has shape {:?}, expected {:?}",
                        t.size(),
                        ours.size()
                    ),
                ));
            }
            tch::no_grad(|| ours.shallow_clone().copy_(&t));
        }
    }
    let spec = model.method.spec();
    let mut ours = BTreeMap::new();
    for (name, t) in file {
        // Tensors of the model's layers are under `base_model.model.`; a tuner's own trained
        // tensors (VB-LoRA's vector bank) directly under `base_model.`.
        let Some(rest) = name
            .strip_prefix(PREFIX)
            .or_else(|| name.strip_prefix("base_model."))
        else {
            return Err(file_err(&path, format!("unexpected tensor `{name}`")));
        };
        // peft also saves each layer's handle on a shared buffer (RandLoRA's bases): the same
        // tensor under the layer's name. Those must equal the shared one, which was loaded.
        if let Some((buf, shared)) = model
            .buffers
            .iter()
            .find(|(b, _)| rest.ends_with(&format!(".{b}")))
        {
            if t.size() != shared.size()
                || !t
                    .to_kind(shared.kind())
                    .equal(&shared.to_device(tch::Device::Cpu))
            {
                return Err(file_err(
                    &path,
                    format!("tensor `{name}` differs from the shared `base_model.{buf}`"),
                ));
            }
            continue;
        }
        let (name, t) = spec.peft_tensor_in(rest, t);
        ours.insert(name, t);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VitConfig;
    use tch::{Device, Kind};

    fn config(r: &str) -> String {
        format!(
            r#"{{"peft_type": "LORA", "r": {r}, "lora_alpha": 4, "target_modules": ["qkv"],
                "modules_to_save": ["head"], "bias": "none"}}"#
        )
    }

    #[test]
    fn ranks_and_numbers_are_bounded_integers() {
        let path = Path::new("a/adapter_config.json");
        assert!(parse_peft_config(&config("8"), 2, path).is_ok());
        for r in ["0", "4097", "1e18", "8.5", "-3", "\"8\""] {
            let msg = parse_peft_config(&config(r), 2, path)
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("adapter_config.json") && msg.contains("`r`"),
                "{r}: {msg}"
            );
        }
        let vera =
            r#"{"peft_type": "VERA", "target_modules": ["qkv"], "projection_prng_key": 1e300}"#;
        let msg = parse_peft_config(vera, 2, path).unwrap_err().to_string();
        assert!(msg.contains("`projection_prng_key`"), "{msg}");
        // A key above 2^53 is read exactly, not rounded through a float.
        let exact = r#"{"peft_type": "VERA", "target_modules": ["qkv"], "projection_prng_key": 9007199254740993}"#;
        let m = parse_peft_config(exact, 2, path).unwrap();
        let v = m.downcast::<crate::VeraSpec>().expect("a VeRA config");
        assert_eq!(v.projection_prng_key, 9_007_199_254_740_993);
        let alpha = config("8").replace("\"lora_alpha\": 4", "\"lora_alpha\": \"x\"");
        let msg = parse_peft_config(&alpha, 2, path).unwrap_err().to_string();
        assert!(msg.contains("`lora_alpha` must be a number"), "{msg}");
        assert!(parse_peft_config("[1]", 2, path).is_err());
        assert!(parse_peft_config("{", 2, path).is_err());
    }

    /// An adapter directory holding `config(r=2)` and a head of `shape`.
    fn adapter_with_head(tag: &str, shape: &[i64]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("peft-head-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), config("2")).unwrap();
        let head = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        let name = format!("{PREFIX}head.weight");
        Tensor::write_safetensors(&[(name.as_str(), &head)], dir.join(WEIGHTS_FILE)).unwrap();
        dir
    }

    #[test]
    fn a_scalar_or_outsized_head_is_an_error_naming_the_tensor() {
        let cfg = VitConfig {
            img_size: 16,
            patch_size: 8,
            embed_dim: 8,
            depth: 1,
            num_heads: 2,
            num_classes: 3,
            ..VitConfig::preset("vit_tiny_patch16_224").unwrap()
        };
        // 0-d (was indexed), 2e9 x 0 (zero bytes, but a 2e9-way head to build), wrong width.
        for (tag, shape) in [
            ("scalar", &[][..]),
            ("huge", &[2_000_000_000, 0]),
            ("width", &[3, 5]),
        ] {
            let dir = adapter_with_head(tag, shape);
            let vit = VisionTransformer::new(&cfg, Device::Cpu).unwrap();
            let msg = match import_peft(vit, &dir) {
                Ok(_) => panic!("{tag}: imported"),
                Err(e) => e.to_string(),
            };
            std::fs::remove_dir_all(&dir).unwrap();
            assert!(
                msg.contains("`base_model.model.head.weight`")
                    && msg.contains("expected [classes, 8]"),
                "{tag}: {msg}"
            );
        }
    }
}
