//! End-to-end: `vtab-orch export` (issue 11, item 2). Trained runs of a tiny suite are
//! exported in both formats and loaded the way a user would, with real timm and peft
//! (scripts/export_check.py): the logits are ours. `--run` takes keys and the labels `plan`
//! and `report` print; bad uses exit 2 and say what to do.
use orchestrator::export::{self, Found};
use orchestrator::graph::Graph;
use orchestrator::load::{load, Loaded};
use orchestrator::nodes::train;
use orchestrator::numerics::DeviceKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

/// fp32 on the CPU; the Python side computes in fp32 too.
const TOL: f64 = 1e-5;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-export-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const HEAD: &str = "store = \"store\"\n[defaults]\nimg_size = 16\nepochs = 2\nbatch_size = 100\nwarmup_epochs = 0\nlr = 1e-2\n\
    [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 2\nnum_heads = 2\n\
    [backbone.pretrain]\nimages = 100\nepochs = 1\n\
    [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 40\n";

/// One run per method that has a peft form (LoRA also suffix-matched as peft does, so on the
/// patch embedding too), plus full fine-tuning (merged only).
fn methods_suite(d: &Path) -> PathBuf {
    let path = d.join("methods.toml");
    let body = "[methods.lora]\nr = 4\nalpha = 8\ntargets = \"qkv,proj,fc1,fc2\"\n\
        [methods.vera]\nr = 16\ntargets = \"qkv,fc1\"\n\
        [methods.lora_peft]\nmethod = \"lora\"\nr = 4\nalpha = 8\ntargets = \"qkv,proj,fc1,fc2\"\npeft_suffix_match = true\n\
        [methods.ia3]\ntargets = \"k,v,fc2\"\n\
        [methods.full]\nlr = 1e-3\n";
    std::fs::write(&path, format!("name = \"export\"\n{HEAD}{body}")).unwrap();
    path
}

fn vtab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(args)
        .output()
        .expect("running vtab-orch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "failed ({}):\n{}", o.status, stderr(o));
}

fn loaded(suite: &Path) -> Loaded {
    load(suite, &[], None, DeviceKind::Cpu).unwrap()
}

fn python() -> String {
    std::env::var("VTAB_ORCH_PYTHON").expect(
        "VTAB_ORCH_PYTHON is not set: the export test loads exports with timm and peft. \
         Run the tests through `./x test`, which installs them and sets it.",
    )
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn tensors(p: &Path) -> BTreeMap<String, Tensor> {
    kernels::checkpoint::read_safetensors(p).unwrap()
}

/// The trained model's head on the plain backbone (no adapter): what the logits would be if
/// an export lost its adapter. Keeps the comparison from being blind.
fn without_adapter(l: &Loaded, f: &Found, n: i64) -> kernels::AdaptedVit {
    let info = orchestrator::nodes::prep::info(&l.store.entry("prep", &f.train.prep)).unwrap();
    let mut m = train::model(
        &l.store.entry("build", &f.train.build),
        &f.build,
        info.img_size,
        &kernels::Method::linear(),
        n,
        0,
        Device::Cpu,
    )
    .unwrap();
    let trained = tensors(&l.store.entry("train", &f.train_key).join(train::TRAINABLE));
    let head = trained
        .into_iter()
        .filter(|(k, _)| k.starts_with("head."))
        .collect();
    m.load_trainable_map(head, Path::new("head")).unwrap();
    m
}

#[test]
fn exports_load_in_timm_and_peft_with_our_logits() {
    let d = dir("roundtrip");
    let suite = methods_suite(&d);
    let s = suite.to_str().unwrap();
    ok(&vtab(&["run", s, "--gpus", "none"]));
    let l = loaded(&suite);
    let other = l.other_device().unwrap();
    let graphs: [&Graph; 2] = [&l.graph, &other];
    tch::manual_seed(7);
    let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu));
    let x_file = d.join("x.safetensors");
    Tensor::write_safetensors(&[("x", x.shallow_clone())], &x_file).unwrap();

    let mut jobs = Vec::new();
    let mut ours = BTreeMap::new();
    for (method, formats) in [
        ("lora", &["peft", "merged"][..]),
        // peft's meaning of `proj`: LoRA on patch_embed.proj (a Conv2d) too.
        ("lora_peft", &["peft", "merged"]),
        ("vera", &["peft", "merged"]),
        ("ia3", &["peft", "merged"]),
        ("full", &["merged"]),
    ] {
        let f = export::find(&graphs, &l.store, &format!("shape {method} s0")).unwrap();
        let (model, classes) = export::load_model(&l.store, &f).unwrap();
        let logits = tch::no_grad(|| model.forward(&x, false));
        let n = logits.size()[1];
        assert_eq!(classes.len() as i64, n);
        let plain = tch::no_grad(|| without_adapter(&l, &f, n).forward(&x, false));
        assert!(
            max_abs_diff(&logits, &plain) > 1e-3,
            "{method}: the trained adapter changes nothing; the test would be blind"
        );
        for format in formats {
            let out = d.join(format!("{method}-{format}"));
            ok(&vtab(&[
                "export",
                s,
                "--run",
                &format!("shape {method} s0"),
                "--format",
                format,
                out.to_str().unwrap(),
            ]));
            let result = d.join(format!("{method}-{format}.out.safetensors"));
            jobs.push(serde_json::json!({"dir": out, "out": result}));
            ours.insert((method, *format), (logits.shallow_clone(), result));
        }
    }
    let jobs_file = d.join("jobs.json");
    std::fs::write(&jobs_file, serde_json::to_string(&jobs).unwrap()).unwrap();
    let status = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/export_check.py"))
        .args([&jobs_file, &x_file])
        .status()
        .expect("running scripts/export_check.py");
    assert!(status.success(), "timm/peft could not load our exports");
    for ((method, format), (want, result)) in &ours {
        let got = tensors(result);
        let diff = max_abs_diff(&got["logits"], want);
        assert!(diff <= TOL, "{method} {format}: |python - ours| = {diff:e}");
        if let Some(o) = got.get("overlay_logits") {
            let diff = max_abs_diff(o, want);
            assert!(
                diff <= TOL,
                "{method} {format} via pretrained_cfg_overlay: {diff:e}"
            );
        }
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn run_accepts_keys_and_labels_and_bad_uses_say_what_to_do() {
    let d = dir("args");
    let suite = methods_suite(&d);
    let s = suite.to_str().unwrap();
    let out = d.join("out");
    let o = out.to_str().unwrap();

    // Before anything is trained: exit 1, and it says to run first.
    let r = vtab(&["export", s, "--run", "shape lora s0", o]);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(stderr(&r).contains("not trained yet"), "{}", stderr(&r));
    assert!(!out.exists(), "a failed export leaves no folder");

    ok(&vtab(&["run", s, "--gpus", "none"]));
    let l = loaded(&suite);
    let other = l.other_device().unwrap();
    let want = export::find(&[&l.graph, &other], &l.store, "shape lora s0").unwrap();
    let key = want.train_key.clone();
    let label = want.label();
    let eval_label = label.replacen("train", "eval", 1);
    let names = [
        label.clone(),
        eval_label,
        key[..12].to_string(),
        want.eval_key.as_ref().unwrap()[..8].to_string(),
        format!("shape {}", want.train.config),
        "shape lora".to_string(),
    ];
    for name in &names {
        let f = export::find(&[&l.graph, &other], &l.store, name)
            .unwrap_or_else(|e| panic!("`{name}`: {e}"));
        assert_eq!(f.train_key, key, "`{name}` found another run");
    }

    // The plan's label for the train node, as the user would copy it.
    let plan = String::from_utf8(vtab(&["plan", s, "--gpus", "none"]).stdout).unwrap();
    assert!(plan.contains(&label), "plan prints `{label}`:\n{plan}");
    ok(&vtab(&["export", s, "--run", &label, o]));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(export::RECORD)).unwrap()).unwrap();
    assert_eq!(record["train_key"], key.as_str());
    let suite_in_record = PathBuf::from(record["suite"].as_str().unwrap());
    assert!(suite_in_record.is_absolute() && suite_in_record.is_file());
    assert_eq!(record["format"], "peft");
    assert!(out.join("adapter_config.json").is_file());

    // An existing export is not overwritten without --force; with it, it is replaced whole.
    let r = vtab(&["export", s, "--run", &label, "--format", "merged", o]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("--force"), "{}", stderr(&r));
    ok(&vtab(&[
        "export", s, "--run", &label, "--format", "merged", "--force", o,
    ]));
    assert!(out.join("model.safetensors").is_file());
    assert!(
        !out.join("adapter_config.json").exists(),
        "--force replaces the folder, it does not mix two exports"
    );

    // Nothing matches: exit 2, naming labels to use.
    let r = vtab(&["export", s, "--run", "shape lorra s0", o]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("names no run"), "{}", stderr(&r));
    assert!(stderr(&r).contains("train shape"), "{}", stderr(&r));

    // Full fine-tuning has no peft form: exit 2, pointing at --format merged.
    let r = vtab(&["export", s, "--run", "shape full s0", "--force", o]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(stderr(&r).contains("--format merged"), "{}", stderr(&r));

    // --force replaces only a previous export: never the suite's folder (which holds the
    // store), never `.`, never a folder of other files; a file as OUT is refused up front.
    // Each exits 2, deletes nothing and leaves no staging folder.
    let other = d.join("notes");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("precious.txt"), "keep").unwrap();
    let file = d.join("out.safetensors");
    std::fs::write(&file, "hi").unwrap();
    let store_entries = std::fs::read_dir(d.join("store")).unwrap().count();
    for (target, why) in [
        (d.clone(), "holds"),
        (PathBuf::from("."), "holds"),
        (other.clone(), "not a previous export"),
        (file.clone(), "not a folder"),
    ] {
        // Run from the suite's folder, so `.` is that folder.
        let r = Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
            .args(["export", s, "--run", &label, "--force"])
            .arg(&target)
            .current_dir(&d)
            .output()
            .unwrap();
        assert_eq!(r.status.code(), Some(2), "{target:?}: {}", stderr(&r));
        assert!(stderr(&r).contains(why), "{target:?}: {}", stderr(&r));
    }
    assert_eq!(
        std::fs::read_dir(d.join("store")).unwrap().count(),
        store_entries
    );
    assert_eq!(
        std::fs::read_to_string(other.join("precious.txt")).unwrap(),
        "keep"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hi");
    let staging: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".export-"))
        .collect();
    assert!(staging.is_empty(), "no staging folder left: {staging:?}");
    std::fs::remove_dir_all(&d).ok();
}

/// Under the VTAB-1k protocol the final run is the one a study reports: `DATASET METHOD`
/// names it, not the search run of the same settings.
#[test]
fn with_a_protocol_the_method_name_finds_the_final_run() {
    let d = dir("protocol");
    let path = d.join("protocol.toml");
    let body = "[protocol]\nkind = \"vtab1k\"\nsearch_seeds = [0]\nfinal_seeds = [0, 1]\n\
        [methods.lora]\nr = 2\nlr = [1e-2, 3e-3]\ntargets = \"qkv\"\n";
    std::fs::write(&path, format!("name = \"proto\"\n{HEAD}{body}")).unwrap();
    let s = path.to_str().unwrap();
    ok(&vtab(&["run", s, "--gpus", "none"]));
    let l = loaded(&path);
    let other = l.other_device().unwrap();
    let graphs: [&Graph; 2] = [&l.graph, &other];
    let finals: Vec<String> = l
        .graph
        .finals
        .iter()
        .map(|(_, e)| match l.graph.node(e) {
            Some(orchestrator::graph::Node::Eval(e)) => e.train.clone(),
            _ => panic!("a final's eval node"),
        })
        .collect();
    assert_eq!(finals.len(), 2, "two final seeds");
    let f = export::find(&graphs, &l.store, "shape lora s1").unwrap();
    assert!(f.is_final && f.train_key == finals[1]);
    // Both final seeds match `shape lora`: an error listing both keys.
    let err = export::find(&graphs, &l.store, "shape lora").err().unwrap();
    let text = err.to_string();
    assert!(
        finals.iter().all(|k| text.contains(&k[..12])),
        "lists both finals: {text}"
    );
    // Seed 0 has two search runs and a final run: `shape lora s0` is the final.
    let f0 = export::find(&graphs, &l.store, "shape lora s0").unwrap();
    assert_eq!(f0.train_key, finals[0]);

    // A final that is not trained (its entry gone) is an error, not a silent search run.
    std::fs::remove_dir_all(l.store.entry("train", &finals[0])).unwrap();
    let err = export::find(&graphs, &l.store, "shape lora s0")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("not trained yet") && err.to_string().contains(&finals[0][..12]),
        "{err}"
    );
    // Before the select node has chosen, `shape lora` says the final does not exist yet.
    let fresh = load(&path, &[], Some(&d.join("empty-store")), DeviceKind::Cpu).unwrap();
    let fresh_other = fresh.other_device().unwrap();
    let err = export::find(&[&fresh.graph, &fresh_other], &fresh.store, "shape lora s0")
        .err()
        .unwrap();
    assert!(err.to_string().contains("does not exist yet"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}
