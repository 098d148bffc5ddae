//! Which run `--run` names: by key or label in the suite's graphs, or by key in the store
//! alone (when the suite's data or weights are not on this machine). Reads only.
use super::{ExportError, Result};
use crate::exec::SPEC;
use crate::graph::{split_name, BuildNode, Graph, Node, TrainNode};
use crate::nodes::read_json;
use crate::store::Store;

/// A trained (or trainable) run: its train node, the build it starts from, its eval key.
#[derive(Clone)]
pub struct Found {
    pub train_key: String,
    /// None when found in the store alone and never evaluated.
    pub eval_key: Option<String>,
    pub train: TrainNode,
    pub build: BuildNode,
    /// A protocol's final run (train800val200 -> test).
    pub is_final: bool,
    /// A protocol's search run (train800 -> val200).
    pub is_search: bool,
    /// Keyed for the device kind of the first graph given to [`find`] (this machine's).
    pub here: bool,
}

impl Found {
    pub fn label(&self) -> String {
        Node::Train(self.train.clone()).label()
    }

    /// One line for lists: key, label, numerics and split.
    fn line(&self, store: &Store) -> String {
        let state = if store.is_complete(crate::node::TRAIN.name, &self.train_key) {
            "trained"
        } else {
            "not trained"
        };
        format!(
            "  {}  {}  ({}, {} -> {}, {state})",
            &self.train_key[..12.min(self.train_key.len())],
            self.label(),
            self.train.numerics,
            split_name(self.train.opt.train_split),
            split_name(self.train.opt.eval_split),
        )
    }

    /// The texts `--run` accepts for this run besides its keys: the labels `plan` prints
    /// (`train D CONFIG sN`, `eval D CONFIG sN`) and the report's dataset / method / config /
    /// seed columns (`D CONFIG sN`, `D METHOD sN`, and both without the seed). A protocol's
    /// search run is not named by its method: `D METHOD` means the final run.
    fn names(&self) -> Vec<String> {
        let t = &self.train;
        let (d, c, f, s) = (&t.dataset, &t.config, &t.family, t.seed);
        let mut names = vec![
            self.label(),
            format!("eval {d} {c} s{s}"),
            format!("{d} {c} s{s}"),
            format!("{d} {c}"),
        ];
        if !self.is_search {
            names.extend([format!("{d} {f} s{s}"), format!("{d} {f}")]);
        }
        names
    }
}

fn normalise(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A `--run` that is a key or key prefix (at least 6 hex digits).
fn as_key(spec: &str) -> Option<String> {
    let want = normalise(spec);
    (want.len() >= 6 && want.chars().all(|c| c.is_ascii_hexdigit())).then_some(want)
}

/// Every run (search and final) of the graphs, once per train key.
fn runs(graphs: &[&Graph]) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    for (i, g) in graphs.iter().enumerate() {
        let protocol = !g.selections.is_empty();
        let finals = g.finals.iter().map(|(_, k)| (k, true));
        let searches = g.runs.iter().map(|(_, k)| (k, false));
        for (eval_key, is_final) in searches.chain(finals) {
            let Some(Node::Eval(eval)) = g.node(eval_key) else {
                continue;
            };
            let Some(Node::Train(train)) = g.node(&eval.train) else {
                continue;
            };
            let Some(Node::Build(build)) = g.node(&train.build) else {
                continue;
            };
            if out.iter().any(|f| f.train_key == eval.train) {
                continue;
            }
            out.push(Found {
                train_key: eval.train.clone(),
                eval_key: Some(eval_key.clone()),
                train: train.clone(),
                build: build.clone(),
                is_final,
                is_search: protocol && !is_final,
                here: i == 0,
            });
        }
    }
    out
}

/// The one run `spec` names: a key (train or eval, or a prefix of at least 6 characters) or
/// a label. Among several matches a protocol's finals win over its search runs (even when the
/// final is not trained yet: that is an error, not a silent search run), then trained runs
/// over untrained ones (and when none is trained, those keyed for this machine's device kind,
/// the first graph); what is still ambiguous is an error listing the keys.
pub fn find(graphs: &[&Graph], store: &Store, spec: &str) -> Result<Found> {
    let all = runs(graphs);
    let want = normalise(spec);
    let key = as_key(spec);
    let mut hits: Vec<Found> = all
        .iter()
        .filter(|f| {
            key.as_ref().is_some_and(|k| {
                f.train_key.starts_with(k) || f.eval_key.as_ref().is_some_and(|e| e.starts_with(k))
            }) || f.names().contains(&want)
        })
        .cloned()
        .collect();
    if hits.is_empty() {
        return Err(no_match(&all, graphs, spec, &want));
    }
    if hits.iter().any(|f| f.is_final) {
        hits.retain(|f| f.is_final);
    }
    let trained = |f: &Found| store.is_complete(crate::node::TRAIN.name, &f.train_key);
    if hits.iter().any(trained) {
        hits.retain(trained);
    } else if hits.iter().any(|f| f.here) {
        hits.retain(|f| f.here);
    }
    match hits.len() {
        1 => {
            let f = hits.remove(0);
            if !trained(&f) {
                return Err(ExportError::NotTrained {
                    label: f.label(),
                    key: f.train_key,
                });
            }
            Ok(f)
        }
        _ => Err(ExportError::Ambiguous {
            spec: spec.to_string(),
            list: hits.iter().map(|f| f.line(store)).collect(),
        }),
    }
}

/// Nothing matched: a protocol's `D METHOD [sN]` whose final is not grown yet says so.
fn no_match(all: &[Found], graphs: &[&Graph], spec: &str, want: &str) -> ExportError {
    let pending = graphs.iter().flat_map(|g| {
        g.selections
            .iter()
            .filter(|(k, _)| !g.grown.contains(*k))
            .filter_map(|(k, _)| match g.node(k) {
                Some(Node::Select(s)) => Some((s.dataset.clone(), s.family.clone())),
                _ => None,
            })
    });
    for (dataset, family) in pending {
        let base = format!("{dataset} {family}");
        if want == base
            || want
                .strip_prefix(&base)
                .is_some_and(|s| s.starts_with(" s"))
        {
            return ExportError::FinalPending { dataset, family };
        }
    }
    let mut examples: Vec<String> = all.iter().take(3).map(Found::label).collect();
    examples.dedup();
    let hint = if examples.is_empty() {
        "the suite has no runs".to_string()
    } else {
        format!(
            "pass a key or a label as `vtab-orch plan` prints it, e.g. `{}`",
            examples.join("`, `")
        )
    };
    ExportError::NoMatch {
        spec: spec.to_string(),
        hint,
    }
}

/// The trained run whose train key starts with `spec`, read from the store alone (its
/// `spec.json` files): for exporting where the suite's data or weights are not present.
pub fn find_in_store(store: &Store, spec: &str) -> Result<Found> {
    let Some(key) = as_key(spec) else {
        return Err(ExportError::NoMatch {
            spec: spec.to_string(),
            hint: "without the suite's data and weights on this machine, only a train key (or a \
                   prefix of at least 6 hex digits; the `key` column of summary.csv is the eval \
                   key's train) can be looked up in the store"
                .into(),
        });
    };
    let all = store.entries();
    let keys = |kind: &'static str| all.iter().filter(move |(k, _)| k == kind).map(|(_, e)| e);
    let trained = |k: &str| store.is_complete(crate::node::TRAIN.name, k);
    // (eval key, its train key), each eval spec read once.
    let evals: Vec<(&String, String)> = keys("eval")
        .filter_map(
            |e| match read_json(&store.entry(crate::node::EVAL.name, e).join(SPEC)) {
                Ok(Node::Eval(ev)) => Some((e, ev.train)),
                _ => None,
            },
        )
        .collect();
    let mut trains: Vec<String> = keys("train")
        .filter(|k| k.starts_with(&key) && trained(k))
        .cloned()
        .collect();
    // An eval key names its train through its spec.
    if trains.is_empty() {
        trains = evals
            .iter()
            .filter(|(e, t)| e.starts_with(&key) && trained(t))
            .map(|(_, t)| t.clone())
            .collect();
    }
    let train_key = match trains.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(ExportError::NoMatch {
                spec: spec.to_string(),
                hint: format!(
                    "no trained run with that key in the store {}",
                    store.root.display()
                ),
            })
        }
        many => {
            return Err(ExportError::Ambiguous {
                spec: spec.to_string(),
                list: many.iter().map(|k| format!("  {k}")).collect(),
            })
        }
    };
    let Node::Train(train) =
        read_json(&store.entry(crate::node::TRAIN.name, &train_key).join(SPEC))?
    else {
        return Err(ExportError::NoMatch {
            spec: spec.to_string(),
            hint: format!("store entry train/{train_key} holds no train node"),
        });
    };
    let Node::Build(build) = read_json(
        &store
            .entry(crate::node::BUILD.name, &train.build)
            .join(SPEC),
    )?
    else {
        return Err(ExportError::NoMatch {
            spec: spec.to_string(),
            hint: format!("store entry build/{} holds no build node", train.build),
        });
    };
    let eval_key = evals
        .iter()
        .find(|(_, t)| *t == train_key)
        .map(|(e, _)| (*e).clone());
    Ok(Found {
        train_key,
        eval_key,
        train,
        build,
        is_final: false,
        is_search: false,
        here: true,
    })
}
