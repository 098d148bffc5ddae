//! DTD (Describable Textures) reader: `images/<class>/*.jpg` with the official
//! `labels/{train,val,test}<N>.txt` lists. Owns only DTD files; it must not decode images.
//!
//! `dtd_split` picks N (1 to 10, default 1). The training pool is `train<N>.txt` followed by
//! `val<N>.txt`, in file order; test is `test<N>.txt` in file order. Class names are the sorted
//! distinct `class` prefixes of the three lists; a label is its class's index. Root may be the
//! unpacked `dtd/` folder or the folder holding it.
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::{
    draw_from_pool, existing_root, layout_err, DatasetError, Example, Format, ImageRef, Part,
    RealSource, Split, SplitList, SubsetDefinition,
};

/// `(class, image path)` per line of a list.
type Entries = Vec<(String, PathBuf)>;

const LINE_FORMAT: &str = "`class/name.jpg`, a path under images/";

/// The official split number to read (1-10).
pub(crate) fn split_number(src: &RealSource) -> Result<u32, DatasetError> {
    let n = src.dtd_split.unwrap_or(1);
    if (1..=10).contains(&n) {
        Ok(n)
    } else {
        Err(DatasetError::BadField {
            format: Format::Dtd,
            field: "dtd_split",
            value: n.to_string(),
            hint: "DTD has the 10 official splits 1 to 10 (labels/train1.txt ... train10.txt)",
        })
    }
}

/// The folder holding `images/` and `labels/`.
fn dtd_root(src: &RealSource) -> Result<PathBuf, DatasetError> {
    let root = existing_root(src)?;
    if !root.join("labels").is_dir() && root.join("dtd/labels").is_dir() {
        return Ok(root.join("dtd"));
    }
    Ok(root.to_path_buf())
}

/// `labels/train<N>.txt`, `labels/val<N>.txt`, `labels/test<N>.txt`.
fn list_paths(root: &Path, n: u32) -> [PathBuf; 3] {
    ["train", "val", "test"].map(|s| root.join("labels").join(format!("{s}{n}.txt")))
}

/// `(class, image path)` of every line of one list.
fn read_list(root: &Path, list: &Path) -> Result<Entries, DatasetError> {
    let text = std::fs::read_to_string(list).map_err(io_err(list))?;
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
        let class = match line.split_once('/') {
            Some((class, name)) if !class.is_empty() && !name.is_empty() => class,
            _ => return Err(bad(format!("{line:?} has no class folder"))),
        };
        let file = super::listed::inside_root(&root.join("images"), line).map_err(bad)?;
        if !file.is_file() {
            return Err(DatasetError::ListedFileMissing {
                file,
                list: list.to_path_buf(),
            });
        }
        out.push((class.to_string(), file));
    }
    Ok(out)
}

/// The sorted class names and the train, val and test lists.
fn read(src: &RealSource) -> Result<(Vec<String>, [Entries; 3]), DatasetError> {
    let n = split_number(src)?;
    check(src)?;
    let root = dtd_root(src)?;
    let [train, val, test] = list_paths(&root, n);
    let lists = [
        read_list(&root, &train)?,
        read_list(&root, &val)?,
        read_list(&root, &test)?,
    ];
    let mut classes: Vec<String> = lists.iter().flatten().map(|(c, _)| c.clone()).collect();
    classes.sort();
    classes.dedup();
    Ok((classes, lists))
}

pub(crate) fn list(
    src: &RealSource,
    split: Split,
    sample_seed: u64,
) -> Result<SplitList, DatasetError> {
    let fold = split_number(src)?;
    let (class_names, [train, val, test]) = read(src)?;
    let to_examples = |entries: &[(String, PathBuf)]| -> Vec<Example> {
        entries
            .iter()
            .map(|(class, file)| Example {
                image: ImageRef::File(file.clone()),
                label: class_names.binary_search(class).unwrap_or(0) as i64,
            })
            .collect()
    };
    let (examples, definition) = match split {
        Split::Test => (
            to_examples(&test),
            SubsetDefinition::Whole {
                part: Part::DtdFoldTest { fold },
            },
        ),
        _ => {
            let pool = [to_examples(&train), to_examples(&val)].concat();
            let part = Part::DtdFoldTrainval { fold };
            draw_from_pool(src, &pool, part, split, sample_seed)?
        }
    };
    Ok(SplitList::of_files(
        &dtd_root(src)?,
        examples,
        class_names,
        definition,
    ))
}

pub(crate) fn check(src: &RealSource) -> Result<(), DatasetError> {
    let n = split_number(src)?;
    let root = dtd_root(src)?;
    if !root.join("images").is_dir() {
        return Err(layout_err(
            src,
            format!("{} is missing", root.join("images").display()),
        ));
    }
    for list in list_paths(&root, n) {
        if !list.is_file() {
            return Err(layout_err(
                src,
                format!("{} (split {n}) is missing", list.display()),
            ));
        }
    }
    Ok(())
}

pub(crate) fn files(src: &RealSource) -> Result<Vec<PathBuf>, DatasetError> {
    let (_, lists) = read(src)?;
    let root = dtd_root(src)?;
    let mut files = list_paths(&root, split_number(src)?).to_vec();
    files.extend(lists.into_iter().flatten().map(|(_, f)| f));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::testutil::{rel_paths, write_image, TempDir};
    use crate::datasets::{check_source, fingerprint, list_split};

    fn source(root: &Path, dtd_split: Option<u32>) -> RealSource {
        RealSource {
            format: Format::Dtd,
            root: root.to_path_buf(),
            dtd_split,
            train_csv: None,
            test_csv: None,
        }
    }

    /// 3 classes x 6 images; split N puts image (N + k) % 6 of each class in train (k=0,1),
    /// val (k=2,3) and test (k=4,5).
    fn write_dtd(root: &Path) {
        let classes = ["striped", "banded", "dotted"];
        for class in classes {
            for i in 0..6 {
                write_image(
                    &root.join(format!("images/{class}/{class}_{i:04}.jpg")),
                    i as u8 * 10,
                );
            }
        }
        std::fs::create_dir_all(root.join("labels")).unwrap();
        for n in 1..=2 {
            for (name, ks) in [("train", [0, 1]), ("val", [2, 3]), ("test", [4, 5])] {
                let mut text = String::new();
                for class in classes {
                    for k in ks {
                        text += &format!("{class}/{class}_{:04}.jpg\n", (n + k) % 6);
                    }
                }
                std::fs::write(root.join(format!("labels/{name}{n}.txt")), text).unwrap();
            }
        }
    }

    #[test]
    fn dtd_lists_classes_and_pool() {
        let dir = TempDir::new("dtd");
        write_dtd(dir.path());
        let src = source(dir.path(), None);
        check_source(&src).unwrap();
        let test = list_split(&src, Split::Test, 0).unwrap();
        assert_eq!(test.class_names, ["banded", "dotted", "striped"]);
        assert_eq!(
            rel_paths(&test, dir.path()),
            [
                "images/striped/striped_0005.jpg",
                "images/striped/striped_0000.jpg",
                "images/banded/banded_0005.jpg",
                "images/banded/banded_0000.jpg",
                "images/dotted/dotted_0005.jpg",
                "images/dotted/dotted_0000.jpg",
            ]
        );
        let labels: Vec<i64> = test.examples.iter().map(|e| e.label).collect();
        assert_eq!(labels, [2, 2, 0, 0, 1, 1]);
        // Pool = train1 + val1 = 12 images: all drawn, 10/2.
        let both = list_split(&src, Split::Train800val200, 8).unwrap();
        let mut drawn = rel_paths(&both, dir.path());
        drawn.sort();
        let mut expected: Vec<String> = ["striped", "banded", "dotted"]
            .iter()
            .flat_map(|c| (1..5).map(move |i| format!("images/{c}/{c}_{i:04}.jpg")))
            .collect();
        expected.sort();
        assert_eq!(drawn, expected);
        assert_eq!(
            list_split(&src, Split::Train800, 8).unwrap().examples.len(),
            10
        );
        assert_eq!(
            list_split(&src, Split::Val200, 8).unwrap().examples.len(),
            2
        );
        assert_eq!(both, list_split(&src, Split::Train800val200, 8).unwrap());
        assert_ne!(both, list_split(&src, Split::Train800val200, 9).unwrap());
    }

    #[test]
    fn dtd_records_its_fold_and_draw() {
        let dir = TempDir::new("dtd-subset");
        write_dtd(&dir.path().join("dtd"));
        let src = source(dir.path(), Some(2));
        let test = list_split(&src, Split::Test, 4).unwrap();
        assert_eq!(
            test.definition,
            SubsetDefinition::Whole {
                part: Part::DtdFoldTest { fold: 2 }
            }
        );
        assert_eq!(test.definition.to_string(), "dtd-fold 2 test");
        // Members are paths relative to the folder holding images/ (here dtd/ under root).
        assert_eq!(test.members, rel_paths(&test, &dir.path().join("dtd")));
        assert_eq!(test.members[0], "images/striped/striped_0000.jpg");
        let train = list_split(&src, Split::Train800, 4).unwrap();
        assert_eq!(
            train.definition,
            SubsetDefinition::SeededDraw {
                seed: 4,
                pool: Part::DtdFoldTrainval { fold: 2 },
                pool_size: 12,
                drawn: 12,
            }
        );
        assert_eq!(train.members.len(), 10);
        // The default fold is 1.
        let default = list_split(&source(dir.path(), None), Split::Test, 0).unwrap();
        assert_eq!(
            default.definition,
            SubsetDefinition::Whole {
                part: Part::DtdFoldTest { fold: 1 }
            }
        );
    }

    #[test]
    fn dtd_split_number_and_parent_root() {
        let dir = TempDir::new("dtd2");
        write_dtd(&dir.path().join("dtd"));
        let one = list_split(&source(dir.path(), Some(1)), Split::Test, 0).unwrap();
        let default = list_split(&source(dir.path(), None), Split::Test, 0).unwrap();
        let two = list_split(&source(dir.path(), Some(2)), Split::Test, 0).unwrap();
        assert_eq!(one, default);
        assert_ne!(one, two);
        assert_ne!(
            fingerprint(&source(dir.path(), Some(1))).unwrap(),
            fingerprint(&source(dir.path(), Some(2))).unwrap()
        );
        let err = check_source(&source(dir.path(), Some(11))).unwrap_err();
        assert!(err.to_string().contains("dtd_split"), "{err}");
        let err = check_source(&source(dir.path(), Some(0))).unwrap_err();
        assert!(matches!(err, DatasetError::BadField { .. }), "{err}");
    }

    #[test]
    fn dtd_errors_name_the_list_and_line() {
        let dir = TempDir::new("dtd-bad");
        write_dtd(dir.path());
        let src = source(dir.path(), None);
        std::fs::remove_file(dir.path().join("images/banded/banded_0005.jpg")).unwrap();
        let msg = list_split(&src, Split::Test, 0).unwrap_err().to_string();
        assert!(
            msg.contains("banded_0005.jpg") && msg.contains("test1.txt"),
            "{msg}"
        );
        std::fs::write(dir.path().join("labels/val1.txt"), "ok\n").unwrap();
        let msg = list_split(&src, Split::Train800, 0)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("val1.txt:1"), "{msg}");
        // A line that climbs out of images/ is refused before the disk is asked.
        std::fs::write(
            dir.path().join("labels/val1.txt"),
            "../../../../etc/hostname\n",
        )
        .unwrap();
        let msg = list_split(&src, Split::Train800, 0)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("val1.txt:1") && msg.contains("outside the dataset root"),
            "{msg}"
        );
        std::fs::remove_file(dir.path().join("labels/train1.txt")).unwrap();
        let msg = check_source(&src).unwrap_err().to_string();
        assert!(msg.contains("train1.txt"), "{msg}");
    }
}
