//! Warm workers: one long-lived `vtab-orch worker` process per device slot runs the slot's
//! nodes one after another, so libtorch is loaded (and a CUDA context made) once per slot
//! instead of once per node. The pipe protocol between the launcher (`local.rs`) and the
//! worker (`crate::worker`, which runs the nodes).
//!
//! Protocol, one JSON object per line. Launcher to worker (stdin): `{"key", "spec", "log"}`.
//! Worker to launcher (stdout): the node's own progress lines, then `{"worker_exit": CODE}`
//! (the code `vtab-orch exec` would exit with). A node that fails ends its worker too (a
//! fresh process for the next node: no state of a failed node, a CUDA error say, is carried
//! over); a worker that dies (a crash, an OOM kill) fails only the node it was running.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One node handed to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub struct Assignment {
    pub key: String,
    pub spec: PathBuf,
    /// The node's log: the worker's stderr goes there while the node runs.
    pub log: PathBuf,
    /// The run that hands it over (recorded in the node's manifest).
    #[serde(default)]
    pub run: Option<String>,
    /// Seconds the node is expected to take (a pool worker near its time limit leaves it).
    #[serde(default)]
    pub expected_s: f64,
}

/// The line that ends a node's output on the worker's stdout.
pub const EXIT_FIELD: &str = "worker_exit";
