//! The configuration x dataset table: records grouped by configuration and dataset, mean and
//! sample std over seeds, the best configuration per dataset, trainable counts and cost.
//! Pure aggregation: no formatting, no files.
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::RunRecord;

/// Top-1 over the seeds of one configuration on one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub mean: f64,
    /// Sample standard deviation (n - 1); `None` when n == 1.
    pub std: Option<f64>,
    pub n: usize,
    /// Trainable parameters on this dataset, head included (mean over the seeds, which agree).
    pub trainable: f64,
    /// `trainable` as a percent of the model's total.
    pub trainable_pct: f64,
    /// The highest mean of the dataset's column (ties are all best).
    pub best: bool,
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
    /// Trainable parameters without the head (the same on every dataset; the cells hold the
    /// exact per-dataset counts with the head).
    pub trainable_backbone: i64,
    /// Whether `trainable_backbone` differs between the row's records (it should not).
    pub backbone_varies: bool,
    /// Mean train node wall time per run, seconds.
    pub train_s: f64,
    /// Mean sum of epoch times per run, seconds (`train_s - epochs_s` is overhead).
    pub epochs_s: f64,
    /// GPU-hours of all the row's runs together (0 for CPU runs).
    pub gpu_hours: f64,
    /// The device kinds the row's runs computed on: `cpu`, `cuda` or `cpu+cuda`.
    pub device: String,
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

pub(super) fn family_rank(method: &str) -> usize {
    FAMILIES
        .iter()
        .position(|f| *f == method)
        .unwrap_or(FAMILIES.len())
}

/// Compares strings with digit runs taken as numbers: "r=4" < "r=16".
pub(super) fn natural_cmp(a: &str, b: &str) -> Ordering {
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
pub(super) struct RowKey {
    pub method: String,
    pub config: String,
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

pub(super) fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n - 1); `None` for fewer than two values.
pub(super) fn sample_std(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

/// The cell of one configuration on one dataset (`best` is set by [`build_table`]).
pub(super) fn cell_of(records: &[&RunRecord]) -> Cell {
    let of = |f: fn(&RunRecord) -> f64| mean(&records.iter().map(|r| f(r)).collect::<Vec<_>>());
    let top1: Vec<f64> = records.iter().map(|r| r.top1).collect();
    Cell {
        mean: mean(&top1),
        std: sample_std(&top1),
        n: top1.len(),
        trainable: of(|r| r.trainable as f64),
        trainable_pct: of(|r| r.trainable_pct),
        best: false,
    }
}

/// Records grouped by configuration, then dataset. Every record counts, so a seed that was
/// recorded twice counts twice; the store's content hashing keeps that from happening.
pub(super) fn group(records: &[RunRecord]) -> BTreeMap<RowKey, BTreeMap<&str, Vec<&RunRecord>>> {
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

fn device_of(records: &[&RunRecord]) -> String {
    let (gpu, cpu) = (
        records.iter().any(|r| r.on_gpu()),
        records.iter().any(|r| !r.on_gpu()),
    );
    match (cpu, gpu) {
        (true, true) => "cpu+cuda",
        (false, true) => "cuda",
        _ => "cpu",
    }
    .to_string()
}

/// Aggregates records into the method configuration x dataset table.
///
/// Empty input is not an error anywhere in this module: it gives a table with no datasets
/// Marks, in each column, the cells with the highest mean (`best`) over `rows`.
pub(super) fn mark_best(mut rows: Vec<&mut Vec<Option<Cell>>>) {
    let columns = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    for col in 0..columns {
        let best = rows
            .iter()
            .filter_map(|r| r.get(col)?.as_ref().map(|c| c.mean))
            .fold(f64::NEG_INFINITY, f64::max);
        for row in rows.iter_mut() {
            if let Some(Some(c)) = row.get_mut(col) {
                c.best = c.mean == best;
            }
        }
    }
}

/// and no rows. The caller decides whether that is fatal (`report` writes nothing then).
pub fn build_table(records: &[RunRecord]) -> Table {
    let datasets: Vec<String> = records
        .iter()
        .map(|r| r.dataset.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut rows: Vec<Row> = group(records)
        .into_iter()
        .map(|(key, by_ds)| {
            let cells: Vec<Option<Cell>> = datasets
                .iter()
                .map(|ds| by_ds.get(ds.as_str()).map(|rs| cell_of(rs)))
                .collect();
            let means: Vec<f64> = cells.iter().flatten().map(|c| c.mean).collect();
            let all: Vec<&RunRecord> = by_ds.values().flatten().copied().collect();
            let per_run =
                |f: fn(&RunRecord) -> f64| mean(&all.iter().map(|r| f(r)).collect::<Vec<_>>());
            Row {
                config: key.config,
                method: key.method,
                avg: mean(&means),
                complete: means.len() == datasets.len(),
                trainable_backbone: all[0].trainable_backbone,
                backbone_varies: all
                    .iter()
                    .any(|r| r.trainable_backbone != all[0].trainable_backbone),
                train_s: per_run(|r| r.wall_s),
                epochs_s: per_run(|r| r.epochs_s),
                gpu_hours: all.iter().map(|r| r.gpu_hours).sum(),
                device: device_of(&all),
                cells,
            }
        })
        .collect();
    mark_best(rows.iter_mut().map(|r| &mut r.cells).collect());
    Table { datasets, rows }
}

/// Records in summary order: (dataset, config, seed), then method and key for ties.
pub(super) fn sorted_records(records: &[RunRecord]) -> Vec<&RunRecord> {
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
