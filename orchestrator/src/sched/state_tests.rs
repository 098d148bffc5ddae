//! Unit tests of the scheduler core: no processes, no store, only transitions.
use super::*;

const GPU: Resources = Resources {
    gpus: 1,
    cpu_threads: 4,
    tiny: false,
};
const CPU: Resources = Resources {
    gpus: 0,
    cpu_threads: 4,
    tiny: false,
};

fn node(key: &str, deps: &[&str], resources: Resources) -> NodeSpec {
    NodeSpec {
        key: key.into(),
        deps: deps.iter().map(|d| d.to_string()).collect(),
        resources,
        tolerant: false,
    }
}

fn keys(l: &[Launch]) -> Vec<&str> {
    l.iter().map(|l| l.key.as_str()).collect()
}

/// prep and build -> train -> eval, twice (two methods) over one prep and one build.
fn diamond() -> Core {
    let mut c = Core::new();
    let blocked = c
        .extend([
            node("prep", &[], CPU),
            node("build", &[], GPU),
            node("train-a", &["prep", "build"], GPU),
            node("train-b", &["prep", "build"], GPU),
            node("eval-a", &["train-a", "prep", "build"], GPU),
            node("eval-b", &["train-b", "prep", "build"], GPU),
        ])
        .unwrap();
    assert!(blocked.is_empty());
    c
}

const BIG: Capacity = Capacity::Local {
    gpus: 4,
    per_gpu: 2,
    cpu_threads: 8,
};

#[test]
fn inputs_run_before_their_consumers_in_insertion_order() {
    let mut c = diamond();
    assert_eq!(c.state("train-a"), Some(State::Pending));
    assert_eq!(keys(&c.next(&BIG)), ["prep", "build"]);
    assert!(c.next(&BIG).is_empty(), "nothing else is ready");
    c.on_exit("prep", Exit::Done).unwrap();
    assert!(c.next(&BIG).is_empty(), "train waits for build too");
    c.on_exit("build", Exit::Cached).unwrap();
    assert_eq!(keys(&c.next(&BIG)), ["train-a", "train-b"]);
    c.on_exit("train-b", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&BIG)), ["eval-b"]);
    c.on_exit("train-a", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&BIG)), ["eval-a"]);
    assert!(!c.is_finished());
    c.on_exit("eval-a", Exit::Done).unwrap();
    c.on_exit("eval-b", Exit::Done).unwrap();
    assert!(c.is_finished());
    assert_eq!(c.count(State::Done), 6);
}

#[test]
fn a_failure_blocks_exactly_its_dependants_transitively() {
    let mut c = diamond();
    c.next(&BIG);
    c.on_exit("prep", Exit::Done).unwrap();
    c.on_exit("build", Exit::Done).unwrap();
    c.next(&BIG);
    let blocked = c.on_exit("train-a", Exit::Failed).unwrap();
    assert_eq!(
        blocked,
        [Blocked {
            key: "eval-a".into(),
            by: "train-a".into()
        }]
    );
    // The sibling goes on.
    c.on_exit("train-b", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&BIG)), ["eval-b"]);
    c.on_exit("eval-b", Exit::Done).unwrap();
    assert!(c.is_finished());
    assert_eq!(c.state("eval-a"), Some(State::Blocked));
    assert_eq!(c.state("train-a"), Some(State::Failed));
    // A root failure blocks the whole subtree, named by the failed node.
    let mut c = diamond();
    c.next(&BIG);
    let blocked = c.on_exit("build", Exit::Failed).unwrap();
    let names: Vec<_> = blocked
        .iter()
        .map(|b| (b.key.as_str(), b.by.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("train-a", "build"),
            ("train-b", "build"),
            ("eval-a", "build"),
            ("eval-b", "build")
        ]
    );
    c.on_exit("prep", Exit::Done).unwrap();
    assert!(c.next(&BIG).is_empty());
    assert!(c.is_finished());
}

#[test]
fn a_leased_node_waits_frees_its_slot_and_is_ready_again_when_the_lease_is_free() {
    let one = Capacity::Local {
        gpus: 1,
        per_gpu: 1,
        cpu_threads: 4,
    };
    let mut c = Core::new();
    c.extend([
        node("a", &[], GPU),
        node("b", &[], GPU),
        node("c", &["a"], GPU),
    ])
    .unwrap();
    assert_eq!(keys(&c.next(&one)), ["a"]);
    c.on_exit("a", Exit::Leased).unwrap();
    assert_eq!(c.state("a"), Some(State::WaitingOnLease));
    assert!(!c.is_finished(), "a waiting node keeps the run alive");
    // Its slot went to the next ready node.
    assert_eq!(keys(&c.next(&one)), ["b"]);
    c.on_exit("b", Exit::Done).unwrap();
    assert!(c.next(&one).is_empty(), "a waits for its lease, c for a");
    c.lease_free("a").unwrap();
    assert_eq!(c.state("a"), Some(State::Ready));
    // Ready again: the other run finished it meanwhile, so it is found cached.
    c.on_exit("a", Exit::Cached).unwrap();
    assert_eq!(keys(&c.next(&one)), ["c"]);
    // Freeing a lease nobody waits on is a bug in the caller.
    assert!(c.lease_free("b").is_err());
    // A waiting node may also be found in the store without being retried.
    let mut c = Core::new();
    c.extend([node("a", &[], GPU)]).unwrap();
    c.next(&one);
    c.on_exit("a", Exit::Leased).unwrap();
    c.on_exit("a", Exit::Cached).unwrap();
    assert!(c.is_finished());
}

#[test]
fn gpu_slots_fill_round_robin_across_gpus_then_lanes() {
    let cap = Capacity::Local {
        gpus: 2,
        per_gpu: 2,
        cpu_threads: 4,
    };
    let mut c = Core::new();
    c.extend((0..6).map(|i| node(&format!("n{i}"), &[], GPU)))
        .unwrap();
    let l = c.next(&cap);
    let slots: Vec<String> = l.iter().map(|l| l.slot.to_string()).collect();
    assert_eq!(slots, ["gpu0.0", "gpu1.0", "gpu0.1", "gpu1.1"]);
    // A freed slot is reused; lane 0 of a GPU comes before lane 1 of another.
    c.on_exit("n0", Exit::Done).unwrap();
    c.on_exit("n3", Exit::Done).unwrap();
    let l = c.next(&cap);
    let got: Vec<(String, String)> = l
        .iter()
        .map(|l| (l.key.clone(), l.slot.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("n4".to_string(), "gpu0.0".to_string()),
            ("n5".to_string(), "gpu1.1".to_string())
        ]
    );
    assert_eq!(c.slot("n4"), Some(Slot::Gpu { gpu: 0, lane: 0 }));
}

#[test]
fn cpu_nodes_share_the_thread_budget_and_gpu_nodes_fall_back_to_one_cpu_slot() {
    let cap = Capacity::Local {
        gpus: 0,
        per_gpu: 1,
        cpu_threads: 8,
    };
    let mut c = Core::new();
    c.extend([
        node("p0", &[], CPU),
        node("p1", &[], CPU),
        node("p2", &[], CPU),
        node("g0", &[], GPU),
        node("g1", &[], GPU),
        node(
            "huge",
            &[],
            Resources {
                gpus: 0,
                cpu_threads: 64,
                tiny: false,
            },
        ),
    ])
    .unwrap();
    let l = c.next(&cap);
    let got: Vec<(&str, Slot)> = l.iter().map(|l| (l.key.as_str(), l.slot)).collect();
    assert_eq!(
        got,
        [
            ("p0", Slot::Cpu { threads: 4 }),
            ("p1", Slot::Cpu { threads: 4 }),
            ("g0", Slot::CpuDevice)
        ]
    );
    c.on_exit("p0", Exit::Done).unwrap();
    c.on_exit("p1", Exit::Done).unwrap();
    // A node larger than the budget runs when the budget is all free, alone.
    assert_eq!(keys(&c.next(&cap)), ["p2"]);
    c.on_exit("p2", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&cap)), ["huge"]);
    assert_eq!(c.slot("huge"), Some(Slot::Cpu { threads: 8 }));
    c.on_exit("g0", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&cap)), ["g1"]);
}

#[test]
fn a_cluster_caps_the_jobs_in_flight() {
    let cap = Capacity::Cluster { max_jobs: 2 };
    let mut c = Core::new();
    c.extend((0..5).map(|i| node(&format!("n{i}"), &[], GPU)))
        .unwrap();
    assert_eq!(keys(&c.next(&cap)), ["n0", "n1"]);
    assert!(c.next(&cap).is_empty());
    c.on_exit("n1", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&cap)), ["n2"]);
    assert_eq!(c.slot("n2"), Some(Slot::Cluster));
}

#[test]
fn extend_grows_the_graph_during_a_run_and_shares_known_nodes() {
    let mut c = diamond();
    c.next(&BIG);
    c.on_exit("prep", Exit::Done).unwrap();
    c.on_exit("build", Exit::Done).unwrap();
    c.next(&BIG);
    c.on_exit("train-a", Exit::Done).unwrap();
    c.on_exit("train-b", Exit::Failed).unwrap();
    c.next(&BIG);
    c.on_exit("eval-a", Exit::Done).unwrap();
    assert!(c.is_finished());
    // A `select` stage completes and adds final runs: one over done inputs starts at once,
    // one over a failed input is blocked at once, a repeated node is shared, and a node
    // can read another added in the same call.
    let blocked = c
        .extend([
            node("train-a", &["prep", "build"], GPU),
            node("final", &["prep", "build"], GPU),
            node("final-eval", &["final", "prep"], GPU),
            node("from-b", &["train-b"], GPU),
        ])
        .unwrap();
    assert_eq!(
        blocked,
        [Blocked {
            key: "from-b".into(),
            by: "train-b".into()
        }]
    );
    assert_eq!(c.len(), 9);
    assert!(!c.is_finished());
    assert_eq!(keys(&c.next(&BIG)), ["final"]);
    c.on_exit("final", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&BIG)), ["final-eval"]);
    // A later extension may consume a node added earlier, whose dependants list grows.
    c.extend([node("late", &["final"], CPU)]).unwrap();
    assert_eq!(keys(&c.next(&BIG)), ["late"]);
}

#[test]
fn extend_rejects_unknown_inputs_and_conflicting_redefinitions() {
    let mut c = diamond();
    assert_eq!(
        c.extend([node("x", &["nowhere"], GPU)]),
        Err(CoreError::UnknownInput {
            key: "x".into(),
            dep: "nowhere".into()
        })
    );
    assert_eq!(
        c.extend([node("prep", &[], GPU)]),
        Err(CoreError::Conflict { key: "prep".into() })
    );
    assert_eq!(c.len(), 6, "a rejected extension adds nothing");
    // Exits that do not fit the state are refused.
    assert!(c.on_exit("train-a", Exit::Done).is_err());
    assert!(c.on_exit("nowhere", Exit::Done).is_err());
}

/// A tolerant node (a select) runs once each input has ended, done or failed, and is never
/// blocked; its own dependants (the finals) are blocked only if it fails.
#[test]
fn a_tolerant_node_runs_after_its_inputs_end_even_if_some_failed() {
    let mut c = Core::new();
    let select = NodeSpec {
        tolerant: true,
        ..node("select", &["eval-a", "eval-b", "eval-c"], CPU)
    };
    let blocked = c
        .extend([
            node("train-a", &[], GPU),
            node("train-b", &[], GPU),
            node("eval-a", &["train-a"], GPU),
            node("eval-b", &["train-b"], GPU),
            node("eval-c", &[], GPU),
            select,
            node("final", &["select"], GPU),
        ])
        .unwrap();
    assert!(blocked.is_empty());
    assert_eq!(keys(&c.next(&BIG)), ["train-a", "train-b", "eval-c"]);
    // train-b fails: eval-b is blocked, the select is not (and not ready yet).
    let b = c.on_exit("train-b", Exit::Failed).unwrap();
    assert_eq!(
        b,
        [Blocked {
            key: "eval-b".into(),
            by: "train-b".into()
        }]
    );
    assert_eq!(c.state("select"), Some(State::Pending));
    c.on_exit("eval-c", Exit::Failed).unwrap();
    assert_eq!(c.state("select"), Some(State::Pending), "eval-a still runs");
    c.on_exit("train-a", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&BIG)), ["eval-a"]);
    c.on_exit("eval-a", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&BIG)), ["select"]);
    c.on_exit("select", Exit::Done).unwrap();
    assert_eq!(keys(&c.next(&BIG)), ["final"]);
    // Added after its inputs failed, a tolerant node is ready at once.
    let late = NodeSpec {
        tolerant: true,
        ..node("late", &["eval-b", "eval-c"], CPU)
    };
    assert!(c.extend([late]).unwrap().is_empty());
    assert_eq!(c.state("late"), Some(State::Ready));
}
