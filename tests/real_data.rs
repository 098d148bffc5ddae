//! A real on-disk dataset (an ImageFolder of PNG files written here) through the binary:
//! prep decodes it, training and evaluation run, a changed image file reruns prep and
//! everything downstream of it, and nothing else.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vtab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(args)
        .output()
        .expect("running vtab-orch")
}

fn write_folder(root: &Path) {
    // Three classes told apart by colour, 30 noisy images each.
    let colours = [
        ("red", [200u8, 30, 30]),
        ("green", [30, 200, 30]),
        ("blue", [30, 30, 200]),
    ];
    for (ci, (name, rgb)) in colours.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..30u32 {
            let img = image::RgbImage::from_fn(20, 20, |x, y| {
                let n = ((x * 7 + y * 13 + i * 31 + ci as u32 * 17) % 41) as u8;
                image::Rgb([
                    rgb[0].saturating_add(n),
                    rgb[1].saturating_add(n),
                    rgb[2].saturating_add(n),
                ])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

#[test]
fn imagefolder_runs_end_to_end_and_tracks_file_changes() {
    let d: PathBuf = std::env::temp_dir().join(format!("vtab-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    write_folder(&d.join("colours"));
    let suite = d.join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"real\"\nstore = \"store\"\n[defaults]\nimg_size = 16\nepochs = 3\nbatch_size = 32\nwarmup_epochs = 0\nlr = 1e-2\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.colours]\nformat = \"imagefolder\"\nroot = \"colours\"\n[methods.linear]\n[methods.lora]\nr = 2\ntargets = \"q,v\"\n",
    )
    .unwrap();
    let s = suite.to_str().unwrap();
    let run = vtab(&["run", s, "--gpus", "none"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = vtab(&["report", s, "--format", "csv"]);
    assert!(report.status.success());
    let summary = std::fs::read_to_string(d.join("reports/real/summary.csv")).unwrap();
    assert_eq!(summary.lines().count(), 3, "header + 2 runs:\n{summary}");
    // ImageFolder holds out a fifth per class for the test split: 3 x 6 images.
    let metrics: Vec<_> = std::fs::read_dir(d.join("store/eval"))
        .unwrap()
        .map(|e| e.unwrap().path().join("metrics.json"))
        .collect();
    for m in metrics {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(m).unwrap()).unwrap();
        assert_eq!(v["n"], 18);
    }
    // Change one image: both prep nodes (train and test lists come from the same source),
    // every train and eval node rerun; the backbone does not.
    let f = d.join("colours/red/000.png");
    image::RgbImage::from_pixel(20, 20, image::Rgb([255, 0, 0]))
        .save(&f)
        .unwrap();
    let plan = vtab(&["plan", s, "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let run: Vec<(&str, &str)> = p
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "run")
        .map(|e| (e["kind"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        run.iter().filter(|(k, _)| *k == "prep").count(),
        2,
        "{run:?}"
    );
    assert!(
        run.iter()
            .filter(|(k, _)| *k == "prep")
            .all(|(_, r)| r.contains("files: 1 modified (red/000.png)")),
        "{run:?}"
    );
    assert_eq!(run.len(), 2 + 2 + 2, "2 prep + 2 train + 2 eval: {run:?}");
    std::fs::remove_dir_all(&d).ok();
}

/// A VTAB-1k layout (`train800val200.txt` with 1000 PNGs, `test.txt`) under `root`; labels by
/// colour as in `write_folder`.
fn write_vtab1k(root: &Path) {
    let colours = [[200u8, 30, 30], [30, 200, 30], [30, 30, 200]];
    let mut lists = [String::new(), String::new(), String::new(), String::new()];
    for i in 0..1060u32 {
        let label = (i % 3) as usize;
        let rgb = colours[label];
        let n = ((i * 31) % 41) as u8;
        let name = format!("images/{i:04}.png");
        let path = root.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb(rgb.map(|c| c.saturating_add(n))))
            .save(&path)
            .unwrap();
        let line = format!("{name} {label}\n");
        match i {
            0..800 => lists[0] += &line,
            800..1000 => lists[1] += &line,
            _ => lists[3] += &line,
        }
        if i < 1000 {
            lists[2] += &line;
        }
    }
    for (file, text) in [
        "train800.txt",
        "val200.txt",
        "train800val200.txt",
        "test.txt",
    ]
    .iter()
    .zip(lists)
    {
        std::fs::write(root.join(file), text).unwrap();
    }
}

#[test]
fn report_marks_official_lists_comparable_and_places_the_reference_beside_them() {
    let d: PathBuf = std::env::temp_dir().join(format!("vtab-subsets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    write_folder(&d.join("colours"));
    write_vtab1k(&d.join("lists"));
    let suite = d.join("suite.toml");
    std::fs::write(
        &suite,
        "name = \"subsets\"\nstore = \"store\"\n[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 100\nwarmup_epochs = 0\nlr = 1e-2\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.official]\nformat = \"vtab1k\"\nroot = \"lists\"\n\
         [datasets.draw]\nformat = \"imagefolder\"\nroot = \"colours\"\n[methods.linear]\n",
    )
    .unwrap();
    let reference = d.join("reference.csv");
    std::fs::write(
        &reference,
        "dataset,method,top1,source\nofficial,linear,12.5,Paper A\ndraw,linear,77.7,Paper B\n",
    )
    .unwrap();
    let s = suite.to_str().unwrap();
    let run = vtab(&["run", s, "--gpus", "none"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // Every prep entry records its subset; members.txt hashes to the recorded digest.
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(d.join("store/prep")).unwrap() {
        let dir = entry.unwrap().path();
        let rec: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("subset.json")).unwrap())
                .unwrap();
        let members = orchestrator::store::digest_file(&dir.join("members.txt")).unwrap();
        assert_eq!(
            rec["members_blake3"].as_str().unwrap(),
            members,
            "{}",
            dir.display()
        );
        kinds.push(rec["definition"]["kind"].as_str().unwrap().to_string());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["seeded-draw", "vtab1k-lists", "vtab1k-lists", "whole"]
    );

    let report = vtab(&["report", s, "--reference", reference.to_str().unwrap()]);
    let md = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{md}");
    assert!(
        md.contains("- `official`: **comparable with published VTAB-1k**"),
        "{md}"
    );
    assert!(md.contains("- `draw`: **not comparable"), "{md}");
    assert!(md.contains("| linear | 12.5 (ours "), "{md}");
    assert!(!md.contains("77.7"), "the draw is not compared:\n{md}");
    let summary = std::fs::read_to_string(d.join("reports/subsets/summary.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(summary.as_bytes());
    let col = rows
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "vtab1k_comparable")
        .expect("a vtab1k_comparable column");
    for row in rows.records() {
        let row = row.unwrap();
        let want = if &row[0] == "official" {
            "true"
        } else {
            "false"
        };
        assert_eq!(&row[col], want, "{row:?}");
    }

    // A malformed reference file is an invalid argument: exit 2, naming the file.
    std::fs::write(&reference, "dataset,method\nofficial,linear\n").unwrap();
    let bad = vtab(&["report", s, "--reference", reference.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("reference.csv") && err.contains("top1"),
        "{err}"
    );
    std::fs::remove_dir_all(&d).ok();
}
