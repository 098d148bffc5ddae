//! What a line of a list file (VTAB-1k `.txt`, CSV, DTD) may say: an image path that stays
//! inside the dataset root, and an integer label small enough to index a class table. Owns
//! only these two rules; it must not touch the disk.
use std::path::{Component, Path, PathBuf};

/// Integer labels must be below this: a label is an index into the class names, which are
/// `"0"` to the largest label, so one line must not be able to ask for billions of them.
/// (The largest public classification label sets have some 20,000 classes.)
pub const MAX_CLASSES: i64 = 100_000;

/// `rel`, a path written in a list, as a path under `root`. Refused (with the reason): an
/// empty path, an absolute path (`/x`, `\x`, `C:x`), and `..` that climbs above the root.
/// Symlinks inside the root are followed, as the dataset's own maker placed them (image
/// folders on shared storage are commonly symlinked in).
pub fn inside_root(root: &Path, rel: &str) -> Result<PathBuf, String> {
    if rel.is_empty() {
        return Err("the image path is empty".into());
    }
    let escapes = || {
        format!(
            "the image path {rel:?} leads outside the dataset root; list paths must be \
             relative to the root and stay inside it"
        )
    };
    if rel.starts_with(['/', '\\']) || rel.as_bytes().get(1) == Some(&b':') {
        return Err(escapes());
    }
    let mut depth = 0usize;
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => depth = depth.checked_sub(1).ok_or_else(escapes)?,
            Component::RootDir | Component::Prefix(_) => return Err(escapes()),
        }
    }
    Ok(root.join(rel))
}

/// `text` as a class index: a non-negative integer below [`MAX_CLASSES`].
pub fn class_index(text: &str) -> Result<i64, String> {
    let label: i64 = text
        .parse()
        .ok()
        .filter(|l| *l >= 0)
        .ok_or_else(|| format!("label {text:?} is not a non-negative integer"))?;
    if label >= MAX_CLASSES {
        return Err(format!(
            "label {label} is too large: labels are class indices below {MAX_CLASSES} \
             (0 to the number of classes - 1)"
        ));
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        let root = Path::new("/data/task");
        assert_eq!(
            inside_root(root, "images/1.png").unwrap(),
            root.join("images/1.png")
        );
        assert!(inside_root(root, "images/../images/./1 copy.png").is_ok());
        for bad in [
            "../../../../../etc/hostname",
            "images/../../x.png",
            "/etc/hostname",
            "\\\\server\\share\\x.png",
            "C:\\x.png",
            "",
        ] {
            let err = inside_root(root, bad).unwrap_err();
            assert!(
                err.contains("outside") || err.contains("empty"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn labels_are_bounded_class_indices() {
        assert_eq!(class_index("0"), Ok(0));
        assert_eq!(class_index("99999"), Ok(99_999));
        assert!(class_index("100000").unwrap_err().contains("too large"));
        assert!(class_index("3000000000").unwrap_err().contains("too large"));
        assert!(class_index("-1").unwrap_err().contains("non-negative"));
        assert!(class_index("x").is_err());
    }
}
