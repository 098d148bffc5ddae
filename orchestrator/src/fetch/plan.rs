//! What a suite is missing (datasets with an official archive, hub weights) and fetching one
//! such item into the layout the readers expect. Owns only the suite's data and weights paths;
//! it must not change the suite or the store.
use super::{
    archive_for, catalogue::DATA_MIRROR_ENV, download, hub, io_err, mirrored, unpack, Archive,
    Checksum, Client, FetchError, Progress, WeightsRef,
};
use crate::datasets::{check_source, Format, RealSource};
use crate::suite::{Source, Suite, Weights};
use std::fs;
use std::path::{Path, PathBuf};

/// One thing a suite needs that is not on disk.
#[derive(Debug, Clone, PartialEq)]
pub enum Missing {
    /// A dataset with an official archive.
    Data {
        dataset: String,
        root: PathBuf,
        archive: Archive,
    },
    /// A VTAB-1k task: no official download, but `install_vtab1k` unpacks the user's archive.
    Vtab1k {
        dataset: String,
        source: RealSource,
        problem: String,
    },
    /// A dataset that cannot be downloaded (ImageFolder, CSV): what the reader said.
    Manual { dataset: String, problem: String },
    /// A timm checkpoint from the hub.
    Weights { path: PathBuf, weights: WeightsRef },
    /// A weights file whose name does not say which timm checkpoint it is.
    UnknownWeights { path: PathBuf },
}

/// Everything the suite references that is missing, datasets first (sorted by name).
pub fn missing(suite: &Suite, data: bool, weights: bool) -> Vec<Missing> {
    let mut out = Vec::new();
    for d in suite.datasets.values().filter(|_| data) {
        let Source::Real(src) = &d.source else {
            continue;
        };
        let Err(e) = check_source(src) else { continue };
        out.push(match archive_for(&src.format, &src.root) {
            Some(archive) => Missing::Data {
                dataset: d.name.clone(),
                root: src.root.clone(),
                archive,
            },
            None if src.format == Format::Vtab1k => Missing::Vtab1k {
                dataset: d.name.clone(),
                source: src.clone(),
                problem: e.to_string(),
            },
            None => Missing::Manual {
                dataset: d.name.clone(),
                problem: e.to_string(),
            },
        });
    }
    if let (true, Weights::File(p)) = (weights, &suite.backbone.weights) {
        if !p.is_file() {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            out.push(match WeightsRef::from_file_name(&name) {
                Some(w) => Missing::Weights {
                    path: p.clone(),
                    weights: w,
                },
                None => Missing::UnknownWeights { path: p.clone() },
            });
        }
    }
    out
}

/// Downloads `archive` next to `root`, unpacks it in a staging folder, and renames its `inner`
/// folder to `root` (when `root` is named like it) or to `root/inner`; the archive is deleted
/// afterwards. `src` is checked at the end.
pub fn fetch_archive(
    client: &Client,
    src: &RealSource,
    archive: &Archive,
    progress: &mut dyn Progress,
) -> Result<PathBuf, FetchError> {
    let root = &src.root;
    let final_dir = if root.file_name().is_some_and(|n| n == archive.inner) {
        root.clone()
    } else {
        root.join(archive.inner)
    };
    if final_dir.exists() {
        return Err(FetchError::Unsupported(format!(
            "{} exists but is not a complete {} dataset; move it away and rerun fetch",
            final_dir.display(),
            src.format
        )));
    }
    let parent = final_dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let mirror = std::env::var(DATA_MIRROR_ENV).ok();
    let url = mirrored(archive.url, mirror.as_deref());
    let file = parent.join(archive.file_name);
    let manual = format!(
        "get {} ({}) into {} and rerun fetch (or unpack it there yourself so that {} exists)",
        archive.url,
        archive.checksum(),
        parent.display(),
        final_dir.display()
    );
    download(
        client,
        &url,
        &file,
        &archive.checksum(),
        &[],
        &manual,
        progress,
    )?;
    let staging = parent.join(format!(".{}.unpacking", archive.inner));
    let _ = fs::remove_dir_all(&staging);
    unpack(&file, archive.kind, &staging, &client.unpack_limits)?;
    let inner = staging.join(archive.inner);
    if !inner.is_dir() {
        let _ = fs::remove_dir_all(&staging);
        return Err(FetchError::BadArchive {
            archive: file,
            problem: format!("it has no top-level `{}/` folder", archive.inner),
        });
    }
    let moved = fs::rename(&inner, &final_dir).map_err(io_err(&final_dir));
    let _ = fs::remove_dir_all(&staging);
    moved?;
    let _ = fs::remove_file(&file);
    check_source(src).map_err(|e| FetchError::Unsupported(format!("after unpacking: {e}")))?;
    Ok(final_dir)
}

/// Downloads a timm checkpoint to `path`, verified against the hub's published sha256.
pub fn fetch_weights(
    client: &Client,
    w: &WeightsRef,
    path: &Path,
    progress: &mut dyn Progress,
) -> Result<(), FetchError> {
    let url = hub::hub_url(w);
    let sha = hub::weights_sha256(client, &url)?;
    let manual = format!(
        "download {url} (sha256 {sha}) and save it as {}",
        path.display()
    );
    download(
        client,
        &url,
        path,
        &Checksum::Sha256(sha),
        &hub::auth_headers(),
        &manual,
        progress,
    )
}
