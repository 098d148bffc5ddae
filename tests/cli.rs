//! The command line as a new user meets it: help that agrees with what is accepted, exit
//! codes, `verify` on the right store, and pipes closed early.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/skip.rs"]
mod skip;

fn vtab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(args)
        .output()
        .expect("running vtab-orch")
}

fn default_suite() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("suite.toml")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn bench_help_lists_every_precision_and_method_it_accepts() {
    let help = String::from_utf8(vtab(&["bench", "--help"]).stdout).unwrap();
    for p in ["auto", "fp32", "bf16", "tf32"] {
        assert!(
            help.contains(p),
            "bench --help lacks precision {p}:\n{help}"
        );
    }
    // The catalogue is open: --help points to `vtab-orch methods`, which lists every row.
    assert!(help.contains("vtab-orch methods"), "{help}");
    let listed = String::from_utf8(vtab(&["methods"]).stdout).unwrap();
    for (name, _) in kernels::bench::standard_methods() {
        assert!(
            listed.contains(&format!("`{name}`")),
            "vtab-orch methods lacks {name}:\n{listed}"
        );
    }
    let bad = vtab(&["bench", "--methods", "lora_qkv_r9", "--device", "cpu"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lora_qkv_r8"));
}

#[test]
fn top_level_help_gives_exit_codes_and_where_report_writes() {
    let help = String::from_utf8(vtab(&["--help"]).stdout).unwrap();
    assert!(help.contains("Exit codes"), "{help}");
    assert!(help.contains("`report` writes"), "{help}");
}

#[test]
fn jobs_per_gpu_zero_is_an_invalid_argument() {
    let st = scratch("jobs");
    let o = vtab(&[
        "run",
        default_suite().to_str().unwrap(),
        "--store",
        st.to_str().unwrap(),
        "--jobs-per-gpu",
        "0",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!st.exists());
}

#[test]
fn a_gpu_on_a_machine_without_one_suggests_gpus_none() {
    if tch::Cuda::device_count() > 0 {
        skip::skipped(
            "no-gpu",
            "a_gpu_on_a_machine_without_one_suggests_gpus_none",
            "this machine has a GPU",
        );
        return;
    }
    let st = scratch("gpu0");
    let o = vtab(&[
        "run",
        default_suite().to_str().unwrap(),
        "--store",
        st.to_str().unwrap(),
        "--gpus",
        "0",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--gpus none"), "{err}");
}

/// `verify` checks the suite's store (not ./results), and refuses a folder with no store.
#[test]
fn verify_checks_the_suites_store_and_refuses_a_missing_one() {
    let d = scratch("verify");
    std::fs::create_dir_all(&d).unwrap();
    let suite = d.join("s.toml");
    std::fs::write(
        &suite,
        "store = \"elsewhere/st\"\n[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 100\nwarmup_epochs = 0\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 20\n[methods.linear]\n",
    )
    .unwrap();
    let s = suite.to_str().unwrap();
    let before = vtab(&["verify", s]);
    assert_eq!(before.status.code(), Some(2), "nothing ran yet: no store");
    assert!(String::from_utf8_lossy(&before.stderr).contains("does not exist"));
    let missing = vtab(&["verify", d.join("no-such-dir").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(vtab(&["run", s, "--gpus", "none"]).status.success());
    let after = vtab(&["verify", s]);
    let out = String::from_utf8_lossy(&after.stdout);
    assert!(after.status.success(), "{out}");
    assert!(
        out.contains(&d.join("elsewhere/st").display().to_string()),
        "{out}"
    );
    assert!(out.contains("5 entries checked"), "{out}");
    std::fs::remove_dir_all(&d).ok();
}

/// `plan --json | head -c 10` ends quietly, however often it is tried (it panicked with
/// "failed printing to stdout: Broken pipe" in 2 of 5 tries).
#[test]
fn a_pipe_closed_early_ends_quietly() {
    let st = scratch("pipe");
    for _ in 0..5 {
        let script = format!(
            "'{}' plan '{}' --json --store '{}' | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}} >&2",
            env!("CARGO_BIN_EXE_vtab-orch"),
            default_suite().display(),
            st.display()
        );
        let o = Command::new("bash").args(["-c", &script]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{err}"
        );
        let code: i32 = err.lines().last().unwrap().trim().parse().unwrap();
        assert!(
            code == 0 || code == 141,
            "exit {code} (SIGPIPE is 141):\n{err}"
        );
    }
}
