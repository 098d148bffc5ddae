//! The report folder of one suite: where it is by default, refusing a store as the folder,
//! removing the previous report's files, writing every CSV, the Markdown and the plots.
//! Touches only the files a report owns; never the store.
use std::path::{Path, PathBuf};

use super::{
    file_stem, write_curves, write_overview, write_per_class_csv, write_plots, write_summary_csv,
    write_table_csv, ReportError, RunRecord, Table,
};

/// The files a report owns at the top of its folder (besides `plots/*.svg`).
pub const OWNED: [&str; 4] = ["summary.csv", "table.csv", "per_class.csv", "report.md"];

/// What [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub dir: PathBuf,
    /// Every file written, CSVs and Markdown first, then the plots.
    pub files: Vec<PathBuf>,
    /// A folder above `dir` that carries `CACHEDIR.TAG` (backup tools skip everything under
    /// it), if any.
    pub under_cachedir: Option<PathBuf>,
}

/// `reports/<suite name>/` beside the store (the default store `results/store` gives
/// `results/reports/<suite name>/`): outside the store and its `CACHEDIR.TAG`, one folder per
/// suite. Characters outside `[A-Za-z0-9._-]` in the name become `_`.
pub fn default_dir(store_root: &Path, suite_name: &str) -> PathBuf {
    let base = store_root.parent().unwrap_or(Path::new("."));
    base.join("reports").join(file_stem(suite_name))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `text` to `path`, creating its folder.
pub(super) fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::write(path, text).map_err(io(path))
}

/// Removes the previous report's files from `dir`: [`OWNED`] and `plots/*.svg`.
fn remove_stale(dir: &Path) -> Result<(), ReportError> {
    let mut stale: Vec<PathBuf> = OWNED.iter().map(|f| dir.join(f)).collect();
    if let Ok(rd) = std::fs::read_dir(dir.join("plots")) {
        stale.extend(
            rd.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "svg")),
        );
    }
    for p in stale {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&p)(e)),
            _ => {}
        }
    }
    Ok(())
}

/// The nearest folder at or above `dir` that carries `CACHEDIR.TAG`.
fn cachedir_above(dir: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(dir).ok()?;
    abs.ancestors()
        .find(|a| a.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// Writes the report of `records` into `dir`: `summary.csv`, `table.csv`, `per_class.csv`,
/// `report.md` (the given Markdown), `plots/plot_<dataset>.svg`, `plots/curves_<dataset>.svg`
/// and `plots/overview.svg`, after removing the previous report's files there (so no plot of
/// an earlier run stays). Refuses a folder that carries `CACHEDIR.TAG` (a store) and an empty
/// `records` (nothing is written or removed then).
pub fn write_report(
    dir: &Path,
    records: &[RunRecord],
    table: &Table,
    markdown: &str,
) -> Result<Written, ReportError> {
    if dir.join("CACHEDIR.TAG").exists() {
        return Err(ReportError::InsideStore {
            path: dir.to_path_buf(),
        });
    }
    if records.is_empty() {
        return Err(ReportError::NothingFinished {
            path: dir.to_path_buf(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    remove_stale(dir)?;
    let mut files = Vec::new();
    let summary = dir.join("summary.csv");
    write_summary_csv(records, &summary)?;
    files.push(summary);
    let table_csv = dir.join("table.csv");
    write_table_csv(table, &table_csv)?;
    files.push(table_csv);
    let per_class = dir.join("per_class.csv");
    write_per_class_csv(records, &per_class)?;
    files.push(per_class);
    let md = dir.join("report.md");
    write_file(&md, markdown)?;
    files.push(md);
    let plots = dir.join("plots");
    files.extend(write_plots(records, &plots)?);
    files.extend(write_curves(records, &plots)?);
    files.extend(write_overview(table, records, &plots)?);
    Ok(Written {
        dir: dir.to_path_buf(),
        files,
        under_cachedir: cachedir_above(dir),
    })
}
