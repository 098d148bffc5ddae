//! Reliability through the built binary: resume after a crash gives identical tensors,
//! concurrent runs never execute a node twice, `verify` finds corruption and only that node
//! reruns, `gc` removes only unreachable entries.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

#[path = "support/hooks.rs"]
mod hooks;
use hooks::hook;

#[path = "support/skip.rs"]
mod skip;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-rel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny suite: synthetic `datasets`, the given methods, a 1-block ViT pretrained briefly.
fn suite(dir: &Path, name: &str, datasets: &[&str], methods: &str, epochs: u32) -> PathBuf {
    let mut s = format!(
        "name = \"{name}\"\nstore = \"store\"\n[defaults]\nimg_size = 16\nepochs = {epochs}\nbatch_size = 100\nwarmup_epochs = 0\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n"
    );
    for d in datasets {
        s += &format!("[datasets.{d}]\nformat = \"synthetic\"\ntask = \"{d}\"\ntest_images = 40\n");
    }
    s += methods;
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, s).unwrap();
    p
}

fn vtab(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("running vtab-orch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn only_entry(store: &Path, kind: &str) -> PathBuf {
    let entries: Vec<_> = std::fs::read_dir(store.join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

#[test]
fn resume_after_a_crash_gives_identical_tensors() {
    let methods = "[methods.lora]\nr = 2\ntargets = \"q,v\"\n";
    let (a, b, sb) = reference_and_copy("resume", &["shape"], methods, 4);
    // The same suite, checkpointing every epoch, killed (abort) right after the epoch-2
    // checkpoint of the train node.
    let every_epoch = "defaults.checkpoint_every='1 epoch'";
    let crashed = vtab(
        &[
            "run",
            sb.to_str().unwrap(),
            "--gpus",
            "none",
            "--set",
            every_epoch,
        ],
        &[hook("VTAB_ORCH_TEST_CRASH_AFTER_EPOCH", "2")],
    );
    assert_eq!(crashed.status.code(), Some(1), "{}", stderr(&crashed));
    assert!(
        !b.join("store/train").exists()
            || std::fs::read_dir(b.join("store/train")).unwrap().count() == 0,
        "a crashed node must not look finished"
    );
    let resumed = vtab(
        &[
            "run",
            sb.to_str().unwrap(),
            "--gpus",
            "none",
            "--set",
            every_epoch,
        ],
        &[],
    );
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let (ta, tb) = (
        only_entry(&a.join("store"), "train"),
        only_entry(&b.join("store"), "train"),
    );
    assert_eq!(ta.file_name(), tb.file_name(), "same key");
    let bytes = |d: &Path| std::fs::read(d.join("trainable.safetensors")).unwrap();
    assert!(
        bytes(&ta) == bytes(&tb),
        "resumed training differs from the uninterrupted run"
    );
    // It really resumed: epochs 3 and 4 only.
    let out = stderr(&resumed);
    assert!(
        out.contains("resumed from the checkpoint of epoch 2"),
        "{out}"
    );
    assert!(
        out.contains("epoch 3/4") && !out.contains("epoch 1/4"),
        "{out}"
    );
    assert!(
        !b.join("store/checkpoints")
            .join(tb.file_name().unwrap())
            .exists(),
        "checkpoints are removed after the commit"
    );
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

/// Two copies of suite `s` (`datasets`, `methods`, `epochs`) in fresh folders `NAME-a` and
/// `NAME-b`; the first is run to the end: the reference an interrupted second run must equal.
/// Returns (a, b, suite b).
fn reference_and_copy(
    name: &str,
    datasets: &[&str],
    methods: &str,
    epochs: u32,
) -> (PathBuf, PathBuf, PathBuf) {
    let (a, b) = (dir(&format!("{name}-a")), dir(&format!("{name}-b")));
    let sa = suite(&a, "s", datasets, methods, epochs);
    let sb = suite(&b, "s", datasets, methods, epochs);
    let ok = vtab(&["run", sa.to_str().unwrap(), "--gpus", "none"], &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    (a, b, sb)
}

/// The bytes of the one train node's weights in a store.
fn trained(store: &Path) -> Vec<u8> {
    std::fs::read(only_entry(store, "train").join("trainable.safetensors")).unwrap()
}

/// The default policy (every 10 minutes) writes no checkpoint in a run of seconds: a crash
/// restarts the node from scratch, with the same result.
#[test]
fn the_default_policy_writes_no_checkpoint_in_a_short_run() {
    let methods = "[methods.lora]\nr = 2\ntargets = \"q,v\"\n";
    let (a, b, sb) = reference_and_copy("policy", &["shape"], methods, 4);
    let crashed = vtab(
        &["run", sb.to_str().unwrap(), "--gpus", "none"],
        &[hook("VTAB_ORCH_TEST_CRASH_AFTER_EPOCH", "2")],
    );
    assert_eq!(crashed.status.code(), Some(1), "{}", stderr(&crashed));
    let ckpts: Vec<_> = std::fs::read_dir(b.join("store/checkpoints"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        ckpts.iter().all(|d| !d.join("ckpt.safetensors").exists()),
        "a checkpoint was written within seconds: {ckpts:?}"
    );
    let again = vtab(&["run", sb.to_str().unwrap(), "--gpus", "none"], &[]);
    let err = stderr(&again);
    assert!(again.status.success() && !err.contains("resumed"), "{err}");
    assert!(trained(&a.join("store")) == trained(&b.join("store")));
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

/// Ctrl-C of a run (SIGINT to the driver) while its train node is paused after epoch 2: the
/// driver asks the node to stop, the node checkpoints at the end of epoch 3 (though the time
/// policy had not written one yet) and exits, removing its staging folder; the driver says
/// so and exits 130, leaving no child behind; `plan` says the node resumes; the resumed run
/// ends with identical weights.
#[test]
fn ctrl_c_checkpoints_the_running_node_and_the_next_run_resumes_it() {
    let methods = "[methods.lora]\nr = 2\ntargets = \"q,v\"\n";
    let (a, b, sb) = reference_and_copy("ctrlc", &["shape"], methods, 4);
    let marker = b.join("pause");
    let run = Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
        .args(["run", sb.to_str().unwrap(), "--gpus", "none"])
        .envs([hook(
            "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
            // Epoch 2: the backbone's 1-epoch pretraining never pauses.
            format!("2:{}", marker.display()),
        )])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let child = paused_child(&marker);
    let key = exec_key(child);
    let interrupt = Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    // The driver asks the paused node to stop (SIGTERM); the pause ends on it, and the node
    // stops after its next epoch.
    let out = run.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("interrupted: stopped 1 running node(s)"),
        "{err}"
    );
    assert!(!alive(child), "the node's process is gone");
    let store = b.join("store");
    assert_eq!(staging_of(&store, &key), 0, "no staging folder left");
    assert!(store
        .join("checkpoints")
        .join(&key)
        .join("ckpt.safetensors")
        .exists());
    let plan = vtab(&["plan", sb.to_str().unwrap(), "--gpus", "none"], &[]);
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        plan.contains("resumes after epoch 3 from its checkpoint"),
        "{plan}"
    );
    let resumed = vtab(&["run", sb.to_str().unwrap(), "--gpus", "none"], &[]);
    let err = stderr(&resumed);
    assert!(resumed.status.success(), "{err}");
    assert!(
        err.contains("resumed from the checkpoint of epoch 3"),
        "{err}"
    );
    assert!(
        trained(&a.join("store")) == trained(&store),
        "resumed weights differ"
    );
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

/// Two runs on one store sharing nodes: run x is held inside a shared node (paused after its
/// first epoch, lease held) while run y starts, so y certainly meets the lease, waits, and
/// then finds the node done; every node ran exactly once.
#[test]
fn concurrent_runs_never_execute_a_node_twice() {
    let d = dir("concurrent");
    let methods = "[methods.linear]\n[methods.bitfit]\n";
    // Every train node of x is also one of y's.
    let x = suite(&d, "x", &["count"], methods, 2);
    let y = suite(&d, "y", &["count", "texture"], methods, 2);
    let marker = d.join("pause");
    let spawn = |s: &Path, pause: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
        c.args(["run", s.to_str().unwrap(), "--gpus", "none"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        if pause {
            c.envs([hook(
                "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
                format!("1:{}", marker.display()),
            )]);
        }
        c.spawn().unwrap()
    };
    let px = spawn(&x, true);
    let child = paused_child(&marker);
    let held = exec_key(child);
    let mut py = spawn(&y, false);
    // Read y's terminal lines as they come; release x's node once y waits on its lease (y
    // cannot finish without that node, so it must reach it).
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let ys = py.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(ys).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ey = String::new();
    loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(600))
            .expect("y never waited on x's lease");
        ey += &line;
        ey.push('\n');
        if line.contains(" waiting ") {
            break;
        }
    }
    assert!(
        lease_held(&d.join("store"), &held),
        "x still holds the node"
    );
    std::fs::write(d.join("pause.go"), "").unwrap();
    let ox = px.wait_with_output().unwrap();
    let oy = py.wait().unwrap();
    reader.join().unwrap();
    ey.extend(rx.try_iter().map(|l| l + "\n"));
    let ex = stderr(&ox);
    assert!(ox.status.success() && oy.success(), "{ex}\n---\n{ey}");
    let starts = |e: &str| {
        e.lines()
            .filter_map(|l| l.split("] start ").nth(1))
            .map(|l| l.split("  (").next().unwrap().trim().to_string())
            .collect::<Vec<_>>()
    };
    let mut all = starts(&ex);
    all.extend(starts(&ey));
    let mut uniq = all.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(all.len(), uniq.len(), "some node ran twice: {all:?}");
    // Shared work (the backbone, the `count` nodes) ran once; everything was produced.
    assert_eq!(uniq.iter().filter(|l| l.starts_with("build")).count(), 1);
    let entries = std::fs::read_dir(d.join("store/eval")).unwrap().count();
    assert_eq!(entries, 4, "2 methods x 2 distinct datasets");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn verify_finds_corruption_and_only_that_node_reruns() {
    let d = dir("verify");
    let s = suite(
        &d,
        "v",
        &["shape"],
        "[methods.linear]\n[methods.ia3]\ntargets = \"k,v\"\n",
        1,
    );
    let sp = s.to_str().unwrap();
    assert!(vtab(&["run", sp, "--gpus", "none"], &[]).status.success());
    let store = d.join("store");
    let clean = vtab(&["verify", store.to_str().unwrap()], &[]);
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    // Flip one byte of one train node's weights, keeping size and mtime.
    let train = std::fs::read_dir(store.join("train"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let f = train.join("trainable.safetensors");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&f).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&f, bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let v = vtab(&["verify", store.to_str().unwrap()], &[]);
    let out = String::from_utf8_lossy(&v.stdout).into_owned();
    assert_eq!(v.status.code(), Some(1), "{out}");
    assert!(
        out.contains("CORRUPT train/")
            && out.contains("trainable.safetensors")
            && out.contains("1 corrupt"),
        "{out}"
    );
    let plan = vtab(&["plan", sp, "--json"], &[]);
    let p: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let run: Vec<_> = p
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "run")
        .collect();
    assert_eq!(run.len(), 1, "only the corrupted node reruns: {run:?}");
    assert_eq!(
        run[0]["key"].as_str().unwrap(),
        train.file_name().unwrap().to_str().unwrap()
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn gc_lists_then_deletes_only_unreachable_entries() {
    let d = dir("gc");
    let two = suite(
        &d,
        "two",
        &["shape"],
        "[methods.linear]\n[methods.bitfit]\n",
        1,
    );
    assert!(vtab(&["run", two.to_str().unwrap(), "--gpus", "none"], &[])
        .status
        .success());
    let one = suite(&d, "one", &["shape"], "[methods.linear]\n", 1);
    let dry = vtab(&["gc", one.to_str().unwrap()], &[]);
    let out = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        dry.status.success() && out.contains("2 unreachable entries"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(d.join("store/train")).unwrap().count(),
        2,
        "a dry run deletes nothing"
    );
    let del = vtab(&["gc", one.to_str().unwrap(), "--yes"], &[]);
    assert!(del.status.success());
    assert_eq!(std::fs::read_dir(d.join("store/train")).unwrap().count(), 1);
    let plan = vtab(&["plan", one.to_str().unwrap()], &[]);
    assert!(
        String::from_utf8_lossy(&plan.stdout).contains("0 to run"),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    std::fs::remove_dir_all(&d).ok();
}

/// Waits (up to 10 minutes: a slow machine is not a failure) until a child paused by the
/// `VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH` hook has written its pid into `marker`.
fn paused_child(marker: &Path) -> u32 {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(marker)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            t0.elapsed().as_secs() < 600,
            "no node reached the pause point"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The node key a `vtab-orch exec <key> ...` process is running.
fn exec_key(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the paused child is alive");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(args[1], "exec", "{args:?}");
    args[2].clone()
}

/// Whether some process holds the lease (flock) of `key`.
fn lease_held(store: &Path, key: &str) -> bool {
    let f = std::fs::File::open(store.join("leases").join(key)).unwrap();
    matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Staging directories of `key` in the store.
fn staging_of(store: &Path, key: &str) -> usize {
    std::fs::read_dir(store.join("tmp"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{key}@"))
                })
                .count()
        })
        .unwrap_or(0)
}

fn alive(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `kill -9` of `vtab-orch run` while a node is certainly mid-run (a child paused after its
/// first epoch by a test hook, its staging directory and lease live), then of a node's child
/// in the next run: nothing that looks finished is wrong, and the final results are
/// byte-identical to an uninterrupted run.
#[test]
fn kill_9_of_the_run_or_a_child_then_rerun_gives_identical_results() {
    let methods = "[methods.linear]\n[methods.lora]\nr = 2\ntargets = \"q,v\"\n";
    let (a, b, sb) = reference_and_copy("kill", &["shape", "count"], methods, 3);
    let store = b.join("store");
    let start_paused = |marker: &Path| {
        Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
            .args(["run", sb.to_str().unwrap(), "--gpus", "none"])
            .envs([hook(
                "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
                format!("1:{}", marker.display()),
            )])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // 1. Kill the run itself while one of its nodes is mid-run.
    let marker = b.join("pause-1");
    let mut run = start_paused(&marker);
    let child = paused_child(&marker);
    let key = exec_key(child);
    assert!(lease_held(&store, &key), "the paused node holds its lease");
    assert_eq!(staging_of(&store, &key), 1, "the paused node is staging");
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    // Its orphaned child finishes under its lease once released.
    std::fs::write(b.join("pause-1.go"), "").unwrap();
    let t0 = std::time::Instant::now();
    while alive(child) {
        assert!(
            t0.elapsed().as_secs() < 600,
            "the orphaned child never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // 2. Kill a node's child process in the next run; the run goes on with the rest.
    let marker = b.join("pause-2");
    let run = start_paused(&marker);
    let child = paused_child(&marker);
    let key = exec_key(child);
    assert!(lease_held(&store, &key));
    let killed = Command::new("kill")
        .args(["-9", &child.to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "the kill hit the paused child");
    let out = run.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "the killed node failed:\n{err}");
    assert!(err.contains("1 failed"), "{err}");
    assert!(!lease_held(&store, &key), "kill -9 released the lease");
    assert!(
        !store.join("train").join(&key).exists(),
        "the killed node is not in the store"
    );
    // Whatever is in the store now and looks finished must verify.
    let v = vtab(&["verify", b.join("store").to_str().unwrap()], &[]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // A final run completes everything, with the same bytes as the uninterrupted run.
    let last = vtab(&["run", sb.to_str().unwrap(), "--gpus", "none"], &[]);
    assert!(last.status.success(), "{}", stderr(&last));
    for kind in ["train", "eval"] {
        let names = |d: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(d.join("store").join(kind))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&a), names(&b), "{kind}: same nodes");
        for n in names(&a) {
            let file = if kind == "train" {
                "trainable.safetensors"
            } else {
                "metrics.json"
            };
            let read =
                |d: &Path| std::fs::read(d.join("store").join(kind).join(&n).join(file)).unwrap();
            if kind == "train" {
                assert!(
                    read(&a) == read(&b),
                    "{kind} {n:?} differs from the uninterrupted run"
                );
            } else {
                let top1 = |d: &Path| {
                    serde_json::from_slice::<serde_json::Value>(&read(d)).unwrap()["top1"].clone()
                };
                assert_eq!(top1(&a), top1(&b), "{kind} {n:?}");
            }
        }
    }
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

/// Unmounts a test tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The store on a tiny tmpfs fills up part-way through a run: the run fails, what is in the
/// store still verifies, no staging debris is left, and with space again a rerun completes.
#[test]
fn a_full_disk_leaves_the_store_consistent() {
    let d = dir("full");
    let store = d.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=900k", "tmpfs"])
        .arg(&store)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        skip::skipped(
            "root",
            "a_full_disk_leaves_the_store_consistent",
            "cannot mount a tmpfs here (needs root and mount rights)",
        );
        return;
    }
    let _guard = Mount(store.clone());
    let s = suite(
        &d,
        "f",
        &["shape", "count"],
        "[methods.linear]\n[methods.lora]\nr = 2\ntargets = \"q,v\"\n",
        1,
    );
    let sp = s.to_str().unwrap();
    let full = vtab(&["run", sp, "--gpus", "none"], &[]);
    let err = stderr(&full);
    assert_eq!(
        full.status.code(),
        Some(1),
        "the disk never filled up; the test is blind:\n{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    let v = vtab(&["verify", store.to_str().unwrap()], &[]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    let debris: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(debris.is_empty(), "staging left behind: {debris:?}");
    let ok = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&store)
        .status()
        .unwrap();
    assert!(ok.success());
    let again = vtab(&["run", sp, "--gpus", "none"], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(vtab(&["verify", store.to_str().unwrap()], &[])
        .status
        .success());
    drop(_guard);
    std::fs::remove_dir_all(&d).ok();
}

/// A study started under `nohup` over SSH: the session closes (SIGHUP to the whole process
/// group) and the run goes on, its node too; then its output pipe closes (`run 2>&1 | tee log`
/// and tee is gone) and Ctrl-C must still stop the node (checkpoint, no child left) and end
/// with 130, not die on the write (SIGPIPE) with the node orphaned.
#[test]
fn under_nohup_sighup_is_ignored_and_a_closed_pipe_does_not_stop_ctrl_c() {
    use std::os::unix::process::CommandExt;
    let d = dir("nohup");
    let s = suite(
        &d,
        "nohup",
        &["shape"],
        "[methods.lora]\nr = 2\ntargets = \"q,v\"\n",
        4,
    );
    let marker = d.join("pause");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    cmd.args(["run", s.to_str().unwrap(), "--gpus", "none"])
        .envs([hook(
            "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
            format!("2:{}", marker.display()),
        )])
        .stderr(Stdio::piped())
        // Its own process group, as a shell job is: the hangup goes to the whole group.
        .process_group(0);
    // SAFETY: only async-signal-safe `signal` between fork and exec, as `nohup` does.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut run = cmd.spawn().unwrap();
    let child = paused_child(&marker);
    let key = exec_key(child);
    let pid = run.id().to_string();
    let group = format!("-{pid}");
    assert!(Command::new("kill")
        .args(["-HUP", "--", &group])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run stopped on SIGHUP under nohup"
    );
    assert!(alive(child), "the node stopped on SIGHUP under nohup");
    drop(run.stderr.take()); // the reading end of its output is gone
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(!alive(child), "the node's process is gone");
    assert!(
        d.join("store/checkpoints")
            .join(&key)
            .join("ckpt.safetensors")
            .exists(),
        "the stopped node wrote its checkpoint"
    );
    std::fs::remove_dir_all(&d).ok();
}
