//! Which suites have run against a store: `<store>/suites/<name>-<8 hex>.json` per suite file
//! holds its name, its path and every node key it asked for, so that `gc` of one suite can say
//! which unreachable entries belong to another study. Touches only `<store>/suites/`.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// The folder under a store root.
pub const DIR: &str = "suites";

/// One suite that ran against the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteRecord {
    /// The suite's `name`.
    pub name: String,
    /// The suite file, absolute.
    pub path: PathBuf,
    /// When a `run` of it last started (seconds since the epoch).
    pub last_run_unix: u64,
    /// Every node key any run of this suite file asked for (all its versions).
    pub keys: BTreeSet<String>,
}

/// The suite file as an absolute path (resolving links where it exists).
pub fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

fn file_for(store_root: &Path, name: &str, path: &Path) -> PathBuf {
    let stem: String = name
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "._-".contains(c) {
            true => c,
            false => '_',
        })
        .collect();
    let id = blake3::hash(path.to_string_lossy().as_bytes()).to_hex();
    store_root
        .join(DIR)
        .join(format!("{stem}-{}.json", &id[..8]))
}

/// Adds `keys` to the record of the suite file `suite_path` (named `name`) in the store at
/// `store_root`, creating it. Written to a temporary file and renamed into place.
pub fn record(
    store_root: &Path,
    name: &str,
    suite_path: &Path,
    keys: impl IntoIterator<Item = String>,
) -> Result<PathBuf, StoreError> {
    let path = absolute(suite_path);
    let file = file_for(store_root, name, &path);
    let mut rec = read(&file).unwrap_or_else(|| SuiteRecord {
        name: name.to_string(),
        path: path.clone(),
        last_run_unix: 0,
        keys: BTreeSet::new(),
    });
    rec.name = name.to_string();
    rec.keys.extend(keys);
    rec.last_run_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let dir = store_root.join(DIR);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let tmp = file.with_extension(format!("json.tmp{}", std::process::id()));
    let text = serde_json::to_string_pretty(&rec).expect("a suite record serialises");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &file).map_err(io(&file))?;
    Ok(file)
}

fn read(file: &Path) -> Option<SuiteRecord> {
    serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()
}

/// Every suite recorded in the store (unreadable files are skipped), sorted by name and path.
pub fn all(store_root: &Path) -> Vec<SuiteRecord> {
    let Ok(rd) = std::fs::read_dir(store_root.join(DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<SuiteRecord> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| read(&e.path()))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.path.cmp(&b.path)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_accumulate_keys_per_suite_file() {
        let root = std::env::temp_dir().join(format!("vtab-suite-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let a = root.join("a.toml");
        let b = root.join("sub/b.toml");
        record(&root, "study", &a, ["k1".to_string(), "k2".to_string()]).unwrap();
        record(&root, "study", &a, ["k3".to_string()]).unwrap();
        // Same name, another file: its own record.
        record(&root, "study", &b, ["k9".to_string()]).unwrap();
        let all = all(&root);
        assert_eq!(all.len(), 2);
        let ra = all.iter().find(|r| r.path == absolute(&a)).unwrap();
        assert_eq!(ra.keys, ["k1", "k2", "k3"].map(String::from).into());
        assert!(ra.last_run_unix > 0);
        let rb = all.iter().find(|r| r.path == absolute(&b)).unwrap();
        assert_eq!(rb.keys.len(), 1);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
