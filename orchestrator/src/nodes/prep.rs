//! prep: a dataset split decoded, resized (bicubic) and stored as uint8 [N,3,H,W] chunks
//! with int64 labels (safetensors), the class names, and which examples these are
//! (`subset.json` + `members.txt`). Decoding is parallel (rayon) and chunked, so a large test
//! split never sits in memory whole.
use super::{io_err, write_json, NodeError, Result};
use crate::datasets::subset::members_text;
use crate::datasets::synthetic::{self, Task};
use crate::datasets::{
    self, DigestCache, SourceFingerprint, Split, SubsetDefinition, SubsetRecord,
};
use crate::graph::PrepNode;
use crate::suite::Source;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Tensor;

/// Images per chunk file (at 224 px, 2048 images are 308 MB of uint8).
pub const CHUNK: usize = 2048;
pub const CLASSES: &str = "classes.json";
/// A real source's content fingerprint with its per-file digests (`plan` diffs it).
pub const SOURCE: &str = "source.json";
/// The split's [`SubsetRecord`] (how its examples were chosen, how many, their digest).
pub const SUBSET: &str = "subset.json";
/// One example id per line, in prepared order (its blake3 is the record's `members_blake3`).
pub const MEMBERS: &str = "members.txt";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepInfo {
    pub class_names: Vec<String>,
    pub count: usize,
    pub per_class: Vec<usize>,
    pub img_size: i64,
    pub chunks: Vec<String>,
}

/// Seeds of the synthetic train and test streams (fixed: they define the benchmark).
const SYNTH_TRAIN_SEED: u64 = 1;
const SYNTH_TEST_SEED: u64 = 2;

enum Item {
    Synthetic(Task, u64, u64),
    Real(datasets::Example),
}

/// Prepares `p` into `out`. `digests` is the store's cache of file content digests (see
/// `load::file_digests`): a real source is fingerprinted again against the plan before and
/// after decoding, reading only files whose size or mtime changed.
pub fn run(p: &PrepNode, out: &Path, digests: &Path) -> Result<PrepInfo> {
    let size = p.img_size as u32;
    let mut cache = DigestCache::load(digests);
    let planned = match &p.source {
        Source::Real(r) => Some(unchanged_since_planned(p, r, &mut cache)?),
        Source::Synthetic { .. } => None,
    };
    let Listed {
        items,
        class_names,
        definition,
        members,
    } = list_items(p)?;
    if items.is_empty() {
        return Err(NodeError::Failed(format!(
            "{}: the split is empty",
            p.dataset
        )));
    }
    let mut per_class = vec![0usize; class_names.len()];
    let mut chunks = Vec::new();
    let total = items.len();
    // Every unreadable file of the split, found in one pass (not one per run).
    let mut bad: Vec<String> = Vec::new();
    for (ci, chunk) in items.chunks(CHUNK).enumerate() {
        let results: Vec<std::result::Result<(Vec<u8>, i64), datasets::DatasetError>> = chunk
            .par_iter()
            .map(|it| match it {
                Item::Synthetic(task, seed, i) => Ok(synthetic::example(*task, size, *seed, *i)),
                Item::Real(e) => datasets::load_image(&e.image, size).map(|px| (px, e.label)),
            })
            .collect();
        let (ok, errors): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
        bad.extend(
            errors
                .into_iter()
                .filter_map(|e| e.err())
                .map(|e| e.to_string()),
        );
        if !bad.is_empty() {
            // Keep checking the rest; nothing more is written.
            continue;
        }
        let decoded: Vec<(Vec<u8>, i64)> = ok.into_iter().filter_map(|r| r.ok()).collect();
        let mut pixels = Vec::with_capacity(decoded.len() * 3 * (size * size) as usize);
        let mut labels = Vec::with_capacity(decoded.len());
        for (px, l) in decoded {
            let slot = per_class.get_mut(l as usize).ok_or_else(|| {
                NodeError::Failed(format!(
                    "{}: label {l} outside the {} classes",
                    p.dataset,
                    class_names.len()
                ))
            })?;
            *slot += 1;
            pixels.extend_from_slice(&px);
            labels.push(l);
        }
        let n = labels.len() as i64;
        let images = Tensor::from_slice(&pixels).reshape([n, 3, p.img_size, p.img_size]);
        let name = format!("images-{ci:05}.safetensors");
        let path = out.join(&name);
        Tensor::write_safetensors(
            &[("images", images), ("labels", Tensor::from_slice(&labels))],
            &path,
        )
        .map_err(NodeError::Torch)?;
        chunks.push(name);
        super::progress(serde_json::json!({"done": (ci * CHUNK + chunk.len()), "total": total}));
    }
    if !bad.is_empty() {
        return Err(NodeError::Failed(unreadable(&p.dataset, &bad)));
    }
    // Files replaced while they were decoded must not be stored under the planned key either.
    if let (Source::Real(r), Some(planned)) = (&p.source, &planned) {
        unchanged_since_planned(p, r, &mut cache)?;
        write_json(&out.join(SOURCE), planned)?;
    }
    let _ = cache.save(digests);
    let info = PrepInfo {
        class_names,
        count: total,
        per_class,
        img_size: p.img_size,
        chunks,
    };
    write_records(out, p.split, info, definition, &members)
}

/// A train800 or val200 split cut from the stored train800val200 entry `whole` (the view of
/// `p.view_of`): the split is listed as usual, and each example's pixels and label are the
/// rows of `whole` with the same example id, so no image is decoded twice. Writes the same
/// files as [`run`].
pub fn run_view(p: &PrepNode, whole: &Path, out: &Path) -> Result<PrepInfo> {
    let Listed {
        class_names,
        definition,
        members,
        ..
    } = list_items(p)?;
    let whole_members = std::fs::read_to_string(whole.join(MEMBERS)).map_err(io_err(whole))?;
    let row: std::collections::HashMap<&str, i64> = whole_members
        .lines()
        .enumerate()
        .map(|(i, m)| (m, i as i64))
        .collect();
    let rows = members
        .iter()
        .map(|m| {
            row.get(m.as_str()).copied().ok_or_else(|| {
                NodeError::Failed(format!(
                    "{}: example `{m}` of {} is not in the train800val200 entry {}",
                    p.dataset,
                    format!("{:?}", p.split).to_lowercase(),
                    whole.display()
                ))
            })
        })
        .collect::<Result<Vec<i64>>>()?;
    let (images, labels, whole_info) = load_all(whole)?;
    if whole_info.class_names != class_names || whole_info.img_size != p.img_size {
        return Err(NodeError::Failed(format!(
            "{}: the train800val200 entry {} has other classes or image size",
            p.dataset,
            whole.display()
        )));
    }
    let index = Tensor::from_slice(&rows);
    let (images, labels) = (
        images.index_select(0, &index),
        labels.index_select(0, &index),
    );
    let label_list: Vec<i64> = Vec::try_from(&labels)?;
    let mut per_class = vec![0usize; class_names.len()];
    for l in &label_list {
        per_class[*l as usize] += 1;
    }
    let mut chunks = Vec::new();
    let n = rows.len() as i64;
    for (ci, start) in (0..n).step_by(CHUNK).enumerate() {
        let len = (CHUNK as i64).min(n - start);
        let name = format!("images-{ci:05}.safetensors");
        Tensor::write_safetensors(
            &[
                ("images", images.narrow(0, start, len)),
                ("labels", labels.narrow(0, start, len)),
            ],
            out.join(&name),
        )
        .map_err(NodeError::Torch)?;
        chunks.push(name);
    }
    let info = PrepInfo {
        class_names,
        count: rows.len(),
        per_class,
        img_size: p.img_size,
        chunks,
    };
    write_records(out, p.split, info, definition, &members)
}

/// The records every prep entry carries beside its chunks: `classes.json` (the info),
/// `subset.json` (how its examples were chosen) and `members.txt` (which ones).
fn write_records(
    out: &Path,
    split: Split,
    info: PrepInfo,
    definition: SubsetDefinition,
    members: &[String],
) -> Result<PrepInfo> {
    write_json(&out.join(CLASSES), &info)?;
    write_json(
        &out.join(SUBSET),
        &SubsetRecord::new(split, definition, members),
    )?;
    let path = out.join(MEMBERS);
    std::fs::write(&path, members_text(members)).map_err(io_err(&path))?;
    Ok(info)
}

/// The key was made from the source's fingerprint at planning time; data changed since then
/// must not be stored under it (as build refuses changed weights). Returns the fingerprint.
fn unchanged_since_planned(
    p: &PrepNode,
    r: &datasets::RealSource,
    cache: &mut DigestCache,
) -> Result<SourceFingerprint> {
    let now = datasets::fingerprint_with(r, cache)?;
    if now.digest != p.source_digest {
        return Err(NodeError::Failed(format!(
            "{}: the dataset's files changed since the suite was planned (fingerprint {}, planned {}); run again",
            r.root.display(),
            now.digest,
            p.source_digest
        )));
    }
    Ok(now)
}

/// What `plan --check-data` finds in a real split before anything runs.
#[derive(Debug, Default)]
pub struct DataCheck {
    /// Every file that cannot be read or decoded, with why.
    pub unreadable: Vec<String>,
    /// Classes with no example in this split (e.g. too few images for the test hold-out).
    pub empty_classes: Vec<String>,
}

/// Lists the split of `p` and, with `decode`, decodes every image of it (in parallel),
/// writing nothing. Synthetic sources have nothing to check.
pub fn check_data(p: &PrepNode, decode: bool) -> Result<DataCheck> {
    let Source::Real(r) = &p.source else {
        return Ok(DataCheck::default());
    };
    let list = datasets::list_split(r, p.split, p.sample_seed)?;
    let mut seen = vec![0usize; list.class_names.len()];
    for e in &list.examples {
        if let Some(n) = seen.get_mut(e.label as usize) {
            *n += 1;
        }
    }
    let empty_classes = list
        .class_names
        .iter()
        .zip(&seen)
        .filter(|(_, n)| **n == 0)
        .map(|(c, _)| c.clone())
        .collect();
    let unreadable = if decode {
        let size = p.img_size as u32;
        let mut bad: Vec<String> = list
            .examples
            .par_iter()
            .filter_map(|e| datasets::load_image(&e.image, size).err())
            .map(|e| e.to_string())
            .collect();
        bad.sort();
        bad
    } else {
        Vec::new()
    };
    Ok(DataCheck {
        unreadable,
        empty_classes,
    })
}

/// One message listing every unreadable file of a split (the first 20 in full).
pub fn unreadable(dataset: &str, bad: &[String]) -> String {
    let mut msg = format!(
        "{dataset}: {} file(s) cannot be read; fix or remove them (`vtab-orch plan --check-data` lists them all before a run):",
        bad.len()
    );
    for b in bad.iter().take(20) {
        msg += &format!("\n  {b}");
    }
    if bad.len() > 20 {
        msg += &format!("\n  ... and {} more", bad.len() - 20);
    }
    msg
}

/// A split as listed, before decoding.
struct Listed {
    items: Vec<Item>,
    class_names: Vec<String>,
    definition: SubsetDefinition,
    /// One id per item (see [`MEMBERS`]).
    members: Vec<String>,
}

fn list_items(p: &PrepNode) -> Result<Listed> {
    Ok(match &p.source {
        Source::Synthetic { task, test_images } => {
            let (seed, range) = match p.split {
                Split::Train800val200 => (SYNTH_TRAIN_SEED, 0..1000),
                Split::Train800 => (SYNTH_TRAIN_SEED, 0..800),
                Split::Val200 => (SYNTH_TRAIN_SEED, 800..1000),
                Split::Test => (SYNTH_TEST_SEED, 0..*test_images),
            };
            let definition = SubsetDefinition::Synthetic {
                task: *task,
                stream_seed: seed,
                first: range.start,
                count: range.end - range.start,
            };
            Listed {
                members: range.clone().map(|i| format!("{seed}/{i}")).collect(),
                items: range.map(|i| Item::Synthetic(*task, seed, i)).collect(),
                class_names: task.class_names(),
                definition,
            }
        }
        Source::Real(r) => {
            let list = datasets::list_split(r, p.split, p.sample_seed)?;
            Listed {
                items: list.examples.into_iter().map(Item::Real).collect(),
                class_names: list.class_names,
                definition: list.definition,
                members: list.members,
            }
        }
    })
}

/// Reads a committed prep entry's subset record.
pub fn subset(dir: &Path) -> Result<SubsetRecord> {
    super::read_json(&dir.join(SUBSET))
}

/// Reads a committed prep entry's info.
pub fn info(dir: &Path) -> Result<PrepInfo> {
    super::read_json(&dir.join(CLASSES))
}

/// Loads one chunk: (uint8 images [n,3,H,W], int64 labels [n]).
pub fn load_chunk(dir: &Path, name: &str) -> Result<(Tensor, Tensor)> {
    let path = dir.join(name);
    // Through the checked reader: a damaged store entry is an error, not a libtorch abort.
    let mut t = kernels::safetensors_file::read_safetensors(&path)
        .map_err(|e| NodeError::Failed(e.to_string()))?;
    match (t.remove("images"), t.remove("labels")) {
        (Some(i), Some(l)) => Ok((i, l)),
        _ => Err(NodeError::Failed(format!(
            "{}: missing images/labels",
            path.display()
        ))),
    }
}

/// The whole split in memory (training splits are small: 1000 images).
pub fn load_all(dir: &Path) -> Result<(Tensor, Tensor, PrepInfo)> {
    let info = info(dir)?;
    let parts: Vec<(Tensor, Tensor)> = info
        .chunks
        .iter()
        .map(|c| load_chunk(dir, c))
        .collect::<Result<_>>()?;
    let images = Tensor::cat(&parts.iter().map(|p| &p.0).collect::<Vec<_>>(), 0);
    let labels = Tensor::cat(&parts.iter().map(|p| &p.1).collect::<Vec<_>>(), 0);
    Ok((images, labels, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::{Format, RealSource};

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vtab-prep-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn node(source: Source, split: Split) -> PrepNode {
        PrepNode {
            dataset: "d".into(),
            source,
            source_digest: String::new(),
            split,
            img_size: 8,
            sample_seed: 3,
            view_of: None,
        }
    }

    /// A train800 / val200 view cut from the train800val200 entry holds exactly what a
    /// separate decode of that split would (pixels, labels, classes, subset, members).
    #[test]
    fn a_view_equals_a_separate_decode_of_its_split() {
        let source = Source::Synthetic {
            task: Task::Shape,
            test_images: 5,
        };
        let whole = tmp("view-whole");
        run(
            &node(source.clone(), Split::Train800val200),
            &whole,
            &whole.join("d.json"),
        )
        .unwrap();
        for split in [Split::Train800, Split::Val200] {
            let (direct, view) = (tmp("view-direct"), tmp("view-cut"));
            let n = node(source.clone(), split);
            let a = run(&n, &direct, &direct.join("d.json")).unwrap();
            let b = run_view(
                &PrepNode {
                    view_of: Some("whole".into()),
                    ..n
                },
                &whole,
                &view,
            )
            .unwrap();
            assert_eq!(
                (a.count, &a.per_class, &a.class_names),
                (b.count, &b.per_class, &b.class_names)
            );
            let (ia, la, _) = load_all(&direct).unwrap();
            let (ib, lb, _) = load_all(&view).unwrap();
            assert!(ia.equal(&ib) && la.equal(&lb), "{split:?}");
            assert_eq!(subset(&direct).unwrap(), subset(&view).unwrap());
            for f in [MEMBERS, CLASSES] {
                assert_eq!(
                    std::fs::read(direct.join(f)).unwrap(),
                    std::fs::read(view.join(f)).unwrap(),
                    "{f}"
                );
            }
        }
    }

    #[test]
    fn synthetic_prep_records_its_stream_and_members() {
        let out = tmp("synth");
        let source = Source::Synthetic {
            task: Task::Count,
            test_images: 7,
        };
        let info = run(
            &node(source.clone(), Split::Test),
            &out,
            &out.join("d.json"),
        )
        .unwrap();
        assert_eq!(info.count, 7);
        let rec = subset(&out).unwrap();
        assert_eq!(
            rec.definition,
            SubsetDefinition::Synthetic {
                task: Task::Count,
                stream_seed: SYNTH_TEST_SEED,
                first: 0,
                count: 7,
            }
        );
        assert_eq!((rec.split, rec.count), (Split::Test, 7));
        let members = std::fs::read_to_string(out.join(MEMBERS)).unwrap();
        assert_eq!(members, "2/0\n2/1\n2/2\n2/3\n2/4\n2/5\n2/6\n");
        assert_eq!(
            rec.members_blake3,
            blake3::hash(members.as_bytes()).to_hex().to_string()
        );

        let val = tmp("synth-val");
        run(&node(source, Split::Val200), &val, &val.join("d.json")).unwrap();
        let rec = subset(&val).unwrap();
        assert_eq!(
            rec.definition,
            SubsetDefinition::Synthetic {
                task: Task::Count,
                stream_seed: SYNTH_TRAIN_SEED,
                first: 800,
                count: 200,
            }
        );
        let members = std::fs::read_to_string(val.join(MEMBERS)).unwrap();
        assert_eq!(members.lines().next(), Some("1/800"));
        for d in [out, val] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn real_prep_writes_the_readers_subset() {
        let root = tmp("real-root");
        for class in ["a", "b"] {
            for i in 0..5u8 {
                let p = root.join(format!("{class}/{i}.png"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                image::RgbImage::from_pixel(4, 4, image::Rgb([i * 40, 0, 0]))
                    .save(&p)
                    .unwrap();
            }
        }
        let src = RealSource {
            format: Format::Imagefolder,
            root: root.clone(),
            dtd_split: None,
            train_csv: None,
            test_csv: None,
        };
        let out = tmp("real-out");
        // Planned now: the node carries the files' fingerprint, as `plan` would make it.
        let planned = PrepNode {
            source_digest: datasets::fingerprint(&src).unwrap(),
            ..node(Source::Real(src.clone()), Split::Train800val200)
        };
        run(&planned, &out, &out.join("digests.json")).unwrap();
        let list = datasets::list_split(&src, Split::Train800val200, 3).unwrap();
        let rec = subset(&out).unwrap();
        assert_eq!(
            rec,
            SubsetRecord::new(Split::Train800val200, list.definition, &list.members)
        );
        assert_eq!(rec.count, 8);
        assert_eq!(
            std::fs::read_to_string(out.join(MEMBERS)).unwrap(),
            members_text(&list.members)
        );
        for d in [root, out] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}
