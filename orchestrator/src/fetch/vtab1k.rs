//! The VTAB-1k archive (vtab1k-pytorch / NOAH layout: `vtab-1k/<task>/{train800,val200,
//! train800val200,test}.txt` + images), which has no stable official URL: installed from a
//! copy the user names (a file, or a URL with its sha256). Owns only the folder the suite's
//! VTAB-1k roots live in; it must not read images beyond the layout check.
use super::{download, io_err, unpack, ArchiveKind, Checksum, Client, FetchError, Progress};
use crate::datasets::{check_source, RealSource};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the user's copy of the archive is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vtab1kArchive {
    File(PathBuf),
    /// A URL (a lab's cache, a mirror) and the sha256 the download must have.
    Url {
        url: String,
        sha256: String,
    },
}

impl Vtab1kArchive {
    /// `spec` is a path or an http(s) URL; a URL needs `sha256` (every download is verified).
    pub fn parse(spec: &str, sha256: Option<&str>) -> Result<Self, FetchError> {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let sha256 =
                sha256.filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
            let Some(sha256) = sha256 else {
                return Err(FetchError::Unsupported(format!(
                    "--vtab1k {spec}: a URL needs --vtab1k-sha256 HEX (64 hex digits, `sha256sum` of \
                     the archive) so the download can be verified"
                )));
            };
            return Ok(Vtab1kArchive::Url {
                url: spec.to_string(),
                sha256: sha256.to_ascii_lowercase(),
            });
        }
        Ok(Vtab1kArchive::File(PathBuf::from(spec)))
    }

    fn name(&self) -> String {
        match self {
            Vtab1kArchive::File(p) => p.display().to_string(),
            Vtab1kArchive::Url { url, .. } => url.clone(),
        }
    }
}

fn kind_of(name: &str) -> Option<ArchiveKind> {
    if name.ends_with(".zip") {
        Some(ArchiveKind::Zip)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some(ArchiveKind::TarGz)
    } else {
        None
    }
}

/// Installs the tasks of `archive` into the folder that holds the suite's missing VTAB-1k
/// roots (`sources`, all in one folder, each named after its task) and checks the layout of
/// every one of them. Task folders already there are kept; the archive's other tasks are
/// installed too (a later suite may use them). Returns the folder. Nothing is moved into it
/// unless every wanted task is in the archive with a valid layout.
pub fn install_vtab1k(
    client: &Client,
    archive: &Vtab1kArchive,
    sources: &[RealSource],
    progress: &mut dyn Progress,
) -> Result<PathBuf, FetchError> {
    let Some(first) = sources.first() else {
        return Err(FetchError::Unsupported(
            "--vtab1k: the suite has no missing dataset with format = \"vtab1k\"".into(),
        ));
    };
    let parent = |s: &RealSource| s.root.parent().unwrap_or(Path::new(".")).to_path_buf();
    let folder = parent(first);
    if let Some(other) = sources.iter().find(|s| parent(s) != folder) {
        return Err(FetchError::Unsupported(format!(
            "--vtab1k: the suite's VTAB-1k roots are in different folders ({} and {}); put them in \
             one folder (as the archive has them) or install the archive by hand",
            first.root.display(),
            other.root.display()
        )));
    }
    let name = archive.name();
    let kind = kind_of(&name).ok_or_else(|| {
        FetchError::Unsupported(format!(
            "--vtab1k {name}: expected a .zip, .tar.gz or .tgz archive"
        ))
    })?;
    let work = folder.parent().unwrap_or(Path::new(".")).to_path_buf();
    fs::create_dir_all(&work).map_err(io_err(&work))?;
    let leaf = folder.file_name().unwrap_or_default().to_string_lossy();
    let (file, downloaded) = match archive {
        Vtab1kArchive::File(p) => (p.clone(), false),
        Vtab1kArchive::Url { url, sha256 } => {
            let file_name = url.rsplit('/').next().unwrap_or("vtab-1k.zip");
            let file = work.join(format!(".{leaf}.{file_name}"));
            let manual = format!(
                "download {url} (sha256 {sha256}) yourself and pass the file: --vtab1k FILE"
            );
            let sum = Checksum::Sha256(sha256.clone());
            download(client, url, &file, &sum, &[], &manual, progress)?;
            (file, true)
        }
    };
    let staging = work.join(format!(".{leaf}.unpacking"));
    let _ = fs::remove_dir_all(&staging);
    let result = unpack(&file, kind, &staging).and_then(|()| {
        let base = task_base(&staging, sources).map_err(|problem| FetchError::BadArchive {
            archive: file.clone(),
            problem,
        })?;
        check_tasks(&base, sources).map_err(|problem| FetchError::BadArchive {
            archive: file.clone(),
            problem,
        })?;
        move_tasks(&base, &folder)
    });
    let _ = fs::remove_dir_all(&staging);
    if downloaded {
        let _ = fs::remove_file(&file);
    }
    result?;
    Ok(folder)
}

fn task_name(s: &RealSource) -> String {
    s.root
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The folder inside the unpacked archive that holds the task folders: the archive's top level
/// or its one top folder (`vtab-1k/`).
fn task_base(staging: &Path, sources: &[RealSource]) -> Result<PathBuf, String> {
    let dirs = |p: &Path| -> Vec<PathBuf> {
        let mut d: Vec<PathBuf> = fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        d.sort();
        d
    };
    let has_tasks = |p: &Path| sources.iter().any(|s| p.join(task_name(s)).is_dir());
    let top = dirs(staging);
    let base = if has_tasks(staging) {
        staging.to_path_buf()
    } else if let [only] = top.as_slice() {
        only.clone()
    } else {
        staging.to_path_buf()
    };
    let missing: Vec<String> = sources
        .iter()
        .map(task_name)
        .filter(|t| !base.join(t).is_dir())
        .collect();
    if missing.is_empty() {
        return Ok(base);
    }
    let found: Vec<String> = dirs(&base)
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    Err(format!(
        "it has no task folder {} (found: {}); the suite's roots must be named after the \
         archive's task folders",
        missing.join(", "),
        if found.is_empty() {
            "none".into()
        } else {
            found.join(", ")
        }
    ))
}

/// The reader's layout check on every wanted task, in the staging copy.
fn check_tasks(base: &Path, sources: &[RealSource]) -> Result<(), String> {
    let problems: Vec<String> = sources
        .iter()
        .filter_map(|s| {
            let mut staged = s.clone();
            staged.root = base.join(task_name(s));
            check_source(&staged)
                .err()
                .map(|e| format!("task {}: {e}", task_name(s)))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Moves every task folder of `base` that `folder` does not have yet into `folder`.
fn move_tasks(base: &Path, folder: &Path) -> Result<(), FetchError> {
    fs::create_dir_all(folder).map_err(io_err(folder))?;
    for e in fs::read_dir(base).map_err(io_err(base))?.flatten() {
        let to = folder.join(e.file_name());
        if e.path().is_dir() && !to.exists() {
            fs::rename(e.path(), &to).map_err(io_err(&to))?;
        }
    }
    Ok(())
}
