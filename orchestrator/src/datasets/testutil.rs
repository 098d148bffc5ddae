//! Test helpers: a self-deleting temporary folder and tiny image writers for the readers' tests.
//! Compiled only for tests; it must not be used by the readers themselves.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::{Rgb, RgbImage};

/// A fresh folder under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "vtab-orch-datasets-{tag}-{}-{nanos}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a 4x4 single-colour image at `path` (format from the extension), creating parents.
/// The colour encodes `seed` so files differ.
pub(crate) fn write_image(path: &Path, seed: u8) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    RgbImage::from_pixel(4, 4, Rgb([seed, 255 - seed, 128]))
        .save(path)
        .unwrap();
}

/// Every path in a split list, relative to `root`, as `/`-joined strings.
pub(crate) fn rel_paths(list: &super::SplitList, root: &Path) -> Vec<String> {
    list.examples
        .iter()
        .map(|e| match &e.image {
            super::ImageRef::File(p) => p
                .strip_prefix(root)
                .unwrap_or(p)
                .to_string_lossy()
                .replace('\\', "/"),
            super::ImageRef::Rgb { offset, .. } => format!("rgb@{offset}"),
        })
        .collect()
}
