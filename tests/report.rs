//! End-to-end: `report` and `gc` with two studies sharing one store (issue 12, items 2 and
//! 11): each suite's report goes to its own folder outside the store, nothing finished writes
//! nothing and exits 1, and `gc` of one suite says which entries belong to the other.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-report-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny suite named `name` on one synthetic dataset, two methods, the shared store `../store`.
fn suite(dir: &Path, name: &str, dataset: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\nstore = \"store\"\n[defaults]\nimg_size = 16\nepochs = 2\nbatch_size = 100\nwarmup_epochs = 0\n\
             [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
             [backbone.pretrain]\nimages = 100\nepochs = 1\n\
             [datasets.{dataset}]\nformat = \"synthetic\"\ntask = \"{dataset}\"\ntest_images = 40\n\
             [methods.linear]\n[methods.bitfit]\nlr = 1e-2\n"
        ),
    )
    .unwrap();
    path
}

fn vtab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(args)
        .output()
        .expect("running vtab-orch")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn ok(o: &Output) -> String {
    let (out, err) = text(o);
    assert!(o.status.success(), "failed ({}):\n{err}", o.status);
    out
}

fn files(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn two_studies_share_a_store_but_not_their_reports() {
    let d = dir("two");
    let a = suite(&d, "study_a", "shape");
    let b = suite(&d, "study_b", "count");
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());

    // Nothing finished: exit 1, a clear message, and no report folder at all.
    let o = vtab(&["report", a_s]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nothing to report") && err.contains("vtab-orch run"),
        "{err}"
    );
    assert!(!d.join("reports").exists(), "nothing written");

    ok(&vtab(&["run", a_s, "--gpus", "none"]));
    ok(&vtab(&["run", b_s, "--gpus", "none"]));
    let md = ok(&vtab(&["report", a_s]));
    assert!(
        md.contains("| bitfit lr=0.01 |"),
        "labels show the table's settings:\n{md}"
    );
    ok(&vtab(&["report", b_s]));
    let (ra, rb) = (d.join("reports/study_a"), d.join("reports/study_b"));
    let want = |ds: &str| {
        let mut v: Vec<String> = [
            "per_class.csv",
            "report.md",
            "summary.csv",
            "table.csv",
            "vtab_table.csv",
            "vtab_table.tex",
            "plots/overview.svg",
            "plots/overview.png",
        ]
        .map(String::from)
        .to_vec();
        for ext in ["svg", "png"] {
            v.push(format!("plots/curves_{ds}.{ext}"));
            v.push(format!("plots/plot_{ds}.{ext}"));
        }
        v.sort();
        v
    };
    assert_eq!(files(&ra), want("shape"), "study_a's report only");
    assert_eq!(files(&rb), want("count"), "study_b's report only");
    // Neither report is in the store, and no report folder carries the store's tag.
    let store = d.join("store");
    assert!(store.join("CACHEDIR.TAG").exists());
    assert!(!store.join("summary.csv").exists() && !store.join("plots").exists());
    assert!(!ra.join("CACHEDIR.TAG").exists());

    // summary.csv: every setting of the key and the cost, one row per run.
    let csv = std::fs::read_to_string(ra.join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for col in [
        "seed",
        "numerics",
        "backbone",
        "img_size",
        "epochs",
        "batch_size",
        "lr",
        "min_lr",
        "weight_decay",
        "warmup_epochs",
        "label_smoothing",
        "clip_grad_norm",
        "augment",
        "test_n",
        "trainable",
        "trainable_backbone",
        "train_wall_s",
        "epochs_s",
        "overhead_s",
        "gpu_hours",
        "best_config",
    ] {
        assert!(
            header.contains(&col),
            "summary.csv lacks `{col}`: {header:?}"
        );
    }
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2);
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for r in &rows {
        assert_eq!(r[col("numerics")], "cpu-fp32");
        assert_eq!(r[col("test_n")], "40");
        assert_eq!(r[col("gpu_hours")], "0.000000", "CPU runs cost no GPU time");
        let wall: f64 = r[col("train_wall_s")].parse().unwrap();
        let epochs: f64 = r[col("epochs_s")].parse().unwrap();
        let overhead: f64 = r[col("overhead_s")].parse().unwrap();
        assert!(wall > 0.0 && epochs > 0.0 && epochs <= wall, "{r:?}");
        assert!((wall - epochs - overhead).abs() < 1e-3, "{r:?}");
    }
    let per_class = std::fs::read_to_string(ra.join("per_class.csv")).unwrap();
    assert!(per_class.starts_with("dataset,config,seed,class,accuracy,count\n"));
    let counts: usize = per_class
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("shape,linear,"))
        .map(|l| l.rsplit(',').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(counts, 40, "the class counts add up to the test set");

    // A rerun of the report after the suite lost a dataset leaves no stale plot behind.
    std::fs::write(ra.join("plots/plot_gone.svg"), "<svg/>").unwrap();
    ok(&vtab(&["report", a_s]));
    assert!(!ra.join("plots/plot_gone.svg").exists());
    // --out elsewhere works; --out into the store is an invalid argument.
    let out = d.join("elsewhere");
    ok(&vtab(&["report", a_s, "--out", out.to_str().unwrap()]));
    assert!(out.join("summary.csv").exists());
    let o = vtab(&["report", a_s, "--out", store.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
    assert!(text(&o).1.contains("CACHEDIR.TAG"));

    // gc of study_a alone: study_b's entries are announced before they are listed.
    let o = vtab(&["gc", a_s]);
    let out = ok(&o);
    let note = out
        .find("also holds runs of other suites")
        .unwrap_or_else(|| panic!("{out}"));
    let first = out.find("unreachable ").unwrap();
    assert!(note < first, "the note comes first:\n{out}");
    assert!(out.contains("suite `study_b`"), "{out}");
    assert!(out.contains("[suite study_b]"), "{out}");
    assert!(out.contains(&format!("vtab-orch gc {a_s} ")), "{out}");
    // Both suites named: nothing is unreachable and there is no note.
    let out = ok(&vtab(&["gc", a_s, b_s]));
    assert!(!out.contains("other suites"), "{out}");
    assert!(out.contains("0 unreachable entries"), "{out}");
    std::fs::remove_dir_all(&d).ok();
}
