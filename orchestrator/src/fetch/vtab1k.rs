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
        let file = PathBuf::from(spec);
        if !file.is_file() {
            return Err(FetchError::Unsupported(format!(
                "--vtab1k {spec}: no such file (a .zip or .tar.gz, or an http(s) URL)"
            )));
        }
        Ok(Vtab1kArchive::File(file))
    }
}

/// The archive's kind from its first bytes (a name can carry a query string or any case).
fn sniff(file: &Path) -> Result<ArchiveKind, FetchError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let n = fs::File::open(file)
        .and_then(|mut f| f.read(&mut magic))
        .map_err(io_err(file))?;
    match &magic[..n] {
        [b'P', b'K', 3, 4] => Ok(ArchiveKind::Zip),
        [0x1f, 0x8b, ..] => Ok(ArchiveKind::TarGz),
        _ => Err(FetchError::BadArchive {
            archive: file.to_path_buf(),
            problem: "it is neither a zip nor a gzip-compressed tar".into(),
        }),
    }
}

/// Installs the tasks of `archive` into the folder that holds the suite's missing VTAB-1k
/// roots (`sources`, all in one folder, each named after its task) and checks every one of
/// them after the move. Nothing is moved unless every wanted task is in the archive with a
/// valid layout; a wanted root that exists but is incomplete is refused first (move it away).
/// Task folders already there are kept; the archive's other tasks are installed too (a later
/// suite may use them). Staging happens inside that folder, so a folder on another file
/// system (scratch storage, a symlink) works. Returns the folder.
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
    if let Some(s) = sources.iter().find(|s| s.root.exists()) {
        let why = check_source(s)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Err(FetchError::Unsupported(format!(
            "{} exists but is not a complete vtab1k task ({why}); move it away and rerun fetch",
            s.root.display()
        )));
    }
    let created = !folder.exists();
    fs::create_dir_all(&folder).map_err(io_err(&folder))?;
    let result = fetch_into(client, archive, sources, &folder, progress);
    if result.is_err() && created {
        let _ = fs::remove_dir(&folder); // only if empty: a kept download stays
    }
    result?;
    let after: Vec<String> = sources
        .iter()
        .filter_map(|s| check_source(s).err().map(|e| e.to_string()))
        .collect();
    if !after.is_empty() {
        return Err(FetchError::Unsupported(format!(
            "after unpacking: {}",
            after.join("; ")
        )));
    }
    Ok(folder)
}

/// Gets the archive (downloaded into `folder` for a URL), unpacks it in a staging folder inside
/// `folder`, checks the wanted tasks and moves the tasks into `folder`.
fn fetch_into(
    client: &Client,
    archive: &Vtab1kArchive,
    sources: &[RealSource],
    folder: &Path,
    progress: &mut dyn Progress,
) -> Result<(), FetchError> {
    let (file, downloaded) = match archive {
        Vtab1kArchive::File(p) => (p.clone(), false),
        Vtab1kArchive::Url { url, sha256 } => {
            let path = url.split(['?', '#']).next().unwrap_or(url);
            let file_name = path.rsplit('/').next().filter(|n| !n.is_empty());
            // Named by its sha256 too: a rerun with the same archive reuses a kept download,
            // one with another archive does not trip over it.
            let file = folder.join(format!(
                ".{}-{}",
                &sha256[..12],
                file_name.unwrap_or("vtab-1k.archive")
            ));
            let manual = format!(
                "download {url} (sha256 {sha256}) yourself and pass the file: --vtab1k FILE"
            );
            let sum = Checksum::Sha256(sha256.clone());
            download(client, url, &file, &sum, &[], &manual, progress)?;
            (file, true)
        }
    };
    let staging = folder.join(format!(".vtab1k-unpacking-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let unpacked =
        sniff(&file).and_then(|kind| unpack(&file, kind, &staging, &client.unpack_limits));
    let result = unpacked.and_then(|()| {
        let bad = |problem: String| FetchError::BadArchive {
            archive: file.clone(),
            problem,
        };
        let base = task_base(&staging, sources).map_err(bad)?;
        check_tasks(&base, sources).map_err(bad)?;
        move_tasks(&base, folder)
    });
    let _ = fs::remove_dir_all(&staging);
    match &result {
        // Kept for a rerun after a failed check: it may be gigabytes.
        Err(_) if downloaded => eprintln!("note: the download is kept at {}", file.display()),
        _ if downloaded => {
            let _ = fs::remove_file(&file);
        }
        _ => {}
    }
    result
}

fn task_name(s: &RealSource) -> String {
    s.root
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The folder inside the unpacked archive that holds the task folders: the first, level by
/// level down to three levels (`vtab-1k/`, `data/vtab-1k/`), that has every wanted task;
/// `__MACOSX` and hidden folders are not looked into.
fn task_base(staging: &Path, sources: &[RealSource]) -> Result<PathBuf, String> {
    let subdirs = |p: &Path| -> Vec<PathBuf> {
        let mut d: Vec<PathBuf> = fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        d.retain(|p| may_be_task(p));
        d.sort();
        d
    };
    let wanted: Vec<String> = sources.iter().map(task_name).collect();
    let mut level = vec![staging.to_path_buf()];
    let mut partial: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for _ in 0..=3 {
        for dir in &level {
            let here: Vec<String> = wanted
                .iter()
                .filter(|t| dir.join(t).is_dir())
                .cloned()
                .collect();
            if here.len() == wanted.len() {
                return Ok(dir.clone());
            }
            if !here.is_empty() {
                partial.push((dir.clone(), here));
            }
        }
        level = level.iter().flat_map(|d| subdirs(d)).collect();
    }
    let inside = |p: &Path| {
        let rel = p.strip_prefix(staging).unwrap_or(p).display().to_string();
        if rel.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{rel}/`")
        }
    };
    Err(match partial.first() {
        Some((dir, here)) => format!(
            "{} has {} but no task folder {}; the suite's roots must be named after the \
             archive's task folders",
            inside(dir),
            here.join(", "),
            wanted
                .iter()
                .filter(|t| !here.contains(t))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => {
            let top: Vec<String> = subdirs(staging).iter().map(|p| inside(p)).collect();
            format!(
                "no folder within three levels holds the task folders {} (top level: {})",
                wanted.join(", "),
                if top.is_empty() {
                    "no folders".into()
                } else {
                    top.join(", ")
                }
            )
        }
    })
}

/// Whether a folder of the archive may hold tasks: not `__MACOSX` (resource forks of an archive
/// made on a Mac) and not hidden.
fn may_be_task(dir: &Path) -> bool {
    let n = dir.file_name().unwrap_or_default().to_string_lossy();
    !n.starts_with('.') && n != "__MACOSX"
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

/// Moves every task folder of `base` that `folder` (made by the caller) does not have yet
/// into `folder`.
fn move_tasks(base: &Path, folder: &Path) -> Result<(), FetchError> {
    for e in fs::read_dir(base).map_err(io_err(base))?.flatten() {
        let to = folder.join(e.file_name());
        if e.path().is_dir() && may_be_task(&e.path()) && !to.exists() {
            fs::rename(e.path(), &to).map_err(io_err(&to))?;
        }
    }
    Ok(())
}
