//! `run --warm-workers`: the device nodes of a slot run one after another in one worker
//! process. Same keys and byte-identical results as a process per node; a node that crashes
//! its worker fails alone, and the slot's next node gets a fresh worker.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/hooks.rs"]
mod hooks;
use hooks::hook;

fn vtab(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("running vtab-orch")
}

fn suite(dir: &Path, methods: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("s.toml");
    std::fs::write(
        &p,
        format!(
            "store = \"store\"\n[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 100\nwarmup_epochs = 0\n\
             [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
             [backbone.pretrain]\nimages = 100\nepochs = 1\n\
             [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 40\n\
             [datasets.count]\nformat = \"synthetic\"\ntask = \"count\"\ntest_images = 40\n{methods}"
        ),
    )
    .unwrap();
    p
}

/// (kind/key, bytes of its main artifact) for every train and eval entry.
fn results(store: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (kind, file) in [("train", "trainable.safetensors"), ("eval", "metrics.json")] {
        for e in std::fs::read_dir(store.join(kind)).unwrap() {
            let dir = e.unwrap().path();
            let mut bytes = std::fs::read(dir.join(file)).unwrap();
            if kind == "eval" {
                // Timings differ between runs; the accuracies must not.
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                bytes = format!("{} {}", v["top1"], v["per_class"]).into_bytes();
            }
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            out.push((format!("{kind}/{name}"), bytes));
        }
    }
    out.sort();
    out
}

#[test]
fn warm_workers_give_the_same_keys_and_bytes() {
    let t = std::env::temp_dir().join(format!("vtab-warm-{}", std::process::id()));
    let methods = "[methods.linear]\n[methods.lora]\nr = 2\ntargets = \"q,v\"\n";
    let (a, b) = (suite(&t.join("a"), methods), suite(&t.join("b"), methods));
    let cold = vtab(&["run", a.to_str().unwrap(), "--gpus", "none"], &[]);
    assert!(
        cold.status.success(),
        "{}",
        String::from_utf8_lossy(&cold.stderr)
    );
    let warm = vtab(
        &[
            "run",
            b.to_str().unwrap(),
            "--gpus",
            "none",
            "--warm-workers",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&warm.stderr);
    assert!(warm.status.success(), "{err}");
    assert!(err.contains("13 ran"), "{err}");
    let (ra, rb) = (results(&t.join("a/store")), results(&t.join("b/store")));
    assert_eq!(ra.len(), 8, "4 train + 4 eval");
    assert!(ra == rb, "warm workers changed a key or a result");
    std::fs::remove_dir_all(&t).ok();
}

#[test]
fn a_node_that_crashes_its_worker_fails_alone() {
    let t = std::env::temp_dir().join(format!("vtab-warm-crash-{}", std::process::id()));
    // LoRA trains 3 epochs and crashes (abort) after its 2nd; the linear probe trains 1.
    let s = suite(
        &t,
        "[methods.linear]\n[methods.lora]\nr = 2\ntargets = \"q,v\"\nepochs = 3\n",
    );
    let o = vtab(
        &[
            "run",
            s.to_str().unwrap(),
            "--gpus",
            "none",
            "--warm-workers",
        ],
        &[hook("VTAB_ORCH_TEST_CRASH_AFTER_EPOCH", "2")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for d in ["shape", "count"] {
        assert!(err.contains(&format!("FAILED train {d} lora")), "{err}");
        assert!(err.contains(&format!("blocked eval {d} lora")), "{err}");
    }
    assert!(err.contains("warm worker process ended"), "{err}");
    assert!(err.contains("2 failed, 2 blocked"), "{err}");
    // Every other node finished, in a worker that replaced the crashed one.
    let evals = std::fs::read_dir(t.join("store/eval")).unwrap().count();
    assert_eq!(evals, 2, "the linear probe's evaluations");
    std::fs::remove_dir_all(&t).ok();
}
