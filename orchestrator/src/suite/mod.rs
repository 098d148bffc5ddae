//! Parsing and validating a suite file (TOML via figment, `VTAB_ORCH_*` environment
//! overrides, `--set key=value`) into typed runs. Knows nothing of hashing or the store.
//!
//! Shape of a suite (see suite.toml for a commented example):
//! `name`, `store`, `seeds`; `[defaults]` optimisation settings; `[backbone]`; one
//! `[datasets.NAME]` table per dataset; one `[methods.NAME]` table per method configuration
//! family, where a list value is an axis of the grid; `[[override]]` entries that change
//! settings for matching dataset/method pairs. Precedence: defaults < dataset < method < override.
//!
//! Files, by concern: `layers` (file + environment + `--set`, syntax errors), `parser` (the
//! typed readers every section uses), `defaults`, `backbone`, `datasets`, `methods` (sections),
//! `grid` (the whole suite: expansion into runs, overrides), `inputs` (dataset roots and
//! weights files), `diagnostic` (the typed errors and did-you-mean).
mod backbone;
mod datasets;
mod defaults;
mod diagnostic;
mod grid;
mod inputs;
mod layers;
mod methods;
mod parser;
mod protocol;

pub use defaults::{CheckpointEvery, Opt};
pub use diagnostic::{Diagnostic, Origin, Problem, SuiteError};
pub use inputs::check_inputs;
pub use layers::{load_with_env, parse_str};

use crate::datasets::synthetic::Task;
use crate::datasets::RealSource;
use kernels::{Method, VitConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// `group`: its group in the report's VTAB-1k table (`natural`, `specialized`,
    /// `structured` or any name); `None`: the VTAB-1k task's own group, if it is one
    /// (`report::vtab1k_group`). Not part of any key.
    pub group: Option<String>,
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
    /// `[protocol]`: None runs every grid point as a final run; with it `runs` are the
    /// search runs (train800 -> val200) and `selections` the (dataset, method) groups.
    pub protocol: Option<Protocol>,
    pub selections: Vec<Selection>,
    pub name: String,
    pub store: PathBuf,
    pub backbone: Backbone,
    pub datasets: BTreeMap<String, DatasetDef>,
    pub runs: Vec<Run>,
    /// `[slurm]`: sbatch options for `run --launcher slurm` (not part of any node's key).
    pub slurm: crate::sched::slurm::SlurmConfig,
}

/// `[protocol] kind = "vtab1k"`: the VTAB-1k selection protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct Protocol {
    pub search_seeds: Vec<u64>,
    pub final_seeds: Vec<u64>,
}

/// One (dataset, method table) selection of the protocol: its candidates in suite order,
/// each a run with the final splits (train800val200 -> test; `seed` is the first final
/// seed), and the seeds its finals run with.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub dataset: String,
    pub family: String,
    pub candidates: Vec<Run>,
    pub final_seeds: Vec<u64>,
    pub search_seeds: Vec<u64>,
    /// Per candidate, its search runs (positions in `Suite::runs`, one per search seed);
    /// empty for a single candidate.
    pub search_runs: Vec<Vec<usize>>,
}

/// Loads `path` with environment overrides (`VTAB_ORCH_DEFAULTS__EPOCHS=3`) and `--set`
/// assignments (`defaults.epochs=3`, values in TOML syntax). Precedence: file <
/// environment < `--set`; both go through the same validation as the file.
pub fn load(path: &Path, sets: &[String]) -> Result<Suite, SuiteError> {
    load_with_env(path, sets, std::env::vars())
}

pub(super) const TOP_KEYS: [&str; 10] = [
    "name", "store", "seeds", "defaults", "backbone", "datasets", "methods", "override", "slurm",
    "protocol",
];
pub(super) const FORMATS: [&str; 7] = [
    "synthetic",
    "cifar100",
    "eurosat",
    "dtd",
    "vtab1k",
    "imagefolder",
    "csv",
];

#[cfg(test)]
mod tests;
