//! Contained unpacking of tar.gz and zip archives into a staging folder. Owns only the staging
//! folder it creates; it must not write outside it. Only regular files and folders are
//! unpacked: links, hard links, device files, `..` and absolute names are refused, so no entry
//! can point a later one outside; a name that appears twice is refused too. [`UnpackLimits`]
//! bound what an archive may write (bytes, entries, expansion ratio), checked while streaming,
//! so a bomb stops at the bound instead of filling the disk. On any refusal or error the staging
//! folder is removed: "nothing was unpacked" is then true.
use super::{io_err, ArchiveKind, FetchError};
use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

const GIB: u64 = 1 << 30;
/// Bytes an archive may inflate to before the expansion ratio is checked (small, well-compressed
/// text files such as VTAB-1k's lists expand 5-10x).
const RATIO_SLACK: u64 = 1 << 20;
/// The most a tar may read for one entry's header records (GNU long names, pax records): the
/// tar reader holds them in memory whole.
const HEADER_BYTES: u64 = 1 << 20;

/// Bounds on what one archive may unpack to. The defaults fit the archives vtab-orch knows (the
/// 19-task VTAB-1k archive: ~400,000 entries of already-compressed images; torchvision's
/// CIFAR, DTD, ... tar.gz: pickles and JPEGs that expand about 1.1x) with a wide margin, and
/// stop a bomb (deflate reaches ~1,000x) once it has written 100x the archive's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total bytes of all unpacked files.
    pub max_bytes: u64,
    /// Entries (files and folders).
    pub max_entries: u64,
    /// Unpacked bytes per compressed byte, over the whole archive (a zip: all files against the
    /// archive's size; a tar.gz: the stream against the bytes read so far), beyond the first MiB.
    pub max_ratio: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 64 * GIB,
            max_entries: 2_000_000,
            max_ratio: 100,
        }
    }
}

/// Unpacks `archive` into `staging` (created; must not exist) within `limits`. On error
/// `staging` is removed, so a failure leaves nothing behind.
pub fn unpack(
    archive: &Path,
    kind: ArchiveKind,
    staging: &Path,
    limits: &UnpackLimits,
) -> Result<(), FetchError> {
    if let Some(parent) = staging.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    // `create_dir`, not `_all`: a folder (or a link) already there is not ours to fill.
    fs::create_dir(staging).map_err(io_err(staging))?;
    let r = match kind {
        ArchiveKind::TarGz => unpack_tar(archive, staging, limits),
        ArchiveKind::Zip => unpack_zip(archive, staging, limits),
    };
    if r.is_err() {
        let _ = fs::remove_dir_all(staging);
    }
    // A file system error (a name too long, a file where a folder must go) is the archive's
    // fault here too, and its message must say that nothing was unpacked.
    r.map_err(|e| match e {
        FetchError::Io { path, err } => bad(archive, format!("{}: {err}", path.display())),
        e => e,
    })
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

/// A limit crossed: what was found, and the `fetch` flag that raises it (None: a fixed bound).
struct Crossed {
    what: String,
    flag: Option<&'static str>,
}

impl Crossed {
    fn into_error(self, archive: &Path) -> FetchError {
        match self.flag {
            Some(flag) => FetchError::Limit {
                archive: archive.to_path_buf(),
                what: self.what,
                flag: flag.to_string(),
            },
            None => bad(archive, self.what),
        }
    }
}

/// Whether `inflated` bytes from `compressed` input bytes stay within the expansion ratio.
fn within_ratio(limits: &UnpackLimits, inflated: u64, compressed: u64) -> Result<(), Crossed> {
    let allowed = limits
        .max_ratio
        .saturating_mul(compressed)
        .saturating_add(RATIO_SLACK);
    if inflated > allowed {
        return Err(Crossed {
            what: format!(
                "it expands more than {}x ({inflated} bytes from {compressed} compressed): a \
                 compression bomb, or an unusually compressible archive",
                limits.max_ratio
            ),
            flag: Some("--max-ratio"),
        });
    }
    Ok(())
}

fn too_many_bytes(limits: &UnpackLimits) -> Crossed {
    Crossed {
        what: format!(
            "it unpacks to more than {} bytes ({:.1} GiB)",
            limits.max_bytes,
            limits.max_bytes as f64 / GIB as f64
        ),
        flag: Some("--max-unpacked-gib"),
    }
}

/// Entries and file bytes written so far, against the limits.
struct Budget<'a> {
    archive: &'a Path,
    limits: &'a UnpackLimits,
    bytes: u64,
    entries: u64,
}

impl<'a> Budget<'a> {
    fn new(archive: &'a Path, limits: &'a UnpackLimits) -> Self {
        Budget {
            archive,
            limits,
            bytes: 0,
            entries: 0,
        }
    }

    /// One more entry.
    fn entry(&mut self) -> Result<(), FetchError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Crossed {
                what: format!("it has more than {} entries", self.limits.max_entries),
                flag: Some("--max-entries"),
            }
            .into_error(self.archive));
        }
        Ok(())
    }

    /// `n` more file bytes; with `compressed` (the archive's size), also every file byte so
    /// far against the expansion ratio.
    fn charge(&mut self, n: u64, compressed: Option<u64>) -> Result<(), FetchError> {
        self.bytes += n;
        if self.bytes > self.limits.max_bytes {
            return Err(too_many_bytes(self.limits).into_error(self.archive));
        }
        if let Some(compressed) = compressed {
            within_ratio(self.limits, self.bytes, compressed)
                .map_err(|c| c.into_error(self.archive))?;
        }
        Ok(())
    }
}

/// Copies `from` into a new file `dest` (which must not exist), charging `budget`; a zip
/// passes the archive's size for the ratio over all its files (a zip's entries may claim
/// overlapping data, so no entry's own size is trusted); a tar's stream is checked by
/// [`Inflated`].
fn copy_bounded(
    from: &mut dyn Read,
    dest: &Path,
    budget: &mut Budget,
    compressed: Option<u64>,
) -> Result<(), FetchError> {
    // `create_new`: an entry never replaces (or writes through) something already unpacked.
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => bad(
                budget.archive,
                format!("entry `{}` appears twice", dest.display()),
            ),
            _ => FetchError::Io {
                path: dest.to_path_buf(),
                err: e,
            },
        })?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(budget.archive, format!("{}: {e}", dest.display()))),
        };
        budget.charge(n as u64, compressed)?;
        out.write_all(&buf[..n]).map_err(io_err(dest))?;
    }
    Ok(())
}

/// A reader that counts the bytes read through it (the compressed side of a stream).
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// The decompressed side of a tar.gz, bounded as a whole: everything tar reads (headers, GNU
/// long names, pax records, file data) counts against the ratio and the byte limit, so a long
/// name inflated to gigabytes inside the tar reader stops like a file would. The limit crossed
/// is kept in `crossed` (tar only passes the io error on).
struct Inflated<'a, R> {
    inner: R,
    limits: &'a UnpackLimits,
    compressed: Rc<Cell<u64>>,
    inflated: u64,
    /// Bytes read while the tar reader looks for the next entry (its header records), or
    /// None while an entry's data is read.
    header: Rc<Cell<Option<u64>>>,
    crossed: Rc<Cell<Option<Crossed>>>,
}

impl<R: Read> Read for Inflated<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inflated += n as u64;
        // Headers (512 bytes and padding per entry) ride on top of the files' bytes.
        let headers = self.limits.max_entries.saturating_mul(1536);
        let in_header = self.header.get().map(|h| h + n as u64);
        self.header.set(in_header);
        let check = if self.inflated > self.limits.max_bytes.saturating_add(headers) {
            Err(too_many_bytes(self.limits))
        } else if in_header.is_some_and(|h| h > HEADER_BYTES) {
            Err(Crossed {
                what: format!(
                    "one entry's header records (a long name or pax record) exceed {HEADER_BYTES} \
                     bytes"
                ),
                flag: None,
            })
        } else {
            within_ratio(self.limits, self.inflated, self.compressed.get())
        };
        if let Err(c) = check {
            let what = c.what.clone();
            self.crossed.set(Some(c));
            return Err(io::Error::other(what));
        }
        Ok(n)
    }
}

fn unpack_tar(archive: &Path, staging: &Path, limits: &UnpackLimits) -> Result<(), FetchError> {
    let compressed = Rc::new(Cell::new(0u64));
    let crossed = Rc::new(Cell::new(None));
    let file = Counting {
        inner: File::open(archive).map_err(io_err(archive))?,
        count: compressed.clone(),
    };
    let header = Rc::new(Cell::new(None));
    let stream = Inflated {
        inner: flate2::read::GzDecoder::new(file),
        limits,
        compressed,
        inflated: 0,
        header: header.clone(),
        crossed: crossed.clone(),
    };
    let tar = tar::Archive::new(stream);
    let result = unpack_tar_entries(tar, &header, archive, staging, limits);
    match crossed.take() {
        Some(c) => Err(c.into_error(archive)),
        None => result,
    }
}

/// The entries of `tar`; `header` is switched on while the reader looks for the next entry, so
/// that [`Inflated`] bounds its header records.
fn unpack_tar_entries(
    mut tar: tar::Archive<impl Read>,
    header: &Cell<Option<u64>>,
    archive: &Path,
    staging: &Path,
    limits: &UnpackLimits,
) -> Result<(), FetchError> {
    use tar::EntryType;
    let mut budget = Budget::new(archive, limits);
    let mut entries = tar.entries().map_err(|e| bad(archive, e))?;
    loop {
        header.set(Some(0));
        let next = entries.next();
        header.set(None);
        let Some(entry) = next else { break };
        let mut entry = entry.map_err(|e| bad(archive, e))?;
        let name = entry.path().map_err(|e| bad(archive, e))?.into_owned();
        let rel = safe_relative(&name).map_err(|why| unsafe_entry(archive, &name, why))?;
        let refuse = |why| Err(unsafe_entry(archive, &name, why));
        match entry.header().entry_type() {
            // A pax global header (`git archive` writes one) carries no file.
            EntryType::XGlobalHeader => continue,
            EntryType::Regular | EntryType::Continuous => {}
            EntryType::Directory => {}
            EntryType::Symlink => return refuse("is a symbolic link (links are not unpacked)"),
            EntryType::Link => return refuse("is a hard link (links are not unpacked)"),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return refuse("is a device or pipe (only files and folders are unpacked)")
            }
            _ => return refuse("is neither a file nor a folder (only those are unpacked)"),
        }
        budget.entry()?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = staging.join(&rel);
        if entry.header().entry_type() == EntryType::Directory {
            fs::create_dir_all(&dest).map_err(io_err(&dest))?;
            continue;
        }
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(io_err(p))?;
        }
        copy_bounded(&mut entry, &dest, &mut budget, None)?;
    }
    Ok(())
}

fn unpack_zip(archive: &Path, staging: &Path, limits: &UnpackLimits) -> Result<(), FetchError> {
    let mut zip = zip::ZipArchive::new(File::open(archive).map_err(io_err(archive))?)
        .map_err(|e| bad(archive, e))?;
    let archive_len = fs::metadata(archive).map_err(io_err(archive))?.len();
    let mut budget = Budget::new(archive, limits);
    for i in 0..zip.len() {
        let mut file = zip.by_index(i).map_err(|e| bad(archive, e))?;
        let name = PathBuf::from(file.name());
        let rel = safe_relative(&name).map_err(|why| unsafe_entry(archive, &name, why))?;
        if file.is_symlink() {
            return Err(unsafe_entry(
                archive,
                &name,
                "is a symbolic link (links are not unpacked)",
            ));
        }
        budget.entry()?;
        let dest = staging.join(&rel);
        if file.is_dir() {
            fs::create_dir_all(&dest).map_err(io_err(&dest))?;
            continue;
        }
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p).map_err(io_err(p))?;
        }
        copy_bounded(&mut file, &dest, &mut budget, Some(archive_len))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(safe_relative(Path::new("a/./b")).is_ok());
        assert_eq!(safe_relative(Path::new("a/../../b")), Err("contains `..`"));
        assert_eq!(
            safe_relative(Path::new("/etc/passwd")),
            Err("is an absolute path")
        );
    }

    #[test]
    fn the_budget_stops_at_each_limit() {
        let limits = UnpackLimits {
            max_bytes: 10 << 20,
            max_entries: 2,
            max_ratio: 10,
        };
        let archive = Path::new("a.zip");
        let mut b = Budget::new(archive, &limits);
        b.entry().unwrap();
        b.entry().unwrap();
        let e = b.entry().unwrap_err().to_string();
        assert!(
            e.contains("more than 2 entries") && e.contains("--max-entries"),
            "{e}"
        );
        // 1 MiB of slack, then 10x the compressed size, over every byte written so far.
        let mut b = Budget::new(archive, &limits);
        b.charge(100, Some(10)).unwrap();
        b.charge(RATIO_SLACK, Some(10)).unwrap();
        let e = b.charge(1, Some(10)).unwrap_err();
        assert!(e.to_string().contains("expands more than 10x"), "{e}");
        let mut b = Budget::new(archive, &limits);
        let e = b.charge(11 << 20, None).unwrap_err().to_string();
        assert!(e.contains("--max-unpacked-gib"), "{e}");
    }
}
