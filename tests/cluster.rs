//! A study on a realistic cluster on this one machine (`scripts/cluster/up.sh`, started by
//! `./x test`): three slurmd "hosts" vn1..vn3 in network namespaces, each seeing the store
//! through its own caching FUSE mount of one folder (a name made elsewhere stays invisible for
//! a few seconds; flock locks per mount), the driver through another. So visibility lag and
//! per-host locks are real here, not mocked. Without that cluster each test says SKIPPED
//! (tests/support/skip.rs), or fails when the test command declared it
//! (`VTAB_ORCH_REQUIRE=cluster`, as `./x test` does once it is up).
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
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

struct Cluster {
    conf: String,
    /// Two mounts of the shared folder on this "login node", and the folder itself.
    mnt: PathBuf,
    mnt2: PathBuf,
    export: PathBuf,
}

/// The tests share one cluster (one crashes a host): one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The cluster if it answers with its three nodes and the mounts are there, else None (and
/// the test says SKIPPED, or fails where the cluster was declared). A node still coming back
/// from another test's crash is waited for (up to 90 s).
fn cluster(test: &str) -> Option<Cluster> {
    let c = Cluster {
        conf: var("VTAB_CLUSTER_CONF", "/tmp/vtab-mslurm/slurm.conf"),
        mnt: var("VTAB_CLUSTER_MNT", "/tmp/vtab-nfs/mnt").into(),
        mnt2: var("VTAB_CLUSTER_MNT2", "/tmp/vtab-nfs/mnt2").into(),
        export: var("VTAB_CLUSTER_EXPORT", "/tmp/vtab-nfs/export").into(),
    };
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for m in [&c.mnt, &c.mnt2] {
        if !mounts.contains(&format!(" {} fuse", m.display())) {
            let why = format!(
                "no caching FUSE mount at {} (scripts/cluster/up.sh start; ./x test does)",
                m.display()
            );
            skip::skipped("cluster", test, &why);
            return None;
        }
    }
    let t0 = Instant::now();
    let said = loop {
        let said = match Command::new("sinfo")
            .args(["-h", "-N", "-o", "%N %t"])
            .env("SLURM_CONF", &c.conf)
            .output()
        {
            Ok(o) if o.status.success() => {
                let s = String::from_utf8_lossy(&o.stdout).into_owned();
                let up = s
                    .lines()
                    .filter(|l| ["idle", "mix", "alloc"].iter().any(|u| l.ends_with(u)))
                    .count();
                if up >= 3 {
                    return Some(c);
                }
                format!("nodes {:?}", s.trim())
            }
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("sinfo: {e}"),
        };
        if t0.elapsed() > Duration::from_secs(90) {
            break said;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let start = std::env::var("VTAB_CLUSTER_START_ERR")
        .map(|e| format!("; scripts/cluster/up.sh start said: {}", e.trim()))
        .unwrap_or_default();
    let why = format!(
        "no three-node cluster at {} ({said}; scripts/cluster/up.sh start; ./x test does){start}",
        c.conf
    );
    skip::skipped("cluster", test, &why);
    None
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The tiny 7-node study of tests/slurm.rs: synthetic `shape`, linear and BitFit, a 1-block
/// ViT; jobs of one core, a short poll (the cluster is the test's own).
fn suite(dir: &Path, epochs: u32) -> PathBuf {
    let s = format!(
        "name = \"s\"\nstore = \"store\"\n[defaults]\nimg_size = 16\nepochs = {epochs}\nbatch_size = 100\nwarmup_epochs = 0\n\
         [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
         [backbone.pretrain]\nimages = 100\nepochs = 1\n\
         [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 40\n\
         [methods.linear]\n[methods.bitfit]\n\
         [slurm]\npoll_floor_s = 0\npoll_s = 0.5\nmax_poll_s = 2\ncpus_per_task = 1\n"
    );
    let p = dir.join("s.toml");
    std::fs::write(&p, s).unwrap();
    p
}

/// Short lease times, so that a crashed host's lease is taken over within seconds (sbatch
/// passes them on to the jobs).
const LEASE: [(&str, &str); 2] = [
    ("VTAB_ORCH_LEASE_HEARTBEAT_S", "1"),
    ("VTAB_ORCH_LEASE_STALE_S", "8"),
];

fn vtab(conf: &str, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    c.args(args).env("SLURM_CONF", conf);
    for (k, v) in LEASE.iter().chain(envs) {
        c.env(k, v);
    }
    c
}

fn run_local(suite: &Path, store: &Path) -> Output {
    let args = ["run", suite.to_str().unwrap(), "--gpus", "none", "--store"];
    let o = vtab("", &args, &[])
        .arg(store)
        .output()
        .expect("running vtab-orch");
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

fn slurm_run(c: &Cluster, suite: &Path, store: &Path, envs: &[(&str, &str)]) -> Command {
    let args = [
        "run",
        suite.to_str().unwrap(),
        "--gpus",
        "none",
        "--launcher",
        "slurm",
        "--entry-wait",
        "120",
        "--store",
    ];
    let mut cmd = vtab(&c.conf, &args, envs);
    cmd.arg(store);
    cmd
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// How often each node finished, over every run record of `store`.
fn finished(store: &Path) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for e in records(store).iter().filter(|e| e["event"] == "finished") {
        *n.entry(e["key"].as_str().unwrap().to_string()).or_default() += 1;
    }
    n
}

/// (kind, key, file) -> bytes, for every artifact of every entry of `store`; of measurements
/// (timings, images per second: `log.json`, `pretrain_log.json`, and those in `metrics.json`)
/// only what is computed (top-1, per-class accuracy); manifests and specs say where and when
/// a node ran, not what it computed.
fn results(store: &Path) -> BTreeMap<(String, String, String), Vec<u8>> {
    let mut out = BTreeMap::new();
    for kind in ["prep", "build", "train", "eval", "select"] {
        let Ok(rd) = std::fs::read_dir(store.join(kind)) else {
            continue;
        };
        for e in rd.map(|e| e.unwrap()) {
            let key = e.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(e.path()).unwrap().map(|f| f.unwrap()) {
                let name = f.file_name().to_string_lossy().into_owned();
                let skip = [
                    "manifest.json",
                    "spec.json",
                    "log.json",
                    "pretrain_log.json",
                ];
                if skip.contains(&name.as_str()) || !f.path().is_file() {
                    continue;
                }
                let mut bytes = std::fs::read(f.path()).unwrap();
                if name == "metrics.json" {
                    let m: Value = serde_json::from_slice(&bytes).unwrap();
                    bytes = format!("{} {} {}", m["top1"], m["per_class"], m["n"]).into_bytes();
                }
                out.insert((kind.to_string(), key.clone(), name), bytes);
            }
        }
    }
    out
}

/// The hosts the entries of `store` were made on (their manifests).
fn hosts(store: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kind in ["prep", "build", "train", "eval"] {
        for e in std::fs::read_dir(store.join(kind))
            .unwrap()
            .map(|e| e.unwrap())
        {
            let m: Value =
                serde_json::from_slice(&std::fs::read(e.path().join("manifest.json")).unwrap())
                    .unwrap();
            out.insert(m["host"].as_str().unwrap().to_string());
        }
    }
    out
}

/// A study run through Slurm on three hosts, its store on their caching mounts, gives the
/// same entries, byte for byte, as a local run; every node finishes once, none fails for
/// want of seeing another host's entry; a second run finds everything cached.
#[test]
fn a_study_across_three_hosts_matches_a_local_run() {
    let _one = serial();
    let Some(c) = cluster("a_study_across_three_hosts_matches_a_local_run") else {
        return;
    };
    let d = dir("across");
    let s = suite(&d, 2);
    run_local(&s, &d.join("local"));
    let name = format!("across-{}", std::process::id());
    let _ = std::fs::remove_dir_all(c.export.join(&name));
    let store = c.mnt.join(&name).join("store");
    let o = slurm_run(&c, &s, &store, &[]).output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("note: the store is on a FUSE filesystem"),
        "{err}"
    );
    assert!(err.contains("7 ran, 0 cached, 0 failed"), "{err}");
    // Read through the folder itself: no cache in the way.
    let shared = c.export.join(&name).join("store");
    assert_eq!(results(&shared), results(&d.join("local")));
    let h = hosts(&shared);
    assert!(
        h.iter()
            .all(|h| ["vn1", "vn2", "vn3"].contains(&h.as_str())),
        "{h:?}"
    );
    let f = finished(&shared);
    assert!(f.len() == 7 && f.values().all(|n| *n == 1), "{f:?}");
    let again = slurm_run(&c, &s, &store, &[]).output().unwrap();
    assert!(
        stderr(&again).contains("0 ran, 7 cached"),
        "{}",
        stderr(&again)
    );
    std::fs::remove_dir_all(c.export.join(&name)).ok();
    std::fs::remove_dir_all(&d).ok();
}

/// Kills a driver still running when a test fails, cancels the study's jobs, and brings a
/// crashed host back.
struct Cleanup<'a> {
    conf: &'a str,
    child: Option<Child>,
    /// The suite and store whose jobs to cancel (None: a local run).
    study: Option<(PathBuf, PathBuf)>,
    crashed: Option<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some((suite, store)) = &self.study {
            let _ = Command::new(env!("CARGO_BIN_EXE_vtab-orch"))
                .arg("cancel")
                .arg(suite)
                .args(["--gpus", "none", "--store"])
                .arg(store)
                .env("SLURM_CONF", self.conf)
                .output();
        }
        if let Some(node) = &self.crashed {
            restart(self.conf, node);
        }
    }
}

fn script(args: &[&str]) -> Output {
    let s = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/cluster/multi-node-slurm.sh"
    );
    let o = Command::new("bash")
        .arg(s)
        .args(args)
        .output()
        .expect("running multi-node-slurm.sh");
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
}

/// Starts the slurmd of a crashed host again (with its mount) and returns it to service.
fn restart(conf: &str, node: &str) {
    let _ = std::panic::catch_unwind(|| script(&["restart", node]));
    let _ = Command::new("scontrol")
        .args(["update", &format!("nodename={node}"), "state=resume"])
        .env("SLURM_CONF", conf)
        .output();
}

/// Waits (up to 10 minutes: a slow machine is not a failure) until the node paused by the
/// `VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH` hook wrote its pid into `marker`; fails at once, with its
/// output, if the driver ended meanwhile.
fn wait_paused(marker: &Path, driver: &mut Child) {
    let t0 = Instant::now();
    while std::fs::read_to_string(marker).map_or(true, |s| s.trim().parse::<u32>().is_err()) {
        if let Ok(Some(st)) = driver.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = driver.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("the driver ended ({st}) before a node reached the pause point:\n{err}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no node reached the pause point within 600 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The node whose lease the process paused at `marker` holds (its pid is in the marker).
fn held_lease(store: &Path, marker: &Path) -> Option<String> {
    let pid: u64 = std::fs::read_to_string(marker).ok()?.trim().parse().ok()?;
    std::fs::read_dir(store.join("leases"))
        .ok()?
        .map(|e| e.unwrap().path())
        .find_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            let key = name.strip_suffix(".owner")?.to_string();
            let rec: Value = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            let holds = rec["pid"].as_u64() == Some(pid) && rec.get("committed_unix").is_none();
            holds.then_some(key)
        })
}

/// A host loses power while it trains a node (every process of it killed, slurmd included):
/// Slurm finds the node dead, the job comes back on another host, which takes the dead host's
/// lease over once its heartbeat is stale and resumes; the study ends as a local run does,
/// and the next run removes the dead host's staging folder.
#[test]
fn a_host_that_crashes_mid_node_loses_nothing() {
    let _one = serial();
    let Some(c) = cluster("a_host_that_crashes_mid_node_loses_nothing") else {
        return;
    };
    let d = dir("crash");
    let s = suite(&d, 2);
    run_local(&s, &d.join("local"));
    let name = format!("crash-{}", std::process::id());
    let _ = std::fs::remove_dir_all(c.export.join(&name));
    let store = c.mnt.join(&name).join("store");
    let shared = c.export.join(&name).join("store");
    let marker = d.join("pause");
    let pause = hook(
        "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
        format!("1:{}", marker.display()),
    );
    let child = slurm_run(&c, &s, &store, &[(pause.0, pause.1.as_str())])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut g = Cleanup {
        conf: &c.conf,
        child: Some(child),
        study: Some((s.clone(), store.clone())),
        crashed: None,
    };
    wait_paused(&marker, g.child.as_mut().unwrap());
    // The paused node's lease names its host.
    let key = held_lease(&shared, &marker).expect("the paused node's lease");
    let record = shared.join("leases").join(format!("{key}.owner"));
    let owner: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let host = owner["host"].as_str().unwrap().to_string();
    assert!(host.starts_with("vn"), "{owner}");
    script(&["crash", &host]);
    g.crashed = Some(host.clone());
    let out = g.child.take().unwrap().wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(results(&shared), results(&d.join("local")), "{err}");
    let f = finished(&shared);
    assert!(f.len() == 7 && f.values().all(|n| *n == 1), "{f:?}\n{err}");
    // The node came back elsewhere: its entry was made on another host.
    let build = std::fs::read_dir(shared.join("build"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(build.join("manifest.json")).unwrap()).unwrap();
    assert_ne!(m["host"].as_str(), Some(host.as_str()), "{err}");
    // The dead host's staging folder goes with the next run (its lease is long stale).
    std::thread::sleep(Duration::from_secs(9));
    let again = slurm_run(&c, &s, &store, &[]).output().unwrap();
    assert!(
        stderr(&again).contains("0 ran, 7 cached"),
        "{}",
        stderr(&again)
    );
    let left: Vec<String> = std::fs::read_dir(shared.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&format!("@{host}@")))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    drop(g);
    std::fs::remove_dir_all(c.export.join(&name)).ok();
    std::fs::remove_dir_all(&d).ok();
}

/// kill -9 of the slurmd of the host whose warm worker trains a node (a node failure as
/// Slurm sees it, while the worker's processes go on): Slurm declares the host DOWN and the
/// worker's job NODE_FAIL; the driver queues the node again and a worker on another host
/// takes it, but finds the lease alive (the first worker still heartbeats) and waits rather
/// than run the node a second time; the first worker finishes it. The study ends with every
/// node finished once and the results of a local run.
#[test]
fn a_host_whose_slurmd_dies_runs_no_node_twice() {
    let _one = serial();
    let Some(c) = cluster("a_host_whose_slurmd_dies_runs_no_node_twice") else {
        return;
    };
    let d = dir("slurmd");
    let s = suite(&d, 2);
    run_local(&s, &d.join("local"));
    let name = format!("slurmd-{}", std::process::id());
    let _ = std::fs::remove_dir_all(c.export.join(&name));
    let store = c.mnt.join(&name).join("store");
    let shared = c.export.join(&name).join("store");
    let marker = d.join("pause");
    let pause = hook(
        "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
        format!("1:{}", marker.display()),
    );
    // Workers that outlive their slurmd end soon after the study.
    let child = slurm_run(&c, &s, &store, &[(pause.0, pause.1.as_str())])
        .args(["--set", "slurm.worker_idle_s=5"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut g = Cleanup {
        conf: &c.conf,
        child: Some(child),
        study: Some((s.clone(), store.clone())),
        crashed: None,
    };
    wait_paused(&marker, g.child.as_mut().unwrap());
    let key = held_lease(&shared, &marker).expect("the paused node's lease");
    let record = shared.join("leases").join(format!("{key}.owner"));
    let owner: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let host = owner["host"].as_str().unwrap().to_string();
    script(&["kill-slurmd", &host]);
    g.crashed = Some(host.clone());
    // Slurm gives up on the host (SlurmdTimeout) and the driver queues the node again; a
    // worker elsewhere meets the live lease.
    let t0 = Instant::now();
    loop {
        let events = records(&shared);
        let requeued = events
            .iter()
            .any(|e| e["event"] == "requeued" && e["key"] == key.as_str());
        if requeued {
            break;
        }
        if let Ok(Some(st)) = g.child.as_mut().unwrap().try_wait() {
            panic!("the driver ended ({st}) before it queued the node again");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "the node was never queued again: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Give the new worker time to claim it and meet the lease, then let the first one go on.
    std::thread::sleep(Duration::from_secs(5));
    std::fs::write(d.join("pause.go"), "").unwrap();
    let out = g.child.take().unwrap().wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(results(&shared), results(&d.join("local")), "{err}");
    // Every node finished once; the lost node's second worker found it done (the driver
    // reports it cached when that worker's word comes first).
    let f = finished(&shared);
    let cached = records(&shared)
        .iter()
        .any(|e| e["event"] == "cached" && e["key"] == key.as_str());
    assert!(
        f.values().all(|n| *n == 1) && f.len() + usize::from(!f.contains_key(&key) && cached) == 7,
        "{f:?}\n{err}"
    );
    // The entry was made by the first worker, on the host whose slurmd died.
    let m: Value = serde_json::from_slice(
        &std::fs::read(shared.join("build").join(&key).join("manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["host"].as_str(), Some(host.as_str()), "{err}");
    drop(g);
    std::fs::remove_dir_all(c.export.join(&name)).ok();
    std::fs::remove_dir_all(&d).ok();
}

/// Two drivers on one store, each through its own caching mount (per-mount flock: the two
/// never exclude each other by flock), the second started while the first holds a node:
/// the second waits on the owner record, naming the holder, and then finds the node done,
/// though its mount may not show the entry yet. Every node finishes once over both records.
#[test]
fn two_drivers_on_two_caching_mounts_never_run_a_node_twice() {
    let _one = serial();
    let Some(c) = cluster("two_drivers_on_two_caching_mounts_never_run_a_node_twice") else {
        return;
    };
    let d = dir("two");
    let s = suite(&d, 2);
    let name = format!("two-{}", std::process::id());
    let _ = std::fs::remove_dir_all(c.export.join(&name));
    let shared = c.export.join(&name).join("store");
    let marker = d.join("pause");
    let pause = hook(
        "VTAB_ORCH_TEST_PAUSE_AFTER_EPOCH",
        format!("1:{}", marker.display()),
    );
    let local = |mnt: &Path, envs: &[(&str, &str)]| {
        let args = [
            "run",
            s.to_str().unwrap(),
            "--gpus",
            "none",
            "--entry-wait",
            "120",
            "--store",
        ];
        vtab("", &args, envs)
            .arg(mnt.join(&name).join("store"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut x = Cleanup {
        conf: &c.conf,
        child: Some(local(&c.mnt, &[(pause.0, pause.1.as_str())])),
        study: None,
        crashed: None,
    };
    wait_paused(&marker, x.child.as_mut().unwrap());
    let held = held_lease(&shared, &marker).expect("x's paused node holds its lease");
    let mut y = Cleanup {
        conf: &c.conf,
        child: Some(local(&c.mnt2, &[])),
        study: None,
        crashed: None,
    };
    let t0 = Instant::now();
    let waiting = loop {
        let w = records(&shared)
            .into_iter()
            .find(|e| e["event"] == "waiting" && e["key"] == held.as_str());
        if let Some(w) = w {
            break w;
        }
        if let Ok(Some(st)) = y.child.as_mut().unwrap().try_wait() {
            panic!("y ended ({st}) without waiting on x's node");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "y never waited on x's node"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let pid = std::fs::read_to_string(&marker).unwrap();
    assert!(
        waiting["holder"]
            .as_str()
            .is_some_and(|h| h.starts_with(&format!("pid {} ", pid.trim()))),
        "{waiting}"
    );
    std::fs::write(d.join("pause.go"), "").unwrap();
    let ox = x.child.take().unwrap().wait_with_output().unwrap();
    let oy = y.child.take().unwrap().wait_with_output().unwrap();
    assert!(
        ox.status.success() && oy.status.success(),
        "{}\n---\n{}",
        stderr(&ox),
        stderr(&oy)
    );
    let f = finished(&shared);
    assert!(
        f.len() == 7 && f.values().all(|n| *n == 1),
        "a node ran twice: {f:?}"
    );
    std::fs::remove_dir_all(c.export.join(&name)).ok();
    std::fs::remove_dir_all(&d).ok();
}
