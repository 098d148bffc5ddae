//! Which examples each dataset's runs trained and were tested on, and whether that makes them
//! comparable with published VTAB-1k numbers. Reads `RunRecord`s only, never the store.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::RunRecord;
use crate::datasets::subset::{vtab1k_comparable, SubsetRecord, VTAB1K_TRAIN};
use crate::datasets::SubsetDefinition;

/// The subsets of one run: what its train node trained on and what its eval node tested on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSubsets {
    pub train: SubsetRecord,
    pub eval: SubsetRecord,
}

impl DataSubsets {
    /// Trained on a VTAB-1k layout's `train800val200.txt` and tested on its `test.txt`.
    pub fn vtab1k_comparable(&self) -> bool {
        vtab1k_comparable(&self.train, &self.eval)
    }

    /// A 1000-example seeded draw from a native archive: VTAB-1k-sized, not VTAB-1k.
    fn vtab1k_sized_draw(&self) -> bool {
        matches!(self.train.definition, SubsetDefinition::SeededDraw { .. })
            && self.train.count == VTAB1K_TRAIN
    }
}

/// Whether a record is comparable with published VTAB-1k (false when its subsets are unknown).
pub(crate) fn record_comparable(r: &RunRecord) -> bool {
    r.subsets
        .as_ref()
        .is_some_and(DataSubsets::vtab1k_comparable)
}

/// Per dataset: comparable with published VTAB-1k only if every one of its records is.
pub fn comparable_datasets(records: &[RunRecord]) -> BTreeMap<&str, bool> {
    let mut out: BTreeMap<&str, bool> = BTreeMap::new();
    for r in records {
        let ok = record_comparable(r);
        out.entry(r.dataset.as_str())
            .and_modify(|all| *all &= ok)
            .or_insert(ok);
    }
    out
}

/// The summary columns of a record: train subset, eval subset, comparable (`true`/`false`).
pub(crate) fn summary_cells(r: &RunRecord) -> [String; 3] {
    match &r.subsets {
        Some(s) => [
            s.train.to_string(),
            s.eval.to_string(),
            s.vtab1k_comparable().to_string(),
        ],
        None => [String::new(), String::new(), "false".into()],
    }
}

fn verdict(s: Option<&DataSubsets>) -> &'static str {
    match s {
        Some(s) if s.vtab1k_comparable() => {
            "**comparable with published VTAB-1k** (official lists)"
        }
        Some(s) if s.vtab1k_sized_draw() => {
            "VTAB-1k-sized draw, **not comparable with published VTAB-1k**"
        }
        Some(_) => "**not comparable with published VTAB-1k**",
        None => {
            "subsets not recorded (no subset.json in the prep entries), **not comparable with \
             published VTAB-1k**"
        }
    }
}

/// The Markdown notes under the table: one line per dataset and distinct pair of subsets
/// (several when, say, `sample_seed` differs between runs of one dataset).
pub(crate) fn markdown_notes(records: &[RunRecord]) -> String {
    let mut by_ds: BTreeMap<&str, Vec<(Option<&DataSubsets>, usize)>> = BTreeMap::new();
    for r in records {
        let seen = by_ds.entry(r.dataset.as_str()).or_default();
        match seen.iter_mut().find(|(s, _)| *s == r.subsets.as_ref()) {
            Some((_, n)) => *n += 1,
            None => seen.push((r.subsets.as_ref(), 1)),
        }
    }
    let mut s = String::from(
        "Subsets (what each dataset's runs trained and were tested on; only the official \
         VTAB-1k lists give numbers comparable with published VTAB-1k):\n",
    );
    for (ds, pairs) in by_ds {
        for (subsets, n) in &pairs {
            let runs = match (pairs.len(), n) {
                (1, _) => String::new(),
                (_, 1) => " (1 run)".into(),
                (_, n) => format!(" ({n} runs)"),
            };
            let what = match subsets {
                Some(x) => format!(" Train {}; test {}.", x.train, x.eval),
                None => String::new(),
            };
            s.push_str(&format!("- `{ds}`{runs}: {}.{what}\n", verdict(*subsets)));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::csv_out::summary_rows;
    use super::super::tests::{records, subsets_of};
    use super::super::{build_table, render, Format};
    use super::*;

    #[test]
    fn summary_marks_only_the_official_lists_comparable() {
        let rows = summary_rows(&records(), &build_table(&records()));
        let col = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
        let (ds, train, eval, cmp) = (
            col("dataset"),
            col("train_subset"),
            col("eval_subset"),
            col("vtab1k_comparable"),
        );
        for row in &rows[1..] {
            let want = row[ds] == "cifar100";
            assert_eq!(row[cmp], want.to_string(), "{row:?}");
            match row[ds].as_str() {
                "cifar100" => {
                    assert!(row[train].starts_with("vtab1k-lists train800val200.txt (blake3 "));
                    assert!(row[train].contains("train800val200: 1000 examples"));
                    assert!(row[eval].starts_with("vtab1k-lists test.txt"));
                }
                "dtd" => {
                    assert!(row[train].starts_with(
                        "seeded-draw seed 0: 1000 of 3760 (dtd-fold 1 train+val), train800val200"
                    ));
                    assert!(row[eval].starts_with("dtd-fold 1 test, test: 1880 examples"));
                }
                _ => assert_eq!((row[train].as_str(), row[eval].as_str()), ("", "")),
            }
        }
        assert_eq!(
            comparable_datasets(&records())
                .into_iter()
                .collect::<Vec<_>>(),
            [("cifar100", true), ("dtd", false), ("flowers102", false)]
        );
        // One non-comparable run makes its dataset non-comparable.
        let mut recs = records();
        let r = recs.iter_mut().find(|r| r.dataset == "cifar100").unwrap();
        r.subsets = subsets_of("dtd");
        assert!(!comparable_datasets(&recs)["cifar100"]);
    }

    #[test]
    fn markdown_says_which_subsets_each_dataset_used() {
        let md = render(&build_table(&records()), &records(), Format::Md);
        let line = |ds: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("- `{ds}`")))
                .unwrap_or_else(|| panic!("no line for {ds}:\n{md}"))
                .to_string()
        };
        assert!(line("cifar100").contains("**comparable with published VTAB-1k**"));
        assert!(line("dtd").contains("VTAB-1k-sized draw, **not comparable"));
        assert!(line("dtd").contains("seeded-draw seed 0: 1000 of 3760"));
        assert!(line("flowers102").contains("subsets not recorded"));
        // Two distinct subsets of one dataset get a line each, with their run counts.
        let mut recs = records();
        for r in recs
            .iter_mut()
            .filter(|r| r.dataset == "dtd" && r.seed == 1)
        {
            if let Some(s) = &mut r.subsets {
                s.train.members_blake3 = "0".repeat(64);
            }
        }
        let md = render(&build_table(&recs), &recs, Format::Md);
        assert_eq!(md.lines().filter(|l| l.starts_with("- `dtd`")).count(), 2);
        assert!(
            md.contains("- `dtd` (1 run)") && md.contains("- `dtd` (5 runs)"),
            "{md}"
        );
    }
}
