//! Dataset sources (real on-disk formats and the embedded synthetic benchmark): listing a
//! split's examples, fingerprinting a source, decoding and resizing images.
//!
//! This file holds the public types and dispatches on [`Format`]; each format's reader is its
//! own module. All of it is pure Rust (no tch) and never panics on bad input: every failure is a
//! [`DatasetError`] naming the file or folder.
//!
//! # Splits
//! VTAB-1k layouts ([`Format::Vtab1k`]) list all four splits themselves. Every other format has
//! a *training pool* and a *test split*:
//!
//! | format      | training pool                         | test                          |
//! |-------------|---------------------------------------|-------------------------------|
//! | cifar100    | official `train` (50 000)             | official `test` (10 000)      |
//! | dtd         | `train<N>.txt` then `val<N>.txt`      | `test<N>.txt`                 |
//! | eurosat     | the 4/5 of each class not held out    | 1/5 of each class, held out   |
//! | imagefolder | the 4/5 of each class not held out    | 1/5 of each class, held out   |
//! | csv         | rows of `train_csv`                   | rows of `test_csv`            |
//!
//! EuroSAT and ImageFolder have no official test split. Each class's image files, sorted by path,
//! lose `n / 5` (rounded down) of them to the test split: the first `n / 5` positions of a
//! seeded partial Fisher-Yates shuffle whose seed is the first 8 bytes of
//! `blake3("vtab-orch holdout v1:" + class name)`. The hold-out never depends on `sample_seed`,
//! so every seed is scored on the same test images; it changes only if a class's files change.
//!
//! From the pool, train800val200 is drawn with `sample_seed`: `k = min(1000, pool size)`
//! examples, the first `k` positions of a partial forward Fisher-Yates shuffle of the pool (in
//! its listed order, which is file order for list files and sorted-path order for folders)
//! driven by SplitMix64 seeded with `sample_seed` (both defined in `sampling.rs`, so a draw never
//! changes with a crate version). val200 is the last `k / 5` drawn, train800 the rest, and
//! train800val200 is train800 followed by val200. A pool of 1000 or more gives exactly
//! 800/200; a smaller pool is used whole, split 80/20. Test lists keep their official (or
//! sorted) order and ignore `sample_seed`.
//!
//! # Subsets
//! Every listed split says how its examples were chosen ([`SplitList::definition`], a
//! [`SubsetDefinition`]: `vtab1k-lists` with the lists' digests, `seeded-draw` with seed and
//! pool, a part taken whole such as `dtd-fold N test` or `holdout-20%`) and which they are
//! ([`SplitList::members`]). Only the VTAB-1k lists give numbers comparable with published
//! VTAB-1k results (see `subset.rs`); a draw from a native archive is VTAB-1k-sized only.
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod cifar;
pub(crate) use cifar::{parse_python_names, parse_python_part};
mod csv_list;
#[doc(hidden)]
pub use csv_list::{parse_records as parse_csv_records, Record as CsvRecord};
pub mod decode;
#[doc(hidden)]
pub use decode::decode_bytes;
mod dtd;
mod error;
mod fingerprint;
pub use fingerprint::{DigestCache, FileChanges, SourceFingerprint};
mod folder;
pub mod listed;
#[doc(hidden)]
pub mod pickle;
mod sampling;
pub mod subset;
pub mod synthetic;
#[cfg(test)]
mod testutil;
mod vtab1k;
#[doc(hidden)]
pub use vtab1k::parse_list as parse_vtab1k_list;

pub use error::DatasetError;
pub use subset::{Part, SubsetDefinition, SubsetRecord};

/// On-disk layout of a real dataset (`format = "..."` in a suite's `[datasets.NAME]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CIFAR-100, python (pickle) or binary version, autodetected.
    Cifar100,
    /// EuroSAT RGB: one folder of JPEGs per class.
    Eurosat,
    /// Describable Textures: `images/` plus the official `labels/` split lists.
    Dtd,
    /// The vtab1k-pytorch / RepAdapter layout with its own four split lists.
    Vtab1k,
    /// Any `<root>/<class>/<image>` tree.
    Imagefolder,
    /// `path,label` CSV lists for the training pool and the test set.
    Csv,
}

impl Format {
    /// The layout this format expects, for error messages.
    pub(crate) fn expected_layout(&self) -> &'static str {
        match self {
            Format::Cifar100 => {
                "the CIFAR-100 python version (<root>/train, <root>/test, <root>/meta, from \
                 cifar-100-python.tar.gz) or binary version (<root>/train.bin, <root>/test.bin, \
                 <root>/fine_label_names.txt, from cifar-100-binary.tar.gz); root may also be \
                 the folder holding cifar-100-python/ or cifar-100-binary/"
            }
            Format::Eurosat => {
                "<root>/<Class>/*.jpg, one folder per EuroSAT class; root is the unpacked 2750/ \
                 (or EuroSAT_RGB/) folder or the folder holding it"
            }
            Format::Dtd => {
                "<root>/images/<class>/*.jpg and <root>/labels/{train,val,test}<N>.txt listing \
                 `class/name.jpg` per line; root is the unpacked dtd/ folder or the folder \
                 holding it"
            }
            Format::Vtab1k => {
                "<root>/train800.txt, <root>/val200.txt, <root>/train800val200.txt and \
                 <root>/test.txt, each line `<image path relative to root> <integer label>`"
            }
            Format::Imagefolder => {
                "<root>/<class>/.../*.{jpg,jpeg,png,tif,tiff}, one folder per class (classes \
                 sorted by name)"
            }
            Format::Csv => {
                "<root>/<train_csv> and <root>/<test_csv>, each row `path,label` (header \
                 optional, paths relative to root, label an integer or a class name)"
            }
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Cifar100 => "cifar100",
            Format::Eurosat => "eurosat",
            Format::Dtd => "dtd",
            Format::Vtab1k => "vtab1k",
            Format::Imagefolder => "imagefolder",
            Format::Csv => "csv",
        })
    }
}

/// One of the four VTAB-1k splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train800,
    Val200,
    Train800val200,
    Test,
}

/// Where a real dataset lives. Deserialised from a suite's `[datasets.NAME]` table (the suite
/// code adds other keys itself; you get this struct).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealSource {
    pub format: Format,
    pub root: PathBuf,
    /// DTD only: which of the 10 official splits (labels/train<N>.txt etc.), default 1.
    #[serde(default)]
    pub dtd_split: Option<u32>,
    /// Csv only: files (relative to root) listing `path,label` for the training pool and the
    /// test set.
    #[serde(default)]
    pub train_csv: Option<PathBuf>,
    #[serde(default)]
    pub test_csv: Option<PathBuf>,
}

/// Where an example's pixels are.
#[derive(Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// An image file (JPEG, PNG or TIFF, detected from its bytes).
    File(PathBuf),
    /// `width x height` HWC u8 RGB pixels starting at `offset` inside a shared buffer (CIFAR
    /// keeps all pixels in memory).
    Rgb {
        width: u32,
        height: u32,
        data: Arc<Vec<u8>>,
        offset: usize,
    },
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::File(p) => f.debug_tuple("File").field(p).finish(),
            ImageRef::Rgb {
                width,
                height,
                data,
                offset,
            } => f
                .debug_struct("Rgb")
                .field("width", width)
                .field("height", height)
                .field("buffer_len", &data.len())
                .field("offset", offset)
                .finish(),
        }
    }
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub image: ImageRef,
    pub label: i64,
}

/// A split's examples and the dataset's class names (`class_names[label]` names a label), with
/// how the examples were chosen and which they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitList {
    pub examples: Vec<Example>,
    pub class_names: Vec<String>,
    pub definition: SubsetDefinition,
    /// One id per example, in order: the image path (`/`-separated) relative to the folder the
    /// format reads from (VTAB-1k and CSV: `root`; DTD: the folder holding `images/`; EuroSAT
    /// and ImageFolder: the folder holding the class folders), so the ids do not depend on
    /// which of the accepted roots a suite names; `train/<index>` / `test/<index>` for
    /// CIFAR-100.
    pub members: Vec<String>,
}

impl SplitList {
    /// A list of image files: each member id is the file's path relative to `base`.
    pub(crate) fn of_files(
        base: &Path,
        examples: Vec<Example>,
        class_names: Vec<String>,
        definition: SubsetDefinition,
    ) -> SplitList {
        let members = examples
            .iter()
            .map(|e| match &e.image {
                ImageRef::File(p) => p
                    .strip_prefix(base)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .replace('\\', "/"),
                ImageRef::Rgb { offset, .. } => format!("rgb@{offset}"),
            })
            .collect();
        SplitList {
            examples,
            class_names,
            definition,
            members,
        }
    }
}

/// Lists a split. `sample_seed` drives the deterministic VTAB-1k 800/200 draw for formats
/// without official lists (see the module doc).
pub fn list_split(
    src: &RealSource,
    split: Split,
    sample_seed: u64,
) -> Result<SplitList, DatasetError> {
    match src.format {
        Format::Cifar100 => cifar::list(src, split, sample_seed),
        Format::Eurosat | Format::Imagefolder => folder::list(src, split, sample_seed),
        Format::Dtd => dtd::list(src, split, sample_seed),
        Format::Vtab1k => vtab1k::list(src, split),
        Format::Csv => csv_list::list(src, split, sample_seed),
    }
}

/// A blake3 hex digest identifying the source's content: sorted relative file paths with the
/// blake3 of each file that `list_split` can read (for CIFAR the few data files). Changes when
/// any file is added, removed or modified; not on a `touch` or a copy elsewhere.
pub fn fingerprint(src: &RealSource) -> Result<String, DatasetError> {
    Ok(fingerprint_with(src, &mut DigestCache::default())?.digest)
}

/// [`fingerprint`] with its per-file digests, reading only files whose size or mtime is not
/// in `cache` as recorded.
pub fn fingerprint_with(
    src: &RealSource,
    cache: &mut DigestCache,
) -> Result<SourceFingerprint, DatasetError> {
    existing_root(src)?;
    let (config, files) = match src.format {
        Format::Cifar100 => (String::new(), cifar::files(src)?),
        Format::Eurosat | Format::Imagefolder => (String::new(), folder::files(src)?),
        Format::Dtd => (
            format!("split {}", dtd::split_number(src)?),
            dtd::files(src)?,
        ),
        Format::Vtab1k => (String::new(), vtab1k::files(src)?),
        Format::Csv => (csv_list::roles(src)?, csv_list::files(src)?),
    };
    fingerprint::digest(src, &config, files, cache)
}

/// Decodes (JPEG, PNG, TIFF, or raw RGB) and resizes to size x size with a bicubic filter
/// (image's CatmullRom, which antialiases when shrinking, as PIL's bicubic does), returning CHW
/// u8 (3*size*size). Grayscale/RGBA become RGB. A missing or corrupt file is an error naming
/// the file.
pub fn load_image(img: &ImageRef, size: u32) -> Result<Vec<u8>, DatasetError> {
    decode::load_image(img, size)
}

/// Cheap check used by `plan` before anything runs: root exists and has the expected layout;
/// the error says what is missing and what layout is expected.
pub fn check_source(src: &RealSource) -> Result<(), DatasetError> {
    match src.format {
        Format::Cifar100 => cifar::check(src),
        Format::Eurosat | Format::Imagefolder => folder::check(src),
        Format::Dtd => dtd::check(src),
        Format::Vtab1k => vtab1k::check(src),
        Format::Csv => csv_list::check(src),
    }
}

/// `src.root` if it is a folder, else [`DatasetError::MissingRoot`].
pub(crate) fn existing_root(src: &RealSource) -> Result<&Path, DatasetError> {
    if src.root.is_dir() {
        Ok(&src.root)
    } else {
        Err(DatasetError::MissingRoot {
            root: src.root.clone(),
            format: src.format.clone(),
            expected: src.format.expected_layout(),
        })
    }
}

/// A [`DatasetError::Layout`] for `src` with `problem`.
pub(crate) fn layout_err(src: &RealSource, problem: impl Into<String>) -> DatasetError {
    DatasetError::Layout {
        root: src.root.clone(),
        format: src.format.clone(),
        problem: problem.into(),
        expected: src.format.expected_layout(),
    }
}

/// The examples of a non-test split drawn from `pool` (the source's `part`, see the module
/// doc), and that draw's definition.
pub(crate) fn draw_from_pool(
    src: &RealSource,
    pool: &[Example],
    part: Part,
    split: Split,
    sample_seed: u64,
) -> Result<(Vec<Example>, SubsetDefinition), DatasetError> {
    if pool.is_empty() {
        return Err(DatasetError::EmptyPool {
            root: src.root.clone(),
            format: src.format.clone(),
        });
    }
    let examples = sampling::pool_indices(pool.len(), split, sample_seed)
        .into_iter()
        .map(|i| pool[i].clone())
        .collect();
    Ok((examples, seeded_draw(part, pool.len(), sample_seed)))
}

/// The definition of the seeded draw from a pool of `pool_size` examples of `part`.
pub(crate) fn seeded_draw(part: Part, pool_size: usize, sample_seed: u64) -> SubsetDefinition {
    SubsetDefinition::SeededDraw {
        seed: sample_seed,
        pool: part,
        pool_size,
        drawn: sampling::draw_size(pool_size),
    }
}

/// Whether `path` has an image extension this module decodes (case-insensitive).
pub(crate) fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "jpg" | "jpeg" | "png" | "tif" | "tiff"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_source_deserialises_from_a_suite_table() {
        let src: RealSource =
            toml::from_str("format = \"dtd\"\nroot = \"/data/dtd\"\ndtd_split = 3\n").unwrap();
        assert_eq!(src.format, Format::Dtd);
        assert_eq!(src.dtd_split, Some(3));
        assert_eq!(src.train_csv, None);
        let csv: RealSource = toml::from_str(
            "format = \"csv\"\nroot = \"/d\"\ntrain_csv = \"a.csv\"\ntest_csv = \"b.csv\"\n",
        )
        .unwrap();
        assert_eq!(csv.test_csv.as_deref(), Some(Path::new("b.csv")));
        for (name, format) in [
            ("cifar100", Format::Cifar100),
            ("eurosat", Format::Eurosat),
            ("vtab1k", Format::Vtab1k),
            ("imagefolder", Format::Imagefolder),
        ] {
            assert_eq!(
                serde_json::to_string(&format).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(format.to_string(), name);
        }
        let split: Split = serde_json::from_str("\"train800val200\"").unwrap();
        assert_eq!(split, Split::Train800val200);
    }

    #[test]
    fn missing_root_is_a_clear_error_for_every_format() {
        for format in [
            Format::Cifar100,
            Format::Eurosat,
            Format::Dtd,
            Format::Vtab1k,
            Format::Imagefolder,
            Format::Csv,
        ] {
            let src = RealSource {
                format: format.clone(),
                root: PathBuf::from("/nonexistent/vtab-orch-test-root"),
                dtd_split: None,
                train_csv: Some("train.csv".into()),
                test_csv: Some("test.csv".into()),
            };
            for err in [
                check_source(&src).unwrap_err(),
                list_split(&src, Split::Test, 0).unwrap_err(),
                fingerprint(&src).unwrap_err(),
            ] {
                assert!(
                    matches!(err, DatasetError::MissingRoot { .. }),
                    "{format}: {err}"
                );
                let msg = err.to_string();
                assert!(msg.contains("/nonexistent/vtab-orch-test-root"), "{msg}");
                assert!(msg.contains("set `root`"), "{msg}");
            }
        }
    }
}
