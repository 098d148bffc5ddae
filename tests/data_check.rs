//! Bad data is found all at once: `plan --check-data` decodes every image of every real
//! split before anything runs and lists each unreadable file; a prep lists every unreadable
//! file of its split in one failure; a class without a test image is a warning from `plan`.
use std::path::Path;
use std::process::{Command, Output};

fn vtab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(args)
        .output()
        .expect("running vtab-orch")
}

/// Classes `a` and `b` with 10 images, `c` with 4 (the 20 % hold-out leaves it no test
/// image); two files are not images at all.
fn write_folder(root: &Path) {
    for (class, n) in [("a", 10u8), ("b", 10), ("c", 4)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 20, n, 0]))
                .save(root.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    std::fs::write(root.join("a/1.png"), b"not a png").unwrap();
    std::fs::write(root.join("b/2.png"), b"truncated").unwrap();
}

#[test]
fn every_bad_file_is_listed_at_once() {
    let d = std::env::temp_dir().join(format!("vtab-data-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let root = d.join("data");
    write_folder(&root);
    let suite = d.join("s.toml");
    std::fs::write(
        &suite,
        format!(
            "store = \"store\"\n[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 4\nwarmup_epochs = 0\n\
             [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
             [backbone.pretrain]\nimages = 50\nepochs = 1\n\
             [datasets.folder]\nformat = \"imagefolder\"\nroot = '{}'\n[methods.linear]\n",
            root.display()
        ),
    )
    .unwrap();
    let s = suite.to_str().unwrap();

    let plain = vtab(&["plan", s]);
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(plain.status.success(), "{err}");
    assert!(
        err.contains("warning: datasets.folder test: 1 class(es) have no image in this split: c"),
        "{err}"
    );

    let checked = vtab(&["plan", s, "--check-data"]);
    let err = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(1), "{err}");
    for f in ["a/1.png", "b/2.png"] {
        assert!(err.contains(f), "--check-data does not name {f}:\n{err}");
    }
    assert!(!d.join("store").exists(), "--check-data writes nothing");

    // The run fails the prep that holds them, naming both in one message.
    let run = vtab(&["run", s, "--gpus", "none"]);
    assert_eq!(run.status.code(), Some(1));
    let logs: String = std::fs::read_dir(d.join("store/logs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let both = logs
        .split("error: ")
        .any(|m| m.contains("a/1.png") && m.contains("b/2.png"));
    assert!(both, "no single failure names both files:\n{logs}");
    std::fs::remove_dir_all(&d).ok();
}
