//! VTAB-1k layout reader (vtab1k-pytorch / RepAdapter / NOAH): four split lists of
//! `<relative path> <label>` lines under root. Owns only those lists; it must not decode images.
//!
//! Each split is its own file (`train800.txt`, `val200.txt`, `train800val200.txt`, `test.txt`),
//! listed in file order; `sample_seed` is not used. The path is everything before the last run
//! of whitespace (so paths may contain spaces), relative to root. Class names are `"0"` to
//! `"<max>"` for the largest label in any of the four lists: the sorted distinct labels as
//! strings when labels are contiguous, and always long enough that `class_names[label]` exists.
//! Labels are below 100,000 and paths stay inside root (`listed.rs`), each refused with the
//! list file and line.
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::listed::{class_index, inside_root};
use std::collections::BTreeMap;

use super::{
    existing_root, layout_err, DatasetError, Example, ImageRef, RealSource, Split, SplitList,
    SubsetDefinition,
};

const LINE_FORMAT: &str = "`<image path relative to root> <integer label>`";

fn list_name(split: Split) -> &'static str {
    match split {
        Split::Train800 => "train800.txt",
        Split::Val200 => "val200.txt",
        Split::Train800val200 => "train800val200.txt",
        Split::Test => "test.txt",
    }
}

const ALL: [Split; 4] = [
    Split::Train800,
    Split::Val200,
    Split::Train800val200,
    Split::Test,
];

/// `(image path under root, label)` of every line of the list `text` (read from `list`, named
/// in errors with the line). Pure: the paths are checked to stay inside `root`, not for
/// existence. Labels are below [`super::listed::MAX_CLASSES`].
pub fn parse_list(
    text: &str,
    root: &Path,
    list: &Path,
) -> Result<Vec<(PathBuf, i64)>, DatasetError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |problem: String| DatasetError::BadLine {
            path: list.to_path_buf(),
            line: i + 1,
            problem,
            expected: LINE_FORMAT,
        };
        let (path, label) = line
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| bad(format!("{line:?} has no label")))?;
        let label = class_index(label).map_err(bad)?;
        out.push((inside_root(root, path.trim_end()).map_err(bad)?, label));
    }
    Ok(out)
}

/// [`parse_list`] of the file `list`, every image checked to exist.
fn read_list(root: &Path, list: &Path) -> Result<Vec<(PathBuf, i64)>, DatasetError> {
    let text = std::fs::read_to_string(list).map_err(io_err(list))?;
    let out = parse_list(&text, root, list)?;
    if let Some((file, _)) = out.iter().find(|(file, _)| !file.is_file()) {
        return Err(DatasetError::ListedFileMissing {
            file: file.clone(),
            list: list.to_path_buf(),
        });
    }
    Ok(out)
}

/// All four lists, in [`ALL`] order.
fn read_all(src: &RealSource) -> Result<Vec<Vec<(PathBuf, i64)>>, DatasetError> {
    check(src)?;
    let root = &src.root;
    ALL.iter()
        .map(|&s| read_list(root, &root.join(list_name(s))))
        .collect()
}

/// blake3 (hex) of each of the four list files, by file name.
fn list_digests(src: &RealSource) -> Result<BTreeMap<String, String>, DatasetError> {
    ALL.iter()
        .map(|&s| {
            let path = src.root.join(list_name(s));
            let bytes = std::fs::read(&path).map_err(io_err(&path))?;
            let digest = blake3::hash(&bytes).to_hex().to_string();
            Ok((list_name(s).to_string(), digest))
        })
        .collect()
}

pub(crate) fn list(src: &RealSource, split: Split) -> Result<SplitList, DatasetError> {
    let lists = read_all(src)?;
    let definition = SubsetDefinition::Vtab1kLists {
        list: list_name(split).to_string(),
        digests: list_digests(src)?,
    };
    let max = lists.iter().flatten().map(|(_, l)| *l).max();
    let class_names = max.map_or(Vec::new(), |m| (0..=m).map(|l| l.to_string()).collect());
    let index = ALL.iter().position(|&s| s == split).unwrap_or(0);
    let examples = lists
        .into_iter()
        .nth(index)
        .unwrap_or_default()
        .into_iter()
        .map(|(file, label)| Example {
            image: ImageRef::File(file),
            label,
        })
        .collect();
    Ok(SplitList::of_files(
        &src.root,
        examples,
        class_names,
        definition,
    ))
}

pub(crate) fn check(src: &RealSource) -> Result<(), DatasetError> {
    let root = existing_root(src)?;
    let missing: Vec<&str> = ALL
        .iter()
        .map(|&s| list_name(s))
        .filter(|n| !root.join(n).is_file())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(layout_err(src, format!("missing {}", missing.join(", "))))
    }
}

pub(crate) fn files(src: &RealSource) -> Result<Vec<PathBuf>, DatasetError> {
    let lists = read_all(src)?;
    let mut files: Vec<PathBuf> = ALL.iter().map(|&s| src.root.join(list_name(s))).collect();
    files.extend(lists.into_iter().flatten().map(|(f, _)| f));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::testutil::{rel_paths, write_image, TempDir};
    use crate::datasets::{check_source, fingerprint, list_split, load_image, Format};

    fn source(root: &Path) -> RealSource {
        RealSource {
            format: Format::Vtab1k,
            root: root.to_path_buf(),
            dtd_split: None,
            train_csv: None,
            test_csv: None,
        }
    }

    /// images/{train,test}/<i>.png (one with a space in its name); labels i % 3.
    fn write_vtab(root: &Path) {
        let mut lists = [String::new(), String::new(), String::new(), String::new()];
        for i in 0..10 {
            let name = if i == 4 {
                "4 copy.png".to_string()
            } else {
                format!("{i}.png")
            };
            write_image(&root.join("images/train").join(&name), i as u8);
            let line = format!("images/train/{name} {}\n", i % 3);
            lists[if i < 8 { 0 } else { 1 }] += &line;
            lists[2] += &line;
        }
        for i in 0..4 {
            write_image(&root.join(format!("images/test/{i}.jpg")), 200 + i as u8);
            lists[3] += &format!("images/test/{i}.jpg\t{}\r\n", i % 3);
        }
        for (split, text) in ALL.iter().zip(lists) {
            std::fs::write(root.join(list_name(*split)), text).unwrap();
        }
    }

    #[test]
    fn vtab1k_reads_the_four_lists() {
        let dir = TempDir::new("vtab");
        write_vtab(dir.path());
        let src = source(dir.path());
        check_source(&src).unwrap();
        let train = list_split(&src, Split::Train800, 0).unwrap();
        assert_eq!(train.class_names, ["0", "1", "2"]);
        assert_eq!(train.examples.len(), 8);
        assert_eq!(rel_paths(&train, dir.path())[4], "images/train/4 copy.png");
        let labels: Vec<i64> = train.examples.iter().map(|e| e.label).collect();
        assert_eq!(labels, [0, 1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(
            list_split(&src, Split::Val200, 0).unwrap().examples.len(),
            2
        );
        let both = list_split(&src, Split::Train800val200, 0).unwrap();
        assert_eq!(both.examples.len(), 10);
        // Official lists: the seed does not matter.
        assert_eq!(both, list_split(&src, Split::Train800val200, 123).unwrap());
        let test = list_split(&src, Split::Test, 0).unwrap();
        assert_eq!(
            rel_paths(&test, dir.path()),
            [
                "images/test/0.jpg",
                "images/test/1.jpg",
                "images/test/2.jpg",
                "images/test/3.jpg"
            ]
        );
        assert_eq!(load_image(&test.examples[3].image, 2).unwrap().len(), 12);
        let fp = fingerprint(&src).unwrap();
        std::fs::write(dir.path().join("images/test/3.jpg"), b"changed").unwrap();
        assert_ne!(fp, fingerprint(&src).unwrap());
    }

    #[test]
    fn vtab1k_records_the_lists_and_their_digests() {
        let dir = TempDir::new("vtab-subset");
        write_vtab(dir.path());
        let src = source(dir.path());
        let digests: BTreeMap<String, String> = ALL
            .iter()
            .map(|&s| {
                let bytes = std::fs::read(dir.path().join(list_name(s))).unwrap();
                (
                    list_name(s).to_string(),
                    blake3::hash(&bytes).to_hex().to_string(),
                )
            })
            .collect();
        assert_eq!(digests.len(), 4);
        for split in ALL {
            let list = list_split(&src, split, 7).unwrap();
            assert_eq!(
                list.definition,
                SubsetDefinition::Vtab1kLists {
                    list: list_name(split).into(),
                    digests: digests.clone(),
                }
            );
            assert_eq!(list.members, rel_paths(&list, dir.path()));
        }
        let both = list_split(&src, Split::Train800val200, 0).unwrap();
        assert_eq!(both.members[4], "images/train/4 copy.png");
        // Another list file content is another definition.
        let mut text = std::fs::read_to_string(dir.path().join("test.txt")).unwrap();
        text.push('\n');
        std::fs::write(dir.path().join("test.txt"), text).unwrap();
        assert_ne!(
            list_split(&src, Split::Train800val200, 0)
                .unwrap()
                .definition,
            both.definition
        );
    }

    #[test]
    fn vtab1k_errors_name_file_and_line() {
        let dir = TempDir::new("vtab-bad");
        write_vtab(dir.path());
        let src = source(dir.path());
        std::fs::write(
            dir.path().join("val200.txt"),
            "images/train/8.png 1\nimages/train/9.png x\n",
        )
        .unwrap();
        let msg = list_split(&src, Split::Test, 0).unwrap_err().to_string();
        assert!(
            msg.contains("val200.txt:2") && msg.contains("\"x\""),
            "{msg}"
        );
        std::fs::write(dir.path().join("val200.txt"), "images/train/nope.png 1\n").unwrap();
        let msg = list_split(&src, Split::Val200, 0).unwrap_err().to_string();
        assert!(
            msg.contains("nope.png") && msg.contains("val200.txt"),
            "{msg}"
        );
        std::fs::remove_file(dir.path().join("test.txt")).unwrap();
        let msg = check_source(&src).unwrap_err().to_string();
        assert!(msg.contains("missing test.txt"), "{msg}");
    }

    #[test]
    fn vtab1k_huge_labels_and_escaping_paths_name_file_and_line() {
        let dir = TempDir::new("vtab-hostile");
        write_vtab(dir.path());
        let src = source(dir.path());
        // One line would otherwise ask for 3e9 class names (72 GB).
        std::fs::write(
            dir.path().join("test.txt"),
            "images/test/0.jpg 1\nimages/test/1.jpg 3000000000\n",
        )
        .unwrap();
        let msg = list_split(&src, Split::Test, 0).unwrap_err().to_string();
        assert!(
            msg.contains("test.txt:2") && msg.contains("too large"),
            "{msg}"
        );
        // A file outside the task folder (it exists: the list must not reach it).
        std::fs::write(dir.path().join("test.txt"), "images/test/0.jpg 1\n").unwrap();
        let outside = dir
            .path()
            .parent()
            .unwrap()
            .join("vtab-hostile-outside.png");
        write_image(&outside, 1);
        std::fs::write(
            dir.path().join("val200.txt"),
            "../vtab-hostile-outside.png 0\n",
        )
        .unwrap();
        let msg = list_split(&src, Split::Val200, 0).unwrap_err().to_string();
        std::fs::remove_file(&outside).unwrap();
        assert!(
            msg.contains("val200.txt:1") && msg.contains("outside the dataset root"),
            "{msg}"
        );
    }

    #[test]
    fn vtab1k_parse_list_is_pure_and_bounded() {
        let root = Path::new("/r");
        let list = Path::new("/r/test.txt");
        let rows = parse_list("a b.png 3\n\n  c.png\t0 \n", root, list).unwrap();
        assert_eq!(rows, [(root.join("a b.png"), 3), (root.join("c.png"), 0)]);
        let limit = format!("x.png {}", crate::datasets::listed::MAX_CLASSES);
        for bad in ["/etc/passwd 0", "../x 0", "x.png", limit.as_str()] {
            let msg = parse_list(bad, root, list).unwrap_err().to_string();
            assert!(msg.contains("test.txt:1"), "{bad}: {msg}");
        }
    }
}
