//! select: the VTAB-1k selection of one (dataset, method table) from its candidates' val200
//! metrics, written to `selection.json`. Reads only val200 eval entries, never test ones.
use super::{eval, read_json, write_json, Result};
use crate::graph::SelectNode;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const SELECTION: &str = "selection.json";
pub const RULE: &str =
    "highest mean val top-1; ties: fewer trainable parameters, then first in suite order";

/// One candidate as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Mean val200 top-1 over the search seeds.
    pub mean_top1: f64,
    pub trainable: i64,
}

/// The index of the winner: the highest mean val top-1; equal means go to fewer trainable
/// parameters, then to the first in suite order. None for no candidates.
pub fn choose(scores: &[Score]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, s) in scores.iter().enumerate() {
        let better = match best.map(|b| scores[b]) {
            None => true,
            Some(b) => {
                s.mean_top1 > b.mean_top1
                    || (s.mean_top1 == b.mean_top1 && s.trainable < b.trainable)
            }
        };
        if better {
            best = Some(i);
        }
    }
    best
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CandidateResult {
    pub config: String,
    pub settings: BTreeMap<String, String>,
    pub seeds: Vec<u64>,
    /// Val200 top-1 per search seed.
    pub val_top1: Vec<f64>,
    pub mean_val_top1: f64,
    pub trainable: i64,
    /// Why it lost without a score: a search run of it did not finish (it diverged, ran out
    /// of memory, failed otherwise, or an input of it did), e.g. "train shape lora lr=1 s0:
    /// non-finite loss in epoch 1, ...". Then `val_top1` holds the finished runs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// `selection.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Selection {
    pub dataset: String,
    pub method: String,
    pub rule: String,
    pub split: String,
    /// Every candidate, in suite order (`chosen` indexes them), failed ones included.
    pub candidates: Vec<CandidateResult>,
    pub chosen: usize,
}

/// Why search run `key` (an eval) of a candidate has no entry, from the failure records.
fn why_missing(store: &Store, key: &str) -> String {
    match crate::store::failure(store, key) {
        Some((label, f)) => format!("{label}: {}", f.short()),
        None => format!("eval {key} is not in the store (no failure recorded)"),
    }
}

pub fn run(s: &SelectNode, store: &Store, out: &Path) -> Result<Selection> {
    let mut candidates = Vec::new();
    for c in &s.candidates {
        let mut val = Vec::new();
        let mut trainable = 0;
        let mut failed = None;
        for key in &c.evals {
            let dir = store.entry("eval", key);
            if !store.is_complete("eval", key) {
                failed.get_or_insert_with(|| why_missing(store, key));
                continue;
            }
            let m: eval::Metrics = read_json(&dir.join(eval::METRICS))?;
            val.push(m.top1);
            trainable = m.train.counts.trainable;
        }
        let mean = val.iter().sum::<f64>() / val.len().max(1) as f64;
        candidates.push(CandidateResult {
            config: c.config.clone(),
            settings: c.hparams.clone(),
            seeds: c.seeds.clone(),
            val_top1: val,
            mean_val_top1: if failed.is_some() { 0.0 } else { mean },
            trainable,
            failed,
        });
    }
    // Only candidates whose every search run finished compete.
    let finished: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].failed.is_none())
        .collect();
    let scores: Vec<Score> = finished
        .iter()
        .map(|&i| Score {
            mean_top1: candidates[i].mean_val_top1,
            trainable: candidates[i].trainable,
        })
        .collect();
    let chosen = choose(&scores).map(|i| finished[i]).ok_or_else(|| {
        let why: Vec<String> = candidates
            .iter()
            .filter_map(|c| Some(format!("{}: {}", c.config, c.failed.as_ref()?)))
            .collect();
        super::NodeError::Failed(format!(
            "select {} {}: every candidate failed\n{}",
            s.dataset,
            s.family,
            why.join("\n")
        ))
    })?;
    let sel = Selection {
        dataset: s.dataset.clone(),
        method: s.family.clone(),
        rule: RULE.into(),
        split: "val200".into(),
        candidates,
        chosen,
    };
    write_json(&out.join(SELECTION), &sel)?;
    Ok(sel)
}

/// The stored selection of select node `key`, if it is done.
pub fn stored(store: &Store, key: &str) -> Option<Selection> {
    if !store.is_complete("select", key) {
        return None;
    }
    read_json(&store.entry("select", key).join(SELECTION)).ok()
}

/// The chosen candidate of select node `key`, if it is done.
pub fn chosen(store: &Store, key: &str) -> Option<usize> {
    stored(store, key).map(|s| s.chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(mean_top1: f64, trainable: i64) -> Score {
        Score {
            mean_top1,
            trainable,
        }
    }

    #[test]
    fn the_highest_mean_wins() {
        assert_eq!(choose(&[s(50.0, 10), s(71.5, 900), s(71.0, 1)]), Some(1));
    }

    #[test]
    fn a_tie_goes_to_fewer_trainable_parameters_then_to_the_first() {
        // 1 and 2 tie on val top-1; 2 trains fewer parameters.
        assert_eq!(choose(&[s(60.0, 5), s(70.0, 300), s(70.0, 200)]), Some(2));
        // 1 and 3 tie on both: the first in suite order.
        assert_eq!(
            choose(&[s(60.0, 5), s(70.0, 200), s(65.0, 1), s(70.0, 200)]),
            Some(1)
        );
        assert_eq!(choose(&[]), None);
    }
}
