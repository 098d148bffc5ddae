//! `[protocol]`: the VTAB-1k selection protocol. Parses the table, rejects the keys it
//! decides (splits, top-level seeds), and turns the expanded runs into search runs and
//! (dataset, method table) selections. Knows nothing of nodes or the store.
use super::diagnostic::Problem;
use super::parser::Parser;
use super::{Protocol, Run, Selection};
use crate::datasets::Split;
use serde_json::{Map, Value};

const KEYS: [&str; 3] = ["kind", "search_seeds", "final_seeds"];

impl Parser {
    /// `[protocol]` if present (None: every grid point is a final run).
    pub(super) fn protocol(&mut self, top: &Map<String, Value>) -> Option<Protocol> {
        let v = top.get("protocol")?;
        let m = self.table("protocol", v, &KEYS)?;
        match m.get("kind") {
            Some(k) => {
                self.one_of("protocol.kind", k, "protocol", &["vtab1k"])?;
            }
            None => {
                self.err("protocol.kind", "missing (the only protocol: \"vtab1k\")");
                return None;
            }
        }
        let seeds = |p: &mut Parser, k: &str| match m.get(k) {
            Some(s) => p.seeds(&format!("protocol.{k}"), s),
            None => vec![0],
        };
        let search_seeds = seeds(self, "search_seeds");
        let final_seeds = seeds(self, "final_seeds");
        if top.contains_key("seeds") {
            self.problem(
                "seeds",
                Problem::ContradictsProtocol(
                    "with a protocol, give protocol.search_seeds and protocol.final_seeds instead"
                        .into(),
                ),
            );
        }
        self.no_splits(top);
        Some(Protocol {
            search_seeds,
            final_seeds,
        })
    }

    /// `train_split` / `eval_split` anywhere: the protocol sets them (search: train800 ->
    /// val200, finals: train800val200 -> test).
    fn no_splits(&mut self, top: &Map<String, Value>) {
        let mut tables: Vec<(String, &Value)> = Vec::new();
        if let Some(d) = top.get("defaults") {
            tables.push(("defaults".into(), d));
        }
        for section in ["datasets", "methods"] {
            if let Some(Value::Object(m)) = top.get(section) {
                tables.extend(m.iter().map(|(n, v)| (format!("{section}.{n}"), v)));
            }
        }
        if let Some(Value::Array(list)) = top.get("override") {
            tables.extend(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| (format!("override[{i}]"), v)),
            );
        }
        for (key, v) in tables {
            let Some(m) = v.as_object() else { continue };
            for k in ["train_split", "eval_split"]
                .iter()
                .filter(|k| m.contains_key(**k))
            {
                self.problem(
                    &format!("{key}.{k}"),
                    Problem::ContradictsProtocol(
                        "the protocol sets the splits (search: train800 -> val200, finals: train800val200 -> test); remove the key".into(),
                    ),
                );
            }
        }
    }
}

/// Splits the expanded runs (final settings, one per final seed) into the search runs and
/// the selections: per (dataset, method table) in suite order, each distinct configuration
/// is a candidate, trained with each search seed on train800 and evaluated on val200. A
/// table with one configuration has nothing to choose: no search runs (its finals are known
/// from the start).
pub(super) fn search(runs: Vec<Run>, p: &Protocol) -> (Vec<Run>, Vec<Selection>) {
    let mut selections: Vec<Selection> = Vec::new();
    for r in runs {
        let at = selections
            .iter()
            .position(|s| s.dataset == r.dataset && s.family == r.family);
        let s = match at {
            Some(i) => &mut selections[i],
            None => {
                selections.push(Selection {
                    dataset: r.dataset.clone(),
                    family: r.family.clone(),
                    candidates: Vec::new(),
                    final_seeds: Vec::new(),
                    search_seeds: p.search_seeds.clone(),
                    search_runs: Vec::new(),
                });
                selections.last_mut().expect("pushed")
            }
        };
        if !s.final_seeds.contains(&r.seed) {
            s.final_seeds.push(r.seed);
        }
        if !s.candidates.iter().any(|c| c.config == r.config) {
            s.candidates.push(r);
        }
    }
    let mut search = Vec::new();
    for s in selections.iter_mut().filter(|s| s.candidates.len() > 1) {
        for c in &s.candidates {
            let mut at = Vec::new();
            for seed in &p.search_seeds {
                let mut r = c.clone();
                r.opt.train_split = Split::Train800;
                r.opt.eval_split = Split::Val200;
                r.seed = *seed;
                // A label only: search and final runs of one setting read apart.
                r.config = format!("{} (search)", c.config);
                at.push(search.len());
                search.push(r);
            }
            s.search_runs.push(at);
        }
    }
    (search, selections)
}
