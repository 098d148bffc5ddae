//! The bodies of the fuzz targets: `fuzz/fuzz_targets/<name>.rs` calls [`run`] under libFuzzer
//! (`./x fuzz`), and `orchestrator/tests/fuzz_regressions.rs` replays every input kept in
//! `fuzz/regressions/<name>/` through the same function in the normal test suite. Each body
//! feeds the bytes to one parser of third-party input, returns the errors it gave (which the
//! replay checks against what a kept input must be refused with), and panics only where that
//! parser broke its promise (a panic, an abort, or for archives a file outside its folder).
//! Owns only a scratch folder of its own; the product never calls it.
use crate::datasets;
use crate::fetch::{unpack, ArchiveKind, UnpackLimits};
use crate::sched::slurm::poll;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A target's body: the bytes libFuzzer made -> the errors the parsers gave, in order (none:
/// every step accepted the input).
pub type Body = fn(&[u8]) -> Vec<String>;

/// Every target: its name (the file in fuzz/fuzz_targets/ and the folder of its seeds and
/// regressions) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("pickle", pickle),
    ("vtab1k_list", vtab1k_list),
    ("csv_list", csv_list),
    ("image", image),
    ("safetensors", safetensors),
    ("peft_config", peft_config),
    ("suite", suite),
    ("tar", tar),
    ("zip", zip),
    ("slurm", slurm),
];

/// Runs target `name` on `data`: the errors its parsers gave; None if there is no such target.
pub fn run(name: &str, data: &[u8]) -> Option<Vec<String>> {
    // libFuzzer's panic hook aborts at once: a panic of the image decoder, which
    // `datasets::decode` catches and reports as a bad file, must reach that catch.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let outer = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !crate::datasets::decode::decoding() {
                outer(info)
            }
        }));
    });
    let (_, body) = TARGETS.iter().find(|(n, _)| *n == name)?;
    Some(body(data))
}

/// The error messages of `results`, in order.
fn errors<E: std::fmt::Display>(results: impl IntoIterator<Item = Result<(), E>>) -> Vec<String> {
    results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect()
}

/// A CIFAR-100 python pickle, read both as a `train`/`test` part and as `meta`.
fn pickle(data: &[u8]) -> Vec<String> {
    let path = Path::new("cifar-100-python/train");
    errors([
        datasets::parse_python_part(data, path).map(drop),
        datasets::parse_python_names(data, path).map(drop),
    ])
}

/// A VTAB-1k list (`<image path> <label>` lines), paths checked against a root.
fn vtab1k_list(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let root = Path::new("/data/vtab-1k/dtd");
    errors([datasets::parse_vtab1k_list(&text, root, Path::new("train800.txt")).map(drop)])
}

/// A CSV list (`path,label` rows), then every row's path and label as the reader takes them.
fn csv_list(data: &[u8]) -> Vec<String> {
    match datasets::parse_csv_records(data, Path::new("train.csv")) {
        Err(e) => vec![e.to_string()],
        Ok(records) => errors(records.iter().flat_map(|r| {
            [
                datasets::listed::inside_root(Path::new("/data/csv"), &r.path).map(drop),
                datasets::listed::class_index(&r.label).map(drop),
            ]
        })),
    }
}

/// An image file (JPEG, PNG or TIFF) decoded within the limits.
fn image(data: &[u8]) -> Vec<String> {
    errors([datasets::decode_bytes(data, Path::new("image")).map(drop)])
}

/// A safetensors file: the header checked, then the tensors read through that check.
fn safetensors(data: &[u8]) -> Vec<String> {
    use kernels::safetensors_file::{check_header, tensors_from_bytes};
    let path = Path::new("model.safetensors");
    errors([
        check_header(data, data.len() as u64, path).map(drop),
        tensors_from_bytes(data, path).map(drop),
    ])
}

/// A peft `adapter_config.json`, for a 12-block ViT.
fn peft_config(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("adapter_config.json");
    errors([kernels::peft_import::parse_peft_config(&text, 12, path).map(drop)])
}

/// A suite file, with no environment overrides; the paths it names do not exist.
fn suite(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/fuzz/suite.toml");
    errors([crate::suite::parse_str(&text, path, &[], Vec::new()).map(drop)])
}

/// A tar archive (gzip-compressed here, so the fuzzer mutates the tar itself).
fn tar(data: &[u8]) -> Vec<String> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).expect("gzip to memory");
    unpack_contained(&gz.finish().expect("gzip to memory"), ArchiveKind::TarGz)
}

fn zip(data: &[u8]) -> Vec<String> {
    unpack_contained(data, ArchiveKind::Zip)
}

/// What Slurm's tools print: sbatch's job id, squeue's pairs, sacct's `|` records, states.
/// (These parsers have no errors: an unreadable line is skipped, an unreadable code unknown.)
fn slurm(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let _ = poll::parse_job_id(&text);
    let _ = poll::parse_pairs(&text);
    let _ = poll::parse_listed(&text);
    let _ = poll::split_id(&text);
    let _ = crate::sched::slurm::parse_comment(&text);
    let _ = poll::parse_sacct(&text);
    for line in text.lines() {
        let _ = poll::phase(line);
    }
    Vec::new()
}

/// A folder of this process's own under /dev/shm (memory, not disk), or the temp dir.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("vtab-orch-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

/// Folders between the scratch folder and `case/`: an entry that climbs out of its folder
/// (the link chain went three levels up) lands in one of them, where it is seen.
const DEPTH: [&str; 8] = ["1", "2", "3", "4", "5", "6", "7", "8"];

/// Unpacks `bytes` in a fresh `case/` folder eight levels below the scratch folder and panics
/// on anything an archive must never produce: a file beside `case/stage` or in any folder
/// above it, a link or special file inside it, or a staging folder left after an error.
fn unpack_contained(bytes: &[u8], kind: ArchiveKind) -> Vec<String> {
    let deep = DEPTH.iter().fold(scratch().to_path_buf(), |p, d| p.join(d));
    let case = deep.join("case");
    let _ = std::fs::remove_dir_all(&case);
    std::fs::create_dir_all(&case).expect("case folder");
    let archive = case.join("archive");
    std::fs::write(&archive, bytes).expect("archive file");
    let stage = case.join("stage");
    // Small limits: inputs are small, and the fuzzer should reach them.
    let limits = UnpackLimits {
        max_bytes: 64 << 20,
        max_entries: 10_000,
        max_ratio: 100,
    };
    let result = unpack(&archive, kind, &stage, &limits);
    let mut top: Vec<String> = std::fs::read_dir(&case)
        .expect("case folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    match &result {
        Ok(()) => {
            assert_eq!(
                top,
                ["archive", "stage"],
                "an unpack wrote beside its folder"
            );
            only_files_and_folders(&stage);
        }
        Err(e) => {
            assert_eq!(top, ["archive"], "a failed unpack left files behind: {e}");
        }
    }
    // Each folder above `case/` holds exactly the next one down.
    let mut dir = scratch().to_path_buf();
    for next in DEPTH.iter().copied().chain(["case"]) {
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("scratch")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [next], "an unpack wrote into {}", dir.display());
        dir = dir.join(next);
    }
    errors([result])
}

/// Removes this process's scratch folder (the replay test calls it when done).
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch());
}

fn only_files_and_folders(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("unpacked folder") {
        let e = e.expect("entry");
        let t = e.file_type().expect("file type");
        assert!(
            t.is_file() || t.is_dir(),
            "{} is neither a file nor a folder",
            e.path().display()
        );
        if t.is_dir() {
            only_files_and_folders(&e.path());
        }
    }
}
