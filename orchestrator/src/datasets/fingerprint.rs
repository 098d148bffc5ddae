//! The cheap content fingerprint of a real source: a blake3 digest over (relative path, size,
//! mtime) of every file its reader can read. Owns only the hashing; it must not list datasets.
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use super::error::io_err;
use super::{DatasetError, RealSource};

/// Hashes `files` (the reader's complete file list) for `src`.
///
/// The digest covers a version tag, the format, the reader's `config` (which file plays which
/// role, e.g. the DTD split or the CSV names), then one line per file sorted by
/// its path relative to `src.root` (absolute if outside it, `/`-separated):
/// `path \0 size \0 mtime-in-ns-since-epoch \n` (mtime 0 where the platform has none). Files
/// listed twice count once. A missing file is an error naming it.
pub(crate) fn digest(
    src: &RealSource,
    config: &str,
    files: Vec<PathBuf>,
) -> Result<String, DatasetError> {
    let mut rows = Vec::with_capacity(files.len());
    for file in files {
        let meta = std::fs::metadata(&file).map_err(io_err(&file))?;
        let rel = file.strip_prefix(&src.root).unwrap_or(&file);
        let rel = rel.to_string_lossy().replace('\\', "/");
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        rows.push((rel, meta.len(), mtime));
    }
    rows.sort();
    rows.dedup();
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"vtab-orch real-source fingerprint v1\n");
    hasher.update(format!("{}\n{config}\n", src.format).as_bytes());
    for (rel, size, mtime) in rows {
        hasher.update(format!("{rel}\0{size}\0{mtime}\n").as_bytes());
    }
    Ok(hasher.finalize().to_hex().to_string())
}
