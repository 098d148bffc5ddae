//! Tests of the local launcher with stand-in children (shell scripts in place of
//! `vtab-orch exec`): GPU mapping, failure handling, waiting on another run's lease.
use super::*;
use crate::sched::Event;
use crate::store::Store;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The graph run with the default options.
fn run(
    g: &crate::graph::Graph,
    store: &Store,
    l: &mut dyn Launcher,
    on_event: &mut dyn FnMut(&Event),
) -> crate::sched::Summary {
    crate::work::run(g, store, l, crate::sched::Options::default(), on_event)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-local-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A stand-in `vtab-orch` running `body` (sh; `$2` is the key, `$4` the store).
fn fake_exe(dir: &Path, body: &str) -> PathBuf {
    let exe = dir.join("fake-vtab-orch");
    std::fs::write(&exe, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// One synthetic dataset, one method, a pretrained backbone: build (GPU), two preps
/// (CPU), train and eval (GPU).
fn graph(dir: &Path) -> crate::graph::Graph {
    let suite = dir.join("s.toml");
    std::fs::write(
        &suite,
        "[backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\n[backbone.pretrain]\n\
         [defaults]\nimg_size = 16\n[datasets.a]\nformat = \"synthetic\"\ntask = \"count\"\n[methods.linear]\n",
    )
    .unwrap();
    crate::load::load(&suite, &[], None, crate::numerics::DeviceKind::Cpu)
        .unwrap()
        .graph
}

fn launcher(dir: &Path, exe: PathBuf, gpus: &[&str]) -> LocalLauncher {
    LocalLauncher::new(LocalOptions {
        exe,
        store: dir.join("store"),
        gpus: gpus.iter().map(|g| g.to_string()).collect(),
        per_gpu: 1,
        cpu_threads: 4,
        warm: false,
    })
}

/// Runs the test graph with `exe` as every node's process (CPU only): summary and events.
fn run_with(dir: &Path, exe: PathBuf) -> (crate::sched::Summary, Vec<Event>) {
    let g = graph(dir);
    let store = Store::open(&dir.join("store")).unwrap();
    let mut events = Vec::new();
    let mut l = launcher(dir, exe, &[]);
    let summary = run(&g, &store, &mut l, &mut |e| events.push(e.clone()));
    (summary, events)
}

/// The log tails of the failed nodes.
fn failure_tails(events: &[Event]) -> Vec<&String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { tail, .. } => Some(tail),
            _ => None,
        })
        .collect()
}

#[test]
fn children_see_the_parents_devices_not_physical_ordinals() {
    // Indices inside an allocation, UUIDs, MIG ids: slot i gets entry i.
    assert_eq!(visible_devices(Some("2,3"), 2), ["2", "3"]);
    assert_eq!(
        visible_devices(Some("GPU-8f3a,MIG-1b2c/1/0"), 2),
        ["GPU-8f3a", "MIG-1b2c/1/0"]
    );
    // CUDA stops at an invalid entry: only the ones it counted are used.
    assert_eq!(visible_devices(Some("1,7,bogus"), 2), ["1", "7"]);
    assert_eq!(visible_devices(Some(""), 0), Vec::<String>::new());
    assert_eq!(visible_devices(None, 3), ["0", "1", "2"]);
    // `--gpus 0,2` are positions in that list.
    let visible = visible_devices(Some("4,5,6"), 3);
    assert_eq!(
        select_gpus(&Gpus::List(vec![0, 2]), &visible).unwrap(),
        ["4", "6"]
    );
    assert_eq!(select_gpus(&Gpus::Auto, &visible).unwrap(), ["4", "5", "6"]);
    assert!(select_gpus(&Gpus::None, &visible).unwrap().is_empty());
    let err = select_gpus(&Gpus::List(vec![3]), &visible).unwrap_err();
    assert!(
        err.contains("position 3") && err.contains("[4, 5, 6]"),
        "{err}"
    );
}

#[test]
fn the_child_command_pins_its_slots_entry() {
    let dir = tmp("command");
    let l = launcher(&dir, "vtab-orch".into(), &["GPU-aaa", "MIG-bbb"]);
    let job = |slot| Job {
        key: "k".into(),
        label: "train x".into(),
        kind: "train",
        slot,
        resources: crate::sched::state::Resources {
            gpus: 1,
            cpu_threads: 1,
            tiny: false,
        },
        spec: "/s.json".into(),
        log: "/l.log".into(),
        run: "r1".into(),
        expected_s: 1.0,
    };
    let env = |c: &Command| -> Option<String> {
        c.get_envs()
            .find(|(k, _)| *k == "CUDA_VISIBLE_DEVICES")
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    };
    let args = |c: &Command| -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    };
    let c = l.command(&job(Slot::Gpu { gpu: 1, lane: 0 }));
    assert_eq!(env(&c).as_deref(), Some("MIG-bbb"));
    assert!(!args(&c).contains(&"--cpu".to_string()));
    let c = l.command(&job(Slot::Gpu { gpu: 0, lane: 3 }));
    assert_eq!(env(&c).as_deref(), Some("GPU-aaa"));
    for slot in [Slot::CpuDevice, Slot::Cpu { threads: 4 }] {
        let c = l.command(&job(slot));
        assert_eq!(env(&c), None);
        assert_eq!(
            args(&c),
            [
                "exec",
                "k",
                "--store",
                &dir.join("store").display().to_string(),
                "--spec",
                "/s.json",
                "--run",
                "r1",
                "--cpu"
            ]
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A spawned child really gets its slot's entry: the stand-in reports what it sees.
#[test]
fn a_spawned_gpu_child_reports_its_slots_device() {
    let dir = tmp("spawned");
    let g = graph(&dir);
    let store = Store::open(&dir.join("store")).unwrap();
    let exe = fake_exe(
        &dir,
        "echo \"{\\\"started\\\": true, \\\"cuda_visible_devices\\\": \\\"$CUDA_VISIBLE_DEVICES\\\"}\"\nexit 1",
    );
    let mut l = launcher(&dir, exe, &["GPU-aaa", "GPU-bbb"]);
    let mut events = Vec::new();
    run(&g, &store, &mut l, &mut |e| events.push(e.clone()));
    let started: Vec<(String, String, Option<String>)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Started {
                label,
                slot,
                devices,
                ..
            } => Some((label.clone(), slot.clone(), devices.clone())),
            _ => None,
        })
        .collect();
    let build = started
        .iter()
        .find(|s| s.0.starts_with("build"))
        .expect("the build started");
    assert_eq!(build.1, "gpu0.0");
    assert_eq!(build.2.as_deref(), Some("GPU-aaa"));
    assert!(started
        .iter()
        .filter(|s| s.0.starts_with("prep"))
        .all(|s| s.1 == "cpu-prep"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A child that dies of a CUDA out-of-memory error fails only its node, and the failure
/// points at --jobs-per-gpu and the batch size. (CI has no GPU to run out of.)
#[test]
fn an_oom_child_fails_only_its_node_with_a_hint() {
    let dir = tmp("oom");
    let exe = fake_exe(
        &dir,
        "echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB' >&2\nexit 1",
    );
    let (summary, events) = run_with(&dir, exe);
    let failed = failure_tails(&events);
    // The three roots (build, two preps) fail; train and eval are blocked, not run.
    assert_eq!(failed.len(), 3, "{events:?}");
    assert!(
        failed
            .iter()
            .all(|t| t.contains("CUDA out of memory") && t.contains("--jobs-per-gpu")),
        "{failed:?}"
    );
    assert_eq!(summary.blocked, 2);
    assert_eq!(summary.ran, 0);
    // Every event is in the run record too.
    let record = crate::sched::events::read_record(&summary.record);
    assert_eq!(record.len(), events.len());
    assert_eq!(record.iter().filter(|e| e["event"] == "blocked").count(), 2);
    std::fs::remove_dir_all(&dir).ok();
}

/// A node that fails on a full disk cannot write why into its log (on the same disk); the
/// reason it sent on its progress pipe is shown instead.
#[test]
fn a_failure_reason_reaches_the_summary_when_the_log_cannot_hold_it() {
    let dir = tmp("nolog");
    let exe = fake_exe(
        &dir,
        "echo '{\"error\": \"No space left on device (os error 28)\"}'\nexit 1",
    );
    let (_, events) = run_with(&dir, exe);
    let failed = failure_tails(&events);
    assert!(!failed.is_empty());
    assert!(
        failed.iter().all(|t| t.contains("No space left on device")),
        "{failed:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A node whose lease another run holds is not respawned in a loop: the parent waits on the
/// owner record and spawns it once more when it is free, naming the holder meanwhile.
#[test]
fn a_leased_node_is_spawned_again_only_when_the_lease_is_free() {
    let dir = tmp("lease");
    let g = graph(&dir);
    let store = Store::open(&dir.join("store")).unwrap();
    let build = g
        .topo()
        .into_iter()
        .find(|k| g.node(k).unwrap().kind() == "build")
        .unwrap();
    let spawns = dir.join("spawns");
    let exe = fake_exe(
        &dir,
        &format!(
            "echo \"$2\" >> {}\n[ -e \"$4/leases/$2.owner\" ] && exit 75\necho '{{\"started\": true}}'\nexit 1",
            spawns.display()
        ),
    );
    // Another "run" holds the build's lease for 1.5 s.
    let timing = crate::lease::Timing::default();
    let crate::lease::Acquired::Held(held) =
        crate::lease::acquire(&store.root, &build, timing, &|| false).unwrap()
    else {
        panic!("the lease is free")
    };
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(held);
    });
    let mut events = Vec::new();
    let mut l = launcher(&dir, exe, &[]);
    run(&g, &store, &mut l, &mut |e| events.push(e.clone()));
    releaser.join().unwrap();
    let n = std::fs::read_to_string(&spawns)
        .unwrap()
        .lines()
        .filter(|l| *l == build)
        .count();
    assert_eq!(n, 2, "spawned once leased, once when free");
    let waiting: Vec<&Option<String>> = events
        .iter()
        .filter_map(|e| match e {
            Event::Waiting { key, holder, .. } if *key == build => Some(holder),
            _ => None,
        })
        .collect();
    assert_eq!(waiting.len(), 1, "{events:?}");
    let pid = format!(
        "pid {} on {}",
        std::process::id(),
        crate::store::host_name()
    );
    assert!(
        waiting[0].as_ref().is_some_and(|h| h.starts_with(&pid)),
        "{waiting:?}"
    );
    // Then it ran (and failed, as the stand-in does).
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Failed { key, .. } if *key == build)));
    std::fs::remove_dir_all(&dir).ok();
}
