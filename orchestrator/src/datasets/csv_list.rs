//! CSV list reader: `train_csv` (the training pool) and `test_csv` (the test split), rows of
//! `path,label` relative to root. Owns only the CSV lists; it must not decode images.
//!
//! Fields are trimmed and extra columns ignored. The first row is a header, and skipped, when
//! its path field is not an existing file under root and either its path field is a usual
//! column name (path, file, filename, file_name, filepath, file_path, image, image_path,
//! img, name) or its label field is one (label, labels, class, class_name, classname,
//! target, category, y), case-insensitively. If every label in both files is a
//! non-negative integer, labels are those integers and the class names `"0"` to `"<max>"`;
//! otherwise every label is a class name, the class names are the sorted distinct labels of
//! both files and a label is its name's index. Pool and test keep file order.
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::{
    draw_from_pool, existing_root, layout_err, DatasetError, Example, Format, ImageRef, Part,
    RealSource, Split, SplitList, SubsetDefinition,
};

const ROW_FORMAT: &str = "`path,label` (path relative to root, label an integer or class name)";
const PATH_HEADERS: [&str; 10] = [
    "path",
    "file",
    "filename",
    "file_name",
    "filepath",
    "file_path",
    "image",
    "image_path",
    "img",
    "name",
];
const LABEL_HEADERS: [&str; 8] = [
    "label",
    "labels",
    "class",
    "class_name",
    "classname",
    "target",
    "category",
    "y",
];

/// One data row: the image and its label as written.
struct Row {
    file: PathBuf,
    label: String,
}

/// `root/train_csv` and `root/test_csv`.
fn csv_paths(src: &RealSource) -> Result<(PathBuf, PathBuf), DatasetError> {
    let field = |value: &Option<PathBuf>, field: &'static str| {
        value
            .as_ref()
            .map(|p| src.root.join(p))
            .ok_or(DatasetError::MissingField {
                format: Format::Csv,
                field,
                hint: "the CSV file, relative to root, listing `path,label` rows (train_csv for \
                       the training pool, test_csv for the test split)",
            })
    };
    Ok((
        field(&src.train_csv, "train_csv")?,
        field(&src.test_csv, "test_csv")?,
    ))
}

/// Which file is which, for the fingerprint.
pub(crate) fn roles(src: &RealSource) -> Result<String, DatasetError> {
    let (train, test) = csv_paths(src)?;
    Ok(format!(
        "train {}\ntest {}",
        train.display(),
        test.display()
    ))
}

fn is_header(root: &Path, path: &str, label: &str) -> bool {
    let path_l = path.to_ascii_lowercase();
    let label_l = label.to_ascii_lowercase();
    !root.join(path).is_file()
        && (PATH_HEADERS.contains(&path_l.as_str()) || LABEL_HEADERS.contains(&label_l.as_str()))
}

fn read_rows(root: &Path, csv_path: &Path) -> Result<Vec<Row>, DatasetError> {
    let file = std::fs::File::open(csv_path).map_err(io_err(csv_path))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(file);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let bad = |line: usize, problem: String| DatasetError::BadLine {
            path: csv_path.to_path_buf(),
            line,
            problem,
            expected: ROW_FORMAT,
        };
        let record = record.map_err(|e| {
            let line = e.position().map_or(i + 1, |p| p.line() as usize);
            bad(line, e.to_string())
        })?;
        let line = record.position().map_or(i + 1, |p| p.line() as usize);
        if record.iter().all(str::is_empty) {
            continue;
        }
        let (Some(path), Some(label)) = (record.get(0), record.get(1)) else {
            return Err(bad(line, format!("{} column(s), need 2", record.len())));
        };
        if i == 0 && is_header(root, path, label) {
            continue;
        }
        if path.is_empty() || label.is_empty() {
            return Err(bad(line, "empty path or label".into()));
        }
        let file = root.join(path);
        if !file.is_file() {
            return Err(DatasetError::ListedFileMissing {
                file,
                list: csv_path.to_path_buf(),
            });
        }
        rows.push(Row {
            file,
            label: label.to_string(),
        });
    }
    Ok(rows)
}

/// Both files' rows.
fn read(src: &RealSource) -> Result<(Vec<Row>, Vec<Row>), DatasetError> {
    check(src)?;
    let (train, test) = csv_paths(src)?;
    Ok((read_rows(&src.root, &train)?, read_rows(&src.root, &test)?))
}

pub(crate) fn list(
    src: &RealSource,
    split: Split,
    sample_seed: u64,
) -> Result<SplitList, DatasetError> {
    let (train, test) = read(src)?;
    let all = train.iter().chain(&test);
    let ints: Option<Vec<i64>> = all
        .clone()
        .map(|r| r.label.parse::<i64>().ok().filter(|l| *l >= 0))
        .collect();
    // `names` is sorted: with integer labels "0".."max" is looked up by parsing instead.
    let (class_names, integer_labels) = match ints {
        Some(ints) => {
            let max = ints.iter().copied().max();
            let names = max.map_or(Vec::new(), |m| (0..=m).map(|l| l.to_string()).collect());
            (names, true)
        }
        None => {
            let mut names: Vec<String> = all.map(|r| r.label.clone()).collect();
            names.sort();
            names.dedup();
            (names, false)
        }
    };
    let label_of = |s: &str| -> i64 {
        if integer_labels {
            s.parse().unwrap_or(0)
        } else {
            class_names
                .binary_search_by(|n| n.as_str().cmp(s))
                .map_or(0, |i| i as i64)
        }
    };
    let to_examples = |rows: Vec<Row>| -> Vec<Example> {
        rows.into_iter()
            .map(|r| Example {
                label: label_of(&r.label),
                image: ImageRef::File(r.file),
            })
            .collect()
    };
    let named = |file: &Option<PathBuf>| Part::CsvRows {
        file: file
            .as_deref()
            .map(|f| f.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default(),
    };
    let (examples, definition) = match split {
        Split::Test => (
            to_examples(test),
            SubsetDefinition::Whole {
                part: named(&src.test_csv),
            },
        ),
        _ => {
            let part = named(&src.train_csv);
            draw_from_pool(src, &to_examples(train), part, split, sample_seed)?
        }
    };
    Ok(SplitList::of_files(
        &src.root,
        examples,
        class_names,
        definition,
    ))
}

pub(crate) fn check(src: &RealSource) -> Result<(), DatasetError> {
    existing_root(src)?;
    let (train, test) = csv_paths(src)?;
    for path in [train, test] {
        if !path.is_file() {
            return Err(layout_err(src, format!("{} is missing", path.display())));
        }
    }
    Ok(())
}

pub(crate) fn files(src: &RealSource) -> Result<Vec<PathBuf>, DatasetError> {
    let (train_rows, test_rows) = read(src)?;
    let (train, test) = csv_paths(src)?;
    let mut files = vec![train, test];
    files.extend(train_rows.into_iter().chain(test_rows).map(|r| r.file));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::testutil::{rel_paths, write_image, TempDir};
    use crate::datasets::{check_source, fingerprint, list_split, load_image};

    fn source(root: &Path) -> RealSource {
        RealSource {
            format: Format::Csv,
            root: root.to_path_buf(),
            dtd_split: None,
            train_csv: Some("lists/train.csv".into()),
            test_csv: Some("lists/test.csv".into()),
        }
    }

    /// 20 training and 5 test TIFF/PNG images, labelled with class names.
    fn write_named(root: &Path) {
        let classes = ["zebra", "ant", "moth"];
        let mut train = String::from("Path , Label\n");
        for i in 0..20 {
            write_image(&root.join(format!("img/tr{i}.tif")), i as u8);
            train += &format!("img/tr{i}.tif,{}\n", classes[i % 3]);
        }
        let mut test = String::new();
        for i in 0..5 {
            write_image(&root.join(format!("img/te{i}.png")), i as u8);
            test += &format!("\"img/te{i}.png\", {},extra\n", classes[i % 3]);
        }
        std::fs::create_dir_all(root.join("lists")).unwrap();
        std::fs::write(root.join("lists/train.csv"), train).unwrap();
        std::fs::write(root.join("lists/test.csv"), test).unwrap();
    }

    #[test]
    fn csv_class_name_labels_with_header() {
        let dir = TempDir::new("csv-named");
        write_named(dir.path());
        let src = source(dir.path());
        check_source(&src).unwrap();
        let test = list_split(&src, Split::Test, 0).unwrap();
        assert_eq!(test.class_names, ["ant", "moth", "zebra"]);
        let labels: Vec<i64> = test.examples.iter().map(|e| e.label).collect();
        assert_eq!(labels, [2, 0, 1, 2, 0]);
        assert_eq!(rel_paths(&test, dir.path())[1], "img/te1.png");
        let train = list_split(&src, Split::Train800, 1).unwrap();
        let val = list_split(&src, Split::Val200, 1).unwrap();
        assert_eq!((train.examples.len(), val.examples.len()), (16, 4));
        for list in [&train, &val] {
            for (ex, path) in list.examples.iter().zip(rel_paths(list, dir.path())) {
                let i: usize = path["img/tr".len()..path.len() - 4].parse().unwrap();
                let class = ["zebra", "ant", "moth"][i % 3];
                assert_eq!(list.class_names[ex.label as usize], class);
            }
        }
        let both = list_split(&src, Split::Train800val200, 1).unwrap();
        assert_eq!(both, list_split(&src, Split::Train800val200, 1).unwrap());
        assert_ne!(both, list_split(&src, Split::Train800val200, 2).unwrap());
        assert_eq!(load_image(&both.examples[0].image, 3).unwrap().len(), 27);
        let fp = fingerprint(&src).unwrap();
        std::fs::write(dir.path().join("img/te4.png"), b"now corrupt").unwrap();
        assert_ne!(fp, fingerprint(&src).unwrap());
        let test = list_split(&src, Split::Test, 0).unwrap();
        let msg = load_image(&test.examples[4].image, 3)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("te4.png"), "{msg}");
    }

    #[test]
    fn csv_records_its_lists() {
        let dir = TempDir::new("csv-subset");
        write_named(dir.path());
        let src = source(dir.path());
        let test = list_split(&src, Split::Test, 0).unwrap();
        assert_eq!(
            test.definition,
            SubsetDefinition::Whole {
                part: Part::CsvRows {
                    file: "lists/test.csv".into()
                }
            }
        );
        assert_eq!(test.members[..2], ["img/te0.png", "img/te1.png"]);
        let train = list_split(&src, Split::Train800, 6).unwrap();
        assert_eq!(
            train.definition,
            SubsetDefinition::SeededDraw {
                seed: 6,
                pool: Part::CsvRows {
                    file: "lists/train.csv".into()
                },
                pool_size: 20,
                drawn: 20,
            }
        );
        assert_eq!(train.members, rel_paths(&train, dir.path()));
    }

    #[test]
    fn csv_integer_labels_without_header() {
        let dir = TempDir::new("csv-int");
        std::fs::create_dir_all(dir.path().join("lists")).unwrap();
        let mut train = String::new();
        for i in 0..6 {
            write_image(&dir.path().join(format!("{i}.png")), i as u8);
            train += &format!("{i}.png,{}\n", i % 2 * 3);
        }
        std::fs::write(dir.path().join("lists/train.csv"), &train).unwrap();
        std::fs::write(dir.path().join("lists/test.csv"), "0.png,1\n").unwrap();
        let src = source(dir.path());
        let test = list_split(&src, Split::Test, 0).unwrap();
        assert_eq!(test.class_names, ["0", "1", "2", "3"]);
        assert_eq!(test.examples[0].label, 1);
        let all = list_split(&src, Split::Train800val200, 0).unwrap();
        assert_eq!(all.examples.len(), 6);
    }

    #[test]
    fn csv_errors_name_the_file() {
        let dir = TempDir::new("csv-bad");
        write_named(dir.path());
        let mut src = source(dir.path());
        std::fs::write(
            dir.path().join("lists/test.csv"),
            "img/te0.png,ant\nimg/none.png,ant\n",
        )
        .unwrap();
        let msg = list_split(&src, Split::Test, 0).unwrap_err().to_string();
        assert!(
            msg.contains("none.png") && msg.contains("test.csv"),
            "{msg}"
        );
        std::fs::write(
            dir.path().join("lists/test.csv"),
            "img/te0.png,ant\nimg/te1.png\n",
        )
        .unwrap();
        let msg = list_split(&src, Split::Test, 0).unwrap_err().to_string();
        assert!(msg.contains("test.csv:2"), "{msg}");
        src.test_csv = None;
        let msg = check_source(&src).unwrap_err().to_string();
        assert!(msg.contains("test_csv"), "{msg}");
        src.test_csv = Some("lists/absent.csv".into());
        let msg = check_source(&src).unwrap_err().to_string();
        assert!(msg.contains("absent.csv"), "{msg}");
    }
}
