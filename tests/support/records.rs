//! Reading a store's run records (`<store>/runs/*.jsonl`) in tests: every event of every run,
//! in the order of the record files' names (run ids begin with their start time).
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every event of every run record of `store`.
pub fn records(store: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(store.join("runs"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}
