//! Identity at execution: a node's key was made from its inputs at planning time; `prep`
//! refuses dataset files changed since then instead of storing them under the old key.
use orchestrator::datasets::{Format, RealSource, Split};
use orchestrator::graph::{Node, PrepNode};
use orchestrator::suite::Source;
use std::path::Path;

#[path = "support/hooks.rs"]
mod hooks;
use hooks::hook;

fn write_folder(root: &Path) {
    for (class, shade) in [("a", 40u8), ("b", 200)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..6u8 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([shade, i, 0]))
                .save(root.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
}

#[test]
fn prep_refuses_files_changed_since_planning() {
    let d = std::env::temp_dir().join(format!("vtab-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let root = d.join("data");
    write_folder(&root);
    let source = RealSource {
        format: Format::Imagefolder,
        root: root.clone(),
        dtd_split: None,
        train_csv: None,
        test_csv: None,
    };
    let planned = orchestrator::datasets::fingerprint(&source).unwrap();
    let node = Node::Prep(PrepNode {
        dataset: "folder".into(),
        source: Source::Real(source),
        source_digest: planned,
        split: Split::Test,
        img_size: 8,
        sample_seed: 0,
        view_of: None,
    });
    let key = orchestrator::identity::fingerprint(&node).key();
    let store = orchestrator::store::Store::open(&d.join("store")).unwrap();
    let spec = orchestrator::exec::write_spec(&store, &key, &node).unwrap();

    // One file replaced between plan and exec (a different size: the fingerprint sees it).
    image::RgbImage::from_pixel(9, 9, image::Rgb([1, 2, 3]))
        .save(root.join("a/0.png"))
        .unwrap();
    let err = orchestrator::exec::exec(&store.root, &key, &spec, true, None)
        .expect_err("a changed source must be refused")
        .to_string();
    assert!(err.contains("changed since the suite was planned"), "{err}");
    assert!(
        !store.is_complete("prep", &key),
        "nothing stored under the old key"
    );
    std::fs::remove_dir_all(&d).ok();
}

fn vtab(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("running vtab-orch")
}

/// (status, label, reason) of every node, from `plan --json`.
fn plan(suite: &Path, sets: &[&str]) -> Vec<(String, String, String)> {
    let mut args = vec!["plan", suite.to_str().unwrap(), "--json", "--gpus", "none"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let o = vtab(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("status"), s("label"), s("reason"))
        })
        .collect()
}

fn to_run(p: &[(String, String, String)]) -> Vec<&(String, String, String)> {
    p.iter().filter(|(s, _, _)| s == "run").collect()
}

fn tiny_suite(dir: &Path, root: &Path) -> std::path::PathBuf {
    let s = dir.join("s.toml");
    std::fs::write(
        &s,
        format!(
            "store = \"store\"\n[defaults]\nimg_size = 16\nepochs = 2\nbatch_size = 4\nwarmup_epochs = 0\n\
             [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
             [backbone.pretrain]\nimages = 50\nepochs = 1\n\
             [datasets.folder]\nformat = \"imagefolder\"\nroot = '{}'\n[methods.linear]\n",
            root.display()
        ),
    )
    .unwrap();
    s
}

/// Datasets are identified by content: a `touch` or a copy elsewhere keeps every key; an
/// edited, added or removed file reruns prep and what follows, and `plan` names the files.
#[test]
fn dataset_identity_is_content_and_plan_names_changed_files() {
    let d = std::env::temp_dir().join(format!("vtab-identity-content-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let root = d.join("data");
    write_folder(&root);
    let suite = tiny_suite(&d, &root);
    let s = suite.to_str().unwrap();
    let ran = vtab(&["run", s, "--gpus", "none"], &[]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(to_run(&plan(&suite, &[])).is_empty());

    // touch: same content, new mtime.
    let file = root.join("a/3.png");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(
        to_run(&plan(&suite, &[])).is_empty(),
        "a touch reruns nothing"
    );

    // A copy of the same files elsewhere.
    let copy = d.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    let status = std::process::Command::new("cp")
        .args([
            "-r",
            root.join("a").to_str().unwrap(),
            root.join("b").to_str().unwrap(),
        ])
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let elsewhere = format!("datasets.folder.root='{}'", copy.display());
    assert!(
        to_run(&plan(&suite, &[&elsewhere])).is_empty(),
        "a copy of identical files reruns nothing"
    );

    // One file edited, one added: both named.
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]))
        .save(root.join("a/3.png"))
        .unwrap();
    image::RgbImage::from_pixel(8, 8, image::Rgb([7, 7, 7]))
        .save(root.join("b/new.png"))
        .unwrap();
    let p = plan(&suite, &[]);
    let preps: Vec<_> = to_run(&p)
        .into_iter()
        .filter(|(_, l, _)| l.starts_with("prep"))
        .collect();
    assert_eq!(preps.len(), 2, "{p:?}");
    for (_, _, reason) in preps {
        assert!(
            reason.contains("1 modified (a/3.png)") && reason.contains("1 added (b/new.png)"),
            "{reason}"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

/// A run interrupted after a checkpoint: `plan` says the node resumes, and from which epoch.
#[test]
fn plan_says_a_node_resumes_from_its_checkpoint() {
    let d = std::env::temp_dir().join(format!("vtab-identity-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let root = d.join("data");
    write_folder(&root);
    let suite = tiny_suite(&d, &root);
    // Epoch 2 of 3: the 1-epoch pretraining of the backbone never reaches it.
    let crashed = vtab(
        &[
            "run",
            suite.to_str().unwrap(),
            "--gpus",
            "none",
            "--set",
            "defaults.epochs=3",
            "--set",
            "defaults.checkpoint_every='1 epoch'",
        ],
        &[hook("VTAB_ORCH_TEST_CRASH_AFTER_EPOCH", "2")],
    );
    assert_eq!(crashed.status.code(), Some(1));
    let p = plan(&suite, &["defaults.epochs=3"]);
    let train = p.iter().find(|(_, l, _)| l.starts_with("train")).unwrap();
    assert_eq!(train.0, "run");
    assert!(
        train
            .2
            .contains("resumes after epoch 2 from its checkpoint"),
        "{train:?}"
    );
    std::fs::remove_dir_all(&d).ok();
}
