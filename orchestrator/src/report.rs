//! Tables and plots from finished runs (summary and per-class CSVs, the configuration x dataset
//! table, SVG plots) and the report folder they go to. Receives `RunRecord`s only: it never
//! reads the store and knows nothing about the DAG.
//!
//! Files: `table.rs` (aggregation), `csv.rs` (summary, table and per-class CSVs),
//! `markdown.rs` (the printed report), `plot.rs` / `curves.rs` / `overview.rs` (SVG plots,
//! sharing `svg.rs`), `folder.rs` (where a report is written), `subsets.rs`, `reference.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod csv_out;
mod curves;
mod folder;
mod markdown;
mod overview;
mod plot;
pub mod protocol;
mod reference;
mod subsets;
mod svg;
mod table;

pub use csv_out::{write_per_class_csv, write_summary_csv, write_table_csv, SETTING_ORDER};
pub use curves::write_curves;
pub use folder::{default_dir, write_report, Written};
pub use markdown::{render, render_with};
pub use overview::write_overview;
pub use plot::write_plots;
pub use reference::{comparisons, load_reference, Comparison, Reference, ReferenceRow};
pub use subsets::{comparable_datasets, DataSubsets};
pub use table::{build_table, Cell, Row, Table};

/// One finished train/eval run, as the report needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub dataset: String,
    /// Method family: "linear", "full", "bitfit", "lora", "vera", "ia3".
    pub method: String,
    /// Method configuration label, the table's row key, e.g. "lora r=8 a=8 q,v".
    pub config: String,
    /// Every setting that enters the run's key, by name: optimisation and data settings
    /// (`lr`, `batch_size`, `img_size`, `augment`, ...), `numerics` (`cpu-fp32`,
    /// `cuda-bf16`), `backbone`, and the method's parameters (`r`, `alpha`, `targets`, ...).
    /// The seed has its own field.
    pub hparams: BTreeMap<String, String>,
    pub seed: u64,
    /// Top-1 accuracy, percent (0..100).
    pub top1: f64,
    /// Images in the evaluated split.
    #[serde(default)]
    pub test_n: i64,
    /// Classes of the dataset (chance level is 100 / num_classes percent).
    #[serde(default)]
    pub num_classes: i64,
    /// Trainable parameters, including the classification head.
    pub trainable: i64,
    /// Trainable parameters without the head (what PEFT papers quote; the same on every
    /// dataset).
    #[serde(default)]
    pub trainable_backbone: i64,
    /// Trainable parameters as a percent of the model's total.
    pub trainable_pct: f64,
    /// Mean seconds per epoch.
    pub epoch_time_s: f64,
    /// CUDA allocator peak; `None` on CPU.
    pub peak_mem_mib: Option<f64>,
    pub train_img_s: f64,
    /// Wall time of the train node, seconds (loading inputs, training, checkpoints, saving).
    pub wall_s: f64,
    /// Sum of the epoch times, seconds: `wall_s - epochs_s` is the node's overhead.
    #[serde(default)]
    pub epochs_s: f64,
    /// Device hours the run held a GPU: (train node wall + eval node wall) / 3600 for a
    /// `cuda-*` run (one GPU per node), 0 for a CPU run.
    #[serde(default)]
    pub gpu_hours: f64,
    /// The eval node's content hash (hex).
    pub key: String,
    /// Which examples the run trained and was tested on (the prep entries' `subset.json`);
    /// `None` where they were not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<DataSubsets>,
    /// Per-class top-1 on the evaluated split, in class order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_class: Vec<ClassAccuracy>,
    /// The training curve: one point per epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<EpochPoint>,
}

impl RunRecord {
    /// Train node wall time not spent in epochs (start-up, loading, checkpoints, saving).
    pub fn overhead_s(&self) -> f64 {
        self.wall_s - self.epochs_s
    }

    /// Whether the run computed on a GPU (its `numerics` setting starts with `cuda`).
    pub fn on_gpu(&self) -> bool {
        self.hparams
            .get("numerics")
            .is_some_and(|n| n.starts_with("cuda"))
    }
}

/// Top-1 of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: String,
    /// Percent; `None` when the split has no image of the class.
    pub accuracy: Option<f64>,
    /// Images of the class in the evaluated split.
    pub count: usize,
}

/// One epoch of training, from the train node's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochPoint {
    pub epoch: u64,
    /// Mean training loss over the epoch.
    pub loss: f64,
    /// Learning rate at the epoch's first step.
    pub lr: f64,
    pub time_s: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report: cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("report: cannot write CSV {}: {source}", path.display())]
    Csv { path: PathBuf, source: csv::Error },
    #[error(
        "report: {} carries CACHEDIR.TAG, so it is (part of) a store that backup tools skip; \
         choose a folder outside the store with --out",
        path.display()
    )]
    InsideStore { path: PathBuf },
    #[error("report: no finished run to report; nothing written to {}", path.display())]
    NothingFinished { path: PathBuf },
    #[error(
        "report: reference table {}: {problem} (expected a CSV with the columns dataset, \
         method, top1, source; see docs/reference/)",
        path.display()
    )]
    Reference { path: PathBuf, problem: String },
}

/// Output format of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The Markdown table with its footnotes.
    #[default]
    Md,
    /// The table as CSV, byte for byte what [`write_table_csv`] writes.
    Csv,
    /// `{"records": [...], "table": {...}}`, records in summary order.
    Json,
}

impl FromStr for Format {
    /// A plain message, so clap (`value_parser!`) can show it as is.
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "md" => Ok(Format::Md),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!(
                "unknown report format '{other}' (expected one of: md, csv, json)"
            )),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Md => "md",
            Format::Csv => "csv",
            Format::Json => "json",
        })
    }
}

/// Parameter count for people: `76.9K`, `0.30M`, `85.80M`, `1.20B`.
fn human_count(n: f64) -> String {
    match n.abs() {
        x if x >= 1e9 => format!("{:.2}B", n / 1e9),
        x if x >= 1e5 => format!("{:.2}M", n / 1e6),
        x if x >= 1e3 => format!("{:.1}K", n / 1e3),
        _ => format!("{n:.0}"),
    }
}

fn human_pct(p: f64) -> String {
    if p.abs() >= 0.1 || p == 0.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.3}%")
    }
}

fn cell_text(c: &Cell) -> String {
    match c.std {
        Some(s) => format!("{:.2} ± {s:.2} ({})", c.mean, c.n),
        None => format!("{:.2}", c.mean),
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// A name made safe as a file-name part: anything but `[A-Za-z0-9._-]` becomes `_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| match c.is_ascii_alphanumeric() || "._-".contains(c) {
            true => c,
            false => '_',
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
