//! Parsing and validating a suite file (TOML via figment, `VTAB_ORCH_*` environment
//! overrides, `--set key=value`) into typed runs. Knows nothing of hashing or the store.
//!
//! Shape of a suite (see suite.toml for a commented example):
//! `name`, `store`, `seeds`; `[defaults]` optimisation settings; `[backbone]`; one
//! `[datasets.NAME]` table per dataset; one `[methods.NAME]` table per method configuration
//! family, where a list value is an axis of the grid; `[[override]]` entries that change
//! settings for matching dataset/method pairs. Precedence: defaults < dataset < method < override.
use crate::datasets::synthetic::Task;
use crate::datasets::{RealSource, Split};
use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use kernels::train::Precision;
use kernels::{Ia3Spec, LoraSpec, Method, Target, VeraSpec, VitConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every problem found in a suite, sorted, each naming the file and the key.
#[derive(Debug)]
pub struct SuiteError {
    pub file: PathBuf,
    pub errors: Vec<String>,
}

impl std::fmt::Display for SuiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for SuiteError {}

/// Optimisation and data settings of one run. All are semantic (part of node keys) except
/// `eval_batch_size`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Opt {
    pub epochs: u64,
    pub batch_size: i64,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub warmup_epochs: u64,
    pub label_smoothing: f64,
    pub clip_grad_norm: Option<f64>,
    pub precision: Precision,
    pub img_size: i64,
    /// `none` or `flip` (random horizontal flip on the device).
    pub augment: String,
    /// Seed of the VTAB-1k 800/200 draw for datasets without official lists.
    pub sample_seed: u64,
    pub train_split: Split,
    pub eval_split: Split,
    pub eval_batch_size: i64,
}

impl Default for Opt {
    fn default() -> Self {
        Opt {
            epochs: 10,
            batch_size: 64,
            lr: 1e-3,
            min_lr: 1e-6,
            weight_decay: 1e-4,
            warmup_epochs: 1,
            label_smoothing: 0.0,
            clip_grad_norm: None,
            precision: Precision::Auto,
            img_size: 224,
            augment: "none".into(),
            sample_seed: 0,
            train_split: Split::Train800val200,
            eval_split: Split::Test,
            eval_batch_size: 256,
        }
    }
}

const OPT_KEYS: [&str; 15] = [
    "epochs",
    "batch_size",
    "lr",
    "min_lr",
    "weight_decay",
    "warmup_epochs",
    "label_smoothing",
    "clip_grad_norm",
    "precision",
    "img_size",
    "augment",
    "sample_seed",
    "train_split",
    "eval_split",
    "eval_batch_size",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum Source {
    /// The embedded procedural benchmark.
    Synthetic {
        task: Task,
        test_images: u64,
    },
    Real(RealSource),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatasetDef {
    pub name: String,
    pub source: Source,
}

/// Pretraining recipe for the backbone (the `build` node trains it on a synthetic task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pretrain {
    pub task: Task,
    pub images: u64,
    pub epochs: u64,
    pub lr: f64,
    pub batch_size: i64,
    pub weight_decay: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    File(PathBuf),
    Pretrain(Pretrain),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backbone {
    pub arch: VitConfig,
    pub weights: Weights,
    /// Per-channel normalisation of [0, 1] pixels (timm ViT: 0.5 / 0.5).
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

/// One training run of the expanded suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub dataset: String,
    /// The `[methods.NAME]` table it comes from.
    pub family: String,
    pub method: Method,
    pub opt: Opt,
    pub seed: u64,
    /// Row label for reports: the method label plus the grid's optimisation axes.
    pub config: String,
    /// Hyper-parameters shown in reports (method + optimisation).
    pub hparams: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Suite {
    pub path: PathBuf,
    pub name: String,
    pub store: PathBuf,
    pub backbone: Backbone,
    pub datasets: BTreeMap<String, DatasetDef>,
    pub runs: Vec<Run>,
}

/// Loads `path` with environment overrides (`VTAB_ORCH_DEFAULTS__EPOCHS=3`) and `--set`
/// assignments (`defaults.epochs=3`, values in TOML syntax).
pub fn load(path: &Path, sets: &[String]) -> Result<Suite, SuiteError> {
    let fail = |errors: Vec<String>| SuiteError {
        file: path.to_path_buf(),
        errors,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(vec![format!("cannot read the suite: {e}")]))?;
    if let Err(e) = toml::from_str::<toml::Table>(&text) {
        let at = e
            .span()
            .map(|s| line_col(&text, s.start))
            .map(|(l, c)| format!("{l}:{c}: "))
            .unwrap_or_default();
        return Err(fail(vec![format!(
            "{at}TOML syntax error: {}",
            e.message()
        )]));
    }
    let mut fig = Figment::from(Toml::string(&text)).merge(
        Env::prefixed("VTAB_ORCH_")
            .split("__")
            .filter(|k| TOP_KEYS.contains(&k.as_str().split('.').next().unwrap_or(""))),
    );
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            return Err(fail(vec![format!("--set `{s}`: expected key=value")]));
        };
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.to_string()));
        fig = fig.merge(Serialized::default(k.trim(), value));
    }
    let root: Value = fig.extract().map_err(|e| fail(vec![e.to_string()]))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut p = Parser {
        errors: Vec::new(),
        base,
    };
    let suite = p.suite(path, &root);
    if p.errors.is_empty() {
        Ok(suite.expect("no errors means a suite"))
    } else {
        p.errors.sort();
        p.errors.dedup();
        Err(fail(p.errors))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

const TOP_KEYS: [&str; 8] = [
    "name", "store", "seeds", "defaults", "backbone", "datasets", "methods", "override",
];

struct Parser {
    errors: Vec<String>,
    base: PathBuf,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

impl Parser {
    fn err(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("`{key}`: {msg}"));
    }

    fn table<'a>(
        &mut self,
        key: &str,
        v: &'a Value,
        allowed: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Some(m) = v.as_object() else {
            self.err(key, format!("expected a table, found {}", type_name(v)));
            return None;
        };
        for k in m.keys().filter(|k| !allowed.contains(&k.as_str())) {
            let hint = allowed
                .iter()
                .find(|a| strsim_close(a, k))
                .map(|a| format!(" (did you mean `{a}`?)"))
                .unwrap_or_default();
            self.err(
                &format!("{key}.{k}"),
                format!("unknown key{hint}; allowed here: {}", allowed.join(", ")),
            );
        }
        Some(m)
    }

    fn u64(&mut self, key: &str, v: &Value) -> Option<u64> {
        match v.as_u64() {
            Some(x) => Some(x),
            None => {
                self.err(
                    key,
                    format!("expected a non-negative integer, found {}", type_name(v)),
                );
                None
            }
        }
    }

    fn f64(&mut self, key: &str, v: &Value) -> Option<f64> {
        match v.as_f64() {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                self.err(key, format!("expected a number, found {}", type_name(v)));
                None
            }
        }
    }

    fn str<'a>(&mut self, key: &str, v: &'a Value) -> Option<&'a str> {
        match v.as_str() {
            Some(s) => Some(s),
            None => {
                self.err(key, format!("expected a string, found {}", type_name(v)));
                None
            }
        }
    }

    fn enum_of<T: for<'de> Deserialize<'de>>(
        &mut self,
        key: &str,
        v: &Value,
        what: &str,
    ) -> Option<T> {
        match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(_) => {
                self.err(key, format!("expected {what}, found {v}"));
                None
            }
        }
    }

    /// Applies optimisation keys of `m` onto `opt`; returns the keys it consumed.
    fn opt_into(&mut self, prefix: &str, m: &Map<String, Value>, opt: &mut Opt) {
        for (k, v) in m.iter().filter(|(k, _)| OPT_KEYS.contains(&k.as_str())) {
            let key = format!("{prefix}.{k}");
            self.opt_key(&key, k, v, opt);
        }
    }

    fn opt_key(&mut self, key: &str, k: &str, v: &Value, opt: &mut Opt) {
        let positive = |p: &mut Parser, x: f64| {
            if x <= 0.0 {
                p.err(key, format!("must be > 0, got {x}"));
            }
            x
        };
        match k {
            "epochs" => {
                if let Some(x) = self.u64(key, v) {
                    if x == 0 {
                        self.err(key, "must be >= 1");
                    }
                    opt.epochs = x;
                }
            }
            "batch_size" | "eval_batch_size" | "img_size" => {
                if let Some(x) = self.u64(key, v) {
                    if x == 0 {
                        self.err(key, "must be >= 1");
                    }
                    let x = x as i64;
                    match k {
                        "batch_size" => opt.batch_size = x,
                        "eval_batch_size" => opt.eval_batch_size = x,
                        _ => opt.img_size = x,
                    }
                }
            }
            "lr" => {
                if let Some(x) = self.f64(key, v) {
                    opt.lr = positive(self, x);
                }
            }
            "min_lr" | "weight_decay" | "label_smoothing" => {
                if let Some(x) = self.f64(key, v) {
                    if x < 0.0 {
                        self.err(key, format!("must be >= 0, got {x}"));
                    }
                    match k {
                        "min_lr" => opt.min_lr = x,
                        "weight_decay" => opt.weight_decay = x,
                        _ if x >= 1.0 => self.err(key, format!("must be < 1, got {x}")),
                        _ => opt.label_smoothing = x,
                    }
                }
            }
            "clip_grad_norm" => {
                if let Some(x) = self.f64(key, v) {
                    opt.clip_grad_norm = Some(positive(self, x));
                }
            }
            "warmup_epochs" => {
                if let Some(x) = self.u64(key, v) {
                    opt.warmup_epochs = x;
                }
            }
            "sample_seed" => {
                if let Some(x) = self.u64(key, v) {
                    opt.sample_seed = x;
                }
            }
            "precision" => {
                if let Some(p) = self.enum_of(key, v, "one of \"auto\", \"fp32\", \"bf16\"") {
                    opt.precision = p;
                }
            }
            "augment" => {
                if let Some(s) = self.str(key, v) {
                    if s != "none" && s != "flip" {
                        self.err(key, format!("expected \"none\" or \"flip\", found \"{s}\""));
                    }
                    opt.augment = s.to_string();
                }
            }
            "train_split" | "eval_split" => {
                if let Some(s) = self.enum_of::<Split>(
                    key,
                    v,
                    "one of \"train800\", \"val200\", \"train800val200\", \"test\"",
                ) {
                    if k == "train_split" {
                        opt.train_split = s;
                    } else {
                        opt.eval_split = s;
                    }
                }
            }
            _ => unreachable!("OPT_KEYS covers every key"),
        }
    }

    fn seeds(&mut self, key: &str, v: &Value) -> Vec<u64> {
        let Some(list) = v.as_array() else {
            self.err(
                key,
                format!("expected a list of seeds, found {}", type_name(v)),
            );
            return Vec::new();
        };
        if list.is_empty() {
            self.err(key, "is empty: give at least one seed");
        }
        let seeds: Vec<u64> = list.iter().filter_map(|s| self.u64(key, s)).collect();
        if seeds.iter().collect::<BTreeSet<_>>().len() != seeds.len() {
            self.err(key, "lists a seed twice");
        }
        seeds
    }

    fn suite(&mut self, path: &Path, root: &Value) -> Option<Suite> {
        let top = self.table("(top level)", root, &TOP_KEYS)?;
        let name = top
            .get("name")
            .and_then(|v| self.str("name", v))
            .unwrap_or("suite")
            .to_string();
        let store = top
            .get("store")
            .and_then(|v| self.str("store", v))
            .map(|s| self.base.join(s))
            .unwrap_or_else(|| self.base.join("results"));
        let seeds = top
            .get("seeds")
            .map(|v| self.seeds("seeds", v))
            .unwrap_or_else(|| vec![0]);
        let mut defaults = Opt::default();
        if let Some(d) = top.get("defaults") {
            if let Some(m) = self.table("defaults", d, &OPT_KEYS) {
                self.opt_into("defaults", m, &mut defaults);
            }
        }
        let backbone = match top.get("backbone") {
            Some(b) => self.backbone(b),
            None => {
                self.err("backbone", "missing: every suite needs a [backbone] table");
                None
            }
        };
        let mut datasets = BTreeMap::new();
        let mut ds_opts = BTreeMap::new();
        match top.get("datasets").and_then(|v| v.as_object()) {
            Some(m) if !m.is_empty() => {
                for (name, v) in m {
                    if let Some((def, opt, seeds_override)) = self.dataset(name, v, &defaults) {
                        ds_opts.insert(name.clone(), (opt, seeds_override));
                        datasets.insert(name.clone(), def);
                    }
                }
            }
            _ => self.err(
                "datasets",
                "missing or empty: declare at least one [datasets.NAME]",
            ),
        }
        let mut runs = Vec::new();
        match top.get("methods").and_then(|v| v.as_object()) {
            Some(m) if !m.is_empty() => {
                for (family, v) in m {
                    runs.extend(self.method(family, v, &ds_opts, &seeds));
                }
            }
            _ => self.err(
                "methods",
                "missing or empty: declare at least one [methods.NAME]",
            ),
        }
        if let Some(o) = top.get("override") {
            self.overrides(o, &mut runs, &datasets);
        }
        let keys: BTreeSet<_> = runs
            .iter()
            .map(|r| (r.dataset.clone(), r.config.clone(), r.seed))
            .collect();
        if keys.len() != runs.len() {
            self.err("methods", "two method configurations expand to the same run (same dataset, configuration and seed)");
        }
        Some(Suite {
            path: path.to_path_buf(),
            name,
            store,
            backbone: backbone?,
            datasets,
            runs,
        })
    }

    fn backbone(&mut self, v: &Value) -> Option<Backbone> {
        const ARCH: [&str; 7] = [
            "img_size",
            "patch_size",
            "embed_dim",
            "depth",
            "num_heads",
            "mlp_ratio",
            "num_classes",
        ];
        let mut allowed = vec!["arch", "weights", "pretrain", "mean", "std"];
        allowed.extend(ARCH);
        let m = self.table("backbone", v, &allowed)?;
        let arch_name = m
            .get("arch")
            .and_then(|v| self.str("backbone.arch", v))
            .unwrap_or("vit_base_patch16_224");
        let Some(mut arch) = VitConfig::preset(arch_name) else {
            let names: Vec<_> = VitConfig::preset_names().collect();
            self.err(
                "backbone.arch",
                format!(
                    "unknown architecture `{arch_name}` (one of: {})",
                    names.join(", ")
                ),
            );
            return None;
        };
        for k in ARCH {
            if let Some(v) = m.get(k) {
                let key = format!("backbone.{k}");
                if k == "mlp_ratio" {
                    arch.mlp_ratio = self.f64(&key, v).unwrap_or(arch.mlp_ratio);
                    continue;
                }
                let x = self.u64(&key, v).unwrap_or(0) as i64;
                match k {
                    "img_size" => arch.img_size = x,
                    "patch_size" => arch.patch_size = x,
                    "embed_dim" => arch.embed_dim = x,
                    "depth" => arch.depth = x,
                    "num_heads" => arch.num_heads = x,
                    _ => arch.num_classes = x,
                }
            }
        }
        if let Err(e) = arch.validate() {
            self.err("backbone", e);
        }
        let weights = match (m.get("weights"), m.get("pretrain")) {
            (Some(_), Some(_)) => {
                self.err(
                    "backbone",
                    "give either `weights` (a file) or `[backbone.pretrain]`, not both",
                );
                None
            }
            (Some(w), None) => self
                .str("backbone.weights", w)
                .map(|s| Weights::File(self.base.join(s))),
            (None, Some(p)) => self.pretrain(p).map(Weights::Pretrain),
            (None, None) => {
                self.err(
                    "backbone",
                    "missing `weights = \"path.safetensors\"` or a `[backbone.pretrain]` recipe",
                );
                None
            }
        };
        let triple = |p: &mut Parser, k: &str, default: f64| -> [f64; 3] {
            match m.get(k) {
                None => [default; 3],
                Some(Value::Array(a)) if a.len() == 3 => {
                    let v: Vec<f64> = a
                        .iter()
                        .filter_map(|x| p.f64(&format!("backbone.{k}"), x))
                        .collect();
                    if v.len() == 3 {
                        [v[0], v[1], v[2]]
                    } else {
                        [default; 3]
                    }
                }
                Some(other) => {
                    p.err(
                        &format!("backbone.{k}"),
                        format!("expected a list of 3 numbers, found {}", type_name(other)),
                    );
                    [default; 3]
                }
            }
        };
        let mean = triple(self, "mean", 0.5);
        let std = triple(self, "std", 0.5);
        if std.iter().any(|s| *s <= 0.0) {
            self.err("backbone.std", "must be > 0");
        }
        Some(Backbone {
            arch,
            weights: weights?,
            mean,
            std,
        })
    }

    fn pretrain(&mut self, v: &Value) -> Option<Pretrain> {
        let m = self.table(
            "backbone.pretrain",
            v,
            &[
                "task",
                "images",
                "epochs",
                "lr",
                "batch_size",
                "weight_decay",
                "seed",
            ],
        )?;
        let mut p = Pretrain {
            task: Task::Source,
            images: 4000,
            epochs: 10,
            lr: 1e-3,
            batch_size: 64,
            weight_decay: 0.05,
            seed: 0,
        };
        if let Some(t) = m.get("task") {
            match self
                .str("backbone.pretrain.task", t)
                .map(|s| (s, Task::parse(s)))
            {
                Some((_, Some(t))) => p.task = t,
                Some((s, None)) => self.err(
                    "backbone.pretrain.task",
                    format!(
                        "unknown synthetic task `{s}` (one of: {})",
                        Task::NAMES.join(", ")
                    ),
                ),
                None => {}
            }
        }
        let g = |_: &mut Parser, k: &str| {
            m.get(k)
                .map(|v| (format!("backbone.pretrain.{k}"), v.clone()))
        };
        if let Some((k, v)) = g(self, "images") {
            p.images = self.u64(&k, &v).unwrap_or(p.images);
        }
        if let Some((k, v)) = g(self, "epochs") {
            p.epochs = self.u64(&k, &v).unwrap_or(p.epochs);
        }
        if let Some((k, v)) = g(self, "seed") {
            p.seed = self.u64(&k, &v).unwrap_or(p.seed);
        }
        if let Some((k, v)) = g(self, "batch_size") {
            p.batch_size = self.u64(&k, &v).unwrap_or(64) as i64;
        }
        if let Some((k, v)) = g(self, "lr") {
            p.lr = self.f64(&k, &v).unwrap_or(p.lr);
        }
        if let Some((k, v)) = g(self, "weight_decay") {
            p.weight_decay = self.f64(&k, &v).unwrap_or(p.weight_decay);
        }
        if p.images == 0 || p.epochs == 0 || p.batch_size <= 0 || p.lr <= 0.0 {
            self.err(
                "backbone.pretrain",
                "images, epochs, batch_size and lr must be positive",
            );
        }
        Some(p)
    }

    #[allow(clippy::type_complexity)]
    fn dataset(
        &mut self,
        name: &str,
        v: &Value,
        defaults: &Opt,
    ) -> Option<(DatasetDef, Opt, Option<Vec<u64>>)> {
        let key = format!("datasets.{name}");
        let mut allowed = vec![
            "format",
            "task",
            "test_images",
            "root",
            "dtd_split",
            "train_csv",
            "test_csv",
            "seeds",
        ];
        allowed.extend(OPT_KEYS);
        let m = self.table(&key, v, &allowed)?;
        let mut opt = defaults.clone();
        self.opt_into(&key, m, &mut opt);
        let seeds = m
            .get("seeds")
            .map(|s| self.seeds(&format!("{key}.seeds"), s));
        let format = m
            .get("format")
            .and_then(|f| self.str(&format!("{key}.format"), f));
        let source = match format {
            None => {
                self.err(
                    &format!("{key}.format"),
                    "missing (synthetic, cifar100, eurosat, dtd, vtab1k, imagefolder, csv)",
                );
                return None;
            }
            Some("synthetic") => {
                for k in ["root", "dtd_split", "train_csv", "test_csv"] {
                    if m.contains_key(k) {
                        self.err(&format!("{key}.{k}"), "not used by synthetic datasets");
                    }
                }
                let task = match m
                    .get("task")
                    .and_then(|t| self.str(&format!("{key}.task"), t))
                {
                    Some(t) => Task::parse(t).or_else(|| {
                        self.err(
                            &format!("{key}.task"),
                            format!(
                                "unknown synthetic task `{t}` (one of: {})",
                                Task::NAMES.join(", ")
                            ),
                        );
                        None
                    })?,
                    None => {
                        self.err(
                            &format!("{key}.task"),
                            "missing (synthetic datasets need a task)",
                        );
                        return None;
                    }
                };
                let test_images = m
                    .get("test_images")
                    .and_then(|t| self.u64(&format!("{key}.test_images"), t))
                    .unwrap_or(1000);
                Source::Synthetic { task, test_images }
            }
            Some(_) => {
                for k in ["task", "test_images"] {
                    if m.contains_key(k) {
                        self.err(
                            &format!("{key}.{k}"),
                            "only synthetic datasets take this key",
                        );
                    }
                }
                let mut src = Map::new();
                for k in ["format", "root", "dtd_split", "train_csv", "test_csv"] {
                    if let Some(v) = m.get(k) {
                        src.insert(k.to_string(), v.clone());
                    }
                }
                match serde_json::from_value::<RealSource>(Value::Object(src)) {
                    Ok(mut r) => {
                        r.root = self.base.join(&r.root);
                        Source::Real(r)
                    }
                    Err(e) => {
                        self.err(&key, format!("invalid dataset source: {e}"));
                        return None;
                    }
                }
            }
        };
        Some((
            DatasetDef {
                name: name.to_string(),
                source,
            },
            opt,
            seeds,
        ))
    }

    fn method(
        &mut self,
        family: &str,
        v: &Value,
        ds: &BTreeMap<String, (Opt, Option<Vec<u64>>)>,
        seeds: &[u64],
    ) -> Vec<Run> {
        let key = format!("methods.{family}");
        const SPEC: [&str; 8] = [
            "r",
            "alpha",
            "dropout",
            "rslora",
            "targets",
            "d_initial",
            "projection_prng_key",
            "method",
        ];
        let mut allowed: Vec<&str> = SPEC.to_vec();
        allowed.extend(OPT_KEYS);
        allowed.extend(["datasets", "seeds"]);
        let Some(m) = self.table(&key, v, &allowed) else {
            return Vec::new();
        };
        let kind = match m
            .get("method")
            .map(|v| self.str(&format!("{key}.method"), v))
        {
            Some(Some(s)) => s.to_string(),
            Some(None) => return Vec::new(),
            None => family.to_string(),
        };
        let known = ["linear", "full", "bitfit", "lora", "vera", "ia3"];
        if !known.contains(&kind.as_str()) {
            self.err(&format!("{key}.method"), format!("unknown method `{kind}` (one of: {}); set `method = ...` when the table name is not a method", known.join(", ")));
            return Vec::new();
        }
        let only: Option<Vec<String>> = m.get("datasets").map(|d| match d.as_array() {
            Some(a) => {
                let names: Vec<String> = a
                    .iter()
                    .filter_map(|x| self.str(&format!("{key}.datasets"), x).map(String::from))
                    .collect();
                for n in &names {
                    if !ds.contains_key(n) {
                        self.err(
                            &format!("{key}.datasets"),
                            format!(
                                "unknown dataset `{n}` (declared: {})",
                                ds.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        );
                    }
                }
                if names.is_empty() {
                    self.err(&format!("{key}.datasets"), "is empty");
                }
                names
            }
            None => {
                self.err(
                    &format!("{key}.datasets"),
                    "expected a list of dataset names",
                );
                Vec::new()
            }
        });
        let method_seeds = m
            .get("seeds")
            .map(|s| self.seeds(&format!("{key}.seeds"), s));
        // The grid: every list value is an axis (in key order, so the expansion is stable).
        let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
        for (k, v) in m
            .iter()
            .filter(|(k, _)| !["method", "datasets", "seeds"].contains(&k.as_str()))
        {
            match v {
                Value::Array(a) if a.is_empty() => {
                    self.err(&format!("{key}.{k}"), "is an empty grid axis")
                }
                Value::Array(a) => axes.push((k.clone(), a.clone())),
                other => axes.push((k.clone(), vec![other.clone()])),
            }
        }
        let mut points: Vec<Vec<(String, Value)>> = vec![Vec::new()];
        for (k, values) in &axes {
            points = points
                .iter()
                .flat_map(|p| {
                    values
                        .iter()
                        .map(move |v| [p.clone(), vec![(k.clone(), v.clone())]].concat())
                })
                .collect();
        }
        let varying: BTreeSet<&str> = axes
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(k, _)| k.as_str())
            .collect();
        let mut runs = Vec::new();
        for point in points {
            let Some(method) = self.method_spec(&key, &kind, &point) else {
                continue;
            };
            for (dname, (dopt, dseeds)) in ds {
                if only.as_ref().is_some_and(|o| !o.contains(dname)) {
                    continue;
                }
                let mut opt = dopt.clone();
                let mut hparams = BTreeMap::new();
                let mut config = method.label();
                for (k, v) in &point {
                    if OPT_KEYS.contains(&k.as_str()) {
                        self.opt_key(&format!("{key}.{k}"), k, v, &mut opt);
                        if varying.contains(k.as_str()) {
                            config += &format!(" {k}={}", display(v));
                        }
                    }
                    hparams.insert(k.clone(), display(v));
                }
                hparams.insert("lr".into(), opt.lr.to_string());
                hparams.insert("epochs".into(), opt.epochs.to_string());
                let run_seeds = method_seeds
                    .clone()
                    .or_else(|| dseeds.clone())
                    .unwrap_or_else(|| seeds.to_vec());
                for seed in run_seeds {
                    runs.push(Run {
                        dataset: dname.clone(),
                        family: family.to_string(),
                        method: method.clone(),
                        opt: opt.clone(),
                        seed,
                        config: config.clone(),
                        hparams: hparams.clone(),
                    });
                }
            }
        }
        runs
    }

    fn method_spec(&mut self, key: &str, kind: &str, point: &[(String, Value)]) -> Option<Method> {
        let get = |k: &str| point.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone());
        let allowed: &[&str] = match kind {
            "lora" => &["r", "alpha", "dropout", "rslora", "targets"],
            "vera" => &[
                "r",
                "d_initial",
                "projection_prng_key",
                "dropout",
                "targets",
            ],
            "ia3" => &["targets"],
            _ => &[],
        };
        for (k, _) in point
            .iter()
            .filter(|(k, _)| !OPT_KEYS.contains(&k.as_str()))
        {
            if !allowed.contains(&k.as_str()) {
                self.err(
                    &format!("{key}.{k}"),
                    format!(
                        "not a parameter of {kind} (its parameters: {})",
                        if allowed.is_empty() {
                            "none".to_string()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                );
            }
        }
        let targets = |p: &mut Parser| -> Option<Vec<Target>> {
            let Some(v) = get("targets") else {
                p.err(
                    &format!("{key}.targets"),
                    "missing (e.g. \"q,v\"; layers: q, k, v, qkv, proj, fc1, fc2)",
                );
                return None;
            };
            let s = p.str(&format!("{key}.targets"), &v)?;
            let mut out = Vec::new();
            for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                match Target::ALL.iter().find(|x| x.as_str() == t) {
                    Some(x) => out.push(*x),
                    None => {
                        p.err(
                            &format!("{key}.targets"),
                            format!("unknown layer `{t}` (q, k, v, qkv, proj, fc1, fc2)"),
                        );
                        return None;
                    }
                }
            }
            Some(out)
        };
        let num = |p: &mut Parser, k: &str, d: f64| {
            get(k).map_or(Some(d), |v| p.f64(&format!("{key}.{k}"), &v))
        };
        let int = |p: &mut Parser, k: &str, d: i64| {
            get(k).map_or(Some(d), |v| {
                p.u64(&format!("{key}.{k}"), &v).map(|x| x as i64)
            })
        };
        let method = match kind {
            "linear" => Method::Linear,
            "full" => Method::Full,
            "bitfit" => Method::Bitfit,
            "lora" => {
                let r = int(self, "r", 8)?;
                Method::Lora(LoraSpec {
                    r,
                    alpha: num(self, "alpha", r as f64)?,
                    dropout: num(self, "dropout", 0.0)?,
                    rslora: get("rslora")
                        .map(|v| v.as_bool().unwrap_or(false))
                        .unwrap_or(false),
                    targets: targets(self)?,
                })
            }
            "vera" => Method::Vera(VeraSpec {
                r: int(self, "r", 256)?,
                d_initial: num(self, "d_initial", 0.1)?,
                projection_prng_key: int(self, "projection_prng_key", 0)?,
                dropout: num(self, "dropout", 0.0)?,
                targets: targets(self)?,
            }),
            _ => Method::Ia3(Ia3Spec {
                targets: targets(self)?,
            }),
        };
        if let Err(e) = method.validate() {
            self.err(key, e);
            return None;
        }
        Some(method)
    }

    fn overrides(&mut self, v: &Value, runs: &mut [Run], datasets: &BTreeMap<String, DatasetDef>) {
        let Some(list) = v.as_array() else {
            self.err(
                "override",
                "expected [[override]] entries (an array of tables)",
            );
            return;
        };
        for (i, o) in list.iter().enumerate() {
            let key = format!("override[{i}]");
            let mut allowed = vec!["dataset", "method"];
            allowed.extend(OPT_KEYS);
            let Some(m) = self.table(&key, o, &allowed) else {
                continue;
            };
            let ds = m
                .get("dataset")
                .and_then(|d| self.str(&format!("{key}.dataset"), d))
                .map(String::from);
            let me = m
                .get("method")
                .and_then(|d| self.str(&format!("{key}.method"), d))
                .map(String::from);
            if let Some(d) = &ds {
                if !datasets.contains_key(d) {
                    self.err(&format!("{key}.dataset"), format!("unknown dataset `{d}`"));
                }
            }
            let mut hits = 0;
            for r in runs.iter_mut() {
                if ds.as_ref().is_some_and(|d| *d != r.dataset)
                    || me.as_ref().is_some_and(|x| *x != r.family)
                {
                    continue;
                }
                hits += 1;
                self.opt_into(&key, m, &mut r.opt);
                r.hparams.insert("lr".into(), r.opt.lr.to_string());
                r.hparams.insert("epochs".into(), r.opt.epochs.to_string());
            }
            if hits == 0 {
                self.err(&key, "matches no run (check its dataset/method names and the methods' dataset restrictions)");
            }
        }
    }
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Loose typo check for "did you mean": same length +-1 and at most 2 differing chars.
fn strsim_close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let common = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    a.len().max(b.len()) - common <= 2 && a.len() > 2
}

/// Checks the sources a plan depends on exist (dataset roots, weights files): clear errors
/// before anything runs.
pub fn check_inputs(suite: &Suite) -> Result<(), SuiteError> {
    let mut errors = Vec::new();
    for d in suite.datasets.values() {
        if let Source::Real(r) = &d.source {
            if let Err(e) = crate::datasets::check_source(r) {
                errors.push(format!("`datasets.{}`: {e}", d.name));
            }
        }
    }
    if let Weights::File(p) = &suite.backbone.weights {
        if !p.is_file() {
            errors.push(format!("`backbone.weights`: {} does not exist (download timm weights as safetensors; see README)", p.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SuiteError {
            file: suite.path.clone(),
            errors,
        })
    }
}
