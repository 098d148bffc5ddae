//! Parsing and validating a suite file (TOML via figment, `VTAB_ORCH_*` environment
//! overrides, `--set key=value`) into typed runs. Knows nothing of hashing or the store.
//!
//! Shape of a suite (see suite.toml for a commented example):
//! `name`, `store`, `seeds`; `[defaults]` optimisation settings; `[backbone]`; one
//! `[datasets.NAME]` table per dataset; one `[methods.NAME]` table per method configuration
//! family, where a list value is an axis of the grid; `[[override]]` entries that change
//! settings for matching dataset/method pairs. Precedence: defaults < dataset < method < override.
use crate::datasets::synthetic::Task;
use crate::datasets::{DatasetError, Format, RealSource, Split};
use figment::providers::{Env, Format as _, Serialized, Toml};
use figment::Figment;
use kernels::train::Precision;
use kernels::{Ia3Spec, LoraSpec, Method, Target, VeraSpec, VisionTransformer, VitConfig};
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
    /// `none`, `flip` (random horizontal flips) or `crop+flip` (random resized crops, then
    /// flips), applied on the device.
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

/// Where a dataset's images come from. Externally tagged in specs (`{"real": {...}}`):
/// a `format` tag would collide with `RealSource::format`. Keys never depend on this
/// encoding (see `Node::fingerprint`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// `[slurm]`: sbatch options for `run --launcher slurm` (not part of any node's key).
    pub slurm: crate::sched::slurm::SlurmConfig,
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
    let file =
        toml::from_str::<toml::Table>(&text).map_err(|e| fail(vec![syntax_error(&text, &e)]))?;
    let mut fig = Figment::from(Toml::string(&text)).merge(
        Env::prefixed("VTAB_ORCH_")
            .split("__")
            .filter(|k| TOP_KEYS.contains(&k.as_str().split('.').next().unwrap_or(""))),
    );
    let mut assigned = Vec::new();
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            return Err(fail(vec![format!(
                "--set `{s}`: expected KEY=VALUE, e.g. defaults.epochs=2"
            )]));
        };
        let k = k.trim();
        let is_key = k.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !is_key {
            return Err(fail(vec![format!(
                "--set `{s}`: `{k}` is not a dotted key such as defaults.epochs"
            )]));
        }
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {v}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(v.to_string()));
        fig = fig.merge(Serialized::default(k, value));
        assigned.push((k.to_string(), s.clone()));
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
        patch_size: None,
        file,
        sets: assigned,
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

/// `LINE:COL: TOML syntax error: WHAT in `SOURCE LINE``, on one line.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let mut what = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return format!("TOML syntax error: {what}");
    };
    if what == "duplicate key" {
        // The span covers the repeated key (the last part of a repeated table header).
        if let Some(k) = text.get(span.clone()).map(str::trim) {
            what = format!("duplicate key `{k}`");
        }
    }
    let (line, col) = line_col(text, span.start);
    let source: String = text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim()
        .chars()
        .take(60)
        .collect();
    if source.is_empty() {
        format!("{line}:{col}: TOML syntax error: {what}")
    } else {
        format!("{line}:{col}: TOML syntax error: {what} in `{source}`")
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

const TOP_KEYS: [&str; 9] = [
    "name", "store", "seeds", "defaults", "backbone", "datasets", "methods", "override", "slurm",
];
const METHODS: [&str; 6] = ["linear", "full", "bitfit", "lora", "vera", "ia3"];
const FORMATS: [&str; 7] = [
    "synthetic",
    "cifar100",
    "eurosat",
    "dtd",
    "vtab1k",
    "imagefolder",
    "csv",
];

struct Parser {
    errors: Vec<String>,
    base: PathBuf,
    /// `backbone.patch_size` once the backbone is valid: run image sizes must be multiples.
    patch_size: Option<i64>,
    /// The file's own table and the `--set` assignments (key, as typed), to say so when the
    /// value at fault is not in the file.
    file: toml::Table,
    sets: Vec<(String, String)>,
}

/// What a value is, for "expected X, found Y" (scalars shown).
fn found(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(a) if a.len() == 1 => "a list of 1 value".into(),
        Value::Array(a) => format!("a list of {} values", a.len()),
        Value::Object(_) => "a table".into(),
    }
}

/// `parent.k`, or `k` at the top level.
fn sub(parent: &str, k: &str) -> String {
    if parent.is_empty() {
        k.to_string()
    } else {
        format!("{parent}.{k}")
    }
}

/// Whether the dotted `key` names something in the file itself.
fn in_table(table: &toml::Table, key: &str) -> bool {
    let mut at = Some(table);
    let mut parts = key.split('.').peekable();
    while let (Some(t), Some(p)) = (at, parts.next()) {
        match t.get(p) {
            Some(_) if parts.peek().is_none() => return true,
            Some(v) => at = v.as_table(),
            None => return false,
        }
    }
    false
}

impl Parser {
    fn err(&mut self, key: &str, msg: impl std::fmt::Display) {
        // A key given or created by --set is not in the file: say where it came from.
        let from_set = self.sets.iter().rev().find(|(k, _)| {
            key == k
                || key.starts_with(&format!("{k}."))
                || (k.starts_with(&format!("{key}.")) && !in_table(&self.file, key))
        });
        let note = from_set
            .map(|(_, s)| format!(" (from --set {s})"))
            .unwrap_or_default();
        self.errors.push(format!("`{key}`: {msg}{note}"));
    }

    fn table<'a>(
        &mut self,
        key: &str,
        v: &'a Value,
        allowed: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Some(m) = v.as_object() else {
            self.err(key, format!("expected a table, found {}", found(v)));
            return None;
        };
        for k in m.keys().filter(|k| !allowed.contains(&k.as_str())) {
            let msg = match nearest(k, allowed) {
                Some(a) => format!("unknown key; did you mean `{a}`?"),
                None => format!("unknown key; allowed here: {}", allowed.join(", ")),
            };
            self.err(&sub(key, k), msg);
        }
        Some(m)
    }

    fn u64(&mut self, key: &str, v: &Value) -> Option<u64> {
        self.integer(key, v, 0)
    }

    /// An integer >= 1 (sizes, counts).
    fn count(&mut self, key: &str, v: &Value) -> Option<u64> {
        self.integer(key, v, 1)
    }

    fn integer(&mut self, key: &str, v: &Value, min: u64) -> Option<u64> {
        let (want, must) = match min {
            0 => (
                "a non-negative integer",
                "be a non-negative integer".to_string(),
            ),
            _ => ("a positive integer", format!("be >= {min}")),
        };
        match (v.as_u64(), v.as_i64()) {
            (Some(x), _) if x >= min => return Some(x),
            (_, Some(x)) => self.err(key, format!("must {must}, got {x}")),
            _ => self.err(key, format!("expected {want}, found {}", found(v))),
        }
        None
    }

    fn f64(&mut self, key: &str, v: &Value) -> Option<f64> {
        match v.as_f64() {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                self.err(key, format!("expected a number, found {}", found(v)));
                None
            }
        }
    }

    /// A number in `ok`, described by `what` ("> 0") when it is not.
    fn number_in(
        &mut self,
        key: &str,
        v: &Value,
        what: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let x = self.f64(key, v)?;
        if ok(x) {
            Some(x)
        } else {
            self.err(key, format!("must be {what}, got {x}"));
            None
        }
    }

    fn positive(&mut self, key: &str, v: &Value) -> Option<f64> {
        self.number_in(key, v, "> 0", |x| x > 0.0)
    }

    fn non_negative(&mut self, key: &str, v: &Value) -> Option<f64> {
        self.number_in(key, v, ">= 0", |x| x >= 0.0)
    }

    fn str<'a>(&mut self, key: &str, v: &'a Value) -> Option<&'a str> {
        match v.as_str() {
            Some(s) => Some(s),
            None => {
                self.err(key, format!("expected a string, found {}", found(v)));
                None
            }
        }
    }

    fn bool(&mut self, key: &str, v: &Value) -> Option<bool> {
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.err(key, format!("expected true or false, found {}", found(v)));
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
                self.err(key, format!("expected {what}, found {}", found(v)));
                None
            }
        }
    }

    /// A name from a closed list (a method, a dataset, a task...).
    fn one_of<'a>(
        &mut self,
        key: &str,
        v: &'a Value,
        what: &str,
        names: &[&str],
    ) -> Option<&'a str> {
        let s = self.str(key, v)?;
        if names.contains(&s) {
            return Some(s);
        }
        self.err(key, unknown(what, s, names));
        None
    }

    fn task(&mut self, key: &str, v: &Value) -> Option<Task> {
        self.one_of(key, v, "synthetic task", &Task::NAMES)
            .and_then(Task::parse)
    }

    /// Applies the optimisation keys of `m` onto `opt`.
    fn opt_into(&mut self, prefix: &str, m: &Map<String, Value>, opt: &mut Opt) {
        for (k, v) in m.iter().filter(|(k, _)| OPT_KEYS.contains(&k.as_str())) {
            let key = format!("{prefix}.{k}");
            self.opt_key(&key, k, v, opt);
        }
    }

    fn opt_key(&mut self, key: &str, k: &str, v: &Value, opt: &mut Opt) {
        match k {
            "epochs" => opt.epochs = self.count(key, v).unwrap_or(opt.epochs),
            "warmup_epochs" => opt.warmup_epochs = self.u64(key, v).unwrap_or(opt.warmup_epochs),
            "sample_seed" => opt.sample_seed = self.u64(key, v).unwrap_or(opt.sample_seed),
            "batch_size" | "eval_batch_size" | "img_size" => {
                let Some(x) = self.count(key, v) else { return };
                let x = x as i64;
                match k {
                    "batch_size" => opt.batch_size = x,
                    "eval_batch_size" => opt.eval_batch_size = x,
                    _ => {
                        // The ViT is built at the run's image size.
                        if let Some(p) = self.patch_size.filter(|p| x % p != 0) {
                            self.err(
                                key,
                                format!("{x} is not a multiple of backbone.patch_size {p}"),
                            );
                        }
                        opt.img_size = x;
                    }
                }
            }
            "lr" => opt.lr = self.positive(key, v).unwrap_or(opt.lr),
            "min_lr" => opt.min_lr = self.non_negative(key, v).unwrap_or(opt.min_lr),
            "weight_decay" => {
                opt.weight_decay = self.non_negative(key, v).unwrap_or(opt.weight_decay)
            }
            "label_smoothing" => {
                let ok = |x: f64| (0.0..1.0).contains(&x);
                opt.label_smoothing = self
                    .number_in(key, v, "in [0, 1)", ok)
                    .unwrap_or(opt.label_smoothing)
            }
            "clip_grad_norm" => opt.clip_grad_norm = self.positive(key, v).or(opt.clip_grad_norm),
            "precision" => {
                if let Some(p) =
                    self.enum_of(key, v, "one of \"auto\", \"fp32\", \"bf16\", \"tf32\"")
                {
                    opt.precision = p;
                }
            }
            "augment" => {
                if let Some(s) = self.one_of(key, v, "augmentation", &["none", "flip", "crop+flip"])
                {
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

    /// A list of distinct seeds (a repeated seed is reported and dropped).
    fn seeds(&mut self, key: &str, v: &Value) -> Vec<u64> {
        let Some(list) = v.as_array() else {
            self.err(key, format!("expected a list of seeds, found {}", found(v)));
            return Vec::new();
        };
        if list.is_empty() {
            self.err(key, "is empty: give at least one seed");
        }
        let mut seeds = Vec::new();
        for s in list {
            match self.u64(key, s) {
                Some(x) if seeds.contains(&x) => self.err(key, format!("lists seed {x} twice")),
                Some(x) => seeds.push(x),
                None => {}
            }
        }
        seeds
    }

    fn suite(&mut self, path: &Path, root: &Value) -> Option<Suite> {
        let top = self.table("", root, &TOP_KEYS)?;
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
        let slurm = self.slurm(top.get("slurm"));
        // The backbone first: run image sizes are checked against its patch size.
        let backbone = match top.get("backbone") {
            Some(b) => self.backbone(b),
            None => {
                self.err("backbone", "missing: every suite needs a [backbone] table");
                None
            }
        };
        let mut defaults = Opt::default();
        if let Some(d) = top.get("defaults") {
            if let Some(m) = self.table("defaults", d, &OPT_KEYS) {
                self.opt_into("defaults", m, &mut defaults);
            }
        }
        let mut datasets = BTreeMap::new();
        let mut ds_opts = BTreeMap::new();
        // Every declared name, also of tables with errors (to check references without
        // repeating those errors).
        let mut declared = Vec::new();
        if let Some(m) = self.named_tables(top, "datasets") {
            for (name, v) in m {
                declared.push(name.as_str());
                if let Some((def, opt, seeds_override)) = self.dataset(name, v, &defaults) {
                    ds_opts.insert(name.clone(), (opt, seeds_override));
                    datasets.insert(name.clone(), def);
                }
            }
        }
        let mut runs = Vec::new();
        let mut families = Vec::new();
        if let Some(m) = self.named_tables(top, "methods") {
            for (family, v) in m {
                families.push(family.as_str());
                runs.extend(self.method(family, v, &ds_opts, &declared, &seeds));
            }
        }
        if let Some(o) = top.get("override") {
            self.overrides(o, &mut runs, &declared, &families);
        }
        self.distinct_runs(&runs);
        // A run image size that nothing set is the default: it must fit the patches too.
        if let Some(p) = self.patch_size {
            let set_somewhere = self.errors.iter().any(|e| e.contains(".img_size`"));
            if !set_somewhere && runs.iter().any(|r| r.opt.img_size % p != 0) {
                self.err(
                    "defaults.img_size",
                    format!(
                        "not set, and the default {} is not a multiple of backbone.patch_size {p}",
                        Opt::default().img_size
                    ),
                );
            }
        }
        Some(Suite {
            path: path.to_path_buf(),
            name,
            store,
            backbone: backbone?,
            datasets,
            runs,
            slurm,
        })
    }

    /// `[slurm]`: parsed by the Slurm launcher's own config type.
    fn slurm(&mut self, v: Option<&Value>) -> crate::sched::slurm::SlurmConfig {
        use crate::sched::slurm::config::{SlurmConfig, KEYS};
        let Some(m) = v.and_then(|v| self.table("slurm", v, &KEYS)) else {
            return SlurmConfig::default();
        };
        let (config, errors) = SlurmConfig::parse(m);
        for (key, msg) in errors {
            self.err(&key, msg);
        }
        config
    }

    /// `[datasets]` or `[methods]`: a non-empty table of tables.
    fn named_tables<'a>(
        &mut self,
        top: &'a Map<String, Value>,
        key: &str,
    ) -> Option<&'a Map<String, Value>> {
        let what = format!("declare at least one [{key}.NAME]");
        match top.get(key) {
            None => self.err(key, format!("missing: {what}")),
            Some(Value::Object(m)) if m.is_empty() => self.err(key, format!("is empty: {what}")),
            Some(Value::Object(m)) => return Some(m),
            Some(v) => self.err(
                key,
                format!("expected [{key}.NAME] tables, found {}", found(v)),
            ),
        }
        None
    }

    /// Two runs with the same dataset, configuration label and seed would share a row (and
    /// one would be lost): name the method tables that collide.
    fn distinct_runs(&mut self, runs: &[Run]) {
        let mut seen: BTreeMap<(&str, &str, u64), &str> = BTreeMap::new();
        let mut clashes: BTreeMap<(&str, &str), &Run> = BTreeMap::new();
        for r in runs {
            if let Some(first) = seen.insert((&r.dataset, &r.config, r.seed), &r.family) {
                clashes.entry((first, &r.family)).or_insert(r);
            }
        }
        for ((first, family), r) in clashes {
            let what = if first == family {
                "expands to the same run twice".to_string()
            } else {
                format!("repeats runs of [methods.{first}]")
            };
            self.err(
                &format!("methods.{family}"),
                format!(
                    "{what} (`{}` on {}, seed {}); change or remove one",
                    r.config, r.dataset, r.seed
                ),
            );
        }
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
        let presets: Vec<_> = VitConfig::preset_names().collect();
        let arch_name = match m.get("arch") {
            Some(a) => self.one_of("backbone.arch", a, "architecture", &presets)?,
            None => "vit_base_patch16_224",
        };
        let mut arch = VitConfig::preset(arch_name).expect("a preset name");
        let before = self.errors.len();
        for k in ARCH {
            let Some(v) = m.get(k) else { continue };
            let key = format!("backbone.{k}");
            match k {
                "mlp_ratio" => arch.mlp_ratio = self.positive(&key, v).unwrap_or(arch.mlp_ratio),
                "num_classes" => {
                    arch.num_classes = self.u64(&key, v).map_or(arch.num_classes, |x| x as i64)
                }
                _ => {
                    let Some(x) = self.count(&key, v) else {
                        continue;
                    };
                    let x = x as i64;
                    match k {
                        "img_size" => arch.img_size = x,
                        "patch_size" => arch.patch_size = x,
                        "embed_dim" => arch.embed_dim = x,
                        "depth" => arch.depth = x,
                        _ => arch.num_heads = x,
                    }
                }
            }
        }
        if self.errors.len() == before {
            // timm's construction rules, each filed under the key to change.
            let (img, patch, dim, heads) = (
                arch.img_size,
                arch.patch_size,
                arch.embed_dim,
                arch.num_heads,
            );
            if img % patch != 0 {
                self.err(
                    "backbone.img_size",
                    format!("{img} is not a multiple of patch_size {patch}"),
                );
            }
            if dim % heads != 0 {
                self.err(
                    "backbone.embed_dim",
                    format!("{dim} is not a multiple of num_heads {heads}"),
                );
            }
            if img % patch == 0 && dim % heads == 0 {
                match arch.validate() {
                    Ok(()) => self.patch_size = Some(patch),
                    Err(e) => {
                        // Its messages start with the field ("mlp_ratio 0.1 gives no hidden units").
                        let field = e.split(' ').next().filter(|f| ARCH.contains(f));
                        self.err(&field.map_or("backbone".into(), |f| sub("backbone", f)), e);
                    }
                }
            }
        }
        let weights = match (m.get("weights"), m.get("pretrain")) {
            (Some(_), Some(_)) => {
                self.err(
                    "backbone",
                    "has both `weights` (a file) and [backbone.pretrain]; keep one",
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
                    "missing `weights = \"FILE.safetensors\"` (timm weights) or a [backbone.pretrain] recipe",
                );
                None
            }
        };
        let mut triple = |k: &str, default: f64| -> [f64; 3] {
            let key = format!("backbone.{k}");
            match m.get(k) {
                None => [default; 3],
                Some(Value::Array(a)) if a.len() == 3 => {
                    let v: Vec<f64> = a.iter().filter_map(|x| self.f64(&key, x)).collect();
                    if k == "std" && v.iter().any(|s| *s <= 0.0) {
                        self.err(&key, format!("must be > 0, got {v:?}"));
                    }
                    v.try_into().unwrap_or([default; 3])
                }
                Some(other) => {
                    self.err(
                        &key,
                        format!("expected a list of 3 numbers, found {}", found(other)),
                    );
                    [default; 3]
                }
            }
        };
        let mean = triple("mean", 0.5);
        let std = triple("std", 0.5);
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
        for (k, v) in m {
            let key = format!("backbone.pretrain.{k}");
            match k.as_str() {
                "task" => p.task = self.task(&key, v).unwrap_or(p.task),
                "images" => p.images = self.count(&key, v).unwrap_or(p.images),
                "epochs" => p.epochs = self.count(&key, v).unwrap_or(p.epochs),
                "batch_size" => {
                    p.batch_size = self.count(&key, v).map_or(p.batch_size, |x| x as i64)
                }
                "seed" => p.seed = self.u64(&key, v).unwrap_or(p.seed),
                "lr" => p.lr = self.positive(&key, v).unwrap_or(p.lr),
                "weight_decay" => {
                    p.weight_decay = self.non_negative(&key, v).unwrap_or(p.weight_decay)
                }
                _ => {} // reported by `table`
            }
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
        const SYNTHETIC: [&str; 2] = ["task", "test_images"];
        const REAL: [&str; 4] = ["root", "dtd_split", "train_csv", "test_csv"];
        let mut allowed = vec!["format", "seeds"];
        allowed.extend(SYNTHETIC.iter().chain(&REAL).chain(&OPT_KEYS));
        let m = self.table(&key, v, &allowed)?;
        let mut opt = defaults.clone();
        self.opt_into(&key, m, &mut opt);
        let seeds = m
            .get("seeds")
            .map(|s| self.seeds(&format!("{key}.seeds"), s));
        let format = match m.get("format") {
            Some(f) => self.one_of(&format!("{key}.format"), f, "dataset format", &FORMATS)?,
            None => {
                self.err(
                    &format!("{key}.format"),
                    format!("missing (one of: {})", FORMATS.join(", ")),
                );
                return None;
            }
        };
        let (theirs, not_ours) = if format == "synthetic" {
            (&SYNTHETIC[..], &REAL[..])
        } else {
            (&REAL[..], &SYNTHETIC[..])
        };
        for k in not_ours.iter().filter(|k| m.contains_key(**k)) {
            self.err(
                &format!("{key}.{k}"),
                format!(
                    "not used by format {format} (its keys: {})",
                    theirs.join(", ")
                ),
            );
        }
        let source = if format == "synthetic" {
            let task = match m.get("task") {
                Some(t) => self.task(&format!("{key}.task"), t)?,
                None => {
                    self.err(
                        &format!("{key}.task"),
                        format!("missing (one of: {})", Task::NAMES.join(", ")),
                    );
                    return None;
                }
            };
            let test_images = match m.get("test_images") {
                Some(t) => self.count(&format!("{key}.test_images"), t)?,
                None => 1000,
            };
            Source::Synthetic { task, test_images }
        } else {
            let format: Format = serde_json::from_value(format.into()).expect("one of FORMATS");
            let root = match m.get("root") {
                Some(r) => {
                    let r = self.str(&format!("{key}.root"), r)?;
                    self.base.join(r)
                }
                None => {
                    self.err(
                        &format!("{key}.root"),
                        format!("missing: the folder holding the {format} files"),
                    );
                    return None;
                }
            };
            // (Out of range, it becomes a split number the dtd reader rejects.)
            let dtd_split = match m.get("dtd_split") {
                Some(s) => Some(
                    self.u64(&format!("{key}.dtd_split"), s)?
                        .try_into()
                        .unwrap_or(u32::MAX),
                ),
                None => None,
            };
            let mut file = |k: &str| match m.get(k) {
                Some(f) => self.str(&format!("{key}.{k}"), f).map(|f| Some(f.into())),
                None => Some(None),
            };
            Source::Real(RealSource {
                format,
                root,
                dtd_split,
                train_csv: file("train_csv")?,
                test_csv: file("test_csv")?,
            })
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
        declared: &[&str],
        seeds: &[u64],
    ) -> Vec<Run> {
        let key = format!("methods.{family}");
        let mut allowed: Vec<&str> = SPEC.to_vec();
        allowed.extend(OPT_KEYS);
        allowed.extend(["method", "datasets", "seeds"]);
        let Some(m) = self.table(&key, v, &allowed) else {
            return Vec::new();
        };
        let kind = match m.get("method") {
            Some(v) => match self.one_of(&format!("{key}.method"), v, "method", &METHODS) {
                Some(k) => k,
                None => return Vec::new(),
            },
            None if METHODS.contains(&family) => family,
            None => {
                let hint = nearest(family, &METHODS)
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                self.err(
                    &key,
                    format!(
                        "`{family}` is not a method{hint}: name the table after one of {}, or set `method = \"...\"` in it",
                        METHODS.join(", ")
                    ),
                );
                return Vec::new();
            }
        };
        let only = m
            .get("datasets")
            .map(|d| self.dataset_list(&format!("{key}.datasets"), d, declared));
        let method_seeds = m
            .get("seeds")
            .map(|s| self.seeds(&format!("{key}.seeds"), s));
        // The grid: every list value is an axis (in key order, so the expansion is stable).
        let mut axes: Vec<(String, Vec<Value>)> = Vec::new();
        for (k, v) in m.iter().filter(|(k, _)| {
            let k = k.as_str();
            allowed.contains(&k) && !["method", "datasets", "seeds"].contains(&k)
        }) {
            let axis = format!("{key}.{k}");
            match v {
                Value::Array(a) if a.is_empty() => {
                    self.err(&axis, "is an empty grid axis: give at least one value")
                }
                Value::Array(a) => {
                    // A repeated value is reported and dropped (it would repeat runs).
                    let mut values = Vec::new();
                    for x in a {
                        if values.contains(x) {
                            self.err(&axis, format!("lists {} twice", display(x)));
                        } else {
                            values.push(x.clone());
                        }
                    }
                    axes.push((k.clone(), values))
                }
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
        // Varying settings go into the row label unless the method label shows them.
        let varying: BTreeSet<&str> = axes
            .iter()
            .filter(|(k, v)| {
                v.len() > 1 && (OPT_KEYS.contains(&k.as_str()) || !LABELLED.contains(&k.as_str()))
            })
            .map(|(k, _)| k.as_str())
            .collect();
        let mut runs = Vec::new();
        for point in points {
            let Some(method) = self.method_spec(&key, kind, &point) else {
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
                    }
                    if varying.contains(k.as_str()) {
                        config += &format!(" {k}={}", display(v));
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

    /// A method's `datasets = [...]`: names of declared datasets.
    fn dataset_list(&mut self, key: &str, v: &Value, declared: &[&str]) -> Vec<String> {
        let Some(list) = v.as_array() else {
            self.err(
                key,
                format!("expected a list of dataset names, found {}", found(v)),
            );
            return Vec::new();
        };
        if list.is_empty() {
            self.err(
                key,
                "is empty: list datasets, or leave `datasets` out to run on all",
            );
        }
        list.iter()
            .filter_map(|x| self.one_of(key, x, "dataset", declared))
            .map(String::from)
            .collect()
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
            let tkey = format!("{key}.targets");
            let layers = Target::ALL.map(Target::as_str);
            let Some(v) = get("targets") else {
                p.err(
                    &tkey,
                    format!("missing (e.g. \"q,v\"; layers: {})", layers.join(", ")),
                );
                return None;
            };
            let mut out: Vec<Target> = Vec::new();
            for t in p
                .str(&tkey, &v)?
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                let Some(x) = Target::ALL.into_iter().find(|x| x.as_str() == t) else {
                    p.err(&tkey, unknown("layer", t, &layers));
                    return None;
                };
                if out.contains(&x) {
                    p.err(&tkey, format!("lists `{t}` twice"));
                    return None;
                }
                let clash = out.iter().find(|o| {
                    (**o == Target::Qkv && x.qkv_slice().is_some())
                        || (x == Target::Qkv && o.qkv_slice().is_some())
                });
                if let Some(o) = clash {
                    p.err(
                        &tkey,
                        format!(
                            "has both `{}` and `{t}`: q, k and v are slices of qkv; choose one",
                            o.as_str()
                        ),
                    );
                    return None;
                }
                out.push(x);
            }
            // Order does not matter to the model: "v,q" is the same run (and key) as "q,v".
            out.sort();
            Some(out)
        };
        let num = |p: &mut Parser, k: &str, d: f64| {
            get(k).map_or(Some(d), |v| p.f64(&format!("{key}.{k}"), &v))
        };
        let rank = |p: &mut Parser, d: i64| {
            get("r").map_or(Some(d), |v| {
                p.count(&format!("{key}.r"), &v).map(|x| x as i64)
            })
        };
        let method = match kind {
            "linear" => Method::Linear,
            "full" => Method::Full,
            "bitfit" => Method::Bitfit,
            "lora" => {
                let r = rank(self, 8)?;
                Method::Lora(LoraSpec {
                    r,
                    alpha: num(self, "alpha", r as f64)?,
                    dropout: num(self, "dropout", 0.0)?,
                    rslora: match get("rslora") {
                        Some(v) => self.bool(&format!("{key}.rslora"), &v)?,
                        None => false,
                    },
                    targets: targets(self)?,
                })
            }
            "vera" => Method::Vera(VeraSpec {
                r: rank(self, 256)?,
                d_initial: num(self, "d_initial", 0.1)?,
                projection_prng_key: match get("projection_prng_key") {
                    Some(v) => self.u64(&format!("{key}.projection_prng_key"), &v)? as i64,
                    None => 0,
                },
                dropout: num(self, "dropout", 0.0)?,
                targets: targets(self)?,
            }),
            _ => Method::Ia3(Ia3Spec {
                targets: targets(self)?,
            }),
        };
        if let Err(e) = method.validate() {
            // Its messages read "lora: `alpha` must be > 0, got 0": file them under the field.
            let msg = e.split_once(": ").map_or(e.as_str(), |(_, m)| m);
            let field = msg.split('`').nth(1).filter(|f| allowed.contains(f));
            self.err(
                &field.map_or(key.to_string(), |f| format!("{key}.{f}")),
                msg,
            );
            return None;
        }
        Some(method)
    }

    fn overrides(&mut self, v: &Value, runs: &mut [Run], datasets: &[&str], families: &[&str]) {
        // After other errors the runs may be incomplete: "matches no run" could be wrong.
        let complete = self.errors.is_empty();
        let Some(list) = v.as_array() else {
            self.err(
                "override",
                format!(
                    "expected [[override]] entries (an array of tables), found {}",
                    found(v)
                ),
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
            if !m.keys().any(|k| OPT_KEYS.contains(&k.as_str())) {
                self.err(&key, "sets nothing (give settings such as epochs or lr)");
            }
            let mut known = true;
            let mut name = |p: &mut Parser, k: &str, what: &str, names: &[&str]| {
                let v = m.get(k)?;
                let n = p.one_of(&format!("{key}.{k}"), v, what, names);
                known &= n.is_some();
                n
            };
            let ds = name(self, "dataset", "dataset", datasets);
            let me = name(self, "method", "method table", families);
            let mut hits = 0;
            for r in runs.iter_mut() {
                if ds.is_some_and(|d| d != r.dataset) || me.is_some_and(|x| x != r.family) {
                    continue;
                }
                hits += 1;
                self.opt_into(&key, m, &mut r.opt);
                r.hparams.insert("lr".into(), r.opt.lr.to_string());
                r.hparams.insert("epochs".into(), r.opt.epochs.to_string());
            }
            if hits == 0 && known && complete {
                let why = match (ds, me) {
                    (Some(d), Some(x)) => {
                        format!("[methods.{x}] has no run on dataset `{d}` (see its `datasets`)")
                    }
                    (Some(d), None) => format!("no method runs on dataset `{d}`"),
                    _ => "no run".to_string(),
                };
                self.err(&key, format!("matches no run: {why}"));
            }
        }
    }
}

/// Method-table keys that are method parameters (the rest are optimisation settings).
const SPEC: [&str; 7] = [
    "r",
    "alpha",
    "dropout",
    "rslora",
    "targets",
    "d_initial",
    "projection_prng_key",
];

/// Method parameters that `Method::label` shows.
const LABELLED: [&str; 4] = ["r", "alpha", "rslora", "targets"];

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// "unknown WHAT `NAME` (did you mean `X`?; one of: A, B, C)".
fn unknown(what: &str, name: &str, names: &[&str]) -> String {
    let hint = nearest(name, names)
        .map(|n| format!("did you mean `{n}`? "))
        .unwrap_or_default();
    format!(
        "unknown {what} `{name}` ({hint}one of: {})",
        names.join(", ")
    )
}

/// The name a misspelt `k` most likely meant: a common synonym (peft's names), else the
/// closest by edit distance, at most 1 edit for short names and 2 from four letters on.
fn nearest<'a>(k: &str, names: &[&'a str]) -> Option<&'a str> {
    const SYNONYMS: [(&str, &str); 5] = [
        ("learning_rate", "lr"),
        ("rank", "r"),
        ("lora_alpha", "alpha"),
        ("lora_dropout", "dropout"),
        ("target_modules", "targets"),
    ];
    let synonym = SYNONYMS.iter().find(|(from, _)| *from == k);
    if let Some(n) = synonym.and_then(|(_, to)| names.iter().find(|n| *n == to)) {
        return Some(n);
    }
    names
        .iter()
        .map(|n| (edits(k, n), *n))
        .filter(|(d, n)| {
            let short = k.chars().count().min(n.chars().count());
            *d < short && *d <= if short >= 4 { 2 } else { 1 }
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Edit distance with transpositions (optimal string alignment).
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, x) in d[0].iter_mut().enumerate() {
        *x = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let swap = i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1];
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]))
                .min(if swap {
                    d[i - 2][j - 2] + 1
                } else {
                    usize::MAX
                });
        }
    }
    d[a.len()][b.len()]
}

/// Checks the sources a plan depends on (dataset roots, the weights file and whether its
/// tensors fit the backbone): clear errors before anything runs or is written.
pub fn check_inputs(suite: &Suite) -> Result<(), SuiteError> {
    let mut errors = Vec::new();
    for d in suite.datasets.values() {
        if let Source::Real(r) = &d.source {
            if let Err(e) = crate::datasets::check_source(r) {
                let field = match &e {
                    DatasetError::MissingRoot { .. } => Some("root"),
                    DatasetError::MissingField { field, .. }
                    | DatasetError::BadField { field, .. } => Some(*field),
                    _ => None,
                };
                let key = format!("datasets.{}", d.name);
                errors.push(format!(
                    "`{}`: {e}",
                    field.map_or(key.clone(), |f| sub(&key, f))
                ));
            }
        }
    }
    if let Weights::File(p) = &suite.backbone.weights {
        if !p.is_file() {
            errors.push(format!("`backbone.weights`: {} does not exist (download timm weights as safetensors; see README)", p.display()));
        } else if let Err(e) = check_weights(p, &suite.backbone.arch) {
            errors.push(format!("`backbone.weights`: {}: {e}", p.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        errors.sort();
        Err(SuiteError {
            file: suite.path.clone(),
            errors,
        })
    }
}

/// Whether the checkpoint at `path` loads into `arch` as the build node loads it (strict
/// names and shapes, `head.*` dropped, a position embedding for another square grid
/// resampled). Reads the safetensors header only.
fn check_weights(path: &Path, arch: &VitConfig) -> Result<(), String> {
    let file = safetensors_shapes(path)?;
    let want = backbone_shapes(arch).map_err(|e| e.to_string())?;
    let resampled = |have: &[i64], want: &[i64]| {
        let side = (have.get(1).map_or(0, |n| n - 1) as f64).sqrt() as i64;
        have.len() == 3 && have[0] == 1 && have[2] == want[2] && side * side + 1 == have[1]
    };
    let mut problems = Vec::new();
    for (name, shape) in &want {
        match file.get(name) {
            None => problems.push(format!("has no `{name}` (needed: {shape:?})")),
            Some(have) if have != shape && !(name == "pos_embed" && resampled(have, shape)) => {
                problems.push(format!(
                    "`{name}` is {have:?}, the backbone needs {shape:?}"
                ))
            }
            Some(_) => {}
        }
    }
    let want: BTreeSet<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    let extra: Vec<&String> = file
        .keys()
        .filter(|n| !n.starts_with("head.") && !want.contains(n.as_str()))
        .collect();
    if let Some(first) = extra.first() {
        problems.push(format!(
            "has {} tensor(s) the backbone lacks, e.g. `{first}`",
            extra.len()
        ));
    }
    match problems.len() {
        0 => Ok(()),
        1 => Err(format!("does not fit the backbone: {}", problems[0])),
        n => Err(format!(
            "does not fit the backbone: {} (and {} more problems); check backbone.arch, embed_dim, depth, num_heads, patch_size and mlp_ratio",
            problems[0],
            n - 1
        )),
    }
}

/// Names and shapes of the tensors in a safetensors file, from its JSON header.
fn safetensors_shapes(path: &Path) -> Result<BTreeMap<String, Vec<i64>>, String> {
    use std::io::Read;
    let bad = |why: String| format!("not a safetensors file ({why})");
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let mut len = [0; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("shorter than 8 bytes".into()))?;
    let len = u64::from_le_bytes(len);
    if len > size - 8 {
        return Err(bad(format!("header length {len} past the end")));
    }
    let mut header = vec![0; len as usize];
    f.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, t)| {
            let shape = t["shape"]
                .as_array()
                .and_then(|s| s.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>());
            shape
                .map(|s| (name.clone(), s))
                .ok_or_else(|| bad(format!("tensor `{name}` has no shape")))
        })
        .collect()
}

/// The backbone tensors `arch` needs (timm names, no head), with their shapes. Every block
/// is alike, so one is built and its names repeated: a ViT-B takes a second to initialise.
fn backbone_shapes(arch: &VitConfig) -> kernels::Result<Vec<(String, Vec<i64>)>> {
    let one = VitConfig {
        depth: 1,
        num_classes: 0,
        ..arch.clone()
    };
    let mut vit = tch::no_grad(|| VisionTransformer::new(&one, tch::Device::Cpu))?;
    let mut out = Vec::new();
    for (name, t, _) in vit.named_tensors() {
        match name.strip_prefix("blocks.0.") {
            Some(rest) => {
                out.extend((0..arch.depth).map(|i| (format!("blocks.{i}.{rest}"), t.size())))
            }
            None => out.push((name, t.size())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_suite() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../suite.toml")
    }

    #[test]
    fn nearest_suggests_close_names_and_synonyms_only() {
        assert_eq!(nearest("sedes", &TOP_KEYS), Some("seeds"));
        assert_eq!(nearest("epoch", &OPT_KEYS), Some("epochs"));
        assert_eq!(nearest("learning_rate", &OPT_KEYS), Some("lr"));
        assert_eq!(nearest("x", &["r"]), None);
        assert_eq!(nearest("colour", &TOP_KEYS), None);
    }

    #[test]
    fn a_grid_over_a_parameter_the_label_hides_gives_distinct_runs() {
        let sets = ["methods.lora.dropout=[0.0, 0.1]".to_string()];
        let suite = load(&default_suite(), &sets).expect("a valid suite");
        let configs: BTreeSet<&str> = suite.runs.iter().map(|r| r.config.as_str()).collect();
        for d in ["dropout=0.0", "dropout=0.1"] {
            assert!(configs.iter().any(|c| c.ends_with(d)), "{configs:?}");
        }
    }

    #[test]
    fn errors_from_set_say_so() {
        let sets = ["defaults.epoch=2".to_string()];
        let e = load(&default_suite(), &sets).unwrap_err();
        assert_eq!(
            e.errors,
            ["`defaults.epoch`: unknown key; did you mean `epochs`? (from --set defaults.epoch=2)"]
        );
    }
}
