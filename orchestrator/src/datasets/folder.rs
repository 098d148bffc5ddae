//! ImageFolder and EuroSAT readers: sorted class folders, images found recursively, a per-class
//! 1/5 hold-out as the test split. Owns folder scanning; it must not decode images.
//!
//! Hidden entries (names starting with `.`) are skipped; files count as images by extension
//! (jpg, jpeg, png, tif, tiff, any case). A class folder without images is an error, as in
//! torchvision's ImageFolder. EuroSAT's root may be the unpacked `2750/` (or `EuroSAT_RGB/`)
//! folder or the folder holding it. The hold-out rule is in the `datasets` module doc.
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::{
    draw_from_pool, existing_root, is_image_file, layout_err, sampling, DatasetError, Example,
    Format, ImageRef, Part, RealSource, Split, SplitList, SubsetDefinition,
};

/// Deepest folder nesting scanned below a class folder (guards against symlink loops).
const MAX_DEPTH: usize = 16;

/// Class names (sorted) and each class's image files (sorted by path).
struct Scan {
    classes: Vec<String>,
    files: Vec<Vec<PathBuf>>,
}

/// The folder holding the class folders.
fn image_root(src: &RealSource) -> Result<PathBuf, DatasetError> {
    let root = existing_root(src)?;
    if src.format == Format::Eurosat {
        for sub in ["2750", "EuroSAT_RGB"] {
            if root.join(sub).is_dir() {
                return Ok(root.join(sub));
            }
        }
    }
    Ok(root.to_path_buf())
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if !is_hidden(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// `(name, folder)` of every class folder under `root`, sorted by name.
fn class_dirs(src: &RealSource, root: &Path) -> Result<Vec<(String, PathBuf)>, DatasetError> {
    let mut classes: Vec<(String, PathBuf)> = entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, p)
        })
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(layout_err(
            src,
            format!("{} has no class folders", root.display()),
        ));
    }
    Ok(classes)
}

/// Appends every image under `dir` (recursively) to `out`; stops early once `limit` are found.
fn collect_images(
    src: &RealSource,
    dir: &Path,
    depth: usize,
    limit: usize,
    out: &mut Vec<PathBuf>,
) -> Result<(), DatasetError> {
    if depth > MAX_DEPTH {
        return Err(layout_err(
            src,
            format!(
                "{} is nested more than {MAX_DEPTH} folders deep (a symlink loop?)",
                dir.display()
            ),
        ));
    }
    for path in entries(dir)? {
        if out.len() >= limit {
            break;
        }
        if path.is_dir() {
            collect_images(src, &path, depth + 1, limit, out)?;
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn no_images(src: &RealSource, dir: &Path) -> DatasetError {
    layout_err(
        src,
        format!(
            "class folder {} holds no .jpg/.jpeg/.png/.tif/.tiff images (remove the folder or \
             add its images)",
            dir.display()
        ),
    )
}

fn scan(src: &RealSource) -> Result<Scan, DatasetError> {
    let root = image_root(src)?;
    let mut scan = Scan {
        classes: Vec::new(),
        files: Vec::new(),
    };
    for (name, dir) in class_dirs(src, &root)? {
        let mut files = Vec::new();
        collect_images(src, &dir, 0, usize::MAX, &mut files)?;
        if files.is_empty() {
            return Err(no_images(src, &dir));
        }
        files.sort();
        scan.classes.push(name);
        scan.files.push(files);
    }
    Ok(scan)
}

pub(crate) fn list(
    src: &RealSource,
    split: Split,
    sample_seed: u64,
) -> Result<SplitList, DatasetError> {
    let scan = scan(src)?;
    let mut pool = Vec::new();
    let mut test = Vec::new();
    for (label, (name, files)) in scan.classes.iter().zip(&scan.files).enumerate() {
        let mask = sampling::holdout_mask(name, files.len());
        for (file, held_out) in files.iter().zip(mask) {
            let example = Example {
                image: ImageRef::File(file.clone()),
                label: label as i64,
            };
            if held_out {
                test.push(example);
            } else {
                pool.push(example);
            }
        }
    }
    let percent = sampling::HOLDOUT_PERCENT;
    let (examples, definition) = match split {
        Split::Test => (
            test,
            SubsetDefinition::Whole {
                part: Part::Holdout { percent },
            },
        ),
        _ => {
            let part = Part::HoldoutRest { percent };
            draw_from_pool(src, &pool, part, split, sample_seed)?
        }
    };
    Ok(SplitList::of_files(
        &image_root(src)?,
        examples,
        scan.classes,
        definition,
    ))
}

pub(crate) fn check(src: &RealSource) -> Result<(), DatasetError> {
    let root = image_root(src)?;
    for (_, dir) in class_dirs(src, &root)? {
        let mut first = Vec::new();
        collect_images(src, &dir, 0, 1, &mut first)?;
        if first.is_empty() {
            return Err(no_images(src, &dir));
        }
    }
    Ok(())
}

pub(crate) fn files(src: &RealSource) -> Result<Vec<PathBuf>, DatasetError> {
    Ok(scan(src)?.files.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::testutil::{rel_paths, write_image, TempDir};
    use crate::datasets::{check_source, fingerprint, list_split, load_image};
    use std::collections::BTreeSet;

    fn source(format: Format, root: &Path) -> RealSource {
        RealSource {
            format,
            root: root.to_path_buf(),
            dtd_split: None,
            train_csv: None,
            test_csv: None,
        }
    }

    /// b_cls: 10 images, a_cls: 5, c_cls: 7 (nested), plus files and folders to ignore.
    fn write_tree(root: &Path) {
        for i in 0..10 {
            let ext = ["png", "jpg", "tif", "JPEG"][i % 4];
            write_image(&root.join(format!("b_cls/img{i:02}.{ext}")), i as u8);
        }
        for i in 0..5 {
            write_image(&root.join(format!("a_cls/x{i}.png")), 50 + i as u8);
        }
        for i in 0..7 {
            write_image(
                &root.join(format!("c_cls/sub{}/y{i}.jpeg", i % 2)),
                90 + i as u8,
            );
        }
        std::fs::write(root.join("a_cls/notes.txt"), "not an image").unwrap();
        std::fs::create_dir_all(root.join(".cache/z")).unwrap();
        write_image(&root.join(".cache/z/hidden.png"), 1);
        write_image(&root.join("a_cls/.hidden.png"), 1);
        std::fs::write(root.join("README.md"), "top-level file").unwrap();
    }

    #[test]
    fn imagefolder_classes_holdout_and_splits() {
        let dir = TempDir::new("folder");
        write_tree(dir.path());
        let src = source(Format::Imagefolder, dir.path());
        check_source(&src).unwrap();
        let test = list_split(&src, Split::Test, 0).unwrap();
        assert_eq!(test.class_names, ["a_cls", "b_cls", "c_cls"]);
        // n / 5 per class held out: 1 + 2 + 1.
        let labels: Vec<i64> = test.examples.iter().map(|e| e.label).collect();
        assert_eq!(labels, [0, 1, 1, 2]);
        let train = list_split(&src, Split::Train800, 0).unwrap();
        let val = list_split(&src, Split::Val200, 0).unwrap();
        assert_eq!((train.examples.len(), val.examples.len()), (15, 3));
        let mut seen = BTreeSet::new();
        for list in [&test, &train, &val] {
            for (ex, path) in list.examples.iter().zip(rel_paths(list, dir.path())) {
                let class = path.split('/').next().unwrap();
                assert_eq!(list.class_names[ex.label as usize], class, "{path}");
                assert!(seen.insert(path.clone()), "{path} listed twice");
            }
        }
        assert_eq!(seen.len(), 22);
        assert!(seen
            .iter()
            .all(|p| !p.contains("hidden") && !p.ends_with(".txt")));
        // The test split ignores the seed; the draw does not.
        assert_eq!(test, list_split(&src, Split::Test, 99).unwrap());
        let both = list_split(&src, Split::Train800val200, 0).unwrap();
        assert_eq!(both, list_split(&src, Split::Train800val200, 0).unwrap());
        assert_ne!(both, list_split(&src, Split::Train800val200, 1).unwrap());
        assert_eq!(
            both.examples,
            [train.examples.clone(), val.examples.clone()].concat()
        );
        assert_eq!(
            load_image(&both.examples[0].image, 8).unwrap().len(),
            3 * 64
        );
    }

    #[test]
    fn imagefolder_records_holdout_and_draw() {
        let dir = TempDir::new("folder-subset");
        write_tree(dir.path());
        let src = source(Format::Imagefolder, dir.path());
        let test = list_split(&src, Split::Test, 0).unwrap();
        assert_eq!(
            test.definition,
            SubsetDefinition::Whole {
                part: Part::Holdout { percent: 20 }
            }
        );
        assert_eq!(test.definition.to_string(), "holdout-20% per class");
        assert_eq!(test.members, rel_paths(&test, dir.path()));
        let both = list_split(&src, Split::Train800val200, 3).unwrap();
        assert_eq!(
            both.definition,
            SubsetDefinition::SeededDraw {
                seed: 3,
                pool: Part::HoldoutRest { percent: 20 },
                pool_size: 18,
                drawn: 18,
            }
        );
        assert_eq!(both.members, rel_paths(&both, dir.path()));
        assert_ne!(
            both.members,
            list_split(&src, Split::Train800val200, 4).unwrap().members
        );
    }

    #[test]
    fn imagefolder_fingerprint_tracks_every_file() {
        let dir = TempDir::new("folder-fp");
        write_tree(dir.path());
        let src = source(Format::Imagefolder, dir.path());
        let fp0 = fingerprint(&src).unwrap();
        assert_eq!(fp0, fingerprint(&src).unwrap());
        assert_eq!(fp0.len(), 64);
        // Ignored files do not count.
        std::fs::write(dir.path().join("a_cls/notes.txt"), "edited").unwrap();
        assert_eq!(fp0, fingerprint(&src).unwrap());
        // Same size, new content and mtime.
        let file = dir.path().join("a_cls/x0.png");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, vec![0u8; bytes.len()]).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let fp1 = fingerprint(&src).unwrap();
        assert_ne!(fp0, fp1);
        write_image(&dir.path().join("a_cls/x9.png"), 3);
        let fp2 = fingerprint(&src).unwrap();
        assert_ne!(fp1, fp2);
        std::fs::remove_file(dir.path().join("a_cls/x9.png")).unwrap();
        assert_eq!(fp1, fingerprint(&src).unwrap());
    }

    #[test]
    fn eurosat_root_may_be_2750_or_its_parent() {
        let dir = TempDir::new("eurosat");
        let classes = ["AnnualCrop", "Forest", "Highway"];
        for class in classes {
            for i in 1..=10 {
                write_image(
                    &dir.path().join(format!("2750/{class}/{class}_{i}.jpg")),
                    i as u8,
                );
            }
        }
        let parent = source(Format::Eurosat, dir.path());
        let inner = source(Format::Eurosat, &dir.path().join("2750"));
        check_source(&parent).unwrap();
        for split in [Split::Train800, Split::Val200, Split::Test] {
            let a = list_split(&parent, split, 4).unwrap();
            assert_eq!(a, list_split(&inner, split, 4).unwrap());
            assert_eq!(a.class_names, classes);
        }
        let test = list_split(&parent, Split::Test, 4).unwrap();
        assert_eq!(test.examples.len(), 6);
        let pool = list_split(&parent, Split::Train800val200, 4).unwrap();
        assert_eq!(pool.examples.len(), 24);
        // The recorded subset: holdout-20% as test, a seeded draw from the rest as training.
        assert_eq!(
            test.definition,
            SubsetDefinition::Whole {
                part: Part::Holdout { percent: 20 }
            }
        );
        assert_eq!(
            pool.definition,
            SubsetDefinition::SeededDraw {
                seed: 4,
                pool: Part::HoldoutRest { percent: 20 },
                pool_size: 24,
                drawn: 24,
            }
        );
        // Members are relative to the folder holding the class folders, whichever root is named.
        assert_eq!(test.members, rel_paths(&test, &dir.path().join("2750")));
        assert!(test.members.iter().all(|m| !m.starts_with("2750/")));
    }

    #[test]
    fn imagefolder_layout_errors_name_the_folder() {
        let dir = TempDir::new("folder-bad");
        let src = source(Format::Imagefolder, dir.path());
        let msg = check_source(&src).unwrap_err().to_string();
        assert!(msg.contains("no class folders"), "{msg}");
        write_image(&dir.path().join("cat/1.png"), 1);
        std::fs::create_dir_all(dir.path().join("dog")).unwrap();
        std::fs::write(dir.path().join("dog/readme.txt"), "x").unwrap();
        for err in [
            check_source(&src).unwrap_err(),
            list_split(&src, Split::Test, 0).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(msg.contains("dog") && msg.contains("no .jpg"), "{msg}");
        }
    }
}
