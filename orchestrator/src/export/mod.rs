//! `export`: one trained run out of the store, as a peft adapter directory or as a merged
//! timm checkpoint. `find` names the run (by key or label); `write` writes it. Reads the
//! store; writes only under OUT (and its staging folder beside it).
mod find;
mod write;

pub use find::{find, find_in_store, Found};
pub use write::{export, load_model, Written};

use std::path::PathBuf;

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An adapter directory for `peft.PeftModel.from_pretrained(timm_model, OUT)`.
    Peft,
    /// `config.json` + `model.safetensors` with the adapter merged and the trained head:
    /// `timm.create_model("local-dir:OUT", pretrained=True)`.
    Merged,
}

/// Where the export's own record goes (which run, which suite, how to load it).
pub const RECORD: &str = "vtab-orch.json";
/// A merged export's weights (timm's file name for a local model folder).
pub const MERGED_WEIGHTS: &str = "model.safetensors";
/// The base weights copied beside a peft export whose backbone was pretrained in the store.
pub const BASE_WEIGHTS: &str = "base_model.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Nothing matched the `--run` text: an invalid argument.
    #[error("--run `{spec}` names no run of this suite; {hint}")]
    NoMatch { spec: String, hint: String },
    /// Several runs matched: an invalid argument.
    #[error("--run `{spec}` matches {} runs; pass one of their keys:\n{}", .list.len(), .list.join("\n"))]
    Ambiguous { spec: String, list: Vec<String> },
    #[error("run `{label}` (train {key}) is not trained yet: run `vtab-orch run` first")]
    NotTrained { label: String, key: String },
    /// Under a protocol, the final run of a (dataset, method) exists once its select node chose.
    #[error(
        "the final run of `{dataset} {family}` does not exist yet (its select node has not \
         chosen): run `vtab-orch run` first; a search run can be exported by its key or its \
         `(search)` label (`vtab-orch plan` lists them)"
    )]
    FinalPending { dataset: String, family: String },
    /// The method has no such format (e.g. full fine-tuning as a peft adapter).
    #[error("{0}")]
    Unsupported(String),
    /// OUT cannot be (re)placed: not a folder, another export's folder holding other files,
    /// or a folder holding the store, the suite or the current directory.
    #[error("{}: {why}", .path.display())]
    BadOut { path: PathBuf, why: String },
    #[error(transparent)]
    Node(#[from] crate::nodes::NodeError),
    #[error(transparent)]
    Kernels(#[from] kernels::Error),
    #[error("{}: {msg}", .path.display())]
    Io { path: PathBuf, msg: String },
}

impl ExportError {
    /// Exit code 2 (the command line is wrong) or 1 (the store cannot give it yet).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::NoMatch { .. }
                | Self::Ambiguous { .. }
                | Self::Unsupported(_)
                | Self::BadOut { .. }
        )
    }
}

type Result<T> = std::result::Result<T, ExportError>;

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |e| ExportError::Io {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}
