//! Published numbers beside ours: a reference CSV (`dataset,method,top1,source`) read and shown
//! only for datasets whose runs are comparable with published VTAB-1k. Must not read the store.
//!
//! The CSV has a header naming at least the columns `dataset`, `method`, `top1` (percent) and
//! `source` (other columns are ignored; lines starting with `#` are comments). `dataset` is
//! matched with our dataset names exactly, `method` with our method families (linear, bitfit,
//! ia3, vera, lora, full) case-insensitively.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::subsets::comparable_datasets;
use super::{md_escape, ReportError, RunRecord, Table};

/// One published number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceRow {
    pub dataset: String,
    pub method: String,
    pub top1: f64,
    pub source: String,
}

/// A reference table and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub path: PathBuf,
    pub rows: Vec<ReferenceRow>,
}

const COLUMNS: [&str; 4] = ["dataset", "method", "top1", "source"];

/// Reads and checks a reference CSV; every problem names the file and the line.
pub fn load_reference(path: &Path) -> Result<Reference, ReportError> {
    let bad = |problem: String| ReportError::Reference {
        path: path.to_path_buf(),
        problem,
    };
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| bad(e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let missing: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| !headers.iter().any(|h| h == *c))
        .collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "the header lacks the column(s) {} (it has: {})",
            missing.join(", "),
            headers.iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let mut rows: Vec<ReferenceRow> = Vec::new();
    for record in reader.deserialize::<ReferenceRow>() {
        let row = record.map_err(|e| bad(e.to_string()))?;
        let line = rows.len() + 1;
        if row.dataset.is_empty() || row.method.is_empty() || row.source.is_empty() {
            return Err(bad(format!(
                "data row {line}: dataset, method and source must not be empty"
            )));
        }
        if !(0.0..=100.0).contains(&row.top1) {
            return Err(bad(format!(
                "data row {line}: top1 {} is not a percentage (0 to 100)",
                row.top1
            )));
        }
        if rows
            .iter()
            .any(|r| r.dataset == row.dataset && r.method.eq_ignore_ascii_case(&row.method))
        {
            return Err(bad(format!(
                "data row {line}: a second number for {} {}",
                row.dataset, row.method
            )));
        }
        rows.push(row);
    }
    Ok(Reference {
        path: path.to_path_buf(),
        rows,
    })
}

/// One published number set beside ours, for a comparable dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub dataset: String,
    pub method: String,
    pub published: f64,
    pub source: String,
    /// Our best mean top-1 over the configurations of that method family on that dataset.
    pub ours: Option<f64>,
    /// The configuration that gave `ours`.
    pub ours_config: Option<String>,
}

/// The reference rows for datasets of `table` that are comparable with published VTAB-1k,
/// in the reference's order, each with our best configuration of that method family.
pub fn comparisons(table: &Table, records: &[RunRecord], reference: &Reference) -> Vec<Comparison> {
    let comparable = comparable_datasets(records);
    reference
        .rows
        .iter()
        .filter(|r| comparable.get(r.dataset.as_str()) == Some(&true))
        .map(|r| {
            let col = table.datasets.iter().position(|d| *d == r.dataset);
            let best = table
                .rows
                .iter()
                .filter(|row| row.method.eq_ignore_ascii_case(&r.method))
                .filter_map(|row| {
                    let cell = row.cells.get(col?)?.as_ref()?;
                    Some((cell.mean, row.config.clone()))
                })
                .max_by(|a, b| a.0.total_cmp(&b.0));
            Comparison {
                dataset: r.dataset.clone(),
                method: r.method.clone(),
                published: r.top1,
                source: r.source.clone(),
                ours: best.as_ref().map(|b| b.0),
                ours_config: best.map(|b| b.1),
            }
        })
        .collect()
}

/// The Markdown reference table (methods x comparable datasets) and its notes.
pub(crate) fn markdown(table: &Table, records: &[RunRecord], reference: &Reference) -> String {
    let cmp = comparisons(table, records, reference);
    let mut s = format!(
        "Published results beside ours (reference: {}), only for datasets prepared from the \
         official VTAB-1k lists:\n\n",
        reference.path.display()
    );
    let comparable = comparable_datasets(records);
    let left_out: Vec<&str> = reference
        .rows
        .iter()
        .map(|r| r.dataset.as_str())
        .filter(|d| comparable.get(d) == Some(&false))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if cmp.is_empty() {
        s.push_str(
            "_no dataset of this table is both in the reference and prepared from the official \
             VTAB-1k lists: nothing is compared_\n",
        );
    } else {
        let datasets: Vec<&str> = {
            let mut d: Vec<&str> = cmp.iter().map(|c| c.dataset.as_str()).collect();
            d.sort_unstable();
            d.dedup();
            d
        };
        let mut methods: Vec<&str> = Vec::new();
        for c in &cmp {
            if !methods.contains(&c.method.as_str()) {
                methods.push(&c.method);
            }
        }
        let _ = writeln!(
            s,
            "| published | {} | source |",
            datasets
                .iter()
                .map(|d| md_escape(d))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(s, "| :--- |{} :--- |", " ---: |".repeat(datasets.len()));
        for m in methods {
            let mut by_ds: BTreeMap<&str, &Comparison> = BTreeMap::new();
            for c in cmp.iter().filter(|c| c.method == m) {
                by_ds.insert(&c.dataset, c);
            }
            let cells: Vec<String> = datasets
                .iter()
                .map(|d| match by_ds.get(d) {
                    Some(c) => match c.ours {
                        Some(o) => format!("{:.1} (ours {o:.2})", c.published),
                        None => format!("{:.1}", c.published),
                    },
                    None => "-".into(),
                })
                .collect();
            let mut sources: Vec<&str> = by_ds.values().map(|c| c.source.as_str()).collect();
            sources.sort_unstable();
            sources.dedup();
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                md_escape(m),
                cells.join(" | "),
                md_escape(&sources.join("; "))
            );
        }
        s.push_str(
            "\nours: the best mean top-1 among our configurations of that method family on \
             that dataset (rows of the table above).\n",
        );
    }
    if !left_out.is_empty() {
        let _ = writeln!(
            s,
            "\nNot compared (in the reference, but not prepared from the official VTAB-1k \
             lists here): {}.",
            left_out.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::{records, tmp_dir};
    use super::super::{build_table, render, render_with, Format};
    use super::*;

    fn reference_file(name: &str, text: &str) -> (PathBuf, PathBuf) {
        let dir = tmp_dir(name);
        let path = dir.join("reference.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const REFERENCE: &str = "# published numbers\n\
        dataset,method,top1,source,notes\n\
        cifar100,Linear,63.4,Paper A,x\n\
        cifar100,LoRA,67.1,Paper A,\n\
        cifar100,Full,68.9,Paper B,\n\
        dtd,LoRA,69.4,Paper A,\n";

    #[test]
    fn reference_is_shown_only_for_comparable_datasets() {
        let (dir, path) = reference_file("reference", REFERENCE);
        let reference = load_reference(&path).unwrap();
        assert_eq!(reference.rows.len(), 4);
        let recs = records();
        let t = build_table(&recs);
        let cmp = comparisons(&t, &recs, &reference);
        // dtd is a seeded draw here: its published LoRA number is left out.
        let shown: Vec<(&str, &str)> = cmp
            .iter()
            .map(|c| (c.dataset.as_str(), c.method.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("cifar100", "Linear"),
                ("cifar100", "LoRA"),
                ("cifar100", "Full")
            ]
        );
        assert_eq!(cmp[1].ours, Some(91.5));
        assert_eq!(cmp[1].ours_config.as_deref(), Some("lora r=8 a=8 q,v"));
        assert_eq!(cmp[2].ours, Some(90.2));

        let md = render_with(&t, &recs, Format::Md, Some(&reference));
        assert!(md.contains("| published | cifar100 | source |"), "{md}");
        assert!(
            md.contains("| LoRA | 67.1 (ours 91.50) | Paper A |"),
            "{md}"
        );
        assert!(
            md.contains("| Full | 68.9 (ours 90.20) | Paper B |"),
            "{md}"
        );
        assert!(!md.contains("69.4"), "dtd is not comparable:\n{md}");
        assert!(md.contains("Not compared (in the reference, but not prepared from the official VTAB-1k lists here): dtd."));
        // Without a reference nothing of it appears.
        assert!(!render(&t, &recs, Format::Md).contains("Published results"));

        let json: serde_json::Value =
            serde_json::from_str(&render_with(&t, &recs, Format::Json, Some(&reference))).unwrap();
        let back: Vec<Comparison> =
            serde_json::from_value(json["reference"]["comparisons"].clone()).unwrap();
        assert_eq!(back, cmp);
        // The table CSV is the same with or without a reference.
        assert_eq!(
            render_with(&t, &recs, Format::Csv, Some(&reference)),
            render(&t, &recs, Format::Csv)
        );

        // No comparable dataset: the reference says so and shows no number.
        let dtd_only: Vec<RunRecord> = recs.into_iter().filter(|r| r.dataset == "dtd").collect();
        let md = render_with(
            &build_table(&dtd_only),
            &dtd_only,
            Format::Md,
            Some(&reference),
        );
        assert!(md.contains("nothing is compared"), "{md}");
        assert!(!md.contains("69.4"), "{md}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_reference_files_name_the_file_and_the_problem() {
        for (text, want) in [
            (
                "dataset,method,top1\ncifar100,lora,60\n",
                "lacks the column(s) source",
            ),
            (
                "dataset,method,top1,source\ncifar100,lora,sixty,P\n",
                "top1",
            ),
            (
                "dataset,method,top1,source\ncifar100,lora,160,P\n",
                "not a percentage",
            ),
            (
                "dataset,method,top1,source\ncifar100,lora,60,P\ncifar100,LoRA,61,Q\n",
                "a second number for cifar100 LoRA",
            ),
            (
                "dataset,method,top1,source\ncifar100,,60,P\n",
                "must not be empty",
            ),
        ] {
            let (dir, path) = reference_file("bad-reference", text);
            let msg = load_reference(&path).unwrap_err().to_string();
            assert!(msg.contains("reference.csv") && msg.contains(want), "{msg}");
            std::fs::remove_dir_all(dir).unwrap();
        }
        let msg = load_reference(Path::new("/nonexistent/ref.csv"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/ref.csv"), "{msg}");
    }

    #[test]
    fn shipped_vpetl_reference_loads_with_the_issue_numbers() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/reference/vpetl-vitb16-in21k.csv");
        let reference = load_reference(&path).unwrap();
        assert_eq!(reference.rows.len(), 4 * 19);
        let get = |ds: &str, m: &str| {
            reference
                .rows
                .iter()
                .find(|r| r.dataset == ds && r.method == m)
                .map(|r| r.top1)
        };
        for (m, want) in [
            ("full", [68.9, 64.3, 95.7]),
            ("linear", [63.4, 63.2, 87.5]),
            ("lora", [67.1, 69.4, 95.3]),
        ] {
            for (ds, w) in ["cifar100", "dtd", "eurosat"].iter().zip(want) {
                assert_eq!(get(ds, m), Some(w), "{ds} {m}");
            }
        }
        assert!(reference
            .rows
            .iter()
            .all(|r| r.source.contains("V-PETL Bench")));
    }
}
