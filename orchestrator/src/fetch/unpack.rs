//! Safe unpacking of tar.gz and zip archives into a staging folder. Owns only the staging
//! folder it creates; it must not write outside it (absolute paths, `..` and links that leave
//! are rejected before anything is written).
use super::{io_err, ArchiveKind, FetchError};
use std::fs::{self, File};
use std::io;
use std::path::{Component, Path, PathBuf};

/// Unpacks `archive` into `staging` (created; must not exist). On error `staging` is removed,
/// so a failure leaves nothing behind.
pub fn unpack(archive: &Path, kind: ArchiveKind, staging: &Path) -> Result<(), FetchError> {
    fs::create_dir_all(staging).map_err(io_err(staging))?;
    let r = match kind {
        ArchiveKind::TarGz => unpack_tar(archive, staging),
        ArchiveKind::Zip => unpack_zip(archive, staging),
    };
    if r.is_err() {
        let _ = fs::remove_dir_all(staging);
    }
    r
}

/// `name` as a relative path with only normal components, or why not.
fn safe_relative(name: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

/// Whether a link at `entry` (relative) pointing to `target` stays inside the unpack folder.
fn link_stays_inside(entry: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = entry.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

fn unsafe_entry(archive: &Path, entry: &Path, why: &'static str) -> FetchError {
    FetchError::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry: entry.display().to_string(),
        why,
    }
}

fn bad(archive: &Path, e: impl std::fmt::Display) -> FetchError {
    FetchError::BadArchive {
        archive: archive.to_path_buf(),
        problem: e.to_string(),
    }
}

fn unpack_tar(archive: &Path, staging: &Path) -> Result<(), FetchError> {
    let gz = flate2::read::GzDecoder::new(File::open(archive).map_err(io_err(archive))?);
    let mut tar = tar::Archive::new(gz);
    for entry in tar.entries().map_err(|e| bad(archive, e))? {
        let mut entry = entry.map_err(|e| bad(archive, e))?;
        let name = entry.path().map_err(|e| bad(archive, e))?.into_owned();
        let rel = safe_relative(&name).map_err(|why| unsafe_entry(archive, &name, why))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            return Err(unsafe_entry(
                archive,
                &name,
                "is a hard link (not supported)",
            ));
        }
        if kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(|e| bad(archive, e))?
                .unwrap_or_default()
                .into_owned();
            if !link_stays_inside(&rel, &target) {
                return Err(unsafe_entry(
                    archive,
                    &name,
                    "is a link leaving the archive's folder",
                ));
            }
        }
        let dest = staging.join(&rel);
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(io_err(p))?;
        }
        entry
            .unpack(&dest)
            .map_err(|e| bad(archive, format!("{}: {e}", name.display())))?;
    }
    Ok(())
}

fn unpack_zip(archive: &Path, staging: &Path) -> Result<(), FetchError> {
    let mut zip = zip::ZipArchive::new(File::open(archive).map_err(io_err(archive))?)
        .map_err(|e| bad(archive, e))?;
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(|e| bad(archive, e))?;
        let name = PathBuf::from(file.name());
        let rel = safe_relative(&name).map_err(|why| unsafe_entry(archive, &name, why))?;
        if file.is_symlink() {
            return Err(unsafe_entry(
                archive,
                &name,
                "is a link (not supported in zip archives)",
            ));
        }
        let dest = staging.join(&rel);
        if file.is_dir() {
            fs::create_dir_all(&dest).map_err(io_err(&dest))?;
            continue;
        }
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(io_err(p))?;
        }
        let mut out = File::create(&dest).map_err(io_err(&dest))?;
        io::copy(&mut file, &mut out)
            .map_err(|e| bad(archive, format!("{}: {e}", name.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_links_are_checked() {
        assert!(safe_relative(Path::new("a/./b")).is_ok());
        assert_eq!(safe_relative(Path::new("a/../../b")), Err("contains `..`"));
        assert_eq!(
            safe_relative(Path::new("/etc/passwd")),
            Err("is an absolute path")
        );
        assert!(link_stays_inside(Path::new("a/b/l"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("../../c")));
        assert!(!link_stays_inside(Path::new("a/l"), Path::new("/etc")));
    }
}
