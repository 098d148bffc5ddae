//! CIFAR-100 reader: the python (pickle) and binary versions, autodetected, pixels kept in memory
//! as HWC RGB. Owns only CIFAR files; it must not touch other formats or decode image files.
//!
//! Python version: `train`, `test`, `meta`, pickled dicts (`b'data'`: N x 3072 uint8, each row
//! 1024 R then 1024 G then 1024 B bytes of a row-major 32x32 image; `b'fine_labels'`; meta's
//! `b'fine_label_names'`). Binary version: `train.bin`, `test.bin` (records of 1 coarse label
//! byte, 1 fine label byte, 3072 pixel bytes in the same plane order) and
//! `fine_label_names.txt`. Root may be the version's folder or the folder holding
//! `cifar-100-python/` or `cifar-100-binary/`; if both versions are present the python one wins.
//! The training pool is the official train split in file order; test is the official test split.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::io_err;
use super::pickle::{self, Value};
use super::{
    existing_root, layout_err, sampling, seeded_draw, DatasetError, Example, ImageRef,
    Part as SourcePart, RealSource, Split, SplitList, SubsetDefinition,
};

const SIDE: u32 = 32;
const PIXELS: usize = 32 * 32;
const IMAGE_BYTES: usize = 3 * PIXELS;
const RECORD_BYTES: usize = 2 + IMAGE_BYTES;
const PY_FILES: [&str; 3] = ["train", "test", "meta"];
const BIN_FILES: [&str; 3] = ["train.bin", "test.bin", "fine_label_names.txt"];
const PY_FIX: &str = "re-extract cifar-100-python.tar.gz: the file must be the pickle of a dict \
                      with b'data' (N x 3072 uint8) and b'fine_labels' (or, for meta, \
                      b'fine_label_names')";
const BIN_FIX: &str = "re-extract cifar-100-binary.tar.gz: train.bin/test.bin hold 3074-byte \
                       records (coarse label, fine label, 3072 pixels) and \
                       fine_label_names.txt one class name per line";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Python,
    Binary,
}

/// The folder holding the data files and which version they are.
struct Layout {
    dir: PathBuf,
    version: Version,
}

impl Layout {
    fn files(&self) -> [PathBuf; 3] {
        let names = match self.version {
            Version::Python => PY_FILES,
            Version::Binary => BIN_FILES,
        };
        names.map(|n| self.dir.join(n))
    }
}

fn detect(src: &RealSource) -> Result<Layout, DatasetError> {
    let root = existing_root(src)?;
    let has_all = |dir: &Path, names: &[&str]| names.iter().all(|n| dir.join(n).is_file());
    for dir in [
        root.to_path_buf(),
        root.join("cifar-100-python"),
        root.join("cifar-100-binary"),
    ] {
        for (names, version) in [(PY_FILES, Version::Python), (BIN_FILES, Version::Binary)] {
            if has_all(&dir, &names) {
                return Ok(Layout { dir, version });
            }
        }
    }
    let missing = |names: &[&str]| -> String {
        let gone: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !root.join(n).is_file())
            .collect();
        gone.join(", ")
    };
    Err(layout_err(
        src,
        format!(
            "neither version is complete there or in cifar-100-python/ or cifar-100-binary/ \
             (python version lacks {}; binary version lacks {})",
            missing(&PY_FILES),
            missing(&BIN_FILES)
        ),
    ))
}

/// One split's pixels (HWC, 3072 bytes per image) and fine labels.
pub(crate) struct Part {
    pixels: Vec<u8>,
    labels: Vec<i64>,
}

/// Appends the HWC form of one CHW-planar 32x32 image.
fn push_hwc(planes: &[u8], out: &mut Vec<u8>) {
    let (r, rest) = planes.split_at(PIXELS);
    let (g, b) = rest.split_at(PIXELS);
    let start = out.len();
    out.resize(start + IMAGE_BYTES, 0);
    for (px, ((r, g), b)) in out[start..].chunks_exact_mut(3).zip(r.iter().zip(g).zip(b)) {
        px.copy_from_slice(&[*r, *g, *b]);
    }
}

fn read_python_part(path: &Path) -> Result<Part, DatasetError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    parse_python_part(&bytes, path)
}

/// A python-version `train`/`test` pickle's images and fine labels (`bytes` read from `path`,
/// which errors name).
pub(crate) fn parse_python_part(bytes: &[u8], path: &Path) -> Result<Part, DatasetError> {
    let bad = |problem: String| DatasetError::BadFile {
        path: path.to_path_buf(),
        problem,
        fix: PY_FIX,
    };
    let dict = pickle::load(bytes).map_err(|m| bad(format!("not a readable pickle: {m}")))?;
    let data = dict
        .get("data")
        .ok_or_else(|| bad(format!("the pickle ({}) has no 'data' entry", dict.kind())))?;
    let Value::Array(array) = data else {
        return Err(bad(format!(
            "'data' is {}, expected a numpy uint8 array",
            data.kind()
        )));
    };
    let array = array.borrow();
    if let Some(e) = &array.error {
        return Err(bad(format!("'data': {e}")));
    }
    if array.dtype.kind != 'u' || array.dtype.size != 1 {
        return Err(bad(format!(
            "'data' has dtype {:?}, expected uint8",
            array.dtype
        )));
    }
    let n = array.shape.first().copied().unwrap_or(0);
    let shape_ok = array.shape == [n, IMAGE_BYTES] || array.shape == [n, 3, 32, 32];
    if !shape_ok || (array.fortran && n > 1) {
        return Err(bad(format!(
            "'data' has shape {:?}{}, expected C-ordered N x 3072",
            array.shape,
            if array.fortran {
                " (Fortran order)"
            } else {
                ""
            }
        )));
    }
    let labels = dict
        .get("fine_labels")
        .ok_or_else(|| {
            bad(
                "no 'fine_labels' entry (CIFAR-10 files have 'labels'; this reader is for \
                 CIFAR-100)"
                    .into(),
            )
        })?
        .to_ints()
        .map_err(|m| bad(format!("'fine_labels': {m}")))?;
    if labels.len() != n {
        return Err(bad(format!("{n} images but {} fine labels", labels.len())));
    }
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    for planes in array.data.chunks_exact(IMAGE_BYTES) {
        push_hwc(planes, &mut pixels);
    }
    Ok(Part { pixels, labels })
}

fn read_python_names(path: &Path) -> Result<Vec<String>, DatasetError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    parse_python_names(&bytes, path)
}

/// The `meta` pickle's fine label names (`bytes` read from `path`, which errors name).
pub(crate) fn parse_python_names(bytes: &[u8], path: &Path) -> Result<Vec<String>, DatasetError> {
    let bad = |problem: String| DatasetError::BadFile {
        path: path.to_path_buf(),
        problem,
        fix: PY_FIX,
    };
    let meta = pickle::load(bytes).map_err(|m| bad(format!("not a readable pickle: {m}")))?;
    meta.get("fine_label_names")
        .ok_or_else(|| bad("no 'fine_label_names' entry".into()))?
        .to_strings()
        .map_err(|m| bad(format!("'fine_label_names': {m}")))
}

fn read_binary_part(path: &Path) -> Result<Part, DatasetError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    if bytes.len() % RECORD_BYTES != 0 {
        return Err(DatasetError::BadFile {
            path: path.to_path_buf(),
            problem: format!(
                "{} bytes is not a whole number of {RECORD_BYTES}-byte records",
                bytes.len()
            ),
            fix: BIN_FIX,
        });
    }
    let n = bytes.len() / RECORD_BYTES;
    let mut pixels = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for record in bytes.chunks_exact(RECORD_BYTES) {
        labels.push(i64::from(record[1]));
        push_hwc(&record[2..], &mut pixels);
    }
    Ok(Part { pixels, labels })
}

fn read_binary_names(path: &Path) -> Result<Vec<String>, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn read_part(layout: &Layout, test: bool, n_classes: usize) -> Result<Part, DatasetError> {
    let [train, test_file, _] = layout.files();
    let path = if test { test_file } else { train };
    let part = match layout.version {
        Version::Python => read_python_part(&path)?,
        Version::Binary => read_binary_part(&path)?,
    };
    if let Some((i, bad)) = part
        .labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::try_from(l).map_or(true, |l| l >= n_classes))
    {
        return Err(DatasetError::BadFile {
            path,
            problem: format!(
                "image {i} has fine label {bad} but there are {n_classes} class names"
            ),
            fix: match layout.version {
                Version::Python => PY_FIX,
                Version::Binary => BIN_FIX,
            },
        });
    }
    Ok(part)
}

fn rgb(data: &Arc<Vec<u8>>, index: usize) -> ImageRef {
    ImageRef::Rgb {
        width: SIDE,
        height: SIDE,
        data: data.clone(),
        offset: index * IMAGE_BYTES,
    }
}

pub(crate) fn list(
    src: &RealSource,
    split: Split,
    sample_seed: u64,
) -> Result<SplitList, DatasetError> {
    let layout = detect(src)?;
    let [_, _, names_path] = layout.files();
    let class_names = match layout.version {
        Version::Python => read_python_names(&names_path)?,
        Version::Binary => read_binary_names(&names_path)?,
    };
    let part = read_part(&layout, split == Split::Test, class_names.len())?;
    let (examples, definition, members) = if split == Split::Test {
        let labels = part.labels;
        let data = Arc::new(part.pixels);
        let members = (0..labels.len()).map(|i| format!("test/{i}")).collect();
        let examples = labels
            .into_iter()
            .enumerate()
            .map(|(i, label)| Example {
                image: rgb(&data, i),
                label,
            })
            .collect();
        let whole = SubsetDefinition::Whole {
            part: SourcePart::Cifar100Test,
        };
        (examples, whole, members)
    } else {
        if part.labels.is_empty() {
            return Err(DatasetError::EmptyPool {
                root: src.root.clone(),
                format: src.format.clone(),
            });
        }
        // Copy only the drawn images, so the 150 MB train buffer is not kept alive.
        let picked = sampling::pool_indices(part.labels.len(), split, sample_seed);
        let mut pixels = Vec::with_capacity(picked.len() * IMAGE_BYTES);
        for &i in &picked {
            pixels.extend_from_slice(&part.pixels[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]);
        }
        let data = Arc::new(pixels);
        let examples = picked
            .iter()
            .enumerate()
            .map(|(j, &i)| Example {
                image: rgb(&data, j),
                label: part.labels[i],
            })
            .collect();
        let members = picked.iter().map(|i| format!("train/{i}")).collect();
        let draw = seeded_draw(SourcePart::Cifar100Train, part.labels.len(), sample_seed);
        (examples, draw, members)
    };
    Ok(SplitList {
        examples,
        class_names,
        definition,
        members,
    })
}

pub(crate) fn check(src: &RealSource) -> Result<(), DatasetError> {
    let layout = detect(src)?;
    for path in layout.files() {
        let len = std::fs::metadata(&path).map_err(io_err(&path))?.len();
        let is_data = path.extension().is_some_and(|e| e == "bin");
        if len == 0 || (is_data && len % RECORD_BYTES as u64 != 0) {
            return Err(DatasetError::BadFile {
                path,
                problem: format!("{len} bytes is not a CIFAR-100 file"),
                fix: match layout.version {
                    Version::Python => PY_FIX,
                    Version::Binary => BIN_FIX,
                },
            });
        }
    }
    Ok(())
}

pub(crate) fn files(src: &RealSource) -> Result<Vec<PathBuf>, DatasetError> {
    Ok(detect(src)?.files().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::testutil::TempDir;
    use crate::datasets::{check_source, fingerprint, list_split, load_image, Format};
    use std::process::Command;

    fn source(root: &Path) -> RealSource {
        RealSource {
            format: Format::Cifar100,
            root: root.to_path_buf(),
            dtd_split: None,
            train_csv: None,
            test_csv: None,
        }
    }

    /// Pixel byte `c*1024 + p` of image `i`, as both writers below produce it.
    fn pixel(i: usize, c: usize, p: usize) -> u8 {
        ((i * 7 + c * 50 + p * 3) % 256) as u8
    }

    /// Writes CIFAR-100-python-style `train` (30 images), `test` (10) and `meta` (5 classes)
    /// into `dir` with the real Python pickle at `protocol`; labels are `i % 5`.
    fn write_python_cifar(dir: &Path, protocol: u32, str_names: bool) {
        let python = std::env::var("VTAB_ORCH_PYTHON").unwrap_or_else(|_| {
            panic!(
                "VTAB_ORCH_PYTHON is unset: the CIFAR python-version tests need numpy; run them \
                 through ./x test, or after eval \"$(./x env)\""
            )
        });
        let script = r#"
import pickle, sys
import numpy as np
out, proto, str_names = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
def batch(n, label):
    i = np.arange(n).reshape(n, 1, 1)
    c = np.arange(3).reshape(1, 3, 1)
    p = np.arange(1024).reshape(1, 1, 1024)
    data = ((i * 7 + c * 50 + p * 3) % 256).astype(np.uint8).reshape(n, 3072)
    return {b'batch_label': label, b'fine_labels': [k % 5 for k in range(n)],
            b'coarse_labels': [0] * n, b'filenames': [b'img_%d.png' % k for k in range(n)],
            b'data': data}
names = ['apple', 'bear', 'cloud', 'dolphin', 'elephant']
meta = {b'fine_label_names': names if str_names else [s.encode() for s in names],
        b'coarse_label_names': [b'misc']}
for name, obj in [('train', batch(30, b'training batch 1 of 1')),
                  ('test', batch(10, b'testing batch 1 of 1')), ('meta', meta)]:
    with open(out + '/' + name, 'wb') as f:
        pickle.dump(obj, f, protocol=proto)
"#;
        let status = Command::new(&python)
            .arg("-c")
            .arg(script)
            .arg(dir)
            .arg(protocol.to_string())
            .arg(if str_names { "1" } else { "0" })
            .status()
            .unwrap_or_else(|e| panic!("cannot run VTAB_ORCH_PYTHON={python}: {e}"));
        assert!(status.success(), "the pickle writer failed");
    }

    fn write_binary_cifar(dir: &Path, n_train: usize, n_test: usize) {
        let batch = |n: usize| -> Vec<u8> {
            let mut out = Vec::new();
            for i in 0..n {
                out.push(0);
                out.push((i % 5) as u8);
                for c in 0..3 {
                    out.extend((0..PIXELS).map(|p| pixel(i, c, p)));
                }
            }
            out
        };
        std::fs::write(dir.join("train.bin"), batch(n_train)).unwrap();
        std::fs::write(dir.join("test.bin"), batch(n_test)).unwrap();
        std::fs::write(
            dir.join("fine_label_names.txt"),
            "apple\nbear\ncloud\ndolphin\nelephant\n\n",
        )
        .unwrap();
    }

    /// The test split holds images 0..n in order with label i % 5 and the writers' pixels.
    fn assert_test_split(src: &RealSource, n: usize) {
        let test = list_split(src, Split::Test, 0).unwrap();
        assert_eq!(
            test.class_names,
            ["apple", "bear", "cloud", "dolphin", "elephant"]
        );
        assert_eq!(test.examples.len(), n);
        for (i, ex) in test.examples.iter().enumerate() {
            assert_eq!(ex.label, (i % 5) as i64);
            // 32x32 needs no resize: the CHW output is exactly the file's planes.
            let chw = load_image(&ex.image, 32).unwrap();
            for (c, p) in [(0, 0), (1, 0), (2, 0), (0, 33), (2, 1023)] {
                assert_eq!(chw[c * PIXELS + p], pixel(i, c, p), "image {i} c {c} p {p}");
            }
        }
    }

    fn train_splits(src: &RealSource, seed: u64) -> [Vec<i64>; 3] {
        [Split::Train800, Split::Val200, Split::Train800val200].map(|s| {
            list_split(src, s, seed)
                .unwrap()
                .examples
                .iter()
                .map(|e| e.label)
                .collect()
        })
    }

    #[test]
    fn cifar_python_protocol2_numpy_pickles() {
        let dir = TempDir::new("cifar-py2");
        write_python_cifar(dir.path(), 2, false);
        let src = source(dir.path());
        check_source(&src).unwrap();
        assert_test_split(&src, 10);
        let [train, val, both] = train_splits(&src, 3);
        assert_eq!((train.len(), val.len()), (24, 6));
        assert_eq!([train, val].concat(), both);
        // A pool under 1000 is used whole: every class's 6 training images are drawn.
        for class in 0..5 {
            assert_eq!(both.iter().filter(|&&l| l == class).count(), 6);
        }
    }

    #[test]
    fn cifar_python_protocol4_and_5_with_str_names() {
        for protocol in [4, 5] {
            let dir = TempDir::new("cifar-py45");
            write_python_cifar(dir.path(), protocol, protocol == 5);
            let src = source(dir.path());
            assert_test_split(&src, 10);
            assert_eq!(train_splits(&src, 9), train_splits(&src, 9));
        }
    }

    #[test]
    fn cifar_python_train_pixels_follow_the_draw() {
        let dir = TempDir::new("cifar-pydraw");
        write_python_cifar(dir.path(), 2, false);
        let src = source(dir.path());
        let drawn = list_split(&src, Split::Train800val200, 11).unwrap();
        let order = sampling::pool_indices(30, Split::Train800val200, 11);
        for (ex, &i) in drawn.examples.iter().zip(&order) {
            assert_eq!(ex.label, (i % 5) as i64);
            let chw = load_image(&ex.image, 32).unwrap();
            assert_eq!(chw[PIXELS + 5], pixel(i, 1, 5));
        }
    }

    #[test]
    fn cifar_binary_800_200_split_and_determinism() {
        let dir = TempDir::new("cifar-bin");
        write_binary_cifar(dir.path(), 1200, 15);
        let src = source(dir.path());
        check_source(&src).unwrap();
        assert_test_split(&src, 15);
        let [train, val, both] = train_splits(&src, 5);
        assert_eq!((train.len(), val.len(), both.len()), (800, 200, 1000));
        let a = list_split(&src, Split::Train800val200, 5).unwrap();
        assert_eq!(a, list_split(&src, Split::Train800val200, 5).unwrap());
        assert_ne!(a, list_split(&src, Split::Train800val200, 6).unwrap());
        // Train examples share one compact buffer of the 1000 drawn images.
        let ImageRef::Rgb { data, .. } = &a.examples[0].image else {
            panic!("CIFAR examples are in memory")
        };
        assert_eq!(data.len(), 1000 * IMAGE_BYTES);
    }

    /// The recorded subset: a seeded draw from the official train split (members are the
    /// drawn train indices), the official test split whole.
    fn assert_cifar_subsets(src: &RealSource, n_train: usize, n_test: usize, seed: u64) {
        let both = list_split(src, Split::Train800val200, seed).unwrap();
        assert_eq!(
            both.definition,
            SubsetDefinition::SeededDraw {
                seed,
                pool: SourcePart::Cifar100Train,
                pool_size: n_train,
                drawn: n_train.min(1000),
            }
        );
        let want: Vec<String> = sampling::pool_indices(n_train, Split::Train800val200, seed)
            .iter()
            .map(|i| format!("train/{i}"))
            .collect();
        assert_eq!(both.members, want);
        let val = list_split(src, Split::Val200, seed).unwrap();
        assert_eq!(val.definition, both.definition);
        assert_eq!(val.members[..], want[want.len() - val.examples.len()..]);
        let test = list_split(src, Split::Test, seed).unwrap();
        assert_eq!(
            test.definition,
            SubsetDefinition::Whole {
                part: SourcePart::Cifar100Test
            }
        );
        let want: Vec<String> = (0..n_test).map(|i| format!("test/{i}")).collect();
        assert_eq!(test.members, want);
    }

    #[test]
    fn cifar_binary_records_its_subset() {
        let dir = TempDir::new("cifar-bin-subset");
        write_binary_cifar(dir.path(), 1200, 15);
        assert_cifar_subsets(&source(dir.path()), 1200, 15, 5);
    }

    #[test]
    fn cifar_python_records_its_subset() {
        let dir = TempDir::new("cifar-py-subset");
        write_python_cifar(dir.path(), 4, false);
        assert_cifar_subsets(&source(dir.path()), 30, 10, 2);
    }

    #[test]
    fn cifar_binary_in_parent_folder_and_fingerprint() {
        let dir = TempDir::new("cifar-parent");
        let inner = dir.path().join("cifar-100-binary");
        std::fs::create_dir_all(&inner).unwrap();
        write_binary_cifar(&inner, 20, 5);
        let src = source(dir.path());
        assert_test_split(&src, 5);
        let fp = fingerprint(&src).unwrap();
        assert_eq!(fp, fingerprint(&src).unwrap());
        let mut test = std::fs::read(inner.join("test.bin")).unwrap();
        test.extend(std::iter::repeat_n(1, RECORD_BYTES));
        std::fs::write(inner.join("test.bin"), test).unwrap();
        assert_ne!(fp, fingerprint(&src).unwrap());
    }

    #[test]
    fn cifar_bad_files_are_errors_naming_the_file() {
        let dir = TempDir::new("cifar-bad");
        write_binary_cifar(dir.path(), 10, 5);
        std::fs::write(dir.path().join("test.bin"), [0u8; 100]).unwrap();
        let src = source(dir.path());
        let msg = check_source(&src).unwrap_err().to_string();
        assert!(msg.contains("test.bin"), "{msg}");
        let msg = list_split(&src, Split::Test, 0).unwrap_err().to_string();
        assert!(msg.contains("test.bin") && msg.contains("3074"), "{msg}");

        let py = TempDir::new("cifar-badpy");
        for name in PY_FILES {
            std::fs::write(py.path().join(name), b"\x80\x02}q\x01(U\x04data").unwrap();
        }
        let msg = list_split(&source(py.path()), Split::Test, 0)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("meta") && msg.contains("truncated"), "{msg}");

        let empty = TempDir::new("cifar-empty");
        let msg = check_source(&source(empty.path())).unwrap_err().to_string();
        assert!(msg.contains("train.bin") && msg.contains("meta"), "{msg}");
    }
}
