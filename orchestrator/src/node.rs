//! The node kinds of the DAG (prep, build, train, select, eval): what each one is, reads and
//! needs. Their fingerprints are `identity.rs`'s; how a suite expands into them is
//! `graph.rs`'s; what each computes is `nodes/`'s.
use crate::datasets::Split;
use crate::numerics::Numerics;
use crate::suite::{Opt, Pretrain, Source};
use kernels::{Method, VitConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepNode {
    pub dataset: String,
    pub source: Source,
    /// Content fingerprint of a real source (file list, sizes, mtimes); "" for synthetic.
    pub source_digest: String,
    pub split: Split,
    pub img_size: i64,
    pub sample_seed: u64,
    /// For train800 and val200: the key of the train800val200 prep they are cut from
    /// (decoded once there; the view picks its rows by example id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BuildWeights {
    /// A timm safetensors file; only its digest is semantic.
    File { path: PathBuf, blake3: String },
    /// Pretrain on a synthetic task at `img_size`, in `numerics`.
    Pretrain {
        recipe: Pretrain,
        img_size: i64,
        numerics: Numerics,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildNode {
    pub arch: VitConfig,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub weights: BuildWeights,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainNode {
    pub dataset: String,
    pub config: String,
    pub family: String,
    pub method: Method,
    pub opt: Opt,
    pub seed: u64,
    /// `opt.precision` resolved on the device kind the run targets.
    pub numerics: Numerics,
    pub prep: String,
    pub build: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalNode {
    pub dataset: String,
    pub config: String,
    pub family: String,
    pub seed: u64,
    pub hparams: BTreeMap<String, String>,
    pub numerics: Numerics,
    pub eval_batch_size: i64,
    pub train: String,
    pub prep: String,
    pub build: String,
}

/// One candidate of a selection: its report label and settings, and the keys of its val200
/// eval nodes, one per search seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub config: String,
    pub hparams: BTreeMap<String, String>,
    pub seeds: Vec<u64>,
    pub evals: Vec<String>,
}

/// The VTAB-1k selection of one (dataset, method table): reads its candidates' val200
/// metrics, writes `selection.json`. Candidates in suite order (the last tie-break).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectNode {
    pub dataset: String,
    pub family: String,
    pub candidates: Vec<Candidate>,
}

/// One node of the DAG; serialised with a `kind` tag (this is also the spec a child
/// process receives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Node {
    Prep(PrepNode),
    Build(BuildNode),
    Train(TrainNode),
    Eval(EvalNode),
    Select(SelectNode),
}

pub fn split_name(s: Split) -> &'static str {
    match s {
        Split::Train800 => "train800",
        Split::Val200 => "val200",
        Split::Train800val200 => "train800val200",
        Split::Test => "test",
    }
}

/// A node kind, registered once: its name (the store's folder of its entries, job names, run
/// records, its fingerprints) and the revision of what it computes, part of every key of the
/// kind (a bump re-keys them all, and a store made before re-runs them once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kind {
    pub name: &'static str,
    pub revision: u32,
    /// Seconds a node of the kind is expected to take when the store has none done yet.
    pub default_expected_s: f64,
}

/// Revision 2 (all kinds): explicit per-kind identities (`identity.rs`), resolved numerics
/// (`cpu-fp32`, `cuda-bf16`, ...) instead of `precision = "auto"`, and prep entries that record
/// their subset (`subset.json`, `members.txt`). `select` (the VTAB-1k protocol) starts at 1.
pub const PREP: Kind = Kind {
    name: "prep",
    revision: 2,
    default_expected_s: 120.0,
};
pub const BUILD: Kind = Kind {
    name: "build",
    revision: 2,
    default_expected_s: 600.0,
};
pub const TRAIN: Kind = Kind {
    name: "train",
    revision: 2,
    default_expected_s: 1800.0,
};
pub const EVAL: Kind = Kind {
    name: "eval",
    revision: 2,
    default_expected_s: 120.0,
};
pub const SELECT: Kind = Kind {
    name: "select",
    revision: 1,
    default_expected_s: 5.0,
};

/// Every node kind, each before the kinds that read it.
pub const KINDS: [Kind; 5] = [PREP, BUILD, TRAIN, EVAL, SELECT];

impl Node {
    pub fn kind_of(&self) -> Kind {
        match self {
            Node::Prep(_) => PREP,
            Node::Build(_) => BUILD,
            Node::Train(_) => TRAIN,
            Node::Eval(_) => EVAL,
            Node::Select(_) => SELECT,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind_of().name
    }

    /// e.g. "train shape lora r=8 a=8 q,v s0".
    pub fn label(&self) -> String {
        match self {
            Node::Prep(p) => format!(
                "prep {} {} {}px",
                p.dataset,
                split_name(p.split),
                p.img_size
            ),
            Node::Build(b) => match &b.weights {
                BuildWeights::File { path, .. } => format!(
                    "build {}",
                    path.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                BuildWeights::Pretrain { recipe, .. } => {
                    format!("build pretrain {:?} {}ep", recipe.task, recipe.epochs).to_lowercase()
                }
            },
            Node::Train(t) => format!("train {} {} s{}", t.dataset, t.config, t.seed),
            Node::Eval(e) => format!("eval {} {} s{}", e.dataset, e.config, e.seed),
            Node::Select(s) => format!("select {} {}", s.dataset, s.family),
        }
    }

    /// What "the same node" is across edits of the suite, for change reasons.
    pub fn identity(&self) -> String {
        match self {
            Node::Prep(p) => format!("{} {}", p.dataset, split_name(p.split)),
            Node::Build(_) => "backbone".into(),
            Node::Train(t) => format!("{} {} {}", t.dataset, t.family, t.seed),
            Node::Eval(e) => format!("{} {} {}", e.dataset, e.family, e.seed),
            Node::Select(s) => format!("{} {}", s.dataset, s.family),
        }
    }

    /// The arithmetic a device node is keyed for (train, eval, pretraining); None for CPU
    /// work (prep, checkpoint builds).
    pub fn numerics(&self) -> Option<Numerics> {
        match self {
            Node::Train(t) => Some(t.numerics),
            Node::Eval(e) => Some(e.numerics),
            Node::Build(BuildNode {
                weights: BuildWeights::Pretrain { numerics, .. },
                ..
            }) => Some(*numerics),
            Node::Prep(_) | Node::Build(_) | Node::Select(_) => None,
        }
    }

    /// What the node needs while it runs: train and eval (and pretraining) a GPU, prep
    /// (image decoding) and file builds only CPU threads; a select node and a prep view
    /// (rows picked from a decoded split) are tiny.
    pub fn resources(&self) -> crate::sched::state::Resources {
        use crate::sched::state::Resources;
        match self {
            Node::Train(_)
            | Node::Eval(_)
            | Node::Build(BuildNode {
                weights: BuildWeights::Pretrain { .. },
                ..
            }) => Resources {
                gpus: 1,
                cpu_threads: 4,
                tiny: false,
            },
            Node::Prep(p) => Resources {
                gpus: 0,
                cpu_threads: 4,
                tiny: p.view_of.is_some(),
            },
            Node::Build(_) => Resources {
                gpus: 0,
                cpu_threads: 1,
                tiny: false,
            },
            Node::Select(_) => Resources {
                gpus: 0,
                cpu_threads: 1,
                tiny: true,
            },
        }
    }

    /// Keys of the nodes this one reads.
    pub fn deps(&self) -> Vec<String> {
        match self {
            Node::Prep(p) => p.view_of.iter().cloned().collect(),
            Node::Build(_) => Vec::new(),
            Node::Train(t) => vec![t.prep.clone(), t.build.clone()],
            Node::Eval(e) => vec![e.train.clone(), e.prep.clone(), e.build.clone()],
            Node::Select(s) => s
                .candidates
                .iter()
                .flat_map(|c| c.evals.iter().cloned())
                .collect(),
        }
    }
}
