//! Tables and plots from finished runs (summary and per-class CSVs, the configuration x dataset
//! table, SVG plots) and the report folder they go to. Receives `RunRecord`s only: it never
//! reads the store and knows nothing about the DAG.
//!
//! Files: `table.rs` (aggregation), `csv_out.rs` (summary, table and per-class CSVs),
//! `vtab_table.rs` (the VTAB-1k table: groups, group means, both averages; its LaTeX in
//! `latex.rs`, its groups in `groups.rs`), `markdown.rs` (the printed report), `protocol.rs`
//! (the report under `[protocol]`), `plot.rs` / `curves.rs` / `overview.rs` / `tradeoff.rs` /
//! `search_plot.rs` (SVG plots, sharing `svg.rs`; `png.rs` renders them), `folder.rs` (where
//! a report is written), `subsets.rs`, `reference.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod csv_out;
mod curves;
mod folder;
pub mod groups;
mod latex;
mod markdown;
mod overview;
mod plot;
mod png;
pub mod protocol;
mod reference;
mod search_plot;
mod subsets;
mod svg;
mod table;
mod tradeoff;
pub mod vtab_table;

pub use csv_out::{write_per_class_csv, write_summary_csv, write_table_csv, SETTING_ORDER};
pub use curves::write_curves;
pub use folder::{default_dir, write_report, Written};
pub use groups::vtab1k_group;
pub use markdown::{render, render_with};
pub use overview::write_overview;
pub use plot::write_plots;
pub use reference::{comparisons, load_reference, Comparison, Reference, ReferenceRow};
pub use subsets::{comparable_datasets, DataSubsets};
pub use table::{build_table, Cell, Row, Table};
pub use vtab_table::{build_vtab_table, RowsBy, VtabTable};

/// One finished train/eval run, as the report needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub dataset: String,
    /// Method family: "linear", "full", "bitfit", "lora", "vera", "ia3".
    pub method: String,
    /// The `[methods.NAME]` table the run comes from (`lora_mlp`): a method of the study, the
    /// row of the VTAB-1k table under a protocol. Empty in records written before it was.
    #[serde(default)]
    pub method_table: String,
    /// The dataset's group in the VTAB-1k table: `natural`, `specialized`, `structured`, a
    /// name of the suite's own, or `other` (no group; in no group mean nor average).
    #[serde(default = "other_group")]
    pub group: String,
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
    /// Parameters of the whole model, head included (0 where unknown).
    #[serde(default)]
    pub params_total: i64,
    /// Mean seconds per epoch.
    pub epoch_time_s: f64,
    /// Peak of the CUDA caching allocator (allocated bytes) over the epochs, MiB; `None` on
    /// the CPU.
    pub peak_mem_mib: Option<f64>,
    /// On the CPU: the train node process's peak resident set (`VmHWM`), MiB; `None` on a GPU
    /// and for runs trained before it was recorded.
    #[serde(default)]
    pub peak_rss_mib: Option<f64>,
    pub train_img_s: f64,
    /// Wall time of the train node, seconds (loading inputs, training, checkpoints, saving).
    pub wall_s: f64,
    /// Sum of the epoch times, seconds: `wall_s - epochs_s` is the node's overhead.
    #[serde(default)]
    pub epochs_s: f64,
    /// Wall time of the eval node, seconds.
    #[serde(default)]
    pub eval_wall_s: f64,
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

    /// Hours its train and eval nodes held their device (one GPU each on CUDA; on the CPU
    /// the node's wall time, whatever its threads): GPU-hours or CPU-hours, as [`Self::on_gpu`].
    pub fn device_hours(&self) -> f64 {
        (self.wall_s + self.eval_wall_s) / 3600.0
    }

    /// CPU-hours: [`Self::device_hours`] of a CPU run, 0 for a GPU run.
    pub fn cpu_hours(&self) -> f64 {
        if self.on_gpu() {
            0.0
        } else {
            self.device_hours()
        }
    }

    /// Trainable parameters without the head as a percent of the backbone's parameters
    /// (the model less its head); `None` where the model's size is unknown.
    pub fn trainable_backbone_pct(&self) -> Option<f64> {
        let head = self.trainable - self.trainable_backbone;
        let backbone = self.params_total - head;
        (self.params_total > 0 && backbone > 0)
            .then(|| 100.0 * self.trainable_backbone as f64 / backbone as f64)
    }

    /// The peak memory figure of the run and what it measures.
    pub fn peak_memory(&self) -> Option<(f64, PeakKind)> {
        match (self.peak_mem_mib, self.peak_rss_mib) {
            (Some(m), _) => Some((m, PeakKind::CudaAllocator)),
            (None, Some(m)) => Some((m, PeakKind::CpuRss)),
            (None, None) => None,
        }
    }

    /// The row of the VTAB-1k table under a protocol: the method table, else (records from
    /// before it was kept) the method family.
    pub fn method_row(&self) -> &str {
        if self.method_table.is_empty() {
            &self.method
        } else {
            &self.method_table
        }
    }
}

fn other_group() -> String {
    groups::OTHER.to_string()
}

/// What a peak memory figure measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakKind {
    /// `torch.cuda.max_memory_allocated`: the CUDA caching allocator's peak of allocated bytes.
    CudaAllocator,
    /// The peak resident set of the CPU process that trained (`VmHWM`).
    CpuRss,
}

impl PeakKind {
    /// How tables label it.
    pub fn label(self) -> &'static str {
        match self {
            PeakKind::CudaAllocator => "peak CUDA allocator",
            PeakKind::CpuRss => "peak RSS (CPU process)",
        }
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
    #[error("report: cannot render {} to PNG: {problem}", path.display())]
    Png { path: PathBuf, problem: String },
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
    /// The VTAB-1k table as a booktabs `tabular`, byte for byte `vtab_table.tex`.
    Latex,
}

impl FromStr for Format {
    /// A plain message, so clap (`value_parser!`) can show it as is.
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "md" => Ok(Format::Md),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "latex" => Ok(Format::Latex),
            other => Err(format!(
                "unknown report format '{other}' (expected one of: md, csv, json, latex)"
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
            Format::Latex => "latex",
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
mod paper_tests;
#[cfg(test)]
pub(crate) mod tests;
