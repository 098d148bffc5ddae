//! Node executors, one file per kind. Each runs inside `vtab-orch exec` (a child process),
//! writes its artifacts into a staging directory and returns; the caller commits.
pub mod build;
pub mod checkpoint;
pub mod eval;
pub mod fit;
pub mod peak_rss;
pub mod prep;
pub mod select;
pub mod train;

use std::io::Write;

/// Reports progress to the parent as one JSON line on stdout (the parent's scheduler reads
/// these; nothing else may print to stdout in a child).
pub fn progress(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

pub type Result<T> = std::result::Result<T, NodeError>;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Kernels(#[from] kernels::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Dataset(#[from] crate::datasets::DatasetError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

/// One epoch of training, as `fit` logs it and a checkpoint keeps it (here, so that `fit` and
/// `checkpoint` each depend on it and not on one another).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: u64,
    pub loss: f64,
    pub lr: f64,
    pub time_s: f64,
    pub img_s: f64,
    pub peak_mem_mib: Option<f64>,
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn write_json(path: &std::path::Path, v: &impl serde::Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v).expect("serialisable"))
        .map_err(io_err(path))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| NodeError::Failed(format!("{}: {e}", path.display())))
}
