//! The report of a suite under the VTAB-1k protocol: the VTAB-1k table of the finals, every
//! final row's metrics and cost (its finals' and its search's device-hours), the selections,
//! the search (val200), the same `summary.csv` as a grid suite, and the plots. Receives
//! records and choices (`records::collect_protocol`); never reads the store.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::csv_out::csv_string;
use super::folder::{self, write_file, Written};
use super::table::{family_rank, mean, natural_cmp, sample_std, sorted_records};
use super::vtab_table::{self, build_vtab_table, RowsBy, VtabTable};
use super::{
    build_table, human_count, human_pct, latex, md_escape, reference, subsets, Format, PeakKind,
    Reference, ReportError, RunRecord,
};

/// One candidate of a selection, as its select node scored it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub config: String,
    pub settings: BTreeMap<String, String>,
    /// Val200 top-1 per search seed (the finished ones).
    pub val_top1: Vec<f64>,
    /// Mean over the search seeds; `None` for a failed candidate and where nothing was
    /// searched (a table with one configuration).
    pub mean_val_top1: Option<f64>,
    pub trainable: Option<i64>,
    /// Why it lost without a score (a search run of it failed).
    pub failed: Option<String>,
}

/// What one (dataset, method table) chose, from which candidates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub dataset: String,
    /// The method table.
    pub method: String,
    /// Empty where nothing was searched (one candidate).
    pub search_seeds: Vec<u64>,
    /// In suite order.
    pub candidates: Vec<Candidate>,
    pub chosen: usize,
}

/// What the protocol report is made of.
pub struct Protocol<'a> {
    pub suite: &'a str,
    /// Final runs (test split).
    pub finals: &'a [RunRecord],
    /// Search runs (val200).
    pub search: &'a [RunRecord],
    /// Per (dataset, method table) in suite order; `None`: not selected yet.
    pub choices: &'a [Option<Choice>],
    pub reference: Option<&'a Reference>,
}

/// One (dataset, method table) of the finals: its test top-1 over the final seeds, its
/// parameters, speed, memory and cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FinalRow {
    pub dataset: String,
    pub group: String,
    /// The method table.
    pub method: String,
    /// The method family.
    pub method_kind: String,
    /// The chosen configuration's label.
    pub chosen: String,
    pub top1: Vec<f64>,
    pub mean: f64,
    /// Sample std (n - 1); `None` for one seed.
    pub std: Option<f64>,
    /// Head included.
    pub trainable: i64,
    /// Of the whole model, head included.
    pub trainable_pct: f64,
    /// Head excluded.
    pub trainable_backbone: i64,
    /// Head excluded, of the backbone's parameters.
    pub trainable_backbone_pct: Option<f64>,
    /// Mean over the finals of their mean seconds per epoch.
    pub epoch_time_s: f64,
    /// Mean over the finals of their mean training images per second.
    pub train_img_s: f64,
    /// The highest peak over the finals and what it measures (`None`: not recorded).
    pub peak: Option<(f64, PeakKind)>,
    /// Hours the final runs held a GPU / the CPU (train + eval node wall).
    pub final_gpu_hours: f64,
    pub final_cpu_hours: f64,
    /// The search runs of this selection that finished: how many, and their hours.
    pub search_runs: usize,
    pub search_gpu_hours: f64,
    pub search_cpu_hours: f64,
}

fn key_of(r: &RunRecord) -> (String, String) {
    (r.dataset.clone(), r.method_row().to_string())
}

/// A sum that is 0, not -0, over nothing (`Sum for f64` starts at -0.0).
fn total(xs: impl Iterator<Item = f64>) -> f64 {
    xs.fold(0.0, |a, x| a + x)
}

/// The rows of the finals, by dataset then method (family order, then name).
pub fn final_rows(finals: &[RunRecord], search: &[RunRecord]) -> Vec<FinalRow> {
    let mut groups: BTreeMap<(String, String), Vec<&RunRecord>> = BTreeMap::new();
    for r in finals {
        groups.entry(key_of(r)).or_default().push(r);
    }
    let mut rows: Vec<FinalRow> = groups
        .into_iter()
        .map(|((dataset, method), rs)| {
            let top1: Vec<f64> = rs.iter().map(|r| r.top1).collect();
            let per = |f: fn(&RunRecord) -> f64| mean(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            let searched: Vec<&RunRecord> = search
                .iter()
                .filter(|s| key_of(s) == (dataset.clone(), method.clone()))
                .collect();
            let first = rs[0];
            FinalRow {
                group: first.group.clone(),
                method_kind: first.method.clone(),
                chosen: first.config.clone(),
                mean: mean(&top1),
                std: sample_std(&top1),
                top1,
                trainable: first.trainable,
                trainable_pct: first.trainable_pct,
                trainable_backbone: first.trainable_backbone,
                trainable_backbone_pct: first.trainable_backbone_pct(),
                epoch_time_s: per(|r| r.epoch_time_s),
                train_img_s: per(|r| r.train_img_s),
                peak: rs
                    .iter()
                    .filter_map(|r| r.peak_memory())
                    .max_by(|a, b| a.1.cmp(&b.1).reverse().then(a.0.total_cmp(&b.0))),
                final_gpu_hours: total(rs.iter().map(|r| r.gpu_hours)),
                final_cpu_hours: total(rs.iter().map(|r| r.cpu_hours())),
                search_runs: searched.len(),
                search_gpu_hours: total(searched.iter().map(|r| r.gpu_hours)),
                search_cpu_hours: total(searched.iter().map(|r| r.cpu_hours())),
                dataset,
                method,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        a.dataset
            .cmp(&b.dataset)
            .then_with(|| family_rank(&a.method_kind).cmp(&family_rank(&b.method_kind)))
            .then_with(|| natural_cmp(&a.method, &b.method))
    });
    rows
}

/// `mean ± std (n)` (sample std; `mean` alone for one value).
pub fn mean_std(v: &[f64]) -> String {
    let m = mean(v);
    match sample_std(v) {
        Some(s) => format!("{m:.2} ± {s:.2} ({})", v.len()),
        None => format!("{m:.2}"),
    }
}

fn settings(s: &BTreeMap<String, String>) -> String {
    s.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_default()
}

/// `final.csv`: a row per (dataset, method table), columns named with their unit and what
/// they count (head included or not; which peak; which device's hours).
fn final_csv(rows: &[FinalRow]) -> Vec<Vec<String>> {
    let header = [
        "dataset",
        "method",
        "chosen",
        "group",
        "method_kind",
        "test_top1",
        "test_top1_mean",
        "test_top1_std",
        "n",
        "trainable",
        "trainable_pct",
        "trainable_backbone",
        "trainable_backbone_pct",
        "epoch_time_s",
        "train_img_s",
        "peak_cuda_alloc_mib",
        "peak_cpu_rss_mib",
        "final_gpu_hours",
        "final_cpu_hours",
        "search_runs",
        "search_gpu_hours",
        "search_cpu_hours",
    ];
    let mut out = vec![header.map(String::from).to_vec()];
    for r in rows {
        let peak = |k: PeakKind| num(r.peak.filter(|p| p.1 == k).map(|p| p.0), 1);
        out.push(vec![
            r.dataset.clone(),
            r.method.clone(),
            r.chosen.clone(),
            r.group.clone(),
            r.method_kind.clone(),
            mean_std(&r.top1),
            format!("{:.4}", r.mean),
            num(r.std, 4),
            r.top1.len().to_string(),
            r.trainable.to_string(),
            format!("{:.4}", r.trainable_pct),
            r.trainable_backbone.to_string(),
            num(r.trainable_backbone_pct, 4),
            format!("{:.4}", r.epoch_time_s),
            format!("{:.1}", r.train_img_s),
            peak(PeakKind::CudaAllocator),
            peak(PeakKind::CpuRss),
            format!("{:.6}", r.final_gpu_hours),
            format!("{:.6}", r.final_cpu_hours),
            r.search_runs.to_string(),
            format!("{:.6}", r.search_gpu_hours),
            format!("{:.6}", r.search_cpu_hours),
        ]);
    }
    out
}

/// `selection.csv`: what each (dataset, method table) chose and by how much.
fn selection_csv(choices: &[Option<Choice>]) -> Vec<Vec<String>> {
    let header = [
        "dataset",
        "method",
        "chosen",
        "settings",
        "val200_top1_winner",
        "val200_top1_runner_up",
        "candidates",
        "search_seeds",
        "failed_candidates",
    ];
    let mut out = vec![header.map(String::from).to_vec()];
    for c in choices.iter().flatten() {
        // The candidates that lost without a score, each with why.
        let failed: Vec<String> = c
            .candidates
            .iter()
            .filter_map(|x| Some(format!("{}: {}", x.config, x.failed.as_ref()?)))
            .collect();
        let winner = &c.candidates[c.chosen];
        let runner = c
            .candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != c.chosen)
            .filter_map(|(_, x)| x.mean_val_top1)
            .reduce(f64::max);
        let seeds = match c.search_seeds.is_empty() {
            true => "(none: one candidate)".to_string(),
            false => c
                .search_seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        };
        out.push(vec![
            c.dataset.clone(),
            c.method.clone(),
            winner.config.clone(),
            settings(&winner.settings),
            num(winner.mean_val_top1, 2),
            num(runner, 2),
            c.candidates.len().to_string(),
            seeds,
            failed.join("; "),
        ]);
    }
    out
}

/// `search.csv`: every candidate's val200 top-1 (searched selections only).
fn search_csv(choices: &[Option<Choice>]) -> Vec<Vec<String>> {
    let header = [
        "dataset",
        "method",
        "candidate",
        "val200_top1",
        "val200_top1_per_seed",
        "trainable",
        "chosen",
        "failed",
    ];
    let mut out = vec![header.map(String::from).to_vec()];
    for c in searched(choices) {
        for (i, x) in c.candidates.iter().enumerate() {
            out.push(vec![
                c.dataset.clone(),
                c.method.clone(),
                x.config.clone(),
                num(x.mean_val_top1, 2),
                x.val_top1
                    .iter()
                    .map(|v| format!("{v:.2}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                x.trainable.map(|t| t.to_string()).unwrap_or_default(),
                (i == c.chosen).to_string(),
                x.failed.clone().unwrap_or_default(),
            ]);
        }
    }
    out
}

/// The selections that searched (more than one candidate), in the search table's order:
/// by method table (suite order), then dataset.
fn searched(choices: &[Option<Choice>]) -> Vec<&Choice> {
    let mut out: Vec<&Choice> = choices
        .iter()
        .flatten()
        .filter(|c| !c.search_seeds.is_empty())
        .collect();
    let order: Vec<&str> = {
        let mut o: Vec<&str> = Vec::new();
        for c in &out {
            if !o.contains(&c.method.as_str()) {
                o.push(&c.method);
            }
        }
        o
    };
    out.sort_by_key(|c| (order.iter().position(|m| *m == c.method), c.dataset.clone()));
    out
}

/// How the hours of a set of runs are labelled: `GPU-h`, `CPU-h`, or both where they mix.
fn hours_text(gpu: f64, cpu: f64, mixed: bool) -> String {
    let h = |v: f64| format!("{v:.4}");
    match (mixed, gpu > 0.0, cpu > 0.0) {
        (false, true, _) => h(gpu),
        (false, false, _) => h(cpu),
        (true, true, true) => format!("{} GPU + {} CPU", h(gpu), h(cpu)),
        (true, true, false) => format!("{} GPU", h(gpu)),
        (true, false, _) => format!("{} CPU", h(cpu)),
    }
}

/// The final rows' metrics and cost in Markdown, each header saying what its column measures.
fn final_markdown(rows: &[FinalRow]) -> String {
    let gpu = rows
        .iter()
        .any(|r| r.final_gpu_hours + r.search_gpu_hours > 0.0);
    let cpu = rows
        .iter()
        .any(|r| r.final_cpu_hours + r.search_cpu_hours > 0.0);
    let mixed = gpu && cpu;
    let unit = match (gpu, cpu) {
        (true, false) => "GPU-h",
        (false, _) => "CPU-h",
        (true, true) => "device-h",
    };
    let kinds: Vec<PeakKind> = {
        let mut k: Vec<PeakKind> = rows.iter().filter_map(|r| r.peak.map(|p| p.1)).collect();
        k.sort();
        k.dedup();
        k
    };
    let peak_header = match kinds.as_slice() {
        [one] => format!("{} (MiB)", one.label()),
        _ => "peak memory (MiB; CUDA allocator or CPU process RSS, as marked)".to_string(),
    };
    let mut s = String::from(
        "Final runs (split: test; train800val200, mean ± std (n) over the final seeds)\n\n",
    );
    let header = [
        "dataset".to_string(),
        "method".into(),
        "chosen".into(),
        "test top-1".into(),
        "trainable, head excl. (% of backbone)".into(),
        "trainable, head incl.".into(),
        "s/epoch".into(),
        "train img/s".into(),
        peak_header,
        format!("finals {unit}"),
        format!("search {unit} (runs)"),
    ];
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(
        s,
        "| :--- | :--- | :--- |{}",
        " ---: |".repeat(header.len() - 3)
    );
    for r in rows {
        let peak = match r.peak {
            Some((v, k)) if kinds.len() > 1 => format!(
                "{v:.0} ({})",
                match k {
                    PeakKind::CudaAllocator => "CUDA",
                    PeakKind::CpuRss => "RSS",
                }
            ),
            Some((v, _)) => format!("{v:.0}"),
            None => "-".into(),
        };
        let backbone = match r.trainable_backbone_pct {
            Some(p) => format!(
                "{} ({})",
                human_count(r.trainable_backbone as f64),
                human_pct(p)
            ),
            None => human_count(r.trainable_backbone as f64),
        };
        let search = match r.search_runs {
            0 => "- (nothing searched)".to_string(),
            n => format!(
                "{} ({n})",
                hours_text(r.search_gpu_hours, r.search_cpu_hours, mixed)
            ),
        };
        let cells = [
            md_escape(&r.dataset),
            md_escape(&r.method),
            md_escape(&r.chosen),
            mean_std(&r.top1),
            backbone,
            format!("{} ({})", r.trainable, human_pct(r.trainable_pct)),
            format!("{:.2}", r.epoch_time_s),
            format!("{:.0}", r.train_img_s),
            peak,
            hours_text(r.final_gpu_hours, r.final_cpu_hours, mixed),
            search,
        ];
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    let (fg, fc, sg, sc) = rows.iter().fold((0.0, 0.0, 0.0, 0.0), |a, r| {
        (
            a.0 + r.final_gpu_hours,
            a.1 + r.final_cpu_hours,
            a.2 + r.search_gpu_hours,
            a.3 + r.search_cpu_hours,
        )
    });
    let _ = write!(
        s,
        "\ntrainable: parameters the method trains; head excl. is what PEFT papers quote, as a \
         percent of the backbone (the model less its head); head incl. is what trains on that \
         dataset, as a percent of the whole model. s/epoch and train img/s: means over the \
         final runs. {}, the highest over the final runs; `-`: not recorded (runs trained \
         before it was). {unit}: the train and eval nodes' wall time on {}, summed over the \
         runs; search: every candidate x search seed of the selection that chose the row. \
         In all: finals {}, search {}.\n",
        match kinds.as_slice() {
            [PeakKind::CpuRss] => "peak RSS (CPU process): the train node process's peak \
                                   resident set (VmHWM, reset at the node's start)"
                .to_string(),
            [PeakKind::CudaAllocator] => "peak CUDA allocator: the caching allocator's peak \
                                          of allocated memory over the epochs (torch.cuda.max_memory_allocated)"
                .to_string(),
            _ => "peak memory: the CUDA caching allocator's peak of allocated memory on a GPU \
                  (CUDA), the train node process's peak resident set on the CPU (RSS)"
                .to_string(),
        },
        match (gpu, cpu) {
            (true, false) => "a GPU (one each)",
            (false, _) => "the CPU, whatever their threads (not core-hours)",
            (true, true) => "a GPU (GPU-h, one each) or the CPU (CPU-h, not core-hours)",
        },
        hours_text(fg, fc, mixed),
        hours_text(sg, sc, mixed),
    );
    s
}

/// The selections in Markdown.
fn selections_markdown(choices: &[Option<Choice>]) -> String {
    let mut s = format!(
        "Selections (rule: {}; split: val200, trained on train800)\n\n",
        crate::nodes::select::RULE
    );
    s.push_str(
        "| dataset | method | chosen | val200 top-1 | runner-up | candidates |\n\
         | :--- | :--- | :--- | ---: | ---: | ---: |\n",
    );
    for row in selection_csv(choices).iter().skip(1) {
        let cell = |v: &str| if v.is_empty() { "-" } else { v }.to_string();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            md_escape(&row[0]),
            md_escape(&row[1]),
            md_escape(&row[2]),
            cell(&row[4]),
            cell(&row[5]),
            row[6]
        );
    }
    s
}

/// The search table in Markdown (`*` the chosen one).
fn search_markdown(choices: &[Option<Choice>]) -> String {
    let mut s = String::from(
        "Search runs (split: val200; train800, mean over the search seeds; * chosen)\n\n\
         | dataset | method | candidate | val200 top-1 | trainable |\n\
         | :--- | :--- | :--- | ---: | ---: |\n",
    );
    for c in searched(choices) {
        for (i, x) in c.candidates.iter().enumerate() {
            let mark = if i == c.chosen { " *" } else { "" };
            let val = match (&x.failed, x.mean_val_top1) {
                (Some(why), _) => format!("failed: {}", md_escape(why)),
                (None, Some(v)) => format!("{v:.2}"),
                (None, None) => "-".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {}{mark} | {val} | {} |",
                md_escape(&c.dataset),
                md_escape(&c.method),
                md_escape(&x.config),
                x.trainable.map(|t| t.to_string()).unwrap_or_default()
            );
        }
    }
    s
}

/// The finals with each run's row label set to its method table: the grid report's table,
/// plots and reference then show methods, not configurations.
fn by_method(finals: &[RunRecord]) -> Vec<RunRecord> {
    finals
        .iter()
        .map(|r| RunRecord {
            config: r.method_row().to_string(),
            ..r.clone()
        })
        .collect()
}

fn vtab(p: &Protocol) -> VtabTable {
    build_vtab_table(p.finals, RowsBy::MethodTable)
}

fn caption(p: &Protocol) -> String {
    format!(
        "VTAB-1k protocol, suite {}: test top-1 (%) of each method's chosen setting \
         (train800val200 -> test), mean over the final seeds.",
        p.suite
    )
}

/// `report.md` (and what `report` prints): the VTAB-1k table, the finals' metrics and cost,
/// the selections, the search, published numbers (with `--reference`), the data subsets.
pub fn markdown(p: &Protocol) -> String {
    let mut sections = vec![format!(
        "# Suite `{}` (VTAB-1k protocol)\n\nVTAB-1k table (split: test): each method table's \
         chosen setting per dataset, retrained on train800val200.\n\n{}",
        p.suite,
        vtab_table::markdown(&vtab(p), "test")
    )];
    sections.push(final_markdown(&final_rows(p.finals, p.search)));
    sections.push(selections_markdown(p.choices));
    if !searched(p.choices).is_empty() {
        sections.push(search_markdown(p.choices));
    }
    let relabelled = by_method(p.finals);
    if let Some(r) = p.reference {
        sections.push(reference::markdown(
            &build_table(&relabelled),
            &relabelled,
            r,
        ));
    }
    if !p.finals.is_empty() {
        sections.push(subsets::markdown_notes(p.finals));
    }
    sections.join("\n")
}

/// What `report --format F` prints under a protocol: the Markdown report, the VTAB-1k table
/// as CSV or LaTeX (the files' bytes), or JSON of everything.
pub fn render(p: &Protocol, format: Format) -> String {
    let t = vtab(p);
    match format {
        Format::Md => markdown(p),
        Format::Csv => csv_string(&vtab_table::csv_rows(&t)),
        Format::Latex => latex::vtab_table(&t, "test", &caption(p)),
        Format::Json => {
            let doc = serde_json::json!({
                "vtab_table": t,
                "finals": final_rows(p.finals, p.search),
                "final_records": sorted_records(p.finals),
                "search_records": sorted_records(p.search),
                "selections": p.choices.iter().flatten().collect::<Vec<_>>(),
            });
            let mut s = serde_json::to_string_pretty(&doc).expect("records serialize to JSON");
            s.push('\n');
            s
        }
    }
}

/// Writes the protocol report into `dir` (after removing the previous report's files):
/// `selection.csv`, `search.csv`, `final.csv`, `summary.csv` and `per_class.csv` (the final
/// runs), `vtab_table.csv`, `vtab_table.tex`, `report.md`, and `plots/` (SVG and PNG). Refuses
/// a store and, when no final run finished, writes nothing.
pub fn write(dir: &Path, p: &Protocol) -> Result<Written, ReportError> {
    folder::prepare(dir, p.finals.is_empty())?;
    let mut files = Vec::new();
    let mut csv = |name: &str, rows: Vec<Vec<String>>| -> Result<(), ReportError> {
        let path = dir.join(name);
        write_file(&path, &csv_string(&rows))?;
        files.push(path);
        Ok(())
    };
    let rows = final_rows(p.finals, p.search);
    csv("selection.csv", selection_csv(p.choices))?;
    csv("search.csv", search_csv(p.choices))?;
    csv("final.csv", final_csv(&rows))?;
    let table = build_table(p.finals);
    csv(
        "summary.csv",
        super::csv_out::summary_rows(p.finals, &table),
    )?;
    csv("per_class.csv", super::csv_out::per_class_rows(p.finals))?;
    let t = vtab(p);
    csv("vtab_table.csv", vtab_table::csv_rows(&t))?;
    let tex = dir.join("vtab_table.tex");
    write_file(&tex, &latex::vtab_table(&t, "test", &caption(p)))?;
    files.push(tex);
    let md = dir.join("report.md");
    write_file(&md, &markdown(p))?;
    files.push(md);
    let plots = dir.join("plots");
    let relabelled = by_method(p.finals);
    let mut svgs = super::write_plots(&relabelled, &plots)?;
    svgs.extend(super::write_curves(&relabelled, &plots)?);
    svgs.extend(super::write_overview(
        &build_table(&relabelled),
        &relabelled,
        &plots,
    )?);
    svgs.extend(super::tradeoff::write_tradeoff(&relabelled, &plots)?);
    svgs.extend(super::search_plot::write_search_plots(p.choices, &plots)?);
    files.extend(folder::with_pngs(svgs)?);
    Ok(folder::finish(dir, files))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mean_std_reads_like_the_grid_table() {
        assert_eq!(super::mean_std(&[50.0]), "50.00");
        assert_eq!(super::mean_std(&[1.0, 2.0, 3.0]), "2.00 ± 1.00 (3)");
    }
}
