//! The report of a suite under the VTAB-1k protocol: `selection.csv` (what each select node
//! chose and why), the final table (test split, over final seeds) and the search table
//! (val200). Reads the graph and the store; must not touch the report of grid suites.
use super::ReportError;
use crate::graph::Graph;
use crate::nodes::{eval::Metrics, select};
use crate::store::Store;
use crate::suite::Suite;
use std::fmt::Write as _;
use std::path::Path;

/// One final or search result read from the store.
struct Result1 {
    dataset: String,
    family: String,
    config: String,
    top1: f64,
    trainable: i64,
    trainable_pct: f64,
}

fn metrics(store: &Store, key: &str) -> Option<Metrics> {
    if !store.is_complete(crate::node::EVAL.name, key) {
        return None;
    }
    let text = std::fs::read_to_string(
        store
            .entry(crate::node::EVAL.name, key)
            .join(crate::nodes::eval::METRICS),
    );
    serde_json::from_str(&text.ok()?).ok()
}

/// `mean ± std (n)` (sample std; `mean` alone for one value).
pub fn mean_std(v: &[f64]) -> String {
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return format!("{mean:.2}");
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    format!("{mean:.2} ± {:.2} ({n})", var.sqrt())
}

fn settings(s: &std::collections::BTreeMap<String, String>) -> String {
    s.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn write_csv(path: &Path, rows: &[Vec<String>]) -> Result<(), ReportError> {
    let csv_err = |source| ReportError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(csv_err)?;
    for r in rows {
        w.write_record(r).map_err(csv_err)?;
    }
    w.flush().map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `selection.csv`, `final.csv` and `search.csv` under `dir` and returns the
/// markdown tables. `other` is the suite expanded for the other device kind (runs made on a
/// GPU machine, reported from a CPU one). Runs not finished yet are left out and counted.
pub fn write(
    suite: &Suite,
    g: &Graph,
    other: &Graph,
    store: &Store,
    dir: &Path,
) -> Result<(String, usize), ReportError> {
    let mut missing = 0;
    let mut out = String::new();
    // Selections, in suite order.
    let mut sel_rows = vec![[
        "dataset",
        "method",
        "chosen",
        "settings",
        "val200_top1_winner",
        "val200_top1_runner_up",
        "candidates",
        "search_seeds",
    ]
    .map(String::from)
    .to_vec()];
    let mut search = Vec::new();
    for s in &suite.selections {
        let key = [g, other].into_iter().find_map(|gr| {
            gr.selections
                .iter()
                .find(|(k, f)| {
                    f.dataset == s.dataset
                        && f.family == s.family
                        && store.is_complete(crate::node::SELECT.name, k)
                })
                .map(|(k, _)| k.clone())
        });
        let seeds = s
            .search_seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        if s.candidates.len() == 1 {
            let c = &s.candidates[0];
            sel_rows.push(vec![
                s.dataset.clone(),
                s.family.clone(),
                c.config.clone(),
                settings(&c.hparams),
                String::new(),
                String::new(),
                "1".into(),
                "(none: one candidate)".into(),
            ]);
            continue;
        }
        let Some(sel) = key.and_then(|k| select::stored(store, &k)) else {
            missing += 1;
            continue;
        };
        let mut by_val: Vec<&select::CandidateResult> = sel.candidates.iter().collect();
        by_val.sort_by(|a, b| b.mean_val_top1.total_cmp(&a.mean_val_top1));
        let winner = &sel.candidates[sel.chosen];
        let runner = sel
            .candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != sel.chosen)
            .map(|(_, c)| c.mean_val_top1)
            .reduce(f64::max);
        sel_rows.push(vec![
            s.dataset.clone(),
            s.family.clone(),
            winner.config.clone(),
            settings(&winner.settings),
            format!("{:.2}", winner.mean_val_top1),
            runner.map(|r| format!("{r:.2}")).unwrap_or_default(),
            sel.candidates.len().to_string(),
            seeds,
        ]);
        for (i, c) in sel.candidates.iter().enumerate() {
            search.push((
                s.dataset.clone(),
                s.family.clone(),
                c.clone(),
                i == sel.chosen,
            ));
        }
    }
    write_csv(&dir.join("selection.csv"), &sel_rows)?;

    // Finals: test top-1 over the final seeds, per (dataset, method table).
    let mut finals: Vec<Result1> = Vec::new();
    let other_final = |run: &crate::suite::Run| {
        other
            .finals
            .iter()
            .find(|(r, _)| r.dataset == run.dataset && r.family == run.family && r.seed == run.seed)
            .map(|(_, k)| k.clone())
    };
    for (run, key) in &g.finals {
        let m = metrics(store, key).or_else(|| other_final(run).and_then(|k| metrics(store, &k)));
        let Some(m) = m else {
            missing += 1;
            continue;
        };
        finals.push(Result1 {
            dataset: run.dataset.clone(),
            family: run.family.clone(),
            config: run.config.clone(),
            top1: m.top1,
            trainable: m.train.counts.trainable,
            trainable_pct: m.train.trainable_pct,
        });
    }
    let mut final_rows = vec![[
        "dataset",
        "method",
        "chosen",
        "test_top1",
        "n",
        "trainable",
        "trainable_pct",
    ]
    .map(String::from)
    .to_vec()];
    let _ = writeln!(
        out,
        "Final runs (split: test; train800val200, mean ± std (n) over the final seeds)\n"
    );
    let _ = writeln!(
        out,
        "| dataset | method | chosen | test top-1 | trainable |\n| :--- | :--- | :--- | ---: | ---: |"
    );
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for f in &finals {
        if !groups.contains(&(f.dataset.as_str(), f.family.as_str())) {
            groups.push((&f.dataset, &f.family));
        }
    }
    groups.sort();
    for (d, fam) in groups {
        let rs: Vec<&Result1> = finals
            .iter()
            .filter(|f| f.dataset == d && f.family == fam)
            .collect();
        let top: Vec<f64> = rs.iter().map(|r| r.top1).collect();
        let (cfg, tr, pct) = (&rs[0].config, rs[0].trainable, rs[0].trainable_pct);
        let cell = mean_std(&top);
        let _ = writeln!(out, "| {d} | {fam} | {cfg} | {cell} | {tr} ({pct:.2}%) |");
        final_rows.push(vec![
            d.into(),
            fam.into(),
            cfg.clone(),
            cell,
            top.len().to_string(),
            tr.to_string(),
            format!("{pct:.4}"),
        ]);
    }
    write_csv(&dir.join("final.csv"), &final_rows)?;

    // The search: every candidate's val200 top-1.
    let _ = writeln!(
        out,
        "\nSearch runs (split: val200; train800, mean over the search seeds; * chosen)\n"
    );
    let _ = writeln!(
        out,
        "| dataset | method | candidate | val200 top-1 | trainable |\n| :--- | :--- | :--- | ---: | ---: |"
    );
    let mut search_rows = vec![[
        "dataset",
        "method",
        "candidate",
        "val200_top1",
        "val200_top1_per_seed",
        "trainable",
        "chosen",
    ]
    .map(String::from)
    .to_vec()];
    for (d, fam, c, chosen) in &search {
        let mark = if *chosen { " *" } else { "" };
        let _ = writeln!(
            out,
            "| {d} | {fam} | {}{mark} | {:.2} | {} |",
            c.config, c.mean_val_top1, c.trainable
        );
        search_rows.push(vec![
            d.clone(),
            fam.clone(),
            c.config.clone(),
            format!("{:.2}", c.mean_val_top1),
            c.val_top1
                .iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            c.trainable.to_string(),
            chosen.to_string(),
        ]);
    }
    write_csv(&dir.join("search.csv"), &search_rows)?;
    Ok((out, missing))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mean_std_reads_like_the_grid_table() {
        assert_eq!(super::mean_std(&[50.0]), "50.00");
        assert_eq!(super::mean_std(&[1.0, 2.0, 3.0]), "2.00 ± 1.00 (3)");
    }
}
