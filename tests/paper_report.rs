//! End-to-end: `report` of a tiny suite under the VTAB-1k protocol (issue 20, items 1-3) on
//! the CPU, reading back every file it writes: the metric columns of `final.csv` and
//! `summary.csv` (peak RSS of the CPU process recorded, the CUDA column empty), the VTAB-1k
//! table as CSV and as LaTeX that pdflatex compiles, `report.md`, and each plot as SVG and
//! as a PNG that decodes.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/latex.rs"]
mod pdflatex;
#[path = "support/skip.rs"]
mod skip;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-paper-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two synthetic datasets in two groups, a searched linear probe (two learning rates), BitFit
/// (one candidate), two final seeds.
fn suite(d: &Path) -> PathBuf {
    let p = d.join("paper.toml");
    std::fs::write(
        &p,
        "name = \"paper\"\nstore = \"store\"\n\
         [defaults]\nimg_size = 16\nepochs = 2\nbatch_size = 100\nwarmup_epochs = 0\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 40\ngroup = \"natural\"\n\
         [datasets.count]\nformat = \"synthetic\"\ntask = \"count\"\ntest_images = 40\ngroup = \"structured\"\n\
         [protocol]\nkind = \"vtab1k\"\nsearch_seeds = [0]\nfinal_seeds = [0, 1]\n\
         [methods.linear]\nlr = [1e-3, 1e-2]\n[methods.bitfit]\n",
    )
    .unwrap();
    p
}

fn vtab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(args)
        .output()
        .expect("running vtab-orch")
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "vtab-orch failed ({}):\n{err}",
        o.status
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Header and rows of a CSV file, and a column finder.
struct Csv {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Csv {
    fn read(path: &Path) -> Csv {
        let mut r = csv::Reader::from_path(path).unwrap();
        Csv {
            header: r.headers().unwrap().iter().map(String::from).collect(),
            rows: r
                .records()
                .map(|x| x.unwrap().iter().map(String::from).collect())
                .collect(),
        }
    }

    fn col(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}: {:?}", self.header))
    }

    fn get(&self, row: usize, name: &str) -> &str {
        &self.rows[row][self.col(name)]
    }
}

#[test]
fn protocol_report_has_the_paper_table_metrics_and_plots() {
    let test = "protocol_report_has_the_paper_table_metrics_and_plots";
    let d = dir("protocol");
    let s = suite(&d);
    let s = s.to_str().unwrap();
    ok(&vtab(&["run", s, "--gpus", "none"]));
    let md = ok(&vtab(&["report", s]));
    let out = d.join("reports/paper");

    // final.csv: a row per (dataset, method table) with every metric of the study.
    let fin = Csv::read(&out.join("final.csv"));
    assert_eq!(fin.rows.len(), 2 * 2, "{:?}", fin.rows);
    for r in 0..fin.rows.len() {
        assert_eq!(fin.get(r, "n"), "2");
        for c in [
            "test_top1_mean",
            "test_top1_std",
            "trainable",
            "trainable_pct",
            "trainable_backbone",
            "trainable_backbone_pct",
            "epoch_time_s",
            "train_img_s",
            "peak_cpu_rss_mib",
            "final_cpu_hours",
        ] {
            let v: f64 = fin
                .get(r, c)
                .parse()
                .unwrap_or_else(|_| panic!("{c}: {:?}", fin.rows[r]));
            assert!(v >= 0.0 && v.is_finite(), "{c} = {v}");
        }
        let rss: f64 = fin.get(r, "peak_cpu_rss_mib").parse().unwrap();
        assert!(rss > 50.0, "a CPU process that loaded libtorch: {rss} MiB");
        assert_eq!(fin.get(r, "peak_cuda_alloc_mib"), "", "no GPU: empty");
        assert_eq!(fin.get(r, "final_gpu_hours"), "0.000000");
    }
    let linear = (0..4)
        .find(|r| fin.get(*r, "dataset") == "shape" && fin.get(*r, "method") == "linear")
        .unwrap();
    assert_eq!(fin.get(linear, "group"), "natural");
    assert_eq!(fin.get(linear, "search_runs"), "2");
    assert!(fin.get(linear, "search_cpu_hours").parse::<f64>().unwrap() > 0.0);
    let bitfit = (0..4).find(|r| fin.get(*r, "method") == "bitfit").unwrap();
    assert_eq!(
        fin.get(bitfit, "search_runs"),
        "0",
        "one candidate: no search"
    );

    // summary.csv: one row per final run, with the grid suite's columns.
    let sum = Csv::read(&out.join("summary.csv"));
    assert_eq!(sum.rows.len(), 2 * 2 * 2);
    for c in [
        "dataset",
        "group",
        "method",
        "method_table",
        "config",
        "seed",
        "top1",
        "trainable_backbone_pct",
        "epoch_time_s",
        "train_img_s",
        "peak_cuda_alloc_mib",
        "peak_cpu_rss_mib",
        "gpu_hours",
        "cpu_hours",
        "eval_split",
    ] {
        sum.col(c);
    }
    assert!((0..sum.rows.len()).all(|r| sum.get(r, "eval_split") == "test"));

    // The VTAB-1k table: a row per method table, both averages.
    let vt = Csv::read(&out.join("vtab_table.csv"));
    assert_eq!(
        vt.header,
        [
            "method",
            "method_kind",
            "shape",
            "count",
            "mean_natural",
            "mean_structured",
            "mean_tasks",
            "mean_groups",
            "partial_means",
            "missing"
        ]
    );
    let methods: Vec<&str> = vt.rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(methods, ["linear", "bitfit"]);
    for r in 0..2 {
        let v = |c: &str| vt.get(r, c).parse::<f64>().unwrap();
        // One dataset per group: a group mean is its dataset, both averages agree.
        assert!((v("mean_natural") - v("shape")).abs() < 1e-3);
        assert!((v("mean_tasks") - (v("shape") + v("count")) / 2.0).abs() < 1e-3);
        assert!((v("mean_groups") - v("mean_tasks")).abs() < 1e-3);
    }
    for want in [
        "Mean (tasks)",
        "Mean (groups)",
        "peak RSS (CPU process) (MiB)",
        "finals CPU-h",
        "(split: val200;",
    ] {
        assert!(md.contains(want), "{want}:\n{md}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("report.md")).unwrap(),
        md,
        "report.md is what report prints"
    );

    // LaTeX: `--format latex` prints vtab_table.tex, and it compiles.
    let tex = ok(&vtab(&["report", s, "--format", "latex"]));
    assert_eq!(
        tex,
        std::fs::read_to_string(out.join("vtab_table.tex")).unwrap()
    );
    assert!(tex.contains("\\toprule") && tex.contains("\\bottomrule"));
    pdflatex::compiles(&d.join("latex"), &tex, test);

    // Plots: SVG and a PNG that decodes, for each.
    let mut names: Vec<String> = std::fs::read_dir(out.join("plots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for stem in [
        "curves_count",
        "curves_shape",
        "overview",
        "plot_count",
        "plot_shape",
        "search_count",
        "search_shape",
        "tradeoff",
    ] {
        for ext in ["svg", "png"] {
            let f = format!("{stem}.{ext}");
            assert!(names.contains(&f), "{f}: {names:?}");
        }
        let png = image::open(out.join("plots").join(format!("{stem}.png"))).unwrap();
        assert!(png.width() > 400 && png.height() > 200, "{stem}");
    }
    std::fs::remove_dir_all(&d).ok();
}
