//! Parser tests that need the whole suite: did-you-mean, grid labels, where values came from.
use super::defaults::OPT_KEYS;
use super::diagnostic::nearest;
use super::*;
use std::collections::BTreeSet;

fn default_suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../suite.toml")
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn nearest_suggests_close_names_and_synonyms_only() {
    assert_eq!(nearest("sedes", &TOP_KEYS), Some("seeds"));
    assert_eq!(nearest("epoch", &OPT_KEYS), Some("epochs"));
    assert_eq!(nearest("learning_rate", &OPT_KEYS), Some("lr"));
    assert_eq!(nearest("x", &["r"]), None);
    assert_eq!(nearest("colour", &TOP_KEYS), None);
}

#[test]
fn a_grid_over_a_parameter_the_label_hides_gives_distinct_runs() {
    let sets = ["methods.lora.dropout=[0.0, 0.1]".to_string()];
    let suite = load_with_env(&default_suite(), &sets, []).expect("a valid suite");
    let configs: BTreeSet<&str> = suite.runs.iter().map(|r| r.config.as_str()).collect();
    for d in ["dropout=0.0", "dropout=0.1"] {
        assert!(configs.iter().any(|c| c.contains(d)), "{configs:?}");
    }
}

/// A setting given once in a method table is in the row label too, not only grid axes:
/// `[methods.full] lr = 5e-4` and `[methods.vera] lr = 1e-2` (a suite without a protocol,
/// whose runs are all final runs).
#[test]
fn labels_show_every_setting_a_method_table_gives() {
    let dir = std::env::temp_dir().join(format!("vtab-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.toml");
    std::fs::write(
        &path,
        "[backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 32\npatch_size = 8\n[backbone.pretrain]\n\
         [defaults]\nimg_size = 32\n[datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\n\
         [methods.linear]\n[methods.full]\nlr = 5e-4\n[methods.vera]\nr = 16\ntargets = \"qkv,fc2\"\nlr = 1e-2\n\
         [methods.lora]\nr = 2\nalpha = 8\ntargets = \"q,v\"\n",
    )
    .unwrap();
    let sets = ["methods.lora.weight_decay=0.05".to_string()];
    let suite = load_with_env(&path, &sets, []).expect("a valid suite");
    let configs: BTreeSet<&str> = suite.runs.iter().map(|r| r.config.as_str()).collect();
    for want in [
        "full lr=0.0005",
        "vera r=16 qkv,fc2 lr=0.01",
        "lora r=2 a=8 q,v weight_decay=0.05",
        "linear",
    ] {
        assert!(configs.contains(want), "no `{want}` in {configs:?}");
    }
    // Non-semantic settings stay out of labels.
    let sets = ["methods.linear.eval_batch_size=7".to_string()];
    let suite = load_with_env(&path, &sets, []).expect("a valid suite");
    assert!(suite.runs.iter().any(|r| r.config == "linear"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_from_set_say_so() {
    let sets = ["defaults.epoch=2".to_string()];
    let e = load_with_env(&default_suite(), &sets, []).unwrap_err();
    assert_eq!(
        e.errors,
        [Diagnostic {
            key: "defaults.epoch".into(),
            problem: Problem::UnknownKey {
                suggestion: Some("epochs".into()),
                allowed: OPT_KEYS.iter().map(|k| k.to_string()).collect(),
            },
            origin: Some(Origin::Set("defaults.epoch=2".into())),
        }]
    );
    assert_eq!(
        e.errors[0].to_string(),
        "`defaults.epoch`: unknown key; did you mean `epochs`? (from --set defaults.epoch=2)"
    );
}

/// The README's uppercase form works, and goes through the same validation as `--set`.
#[test]
fn environment_overrides_are_validated_like_set() {
    let epochs = |s: &Suite| s.runs[0].opt.epochs;
    let plain = load_with_env(&default_suite(), &[], []).unwrap();
    let upper = load_with_env(
        &default_suite(),
        &[],
        env(&[("VTAB_ORCH_DEFAULTS__EPOCHS", "2")]),
    )
    .unwrap();
    assert_ne!(epochs(&plain), 2);
    assert_eq!(epochs(&upper), 2);
    let lower = load_with_env(
        &default_suite(),
        &[],
        env(&[("VTAB_ORCH_defaults__epochs", "3")]),
    )
    .unwrap();
    assert_eq!(epochs(&lower), 3);
    // --set wins over the environment.
    let both = load_with_env(
        &default_suite(),
        &["defaults.epochs=4".into()],
        env(&[("VTAB_ORCH_DEFAULTS__EPOCHS", "2")]),
    )
    .unwrap();
    assert_eq!(epochs(&both), 4);
    // The tool's own variables are not suite keys.
    let tool = env(&[("VTAB_ORCH_HOME", "/x"), ("VTAB_ORCH_PYTHON", "py")]);
    assert!(load_with_env(&default_suite(), &[], tool).is_ok());

    let bad = load_with_env(
        &default_suite(),
        &[],
        env(&[("VTAB_ORCH_DEFAULTS__LR", "abc")]),
    )
    .unwrap_err();
    assert_eq!(bad.errors.len(), 1, "{bad}");
    assert_eq!(bad.errors[0].key, "defaults.lr");
    assert!(
        matches!(bad.errors[0].problem, Problem::WrongType { .. }),
        "{bad}"
    );
    assert_eq!(
        bad.errors[0].origin,
        Some(Origin::Env("VTAB_ORCH_DEFAULTS__LR".into()))
    );
    let typo = load_with_env(
        &default_suite(),
        &[],
        env(&[("VTAB_ORCH_DEFAULTS__EPOCH", "2")]),
    )
    .unwrap_err();
    assert_eq!(
        typo.to_string(),
        format!(
            "{}: `defaults.epoch`: unknown key; did you mean `epochs`? (from the environment variable VTAB_ORCH_DEFAULTS__EPOCH)",
            default_suite().display()
        )
    );
}

/// A suite file in a fresh folder, from its method tables (tiny ViT, one synthetic task).
fn suite_with_methods(tag: &str, methods: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vtab-peftmatch-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.toml");
    std::fs::write(
        &path,
        format!(
            "[backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 32\npatch_size = 8\ndepth = 2\n\
             [backbone.pretrain]\n[defaults]\nimg_size = 32\n\
             [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\n{methods}"
        ),
    )
    .unwrap();
    path
}

/// `peft_suffix_match = true` gives `targets` peft's meaning: `proj` also adapts
/// `patch_embed.proj` (peft's Conv2d LoRA / IA3), so the run's targets, label, key and
/// trainable count are a peft baseline's. Without it `proj` stays the attention projection.
#[test]
fn peft_suffix_match_puts_proj_on_the_patch_embedding_too() {
    use kernels::{AdaptedVit, Target, VisionTransformer};
    let path = suite_with_methods(
        "ok",
        "[methods.lora]\nr = 4\ntargets = \"qkv,proj,fc1,fc2\"\n\
         [methods.lora_peft]\nmethod = \"lora\"\nr = 4\ntargets = \"qkv,proj,fc1,fc2\"\npeft_suffix_match = true\n\
         [methods.ia3]\ntargets = \"qkv,proj,fc1,fc2\"\n\
         [methods.ia3_peft]\nmethod = \"ia3\"\ntargets = \"qkv,proj,fc1,fc2\"\npeft_suffix_match = true\n\
         [methods.lora_named]\nmethod = \"lora\"\nr = 4\ntargets = \"patch_embed,fc1\"\n",
    );
    let store = path.parent().unwrap().join("store");
    let loaded =
        crate::load::load(&path, &[], Some(&store), crate::numerics::DeviceKind::Cpu).unwrap();
    let g = &loaded.graph;
    let trains: BTreeMap<String, (kernels::Method, String, String)> = g
        .topo()
        .into_iter()
        .filter_map(|k| match g.node(&k) {
            Some(crate::graph::Node::Train(t)) => Some((
                t.family.clone(),
                (t.method.clone(), g.node(&k).unwrap().label(), k.clone()),
            )),
            _ => None,
        })
        .collect();
    use Target::*;
    let block = [Qkv, Proj, Fc1, Fc2];
    assert_eq!(trains["lora"].0.targets(), block);
    assert_eq!(
        trains["lora_peft"].0.targets(),
        [PatchEmbed, Qkv, Proj, Fc1, Fc2]
    );
    assert_eq!(trains["ia3"].0.targets(), block);
    assert_eq!(
        trains["ia3_peft"].0.targets(),
        [PatchEmbed, Qkv, Proj, Fc1, Fc2]
    );
    assert_eq!(trains["lora_named"].0.targets(), [PatchEmbed, Fc1]);
    assert!(
        trains["lora_peft"]
            .1
            .contains("patch_embed,qkv,proj,fc1,fc2"),
        "{}",
        trains["lora_peft"].1
    );
    assert!(
        !trains["lora"].1.contains("patch_embed"),
        "{}",
        trains["lora"].1
    );
    assert_ne!(trains["lora"].2, trains["lora_peft"].2, "same node key");
    // Trainable parameters: the patch embedding's conv LoRA (A: r x 3*8*8, B: 192 x r) and
    // IA3 vector (192) on top of the block adapters.
    let arch = &loaded.suite.backbone.arch;
    let trainable = |m: &kernels::Method| {
        let vit = VisionTransformer::new(arch, tch::Device::Cpu).unwrap();
        AdaptedVit::new(vit, m, Some(10), 0)
            .unwrap()
            .counts()
            .trainable_backbone
    };
    let d = arch.embed_dim;
    let patch_in = arch.in_chans * arch.patch_size * arch.patch_size;
    assert_eq!(
        trainable(&trains["lora_peft"].0) - trainable(&trains["lora"].0),
        4 * patch_in + d * 4
    );
    assert_eq!(
        trainable(&trains["ia3_peft"].0) - trainable(&trains["ia3"].0),
        d
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

/// Misuses of `peft_suffix_match` (and of the `patch_embed` target) are suite errors filed
/// under the key to change.
#[test]
fn peft_suffix_match_misuse_is_a_suite_error() {
    let cases: [(&str, &str, &str); 6] = [
        (
            "[methods.linear]\npeft_suffix_match = true\n",
            "methods.linear.peft_suffix_match",
            "not a parameter of linear",
        ),
        (
            "[methods.lora]\ntargets = \"qkv\"\npeft_suffix_match = \"yes\"\n",
            "methods.lora.peft_suffix_match",
            "expected true or false",
        ),
        (
            "[methods.lora]\ntargets = \"q,v\"\npeft_suffix_match = true\n",
            "methods.lora.targets",
            "`q` matches no timm module name",
        ),
        (
            "[methods.lora]\ntargets = \"blocks.0.attn.qkv\"\npeft_suffix_match = true\n",
            "methods.lora.targets",
            "per-layer adapters are not supported",
        ),
        (
            "[methods.vera]\ntargets = \"qkv,proj\"\npeft_suffix_match = true\n",
            "methods.vera.targets",
            "write `attn.proj` rather than `proj`",
        ),
        (
            "[methods.vera]\ntargets = \"patch_embed,qkv\"\n",
            "methods.vera.targets",
            "has patch_embed, a Conv2d",
        ),
    ];
    for (i, (methods, key, want)) in cases.into_iter().enumerate() {
        let path = suite_with_methods(&format!("bad{i}"), methods);
        let e = load_with_env(&path, &[], []).unwrap_err();
        assert!(
            e.errors
                .iter()
                .any(|d| d.key == key && d.to_string().contains(want)),
            "case {i}: no `{want}` under `{key}` in:\n{e}"
        );
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}

/// Every registered method and its options are suite syntax: `use_dora` switches LoRA to
/// DoRA (a grid axis over it gives both), the label says which, and a bad value names the key.
/// A method that does not fit the backbone (a block size not dividing its widths) is a suite
/// error naming the method table, not a train node failing after the search.
#[test]
fn methods_must_fit_the_backbone() {
    let bad = suite_with_methods(
        "oft-misfit",
        "[methods.oft]\nblock_size = 7\ntargets = \"qkv\"\n",
    );
    let e = load_with_env(&bad, &[], []).unwrap_err();
    assert!(
        e.errors.iter().any(|d| d.key == "methods.oft"
            && d.to_string().contains("`block_size` = 7 does not divide")),
        "{e}"
    );
    std::fs::remove_dir_all(bad.parent().unwrap()).ok();
    let ok = suite_with_methods(
        "oft-fit",
        "[methods.oft]\nblock_size = 4\ntargets = \"qkv\"\n",
    );
    load_with_env(&ok, &[], []).expect("block_size 4 divides the test backbone's widths");
    std::fs::remove_dir_all(ok.parent().unwrap()).ok();
}

/// VPT's prompt length and depth are grid axes; a bad length names its key.
#[test]
fn vpt_tokens_and_depth_are_axes() {
    let path = suite_with_methods(
        "vpt",
        "[methods.vpt]\ntokens = [5, 50]\ndeep = [true, false]\n",
    );
    let suite = load_with_env(&path, &[], []).expect("a valid suite");
    let labels: BTreeSet<String> = suite.runs.iter().map(|r| r.method.label()).collect();
    assert_eq!(
        labels,
        BTreeSet::from([
            "vpt n=5 deep".to_string(),
            "vpt n=5 shallow".to_string(),
            "vpt n=50 deep".to_string(),
            "vpt n=50 shallow".to_string(),
        ])
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    let bad = suite_with_methods("vpt-bad", "[methods.vpt]\ntokens = 0\n");
    let e = load_with_env(&bad, &[], []).unwrap_err();
    assert!(
        e.errors.iter().any(|d| d.key == "methods.vpt.tokens"),
        "{e}"
    );
    std::fs::remove_dir_all(bad.parent().unwrap()).ok();
}

/// PiSSA and OLoRA are LoRA's `init`, a grid axis; other names and conflicts name the key.
#[test]
fn lora_init_is_a_checked_choice() {
    let path = suite_with_methods(
        "lora-init",
        "[methods.lora]\nr = 4\ntargets = \"qkv\"\ninit = [\"default\", \"pissa\", \"olora\"]\n",
    );
    let suite = load_with_env(&path, &[], []).expect("a valid suite");
    let labels: BTreeSet<String> = suite.runs.iter().map(|r| r.method.label()).collect();
    assert_eq!(
        labels,
        BTreeSet::from([
            "lora r=4 a=4 qkv".to_string(),
            "lora r=4 a=4 pissa qkv".to_string(),
            "lora r=4 a=4 olora qkv".to_string(),
        ])
    );
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    for (name, body, key, says) in [
        (
            "lora-init-bad",
            "[methods.lora]\ntargets = \"qkv\"\ninit = \"loftq\"\n",
            "methods.lora.init",
            "pissa",
        ),
        (
            "lora-init-dora",
            "[methods.lora]\ntargets = \"qkv\"\ninit = \"pissa\"\nuse_dora = true\n",
            "methods.lora.init",
            "use_dora",
        ),
    ] {
        let bad = suite_with_methods(name, body);
        let e = load_with_env(&bad, &[], []).unwrap_err();
        assert!(
            e.errors
                .iter()
                .any(|d| d.key == key && d.to_string().contains(says)),
            "{name}: {e}"
        );
        std::fs::remove_dir_all(bad.parent().unwrap()).ok();
    }
}

#[test]
fn dora_is_a_lora_option_in_the_suite() {
    let path = suite_with_methods(
        "dora",
        "[methods.lora]\nr = 4\ntargets = \"q,v\"\nuse_dora = [false, true]\n",
    );
    let suite = load_with_env(&path, &[], []).expect("a valid suite");
    let labels: BTreeSet<String> = suite.runs.iter().map(|r| r.method.label()).collect();
    assert_eq!(
        labels,
        BTreeSet::from([
            "lora r=4 a=4 q,v".to_string(),
            "dora r=4 a=4 q,v".to_string()
        ])
    );
    let dora = suite
        .runs
        .iter()
        .find(|r| r.method.label().starts_with("dora"))
        .unwrap();
    assert_eq!(dora.hparams["use_dora"], "true");
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    let bad = suite_with_methods(
        "dora-bad",
        "[methods.lora]\ntargets = \"qkv\"\nuse_dora = 1\n",
    );
    let e = load_with_env(&bad, &[], []).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|d| d.key == "methods.lora.use_dora" && d.to_string().contains("true or false")),
        "{e}"
    );
    let unknown = suite_with_methods(
        "dora-ia3",
        "[methods.ia3]\ntargets = \"qkv\"\nuse_dora = true\n",
    );
    let e = load_with_env(&unknown, &[], []).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|d| d.key == "methods.ia3.use_dora"
                && d.to_string().contains("not a parameter of ia3")),
        "{e}"
    );
    for p in [bad, unknown] {
        std::fs::remove_dir_all(p.parent().unwrap()).ok();
    }
}

/// LN tuning's `norms` is a list of LayerNorm names, kept in model order; an unknown or
/// repeated name is an error under the key.
#[test]
fn ln_tuning_norms_are_a_checked_list() {
    let path = suite_with_methods("ln", "[methods.ln_tuning]\nnorms = \"norm, norm1\"\n");
    let suite = load_with_env(&path, &[], []).expect("a valid suite");
    assert_eq!(suite.runs[0].method.label(), "ln_tuning norm1,norm");
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
    for (tag, norms, want) in [
        ("ln-unknown", "norm3", "norm3"),
        ("ln-twice", "norm1,norm1", "lists `norm1` twice"),
        ("ln-empty", "", "`norms` is empty"),
    ] {
        let bad = suite_with_methods(tag, &format!("[methods.ln_tuning]\nnorms = \"{norms}\"\n"));
        let e = load_with_env(&bad, &[], []).unwrap_err();
        assert!(
            e.errors
                .iter()
                .any(|d| d.key == "methods.ln_tuning.norms" && d.to_string().contains(want)),
            "{tag}: {e}"
        );
        std::fs::remove_dir_all(bad.parent().unwrap()).ok();
    }
}
