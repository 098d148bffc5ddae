//! The README's "Your own study, step by step", run as a new user would: the suite is read
//! out of the README itself (so the two cannot drift apart), with 60 PNGs in class folders
//! and an embedded task; plan, run, report, an edit, and a rerun of exactly what changed.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vtab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(args)
        .output()
        .expect("running vtab-orch")
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The TOML block between the README's walk-through markers.
fn readme_suite() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- walkthrough suite -->")
        .expect("the README's walk-through suite");
    let block = &readme[start..];
    let body = &block[block.find("```toml\n").unwrap() + 8..];
    body[..body.find("```").unwrap()].to_string()
}

/// (status, label, reason) per node.
fn plan(suite: &str) -> Vec<(String, String, String)> {
    let text = ok(vtab(&["plan", suite, "--json", "--gpus", "none"]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("label"), s("reason"))
        })
        .collect()
}

#[test]
fn the_readme_walkthrough_works_as_written() {
    let d: PathBuf = std::env::temp_dir().join(format!("vtab-walkthrough-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let study = d.join("my-study");
    for (c, rgb) in [
        ("red", [200u8, 30, 30]),
        ("green", [30, 200, 30]),
        ("blue", [30, 30, 200]),
    ] {
        let dir = study.join("data/colours").join(c);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..20u32 {
            image::RgbImage::from_fn(24, 24, |x, y| {
                let n = ((x * 7 + y * 13 + i * 31) % 37) as u8;
                image::Rgb(rgb.map(|v| v.saturating_add(n)))
            })
            .save(dir.join(format!("{c}-{i:02}.png")))
            .unwrap();
        }
    }
    let suite_text = readme_suite();
    let suite = study.join("study.toml");
    std::fs::write(&suite, &suite_text).unwrap();
    let s = suite.to_str().unwrap();

    // 3. Everything is new; the data decodes.
    let p = plan(s);
    assert!(
        p.iter().all(|(st, _, r)| st == "run" && r == "new"),
        "{p:?}"
    );
    ok(vtab(&["plan", s, "--check-data", "--gpus", "none"]));
    // 2 datasets x (linear + 2 LoRA learning rates) runs.
    assert_eq!(
        p.iter().filter(|(_, l, _)| l.starts_with("eval")).count(),
        6
    );

    // 4. Run and report.
    let run = vtab(&["run", s, "--gpus", "none"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let md = ok(vtab(&["report", s]));
    assert!(md.contains("colours") && md.contains("shape"), "{md}");
    let reports = study.join("results/reports/my-study");
    assert!(
        reports.join("summary.csv").exists(),
        "report folder {}",
        reports.display()
    );
    assert!(
        !study.join("results/store/summary.csv").exists(),
        "nothing written into the store"
    );

    // 5. The edit: more epochs for LoRA. Only its train and eval nodes rerun, and say why.
    let edited = suite_text.replace("[methods.lora]\n", "[methods.lora]\nepochs = 5\n");
    assert_ne!(edited, suite_text);
    std::fs::write(&suite, edited).unwrap();
    let p = plan(s);
    let to_run: Vec<_> = p.iter().filter(|(st, _, _)| st == "run").collect();
    assert_eq!(
        to_run.len(),
        2 * 2 * 2,
        "2 datasets x 2 LoRA runs x (train, eval): {to_run:?}"
    );
    assert!(
        to_run.iter().all(|(_, l, _)| l.contains(" lora ")),
        "{to_run:?}"
    );
    assert!(
        to_run
            .iter()
            .filter(|(_, l, _)| l.starts_with("train"))
            .all(|(_, _, r)| r.contains("epochs: 3 -> 5")),
        "{to_run:?}"
    );
    let rerun = vtab(&["run", s, "--gpus", "none"]);
    let err = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{err}");
    assert!(err.contains("8 ran"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}
