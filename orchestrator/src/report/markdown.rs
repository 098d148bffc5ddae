//! What `report` prints for a grid suite: the Markdown report (the table, trainable
//! parameters per dataset, the VTAB-1k table, notes, subsets, reference), the table CSV,
//! JSON, or the VTAB-1k table in LaTeX. Strings only; no files.
use std::fmt::Write as _;

use super::csv_out::{csv_string, table_rows};
use super::table::sorted_records;
use super::vtab_table::{self, build_vtab_table, RowsBy};
use super::{
    cell_text, comparisons, human_count, human_pct, md_escape, reference, subsets, Format,
    Reference, RunRecord, Table,
};

/// Renders the table: Markdown, the table CSV, or JSON with the records and the table.
pub fn render(table: &Table, records: &[RunRecord], format: Format) -> String {
    render_with(table, records, format, None)
}

/// [`render`], with a reference table of published numbers for the datasets comparable with
/// published VTAB-1k: beside the Markdown table, and as `"reference"` (the
/// [`super::Comparison`]s) in JSON. The table CSV never holds it.
pub fn render_with(
    table: &Table,
    records: &[RunRecord],
    format: Format,
    reference: Option<&Reference>,
) -> String {
    match format {
        Format::Md => {
            // Sections in order; a new table (e.g. a selection table) is one more entry.
            let mut sections = vec![markdown(table)];
            if !table.rows.is_empty() {
                sections.push(trainable_table(table));
                let split = super::folder::eval_split(records);
                sections.push(format!(
                    "VTAB-1k table (split: {split}; a row per configuration):\n\n{}",
                    vtab_table::markdown(&build_vtab_table(records, RowsBy::Config), &split)
                ));
            }
            if !records.is_empty() {
                sections.push(subsets::markdown_notes(records));
            }
            if let Some(r) = reference {
                sections.push(reference::markdown(table, records, r));
            }
            sections.join("\n")
        }
        Format::Csv => csv_string(&table_rows(table)),
        Format::Latex => {
            let split = super::folder::eval_split(records);
            super::latex::vtab_table(
                &build_vtab_table(records, RowsBy::Config),
                &split,
                &super::folder::grid_caption(&split),
            )
        }
        Format::Json => {
            let mut doc = serde_json::json!({
                "records": sorted_records(records),
                "table": table,
            });
            if let Some(r) = reference {
                doc["reference"] = serde_json::json!({
                    "file": r.path,
                    "comparisons": comparisons(table, records, r),
                });
            }
            let mut s = serde_json::to_string_pretty(&doc).expect("records serialize to JSON");
            s.push('\n');
            s
        }
    }
}

fn line(s: &mut String, cells: &[String]) {
    let _ = writeln!(s, "| {} |", cells.join(" | "));
}

fn align(n: usize) -> Vec<String> {
    let mut a = vec![":---".to_string()];
    a.extend(std::iter::repeat_n("---:".to_string(), n - 1));
    a
}

/// Train wall seconds per run with its split into epochs and overhead: `10.2 (2.2 + 8.0)`.
fn cost_text(train_s: f64, epochs_s: f64, device: &str) -> String {
    let d = if device == "cpu" { " cpu" } else { "" };
    format!(
        "{train_s:.1}{d} ({epochs_s:.1} + {:.1})",
        train_s - epochs_s
    )
}

/// The main table: config, trainable (head excluded), one column per dataset (the best bold),
/// avg, cost; then footnotes.
fn markdown(table: &Table) -> String {
    let mut s = String::new();
    let mut header = vec!["config".to_string(), "trainable".to_string()];
    header.extend(table.datasets.iter().map(|d| md_escape(d)));
    header.push("avg".to_string());
    header.push("train s/run (epochs + overhead)".to_string());
    line(&mut s, &header);
    line(&mut s, &align(header.len()));
    for row in &table.rows {
        let mut cells = vec![
            md_escape(&row.config),
            format!(
                "{}{}",
                human_count(row.trainable_backbone as f64),
                if row.backbone_varies { "†" } else { "" }
            ),
        ];
        cells.extend(row.cells.iter().map(|c| match c {
            Some(c) if c.best => format!("**{}**", cell_text(c)),
            Some(c) => cell_text(c),
            None => "-".to_string(),
        }));
        cells.push(format!(
            "{:.2}{}",
            row.avg,
            if row.complete { "" } else { "*" }
        ));
        cells.push(cost_text(row.train_s, row.epochs_s, &row.device));
        line(&mut s, &cells);
    }
    if table.rows.is_empty() {
        s.push_str("\n_no finished runs to report_\n");
        return s;
    }
    let mut notes = vec![
        "Cells: top-1 % over seeds, `mean ± sample std (n)`; a single seed shows the value \
         alone; `-`: not run; **bold**: the best configuration on that dataset. trainable: \
         adapted backbone parameters, head excluded (per dataset with the head: below). \
         train s/run: the train node's wall time per run as its store entry recorded it, mean \
         over the row's runs, split into the sum of its epoch times and the rest (loading, \
         CUDA context, checkpoints, saving, the node process's start-up); \
         `cpu` marks CPU runs."
            .to_string(),
    ];
    if table.rows.iter().any(|r| !r.complete) {
        notes.push(
            "\\* avg over only the datasets this configuration ran on (it lacks some of the \
             table's datasets)."
                .to_string(),
        );
    }
    if table.rows.iter().any(|r| r.backbone_varies) {
        notes.push(
            "† the row's runs differ in trainable backbone parameters; the first is shown \
             (summary.csv has each)."
                .to_string(),
        );
    }
    let gpu_h: f64 = table.rows.iter().map(|r| r.gpu_hours).sum();
    if gpu_h > 0.0 {
        notes.push(format!(
            "GPU-hours of all runs (train + eval nodes): {gpu_h:.3}."
        ));
    }
    s.push('\n');
    s.push_str(&notes.join("\n\n"));
    s.push('\n');
    s
}

/// Trainable parameters per dataset, head included (heads follow each dataset's classes).
fn trainable_table(table: &Table) -> String {
    let mut s =
        String::from("Trainable parameters per dataset (head included, % of the model):\n\n");
    let mut header = vec!["config".to_string()];
    header.extend(table.datasets.iter().map(|d| md_escape(d)));
    line(&mut s, &header);
    line(&mut s, &align(header.len()));
    for row in &table.rows {
        let mut cells = vec![md_escape(&row.config)];
        cells.extend(row.cells.iter().map(|c| match c {
            Some(c) => format!(
                "{} ({})",
                human_count(c.trainable),
                human_pct(c.trainable_pct)
            ),
            None => "-".to_string(),
        }));
        line(&mut s, &cells);
    }
    s
}
