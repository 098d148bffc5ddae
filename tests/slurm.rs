//! `vtab-orch run --launcher slurm` on a real (single-node) Slurm cluster, started by
//! `scripts/local-slurm.sh start` (`./x test` does): same results as a local run, a
//! cancelled job fails only its node, a requeued job resumes from its checkpoint, Ctrl-C
//! cancels our jobs only, a GPU node sees the GPU Slurm gave it, two drivers on one store
//! never run a node twice. Without a cluster each test says SKIPPED (tests/support/skip.rs),
//! or fails when the test command declared one (`VTAB_ORCH_REQUIRE=slurm`, as `./x test`
//! does after starting it).
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/hooks.rs"]
mod hooks;
use hooks::hook;

#[path = "support/skip.rs"]
mod skip;

#[path = "support/records.rs"]
mod run_records;
use run_records::records;

/// SLURM_CONF of a cluster that answers, or None (and the test says SKIPPED, or fails if a
/// cluster was declared required). A busy controller or a node still completing another
/// test's job is not a missing cluster: asked again for up to 20 s.
fn cluster(test: &str) -> Option<String> {
    let conf = std::env::var("SLURM_CONF").unwrap_or_else(|_| {
        let dir = std::env::var("VTAB_SLURM_DIR").unwrap_or_else(|_| "/tmp/vtab-slurm".into());
        format!("{dir}/slurm.conf")
    });
    let start = std::env::var("VTAB_SLURM_START_ERR")
        .map(|e| format!("; scripts/local-slurm.sh start said: {}", e.trim()))
        .unwrap_or_default();
    if !Path::new(&conf).exists() {
        let why = format!("no Slurm cluster at {conf} (start one with scripts/local-slurm.sh start; ./x test does){start}");
        skip::skipped("slurm", test, &why);
        return None;
    }
    let t0 = Instant::now();
    let said = loop {
        let said = match Command::new("sinfo")
            .args(["-h", "-o", "%T"])
            .env("SLURM_CONF", &conf)
            .output()
        {
            Ok(o) if o.status.success() => {
                let s = String::from_utf8_lossy(&o.stdout).into_owned();
                let usable = ["idle", "mixed", "alloc", "completing"];
                if usable.iter().any(|u| s.contains(u)) {
                    return Some(conf);
                }
                format!("node state {:?}", s.trim())
            }
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("sinfo: {e}"),
        };
        if t0.elapsed() > Duration::from_secs(20) {
            break said;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let why = format!("the Slurm cluster at {conf} does not answer ({said}; start it with scripts/local-slurm.sh start; ./x test does){start}");
    skip::skipped("slurm", test, &why);
    None
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-slurm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny suite on the synthetic `shape` task with the given methods; jobs of one core
/// (the test cluster has 8) and a short poll interval (the cluster is the test's own, so
/// the 30 s floor is lowered).
fn suite(dir: &Path, methods: &str, epochs: u32) -> PathBuf {
    let s = format!(
        "name = \"s\"\nstore = \"store\"\n[defaults]\nimg_size = 16\nepochs = {epochs}\nbatch_size = 100\nwarmup_epochs = 0\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 40\n{methods}\
         [slurm]\npoll_floor_s = 0\npoll_s = 0.3\nmax_poll_s = 2\ncpus_per_task = 1\n"
    );
    let p = dir.join("s.toml");
    std::fs::write(&p, s).unwrap();
    p
}

fn command(conf: &str, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    c.args(args).env("SLURM_CONF", conf);
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

fn vtab(conf: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    command(conf, args, envs)
        .output()
        .expect("running vtab-orch")
}

/// `vtab-orch run SUITE --gpus none --launcher slurm`: every node a Slurm job, on the CPU.
fn slurm_run(conf: &str, suite: &Path, envs: &[(&str, &str)]) -> Command {
    let suite = suite.to_str().unwrap();
    let args = ["run", suite, "--gpus", "none", "--launcher", "slurm"];
    command(conf, &args, envs)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits (up to 120 s) for an event of `store`'s record that `pick` accepts.
fn wait_for(store: &Path, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        if let Some(e) = records(store).into_iter().find(|e| pick(e)) {
            return e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no {what} within 120 s: {:?}",
            records(store)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Slurm job id in a `started` event's slot ("slurm job 42", or "slurm worker job 42"
/// for a warm worker's node).
fn job_id(started: &Value) -> String {
    started["slot"]
        .as_str()
        .and_then(|s| {
            s.strip_prefix("slurm job ")
                .or(s.strip_prefix("slurm worker job "))
        })
        .unwrap_or_else(|| panic!("not a Slurm slot: {started}"))
        .to_string()
}

/// One Slurm job per node (`[slurm] workers = 0`) instead of the default warm workers, for
/// the tests of what happens to a node's own job (scancel, requeue).
fn per_node(suite: &Path) {
    use std::io::Write;
    // `[slurm]` is the suite's last table.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(suite)
        .unwrap();
    f.write_all(b"workers = 0\n").unwrap();
}

fn label_starts(e: &Value, event: &str, prefix: &str) -> bool {
    e["event"] == event && e["label"].as_str().is_some_and(|l| l.starts_with(prefix))
}

fn slurm(conf: &str, args: &[&str]) -> Output {
    let o = Command::new(args[0])
        .args(&args[1..])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Kills a driver still running when a test fails, and cancels jobs the test submitted.
struct Cleanup<'a> {
    conf: &'a str,
    child: Option<Child>,
    jobs: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.jobs.is_empty() {
            let _ = Command::new("scancel")
                .args(&self.jobs)
                .env("SLURM_CONF", self.conf)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// An unrelated job of someone else (`sleep`), optionally holding a GPU; returns its id.
fn foreign_job(conf: &str, gres: bool) -> String {
    let mut args = vec![
        "sbatch",
        "--parsable",
        "--job-name=not-vtab",
        "--output=/dev/null",
        "--cpus-per-task=1",
    ];
    if gres {
        args.push("--gres=gpu:1");
    }
    args.extend(["--wrap", "sleep 120"]);
    let o = slurm(conf, &args);
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// (kind, key) -> the bytes of its main artifact, for every finished node of `store`.
fn results(store: &Path) -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (kind, file) in [
        ("prep", None),
        ("build", Some("backbone.safetensors")),
        ("train", Some("trainable.safetensors")),
        ("eval", None),
    ] {
        let mut keys: Vec<String> = std::fs::read_dir(store.join(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        keys.sort();
        for k in keys {
            let bytes = match (kind, file) {
                ("eval", _) => {
                    let m: Value = serde_json::from_slice(
                        &std::fs::read(store.join(kind).join(&k).join("metrics.json")).unwrap(),
                    )
                    .unwrap();
                    m["top1"].to_string().into_bytes()
                }
                (_, Some(f)) => std::fs::read(store.join(kind).join(&k).join(f)).unwrap(),
                _ => Vec::new(),
            };
            out.push((kind.to_string(), k, bytes));
        }
    }
    out
}

#[test]
fn a_slurm_run_gives_the_same_keys_and_metrics_as_a_local_run() {
    let Some(conf) = cluster("a_slurm_run_gives_the_same_keys_and_metrics_as_a_local_run") else {
        return;
    };
    let methods = "[methods.linear]\n[methods.lora]\nr = 2\ntargets = \"q,v\"\n";
    let (a, b) = (dir("same-local"), dir("same-slurm"));
    let (sa, sb) = (suite(&a, methods, 2), suite(&b, methods, 2));
    per_node(&sb);
    let local = vtab(&conf, &["run", sa.to_str().unwrap(), "--gpus", "none"], &[]);
    assert!(local.status.success(), "{}", stderr(&local));
    let t0 = Instant::now();
    let remote = slurm_run(&conf, &sb, &[])
        .output()
        .expect("running vtab-orch");
    let err = stderr(&remote);
    assert!(remote.status.success(), "{err}");
    eprintln!("slurm run of 7 nodes: {:.1} s", t0.elapsed().as_secs_f64());
    let (ra, rb) = (results(&a.join("store")), results(&b.join("store")));
    assert_eq!(ra.len(), 7);
    assert!(
        ra == rb,
        "the Slurm run's keys or results differ from the local run's"
    );
    // Every node ran as a Slurm job, and the run record says which.
    let started: Vec<Value> = records(&b.join("store"))
        .into_iter()
        .filter(|e| e["event"] == "started")
        .collect();
    assert_eq!(started.len(), 7, "{err}");
    assert!(started
        .iter()
        .all(|e| e["slot"].as_str().unwrap().starts_with("slurm job ")));
    // The same suite again: everything cached, nothing submitted.
    let again = slurm_run(&conf, &sb, &[])
        .output()
        .expect("running vtab-orch");
    assert!(
        again.status.success() && stderr(&again).contains("0 ran, 7 cached"),
        "{}",
        stderr(&again)
    );
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

#[test]
fn scancel_fails_only_its_node_and_the_next_run_recomputes_it() {
    let Some(conf) = cluster("scancel_fails_only_its_node_and_the_next_run_recomputes_it") else {
        return;
    };
    let d = dir("scancel");
    let s = suite(
        &d,
        "[methods.linear]\n[methods.lora]\nr = 2\ntargets = \"q,v\"\n",
        3,
    );
    per_node(&s);
    let store = d.join("store");
    let child = slurm_run(&conf, &s, &[hook("VTAB_ORCH_TEST_EPOCH_DELAY_MS", "3000")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Cleanup {
        conf: &conf,
        child: Some(child),
        jobs: Vec::new(),
    };
    let lora = wait_for(&store, "start of the lora train node", |e| {
        label_starts(e, "started", "train shape lora")
    });
    slurm(&conf, &["scancel", &job_id(&lora)]);
    let out = guard.child.take().unwrap().wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("FAILED train shape lora") && err.contains("CANCELLED"),
        "{err}"
    );
    assert!(err.contains("blocked eval shape lora"), "{err}");
    assert!(
        err.contains("done   eval shape linear"),
        "the sibling must finish: {err}"
    );
    // The next run recomputes exactly the cancelled node and its dependant.
    let next = slurm_run(&conf, &s, &[])
        .output()
        .expect("running vtab-orch");
    let err = stderr(&next);
    assert!(next.status.success(), "{err}");
    assert!(err.contains("2 ran, 5 cached"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_requeued_job_resumes_from_its_checkpoint_with_identical_weights() {
    let Some(conf) = cluster("a_requeued_job_resumes_from_its_checkpoint_with_identical_weights")
    else {
        return;
    };
    let methods = "[methods.lora]\nr = 2\ntargets = \"q,v\"\n";
    let (a, b) = (dir("requeue-ref"), dir("requeue"));
    let (sa, sb) = (suite(&a, methods, 4), suite(&b, methods, 4));
    let reference = vtab(&conf, &["run", sa.to_str().unwrap(), "--gpus", "none"], &[]);
    assert!(reference.status.success(), "{}", stderr(&reference));
    per_node(&sb);
    let store = b.join("store");
    // Epochs of 3 s: the driver relays progress at its polls (about a second apart), so the
    // requeue below lands in epoch 2 or 3, well before the last epoch ends, on a loaded
    // machine too (with 1 s epochs a CI run once saw the job finish first).
    let child = slurm_run(&conf, &sb, &[hook("VTAB_ORCH_TEST_EPOCH_DELAY_MS", "3000")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Cleanup {
        conf: &conf,
        child: Some(child),
        jobs: Vec::new(),
    };
    let started = wait_for(&store, "start of the train node", |e| {
        label_starts(e, "started", "train shape")
    });
    let id = job_id(&started);
    wait_for(&store, "epoch 1 of the train node", |e| {
        label_starts(e, "progress", "train shape") && e["data"]["epoch"] == 1
    });
    slurm(&conf, &["scontrol", "requeue", &id]);
    // Slurm makes a requeued job eligible two minutes later; once it is pending again,
    // bring that forward (an update while it is still completing has no effect).
    let t0 = Instant::now();
    loop {
        let q = slurm(&conf, &["squeue", "-h", "-t", "all", "-j", &id, "-o", "%T"]);
        if String::from_utf8_lossy(&q.stdout).trim() == "PENDING" {
            slurm(
                &conf,
                &[
                    "scontrol",
                    "update",
                    &format!("jobid={id}"),
                    "StartTime=now",
                ],
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "job {id} never became pending again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = guard.child.take().unwrap().wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let resumed = wait_for(&store, "a resume", |e| {
        e["event"] == "progress" && e["data"]["resumed_after_epoch"].is_u64()
    });
    assert!(
        resumed["data"]["resumed_after_epoch"].as_u64().unwrap() >= 1,
        "{resumed}"
    );
    assert!(
        err.contains("resumed from the checkpoint of epoch"),
        "{err}"
    );
    let (ra, rb) = (results(&a.join("store")), results(&store));
    let train =
        |r: &[(String, String, Vec<u8>)]| r.iter().find(|x| x.0 == "train").cloned().unwrap();
    assert_eq!(train(&ra).1, train(&rb).1, "same key");
    assert!(
        train(&ra).2 == train(&rb).2,
        "the requeued training differs from the uninterrupted one"
    );
    assert!(ra == rb, "results differ");
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

/// A warm worker told to stop mid-node (USR1: what `--signal=B:USR1@signal_s` sends before
/// its time limit, or a preemption's grace signal) checkpoints at the epoch's end and ends;
/// the driver queues the node again, a new worker resumes it from the checkpoint, and the
/// weights are byte-identical to an uninterrupted local run.
#[test]
fn a_warm_worker_told_to_stop_hands_its_node_on_with_identical_weights() {
    let Some(conf) = cluster("a_warm_worker_told_to_stop_hands_its_node_on_with_identical_weights")
    else {
        return;
    };
    let methods = "[methods.lora]\nr = 2\ntargets = \"q,v\"\n";
    let (a, b) = (dir("stop-ref"), dir("stop"));
    let (sa, sb) = (suite(&a, methods, 4), suite(&b, methods, 4));
    let reference = vtab(&conf, &["run", sa.to_str().unwrap(), "--gpus", "none"], &[]);
    assert!(reference.status.success(), "{}", stderr(&reference));
    let store = b.join("store");
    // One worker at a time, so the resumed node certainly runs in a new one.
    let child = slurm_run(&conf, &sb, &[hook("VTAB_ORCH_TEST_EPOCH_DELAY_MS", "3000")])
        .args(["--set", "slurm.workers=1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Cleanup {
        conf: &conf,
        child: Some(child),
        jobs: Vec::new(),
    };
    let started = wait_for(&store, "start of the train node", |e| {
        label_starts(e, "started", "train shape")
    });
    let id = job_id(&started);
    guard.jobs.push(id.clone());
    wait_for(&store, "epoch 1 of the train node", |e| {
        label_starts(e, "progress", "train shape") && e["data"]["epoch"] == 1
    });
    slurm(&conf, &["scancel", "--batch", "--signal=USR1", &id]);
    let out = guard.child.take().unwrap().wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("its warm worker job {id} ended")) && err.contains("queued again"),
        "{err}"
    );
    assert!(
        err.contains("resumed from the checkpoint of epoch"),
        "{err}"
    );
    let events = records(&store);
    let train = started["key"].as_str().unwrap();
    let count = |event: &str| {
        events
            .iter()
            .filter(|e| e["event"] == event && e["key"] == train)
            .count()
    };
    assert_eq!((count("requeued"), count("finished")), (1, 1), "{events:?}");
    let (ra, rb) = (results(&a.join("store")), results(&store));
    assert!(
        ra == rb,
        "the resumed training differs from the uninterrupted one"
    );
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

#[test]
fn ctrl_c_of_the_driver_cancels_its_own_jobs_and_no_other() {
    let Some(conf) = cluster("ctrl_c_of_the_driver_cancels_its_own_jobs_and_no_other") else {
        return;
    };
    let d = dir("ctrlc");
    let s = suite(&d, "[methods.linear]\n[methods.bitfit]\n", 5);
    let store = d.join("store");
    let mut guard = Cleanup {
        conf: &conf,
        child: None,
        jobs: vec![foreign_job(&conf, false)],
    };
    let child = slurm_run(&conf, &s, &[hook("VTAB_ORCH_TEST_EPOCH_DELAY_MS", "2000")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    guard.child = Some(child);
    wait_for(&store, "a running train node", |e| {
        label_starts(e, "started", "train shape")
    });
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = guard.child.take().unwrap().wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: stopped"), "{err}");
    // None of ours is queued or running; the other job still is.
    let ours = format!(" store {}", store.display());
    let t0 = Instant::now();
    loop {
        let q = slurm(&conf, &["squeue", "-h", "-o", "%i|%T|%k"]);
        let q = String::from_utf8_lossy(&q.stdout).into_owned();
        let mine: Vec<&str> = q
            .lines()
            .filter(|l| l.ends_with(&ours) && !l.contains("|COMPLETING|"))
            .collect();
        assert!(
            q.lines()
                .any(|l| l.starts_with(&format!("{}|", guard.jobs[0]))),
            "the foreign job was touched: {q}"
        );
        if mine.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "jobs of ours left after Ctrl-C: {mine:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_gpu_node_sees_the_cuda_visible_devices_slurm_gave_it() {
    let Some(conf) = cluster("a_gpu_node_sees_the_cuda_visible_devices_slurm_gave_it") else {
        return;
    };
    // Someone else holds one of the two GPUs, so ours is not simply GPU 0.
    let blocker = foreign_job(&conf, true);
    let _guard = Cleanup {
        conf: &conf,
        child: None,
        jobs: vec![blocker.clone()],
    };
    let gres_index = |id: &str| -> Option<String> {
        let o = slurm(&conf, &["scontrol", "show", "job", "-d", id]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let at = text.find("(IDX:")?;
        Some(text[at + 5..].split(')').next()?.to_string())
    };
    let t0 = Instant::now();
    let held = loop {
        if let Some(i) = gres_index(&blocker) {
            break i;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the blocker job never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let d = dir("gpu");
    let s = suite(&d, "[methods.linear]\n", 1);
    // GPU nodes get a GPU from Slurm (--gpus auto); on this CPU machine they then fail
    // for want of CUDA, after reporting what they were given.
    let out = vtab(
        &conf,
        &["run", s.to_str().unwrap(), "--launcher", "slurm"],
        &[],
    );
    let err = stderr(&out);
    let store = d.join("store");
    let build = records(&store)
        .into_iter()
        .find(|e| label_starts(e, "started", "build"))
        .unwrap_or_else(|| panic!("the build node never started: {err}"));
    // Slurm forgets a finished job's GPU index, but it had one GPU left to give.
    let job = slurm(&conf, &["scontrol", "show", "job", "-d", &job_id(&build)]);
    assert!(
        String::from_utf8_lossy(&job.stdout).contains("JOB_GRES=gpu:1"),
        "not a GPU job"
    );
    let free = if held == "0" { "1" } else { "0" };
    assert_eq!(
        build["devices"].as_str(),
        Some(free),
        "GPU {held} is taken: {build}"
    );
    std::fs::remove_dir_all(&d).ok();
}

/// Two drivers on one store, every node a Slurm job of each: driver x's backbone node is
/// held after its first epoch (lease held) while driver y starts, so y's job for that node
/// certainly meets the lease and y waits on it; released, y finds the node done. Across both
/// run records every node started and finished exactly once.
#[test]
fn two_drivers_on_one_store_never_run_a_node_twice() {
    let Some(conf) = cluster("two_drivers_on_one_store_never_run_a_node_twice") else {
        return;
    };
    let d = dir("two");
    let s = suite(&d, "[methods.linear]\n[methods.bitfit]\n", 2);
    per_node(&s);
    let store = d.join("store");
    let marker = d.join("pause");
    // Epoch 1: the first node to train is the backbone's 1-epoch pretraining.
    let pause = hook(
        "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
        format!("1:{}", marker.display()),
    );
    let spawn = |envs: &[(&str, &str)]| {
        let c = slurm_run(&conf, &s, envs).stderr(Stdio::piped()).spawn();
        Some(c.expect("running vtab-orch"))
    };
    let mut x = Cleanup {
        conf: &conf,
        child: spawn(&[(pause.0, pause.1.as_str())]),
        jobs: Vec::new(),
    };
    let paused = wait_for(&store, "x's build node", |e| {
        label_starts(e, "started", "build")
    });
    let held = paused["key"].as_str().unwrap().to_string();
    // A failing test must not leave the paused job behind.
    x.jobs.push(job_id(&paused));
    wait_paused(&marker);
    assert!(lease_held(&store, &held), "x's paused node holds its lease");
    let mut y = Cleanup {
        conf: &conf,
        child: spawn(&[]),
        jobs: Vec::new(),
    };
    wait_for(&store, "y waiting on x's lease", |e| {
        e["event"] == "waiting" && e["key"] == held.as_str()
    });
    assert!(lease_held(&store, &held), "x still holds the node");
    std::fs::write(d.join("pause.go"), "").unwrap();
    let ox = x.child.take().unwrap().wait_with_output().unwrap();
    let oy = y.child.take().unwrap().wait_with_output().unwrap();
    assert!(
        ox.status.success() && oy.status.success(),
        "{}\n---\n{}",
        stderr(&ox),
        stderr(&oy)
    );
    // Executions, from both run records: a node starts only under its lease.
    let events = records(&store);
    let per_key = |event: &str| {
        let mut n = std::collections::BTreeMap::<String, usize>::new();
        for e in events.iter().filter(|e| e["event"] == event) {
            *n.entry(e["key"].as_str().unwrap().to_string()).or_default() += 1;
        }
        n
    };
    let (started, finished) = (per_key("started"), per_key("finished"));
    assert!(
        started.values().all(|&n| n == 1),
        "a node ran twice: {started:?}"
    );
    assert_eq!(started.len(), 7, "every node ran: {started:?}");
    assert_eq!(
        started.keys().collect::<Vec<_>>(),
        finished.keys().collect::<Vec<_>>()
    );
    assert!(finished.values().all(|&n| n == 1), "{finished:?}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "cached" && e["key"] == held.as_str()),
        "y took the node x ran from the store"
    );
    assert_eq!(results(&store).len(), 7);
    std::fs::remove_dir_all(&d).ok();
}

/// Waits (up to 10 minutes: a slow machine is not a failure) until a node paused by the
/// `VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH` hook has written its pid into `marker`.
fn wait_paused(marker: &Path) {
    let t0 = Instant::now();
    while std::fs::read_to_string(marker).map_or(true, |s| s.trim().parse::<u32>().is_err()) {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no node reached the pause point"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether some process holds the lease (flock) of `key`.
fn lease_held(store: &Path, key: &str) -> bool {
    let f = std::fs::File::open(store.join("leases").join(key)).unwrap();
    matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// A busy controller or a full per-user queue: sbatch (a shim in front of the real one)
/// refuses the first three submissions with "Resource temporarily unavailable". The refusals
/// are retried with back-off and fail no node; the study ends as usual, every node ran once.
#[test]
fn a_passing_sbatch_refusal_is_retried_and_fails_no_node() {
    refusals(
        "a_passing_sbatch_refusal_is_retried_and_fails_no_node",
        true,
    );
}

/// The same for warm workers (the default): a refused worker is asked for again at the next
/// poll, the view says so on a node waiting for it, and no node fails.
#[test]
fn a_passing_sbatch_refusal_of_a_warm_worker_is_retried_and_fails_no_node() {
    refusals(
        "a_passing_sbatch_refusal_of_a_warm_worker_is_retried_and_fails_no_node",
        false,
    );
}

fn refusals(test: &str, one_job_per_node: bool) {
    use std::os::unix::fs::PermissionsExt;
    let Some(conf) = cluster(test) else {
        return;
    };
    let d = dir(if one_job_per_node {
        "refused"
    } else {
        "refused-warm"
    });
    let s = suite(&d, "[methods.linear]\n", 1);
    if one_job_per_node {
        per_node(&s);
    }
    let real = Command::new("sh")
        .args(["-c", "command -v sbatch"])
        .output()
        .unwrap();
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    assert!(!real.is_empty(), "no sbatch on PATH");
    let shims = d.join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    let count = d.join("sbatch-calls");
    let shim = shims.join("sbatch");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nn=$(cat '{c}' 2>/dev/null || echo 0)\necho $((n + 1)) > '{c}'\n\
             if [ \"$n\" -lt 3 ]; then\n  echo 'sbatch: error: Batch job submission failed: Resource temporarily unavailable' >&2\n  exit 1\nfi\n\
             exec '{real}' \"$@\"\n",
            c = count.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", shims.display(), std::env::var("PATH").unwrap());
    let out = slurm_run(&conf, &s, &[("PATH", &path)])
        .output()
        .expect("running vtab-orch");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let said = if one_job_per_node {
        "sbatch refused it for now"
    } else {
        "sbatch refused a warm worker for now"
    };
    assert_eq!(err.matches(said).count(), 3, "{err}");
    let events = records(&d.join("store"));
    let count_of = |event: &str| events.iter().filter(|e| e["event"] == event).count();
    let nodes = count_of("finished");
    assert_eq!(count_of("started"), nodes, "{err}");
    assert_eq!(count_of("failed"), 0, "{err}");
    let calls: usize = std::fs::read_to_string(&count)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if one_job_per_node {
        assert_eq!(
            calls,
            nodes + 3,
            "one sbatch call per node, plus the three refused"
        );
    } else {
        // Workers took node after node: fewer jobs than nodes.
        assert!(
            calls > 3 && calls - 3 < nodes,
            "{calls} calls for {nodes} nodes"
        );
    }
    std::fs::remove_dir_all(&d).ok();
}

/// The study's jobs queued or running now, as squeue lists them (`id|STATE`), found by the
/// store in their comment.
fn study_jobs(conf: &str, store: &Path) -> Vec<String> {
    let ours = format!(" store {}", store.display());
    let q = slurm(conf, &["squeue", "-h", "-o", "%i|%T|%k"]);
    String::from_utf8_lossy(&q.stdout)
        .lines()
        .filter(|l| l.ends_with(&ours) && !l.contains("|COMPLETING|"))
        .map(|l| l.split('|').take(2).collect::<Vec<_>>().join("|"))
        .collect()
}

/// kill -9 of the driver leaves its job running; `status` shows it (where, since when); a
/// second `run` adopts it instead of submitting it again, and the study ends with every
/// node run exactly once (one Slurm job per node across both run records).
#[test]
fn a_second_run_adopts_the_jobs_of_a_driver_killed_with_sigkill() {
    adoption(
        "a_second_run_adopts_the_jobs_of_a_driver_killed_with_sigkill",
        true,
    );
}

/// The same with warm workers (the default): the dead driver's worker goes on with its node
/// (and takes more from the pool); the second `run` watches it there, runs it nowhere else,
/// and cancels that worker when the study ends.
#[test]
fn a_second_run_adopts_the_warm_workers_of_a_driver_killed_with_sigkill() {
    adoption(
        "a_second_run_adopts_the_warm_workers_of_a_driver_killed_with_sigkill",
        false,
    );
}

fn adoption(test: &str, one_job_per_node: bool) {
    let Some(conf) = cluster(test) else {
        return;
    };
    let d = dir(if one_job_per_node {
        "adopt"
    } else {
        "adopt-warm"
    });
    let s = suite(&d, "[methods.linear]\n[methods.bitfit]\n", 2);
    if one_job_per_node {
        per_node(&s);
    }
    let store = d.join("store");
    let marker = d.join("pause");
    let pause = hook(
        "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
        format!("1:{}", marker.display()),
    );
    let envs = [(pause.0, pause.1.as_str())];
    let mut x = Cleanup {
        conf: &conf,
        child: Some(
            slurm_run(&conf, &s, &envs)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ),
        jobs: Vec::new(),
    };
    let paused = wait_for(&store, "the build node", |e| {
        label_starts(e, "started", "build")
    });
    let key = paused["key"].as_str().unwrap().to_string();
    let job = job_id(&paused);
    x.jobs.push(job.clone());
    wait_paused(&marker);
    // The driver dies; its job goes on.
    let mut child = x.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // (A prep job may still run beside it.)
    let jobs = study_jobs(&conf, &store);
    assert!(jobs.contains(&format!("{job}|RUNNING")), "{jobs:?}");
    let st = vtab(
        &conf,
        &["status", s.to_str().unwrap(), "--gpus", "none"],
        &[],
    );
    let out = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{}", stderr(&st));
    let what = if one_job_per_node {
        "slurm job"
    } else {
        "warm worker job"
    };
    assert!(
        out.lines()
            .any(|l| l.starts_with("running  build") && l.contains(&format!("{what} {job} on "))),
        "{out}"
    );
    let y = slurm_run(&conf, &s, &envs)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    x.child = Some(y);
    let adopted = wait_for(&store, "the adoption", |e| e["event"] == "adopted");
    assert_eq!(adopted["key"], key.as_str());
    assert_eq!(adopted["job"], job.as_str());
    std::fs::write(d.join("pause.go"), "").unwrap();
    let oy = x.child.take().unwrap().wait_with_output().unwrap();
    assert!(oy.status.success(), "{}", stderr(&oy));
    assert!(stderr(&oy).contains("adopted build"), "{}", stderr(&oy));
    // One job per node over both drivers: (key -> the distinct slots it started in).
    let mut slots = std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for e in records(&store).iter().filter(|e| e["event"] == "started") {
        slots
            .entry(e["key"].as_str().unwrap().to_string())
            .or_default()
            .insert(e["slot"].as_str().unwrap().to_string());
    }
    assert!(
        slots.values().all(|s| s.len() == 1),
        "a node ran twice: {slots:?}"
    );
    // Nodes that finished while no driver watched (x's prep jobs, say) are reported cached.
    let unseen: std::collections::BTreeSet<String> = records(&store)
        .iter()
        .filter(|e| e["event"] == "cached")
        .map(|e| e["key"].as_str().unwrap().to_string())
        .filter(|k| !slots.contains_key(k))
        .collect();
    assert_eq!(slots.len() + unseen.len(), 7, "{slots:?} {unseen:?}");
    assert_eq!(results(&store).len(), 7);
    // No job of the study outlives it, the dead driver's worker included.
    let t0 = Instant::now();
    while !study_jobs(&conf, &store).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{:?}",
            study_jobs(&conf, &store)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_dir_all(&d).ok();
}

/// `cancel SUITE` with no driver alive stops the study's jobs and leaves another job alone.
#[test]
fn cancel_stops_the_study_s_jobs_and_nothing_else() {
    let Some(conf) = cluster("cancel_stops_the_study_s_jobs_and_nothing_else") else {
        return;
    };
    let d = dir("cancel");
    let s = suite(&d, "[methods.linear]\n", 2);
    let store = d.join("store");
    let marker = d.join("pause");
    let pause = hook(
        "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
        format!("1:{}", marker.display()),
    );
    let mut x = Cleanup {
        conf: &conf,
        child: Some(
            slurm_run(&conf, &s, &[(pause.0, pause.1.as_str())])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ),
        jobs: vec![foreign_job(&conf, false)],
    };
    let paused = wait_for(&store, "the build node", |e| {
        label_starts(e, "started", "build")
    });
    let job = job_id(&paused);
    x.jobs.push(job.clone());
    wait_paused(&marker);
    let mut child = x.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let jobs_before = study_jobs(&conf, &store);
    let c = vtab(
        &conf,
        &["cancel", s.to_str().unwrap(), "--gpus", "none"],
        &[],
    );
    let out = String::from_utf8_lossy(&c.stdout);
    assert!(c.status.success(), "{}", stderr(&c));
    let line = out.lines().find(|l| l.contains("cancelled ")).unwrap_or("");
    assert!(
        line.contains(&job),
        "{out} (listed before: {jobs_before:?})"
    );
    let t0 = Instant::now();
    while !study_jobs(&conf, &store).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{:?}",
            study_jobs(&conf, &store)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let q = slurm(&conf, &["squeue", "-h", "-o", "%i"]);
    assert!(
        String::from_utf8_lossy(&q.stdout)
            .lines()
            .any(|l| l.trim() == x.jobs[0]),
        "the other job was cancelled too"
    );
    let again = vtab(
        &conf,
        &["cancel", s.to_str().unwrap(), "--gpus", "none"],
        &[],
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("no job of this study"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    std::fs::remove_dir_all(&d).ok();
}

/// Under the VTAB-1k protocol the tiny nodes (the select node, the train800 and val200 views
/// cut from the decoded train800val200 split) run beside the driver; every other node runs
/// in a warm worker (the default). The study ends with every node done once.
#[test]
fn tiny_nodes_run_beside_the_driver_not_as_jobs() {
    let Some(conf) = cluster("tiny_nodes_run_beside_the_driver_not_as_jobs") else {
        return;
    };
    let d = dir("tiny");
    let s = d.join("s.toml");
    std::fs::write(
        &s,
        "name = \"s\"\nstore = \"store\"\n[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 100\nwarmup_epochs = 0\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 40\n\
         [protocol]\nkind = \"vtab1k\"\nsearch_seeds = [0]\nfinal_seeds = [0]\n\
         [methods.linear]\nlr = [0.001, 0.01]\n\
         [slurm]\npoll_floor_s = 0\npoll_s = 0.3\nmax_poll_s = 2\ncpus_per_task = 1\n",
    )
    .unwrap();
    let out = slurm_run(&conf, &s, &[]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let store = d.join("store");
    let started: Vec<(String, String)> = records(&store)
        .iter()
        .filter(|e| e["event"] == "started")
        .map(|e| {
            (
                e["label"].as_str().unwrap().to_string(),
                e["slot"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let tiny = |label: &str| {
        label.starts_with("select")
            || label.starts_with("prep shape train800 ")
            || label.starts_with("prep shape val200 ")
    };
    let beside: Vec<&(String, String)> = started.iter().filter(|(l, _)| tiny(l)).collect();
    assert_eq!(beside.len(), 3, "{started:?}");
    for (label, slot) in &started {
        if tiny(label) {
            assert_eq!(slot, "beside the driver", "{label}");
        } else {
            // The default: warm workers.
            assert!(slot.starts_with("slurm worker job "), "{label}: {slot}");
        }
    }
    let finished = records(&store)
        .iter()
        .filter(|e| e["event"] == "finished")
        .count();
    assert_eq!(finished, started.len(), "{started:?}");
    std::fs::remove_dir_all(&d).ok();
}

/// Warm workers (`[slurm] workers = 2`): the 7-node study runs in two pilot jobs, each
/// running node after node, with the same results as a local run; the idle workers are
/// cancelled when the study ends.
#[test]
fn warm_workers_run_a_study_in_fewer_jobs_than_nodes() {
    let Some(conf) = cluster("warm_workers_run_a_study_in_fewer_jobs_than_nodes") else {
        return;
    };
    let methods = "[methods.linear]\n[methods.lora]\nr = 2\ntargets = \"q,v\"\n";
    let (a, b) = (dir("warm-local"), dir("warm-slurm"));
    let (sa, sb) = (suite(&a, methods, 2), suite(&b, methods, 2));
    let local = vtab(&conf, &["run", sa.to_str().unwrap(), "--gpus", "none"], &[]);
    assert!(local.status.success(), "{}", stderr(&local));
    let set = [
        "--set",
        "slurm.workers=2",
        "--set",
        "slurm.worker_idle_s=30",
    ];
    let remote = slurm_run(&conf, &sb, &[]).args(set).output().unwrap();
    let err = stderr(&remote);
    assert!(remote.status.success(), "{err}");
    assert!(err.contains("7 ran, 0 cached, 0 failed"), "{err}");
    let store = b.join("store");
    assert!(
        results(&a.join("store")) == results(&store),
        "results differ"
    );
    let workers: std::collections::BTreeSet<String> = records(&store)
        .iter()
        .filter(|e| e["event"] == "started")
        .map(|e| e["slot"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !workers.is_empty()
            && workers.len() <= 2
            && workers.iter().all(|w| w.starts_with("slurm worker job ")),
        "{workers:?}"
    );
    // The workers went with the study.
    let t0 = Instant::now();
    while !study_jobs(&conf, &store).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{:?}",
            study_jobs(&conf, &store)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

/// A warm worker killed (kill -9) while it trains a node loses that node only: the driver
/// sees its job end, queues the node again, a new worker takes the dead one's lease over and
/// runs it; the study ends with every node finished once.
#[test]
fn a_killed_warm_worker_loses_only_its_node() {
    let Some(conf) = cluster("a_killed_warm_worker_loses_only_its_node") else {
        return;
    };
    let d = dir("warm-kill");
    let s = suite(&d, "[methods.linear]\n", 2);
    let store = d.join("store");
    let marker = d.join("pause");
    let pause = hook(
        "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
        format!("1:{}", marker.display()),
    );
    let set = [
        "--set",
        "slurm.workers=1",
        "--set",
        "slurm.worker_idle_s=30",
    ];
    let child = slurm_run(&conf, &s, &[(pause.0, pause.1.as_str())])
        .args(set)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut x = Cleanup {
        conf: &conf,
        child: Some(child),
        jobs: Vec::new(),
    };
    wait_paused(&marker);
    let pid = std::fs::read_to_string(&marker).unwrap();
    assert!(Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap()
        .success());
    let out = x.child.take().unwrap().wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warm worker job") && err.contains("queued again"),
        "{err}"
    );
    let events = records(&store);
    let mut finished = std::collections::BTreeMap::<String, usize>::new();
    for e in events.iter().filter(|e| e["event"] == "finished") {
        *finished
            .entry(e["key"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        finished.len() == 5 && finished.values().all(|n| *n == 1),
        "{finished:?}\n{err}"
    );
    assert_eq!(results(&store).len(), 5);
    std::fs::remove_dir_all(&d).ok();
}
