//! The optimisation and data settings of a run (`[defaults]`, and the same keys in dataset,
//! method and override tables) and seed lists. Reads values; knows no sections.
use super::parser::{Parser, MAX_BATCH, MAX_EPOCHS, MAX_IMG_SIZE, MAX_LIST};
use crate::datasets::Split;
use kernels::train::Precision;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    /// How often a training node writes its resumable checkpoint (not part of any key).
    pub checkpoint_every: CheckpointEvery,
}

/// A training node's checkpoint policy: `"10m"`, `"30s"`, `"1h"` of wall time since the
/// last one, or `"1 epoch"`, `"5 epochs"`. A node also checkpoints when it is asked to stop
/// (Ctrl-C, SIGTERM, Slurm's preemption signal), and never after its last epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointEvery {
    Seconds(f64),
    Epochs(u64),
}

/// The longest checkpoint interval: a year of wall time.
const MAX_CHECKPOINT_S: f64 = 365.0 * 86_400.0;

impl std::str::FromStr for CheckpointEvery {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}`: expected a duration such as \"10m\", \"30s\", \"1h\" or a count such as \"1 epoch\", \"5 epochs\"")
        };
        let t = s.trim();
        if let Some(n) = t.strip_suffix("epochs").or_else(|| t.strip_suffix("epoch")) {
            return match n.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Ok(CheckpointEvery::Epochs(n)),
                _ => Err(bad()),
            };
        }
        let (num, unit) = t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?);
        let scale = match unit {
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        match num.trim().parse::<f64>() {
            Ok(x) if x >= 0.0 && x * scale <= MAX_CHECKPOINT_S => {
                Ok(CheckpointEvery::Seconds(x * scale))
            }
            _ => Err(bad()),
        }
    }
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
            checkpoint_every: CheckpointEvery::Seconds(600.0),
        }
    }
}

pub(super) const OPT_KEYS: [&str; 16] = [
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
    "checkpoint_every",
];

impl Parser {
    /// Applies the optimisation keys of `m` onto `opt`.
    pub(super) fn opt_into(&mut self, prefix: &str, m: &Map<String, Value>, opt: &mut Opt) {
        for (k, v) in m.iter().filter(|(k, _)| OPT_KEYS.contains(&k.as_str())) {
            let key = format!("{prefix}.{k}");
            self.opt_key(&key, k, v, opt);
        }
    }

    pub(super) fn opt_key(&mut self, key: &str, k: &str, v: &Value, opt: &mut Opt) {
        match k {
            "epochs" => opt.epochs = self.integer_in(key, v, 1, MAX_EPOCHS).unwrap_or(opt.epochs),
            "warmup_epochs" => {
                opt.warmup_epochs = self
                    .integer_in(key, v, 0, MAX_EPOCHS)
                    .unwrap_or(opt.warmup_epochs)
            }
            "sample_seed" => opt.sample_seed = self.u64(key, v).unwrap_or(opt.sample_seed),
            "batch_size" | "eval_batch_size" | "img_size" => {
                let max = if k == "img_size" {
                    MAX_IMG_SIZE
                } else {
                    MAX_BATCH
                };
                let Some(x) = self.integer_in(key, v, 1, max) else {
                    return;
                };
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
            "checkpoint_every" => {
                if let Some(text) = self.str(key, v) {
                    match text.parse() {
                        Ok(c) => opt.checkpoint_every = c,
                        Err(e) => self.err(key, e),
                    }
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
    pub(super) fn seeds(&mut self, key: &str, v: &Value) -> Vec<u64> {
        let Some(list) = v.as_array() else {
            self.wrong_type(key, "a list of seeds", v);
            return Vec::new();
        };
        if list.is_empty() {
            self.err(key, "is empty: give at least one seed");
        }
        if list.len() > MAX_LIST {
            self.err(
                key,
                format!("lists {} seeds, at most {MAX_LIST}", list.len()),
            );
            return Vec::new();
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
}
