//! End-to-end: the built `vtab-orch` binary on the default suite.toml with tiny settings
//! (a 1-block ViT, 1 epoch, small test splits) in a temporary store.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TINY: [&str; 11] = [
    "defaults.epochs=1",
    "backbone.depth=1",
    "backbone.embed_dim=24",
    "backbone.pretrain.images=200",
    "backbone.pretrain.epochs=1",
    "datasets.shape.test_images=60",
    "datasets.count.test_images=60",
    "datasets.orientation.test_images=60",
    "methods.vera.r=[4, 8]",
    "defaults.batch_size=100",
    "defaults.warmup_epochs=0",
];

fn suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("suite.toml")
}

fn store(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn vtab(cmd: &str, store: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    c.arg(cmd).arg(suite()).arg("--store").arg(store);
    for s in TINY.iter().chain(extra) {
        c.arg("--set").arg(s);
    }
    if cmd == "run" {
        c.args(["--gpus", "none"]);
    }
    c.output().expect("running vtab-orch")
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

fn plan(store: &Path, extra: &[&str]) -> Vec<Value> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    c.arg("plan")
        .arg(suite())
        .arg("--store")
        .arg(store)
        .arg("--json");
    for s in TINY.iter().chain(extra) {
        c.arg("--set").arg(s);
    }
    let o = c.output().expect("plan");
    let text = ok(&o);
    serde_json::from_str::<Value>(&text)
        .expect("plan --json is JSON")
        .as_array()
        .expect("an array")
        .clone()
}

fn to_run(p: &[Value]) -> Vec<(String, String)> {
    p.iter()
        .filter(|e| e["status"] == "run")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["label"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn default_suite_runs_caches_and_reruns_only_what_changed() {
    let st = store("main");
    // Everything is new at first, or pending a selection (the protocol's finals).
    let p0 = plan(&st, &[]);
    assert!(
        !p0.is_empty()
            && p0
                .iter()
                .all(|e| (e["status"] == "run" && e["reason"] == "new")
                    || (e["status"] == "pending" && e["key"] == ""))
    );
    for e in &p0 {
        for k in ["key", "kind", "label", "status", "reason", "deps"] {
            assert!(e.get(k).is_some(), "plan entry lacks `{k}`: {e}");
        }
    }
    let count = |p: &[Value], status: &str, kind: &str| {
        p.iter()
            .filter(|e| e["status"] == status && e["kind"] == kind)
            .count()
    };
    // Search: 3 datasets x 8 candidates (linear, vera, lora, lora_mlp: 2 each). Finals of
    // the one-candidate tables (bitfit, ia3 on 3 datasets, full on 2; 3 seeds on shape;
    // dora, loha, lokr, ln_tuning, adaptformer, oft, pissa, houlsby and vpt on count) are
    // known at once: 3 x 3 + 2 + 3 + 9 = 23; the other 4 tables' finals wait for their 12
    // select nodes:
    // 4 x (3 + 1 + 1) = 20.
    assert_eq!(count(&p0, "run", "eval"), 3 * 8 + 23);
    assert_eq!(count(&p0, "run", "select"), 3 * 4);
    assert_eq!(count(&p0, "pending", "eval"), 20);
    assert_eq!(count(&p0, "pending", "train"), 20);
    ok(&vtab("run", &st, &[]));

    // The report under the protocol: the selection of every (dataset, method table), the
    // finals from the test split and the search from val200.
    let reports = st.join("reports");
    let mut report = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    report.arg("report").arg(suite()).arg("--store").arg(&st);
    report.arg("--out").arg(&reports);
    for s in TINY {
        report.arg("--set").arg(s);
    }
    let md = ok(&report.output().unwrap());
    assert!(
        md.contains("(split: test;") && md.contains("(split: val200;"),
        "{md}"
    );
    assert!(md.contains("| lora r=8 a=8 q,v lr="), "{md}");
    let groups = 3 * 6 + 2 + 9;
    let sel = std::fs::read_to_string(reports.join("selection.csv")).unwrap();
    assert_eq!(sel.lines().count(), 1 + groups, "{sel}");
    let finals = std::fs::read_to_string(reports.join("final.csv")).unwrap();
    assert_eq!(finals.lines().count(), 1 + groups, "{finals}");
    assert!(
        finals
            .lines()
            .any(|l| l.starts_with("shape,lora,") && l.contains(" (3),")),
        "{finals}"
    );
    let search = std::fs::read_to_string(reports.join("search.csv")).unwrap();
    assert_eq!(search.lines().count(), 1 + 3 * 8, "{search}");

    // A second run executes nothing.
    let again = vtab("run", &st, &[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success() && err.contains("0 ran"), "{err}");
    let done = plan(&st, &[]);
    assert!(done.iter().all(|e| e["status"] == "cached"));

    // Non-semantic settings change no key: another eval batch size.
    let keys = |p: &[Value]| {
        p.iter()
            .map(|e| e["key"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&plan(&st, &["defaults.eval_batch_size=7"])),
        keys(&done)
    );
    // ... nor another store location.
    let elsewhere = store("elsewhere");
    assert_eq!(keys(&plan(&elsewhere, &[])), keys(&p0));
    assert!(!elsewhere.exists(), "plan writes nothing");

    // One method's hyper-parameter: exactly that method's train and eval nodes rerun.
    let p1 = plan(&st, &["methods.ia3.targets=\"v,fc2\""]);
    let changed = to_run(&p1);
    let ia3_runs = 3 + 2; // 3 datasets + 2 extra seeds on shape
    assert_eq!(changed.len(), 2 * ia3_runs, "{changed:?}");
    assert!(
        changed.iter().all(|(_, l)| l.contains(" ia3 ")),
        "{changed:?}"
    );
    let train = p1
        .iter()
        .find(|e| e["status"] == "run" && e["kind"] == "train")
        .unwrap();
    assert!(
        train["reason"]
            .as_str()
            .unwrap()
            .starts_with("changed: method.targets"),
        "{train}"
    );

    // A new final seed runs only the new final nodes (train + eval per method table on the
    // datasets without their own seeds: count 15 tables, orientation 7), no search.
    let p2 = plan(&st, &["protocol.final_seeds=[0, 5]"]);
    let new = to_run(&p2);
    assert!(
        !new.is_empty() && new.iter().all(|(_, l)| l.ends_with(" s5")),
        "{new:?}"
    );
    assert_eq!(new.len(), 2 * (15 + 7), "{new:?}");
    std::fs::remove_dir_all(&st).ok();
}

#[test]
fn a_failing_node_blocks_only_its_dependants() {
    let st = store("fail");
    std::fs::create_dir_all(&st).unwrap();
    // Two methods on two datasets; VeRA's learning rate diverges (non-finite loss).
    let suite = st.join("fail.toml");
    std::fs::write(
        &suite,
        "store = \"store\"\n[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 100\nwarmup_epochs = 0\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 40\n\
         [datasets.count]\nformat = \"synthetic\"\ntask = \"count\"\ntest_images = 40\n\
         [methods.linear]\n[methods.vera]\nr = 4\ntargets = \"qkv\"\nlr = 1e30\n",
    )
    .unwrap();
    let cmd = |c: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
        cmd.args([c, suite.to_str().unwrap(), "--gpus", "none"]);
        cmd
    };
    let o = cmd("run").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for d in ["shape", "count"] {
        assert!(err.contains(&format!("FAILED train {d} vera")), "{err}");
        assert!(err.contains(&format!("blocked eval {d} vera")), "{err}");
    }
    assert!(err.contains("non-finite loss in epoch 1, step"), "{err}");
    assert!(err.contains("log: "), "{err}");
    assert!(err.contains("2 failed, 2 blocked"), "{err}");
    // Every sibling finished and is cached; only VeRA's nodes are left to run.
    let p = cmd("plan").arg("--json").output().unwrap();
    let p: Vec<Value> = serde_json::from_slice::<Value>(&p.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let pending = to_run(&p);
    assert!(
        pending.iter().all(|(_, l)| l.contains(" vera ")),
        "{pending:?}"
    );
    assert_eq!(pending.len(), 2 * 2, "2 datasets x (train, eval)");
    assert_eq!(
        p.len() - pending.len(),
        1 + 2 * 2 + 2 * 2,
        "build, 2 x 2 preps, linear train+eval x 2 cached"
    );
    std::fs::remove_dir_all(&st).ok();
}

/// The device kind is part of device nodes' keys (`cpu-fp32` vs `cuda-bf16`); which GPU is
/// not; prep keys do not depend on the device at all.
#[test]
fn keys_follow_the_device_kind_not_the_gpu_choice() {
    let st = store("device");
    let keys = |gpus: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
        c.args(["plan", suite().to_str().unwrap(), "--json", "--gpus", gpus])
            .arg("--store")
            .arg(&st);
        for s in TINY {
            c.arg("--set").arg(s);
        }
        let text = ok(&c.output().unwrap());
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            // Pending finals have no key yet (their settings wait for a selection).
            .filter(|e| e["status"] != "pending")
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_string(),
                    e["key"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let (gpu0, gpu1, cpu) = (keys("0"), keys("1"), keys("none"));
    assert_eq!(gpu0, gpu1, "which GPU is not part of a key");
    for ((kind, a), (_, b)) in gpu0.iter().zip(&cpu) {
        if a.is_empty() {
            continue; // a pending final (its select has not run): no key yet
        }
        if kind == "prep" {
            assert_eq!(a, b, "prep does not depend on the device");
        } else {
            assert_ne!(
                a, b,
                "{kind}: cuda-bf16 and cpu-fp32 results are keyed apart"
            );
        }
    }
    assert!(!st.exists(), "plan writes nothing");
}

/// Every invalid argument exits with 2, as documented.
#[test]
fn invalid_arguments_exit_2() {
    let st = store("args");
    let cases: [&[&str]; 4] = [
        &["run", "--gpus", "zero"],
        &["plan", "--gpus", "0,x"],
        &["report", "--format", "pdf"],
        &["run", "--gpus", "99"],
    ];
    for args in cases {
        let o = Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
            .args(&args[..1])
            .arg(suite())
            .arg("--store")
            .arg(&st)
            .args(&args[1..])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(!st.exists(), "nothing written");
}
