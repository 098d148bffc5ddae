//! Unit tests of what a paper takes from the report: the VTAB-1k table (group means and both
//! averages from known inputs, partial rows, column order), its CSV and LaTeX (compiled with
//! pdflatex where installed), the protocol's final rows (metrics and cost), the files
//! `protocol::write` writes (columns, PNGs that decode) and the new plots.
use super::protocol::{final_rows, Candidate, Choice, Protocol};
use super::tests::{rec, tmp_dir};
use super::vtab_table::{csv_rows, markdown, Mean};
use super::*;
use std::path::Path;

#[path = "../../../tests/support/latex.rs"]
mod pdflatex;
#[path = "../../../tests/support/skip.rs"]
mod skip;

/// A record of method table `table` (family `method`) on `dataset`.
fn run(dataset: &str, method: &str, table: &str, seed: u64, top1: f64) -> RunRecord {
    let mut r = rec(dataset, method, &format!("{table} cfg"), seed, top1);
    r.method_table = table.into();
    r
}

/// Five grouped tasks (natural: cifar100, dtd; specialized: eurosat; structured:
/// clevr_count, dmlab) and one without a group (shape); `full` never ran on dmlab; lora has
/// two seeds on cifar100. Given out of order.
fn study() -> Vec<RunRecord> {
    let mut out = Vec::new();
    let table: [(&str, &str, [Option<f64>; 6]); 4] = [
        (
            "full",
            "full",
            [
                Some(75.0),
                Some(70.0),
                Some(95.0),
                Some(60.0),
                None,
                Some(58.0),
            ],
        ),
        (
            "lora",
            "lora_mlp",
            [
                Some(72.0),
                Some(65.0),
                Some(91.0),
                Some(52.0),
                Some(40.0),
                None,
            ],
        ),
        (
            "linear",
            "linear",
            [
                Some(60.0),
                Some(62.0),
                Some(80.0),
                Some(40.0),
                Some(36.0),
                Some(50.0),
            ],
        ),
        (
            "lora",
            "lora",
            [
                None,
                Some(64.0),
                Some(90.0),
                Some(50.0),
                Some(42.0),
                Some(55.0),
            ],
        ),
    ];
    let datasets = [
        "dmlab",
        "cifar100",
        "shape",
        "eurosat",
        "clevr_count",
        "dtd",
    ];
    let order = [4, 0, 5, 2, 3, 1]; // datasets[i] is column order[i] of `table`
    for (method, name, tops) in table {
        for (ds, col) in datasets.iter().zip(order) {
            if let Some(t) = tops[col] {
                out.push(run(ds, method, name, 0, t));
            }
        }
    }
    out.push(run("cifar100", "lora", "lora", 1, 70.0));
    out.push(run("cifar100", "lora", "lora", 2, 72.0));
    out
}

fn m(value: f64, partial: bool) -> Mean {
    Mean {
        value: Some(value),
        partial,
    }
}

#[test]
fn vtab_table_groups_columns_and_computes_both_averages() {
    let t = build_vtab_table(&study(), RowsBy::MethodTable);
    let cols: Vec<(&str, &str)> = t
        .columns
        .iter()
        .map(|c| (c.dataset.as_str(), c.group.as_str()))
        .collect();
    assert_eq!(
        cols,
        [
            ("cifar100", "natural"),
            ("dtd", "natural"),
            ("eurosat", "specialized"),
            ("clevr_count", "structured"),
            ("dmlab", "structured"),
            ("shape", "other"),
        ]
    );
    assert_eq!(t.groups, ["natural", "specialized", "structured"]);
    let rows: Vec<&str> = t.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(rows, ["linear", "lora", "lora_mlp", "full"]);

    // linear: natural (60 + 62) / 2, specialized 80, structured (40 + 36) / 2; the tasks'
    // mean is over the five grouped tasks (shape is in no mean), the groups' over three.
    let linear = &t.rows[0];
    assert_eq!(
        linear.group_means,
        [m(61.0, false), m(80.0, false), m(38.0, false)]
    );
    assert_eq!(linear.mean_tasks, m(278.0 / 5.0, false));
    assert_eq!(linear.mean_groups, m(179.0 / 3.0, false));
    assert_eq!(linear.mean_tasks.value, Some(55.6));
    assert!(linear.missing.is_empty());
    // The two conventions differ (here by 4 points): both are shown, never one for the other.
    assert!((linear.mean_groups.value.unwrap() - 55.6).abs() > 4.0);

    // lora: cifar100 is the mean of its two seeds (70, 72).
    let lora = &t.rows[1];
    let cifar = lora.cells[0].as_ref().unwrap();
    assert_eq!((cifar.n, cifar.mean), (2, 71.0));
    assert_eq!(lora.group_means[0], m(67.5, false));
    assert_eq!(lora.group_means[2], m(46.0, false));

    // full lacks dmlab: structured, both averages are partial and say so; it is bold where
    // it is the best of its column.
    let full = &t.rows[3];
    assert_eq!(full.missing, ["dmlab"]);
    assert_eq!(
        full.group_means,
        [m(72.5, false), m(95.0, false), m(60.0, true)]
    );
    assert_eq!(full.mean_tasks, m(300.0 / 4.0, true));
    assert_eq!(full.mean_groups, m(227.5 / 3.0, true));
    assert!(full.cells[0].as_ref().unwrap().best);
    assert!(full.cells[4].is_none());
    assert!(t.any_partial());

    let md = markdown(&t, "test");
    assert!(
        md.contains(
            "| method | cifar100 | dtd | eurosat | clevr_count | dmlab | shape | Natural | \
             Specialized | Structured | Mean (tasks) | Mean (groups) |"
        ),
        "{md}"
    );
    assert!(
        md.contains(
            "| full | **75.0** | **70.0** | **95.0** | **60.0** | - | **58.0** | 72.5 | 95.0 | \
             60.0† | 75.0† | 75.8† |"
        ),
        "{md}"
    );
    assert!(md.contains("| linear | 60.0 | 62.0 | 80.0 | 40.0 | 36.0 | 50.0 | 61.0 | 80.0 | 38.0 | 55.6 | 59.7 |"), "{md}");
    assert!(md.contains("Natural: cifar100, dtd; Specialized: eurosat; Structured: clevr_count, dmlab; other (in no mean): shape."), "{md}");
    assert!(
        md.contains("Mean (tasks) is the mean over the 5 grouped tasks"),
        "{md}"
    );
    assert!(
        md.contains("Mean (groups) is the mean of the 3 group means"),
        "{md}"
    );
    assert!(md.contains("In no mean: shape"), "{md}");
    assert!(
        md.contains("† full: partial means, over only the datasets it has (it lacks dmlab)."),
        "{md}"
    );
}

#[test]
fn vtab_table_csv_has_a_column_per_dataset_and_mean() {
    let t = build_vtab_table(&study(), RowsBy::MethodTable);
    let rows = csv_rows(&t);
    assert_eq!(
        rows[0],
        [
            "method",
            "method_kind",
            "cifar100",
            "dtd",
            "eurosat",
            "clevr_count",
            "dmlab",
            "shape",
            "mean_natural",
            "mean_specialized",
            "mean_structured",
            "mean_tasks",
            "mean_groups",
            "partial_means",
            "missing"
        ]
    );
    assert_eq!(
        rows[1],
        [
            "linear", "linear", "60.0000", "62.0000", "80.0000", "40.0000", "36.0000", "50.0000",
            "61.0000", "80.0000", "38.0000", "55.6000", "59.6667", "", ""
        ]
    );
    let full = &rows[4];
    assert_eq!(full[6], "", "no dmlab run: empty, not 0");
    assert_eq!(full[13], "mean_structured mean_tasks mean_groups");
    assert_eq!(full[14], "dmlab");
    // A group of the suite's own comes after structured, before `other`.
    let mut rs = study();
    let mut med = run("skin", "linear", "linear", 0, 70.0);
    med.group = "medical".into();
    rs.push(med);
    let t = build_vtab_table(&rs, RowsBy::MethodTable);
    assert_eq!(
        t.groups,
        ["natural", "specialized", "structured", "medical"]
    );
    let names: Vec<&str> = t.columns.iter().map(|c| c.dataset.as_str()).collect();
    assert_eq!(names[5..], ["skin", "shape"]);
    assert_eq!(
        t.rows[0].mean_groups,
        m((61.0 + 80.0 + 38.0 + 70.0) / 4.0, false)
    );
    // lora has no medical run: its group mean is missing, its groups' mean partial.
    assert_eq!(t.rows[1].group_means[3].value, None);
    assert!(t.rows[1].mean_groups.partial);
}

#[test]
fn latex_escapes_and_uses_booktabs() {
    assert_eq!(
        latex::escape(r"a_b%c&d#e$f{g}~^\ ±"),
        r"a\_b\%c\&d\#e\$f\{g\}\textasciitilde{}\textasciicircum{}\textbackslash{} $\pm$"
    );
    let t = build_vtab_table(&study(), RowsBy::MethodTable);
    let tex = latex::vtab_table(&t, "test", "a caption with 50% & more");
    for want in [
        r"\begin{tabular}{lrrrrrrrrrrr}",
        r"\toprule",
        r"& \multicolumn{2}{c}{Natural} & \multicolumn{1}{c}{Specialized} & \multicolumn{2}{c}{Structured} & \multicolumn{1}{c}{Other (in no mean)} & \multicolumn{5}{c}{Means} \\",
        r"\cmidrule(lr){2-3}\cmidrule(lr){4-4}\cmidrule(lr){5-6}\cmidrule(lr){7-7}\cmidrule(lr){8-12}",
        r"Method & cifar100 & dtd & eurosat & clevr\_count & dmlab & shape & Natural & Specialized & Structured & Mean (tasks) & Mean (groups) \\",
        r"\midrule",
        r"lora\_mlp & 72.0 & 65.0 & 91.0 & 52.0 & 40.0 & -- &",
        r"full & \textbf{75.0} & \textbf{70.0} & \textbf{95.0} & \textbf{60.0} & -- & \textbf{58.0} & 72.5 & 95.0 & 60.0\textsuperscript{\dag} & 75.0\textsuperscript{\dag} & 75.8\textsuperscript{\dag} \\",
        r"\bottomrule",
        r"\end{tabular}",
        "% a caption with 50% & more",
    ] {
        assert!(tex.contains(want), "missing {want}\n{tex}");
    }
    compiles(&tex, "latex_escapes_and_uses_booktabs");
}

/// Compiles `tex` with pdflatex (tests/support/latex.rs), or says SKIPPED.
fn compiles(tex: &str, test: &str) {
    let dir = tmp_dir(&format!("latex-{test}"));
    pdflatex::compiles(&dir, tex, test);
    std::fs::remove_dir_all(dir).ok();
}

/// A CPU study: two final seeds and two search runs of lora on dtd, one final of linear
/// (nothing searched).
fn cpu_study() -> (Vec<RunRecord>, Vec<RunRecord>, Vec<Option<Choice>>) {
    let cpu = |mut r: RunRecord, wall: f64, eval: f64| {
        r.hparams.insert("numerics".into(), "cpu-fp32".into());
        r.gpu_hours = 0.0;
        r.peak_mem_mib = None;
        r.peak_rss_mib = Some(500.0 + r.seed as f64);
        r.wall_s = wall;
        r.eval_wall_s = eval;
        r.epoch_time_s = 2.0 + r.seed as f64;
        r.train_img_s = 400.0 + 100.0 * r.seed as f64;
        r
    };
    let finals = vec![
        cpu(run("dtd", "lora", "lora", 0, 70.0), 30.0, 6.0),
        cpu(run("dtd", "lora", "lora", 1, 72.0), 42.0, 12.0),
        {
            // Trained before the peak RSS was recorded: empty, never 0.
            let mut r = cpu(run("dtd", "linear", "linear", 0, 60.0), 18.0, 0.0);
            r.peak_rss_mib = None;
            r
        },
    ];
    let mut s0 = cpu(run("dtd", "lora", "lora", 0, 50.0), 360.0, 0.0);
    s0.config = "lora lr=0.001".into();
    let mut s1 = cpu(run("dtd", "lora", "lora", 0, 55.0), 3240.0, 0.0);
    s1.config = "lora lr=0.003".into();
    let cand = |config: &str, v: f64| Candidate {
        config: config.into(),
        settings: [("lr".to_string(), "0.001".to_string())].into(),
        val_top1: vec![v],
        mean_val_top1: Some(v),
        trainable: Some(331_055),
        failed: None,
    };
    let choices = vec![
        Some(Choice {
            dataset: "dtd".into(),
            method: "lora".into(),
            search_seeds: vec![0],
            candidates: vec![
                cand("lora lr=0.001", 50.0),
                cand("lora lr=0.003", 55.0),
                Candidate {
                    failed: Some("non-finite loss in epoch 1".into()),
                    mean_val_top1: None,
                    val_top1: vec![],
                    ..cand("lora lr=1", 0.0)
                },
            ],
            chosen: 1,
        }),
        Some(Choice {
            dataset: "dtd".into(),
            method: "linear".into(),
            search_seeds: vec![],
            candidates: vec![Candidate {
                val_top1: vec![],
                mean_val_top1: None,
                trainable: None,
                ..cand("linear", 0.0)
            }],
            chosen: 0,
        }),
    ];
    (finals, vec![s0, s1], choices)
}

#[test]
fn final_rows_carry_metrics_and_the_cost_of_finals_and_search() {
    let (finals, search, _) = cpu_study();
    let rows = final_rows(&finals, &search);
    let names: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(names, ["linear", "lora"]);
    let lora = &rows[1];
    assert_eq!(
        (lora.mean, lora.std, lora.top1.len()),
        (71.0, Some(2f64.sqrt()), 2)
    );
    assert_eq!(lora.trainable_backbone, 294_912);
    // % of the backbone: the model less its head (768 * 47 + 47 for dtd).
    let backbone = 85_798_656.0;
    assert!((lora.trainable_backbone_pct.unwrap() - 100.0 * 294_912.0 / backbone).abs() < 1e-9);
    assert_eq!((lora.epoch_time_s, lora.train_img_s), (2.5, 450.0));
    assert_eq!(lora.peak, Some((501.0, PeakKind::CpuRss)));
    // Hours: (30 + 6 + 42 + 12) s of finals, (360 + 3240) s of search, all on the CPU.
    assert_eq!((lora.final_gpu_hours, lora.search_gpu_hours), (0.0, 0.0));
    assert!((lora.final_cpu_hours - 90.0 / 3600.0).abs() < 1e-12);
    assert!((lora.search_cpu_hours - 1.0).abs() < 1e-12);
    assert_eq!(lora.search_runs, 2);
    let linear = &rows[0];
    assert_eq!((linear.search_runs, linear.peak), (0, None));
    assert_eq!(linear.trainable_backbone_pct, Some(0.0));
}

/// Every file of the protocol report, read back: the CSVs' columns and values, the LaTeX
/// (compiled), report.md's sections, and every plot as SVG and as a PNG that decodes.
#[test]
fn protocol_report_writes_every_file() {
    let (finals, search, choices) = cpu_study();
    let dir = tmp_dir("protocol-files");
    std::fs::create_dir_all(dir.join("plots")).unwrap();
    std::fs::write(dir.join("plots/plot_old.png"), "x").unwrap();
    let p = Protocol {
        suite: "cpu",
        finals: &finals,
        search: &search,
        choices: &choices,
        reference: None,
    };
    let w = protocol::write(&dir, &p).unwrap();
    assert!(
        !dir.join("plots/plot_old.png").exists(),
        "stale PNG removed"
    );
    for f in [
        "selection.csv",
        "search.csv",
        "final.csv",
        "summary.csv",
        "per_class.csv",
        "vtab_table.csv",
        "vtab_table.tex",
        "report.md",
    ] {
        assert!(w.files.contains(&dir.join(f)), "{f}: {:?}", w.files);
    }
    let read = |f: &str| -> Vec<csv::StringRecord> {
        let mut r = csv::Reader::from_path(dir.join(f)).unwrap();
        let mut rows = vec![r.headers().unwrap().clone()];
        rows.extend(r.records().map(Result::unwrap));
        rows
    };
    let fin = read("final.csv");
    let col = |rows: &[csv::StringRecord], name: &str| {
        rows[0]
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}: {:?}", rows[0]))
    };
    for c in [
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
        "search_gpu_hours",
        "search_cpu_hours",
    ] {
        col(&fin, c);
    }
    let lora = &fin[2];
    assert_eq!(&lora[col(&fin, "method")], "lora");
    assert_eq!(&lora[col(&fin, "test_top1")], "71.00 ± 1.41 (2)");
    assert_eq!(&lora[col(&fin, "peak_cpu_rss_mib")], "501.0");
    assert_eq!(&lora[col(&fin, "peak_cuda_alloc_mib")], "");
    assert_eq!(&lora[col(&fin, "search_cpu_hours")], "1.000000");
    assert_eq!(&lora[col(&fin, "final_cpu_hours")], "0.025000");
    assert_eq!(
        &fin[1][col(&fin, "peak_cpu_rss_mib")],
        "",
        "not recorded: empty"
    );
    // summary.csv: a row per final run, the grid suite's columns.
    let sum = read("summary.csv");
    assert_eq!(sum.len(), 1 + 3);
    let grid = super::csv_out::summary_rows(&finals, &build_table(&finals));
    assert_eq!(sum[0].iter().collect::<Vec<_>>(), grid[0]);
    assert_eq!(&sum[2][col(&sum, "peak_cpu_rss_mib")], "500.0");
    assert_eq!(&sum[2][col(&sum, "cpu_hours")], "0.010000");
    assert_eq!(&sum[2][col(&sum, "method_table")], "lora");
    // search.csv: the failed candidate says why.
    let se = read("search.csv");
    assert_eq!(se.len(), 1 + 3);
    assert_eq!(&se[2][col(&se, "chosen")], "true");
    assert_eq!(&se[3][col(&se, "failed")], "non-finite loss in epoch 1");
    let sel = read("selection.csv");
    assert_eq!(&sel[1][col(&sel, "val200_top1_runner_up")], "50.00");
    assert_eq!(&sel[2][col(&sel, "search_seeds")], "(none: one candidate)");
    let vt = read("vtab_table.csv");
    assert_eq!(vt.len(), 1 + 2);
    assert_eq!(&vt[2][col(&vt, "dtd")], "71.0000");

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for want in [
        "| method | dtd | Natural | Mean (tasks) | Mean (groups) |",
        "| lora | **71.0** | 71.0 | 71.0 | 71.0 |",
        "peak RSS (CPU process) (MiB)",
        "finals CPU-h",
        "search CPU-h (runs)",
        "| dtd | lora | lora cfg | 71.00 ± 1.41 (2) | 0.29M (0.34%) |",
        "| 1.0000 (2) |",
        "- (nothing searched)",
        "failed: non-finite loss in epoch 1",
        "(split: test;",
        "(split: val200;",
    ] {
        assert!(md.contains(want), "report.md lacks {want:?}:\n{md}");
    }
    let tex = std::fs::read_to_string(dir.join("vtab_table.tex")).unwrap();
    assert_eq!(tex, protocol::render(&p, Format::Latex));
    compiles(&tex, "protocol_report_writes_every_file");

    // Plots: per dataset (methods, curves, search), the overview and the trade-off; each
    // SVG well-formed, with a PNG beside it that decodes to twice its size.
    let plots: Vec<&Path> = w
        .files
        .iter()
        .filter(|f| f.parent() == Some(&dir.join("plots")))
        .map(|f| f.as_path())
        .collect();
    let names: Vec<String> = plots
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "plot_dtd.svg",
        "curves_dtd.svg",
        "overview.svg",
        "tradeoff.svg",
        "search_dtd.svg",
    ] {
        assert!(names.contains(&want.to_string()), "{want}: {names:?}");
        assert!(
            names.contains(&want.replace(".svg", ".png")),
            "{want}: {names:?}"
        );
    }
    for svg in plots.iter().filter(|p| p.extension().unwrap() == "svg") {
        let text = std::fs::read_to_string(svg).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        let width: f64 = doc
            .root_element()
            .attribute("width")
            .unwrap()
            .parse()
            .unwrap();
        let png = image::open(svg.with_extension("png")).unwrap();
        assert_eq!(
            png.width(),
            (width * 2.0).ceil() as u32,
            "{}",
            svg.display()
        );
    }
    let search = std::fs::read_to_string(dir.join("plots/search_dtd.svg")).unwrap();
    let doc = roxmltree::Document::parse(&search).unwrap();
    let class = |c: &str| {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(c))
            .count()
    };
    assert_eq!(
        (class("candidate"), class("chosen"), class("failed")),
        (2, 1, 1)
    );
    let trade = std::fs::read_to_string(dir.join("plots/tradeoff.svg")).unwrap();
    let doc = roxmltree::Document::parse(&trade).unwrap();
    let count = |c: &str| {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(c))
            .count()
    };
    // One (method, dataset) marker each, one group mean per method, lora's error bar.
    assert_eq!(
        (count("marker"), count("group-mean"), count("errbar")),
        (2, 2, 1)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A grid suite's report has the VTAB-1k table too (a row per configuration), and
/// `--format latex` prints its LaTeX.
#[test]
fn grid_report_has_the_vtab_table_and_latex() {
    let recs = study();
    let table = build_table(&recs);
    let md = render(&table, &recs, Format::Md);
    assert!(
        md.contains("VTAB-1k table (split: test; a row per configuration)"),
        "{md}"
    );
    let tex = render(&table, &recs, Format::Latex);
    assert!(tex.contains(r"lora\_mlp cfg &"), "{tex}");
    assert_eq!("latex".parse::<Format>(), Ok(Format::Latex));
    compiles(&tex, "grid_report_has_the_vtab_table_and_latex");
}

/// Under a protocol, published numbers stay beside the datasets comparable with them (here
/// cifar100, prepared from the official lists; dtd is a seeded draw) and nowhere else.
#[test]
fn protocol_reference_only_beside_comparable_datasets() {
    let dir = tmp_dir("protocol-reference");
    let path = dir.join("reference.csv");
    std::fs::write(
        &path,
        "dataset,method,top1,source\ncifar100,lora,67.1,Paper A\ndtd,lora,69.4,Paper A\n",
    )
    .unwrap();
    let reference = load_reference(&path).unwrap();
    let finals = vec![
        run("cifar100", "lora", "lora", 0, 71.0),
        run("dtd", "lora", "lora", 0, 60.0),
    ];
    let p = Protocol {
        suite: "ref",
        finals: &finals,
        search: &[],
        choices: &[],
        reference: Some(&reference),
    };
    let md = protocol::markdown(&p);
    assert!(
        md.contains("| lora | 67.1 (ours 71.00) | Paper A |"),
        "{md}"
    );
    assert!(!md.contains("69.4"), "dtd is not comparable:\n{md}");
    assert!(!protocol::render(&p, Format::Latex).contains("67.1"));
    std::fs::remove_dir_all(dir).unwrap();
}
