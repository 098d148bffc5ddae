//! The VTAB-1k protocol stage: final runs keyed like hand-written runs, seeds and search
//! axes that change only what they must, and a run killed between select and finals that
//! completes without recomputing the search.
use orchestrator::graph::{Graph, Node};
use orchestrator::load::{load, Loaded};
use orchestrator::numerics::DeviceKind;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/hooks.rs"]
mod hooks;
use hooks::hook;

const HEAD: &str = "store = \"store\"\n\
[defaults]\nimg_size = 16\nepochs = 1\nbatch_size = 100\nwarmup_epochs = 0\n\
[backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\nembed_dim = 24\ndepth = 1\nnum_heads = 2\n\
[backbone.pretrain]\nimages = 100\nepochs = 1\n\
[datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 40\n";

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vtab-protocol-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A protocol suite: linear probe with the given learning rates, the given final seeds.
fn protocol_suite(d: &Path, lrs: &str, final_seeds: &str) -> PathBuf {
    let p = d.join("protocol.toml");
    std::fs::write(
        &p,
        format!(
            "{HEAD}[protocol]\nkind = \"vtab1k\"\nsearch_seeds = [0]\nfinal_seeds = {final_seeds}\n\
             [methods.linear]\nlr = {lrs}\n"
        ),
    )
    .unwrap();
    p
}

fn loaded(suite: &Path) -> Loaded {
    load(suite, &[], None, DeviceKind::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

/// The graph of `suite` as planned before any selection: with an empty store, so that no
/// stored choice grows finals into it.
fn unselected(suite: &Path) -> Graph {
    let empty = suite.with_file_name("empty-store");
    let l = load(suite, &[], Some(&empty), DeviceKind::Cpu).unwrap_or_else(|e| panic!("{e}"));
    assert!(l.graph.finals.is_empty());
    l.graph
}

fn keys(g: &Graph) -> BTreeSet<String> {
    g.index.keys().cloned().collect()
}

fn select_key(g: &Graph) -> String {
    let mut k = g.selections.keys();
    let key = k.next().expect("one select node").clone();
    assert!(k.next().is_none());
    key
}

fn kind_of(g: &Graph, key: &str) -> &'static str {
    g.node(key).unwrap().kind()
}

#[test]
fn final_keys_equal_the_keys_of_hand_written_runs() {
    let d = dir("keys");
    let lrs = ["0.001", "0.01"];
    let suite = protocol_suite(&d, &format!("[{}]", lrs.join(", ")), "[0, 1]");
    for (chosen, lr) in lrs.iter().enumerate() {
        let mut g = loaded(&suite).graph;
        assert!(g.finals.is_empty(), "no finals before the selection");
        let s = select_key(&g);
        let added = g.add_finals(&s, chosen);
        assert!(!added.is_empty());
        // The same settings written by hand, without a protocol.
        let hand = d.join(format!("hand{chosen}.toml"));
        std::fs::write(
            &hand,
            format!("{HEAD}seeds = [0, 1]\n[methods.linear]\nlr = {lr}\n"),
        )
        .unwrap();
        let h = loaded(&hand).graph;
        let final_evals: Vec<&String> = g.finals.iter().map(|(_, k)| k).collect();
        let hand_evals: Vec<&String> = h.runs.iter().map(|(_, k)| k).collect();
        assert_eq!(final_evals, hand_evals, "lr {lr}");
        // Every node a hand-written run needs is in the grown graph under the same key.
        assert!(keys(&h).is_subset(&keys(&g)), "lr {lr}");
    }
}

#[test]
fn more_final_seeds_add_exactly_the_new_final_nodes() {
    let d = dir("seeds");
    let three = loaded(&protocol_suite(&d, "[0.001, 0.01]", "[0, 1, 2]")).graph;
    let five = loaded(&protocol_suite(&d, "[0.001, 0.01]", "[0, 1, 2, 3, 4]")).graph;
    // The search and the select node are untouched.
    assert_eq!(keys(&three), keys(&five));
    assert_eq!(select_key(&three), select_key(&five));
    for chosen in [0, 1] {
        let (mut a, mut b) = (three.clone(), five.clone());
        a.add_finals(&select_key(&three), chosen);
        b.add_finals(&select_key(&five), chosen);
        assert!(keys(&a).is_subset(&keys(&b)));
        let new: Vec<String> = keys(&b).difference(&keys(&a)).cloned().collect();
        let mut kinds: Vec<&str> = new.iter().map(|k| kind_of(&b, k)).collect();
        kinds.sort();
        assert_eq!(kinds, ["eval", "eval", "train", "train"], "seeds 3 and 4");
        for k in &new {
            let label = b.node(k).unwrap().label();
            assert!(label.ends_with(" s3") || label.ends_with(" s4"), "{label}");
        }
    }
}

#[test]
fn a_changed_search_axis_changes_only_its_runs_the_select_and_the_finals_it_changes() {
    let d = dir("axis");
    let before = loaded(&protocol_suite(&d, "[0.001, 0.01]", "[0, 1]")).graph;
    let after = loaded(&protocol_suite(&d, "[0.001, 0.03]", "[0, 1]")).graph;
    let (kb, ka) = (keys(&before), keys(&after));
    let gone: Vec<String> = kb.difference(&ka).cloned().collect();
    let new: Vec<String> = ka.difference(&kb).cloned().collect();
    let kinds = |g: &Graph, ks: &[String]| {
        let mut v: Vec<&str> = ks.iter().map(|k| kind_of(g, k)).collect();
        v.sort();
        v
    };
    // The lr=0.01 candidate's train and eval and the select node, replaced.
    assert_eq!(kinds(&before, &gone), ["eval", "select", "train"]);
    assert_eq!(kinds(&after, &new), ["eval", "select", "train"]);
    for k in gone.iter().filter(|k| kind_of(&before, k) == "train") {
        assert!(before.node(k).unwrap().label().contains("lr=0.01"));
    }
    // A choice that stays (the unchanged candidate) keeps the finals' keys; a changed one
    // (the new candidate) gives new finals.
    let finals = |g: &Graph, c: usize| {
        let mut g = g.clone();
        g.add_finals(&select_key(&g.clone()), c);
        g.finals.into_iter().map(|(_, k)| k).collect::<Vec<_>>()
    };
    assert_eq!(finals(&before, 0), finals(&after, 0));
    assert_ne!(finals(&before, 1), finals(&after, 1));
}

fn vtab(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vtab-orch"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn plan(suite: &Path) -> Vec<Value> {
    let o = vtab(&["plan", suite.to_str().unwrap(), "--json"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn count(p: &[Value], status: &str, kind: &str) -> usize {
    p.iter()
        .filter(|e| e["status"] == status && e["kind"] == kind)
        .count()
}

/// "3 ran, 7 cached" from the run's last line.
fn ran(o: &Output) -> (usize, usize) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let line = err.lines().rev().find(|l| l.contains(" ran, ")).unwrap();
    let n = |w: &str| -> usize {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words
            .iter()
            .position(|x| x.trim_end_matches(',') == w)
            .unwrap();
        words[i - 1].parse().unwrap()
    };
    (n("ran"), n("cached"))
}

/// What the selection must choose, worked out here from the search runs' val200 metrics in
/// the store, not from what the select node wrote: (index, config) of the candidate with the
/// highest mean val top-1, ties to fewer trainable parameters, then to the first in suite
/// order; and every candidate's score, for failure messages.
fn expected_choice(suite: &Path, store: &Path) -> (usize, String, String) {
    let g = unselected(suite);
    let Some(Node::Select(sel)) = g.node(&select_key(&g)) else {
        panic!("not a select node");
    };
    let scores: Vec<(String, f64, i64)> = sel
        .candidates
        .iter()
        .map(|c| {
            let metrics: Vec<Value> = c
                .evals
                .iter()
                .map(|k| {
                    let f = store.join("eval").join(k).join("metrics.json");
                    let text = std::fs::read_to_string(&f)
                        .unwrap_or_else(|e| panic!("search run {}: {e}", f.display()));
                    serde_json::from_str(&text).unwrap()
                })
                .collect();
            let top1: Vec<f64> = metrics
                .iter()
                .map(|m| m["top1"].as_f64().unwrap())
                .collect();
            let mean = top1.iter().sum::<f64>() / top1.len() as f64;
            let trainable = metrics[0]["train"]["counts"]["trainable"].as_i64().unwrap();
            (c.config.clone(), mean, trainable)
        })
        .collect();
    let mut best = 0;
    for (i, (_, mean, trainable)) in scores.iter().enumerate() {
        let (_, best_mean, best_trainable) = &scores[best];
        if mean > best_mean || (mean == best_mean && trainable < best_trainable) {
            best = i;
        }
    }
    (best, scores[best].0.clone(), format!("{scores:?}"))
}

/// The candidate index the select node of `suite` stored in its `selection.json`.
fn stored_choice(suite: &Path, store: &Path) -> usize {
    let key = select_key(&unselected(suite));
    let f = store.join("select").join(key).join("selection.json");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
    s["chosen"].as_u64().unwrap() as usize
}

/// The eval keys of the final runs of candidate `chosen` of `suite`.
fn finals_of(suite: &Path, chosen: usize) -> Vec<String> {
    let mut g = unselected(suite);
    let s = select_key(&g);
    assert!(!g.add_finals(&s, chosen).is_empty());
    g.finals.into_iter().map(|(_, k)| k).collect()
}

fn evaluated(store: &Path, eval_key: &str) -> bool {
    store
        .join("eval")
        .join(eval_key)
        .join("metrics.json")
        .exists()
}

/// The driver dies (abort, like kill -9) right after the select node is done, before its
/// finals join; the rerun runs the finals only.
#[test]
fn killed_between_select_and_finals_the_rerun_does_not_recompute_the_search() {
    let d = dir("kill");
    let suite = protocol_suite(&d, "[0.001, 0.01]", "[0, 1]");
    let s = suite.to_str().unwrap();
    let p = plan(&suite);
    assert_eq!(count(&p, "run", "select"), 1);
    assert_eq!(count(&p, "pending", "train"), 2);
    assert!(p
        .iter()
        .filter(|e| e["status"] == "pending")
        .all(|e| e["key"] == "" && e["reason"] == "waits for select shape linear"));
    let o = vtab(
        &["run", s, "--gpus", "none"],
        &[hook("VTAB_ORCH_TEST_ABORT_AFTER_SELECT", "1")],
    );
    assert!(!o.status.success(), "the driver aborted");
    // Search and select are stored; the finals are known now, and not run.
    let p = plan(&suite);
    assert_eq!(count(&p, "cached", "select"), 1);
    assert_eq!(count(&p, "pending", "train"), 0);
    assert_eq!(count(&p, "run", "train"), 2, "{p:#?}");
    assert_eq!(count(&p, "cached", "train"), 2, "the two search runs");
    let again = vtab(&["run", s, "--gpus", "none"], &[]);
    let (n, _) = ran(&again);
    assert_eq!(
        n,
        2 * 2 + 1,
        "final train + eval per seed, and the test prep"
    );
    let second = vtab(&["run", s, "--gpus", "none"], &[]);
    assert_eq!(ran(&second).0, 0, "a second run runs nothing");
    assert!(plan(&suite).iter().all(|e| e["status"] == "cached"));
    // The report: selection, finals (test) and search (val200).
    let r = vtab(&["report", s], &[]);
    let md = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        md.contains("split: test") && md.contains("split: val200"),
        "{md}"
    );
    let sel = std::fs::read_to_string(d.join("reports/suite/selection.csv")).unwrap();
    assert!(sel.starts_with("dataset,method,chosen,settings,val200_top1_winner,val200_top1_runner_up,candidates,search_seeds"), "{sel}");
    // The choice, its report row and the finals that ran are those the rule gives for the
    // search runs' metrics.
    let store = d.join("store");
    let (want, config, scores) = expected_choice(&suite, &store);
    assert_eq!(stored_choice(&suite, &store), want, "{scores}");
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(sel.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 1, "{sel}");
    assert_eq!(&rows[0][2], config, "{scores}\n{sel}");
    for k in finals_of(&suite, want) {
        assert!(evaluated(&store, &k), "final {k} of {config} did not run");
    }
    for k in finals_of(&suite, 1 - want) {
        assert!(!evaluated(&store, &k), "final {k} of the loser ran");
    }
}

/// A changed search axis, run for real: the new candidate's search run, the select node,
/// and the finals only if the choice changed.
#[test]
fn a_changed_search_axis_reruns_only_what_the_choice_needs() {
    let d = dir("rerun");
    let s1 = protocol_suite(&d, "[0.001, 0.01]", "[0]");
    let store = d.join("store");
    let first = vtab(&["run", s1.to_str().unwrap(), "--gpus", "none"], &[]);
    ran(&first);
    let (_, old, _) = expected_choice(&s1, &store);
    let s2 = protocol_suite(&d, "[0.001, 0.1]", "[0]");
    let o = vtab(&["run", s2.to_str().unwrap(), "--gpus", "none"], &[]);
    let (n, _) = ran(&o);
    let (want, new, scores) = expected_choice(&s2, &store);
    assert_eq!(stored_choice(&s2, &store), want, "{scores}");
    for k in finals_of(&s2, want) {
        assert!(evaluated(&store, &k), "final {k} of {new} is missing");
    }
    let finals = if new == old { 0 } else { 2 };
    assert_eq!(
        n,
        2 + 1 + finals,
        "search train+eval, select, finals ({old} -> {new})"
    );
}

/// A search candidate whose training diverges (non-finite loss) loses the selection instead
/// of blocking it: the select chooses among the candidates that finished, records the failed
/// one with its reason, and the finals of the choice run in the same run.
#[test]
fn a_diverging_candidate_loses_the_selection_and_the_finals_still_run() {
    let d = dir("diverge");
    let suite = protocol_suite(&d, "[0.001, 1e30, 0.01]", "[0]");
    let store = d.join("store");
    let o = vtab(&["run", suite.to_str().unwrap(), "--gpus", "none"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    // The diverged run is a failure of this run, and nothing else is.
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("non-finite loss"), "{err}");
    assert!(err.contains("1 failed, 1 blocked"), "{err}");
    let key = select_key(&unselected(&suite));
    let f = store.join("select").join(&key).join("selection.json");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
    let cands = s["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 3);
    let reason = cands[1]["failed"].as_str().unwrap_or_default();
    assert!(
        reason.contains("non-finite loss in epoch 1"),
        "the failed candidate and why: {s}"
    );
    assert!(cands[0].get("failed").is_none() && cands[2].get("failed").is_none());
    // The better of the two that finished (on val200), by the store's own metrics.
    let val = |i: usize| cands[i]["mean_val_top1"].as_f64().unwrap();
    let chosen = s["chosen"].as_u64().unwrap() as usize;
    let expect = if val(2) > val(0) { 2 } else { 0 };
    assert_eq!(chosen, expect, "{s}");
    for k in finals_of(&suite, chosen) {
        assert!(evaluated(&store, &k), "final {k} did not run: {err}");
    }
    // The study is as done as it can be: plan has only the failed candidate's runs left.
    let p = plan(&suite);
    let left: Vec<&Value> = p.iter().filter(|e| e["status"] != "cached").collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(count(&p, "cached", "select"), 1);
    // The report lists the failed candidate with its reason in selection.csv.
    let out = d.join("report");
    let r = vtab(
        &[
            "report",
            suite.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let mut rd = csv::Reader::from_path(out.join("selection.csv")).unwrap();
    let col = rd
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "failed_candidates")
        .expect("a failed_candidates column");
    let row = rd.records().next().unwrap().unwrap();
    assert!(row[col].contains("non-finite loss in epoch 1"), "{:?}", row);
    std::fs::remove_dir_all(&d).ok();
}

/// Only when every candidate failed is the select failed, saying why each one lost.
#[test]
fn when_every_candidate_fails_the_select_fails_with_their_reasons() {
    let d = dir("diverge-all");
    let suite = protocol_suite(&d, "[1e30, 1e31]", "[0]");
    let o = vtab(&["run", suite.to_str().unwrap(), "--gpus", "none"], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("FAILED select"), "{err}");
    assert!(err.contains("every candidate failed"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}
