//! Unit tests of the report: shared fixtures (`records`, `rec`, `tmp_dir`) and the table,
//! CSV, Markdown and plot tests. Other report files test their own parts with these fixtures.
use super::csv_out::{per_class_rows, summary_rows};
use super::svg::xml_escape;
use super::table::{mean, sample_std};
use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

pub(super) fn rec(dataset: &str, method: &str, config: &str, seed: u64, top1: f64) -> RunRecord {
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
    hp.insert("numerics".into(), "cuda-bf16".into());
    hp.insert("batch_size".into(), "64".into());
    let n = classes(dataset);
    RunRecord {
        dataset: dataset.into(),
        method: method.into(),
        method_table: method.into(),
        group: vtab1k_group(dataset).unwrap_or(groups::OTHER).into(),
        config: config.into(),
        hparams: hp,
        seed,
        top1,
        test_n: 3 * n,
        num_classes: n,
        trainable,
        trainable_backbone: extra,
        trainable_pct: (100.0 * trainable as f64 / total as f64 * 1e4).round() / 1e4,
        params_total: total,
        epoch_time_s: 12.5,
        peak_mem_mib: (method != "linear").then_some(2048.0),
        peak_rss_mib: None,
        train_img_s: 310.0,
        wall_s: 130.0,
        epochs_s: 125.0,
        eval_wall_s: 14.0,
        gpu_hours: 0.04,
        key: format!("{:08x}", seed * 1000 + top1 as u64),
        subsets: subsets_of(dataset),
        per_class: (0..2)
            .map(|c| ClassAccuracy {
                class: format!("class{c}"),
                accuracy: Some(top1 - c as f64),
                count: 3,
            })
            .collect(),
        curve: (1..=10)
            .map(|e| EpochPoint {
                epoch: e,
                loss: 4.0 / e as f64 + seed as f64 * 0.05,
                lr: 1e-3 * (1.0 - (e - 1) as f64 / 10.0),
                time_s: 12.5,
            })
            .collect(),
    }
}

/// cifar100 from the official VTAB-1k lists, dtd a seeded draw from fold 1 (tested on
/// fold 1's test list), anything else unrecorded.
pub(super) fn subsets_of(dataset: &str) -> Option<DataSubsets> {
    use crate::datasets::{Part, Split, SubsetDefinition, SubsetRecord};
    let members = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}/{i}.jpg")).collect()
    };
    let lists = crate::datasets::subset::fake_lists;
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
    // Trainable counts are per dataset (heads differ), never averaged across datasets.
    assert_eq!(lora.trainable_backbone, 294_912);
    assert!(!lora.backbone_varies);
    for (cell, ds) in lora.cells.iter().zip(["cifar100", "dtd", "flowers102"]) {
        let want = (head(classes(ds)) + 294_912) as f64;
        assert_eq!(cell.as_ref().unwrap().trainable, want, "{ds}");
    }
    // Cost: mean train wall per run, epochs part, GPU-hours summed over the 5 runs.
    assert_eq!((lora.train_s, lora.epochs_s), (130.0, 125.0));
    assert!((lora.gpu_hours - 5.0 * 0.04).abs() < 1e-12);
    assert_eq!(lora.device, "cuda");
    // The best configuration per dataset: lora on cifar100 and dtd, lora on flowers102.
    let best: Vec<Vec<bool>> = t
        .rows
        .iter()
        .map(|r| {
            r.cells
                .iter()
                .map(|c| c.as_ref().is_some_and(|c| c.best))
                .collect()
        })
        .collect();
    assert_eq!(
        best,
        [
            [false, false, false],
            [false, false, false],
            [true, true, true],
            [false, false, false]
        ]
    );

    let full = &t.rows[3];
    assert!(full.cells[2].is_none());
    assert!(!full.complete);
    assert!((full.avg - (90.2 + 70.5) / 2.0).abs() < 1e-9);
    assert_eq!(full.trainable_backbone, BACKBONE);
}

#[test]
fn stats_helpers() {
    assert_eq!(sample_std(&[1.0]), None);
    assert!(
        (sample_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap() - 2.138089935).abs() < 1e-9
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
    // serde_json parses floats to within an ulp: compare identities and top-1.
    assert!(back.iter().all(|r| recs.iter().any(
        |x| (&x.key, &x.dataset, &x.config, x.top1) == (&r.key, &r.dataset, &r.config, r.top1)
    )));
    assert_eq!(back[0].curve.len(), 10);
    assert_eq!(back[0].per_class.len(), 2);
    assert_eq!(back[0].dataset, "cifar100");
    let table: Table = serde_json::from_value(v["table"].clone()).unwrap();
    assert_eq!(table, t);
}

#[test]
fn summary_hparam_columns_are_unique() {
    let mut r = rec("dtd", "lora", "lora", 3, 50.0);
    r.hparams.insert("seed".into(), "7".into());
    let rows = summary_rows(std::slice::from_ref(&r), &build_table(&[r.clone()]));
    assert!(rows[0].contains(&"hp_seed".to_string()));
    let unique: BTreeSet<&String> = rows[0].iter().collect();
    assert_eq!(unique.len(), rows[0].len());
}

/// Every `<text>` of an SVG document.
fn texts(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().to_string())
        .collect()
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
    for ((path, want), ds) in paths
        .iter()
        .zip([4, 5, 3])
        .zip(["cifar100", "dtd", "flowers102"])
    {
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
        let texts = texts(&doc);
        assert!(texts
            .iter()
            .any(|t| t.ends_with("top-1 vs trainable parameters")));
        assert!(texts.iter().any(|t| t == "lora r=8 a=8 q,v"));
        assert!(
            texts.iter().any(|t| t == "lora"),
            "legend lists the families"
        );
        assert!(
            texts.iter().any(|t| t == "± sample std over seeds"),
            "legend explains the error bars"
        );
        // The chance line sits at 100 / classes percent, and is in the legend.
        let chance = 100.0 / classes(ds) as f64;
        assert!(
            texts.contains(&format!("chance ({chance:.1} %)")),
            "{texts:?}"
        );
        assert_eq!(
            doc.descendants()
                .filter(|n| n.attribute("class") == Some("chance"))
                .count(),
            1
        );
        // The y axis never passes 100 % (its top tick label is at most 100).
        let top = texts
            .iter()
            .filter_map(|t| t.parse::<f64>().ok())
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(top <= 100.0, "{texts:?}");
        // Labelled x ticks read as counts (`100K`, `1M`), not exponents.
        assert!(texts.iter().any(|t| t.ends_with('K') || t.ends_with('M')));
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

/// Results within noise of each other must not fill the plot's height: the y axis spans at
/// least 20 points and includes chance.
#[test]
fn plot_y_axis_is_never_zoomed_on_noise() {
    let recs = vec![
        rec("dtd", "linear", "linear", 0, 72.40),
        rec("dtd", "bitfit", "bitfit", 0, 72.45),
    ];
    let dir = tmp_dir("zoom");
    let paths = write_plots(&recs, &dir).unwrap();
    let svg = std::fs::read_to_string(&paths[0]).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let ys: Vec<f64> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("marker"))
        .map(|n| n.attribute("cy").unwrap().parse().unwrap())
        .collect();
    assert_eq!(ys.len(), 2);
    assert!(
        (ys[0] - ys[1]).abs() < 2.0,
        "0.05 points apart drawn {ys:?} px apart"
    );
    let ticks: Vec<f64> = texts(&doc).iter().filter_map(|t| t.parse().ok()).collect();
    let (lo, hi) = ticks
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), t| {
            (a.min(*t), b.max(*t))
        });
    assert!(hi - lo >= 20.0 && lo <= 100.0 / 47.0, "{ticks:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn curves_and_overview_plots() {
    let recs = records();
    let dir = tmp_dir("curves");
    let paths = write_curves(&recs, &dir).unwrap();
    assert_eq!(paths.len(), 3);
    let dtd = std::fs::read_to_string(dir.join("curves_dtd.svg")).unwrap();
    let doc = roxmltree::Document::parse(&dtd).unwrap();
    // 4 configurations on dtd, lora with 3 seeds: 6 runs, a loss and an lr line each.
    let lines = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("curve"))
        .count();
    assert_eq!(lines, 2 * 6);
    let t = texts(&doc);
    assert!(t.iter().any(|x| x == "training loss") && t.iter().any(|x| x == "learning rate"));
    assert!(
        t.iter().any(|x| x == "lora r=8 a=8 q,v"),
        "legend names configs"
    );

    let table = build_table(&recs);
    let path = write_overview(&table, &recs, &dir).unwrap().unwrap();
    let svg = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let markers = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("marker"))
        .count();
    // One marker per (configuration, dataset) cell that ran: 3 + 3 + 3 + 2.
    assert_eq!(markers, 11);
    let avgs = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("avg"))
        .count();
    assert_eq!(avgs, 4);
    let t = texts(&doc);
    for ds in ["cifar100", "dtd", "flowers102"] {
        assert!(t.iter().any(|x| x == ds), "legend lists {ds}");
    }
    assert!(write_overview(&build_table(&[]), &[], &dir)
        .unwrap()
        .is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn per_class_csv_names_classes() {
    let rows = per_class_rows(&records());
    assert_eq!(
        rows[0],
        ["dataset", "config", "seed", "class", "accuracy", "count"]
    );
    assert_eq!(rows.len(), 1 + 2 * records().len());
    assert_eq!(
        rows[1],
        ["cifar100", "bitfit", "0", "class0", "88.0000", "3"]
    );
}

#[test]
fn summary_has_every_setting_and_the_cost() {
    let recs = records();
    let rows = summary_rows(&recs, &build_table(&recs));
    let h = &rows[0];
    let col = |name: &str| {
        h.iter()
            .position(|x| x == name)
            .unwrap_or_else(|| panic!("no column {name}: {h:?}"))
    };
    // Settings come in their fixed order, before the results.
    assert!(col("numerics") < col("epochs") && col("epochs") < col("batch_size"));
    assert!(col("batch_size") < col("lr") && col("lr") < col("r"));
    for c in [
        "top1",
        "test_n",
        "num_classes",
        "trainable_backbone",
        "train_wall_s",
        "epochs_s",
        "overhead_s",
        "gpu_hours",
        "best_config",
    ] {
        col(c);
    }
    let lora = rows
        .iter()
        .find(|r| r[col("config")] == "lora r=8 a=8 q,v" && r[col("dataset")] == "dtd")
        .unwrap();
    assert_eq!(lora[col("numerics")], "cuda-bf16");
    assert_eq!(lora[col("overhead_s")], "5.0000");
    assert_eq!(lora[col("test_n")], "141");
    assert_eq!(lora[col("best_config")], "true");
    let linear = rows
        .iter()
        .find(|r| r[col("config")] == "linear" && r[col("dataset")] == "dtd")
        .unwrap();
    assert_eq!(linear[col("best_config")], "false");
    assert_eq!(linear[col("r")], "", "a setting the method lacks is empty");
}

/// The report folder: stale plots of an earlier report go, a store is refused, and nothing is
/// written (or removed) when no run finished.
#[test]
fn report_folder_replaces_stale_files_and_refuses_a_store() {
    let dir = tmp_dir("folder");
    let recs = records();
    let table = build_table(&recs);
    // An earlier report had a dataset this one lacks, and the user keeps a note there.
    std::fs::create_dir_all(dir.join("plots")).unwrap();
    std::fs::write(dir.join("plots/plot_old.svg"), "<svg/>").unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let w = write_report(&dir, &recs, &table, "# md\n").unwrap();
    assert!(
        !dir.join("plots/plot_old.svg").exists(),
        "stale plot removed"
    );
    assert!(
        dir.join("notes.txt").exists(),
        "files the report does not own stay"
    );
    for f in [
        "summary.csv",
        "table.csv",
        "per_class.csv",
        "vtab_table.csv",
        "vtab_table.tex",
        "report.md",
        "plots/overview.svg",
        "plots/overview.png",
    ] {
        assert!(w.files.contains(&dir.join(f)), "{f}: {:?}", w.files);
    }
    // 6 tables and report.md, 3 + 3 + 1 plots as SVG and PNG.
    assert_eq!(w.files.len(), 6 + 2 * (3 + 3 + 1));
    assert!(!dir.join("CACHEDIR.TAG").exists());
    // Nothing finished: an error, and the previous report is left alone.
    let e = write_report(&dir, &[], &build_table(&[]), "").unwrap_err();
    assert!(matches!(e, ReportError::NothingFinished { .. }), "{e}");
    assert!(dir.join("summary.csv").exists());
    // A store (it carries CACHEDIR.TAG) is refused.
    std::fs::write(
        dir.join("CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55",
    )
    .unwrap();
    let e = write_report(&dir, &recs, &table, "").unwrap_err();
    assert!(matches!(e, ReportError::InsideStore { .. }), "{e}");
    // Below a folder with the tag: written, and the caller is told.
    let w = write_report(&dir.join("reports/x"), &recs, &table, "").unwrap();
    assert_eq!(
        w.under_cachedir.as_deref(),
        Some(std::path::absolute(&dir).unwrap().as_path())
    );
    assert_eq!(
        default_dir(Path::new("/a/b/results/store"), "my study"),
        Path::new("/a/b/results/reports/my_study")
    );
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
        "config,method,avg,trainable_backbone,train_s_per_run,epochs_s_per_run,\
         overhead_s_per_run,gpu_hours,device\n"
    );
    let dir = tmp_dir("empty");
    let plots_dir = dir.join("plots");
    assert!(write_plots(&[], &plots_dir).unwrap().is_empty());
    assert!(write_curves(&[], &plots_dir).unwrap().is_empty());
    assert!(!plots_dir.exists());
    std::fs::remove_dir_all(dir).unwrap();
}
