//! Tables and plots from finished runs (summary CSV, method x dataset table, SVG plots).
//! Receives `RunRecord`s only: it never reads the store and knows nothing about the DAG.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod protocol;
mod reference;
mod subsets;

pub use reference::{comparisons, load_reference, Comparison, Reference, ReferenceRow};
pub use subsets::{comparable_datasets, DataSubsets};

/// One finished train/eval run, as the report needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub dataset: String,
    /// Method family: "linear", "full", "bitfit", "lora", "vera", "ia3".
    pub method: String,
    /// Method configuration label, the table's row key, e.g. "lora r=8 a=8 q,v".
    pub config: String,
    /// The run's hyper-parameters (method + optimisation), e.g. "r" -> "8", "lr" -> "0.001".
    pub hparams: BTreeMap<String, String>,
    pub seed: u64,
    /// Top-1 accuracy, percent (0..100).
    pub top1: f64,
    /// Trainable parameters, including the classification head.
    pub trainable: i64,
    /// Trainable parameters as a percent of the model's total.
    pub trainable_pct: f64,
    /// Mean seconds per epoch.
    pub epoch_time_s: f64,
    /// CUDA allocator peak; `None` on CPU.
    pub peak_mem_mib: Option<f64>,
    pub train_img_s: f64,
    pub wall_s: f64,
    /// The eval node's content hash (hex).
    pub key: String,
    /// Which examples the run trained and was tested on (the prep entries' `subset.json`);
    /// `None` where they were not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsets: Option<DataSubsets>,
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

/// Top-1 over the seeds of one configuration on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub mean: f64,
    /// Sample standard deviation (n - 1); `None` when n == 1.
    pub std: Option<f64>,
    pub n: usize,
}

/// One method configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub config: String,
    pub method: String,
    /// One per [`Table::datasets`], `None` where the configuration did not run.
    pub cells: Vec<Option<Cell>>,
    /// Mean of the cell means over the datasets this row has.
    pub avg: f64,
    /// False when the row lacks some of the table's datasets (its `avg` is then partial).
    pub complete: bool,
    /// Mean trainable parameters over the row's datasets (each dataset once, its seeds
    /// averaged first). Head sizes follow each dataset's class count, so this is a
    /// representative value, not an exact one.
    pub trainable: f64,
    /// Mean of the records' `trainable_pct`, taken the same way.
    pub trainable_pct: f64,
    /// Whether `trainable` differs between the row's records (different heads).
    pub trainable_varies: bool,
}

/// Method configuration x dataset: rows sorted by method family (linear, bitfit, ia3,
/// vera, lora, full, then any other method by name), then by label in natural order
/// ("r=4" before "r=16"); columns are the datasets, sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub datasets: Vec<String>,
    pub rows: Vec<Row>,
}

const FAMILIES: [&str; 6] = ["linear", "bitfit", "ia3", "vera", "lora", "full"];

fn family_rank(method: &str) -> usize {
    FAMILIES
        .iter()
        .position(|f| *f == method)
        .unwrap_or(FAMILIES.len())
}

/// Compares strings with digit runs taken as numbers: "r=4" < "r=16".
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
                let db = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
                let (na, nb) = (
                    a[..da].trim_start_matches('0'),
                    b[..db].trim_start_matches('0'),
                );
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (&a[da..], &b[db..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                (a, b) = (&a[x.len_utf8()..], &b[y.len_utf8()..]);
            }
        }
    }
}

/// A row's identity and sort order: family rank, method, label (natural, then exact).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowKey {
    method: String,
    config: String,
}

impl Ord for RowKey {
    fn cmp(&self, other: &Self) -> Ordering {
        family_rank(&self.method)
            .cmp(&family_rank(&other.method))
            .then_with(|| self.method.cmp(&other.method))
            .then_with(|| natural_cmp(&self.config, &other.config))
            .then_with(|| self.config.cmp(&other.config))
    }
}

impl PartialOrd for RowKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn row_key(r: &RunRecord) -> RowKey {
    RowKey {
        method: r.method.clone(),
        config: r.config.clone(),
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n - 1); `None` for fewer than two values.
fn sample_std(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

fn cell_of(records: &[&RunRecord]) -> Cell {
    let top1: Vec<f64> = records.iter().map(|r| r.top1).collect();
    Cell {
        mean: mean(&top1),
        std: sample_std(&top1),
        n: top1.len(),
    }
}

/// Records grouped by configuration, then dataset. Every record counts, so a seed that was
/// recorded twice counts twice; the store's content hashing keeps that from happening.
fn group(records: &[RunRecord]) -> BTreeMap<RowKey, BTreeMap<&str, Vec<&RunRecord>>> {
    let mut groups: BTreeMap<RowKey, BTreeMap<&str, Vec<&RunRecord>>> = BTreeMap::new();
    for r in records {
        groups
            .entry(row_key(r))
            .or_default()
            .entry(r.dataset.as_str())
            .or_default()
            .push(r);
    }
    groups
}

/// Aggregates records into the method configuration x dataset table.
///
/// Empty input is not an error anywhere in this module: it gives a table with no datasets
/// and no rows (Markdown says "no finished runs" in words), CSV files with only their
/// header, and no plots. The caller decides whether that is fatal.
pub fn build_table(records: &[RunRecord]) -> Table {
    let datasets: Vec<String> = records
        .iter()
        .map(|r| r.dataset.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = group(records)
        .into_iter()
        .map(|(key, by_ds)| {
            let cells: Vec<Option<Cell>> = datasets
                .iter()
                .map(|ds| by_ds.get(ds.as_str()).map(|rs| cell_of(rs)))
                .collect();
            let means: Vec<f64> = cells.iter().flatten().map(|c| c.mean).collect();
            // Each dataset counts once, however many seeds it has.
            let per_ds = |f: fn(&RunRecord) -> f64| {
                let ds_means: Vec<f64> = by_ds
                    .values()
                    .map(|rs| mean(&rs.iter().map(|r| f(r)).collect::<Vec<_>>()))
                    .collect();
                mean(&ds_means)
            };
            let all: Vec<&RunRecord> = by_ds.values().flatten().copied().collect();
            Row {
                config: key.config,
                method: key.method,
                avg: mean(&means),
                complete: means.len() == datasets.len(),
                trainable: per_ds(|r| r.trainable as f64),
                trainable_pct: per_ds(|r| r.trainable_pct),
                trainable_varies: all.iter().any(|r| r.trainable != all[0].trainable),
                cells,
            }
        })
        .collect();
    Table { datasets, rows }
}

/// Records in summary order: (dataset, config, seed), then method and key for ties.
fn sorted_records(records: &[RunRecord]) -> Vec<&RunRecord> {
    let mut out: Vec<&RunRecord> = records.iter().collect();
    out.sort_by(|a, b| {
        a.dataset
            .cmp(&b.dataset)
            .then_with(|| a.config.cmp(&b.config))
            .then_with(|| a.seed.cmp(&b.seed))
            .then_with(|| a.method.cmp(&b.method))
            .then_with(|| a.key.cmp(&b.key))
    });
    out
}

const SUMMARY_HEAD: [&str; 3] = ["dataset", "method", "config"];
const SUMMARY_TAIL: [&str; 12] = [
    "seed",
    "top1",
    "trainable",
    "trainable_pct",
    "epoch_time_s",
    "peak_mem_mib",
    "train_img_s",
    "wall_s",
    "key",
    "train_subset",
    "eval_subset",
    "vtab1k_comparable",
];

/// The summary as rows of strings, header first.
fn summary_rows(records: &[RunRecord]) -> Vec<Vec<String>> {
    let hkeys: BTreeSet<&str> = records
        .iter()
        .flat_map(|r| r.hparams.keys().map(String::as_str))
        .collect();
    let fixed = |k: &str| SUMMARY_HEAD.contains(&k) || SUMMARY_TAIL.contains(&k);
    let mut header: Vec<String> = SUMMARY_HEAD.iter().map(|s| s.to_string()).collect();
    // An hparam named like a fixed column ("seed") gets an `hp_` prefix, to keep names unique.
    header.extend(hkeys.iter().map(|k| match fixed(k) {
        true => format!("hp_{k}"),
        false => k.to_string(),
    }));
    header.extend(SUMMARY_TAIL.iter().map(|s| s.to_string()));
    let mut rows = vec![header];
    for r in sorted_records(records) {
        let mut row = vec![r.dataset.clone(), r.method.clone(), r.config.clone()];
        row.extend(
            hkeys
                .iter()
                .map(|k| r.hparams.get(*k).cloned().unwrap_or_default()),
        );
        row.extend([
            r.seed.to_string(),
            r.top1.to_string(),
            r.trainable.to_string(),
            r.trainable_pct.to_string(),
            r.epoch_time_s.to_string(),
            r.peak_mem_mib.map(|m| m.to_string()).unwrap_or_default(),
            r.train_img_s.to_string(),
            r.wall_s.to_string(),
            r.key.clone(),
        ]);
        row.extend(subsets::summary_cells(r));
        rows.push(row);
    }
    rows
}

/// The table as rows of strings, header first: config, method, per dataset
/// `<ds>_mean`, `<ds>_std`, `<ds>_n` (all blank where the row lacks the dataset; std blank
/// when n == 1), avg, trainable (rounded mean), trainable_pct.
fn table_rows(table: &Table) -> Vec<Vec<String>> {
    let mut header = vec!["config".to_string(), "method".to_string()];
    for ds in &table.datasets {
        header.extend([format!("{ds}_mean"), format!("{ds}_std"), format!("{ds}_n")]);
    }
    header.extend(["avg", "trainable", "trainable_pct"].map(String::from));
    let mut rows = vec![header];
    for row in &table.rows {
        let mut out = vec![row.config.clone(), row.method.clone()];
        for cell in &row.cells {
            match cell {
                Some(c) => out.extend([
                    format!("{:.4}", c.mean),
                    c.std.map(|s| format!("{s:.4}")).unwrap_or_default(),
                    c.n.to_string(),
                ]),
                None => out.extend([String::new(), String::new(), String::new()]),
            }
        }
        out.extend([
            format!("{:.4}", row.avg),
            format!("{:.0}", row.trainable),
            format!("{:.4}", row.trainable_pct),
        ]);
        rows.push(out);
    }
    rows
}

fn csv_string(rows: &[Vec<String>]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.write_record(row)
            .expect("writing CSV to memory cannot fail");
    }
    let bytes = w.into_inner().expect("flushing CSV to memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8")
}

fn write_csv(rows: &[Vec<String>], path: &Path) -> Result<(), ReportError> {
    let err = |source| ReportError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    for row in rows {
        w.write_record(row).map_err(err)?;
    }
    w.flush().map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// One row per record, sorted (dataset, config, seed); one column per distinct hparam key
/// over all records (sorted, empty where a record lacks it); `peak_mem_mib` empty on CPU;
/// `train_subset` / `eval_subset` say which examples the run used (empty where not recorded)
/// and `vtab1k_comparable` whether it is comparable with published VTAB-1k (`true` / `false`).
pub fn write_summary_csv(records: &[RunRecord], path: &Path) -> Result<(), ReportError> {
    write_csv(&summary_rows(records), path)
}

/// The table with numeric columns (see [`Format::Csv`]).
pub fn write_table_csv(table: &Table, path: &Path) -> Result<(), ReportError> {
    write_csv(&table_rows(table), path)
}

/// Renders the table: Markdown, the table CSV, or JSON with the records and the table.
pub fn render(table: &Table, records: &[RunRecord], format: Format) -> String {
    render_with(table, records, format, None)
}

/// [`render`], with a reference table of published numbers for the datasets comparable with
/// published VTAB-1k: beside the Markdown table, and as `"reference"` (the [`Comparison`]s) in
/// JSON. The table CSV never holds it.
pub fn render_with(
    table: &Table,
    records: &[RunRecord],
    format: Format,
    reference: Option<&Reference>,
) -> String {
    match format {
        Format::Md => {
            let mut s = markdown(table);
            if !records.is_empty() {
                s.push('\n');
                s.push_str(&subsets::markdown_notes(records));
            }
            if let Some(r) = reference {
                s.push('\n');
                s.push_str(&reference::markdown(table, records, r));
            }
            s
        }
        Format::Csv => csv_string(&table_rows(table)),
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

/// The Markdown table: config, trainable, one column per dataset, avg; then footnotes for
/// a partial avg (`*`) and for trainable counts that differ across a row's datasets.
fn markdown(table: &Table) -> String {
    let mut s = String::new();
    let mut line = |cells: Vec<String>| {
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    };
    let mut header = vec!["config".to_string(), "trainable".to_string()];
    header.extend(table.datasets.iter().map(|d| md_escape(d)));
    header.push("avg".to_string());
    let mut align = vec![":---".to_string()];
    align.extend(std::iter::repeat_n("---:".to_string(), header.len() - 1));
    line(header);
    line(align);
    for row in &table.rows {
        let mut cells = vec![
            md_escape(&row.config),
            format!(
                "{} ({})",
                human_count(row.trainable),
                human_pct(row.trainable_pct)
            ),
        ];
        cells.extend(row.cells.iter().map(|c| match c {
            Some(c) => cell_text(c),
            None => "-".to_string(),
        }));
        cells.push(format!(
            "{:.2}{}",
            row.avg,
            if row.complete { "" } else { "*" }
        ));
        line(cells);
    }
    if table.rows.is_empty() {
        s.push_str("\n_no finished runs to report_\n");
        return s;
    }
    let mut notes = Vec::new();
    notes.push(
        "Cells: top-1 % over seeds, `mean ± sample std (n)`; a single seed shows the value \
         alone; `-`: not run."
            .to_string(),
    );
    if table.rows.iter().any(|r| !r.complete) {
        notes.push(
            "\\* avg over only the datasets this configuration ran on (it lacks some of the \
             table's datasets)."
                .to_string(),
        );
    }
    if table.rows.iter().any(|r| r.trainable_varies) {
        notes.push(
            "trainable: mean over the row's datasets, head included; heads differ with the \
             datasets' class counts."
                .to_string(),
        );
    }
    s.push('\n');
    s.push_str(&notes.join("\n\n"));
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------------------
// Plots: hand-written SVG, one per dataset.

/// One configuration on one dataset, as plotted.
struct Point {
    config: String,
    method: String,
    trainable: f64,
    cell: Cell,
}

fn family_colour(method: &str) -> &'static str {
    match method {
        "linear" => "#7f7f7f",
        "bitfit" => "#9467bd",
        "ia3" => "#8c564b",
        "vera" => "#2ca02c",
        "lora" => "#1f77b4",
        "full" => "#d62728",
        _ => "#e377c2",
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A dataset name made safe as a file-name part: anything but `[A-Za-z0-9._-]` becomes `_`.
fn file_stem(dataset: &str) -> String {
    dataset
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "._-".contains(c) {
            true => c,
            false => '_',
        })
        .collect()
}

/// 10^d for an axis: `1`, `10`, `100`, `1K` ... `100M`, `1B`, `10B`; `1e-1` below one.
fn decade_label(d: i32) -> String {
    match d {
        ..0 => format!("1e{d}"),
        0..3 => 10u64.pow(d as u32).to_string(),
        _ => {
            let (suffix, base) = match d {
                3..6 => ("K", 3),
                6..9 => ("M", 6),
                _ => ("B", 9),
            };
            format!("{}{suffix}", 10u64.pow((d - base) as u32))
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

const W: f64 = 760.0;
const H: f64 = 480.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 140.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;

/// Top-1 (y) against trainable parameters (x, log10 with decade ticks): one circle per
/// configuration at its mean, an error bar of ±std when n > 1, a label, a legend of the
/// method families present. Trainable counts below 1 are drawn at 1.
fn svg_plot(dataset: &str, points: &[Point]) -> String {
    let (px0, px1, py0, py1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let lx: Vec<f64> = points
        .iter()
        .map(|p| p.trainable.max(1.0).log10())
        .collect();
    let mut lmin = lx.iter().copied().fold(f64::INFINITY, f64::min);
    let mut lmax = lx.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lmax - lmin < 1.0 {
        // At least a decade, so the axis shows a decade tick.
        let c = (lmin + lmax) / 2.0;
        (lmin, lmax) = (c - 0.5, c + 0.5);
    }
    // The points span [a, b]: room left for a marker, right for its label.
    let (a, b) = (px0 + 24.0, px1 - 96.0);
    let sx = |l: f64| a + (l - lmin) / (lmax - lmin) * (b - a);
    let at = |x: f64| lmin + (x - a) / (b - a) * (lmax - lmin);
    let (vlo, vhi) = (at(px0), at(px1));
    let decades = (vlo.ceil() as i32)..=(vhi.floor() as i32);
    let minors: Vec<f64> = ((vlo.floor() as i32)..=(vhi.floor() as i32))
        .flat_map(|d| (2..10).map(move |m| d as f64 + (m as f64).log10()))
        .filter(|l| (vlo..=vhi).contains(l))
        .collect();

    let spread = |p: &Point| p.cell.std.unwrap_or(0.0);
    let lo = points
        .iter()
        .map(|p| p.cell.mean - spread(p))
        .fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.cell.mean + spread(p))
        .fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = match hi - lo < 1.0 {
        true => ((lo + hi) / 2.0 - 0.5, (lo + hi) / 2.0 + 0.5),
        false => (lo, hi),
    };
    let step = nice_step((hi - lo) / 5.0);
    let mut ylo = ((lo - 0.05 * (hi - lo)) / step).floor() * step;
    let mut yhi = ((hi + 0.05 * (hi - lo)) / step).ceil() * step;
    if lo >= 0.0 {
        ylo = ylo.max(0.0);
    }
    if hi <= 100.0 {
        yhi = yhi.min(100.0);
    }
    let sy = |v: f64| py1 - (v - ylo) / (yhi - ylo) * (py1 - py0);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="24" font-size="15" text-anchor="middle">{}: top-1 vs trainable parameters</text>"#,
        (px0 + px1) / 2.0,
        xml_escape(dataset)
    );
    // Axes, grid and ticks.
    let _ = writeln!(s, r##"<g stroke="#f0f0f0" stroke-width="1">"##);
    for l in &minors {
        let x = sx(*l);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{py0:.1}" x2="{x:.1}" y2="{py1:.1}"/>"#
        );
    }
    s.push_str("</g>\n");
    let _ = writeln!(s, r##"<g stroke="#ccc" stroke-width="1">"##);
    for d in decades.clone() {
        let x = sx(d as f64);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{py0:.1}" x2="{x:.1}" y2="{py1:.1}"/>"#
        );
    }
    let nticks = ((yhi - ylo) / step).round() as i32;
    for i in 0..=nticks {
        let y = sy(ylo + i as f64 * step);
        let _ = writeln!(
            s,
            r#"<line x1="{px0:.1}" y1="{y:.1}" x2="{px1:.1}" y2="{y:.1}"/>"#
        );
    }
    s.push_str("</g>\n");
    let _ = writeln!(
        s,
        r#"<rect x="{px0:.1}" y="{py0:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        px1 - px0,
        py1 - py0
    );
    let _ = writeln!(s, r#"<g font-size="11">"#);
    for d in decades {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            sx(d as f64),
            py1 + 16.0,
            decade_label(d)
        );
    }
    let decimals = if step >= 1.0 { 0 } else { 1 };
    for i in 0..=nticks {
        let v = ylo + i as f64 * step;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.decimals$}</text>"#,
            px0 - 6.0,
            sy(v) + 4.0
        );
    }
    s.push_str("</g>\n");
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">trainable parameters (log scale)</text>"#,
        (px0 + px1) / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {:.1})">top-1 (%)</text>"#,
        (py0 + py1) / 2.0,
        (py0 + py1) / 2.0
    );
    // Points: error bar, marker (with a tooltip), label.
    for (p, l) in points.iter().zip(&lx) {
        let (x, y) = (sx(*l), sy(p.cell.mean));
        let colour = family_colour(&p.method);
        if let Some(sd) = p.cell.std {
            let (ya, yb) = (sy(p.cell.mean - sd), sy(p.cell.mean + sd));
            let _ = writeln!(
                s,
                r#"<path class="errbar" d="M{x:.1} {ya:.1}V{yb:.1}M{:.1} {ya:.1}h8M{:.1} {yb:.1}h8" stroke="{colour}" fill="none"/>"#,
                x - 4.0,
                x - 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<circle class="marker" cx="{x:.1}" cy="{y:.1}" r="4.5" fill="{colour}" stroke="black" stroke-width="0.5"><title>{}: {} top-1, {} trainable</title></circle>"#,
            xml_escape(&p.config),
            xml_escape(&cell_text(&p.cell)),
            human_count(p.trainable)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="9">{}</text>"#,
            x + 6.0,
            y - 5.0,
            xml_escape(&p.config)
        );
    }
    // Legend: the method families present, in table order.
    let mut families: Vec<&str> = points.iter().map(|p| p.method.as_str()).collect();
    families.sort_by(|a, b| family_rank(a).cmp(&family_rank(b)).then(a.cmp(b)));
    families.dedup();
    let lx0 = px1 + 16.0;
    let _ = writeln!(
        s,
        r#"<text x="{lx0:.1}" y="{:.1}" font-size="12" font-weight="bold">method</text>"#,
        py0 + 10.0
    );
    for (i, f) in families.iter().enumerate() {
        let y = py0 + 26.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{lx0:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            y - 9.0,
            family_colour(f),
            lx0 + 16.0,
            y,
            xml_escape(f)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Per dataset, the plotted points: each configuration's mean top-1 over seeds and mean
/// trainable count, in table row order.
fn plot_points(records: &[RunRecord]) -> BTreeMap<&str, Vec<Point>> {
    let mut out: BTreeMap<&str, Vec<Point>> = BTreeMap::new();
    for (key, by_ds) in group(records) {
        for (ds, rs) in by_ds {
            let trainable: Vec<f64> = rs.iter().map(|r| r.trainable as f64).collect();
            out.entry(ds).or_default().push(Point {
                config: key.config.clone(),
                method: key.method.clone(),
                trainable: mean(&trainable),
                cell: cell_of(&rs),
            });
        }
    }
    out
}

/// Writes `<dir>/plot_<dataset>.svg` for every dataset (creating `dir`), returning the
/// paths in dataset order. Characters outside `[A-Za-z0-9._-]` in a dataset name become `_`
/// in its file name. No records: no plots, and `dir` is left alone.
pub fn write_plots(records: &[RunRecord], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let points = plot_points(records);
    if points.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut paths = Vec::new();
    for (ds, pts) in points {
        let path = dir.join(format!("plot_{}.svg", file_stem(ds)));
        std::fs::write(&path, svg_plot(ds, &pts)).map_err(io(&path))?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// ViT-B/16 backbone size; a head adds 768 * classes + classes.
    const BACKBONE: i64 = 85_798_656;

    fn head(classes: i64) -> i64 {
        768 * classes + classes
    }

    fn classes(dataset: &str) -> i64 {
        match dataset {
            "cifar100" => 100,
            "dtd" => 47,
            _ => 102,
        }
    }

    pub(super) fn rec(
        dataset: &str,
        method: &str,
        config: &str,
        seed: u64,
        top1: f64,
    ) -> RunRecord {
        let (extra, hparams): (i64, &[(&str, &str)]) = match method {
            "linear" => (0, &[("lr", "0.01")]),
            "bitfit" => (102_400, &[("lr", "0.001")]),
            "lora" => (294_912, &[("alpha", "8"), ("lr", "0.001"), ("r", "8")]),
            _ => (BACKBONE, &[("lr", "0.0001")]),
        };
        let trainable = head(classes(dataset)) + extra;
        let total = BACKBONE + head(classes(dataset));
        let mut hp: BTreeMap<String, String> = hparams
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        hp.insert("epochs".into(), "10".into());
        RunRecord {
            dataset: dataset.into(),
            method: method.into(),
            config: config.into(),
            hparams: hp,
            seed,
            top1,
            trainable,
            trainable_pct: (100.0 * trainable as f64 / total as f64 * 1e4).round() / 1e4,
            epoch_time_s: 12.5,
            peak_mem_mib: (method != "linear").then_some(2048.0),
            train_img_s: 310.0,
            wall_s: 130.0,
            key: format!("{:08x}", seed * 1000 + top1 as u64),
            subsets: subsets_of(dataset),
        }
    }

    /// cifar100 from the official VTAB-1k lists, dtd a seeded draw from fold 1 (tested on
    /// fold 1's test list), anything else unrecorded.
    pub(super) fn subsets_of(dataset: &str) -> Option<DataSubsets> {
        use crate::datasets::{Part, Split, SubsetDefinition, SubsetRecord};
        let members = |prefix: &str, n: usize| -> Vec<String> {
            (0..n).map(|i| format!("{prefix}/{i}.jpg")).collect()
        };
        let lists = |list: &str| SubsetDefinition::Vtab1kLists {
            list: list.into(),
            digests: [
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
            .collect(),
        };
        match dataset {
            "cifar100" => Some(DataSubsets {
                train: SubsetRecord::new(
                    Split::Train800val200,
                    lists("train800val200.txt"),
                    &members("train", 1000),
                ),
                eval: SubsetRecord::new(Split::Test, lists("test.txt"), &members("test", 300)),
            }),
            "dtd" => Some(DataSubsets {
                train: SubsetRecord::new(
                    Split::Train800val200,
                    SubsetDefinition::SeededDraw {
                        seed: 0,
                        pool: Part::DtdFoldTrainval { fold: 1 },
                        pool_size: 3760,
                        drawn: 1000,
                    },
                    &members("images", 1000),
                ),
                eval: SubsetRecord::new(
                    Split::Test,
                    SubsetDefinition::Whole {
                        part: Part::DtdFoldTest { fold: 1 },
                    },
                    &members("images", 1880),
                ),
            }),
            _ => None,
        }
    }

    /// 3 datasets x 4 configs; lora has 3 seeds on dtd; full never ran on flowers102.
    /// Given out of order on purpose.
    pub(super) fn records() -> Vec<RunRecord> {
        let lora = "lora r=8 a=8 q,v";
        vec![
            rec("flowers102", "lora", lora, 0, 99.1),
            rec("dtd", "lora", lora, 2, 72.0),
            rec("dtd", "lora", lora, 0, 72.41),
            rec("dtd", "lora", lora, 1, 72.82),
            rec("cifar100", "lora", lora, 0, 91.5),
            rec("cifar100", "full", "full", 0, 90.2),
            rec("dtd", "full", "full", 0, 70.5),
            rec("cifar100", "linear", "linear", 0, 80.3),
            rec("dtd", "linear", "linear", 0, 69.6),
            rec("flowers102", "linear", "linear", 0, 98.9),
            rec("flowers102", "bitfit", "bitfit", 0, 99.0),
            rec("dtd", "bitfit", "bitfit", 0, 71.1),
            rec("cifar100", "bitfit", "bitfit", 0, 88.0),
        ]
    }

    pub(super) fn tmp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vtab-report-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn table_mean_std_and_avg() {
        let t = build_table(&records());
        assert_eq!(t.datasets, ["cifar100", "dtd", "flowers102"]);
        let configs: Vec<&str> = t.rows.iter().map(|r| r.config.as_str()).collect();
        assert_eq!(configs, ["linear", "bitfit", "lora r=8 a=8 q,v", "full"]);

        let lora = &t.rows[2];
        let dtd = lora.cells[1].as_ref().unwrap();
        assert_eq!(dtd.n, 3);
        assert!((dtd.mean - 72.41).abs() < 1e-9);
        // Deviations -0.41, 0, +0.41: sample variance 2 * 0.41^2 / 2.
        assert!((dtd.std.unwrap() - 0.41).abs() < 1e-9);
        let cifar = lora.cells[0].as_ref().unwrap();
        assert_eq!((cifar.n, cifar.std), (1, None));
        assert!((lora.avg - (91.5 + 72.41 + 99.1) / 3.0).abs() < 1e-9);
        assert!(lora.complete);
        assert!(lora.trainable_varies);
        // Each dataset counts once in the trainable mean, not once per seed.
        let want = (head(100) + head(47) + head(102)) as f64 / 3.0 + 294_912.0;
        assert!((lora.trainable - want).abs() < 1e-6);

        let full = &t.rows[3];
        assert!(full.cells[2].is_none());
        assert!(!full.complete);
        assert!((full.avg - (90.2 + 70.5) / 2.0).abs() < 1e-9);
        let want = (head(100) + head(47)) as f64 / 2.0 + BACKBONE as f64;
        assert!((full.trainable - want).abs() < 1e-6);
    }

    #[test]
    fn stats_helpers() {
        assert_eq!(sample_std(&[1.0]), None);
        assert!(
            (sample_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap() - 2.138089935).abs()
                < 1e-9
        );
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
    }

    #[test]
    fn rows_sort_by_family_then_natural_label() {
        let mut rs = Vec::new();
        for (m, c) in [
            ("full", "full"),
            ("lora", "lora r=16"),
            ("lora", "lora r=4"),
            ("adapter", "adapter"),
            ("vera", "vera r=256"),
            ("ia3", "ia3"),
            ("lora", "lora r=8"),
            ("linear", "linear"),
            ("bitfit", "bitfit"),
        ] {
            rs.push(rec("dtd", m, c, 0, 50.0));
        }
        let t = build_table(&rs);
        let configs: Vec<&str> = t.rows.iter().map(|r| r.config.as_str()).collect();
        assert_eq!(
            configs,
            [
                "linear",
                "bitfit",
                "ia3",
                "vera r=256",
                "lora r=4",
                "lora r=8",
                "lora r=16",
                "full",
                "adapter"
            ]
        );
    }

    #[test]
    fn formatting_helpers() {
        assert_eq!(human_count(76_900.0), "76.9K");
        assert_eq!(human_count(300_000.0), "0.30M");
        assert_eq!(human_count(85_875_556.0), "85.88M");
        assert_eq!(human_count(512.0), "512");
        assert_eq!(human_pct(0.35), "0.35%");
        assert_eq!(human_pct(0.043), "0.043%");
        assert_eq!(
            xml_escape(r#"a<b & "c">'"#),
            "a&lt;b &amp; &quot;c&quot;&gt;&apos;"
        );
        assert_eq!(file_stem("vtab/dtd 1"), "vtab_dtd_1");
        assert_eq!(nice_step(1.3), 2.0);
        let decades: Vec<String> = [-1, 0, 2, 3, 5, 6, 8, 9, 10].map(decade_label).into();
        assert_eq!(
            decades,
            ["1e-1", "1", "100", "1K", "100K", "1M", "100M", "1B", "10B"]
        );
        assert_eq!(nice_step(0.07), 0.1);
    }

    #[test]
    fn format_from_str() {
        assert_eq!("md".parse::<Format>(), Ok(Format::Md));
        assert_eq!("csv".parse::<Format>(), Ok(Format::Csv));
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        let err = "html".parse::<Format>().unwrap_err();
        assert!(
            err.contains("'html'") && err.contains("md, csv, json"),
            "{err}"
        );
        assert_eq!(Format::Json.to_string(), "json");
    }

    #[test]
    fn snapshot_summary_csv() {
        let dir = tmp_dir("summary");
        let path = dir.join("summary.csv");
        write_summary_csv(&records(), &path).unwrap();
        insta::assert_snapshot!(std::fs::read_to_string(&path).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn snapshot_table_csv() {
        let t = build_table(&records());
        let dir = tmp_dir("table");
        let path = dir.join("table.csv");
        write_table_csv(&t, &path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written, render(&t, &records(), Format::Csv));
        insta::assert_snapshot!(written);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn snapshot_markdown() {
        let t = build_table(&records());
        insta::assert_snapshot!(render(&t, &records(), Format::Md));
    }

    #[test]
    fn json_has_records_and_table() {
        let recs = records();
        let t = build_table(&recs);
        let v: serde_json::Value = serde_json::from_str(&render(&t, &recs, Format::Json)).unwrap();
        let back: Vec<RunRecord> = serde_json::from_value(v["records"].clone()).unwrap();
        assert_eq!(back.len(), recs.len());
        assert!(back.iter().all(|r| recs.contains(r)));
        assert_eq!(back[0].dataset, "cifar100");
        let table: Table = serde_json::from_value(v["table"].clone()).unwrap();
        assert_eq!(table, t);
    }

    #[test]
    fn summary_hparam_columns_are_unique() {
        let mut r = rec("dtd", "lora", "lora", 3, 50.0);
        r.hparams.insert("seed".into(), "7".into());
        let rows = summary_rows(&[r]);
        assert!(rows[0].contains(&"hp_seed".to_string()));
        let unique: BTreeSet<&String> = rows[0].iter().collect();
        assert_eq!(unique.len(), rows[0].len());
    }

    #[test]
    fn plots_are_well_formed_svg_with_one_marker_per_config() {
        let mut recs = records();
        // A label that needs escaping must survive into the SVG as text.
        recs.push(rec("dtd", "vera", "vera r=256 <q&v>", 0, 71.7));
        let dir = tmp_dir("plots");
        let paths = write_plots(&recs, &dir).unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["plot_cifar100.svg", "plot_dtd.svg", "plot_flowers102.svg"]
        );
        for (path, want) in paths.iter().zip([4, 5, 3]) {
            let svg = std::fs::read_to_string(path).unwrap();
            let doc = roxmltree::Document::parse(&svg).unwrap();
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            assert_eq!(
                root.tag_name().namespace(),
                Some("http://www.w3.org/2000/svg")
            );
            let markers: Vec<_> = doc
                .descendants()
                .filter(|n| n.has_tag_name("circle") && n.attribute("class") == Some("marker"))
                .collect();
            assert_eq!(markers.len(), want, "{}", path.display());
            let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
            assert!(texts
                .iter()
                .any(|t| t.ends_with("top-1 vs trainable parameters")));
            assert!(texts.contains(&"lora r=8 a=8 q,v"));
            assert!(texts.contains(&"lora"), "legend lists the families");
        }
        let dtd = std::fs::read_to_string(&paths[1]).unwrap();
        let doc = roxmltree::Document::parse(&dtd).unwrap();
        assert!(doc
            .descendants()
            .any(|n| n.text() == Some("vera r=256 <q&v>")));
        // Only lora on dtd has several seeds, so exactly one error bar.
        let bars = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("errbar"))
            .count();
        assert_eq!(bars, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn empty_input_gives_empty_outputs() {
        let t = build_table(&[]);
        assert!(t.datasets.is_empty() && t.rows.is_empty());
        let md = render(&t, &[], Format::Md);
        assert!(md.contains("no finished runs"), "{md}");
        assert_eq!(
            render(&t, &[], Format::Csv),
            "config,method,avg,trainable,trainable_pct\n"
        );
        let dir = tmp_dir("empty");
        let path = dir.join("summary.csv");
        write_summary_csv(&[], &path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "dataset,method,config,seed,top1,trainable,trainable_pct,epoch_time_s,\
             peak_mem_mib,train_img_s,wall_s,key,train_subset,eval_subset,vtab1k_comparable\n"
        );
        let plots_dir = dir.join("plots");
        assert!(write_plots(&[], &plots_dir).unwrap().is_empty());
        assert!(!plots_dir.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
