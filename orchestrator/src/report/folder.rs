//! The report folder of one suite: where it is by default, refusing a store as the folder,
//! removing the previous report's files, writing every CSV, the Markdown and the plots (SVG,
//! and each rendered to PNG). Touches only the files a report owns; never the store.
use std::path::{Path, PathBuf};

use super::{
    file_stem, latex, vtab_table, write_curves, write_overview, write_per_class_csv, write_plots,
    write_summary_csv, write_table_csv, ReportError, RunRecord, Table,
};

/// The files a report owns at the top of its folder (besides `plots/*.svg` and
/// `plots/*.png`), a grid suite's and a protocol's.
pub const OWNED: [&str; 9] = [
    "summary.csv",
    "table.csv",
    "per_class.csv",
    "report.md",
    "selection.csv",
    "final.csv",
    "search.csv",
    "vtab_table.csv",
    "vtab_table.tex",
];

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

/// Removes the previous report's files from `dir`: [`OWNED`], `plots/*.svg`, `plots/*.png`.
fn remove_stale(dir: &Path) -> Result<(), ReportError> {
    let mut stale: Vec<PathBuf> = OWNED.iter().map(|f| dir.join(f)).collect();
    if let Ok(rd) = std::fs::read_dir(dir.join("plots")) {
        stale.extend(
            rd.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "svg" || x == "png")),
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

/// Makes `dir` ready for a report: refuses a store (`CACHEDIR.TAG`) and, with `nothing`
/// (no finished run), stops before anything is written or removed; else creates it and
/// removes the previous report's files.
pub(super) fn prepare(dir: &Path, nothing: bool) -> Result<(), ReportError> {
    if dir.join("CACHEDIR.TAG").exists() {
        return Err(ReportError::InsideStore {
            path: dir.to_path_buf(),
        });
    }
    if nothing {
        return Err(ReportError::NothingFinished {
            path: dir.to_path_buf(),
        });
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    remove_stale(dir)
}

/// What was written to `dir`.
pub(super) fn finish(dir: &Path, files: Vec<PathBuf>) -> Written {
    Written {
        dir: dir.to_path_buf(),
        files,
        under_cachedir: cachedir_above(dir),
    }
}

/// Renders each SVG to a PNG beside it; returns the SVGs and PNGs, each SVG followed by
/// its PNG.
pub(super) fn with_pngs(svgs: Vec<PathBuf>) -> Result<Vec<PathBuf>, ReportError> {
    let mut out = Vec::new();
    for svg in svgs {
        let text = std::fs::read_to_string(&svg).map_err(io(&svg))?;
        let png = svg.with_extension("png");
        let bytes = super::png::render(&text).map_err(|problem| ReportError::Png {
            path: svg.clone(),
            problem,
        })?;
        std::fs::write(&png, bytes).map_err(io(&png))?;
        out.push(svg);
        out.push(png);
    }
    Ok(out)
}

/// The split a grid suite's records were evaluated on (`test` unless they say otherwise).
pub(super) fn eval_split(records: &[RunRecord]) -> String {
    let mut splits: Vec<&str> = records
        .iter()
        .filter_map(|r| r.hparams.get("eval_split").map(String::as_str))
        .collect();
    splits.sort_unstable();
    splits.dedup();
    match splits.as_slice() {
        [one] => one.to_string(),
        [] => "test".to_string(),
        many => many.join("/"),
    }
}

/// Writes the report of `records` into `dir`: `summary.csv`, `table.csv`, `per_class.csv`,
/// `vtab_table.csv` and `vtab_table.tex` (the VTAB-1k table, a row per configuration),
/// `report.md` (the given Markdown), `plots/plot_<dataset>.svg`, `plots/curves_<dataset>.svg`
/// and `plots/overview.svg`, each with its PNG, after removing the previous report's files
/// there (so no plot of an earlier run stays). Refuses a folder that carries `CACHEDIR.TAG`
/// (a store) and an empty `records` (nothing is written or removed then).
pub fn write_report(
    dir: &Path,
    records: &[RunRecord],
    table: &Table,
    markdown: &str,
) -> Result<Written, ReportError> {
    prepare(dir, records.is_empty())?;
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
    let vtab = vtab_table::build_vtab_table(records, vtab_table::RowsBy::Config);
    let split = eval_split(records);
    let vtab_csv = dir.join("vtab_table.csv");
    write_file(
        &vtab_csv,
        &super::csv_out::csv_string(&vtab_table::csv_rows(&vtab)),
    )?;
    files.push(vtab_csv);
    let tex = dir.join("vtab_table.tex");
    write_file(
        &tex,
        &latex::vtab_table(&vtab, &split, &grid_caption(&split)),
    )?;
    files.push(tex);
    let md = dir.join("report.md");
    write_file(&md, markdown)?;
    files.push(md);
    let plots = dir.join("plots");
    let mut svgs = write_plots(records, &plots)?;
    svgs.extend(write_curves(records, &plots)?);
    svgs.extend(write_overview(table, records, &plots)?);
    files.extend(with_pngs(svgs)?);
    Ok(finish(dir, files))
}

/// The caption comment of a grid suite's LaTeX table.
pub(super) fn grid_caption(split: &str) -> String {
    format!("{split} top-1 (%) of every configuration, mean over its seeds.")
}
