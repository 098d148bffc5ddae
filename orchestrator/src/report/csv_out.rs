//! The report's CSV files: `summary.csv` (one row per run, every setting of its key, results,
//! cost), `table.csv` (the aggregated table) and `per_class.csv`. Strings only; no store.
use std::collections::BTreeSet;
use std::path::Path;

use super::table::sorted_records;
use super::{subsets, PeakKind, ReportError, RunRecord, Table};

/// Settings columns of `summary.csv`, in order (a setting no record has gets no column; any
/// other setting, such as the parameters of the catalogue's other methods, follows these,
/// sorted by name). Together with `seed` these are everything
/// that enters a run's key: the backbone, numerics, data, optimisation and method parameters.
pub const SETTING_ORDER: [&str; 22] = [
    "numerics",
    "backbone",
    "img_size",
    "train_split",
    "eval_split",
    "sample_seed",
    "epochs",
    "batch_size",
    "lr",
    "min_lr",
    "weight_decay",
    "warmup_epochs",
    "label_smoothing",
    "clip_grad_norm",
    "augment",
    "r",
    "alpha",
    "rslora",
    "dropout",
    "targets",
    "d_initial",
    "projection_prng_key",
];

const SUMMARY_HEAD: [&str; 6] = [
    "dataset",
    "group",
    "method",
    "method_table",
    "config",
    "seed",
];
const SUMMARY_TAIL: [&str; 23] = [
    "top1",
    "test_n",
    "num_classes",
    "trainable",
    "trainable_pct",
    "trainable_backbone",
    "trainable_backbone_pct",
    "params_total",
    "epoch_time_s",
    "epochs_s",
    "train_wall_s",
    "overhead_s",
    "eval_wall_s",
    "gpu_hours",
    "cpu_hours",
    "peak_cuda_alloc_mib",
    "peak_cpu_rss_mib",
    "train_img_s",
    "key",
    "train_subset",
    "eval_subset",
    "vtab1k_comparable",
    "best_config",
];

/// The settings columns for `records`: [`SETTING_ORDER`] first, then the rest by name.
fn setting_columns(records: &[RunRecord]) -> Vec<&str> {
    let present: BTreeSet<&str> = records
        .iter()
        .flat_map(|r| r.hparams.keys().map(String::as_str))
        .collect();
    let mut cols: Vec<&str> = SETTING_ORDER
        .iter()
        .copied()
        .filter(|k| present.contains(k))
        .collect();
    cols.extend(present.iter().filter(|k| !SETTING_ORDER.contains(k)));
    cols
}

/// A run's peak memory of kind `k` in MiB, empty where it has none of that kind (never 0 for
/// "not recorded").
fn peak(r: &RunRecord, k: PeakKind) -> String {
    match r.peak_memory() {
        Some((v, kind)) if kind == k => format!("{v:.1}"),
        _ => String::new(),
    }
}

/// The summary as rows of strings, header first. `best_config` is `true` on the runs of the
/// configuration with the highest mean top-1 on their dataset (see [`Table`]).
pub(super) fn summary_rows(records: &[RunRecord], table: &Table) -> Vec<Vec<String>> {
    let settings = setting_columns(records);
    let fixed = |k: &str| SUMMARY_HEAD.contains(&k) || SUMMARY_TAIL.contains(&k);
    let mut header: Vec<String> = SUMMARY_HEAD.iter().map(|s| s.to_string()).collect();
    // A setting named like a fixed column ("seed") gets an `hp_` prefix, to keep names unique.
    header.extend(settings.iter().map(|k| match fixed(k) {
        true => format!("hp_{k}"),
        false => k.to_string(),
    }));
    header.extend(SUMMARY_TAIL.iter().map(|s| s.to_string()));
    let best = |r: &RunRecord| {
        let col = table.datasets.iter().position(|d| *d == r.dataset);
        table
            .rows
            .iter()
            .find(|row| row.config == r.config && row.method == r.method)
            .and_then(|row| row.cells.get(col?)?.as_ref())
            .is_some_and(|c| c.best)
    };
    let mut rows = vec![header];
    for r in sorted_records(records) {
        let mut row = vec![
            r.dataset.clone(),
            r.group.clone(),
            r.method.clone(),
            r.method_table.clone(),
            r.config.clone(),
            r.seed.to_string(),
        ];
        row.extend(
            settings
                .iter()
                .map(|k| r.hparams.get(*k).cloned().unwrap_or_default()),
        );
        row.extend([
            r.top1.to_string(),
            r.test_n.to_string(),
            r.num_classes.to_string(),
            r.trainable.to_string(),
            r.trainable_pct.to_string(),
            r.trainable_backbone.to_string(),
            r.trainable_backbone_pct()
                .map(|p| format!("{p:.4}"))
                .unwrap_or_default(),
            match r.params_total {
                0 => String::new(),
                n => n.to_string(),
            },
            format!("{:.4}", r.epoch_time_s),
            format!("{:.4}", r.epochs_s),
            format!("{:.4}", r.wall_s),
            format!("{:.4}", r.overhead_s()),
            format!("{:.4}", r.eval_wall_s),
            format!("{:.6}", r.gpu_hours),
            format!("{:.6}", r.cpu_hours()),
            peak(r, PeakKind::CudaAllocator),
            peak(r, PeakKind::CpuRss),
            format!("{:.1}", r.train_img_s),
            r.key.clone(),
        ]);
        row.extend(subsets::summary_cells(r));
        row.push(best(r).to_string());
        rows.push(row);
    }
    rows
}

/// The table as rows of strings, header first: config, method, per dataset `<ds>_mean`,
/// `<ds>_std`, `<ds>_n`, `<ds>_trainable` (head included), `<ds>_best` (all blank where the
/// row lacks the dataset; std blank when n == 1), then avg, trainable_backbone, the cost
/// columns train_s_per_run, epochs_s_per_run, overhead_s_per_run, gpu_hours, device.
pub(super) fn table_rows(table: &Table) -> Vec<Vec<String>> {
    let mut header = vec!["config".to_string(), "method".to_string()];
    for ds in &table.datasets {
        header.extend(["mean", "std", "n", "trainable", "best"].map(|c| format!("{ds}_{c}")));
    }
    header.extend(
        [
            "avg",
            "trainable_backbone",
            "train_s_per_run",
            "epochs_s_per_run",
            "overhead_s_per_run",
            "gpu_hours",
            "device",
        ]
        .map(String::from),
    );
    let mut rows = vec![header];
    for row in &table.rows {
        let mut out = vec![row.config.clone(), row.method.clone()];
        for cell in &row.cells {
            match cell {
                Some(c) => out.extend([
                    format!("{:.4}", c.mean),
                    c.std.map(|s| format!("{s:.4}")).unwrap_or_default(),
                    c.n.to_string(),
                    format!("{:.0}", c.trainable),
                    c.best.to_string(),
                ]),
                None => out.extend(std::iter::repeat_n(String::new(), 5)),
            }
        }
        out.extend([
            format!("{:.4}", row.avg),
            row.trainable_backbone.to_string(),
            format!("{:.3}", row.train_s),
            format!("{:.3}", row.epochs_s),
            format!("{:.3}", row.train_s - row.epochs_s),
            format!("{:.6}", row.gpu_hours),
            row.device.clone(),
        ]);
        rows.push(out);
    }
    rows
}

/// `per_class.csv`: dataset, config, seed, class, accuracy (percent; empty for a class the
/// split lacks), count (its images in the evaluated split); runs in summary order, classes
/// in label order.
pub(super) fn per_class_rows(records: &[RunRecord]) -> Vec<Vec<String>> {
    let header = ["dataset", "config", "seed", "class", "accuracy", "count"];
    let mut rows = vec![header.map(String::from).to_vec()];
    for r in sorted_records(records) {
        for c in &r.per_class {
            rows.push(vec![
                r.dataset.clone(),
                r.config.clone(),
                r.seed.to_string(),
                c.class.clone(),
                c.accuracy.map(|a| format!("{a:.4}")).unwrap_or_default(),
                c.count.to_string(),
            ]);
        }
    }
    rows
}

pub(super) fn csv_string(rows: &[Vec<String>]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.write_record(row)
            .expect("writing CSV to memory cannot fail");
    }
    let bytes = w.into_inner().expect("flushing CSV to memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 strings is UTF-8")
}

fn write_csv(rows: &[Vec<String>], path: &Path) -> Result<(), ReportError> {
    std::fs::write(path, csv_string(rows)).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// One row per record, sorted (dataset, config, seed): identity, one column per setting of
/// the run's key ([`SETTING_ORDER`]), then results and cost; `peak_cuda_alloc_mib` on a GPU,
/// `peak_cpu_rss_mib` on the CPU, each empty elsewhere and where not recorded;
/// `train_subset` / `eval_subset` say which examples the run used (empty where not recorded)
/// and `vtab1k_comparable` whether it is comparable with published VTAB-1k (`true` / `false`).
pub fn write_summary_csv(records: &[RunRecord], path: &Path) -> Result<(), ReportError> {
    let table = super::build_table(records);
    write_csv(&summary_rows(records, &table), path)
}

/// The table with numeric columns (see [`super::Format::Csv`]).
pub fn write_table_csv(table: &Table, path: &Path) -> Result<(), ReportError> {
    write_csv(&table_rows(table), path)
}

/// Per-class accuracy of every run (see [`per_class_rows`]).
pub fn write_per_class_csv(records: &[RunRecord], path: &Path) -> Result<(), ReportError> {
    write_csv(&per_class_rows(records), path)
}
