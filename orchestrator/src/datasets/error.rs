//! `DatasetError`: every way reading a real dataset can fail, each message naming the file or
//! folder and saying what would fix it. Owns no I/O; it must not touch the readers' logic.
use std::path::PathBuf;

use super::Format;

/// A failure to find, list, fingerprint or decode a real dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// `root` is missing or is not a folder.
    #[error(
        "dataset root {} does not exist or is not a folder; set `root` in the suite's \
         [datasets.NAME] table to the folder holding the {format} files, laid out as {expected}",
        root.display()
    )]
    MissingRoot {
        root: PathBuf,
        format: Format,
        expected: &'static str,
    },
    /// `root` exists but does not hold the layout the format expects.
    #[error("{} is not a {format} dataset: {problem}; expected layout: {expected}", root.display())]
    Layout {
        root: PathBuf,
        format: Format,
        problem: String,
        expected: &'static str,
    },
    /// A `[datasets.NAME]` key this format needs is absent.
    #[error("format {format} needs `{field}` in the suite's [datasets.NAME] table: {hint}")]
    MissingField {
        format: Format,
        field: &'static str,
        hint: &'static str,
    },
    /// A `[datasets.NAME]` key has a value the format cannot use.
    #[error("`{field}` = {value} is not valid for format {format}: {hint}")]
    BadField {
        format: Format,
        field: &'static str,
        value: String,
        hint: &'static str,
    },
    /// A file or folder could not be read (missing, permissions, I/O error).
    #[error("cannot read {}: {source}; check that it exists and is readable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A whole file is malformed (a pickle, a CIFAR binary batch, a names file).
    #[error("{}: {problem}; {fix}", path.display())]
    BadFile {
        path: PathBuf,
        problem: String,
        fix: &'static str,
    },
    /// One line or row of a list file is malformed.
    #[error("{}:{line}: {problem}; expected {expected}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        problem: String,
        expected: &'static str,
    },
    /// A list file names an image that is not on disk.
    #[error(
        "{} is listed in {} but does not exist; restore the file (re-extract the dataset) or \
         fix the list",
        file.display(),
        list.display()
    )]
    ListedFileMissing { file: PathBuf, list: PathBuf },
    /// An image file is missing, truncated, corrupt or in an unsupported format.
    #[error(
        "cannot decode image {}: {problem}; the file is missing, truncated, corrupt or not \
         JPEG/PNG/TIFF: re-extract it from the dataset archive",
        path.display()
    )]
    Decode { path: PathBuf, problem: String },
    /// An in-memory RGB image (CIFAR) does not fit its buffer.
    #[error("in-memory RGB image is invalid: {problem}; this is a bug in the reader that made it")]
    BadPixels { problem: String },
    /// `load_image` was asked for a zero size.
    #[error("image size must be at least 1 pixel (got {size}); set a positive image size")]
    BadSize { size: u32 },
    /// The training pool is empty, so nothing can be drawn for train800/val200.
    #[error(
        "{format} source {} has no training examples to draw train800/val200 from; add \
         images to the training split",
        root.display()
    )]
    EmptyPool { root: PathBuf, format: Format },
}

/// Shorthand for wrapping an I/O error with the path it concerns.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DatasetError {
    let path = path.into();
    move |source| DatasetError::Io { path, source }
}
