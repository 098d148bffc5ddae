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
//! both files and a label is its name's index. Pool and test keep file order. Integer labels
//! are below 100,000 and paths stay inside root (`listed.rs`), each refused with the file
//! and line.
use std::path::{Path, PathBuf};

use super::error::io_err;
use super::listed::{class_index, inside_root};
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

/// One data row: the image (inside root), its label as written, and its line in the file.
struct Row {
    file: PathBuf,
    label: String,
    line: usize,
}

/// One non-blank record of a CSV list as written: its line, its first two fields, and
/// whether it is the file's first record (which may be a header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: usize,
    pub path: String,
    pub label: String,
    pub first: bool,
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

/// The records of the CSV list `bytes` (read from `csv_path`, named in errors with the
/// line). Pure: no header rule (that needs the disk), paths and labels as written.
pub fn parse_records(bytes: &[u8], csv_path: &Path) -> Result<Vec<Record>, DatasetError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let bad = |line: usize, problem: String| DatasetError::BadLine {
            path: csv_path.to_path_buf(),
            line,
            problem,
            expected: ROW_FORMAT,
        };
        let line_of = |p: Option<&csv::Position>| p.map_or(i + 1, |p| p.line() as usize);
        let record = record.map_err(|e| bad(line_of(e.position()), e.to_string()))?;
        let line = line_of(record.position());
        if record.iter().all(str::is_empty) {
            continue;
        }
        let (Some(path), Some(label)) = (record.get(0), record.get(1)) else {
            return Err(bad(line, format!("{} column(s), need 2", record.len())));
        };
        out.push(Record {
            line,
            path: path.to_string(),
            label: label.to_string(),
            first: i == 0,
        });
    }
    Ok(out)
}

/// The data rows of the CSV list at `csv_path`: a header skipped, every path inside root and
/// existing.
fn read_rows(root: &Path, csv_path: &Path) -> Result<Vec<Row>, DatasetError> {
    let bytes = std::fs::read(csv_path).map_err(io_err(csv_path))?;
    let mut rows = Vec::new();
    for r in parse_records(&bytes, csv_path)? {
        let bad = |problem: String| DatasetError::BadLine {
            path: csv_path.to_path_buf(),
            line: r.line,
            problem,
            expected: ROW_FORMAT,
        };
        if r.first && is_header(root, &r.path, &r.label) {
            continue;
        }
        if r.path.is_empty() || r.label.is_empty() {
            return Err(bad("empty path or label".into()));
        }
        let file = inside_root(root, &r.path).map_err(bad)?;
        if !file.is_file() {
            return Err(DatasetError::ListedFileMissing {
                file,
                list: csv_path.to_path_buf(),
            });
        }
        rows.push(Row {
            file,
            label: r.label,
            line: r.line,
        });
    }
    Ok(rows)
}

/// With every label of both lists a non-negative integer, the largest (`None` for empty
/// lists); each must be below [`super::listed::MAX_CLASSES`]. `Ok(None)` as well when some
/// label is not an integer: then labels are class names.
fn largest_integer_label(lists: [(&Path, &[Row]); 2]) -> Result<Option<Option<i64>>, DatasetError> {
    let rows = || {
        lists
            .iter()
            .flat_map(|(path, rows)| rows.iter().map(move |r| (*path, r)))
    };
    if !rows().all(|(_, r)| r.label.parse::<u64>().is_ok()) {
        return Ok(None);
    }
    let mut max = None;
    for (path, r) in rows() {
        let label = class_index(&r.label).map_err(|problem| DatasetError::BadLine {
            path: path.to_path_buf(),
            line: r.line,
            problem,
            expected: ROW_FORMAT,
        })?;
        max = max.max(Some(label));
    }
    Ok(Some(max))
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
    let (train_csv, test_csv) = csv_paths(src)?;
    let largest = largest_integer_label([(&train_csv, &train), (&test_csv, &test)])?;
    // `names` is sorted: with integer labels "0".."max" is looked up by parsing instead.
    let (class_names, integer_labels) = match largest {
        Some(max) => {
            let names = max.map_or(Vec::new(), |m| (0..=m).map(|l| l.to_string()).collect());
            (names, true)
        }
        None => {
            let mut names: Vec<String> =
                train.iter().chain(&test).map(|r| r.label.clone()).collect();
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

    #[test]
    fn csv_huge_labels_and_escaping_paths_name_file_and_line() {
        let dir = TempDir::new("csv-hostile");
        write_named(dir.path());
        let src = source(dir.path());
        // All-integer labels, one of which would ask for 3e9 class names.
        std::fs::write(
            dir.path().join("lists/train.csv"),
            "img/tr0.tif,1\nimg/tr1.tif,3000000000\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("lists/test.csv"), "img/te0.png,0\n").unwrap();
        let msg = list_split(&src, Split::Test, 0).unwrap_err().to_string();
        assert!(
            msg.contains("train.csv:2") && msg.contains("too large"),
            "{msg}"
        );
        std::fs::write(
            dir.path().join("lists/test.csv"),
            "img/te0.png,0\n../../../../../etc/hostname,0\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("lists/train.csv"), "img/tr0.tif,1\n").unwrap();
        let msg = list_split(&src, Split::Test, 0).unwrap_err().to_string();
        assert!(
            msg.contains("test.csv:2") && msg.contains("outside the dataset root"),
            "{msg}"
        );
    }

    #[test]
    fn csv_parse_records_is_pure() {
        let list = Path::new("/r/l.csv");
        let rows = parse_records(b"path,label\n a.png , cat,x\n", list).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].first && !rows[1].first);
        assert_eq!((rows[1].line, rows[1].path.as_str()), (2, "a.png"));
        let msg = parse_records(b"a.png,1\nb.png\n", list)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("l.csv:2"), "{msg}");
        assert!(parse_records(b"\xff\xfe,\x00\n", list).is_err());
    }
}
