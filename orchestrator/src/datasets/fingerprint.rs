//! The content fingerprint of a real source: a blake3 digest over (relative path, content
//! blake3) of every file its reader can read, with a cache of file digests keyed by (path,
//! size, mtime) so that unchanged files are not read again. Owns only the hashing; it must
//! not list datasets.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::error::io_err;
use super::{DatasetError, RealSource};

/// A source's fingerprint and the per-file digests it was made from (`plan` names the files
/// that changed between two of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFingerprint {
    pub digest: String,
    /// (path relative to the root, `/`-separated; content blake3), sorted by path.
    pub files: Vec<(String, String)>,
}

/// What changed between two fingerprints of a source, by file.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FileChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub modified: Vec<String>,
}

impl SourceFingerprint {
    /// The files added, removed and modified from `old` to `self`.
    pub fn changes_since(&self, old: &SourceFingerprint) -> FileChanges {
        let before: BTreeMap<&str, &str> = old
            .files
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_str()))
            .collect();
        let now: BTreeMap<&str, &str> = self
            .files
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_str()))
            .collect();
        let mut c = FileChanges::default();
        for (p, d) in &now {
            match before.get(p) {
                None => c.added.push(p.to_string()),
                Some(b) if b != d => c.modified.push(p.to_string()),
                Some(_) => {}
            }
        }
        c.removed = before
            .keys()
            .filter(|p| !now.contains_key(*p))
            .map(|p| p.to_string())
            .collect();
        c
    }
}

impl std::fmt::Display for FileChanges {
    /// "files: 1 modified (a/0.png), 2 added (b/7.png, b/8.png)", up to 3 names per kind.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (what, list) in [
            ("modified", &self.modified),
            ("added", &self.added),
            ("removed", &self.removed),
        ] {
            if list.is_empty() {
                continue;
            }
            let mut names = list.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
            if list.len() > 3 {
                names += ", ...";
            }
            parts.push(format!("{} {what} ({names})", list.len()));
        }
        if parts.is_empty() {
            f.write_str("files: none changed (the file roles or split changed)")
        } else {
            write!(f, "files: {}", parts.join(", "))
        }
    }
}

/// File content digests by absolute path, valid while size and mtime are as recorded.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DigestCache {
    entries: BTreeMap<PathBuf, (u64, u128, String)>,
    #[serde(skip)]
    dirty: bool,
}

impl DigestCache {
    /// The cache saved at `path`, or an empty one (a missing or unreadable cache only costs
    /// re-hashing).
    pub fn load(path: &Path) -> DigestCache {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves the cache to `path` if anything was added (written aside, then renamed).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(self).expect("cache serialises"))?;
        std::fs::rename(&tmp, path)
    }

    /// The blake3 of `file`'s content: from the cache while its size and mtime are unchanged,
    /// else read (and remembered).
    fn digest(&mut self, file: &Path) -> Result<String, DatasetError> {
        let meta = std::fs::metadata(file).map_err(io_err(file))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        if let Some((size, t, d)) = self.entries.get(file) {
            if *size == meta.len() && *t == mtime {
                return Ok(d.clone());
            }
        }
        let mut h = blake3::Hasher::new();
        let mut f = std::fs::File::open(file).map_err(io_err(file))?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(io_err(file))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let d = h.finalize().to_hex().to_string();
        self.entries
            .insert(file.to_path_buf(), (meta.len(), mtime, d.clone()));
        self.dirty = true;
        Ok(d)
    }
}

/// Hashes `files` (the reader's complete file list) for `src`.
///
/// The digest covers a version tag, the format, the reader's `config` (which file plays which
/// role, e.g. the DTD split or the CSV names), then one line per file sorted by its path
/// relative to `src.root` (absolute if outside it, `/`-separated): `path \0 blake3 \n`. Files
/// listed twice count once. A missing file is an error naming it. Where the files live and
/// their mtimes do not count: a `touch` or a copy keeps the fingerprint.
pub(crate) fn digest(
    src: &RealSource,
    config: &str,
    files: Vec<PathBuf>,
    cache: &mut DigestCache,
) -> Result<SourceFingerprint, DatasetError> {
    let mut rows = Vec::with_capacity(files.len());
    for file in files {
        let rel = file.strip_prefix(&src.root).unwrap_or(&file);
        let rel = rel.to_string_lossy().replace('\\', "/");
        rows.push((rel, cache.digest(&file)?));
    }
    rows.sort();
    rows.dedup();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"vtab-orch real-source fingerprint v2 (content)\n");
    hasher.update(format!("{}\n{config}\n", src.format).as_bytes());
    for (rel, d) in &rows {
        hasher.update(format!("{rel}\0{d}\n").as_bytes());
    }
    Ok(SourceFingerprint {
        digest: hasher.finalize().to_hex().to_string(),
        files: rows,
    })
}
