//! `plan`'s cost estimate against a store with history: a tiny synthetic suite runs, then a
//! bigger variant of it (more epochs, one method more) is planned on the same store.
use std::path::Path;
use std::process::Output;

fn vtab(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(args)
        .output()
        .expect("running vtab-orch")
}

fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "vtab-orch failed ({}):\n{err}",
        o.status
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The `estimate:` line of `plan` (and the note under it, if any).
fn estimate(suite: &Path, sets: &[&str]) -> String {
    let mut args = vec!["plan", suite.to_str().unwrap(), "--gpus", "none"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let out = ok(vtab(&args));
    out.lines()
        .skip_while(|l| !l.starts_with("estimate: "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn plan_estimates_a_bigger_variant_from_the_store_history() {
    let d = std::env::temp_dir().join(format!("vtab-estimate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let suite = d.join("s.toml");
    std::fs::write(
        &suite,
        "name = \"est\"\nstore = \"store\"\n\
         [defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 50\nwarmup_epochs = 0\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\n\
         embed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 50\nepochs = 1\n\
         [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 50\n\
         [methods.linear]\n",
    )
    .unwrap();
    let s = suite.to_str().unwrap();

    // An empty store: every node (prep x2, build, train, eval) at its kind's default.
    let first = estimate(&suite, &[]);
    assert!(
        first.starts_with("estimate: 5 nodes to run, ")
            && first.ends_with(
                "; 5 nodes without comparable history (counted at their kind's default: \
                 2 prep 120 s, 1 build 600 s, 1 train 1800 s, 1 eval 120 s)"
            ),
        "{first}"
    );
    ok(vtab(&["run", s, "--gpus", "none"]));
    assert_eq!(estimate(&suite, &[]), "estimate: nothing to run");

    // Two epochs and BitFit besides: the linear probe's train and eval rerun (comparable with
    // the stored ones), BitFit's have no history; prep and build stay cached.
    let bigger = estimate(&suite, &["defaults.epochs=2", "methods.bitfit={}"]);
    assert!(
        bigger.starts_with("estimate: 4 nodes to run, ~")
            && bigger.contains(" wall on the CPU (1 device slot, ")
            && bigger.ends_with(
                "; 2 nodes without comparable history (counted at their kind's default: \
                 1 train 1800 s, 1 eval 120 s)"
            ),
        "{bigger}"
    );
    std::fs::remove_dir_all(&d).ok();
}
