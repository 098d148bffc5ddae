//! The corpus of malformed suites in tests/bad_suites/ (one defect per file, named for it):
//! each is refused before anything is written, with a short message that names the suite
//! file and the key at fault. The corpus runs in-process through the library's load path
//! (the one every command takes); a few cases go through the built `vtab-orch` for the exit
//! code 2 and the empty store.
use orchestrator::numerics::DeviceKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// (corpus file, substrings its error must contain). Keys are quoted as the messages quote
/// them; TOML syntax errors give `line:column`.
#[rustfmt::skip]
const CASES: &[(&str, &[&str])] = &[
    ("toml_syntax_error.toml", &["5:10:", "TOML syntax error", "unclosed table", "`[defaults`"]),
    ("toml_duplicate_table.toml", &["32:11:", "TOML syntax error", "duplicate key `shape`", "`[datasets.shape]`"]),
    ("toml_duplicate_key.toml", &["9:1:", "TOML syntax error", "duplicate key `lr`"]),
    ("unknown_key_top.toml", &["`sedes`", "unknown key", "did you mean `seeds`?"]),
    ("unknown_key_defaults.toml", &["`defaults.epoch`", "unknown key", "did you mean `epochs`?"]),
    ("unknown_key_method.toml", &["`methods.lora.aplha`", "unknown key", "did you mean `alpha`?"]),
    ("unknown_key_dataset.toml", &["`datasets.shape.test_image`", "did you mean `test_images`?"]),
    ("unknown_key_pretrain.toml", &["`backbone.pretrain.image`", "did you mean `images`?"]),
    ("unknown_key_for_method.toml", &["`methods.vera.alpha`", "not a parameter of vera"]),
    ("wrong_type_string_for_number.toml", &["`defaults.epochs`", "expected a positive integer", "the string \"3\""]),
    ("wrong_type_number_for_list.toml", &["`seeds`", "expected a list of seeds", "the number 0"]),
    ("wrong_type_table_for_value.toml", &["`defaults.lr`", "expected a number, found a table"]),
    ("wrong_type_float_for_integer.toml", &["`defaults.epochs`", "expected a positive integer", "the number 2.5"]),
    ("wrong_type_bool_for_bool.toml", &["`methods.lora.rslora`", "expected true or false", "\"yes\""]),
    ("negative_integer.toml", &["`defaults.warmup_epochs`", "must be a non-negative integer, got -1"]),
    ("empty_grid_axis.toml", &["`methods.lora.r`", "empty grid axis"]),
    ("rank_zero.toml", &["`methods.lora.r`", "must be >= 1, got 0"]),
    ("negative_lr.toml", &["`defaults.lr`", "must be > 0, got -0.001"]),
    ("zero_epochs.toml", &["`defaults.epochs`", "must be >= 1, got 0"]),
    ("unknown_method.toml", &["`methods.lroa`", "not a method", "did you mean `lora`?"]),
    ("unknown_method_kind.toml", &["`methods.attn.method`", "unknown method `lora2`"]),
    ("unknown_dataset_in_method.toml", &["`methods.lora.datasets`", "unknown dataset `shapes`", "did you mean `shape`?"]),
    ("unknown_target.toml", &["`methods.lora.targets`", "unknown layer `z`"]),
    ("duplicate_target.toml", &["`methods.lora.targets`", "lists `q` twice"]),
    ("qkv_with_q.toml", &["`methods.lora.targets`", "both `qkv` and `q`"]),
    ("unknown_synthetic_task.toml", &["`datasets.shape.task`", "unknown synthetic task `shapes`"]),
    ("unknown_dataset_format.toml", &["`datasets.shape.format`", "unknown dataset format `imagenet`"]),
    ("missing_dataset_root.toml", &["`datasets.eurosat.root`", "no-such-folder/2750 does not exist"]),
    ("real_dataset_without_root.toml", &["`datasets.eurosat.root`", "missing"]),
    ("weights_wrong_shapes.toml", &["`backbone.weights`", "does not fit the backbone", "`patch_embed.proj.weight` is [12, 3, 8, 8], the backbone needs [24, 3, 8, 8]"]),
    ("weights_missing_file.toml", &["`backbone.weights`", "no-such-weights.safetensors does not exist"]),
    ("duplicate_runs.toml", &["`methods.lora_again`", "repeats runs of [methods.lora]"]),
    ("override_matches_nothing.toml", &["`override[0]`", "matches no run", "[methods.lora] has no run on dataset `count`"]),
    ("override_unknown_dataset.toml", &["`override[0].dataset`", "unknown dataset `shapes`"]),
    ("override_unknown_method.toml", &["`override[0].method`", "unknown method table `full`"]),
    ("seeds_empty.toml", &["`seeds`", "is empty"]),
    ("duplicate_seed.toml", &["`seeds`", "lists seed 0 twice"]),
    ("weights_and_pretrain.toml", &["`backbone`", "both `weights`", "[backbone.pretrain]"]),
    ("no_weights.toml", &["`backbone`", "missing `weights", "[backbone.pretrain]"]),
    ("bad_precision.toml", &["`defaults.precision`", "\"fp16\""]),
    ("label_smoothing_one.toml", &["`defaults.label_smoothing`", "must be in [0, 1), got 1"]),
    ("embed_dim_not_divisible.toml", &["`backbone.embed_dim`", "25 is not a multiple of num_heads 3"]),
    ("img_size_not_divisible.toml", &["`backbone.img_size`", "30 is not a multiple of patch_size 8"]),
    ("run_img_size_not_divisible.toml", &["`defaults.img_size`", "36 is not a multiple of backbone.patch_size 8"]),
    ("unknown_arch.toml", &["`backbone.arch`", "unknown architecture `vit_tiny_patch8_224`"]),
    ("zero_test_images.toml", &["`datasets.shape.test_images`", "must be >= 1, got 0"]),
    ("dataset_group_empty.toml", &["`datasets.shape.group`", "empty: name the dataset's group"]),
    ("no_methods.toml", &["`methods`", "missing"]),
    ("protocol_with_top_seeds.toml", &["`seeds`", "contradicts [protocol]", "protocol.search_seeds and protocol.final_seeds"]),
    ("protocol_with_split.toml", &["`defaults.eval_split`", "contradicts [protocol]", "the protocol sets the splits"]),
    ("protocol_unknown_key.toml", &["`protocol.final_seed`", "unknown key", "did you mean `final_seeds`?"]),
    ("protocol_unknown_kind.toml", &["`protocol.kind`", "unknown protocol `vtab`", "vtab1k"]),
    ("slurm_poll_overflows_duration.toml", &["`slurm.poll_s`", "at most 86400", "found 1e+30"]),
    ("rank_huge.toml", &["`methods.lora.r`", "must be at most 4096, got 1000000"]),
    ("pretrain_images_huge.toml", &["`backbone.pretrain.images`", "must be at most 10000000, got 1000000000000"]),
    ("pretrain_set_too_large.toml", &["`backbone.pretrain.images`", "5000000 images of 64x64 need 57.2 GiB", "at most 16 GiB"]),
    ("synthetic_split_too_large.toml", &["`datasets.shape.test_images`", "10000000 images of 32x32 need 28.6 GiB", "at most 16 GiB"]),
    ("too_many_runs_in_all.toml", &["`methods`", "more than 100000 runs in all"]),
    ("img_size_huge.toml", &["`defaults.img_size`", "must be at most 4096, got 1048576"]),
    ("batch_size_huge.toml", &["`defaults.batch_size`", "must be at most 65536, got 10000000000"]),
    ("grid_too_large.toml", &["`methods.lora`", "more than 100000 points"]),
    ("test_images_huge.toml", &["`datasets.shape.test_images`", "must be at most 10000000"]),
];

/// Files in the corpus folder that are not suites but inputs of one.
const FIXTURES: [&str; 2] = ["README.md", "wrong_shapes.safetensors"];

/// The suite every corpus file starts from: it must plan cleanly.
const VALID: &str = r#"
name = "bad"
seeds = [0]

[defaults]
img_size = 32
epochs = 1
lr = 1e-3

[backbone]
arch = "vit_tiny_patch16_224"
img_size = 32
patch_size = 8
embed_dim = 24
depth = 1
num_heads = 3

[backbone.pretrain]
task = "source"
images = 100
epochs = 1

[datasets.shape]
format = "synthetic"
task = "shape"
test_images = 50

[methods.lora]
r = [2, 4]
targets = "q,v"
"#;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_suites")
}

/// A scratch folder of one test; each case's store is a path inside that does not exist yet.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-bad-suites-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).expect("creating the scratch folder");
    d
}

fn vtab(args: &[&str], suite: &Path, store: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    c.arg(args[0])
        .arg(suite)
        .arg("--store")
        .arg(store)
        .args(&args[1..]);
    // No VTAB_ORCH_* overrides from the environment of whoever runs the tests.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("VTAB_ORCH_")) {
        c.env_remove(k);
    }
    c.output().expect("running vtab-orch")
}

/// What is wrong with a refusal's message and store (empty: it refused correctly).
fn message_problems(err: &str, suite: &Path, store: &Path, expect: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if err.lines().count() > 6 {
        problems.push(format!(
            "{} lines of error (at most 6)",
            err.lines().count()
        ));
    }
    if !err.contains(&suite.display().to_string()) {
        problems.push("the error does not name the suite file".into());
    }
    for e in expect {
        if !err.contains(e) {
            problems.push(format!("the error lacks {e:?}"));
        }
    }
    let written = std::fs::read_dir(store).map_or(0, |d| d.count());
    if written > 0 {
        problems.push(format!("{written} entries written to the store"));
    }
    if !problems.is_empty() {
        problems.push(format!("the error was:\n{err}"));
    }
    problems
}

/// Everything wrong with how loading SUITE (with `--set` assignments) was refused, in-process.
fn load_problems(suite: &Path, sets: &[&str], store: &Path, expect: &[&str]) -> Vec<String> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    match orchestrator::load::load(suite, &sets, Some(store), DeviceKind::Cpu) {
        Ok(_) => vec!["accepted".into()],
        Err(e) => message_problems(&e.to_string(), suite, store, expect),
    }
}

/// Everything wrong with how `vtab-orch ARGS SUITE` refused: exit 2, and the message.
fn refusal_problems(args: &[&str], suite: &Path, store: &Path, expect: &[&str]) -> Vec<String> {
    let o = vtab(args, suite, store);
    let err = String::from_utf8_lossy(&o.stderr);
    let mut problems = message_problems(&err, suite, store, expect);
    if o.status.code() != Some(2) {
        problems.insert(0, format!("exit status {} (expected 2)", o.status));
    }
    problems
}

#[test]
fn every_bad_suite_is_refused_before_anything_is_written() {
    let scratch = scratch("corpus");
    // The corpus and the table must agree: a new file needs its expectation.
    let files: Vec<String> = std::fs::read_dir(corpus())
        .expect("listing tests/bad_suites")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|f| !FIXTURES.contains(&f.as_str()))
        .collect();
    let unlisted: Vec<&String> = files
        .iter()
        .filter(|f| !CASES.iter().any(|(c, _)| c == f))
        .collect();
    let stale: Vec<&str> = CASES
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| !files.iter().any(|f| f == c))
        .collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "tests/bad_suites/ files without a row in CASES: {unlisted:?}; rows without a file: {stale:?}"
    );
    let mut failures = Vec::new();
    for (file, expect) in CASES {
        let store = scratch.join(file.replace('.', "_"));
        let problems = load_problems(&corpus().join(file), &[], &store, expect);
        if !problems.is_empty() {
            failures.push(format!("{file}: {}", problems.join("; ")));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Through the binary: a syntax error and a semantic error exit 2 with nothing written.
#[test]
fn the_binary_exits_2_and_writes_nothing() {
    let scratch = scratch("binary");
    for (file, expect) in CASES
        .iter()
        .filter(|(f, _)| ["toml_syntax_error.toml", "unknown_key_method.toml"].contains(f))
    {
        let store = scratch.join(file.replace('.', "_"));
        let problems = refusal_problems(&["plan"], &corpus().join(file), &store, expect);
        assert!(problems.is_empty(), "{file}: {}", problems.join("\n"));
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn run_refuses_before_opening_the_store() {
    // The latest check before a run: the weights file exists but does not fit.
    let scratch = scratch("run");
    let store = scratch.join("store");
    let problems = refusal_problems(
        &["run", "--gpus", "none"],
        &corpus().join("weights_wrong_shapes.toml"),
        &store,
        &["`backbone.weights`", "does not fit the backbone"],
    );
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn set_with_a_bad_key_is_refused() {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("suite.toml");
    let scratch = scratch("set");
    for (set, expect) in [
        (
            "defaults.epoch=2",
            &[
                "`defaults.epoch`",
                "did you mean `epochs`?",
                "(from --set defaults.epoch=2)",
            ][..],
        ),
        (
            "defaults..epochs=2",
            &["--set `defaults..epochs=2`", "not a dotted key"][..],
        ),
        (
            "defaults.epochs",
            &["--set `defaults.epochs`", "expected KEY=VALUE"][..],
        ),
    ] {
        let store = scratch.join("store");
        let problems = load_problems(&suite, &[set], &store, expect);
        assert!(problems.is_empty(), "--set {set}: {}", problems.join("\n"));
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn the_corpus_base_suite_is_valid() {
    let scratch = scratch("valid");
    let suite = scratch.join("valid.toml");
    std::fs::write(&suite, VALID).unwrap();
    let loaded =
        orchestrator::load::load(&suite, &[], Some(&scratch.join("store")), DeviceKind::Cpu);
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = loaded {
        panic!("the base of the corpus does not plan:\n{e}");
    }
}

#[test]
fn a_weights_file_that_fits_passes_the_check() {
    // A timm checkpoint (with a head, made at 32 px) for a backbone at 48 px: the head is
    // dropped and the position embedding resampled, so it fits.
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/tests/fixtures/vit_b32.safetensors");
    let scratch = scratch("weights");
    let suite = scratch.join("weights.toml");
    let text = VALID
        .replace(
            "[backbone.pretrain]\ntask = \"source\"\nimages = 100\nepochs = 1\n",
            "",
        )
        .replace("img_size = 32", "img_size = 48")
        .replace("embed_dim = 24", "embed_dim = 64")
        .replace("depth = 1", "depth = 2")
        .replace(
            "num_heads = 3",
            &format!(
                "num_heads = 4\nmlp_ratio = 2.0\nweights = '{}'",
                weights.display()
            ),
        );
    std::fs::write(&suite, text).unwrap();
    let loaded =
        orchestrator::load::load(&suite, &[], Some(&scratch.join("store")), DeviceKind::Cpu);
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = loaded {
        panic!("a fitting checkpoint was refused:\n{e}");
    }
}
