//! Subset definitions: which examples of a source a prepared split holds, as a typed value that
//! prep records and report prints. Owns only the description; it must not read files or draw.
//!
//! Published VTAB-1k numbers use the community's fixed lists (`train800.txt`, `val200.txt`,
//! `train800val200.txt`, `test.txt`, as prepared by VPT / NOAH from TensorFlow Datasets'
//! order). Only a run trained on such a `train800val200.txt` and tested on the same layout's
//! `test.txt` is comparable with them ([`vtab1k_comparable`]); a seeded draw from a native
//! archive is VTAB-1k-sized, not VTAB-1k.
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::synthetic::Task;
use super::Split;

/// How many training examples an official VTAB-1k `train800val200.txt` lists.
pub const VTAB1K_TRAIN: usize = 1000;

/// A part of a source, in its listed order: the pool a draw comes from, or a test split taken
/// whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "part", rename_all = "kebab-case")]
pub enum Part {
    /// CIFAR-100's official `train` split, in file order.
    Cifar100Train,
    /// CIFAR-100's official `test` split, in file order.
    Cifar100Test,
    /// DTD's `labels/train<fold>.txt` followed by `labels/val<fold>.txt`.
    DtdFoldTrainval { fold: u32 },
    /// DTD's `labels/test<fold>.txt`.
    DtdFoldTest { fold: u32 },
    /// What each class folder keeps after the fixed per-class hold-out (EuroSAT, ImageFolder).
    HoldoutRest { percent: u32 },
    /// The fixed per-class hold-out: `percent` of each class folder (EuroSAT, ImageFolder).
    Holdout { percent: u32 },
    /// The rows of a CSV list (`file` as named in the suite, relative to root).
    CsvRows { file: String },
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Cifar100Train => f.write_str("cifar100 official train"),
            Part::Cifar100Test => f.write_str("cifar100 official test"),
            Part::DtdFoldTrainval { fold } => write!(f, "dtd-fold {fold} train+val"),
            Part::DtdFoldTest { fold } => write!(f, "dtd-fold {fold} test"),
            Part::HoldoutRest { percent } => write!(f, "remainder of holdout-{percent}% per class"),
            Part::Holdout { percent } => write!(f, "holdout-{percent}% per class"),
            Part::CsvRows { file } => write!(f, "csv {file}"),
        }
    }
}

/// Which examples a prepared split holds (together with the split and the member digest of a
/// [`SubsetRecord`], it says exactly which).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SubsetDefinition {
    /// One list of a VTAB-1k layout, as listed. `digests` maps each of the layout's four list
    /// files to its blake3 (hex), so two layouts can be told apart.
    Vtab1kLists {
        list: String,
        digests: BTreeMap<String, String>,
    },
    /// The first `drawn` (= min(1000, `pool_size`)) positions of the seeded partial
    /// Fisher-Yates shuffle of `pool` (`datasets/sampling.rs`); train800 is the first 80 % of
    /// them, val200 the rest.
    SeededDraw {
        seed: u64,
        pool: Part,
        pool_size: usize,
        drawn: usize,
    },
    /// A part taken whole, in its listed order (the test split of formats without VTAB-1k
    /// lists).
    Whole { part: Part },
    /// Procedural examples `first..first + count` of the synthetic stream seeded `stream_seed`.
    Synthetic {
        task: Task,
        stream_seed: u64,
        first: u64,
        count: u64,
    },
}

/// The first 12 hex digits of a digest, for people.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

impl fmt::Display for SubsetDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubsetDefinition::Vtab1kLists { list, digests } => {
                let digest = digests.get(list).map_or("?", |d| short(d));
                write!(f, "vtab1k-lists {list} (blake3 {digest})")
            }
            SubsetDefinition::SeededDraw {
                seed,
                pool,
                pool_size,
                drawn,
            } => write!(
                f,
                "seeded-draw seed {seed}: {drawn} of {pool_size} ({pool})"
            ),
            SubsetDefinition::Whole { part } => write!(f, "{part}"),
            SubsetDefinition::Synthetic {
                task,
                stream_seed,
                first,
                count,
            } => write!(
                f,
                "synthetic {} stream {stream_seed} #{first}..{}",
                format!("{task:?}").to_lowercase(),
                first + count
            ),
        }
    }
}

/// What a prep node records about its split (`subset.json`); `members.txt` beside it lists the
/// members, one id per line in prepared order: the image path relative to the dataset root, or
/// `train/<index>` / `test/<index>` for CIFAR-100, or `<stream seed>/<index>` for synthetic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubsetRecord {
    pub split: Split,
    pub definition: SubsetDefinition,
    pub count: usize,
    /// blake3 (hex) of `members.txt`.
    pub members_blake3: String,
}

/// The text of `members.txt`: each id followed by a newline.
pub fn members_text(members: &[String]) -> String {
    let mut s = String::with_capacity(members.iter().map(|m| m.len() + 1).sum());
    for m in members {
        s.push_str(m);
        s.push('\n');
    }
    s
}

impl SubsetRecord {
    pub fn new(split: Split, definition: SubsetDefinition, members: &[String]) -> Self {
        SubsetRecord {
            split,
            definition,
            count: members.len(),
            members_blake3: blake3::hash(members_text(members).as_bytes())
                .to_hex()
                .to_string(),
        }
    }
}

impl fmt::Display for SubsetRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let split = match self.split {
            Split::Train800 => "train800",
            Split::Val200 => "val200",
            Split::Train800val200 => "train800val200",
            Split::Test => "test",
        };
        write!(
            f,
            "{}, {split}: {} examples (members blake3 {})",
            self.definition,
            self.count,
            short(&self.members_blake3)
        )
    }
}

/// Whether numbers from training on `train` and testing on `eval` are comparable with published
/// VTAB-1k results: `train` is a layout's `train800val200.txt` with its 1000 examples and
/// `eval` is the `test.txt` of the same layout (same list digests). Anything else (a seeded
/// draw, a hold-out, train800 / val200 alone, synthetic data) is not.
pub fn vtab1k_comparable(train: &SubsetRecord, eval: &SubsetRecord) -> bool {
    match (&train.definition, &eval.definition) {
        (
            SubsetDefinition::Vtab1kLists {
                list: train_list,
                digests: train_digests,
            },
            SubsetDefinition::Vtab1kLists {
                list: eval_list,
                digests: eval_digests,
            },
        ) => {
            train_list == "train800val200.txt"
                && eval_list == "test.txt"
                && train.count == VTAB1K_TRAIN
                && eval.count > 0
                && train_digests == eval_digests
        }
        _ => false,
    }
}

/// For tests: the definition of official VTAB-1k lists `list`, each list file's digest made
/// from its name.
#[cfg(test)]
pub(crate) fn fake_lists(list: &str) -> SubsetDefinition {
    let digests = [
        "train800.txt",
        "val200.txt",
        "train800val200.txt",
        "test.txt",
    ]
    .iter()
    .map(|f| {
        (
            f.to_string(),
            blake3::hash(f.as_bytes()).to_hex().to_string(),
        )
    })
    .collect();
    SubsetDefinition::Vtab1kLists {
        list: list.into(),
        digests,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::fake_lists as lists;

    fn members(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}/{i}.jpg")).collect()
    }

    #[test]
    fn only_official_train800val200_with_its_test_is_comparable() {
        let train = SubsetRecord::new(
            Split::Train800val200,
            lists("train800val200.txt"),
            &members("train", 1000),
        );
        let test = SubsetRecord::new(Split::Test, lists("test.txt"), &members("test", 500));
        assert!(vtab1k_comparable(&train, &test));

        // train800 alone, or val200 as the eval set: not the published protocol.
        let train800 =
            SubsetRecord::new(Split::Train800, lists("train800.txt"), &members("t", 800));
        let val200 = SubsetRecord::new(Split::Val200, lists("val200.txt"), &members("v", 200));
        assert!(!vtab1k_comparable(&train800, &test));
        assert!(!vtab1k_comparable(&train, &val200));
        // A layout whose train800val200 does not hold 1000 examples is not the official one.
        let short_train = SubsetRecord::new(
            Split::Train800val200,
            lists("train800val200.txt"),
            &members("train", 10),
        );
        assert!(!vtab1k_comparable(&short_train, &test));
        // Train and test from two different layouts.
        let mut other = test.clone();
        if let SubsetDefinition::Vtab1kLists { digests, .. } = &mut other.definition {
            digests.insert("test.txt".into(), "f".repeat(64));
        }
        assert!(!vtab1k_comparable(&train, &other));

        // A VTAB-1k-sized draw from a native archive is not comparable.
        let draw = SubsetRecord::new(
            Split::Train800val200,
            SubsetDefinition::SeededDraw {
                seed: 0,
                pool: Part::Cifar100Train,
                pool_size: 50_000,
                drawn: 1000,
            },
            &members("train", 1000),
        );
        let official_test = SubsetRecord::new(
            Split::Test,
            SubsetDefinition::Whole {
                part: Part::Cifar100Test,
            },
            &members("test", 10_000),
        );
        assert!(!vtab1k_comparable(&draw, &official_test));
        assert!(!vtab1k_comparable(&draw, &test));
        assert!(!vtab1k_comparable(&train, &official_test));
    }

    #[test]
    fn definitions_serialise_with_kind_tags_and_read_back() {
        let defs = [
            lists("test.txt"),
            SubsetDefinition::SeededDraw {
                seed: 3,
                pool: Part::DtdFoldTrainval { fold: 1 },
                pool_size: 3760,
                drawn: 1000,
            },
            SubsetDefinition::Whole {
                part: Part::Holdout { percent: 20 },
            },
            SubsetDefinition::Whole {
                part: Part::CsvRows {
                    file: "lists/test.csv".into(),
                },
            },
            SubsetDefinition::Synthetic {
                task: Task::Shape,
                stream_seed: 1,
                first: 800,
                count: 200,
            },
        ];
        for def in defs {
            let json = serde_json::to_string(&def).unwrap();
            let back: SubsetDefinition = serde_json::from_str(&json).unwrap();
            assert_eq!(back, def, "{json}");
        }
        let json = serde_json::to_value(SubsetDefinition::SeededDraw {
            seed: 3,
            pool: Part::DtdFoldTrainval { fold: 1 },
            pool_size: 3760,
            drawn: 1000,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "seeded-draw", "seed": 3, "pool_size": 3760,
                "drawn": 1000, "pool": {"part": "dtd-fold-trainval", "fold": 1}})
        );
    }

    #[test]
    fn display_names_the_definition_as_the_issue_does() {
        let draw = SubsetDefinition::SeededDraw {
            seed: 0,
            pool: Part::DtdFoldTrainval { fold: 1 },
            pool_size: 3760,
            drawn: 1000,
        };
        assert_eq!(
            draw.to_string(),
            "seeded-draw seed 0: 1000 of 3760 (dtd-fold 1 train+val)"
        );
        let holdout = SubsetDefinition::Whole {
            part: Part::Holdout { percent: 20 },
        };
        assert_eq!(holdout.to_string(), "holdout-20% per class");
        let l = lists("train800val200.txt");
        assert_eq!(
            l.to_string(),
            format!(
                "vtab1k-lists train800val200.txt (blake3 {})",
                &blake3::hash(b"train800val200.txt").to_hex()[..12]
            )
        );
        let synth = SubsetDefinition::Synthetic {
            task: Task::Count,
            stream_seed: 1,
            first: 800,
            count: 200,
        };
        assert_eq!(synth.to_string(), "synthetic count stream 1 #800..1000");
        let rec = SubsetRecord::new(Split::Test, holdout, &["a/1.jpg".into(), "b/2.jpg".into()]);
        assert_eq!(
            rec.members_blake3,
            blake3::hash(b"a/1.jpg\nb/2.jpg\n").to_hex().to_string()
        );
        assert!(rec
            .to_string()
            .starts_with("holdout-20% per class, test: 2 examples (members blake3 "));
    }
}
