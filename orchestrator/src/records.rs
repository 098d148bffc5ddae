//! From the store to the report's `RunRecord`s: per run of a loaded suite, its finished eval
//! entry (made for either device kind), metrics, training curve, class names, node wall times
//! and the settings of its key. Reads the store; writes nothing; formats nothing.
use serde_json::Value;
use std::collections::BTreeMap;

use crate::graph::{Graph, Node, TrainNode};
use crate::load::Loaded;
use crate::nodes::{self, eval::Metrics};
use crate::numerics::DeviceKind;
use crate::report::protocol::{Candidate, Choice};
use crate::report::{ClassAccuracy, DataSubsets, EpochPoint, RunRecord};
use crate::suite::{Opt, Run};

/// The suite's finished runs, and how many are not finished yet.
pub struct Collected {
    pub records: Vec<RunRecord>,
    pub missing: usize,
}

/// One record per finished run of the suite (runs not evaluated yet are counted in
/// `missing`). A run evaluated only for the other device kind (`other`: made on a GPU
/// machine, reported from a CPU one) is taken from there. Under a protocol these are the
/// search runs (val200).
pub fn collect(l: &Loaded, other: &Graph) -> nodes::Result<Collected> {
    let mut records = Vec::new();
    let mut missing = 0;
    for ((run, here), (_, there)) in l.graph.runs.iter().zip(&other.runs) {
        match record_of(l, other, run, [here, there])? {
            Some(r) => records.push(r),
            None => missing += 1,
        }
    }
    Ok(Collected { records, missing })
}

/// The record of `run` from the first of `keys` (eval keys) finished in the store, its nodes
/// found in either graph; `None` when none is finished.
fn record_of(
    l: &Loaded,
    other: &Graph,
    run: &Run,
    keys: [&str; 2],
) -> nodes::Result<Option<RunRecord>> {
    let Some(key) = keys
        .into_iter()
        .find(|k| l.store.is_complete(crate::node::EVAL.name, k))
    else {
        return Ok(None);
    };
    let node = |k: &str| l.graph.node(k).or_else(|| other.node(k));
    let Some(Node::Eval(e)) = node(key) else {
        return Ok(None);
    };
    let Some(Node::Train(t)) = node(&e.train) else {
        return Ok(None);
    };
    let backbone = match node(&t.build) {
        Some(b) => b.label().trim_start_matches("build ").to_string(),
        None => String::new(),
    };
    record(l, run, key, e, t, &backbone).map(Some)
}

/// What `report` reads of a suite under `[protocol]`.
pub struct ProtocolRecords {
    /// The final runs (train800val200 -> test) of every selection made, in suite order.
    pub finals: Vec<RunRecord>,
    /// The search runs (train800 -> val200) that finished.
    pub search: Vec<RunRecord>,
    /// Per (dataset, method table), in suite order: what it chose from what (`None`: its
    /// select node has not run yet).
    pub choices: Vec<Option<Choice>>,
    /// Selections and final runs not finished yet.
    pub missing: usize,
}

/// Records of a suite under `[protocol]`: its finals, its search runs and its selections,
/// for either device kind (`other`), as [`collect`].
pub fn collect_protocol(l: &Loaded, other: &Graph) -> nodes::Result<ProtocolRecords> {
    let search = collect(l, other)?.records;
    let mut finals = Vec::new();
    let mut choices = Vec::new();
    let mut missing = 0;
    for s in &l.suite.selections {
        let choice = choice(l, other, s);
        if choice.is_none() {
            missing += 1;
        }
        choices.push(choice);
        // The finals of this selection made for either device kind, this one's first.
        let made = |g: &Graph, seed: u64| -> Option<(Run, String)> {
            g.finals
                .iter()
                .find(|(r, k)| {
                    r.dataset == s.dataset
                        && r.family == s.family
                        && r.seed == seed
                        && l.store.is_complete(crate::node::EVAL.name, k)
                })
                .cloned()
        };
        for seed in &s.final_seeds {
            let found = made(&l.graph, *seed).or_else(|| made(other, *seed));
            let rec = match &found {
                Some((run, key)) => record_of(l, other, run, [key, key])?,
                None => None,
            };
            match rec {
                Some(r) => finals.push(r),
                None => missing += 1,
            }
        }
    }
    Ok(ProtocolRecords {
        finals,
        search,
        choices,
        missing,
    })
}

/// The selection of `s` as the report shows it: from its select node's `selection.json`
/// (made for either device kind), or the one candidate of a table without a search.
fn choice(l: &Loaded, other: &Graph, s: &crate::suite::Selection) -> Option<Choice> {
    if s.candidates.len() == 1 {
        let c = &s.candidates[0];
        return Some(Choice {
            dataset: s.dataset.clone(),
            method: s.family.clone(),
            search_seeds: Vec::new(),
            candidates: vec![Candidate {
                config: c.config.clone(),
                settings: c.hparams.clone(),
                val_top1: Vec::new(),
                mean_val_top1: None,
                trainable: None,
                failed: None,
            }],
            chosen: 0,
        });
    }
    let sel = [&l.graph, other].into_iter().find_map(|g| {
        g.selections
            .iter()
            .filter(|(_, f)| f.dataset == s.dataset && f.family == s.family)
            .find_map(|(k, _)| nodes::select::stored(&l.store, k))
    })?;
    Some(Choice {
        dataset: s.dataset.clone(),
        method: s.family.clone(),
        search_seeds: s.search_seeds.clone(),
        candidates: sel
            .candidates
            .into_iter()
            .map(|c| Candidate {
                config: c.config,
                settings: c.settings,
                val_top1: c.val_top1,
                mean_val_top1: c.failed.is_none().then_some(c.mean_val_top1),
                trainable: Some(c.trainable),
                failed: c.failed,
            })
            .collect(),
        chosen: sel.chosen,
    })
}

/// The group of dataset `name` in the VTAB-1k table: its table's `group` key, else the
/// VTAB-1k task's own group (by the dataset's name, or the folder a `vtab1k` dataset reads),
/// else `other`.
pub fn dataset_group(l: &Loaded, name: &str) -> String {
    let def = l.suite.datasets.get(name);
    if let Some(g) = def.and_then(|d| d.group.clone()) {
        return g;
    }
    let folder = def.and_then(|d| match &d.source {
        crate::suite::Source::Real(r) if r.format == crate::datasets::Format::Vtab1k => {
            r.root.file_name().map(|f| f.to_string_lossy().into_owned())
        }
        _ => None,
    });
    crate::report::vtab1k_group(name)
        .or_else(|| folder.as_deref().and_then(crate::report::vtab1k_group))
        .unwrap_or(crate::report::groups::OTHER)
        .to_string()
}

fn record(
    l: &Loaded,
    run: &Run,
    key: &str,
    e: &crate::graph::EvalNode,
    t: &TrainNode,
    backbone: &str,
) -> nodes::Result<RunRecord> {
    let store = &l.store;
    let m: Metrics = nodes::read_json(
        &store
            .entry(crate::node::EVAL.name, key)
            .join(nodes::eval::METRICS),
    )?;
    let prep = |k: &str| store.entry(crate::node::PREP.name, k);
    let subsets = nodes::prep::subset(&prep(&t.prep))
        .ok()
        .zip(nodes::prep::subset(&prep(&e.prep)).ok())
        .map(|(train, eval)| DataSubsets { train, eval });
    let info = nodes::prep::info(&prep(&e.prep)).ok();
    let per_class = match &info {
        Some(i) => i
            .class_names
            .iter()
            .enumerate()
            .map(|(c, name)| ClassAccuracy {
                class: name.clone(),
                accuracy: m.per_class.get(c).copied().flatten(),
                count: i.per_class.get(c).copied().unwrap_or(0),
            })
            .collect(),
        None => Vec::new(),
    };
    // Node wall times as the store recorded them (the train log's own is the fallback).
    let wall = |kind: &str, k: &str| store.manifest(kind, k).map(|m| m.wall_s);
    let train_wall = wall("train", &e.train).unwrap_or(m.train.wall_s);
    let eval_wall = wall("eval", key).unwrap_or(0.0);
    let gpu_hours = gpu_hours(t.numerics.device, train_wall, eval_wall);
    Ok(RunRecord {
        dataset: run.dataset.clone(),
        method: run.method.name().to_string(),
        method_table: run.family.clone(),
        group: dataset_group(l, &run.dataset),
        config: run.config.clone(),
        hparams: settings(t, backbone),
        seed: run.seed,
        top1: m.top1,
        test_n: m.n,
        num_classes: m.train.num_classes,
        trainable: m.train.counts.trainable,
        trainable_backbone: m.train.counts.trainable_backbone,
        trainable_pct: m.train.trainable_pct,
        params_total: m.train.counts.total,
        epoch_time_s: m.train.mean_epoch_s(),
        peak_mem_mib: m.train.peak_mem_mib(),
        peak_rss_mib: m.train.peak_rss_mib,
        train_img_s: m.train.mean_img_s(),
        wall_s: train_wall,
        epochs_s: m.train.epochs.iter().map(|x| x.time_s).sum(),
        eval_wall_s: eval_wall,
        gpu_hours,
        key: key.to_string(),
        subsets,
        per_class,
        curve: m
            .train
            .epochs
            .iter()
            .map(|x| EpochPoint {
                epoch: x.epoch,
                loss: x.loss,
                lr: x.lr,
                time_s: x.time_s,
            })
            .collect(),
    })
}

/// Hours a run held a GPU: its train and eval nodes' wall times (one GPU each) on CUDA, 0 on
/// the CPU.
pub fn gpu_hours(device: DeviceKind, train_wall_s: f64, eval_wall_s: f64) -> f64 {
    match device {
        DeviceKind::Cuda => (train_wall_s + eval_wall_s) / 3600.0,
        DeviceKind::Cpu => 0.0,
    }
}

/// Every setting that enters the run's key (besides the seed and the data's identity), by
/// name: the train node's optimisation and data settings, its numerics, the backbone, and the
/// method's parameters. Exhaustive destructuring: a new field is a compile error here.
pub fn settings(t: &TrainNode, backbone: &str) -> BTreeMap<String, String> {
    let Opt {
        epochs,
        batch_size,
        lr,
        min_lr,
        weight_decay,
        warmup_epochs,
        label_smoothing,
        clip_grad_norm,
        precision: _, // resolved into `numerics`
        img_size,
        augment,
        sample_seed,
        train_split,
        eval_split,
        eval_batch_size: _,  // not semantic: batching does not change results
        checkpoint_every: _, // not semantic: resuming gives identical tensors
    } = &t.opt;
    let split = |s| {
        serde_json::to_value(s).map_or(String::new(), |v| {
            v.as_str().unwrap_or_default().to_string()
        })
    };
    let mut out: BTreeMap<String, String> = [
        ("numerics", t.numerics.to_string()),
        ("backbone", backbone.to_string()),
        ("img_size", img_size.to_string()),
        ("train_split", split(train_split)),
        ("eval_split", split(eval_split)),
        ("sample_seed", sample_seed.to_string()),
        ("epochs", epochs.to_string()),
        ("batch_size", batch_size.to_string()),
        ("lr", lr.to_string()),
        ("min_lr", min_lr.to_string()),
        ("weight_decay", weight_decay.to_string()),
        ("warmup_epochs", warmup_epochs.to_string()),
        ("label_smoothing", label_smoothing.to_string()),
        (
            "clip_grad_norm",
            clip_grad_norm.map_or("none".to_string(), |c| c.to_string()),
        ),
        ("augment", augment.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // The method's own fields: lists (targets) joined by commas, numbers as Rust prints them.
    for (k, v) in t.method.fields() {
        let text = match &v {
            Value::Array(items) => items
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(","),
            Value::String(s) => s.clone(),
            Value::Number(n) => match n.as_i64() {
                Some(i) => i.to_string(),
                None => n.as_f64().map_or_else(|| n.to_string(), |f| f.to_string()),
            },
            other => other.to_string(),
        };
        out.insert(k, text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_hours_count_train_and_eval_on_cuda_only() {
        assert_eq!(gpu_hours(DeviceKind::Cuda, 3000.0, 600.0), 1.0);
        assert_eq!(gpu_hours(DeviceKind::Cpu, 3000.0, 600.0), 0.0);
    }

    /// Every setting of a train node's key has a column, whatever the method.
    #[test]
    fn settings_cover_the_key() {
        let g = crate::load::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../suite.toml"),
            &[],
            None,
            DeviceKind::Cuda,
        )
        .unwrap()
        .graph;
        let mut seen = std::collections::BTreeSet::new();
        for key in g.topo() {
            if let Some(Node::Train(t)) = g.node(&key) {
                let s = settings(t, "b");
                assert_eq!(s["numerics"], "cuda-bf16");
                for k in [
                    "epochs",
                    "batch_size",
                    "lr",
                    "min_lr",
                    "weight_decay",
                    "warmup_epochs",
                    "label_smoothing",
                    "clip_grad_norm",
                    "augment",
                    "img_size",
                ] {
                    assert!(s.contains_key(k), "{k} missing for {}", t.config);
                }
                seen.extend(s.into_keys());
            }
        }
        for k in [
            "r",
            "alpha",
            "targets",
            "d_initial",
            "projection_prng_key",
            "dropout",
        ] {
            assert!(seen.contains(k), "{k}");
        }
        // Parameters of the other registered methods follow those, sorted by name.
        let method_params: Vec<&str> = kernels::adapters::REGISTRY
            .iter()
            .flat_map(|m| m.params.iter().map(|p| p.key))
            .collect();
        for k in &seen {
            assert!(
                crate::report::SETTING_ORDER.contains(&k.as_str())
                    || method_params.contains(&k.as_str()),
                "`{k}` has no place in summary.csv's column order"
            );
        }
    }
}
