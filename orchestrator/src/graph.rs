//! Expansion of a suite into the DAG of prep / build / train / eval nodes, keyed by their
//! fingerprints; shared upstream work appears once. Reads dataset fingerprints (file
//! metadata) but runs nothing.
use crate::datasets::{DatasetError, RealSource, SourceFingerprint, Split};
pub use crate::node::*;
use crate::numerics::{DeviceKind, Numerics};
use crate::suite::{Backbone, Run, Source, Suite, Weights};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::BTreeMap;

/// The sealed DAG: nodes in a petgraph graph (edges input -> consumer) plus a key index.
#[derive(Clone)]
pub struct Graph {
    pub graph: DiGraph<(String, Node), ()>,
    pub index: BTreeMap<String, NodeIndex>,
    /// Eval node keys per suite run, in suite order (with a protocol: the search runs).
    pub runs: Vec<(Run, String)>,
    /// With a protocol: what each select node (by key) grows into once it has chosen.
    pub selections: BTreeMap<String, Finals>,
    /// Final runs added so far (`grow`), with their eval keys, in the order added.
    pub finals: Vec<(Run, String)>,
    /// The select nodes whose finals are in the graph.
    pub grown: std::collections::BTreeSet<String>,
    /// The content fingerprints of the real datasets, by digest (`plan` names the files that
    /// changed since a stored prep).
    pub sources: BTreeMap<String, SourceFingerprint>,
}

impl Graph {
    pub fn node(&self, key: &str) -> Option<&Node> {
        self.index.get(key).map(|i| &self.graph[*i].1)
    }

    /// Keys in a topological order (inputs before consumers), stable across calls.
    pub fn topo(&self) -> Vec<String> {
        petgraph::algo::toposort(&self.graph, None)
            .expect("the expansion never makes cycles")
            .into_iter()
            .map(|i| self.graph[i].0.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// Train and eval nodes still to come: the finals of select nodes not grown yet.
    pub fn pending_finals(&self) -> usize {
        self.selections
            .iter()
            .filter(|(k, _)| !self.grown.contains(*k))
            .map(|(_, f)| 2 * f.final_seeds.len())
            .sum()
    }

    /// Adds the final runs of select node `select` for its candidate `chosen` (train on
    /// train800val200, evaluate on test, one per final seed), written out in full so their
    /// keys are those of hand-written runs of the same settings. Returns the keys new to the
    /// graph, inputs first (already known nodes, such as a shared prep, are left out).
    /// `plan`, `report` and the scheduler all grow the graph through this one function.
    pub fn add_finals(&mut self, select: &str, chosen: usize) -> Vec<String> {
        match self.selections.get(select).cloned() {
            Some(f) if self.grown.insert(select.to_string()) => self.add_finals_of(&f, chosen),
            _ => Vec::new(),
        }
    }

    fn add_finals_of(&mut self, f: &Finals, chosen: usize) -> Vec<String> {
        let Some(template) = f.candidates.get(chosen) else {
            return Vec::new();
        };
        let before = self.graph.node_count();
        for seed in &f.final_seeds {
            let mut run = template.clone();
            run.seed = *seed;
            let ctx = RunContext {
                source: &f.source,
                source_digest: &f.source_digest,
                build: &f.build,
                device: f.device,
            };
            let eval = self.add_run(&run, &ctx);
            self.finals.push((run, eval));
        }
        (before..self.graph.node_count())
            .map(|i| self.graph[NodeIndex::new(i)].0.clone())
            .collect()
    }

    /// Adds the finals of every select node `chosen` knows the choice of (from the store).
    /// Returns the keys new to the graph, inputs first.
    pub fn grow(&mut self, chosen: &dyn Fn(&str) -> Option<usize>) -> Vec<String> {
        let selects: Vec<String> = self.selections.keys().cloned().collect();
        let mut added = Vec::new();
        for s in selects {
            if let Some(c) = chosen(&s) {
                added.extend(self.add_finals(&s, c));
            }
        }
        added
    }

    /// The prep, train and eval nodes of one run; returns the eval key.
    fn add_run(&mut self, run: &Run, ctx: &RunContext<'_>) -> String {
        let train_prep = self.add_prep(run, ctx, run.opt.train_split);
        let eval_prep = self.add_prep(run, ctx, run.opt.eval_split);
        let numerics = Numerics::resolve(run.opt.precision, ctx.device);
        let train = self.add(Node::Train(TrainNode {
            dataset: run.dataset.clone(),
            config: run.config.clone(),
            family: run.family.clone(),
            method: run.method.clone(),
            opt: run.opt.clone(),
            seed: run.seed,
            numerics,
            prep: train_prep,
            build: ctx.build.to_string(),
        }));
        self.add(Node::Eval(EvalNode {
            dataset: run.dataset.clone(),
            config: run.config.clone(),
            family: run.family.clone(),
            seed: run.seed,
            hparams: run.hparams.clone(),
            numerics,
            eval_batch_size: run.opt.eval_batch_size,
            train,
            prep: eval_prep,
            build: ctx.build.to_string(),
        }))
    }

    /// The prep of `split` for `run`; train800 and val200 are views of the train800val200
    /// prep (added too), so the 1000 training images are decoded once.
    fn add_prep(&mut self, run: &Run, ctx: &RunContext<'_>, split: Split) -> String {
        let prep = |split: Split, view_of: Option<String>| {
            Node::Prep(PrepNode {
                dataset: run.dataset.clone(),
                source: ctx.source.clone(),
                source_digest: ctx.source_digest.to_string(),
                split,
                img_size: run.opt.img_size,
                sample_seed: run.opt.sample_seed,
                view_of,
            })
        };
        match split {
            Split::Train800 | Split::Val200 => {
                let whole = self.add(prep(Split::Train800val200, None));
                self.add(prep(split, Some(whole)))
            }
            Split::Train800val200 | Split::Test => self.add(prep(split, None)),
        }
    }

    fn add(&mut self, node: Node) -> String {
        let key = crate::identity::fingerprint(&node).key();
        if !self.index.contains_key(&key) {
            let deps = node.deps();
            let i = self.graph.add_node((key.clone(), node));
            self.index.insert(key.clone(), i);
            for d in deps {
                let j = self.index[&d];
                self.graph.add_edge(j, i, ());
            }
        }
        key
    }
}

/// What a select node grows into: its candidates with the final splits, the final seeds,
/// and what their nodes need from the suite.
#[derive(Debug, Clone)]
pub struct Finals {
    pub dataset: String,
    pub family: String,
    pub candidates: Vec<Run>,
    pub final_seeds: Vec<u64>,
    pub source: Source,
    pub source_digest: String,
    pub build: String,
    pub device: DeviceKind,
}

/// What a run's nodes need besides the run: its dataset's source and the backbone.
struct RunContext<'a> {
    source: &'a Source,
    source_digest: &'a str,
    build: &'a str,
    device: DeviceKind,
}

/// How `expand` reads its inputs' identities: weights digests and dataset fingerprints cost
/// a full read, so the caller's functions cache them per (path, size, mtime).
pub struct Digests<'a> {
    pub weights: &'a dyn Fn(&std::path::Path) -> Result<String, String>,
    pub source: &'a mut dyn FnMut(&RealSource) -> Result<SourceFingerprint, DatasetError>,
}

/// Expands `suite` for device nodes computing on `device` (every `precision = "auto"` is
/// resolved for it).
pub fn expand(
    suite: &Suite,
    device: DeviceKind,
    digests: Digests<'_>,
) -> Result<Graph, Vec<String>> {
    let mut errors = Vec::new();
    let mut g = Graph {
        graph: DiGraph::new(),
        index: BTreeMap::new(),
        runs: Vec::new(),
        selections: BTreeMap::new(),
        finals: Vec::new(),
        grown: Default::default(),
        sources: BTreeMap::new(),
    };
    let build = build_node(&suite.backbone, device, digests.weights).map_err(|e| vec![e])?;
    let build_key = g.add(Node::Build(build));
    // Dataset name -> source digest.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (name, d) in &suite.datasets {
        if let Source::Real(r) = &d.source {
            match (digests.source)(r) {
                Ok(fp) => {
                    names.insert(name.clone(), fp.digest.clone());
                    g.sources.insert(fp.digest.clone(), fp);
                }
                Err(e) => errors.push(format!("`datasets.{name}`: {e}")),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let ctx = |dataset: &str| {
        (
            suite.datasets[dataset].source.clone(),
            names.get(dataset).cloned().unwrap_or_default(),
        )
    };
    for run in &suite.runs {
        let (source, source_digest) = ctx(&run.dataset);
        let rc = RunContext {
            source: &source,
            source_digest: &source_digest,
            build: &build_key,
            device,
        };
        let eval = g.add_run(run, &rc);
        g.runs.push((run.clone(), eval));
    }
    for sel in &suite.selections {
        let (source, source_digest) = ctx(&sel.dataset);
        let candidates = sel
            .candidates
            .iter()
            .zip(&sel.search_runs)
            .map(|(c, at)| Candidate {
                config: c.config.clone(),
                hparams: c.hparams.clone(),
                seeds: sel.search_seeds.clone(),
                evals: at.iter().map(|i| g.runs[*i].1.clone()).collect(),
            })
            .collect();
        let finals = Finals {
            dataset: sel.dataset.clone(),
            family: sel.family.clone(),
            candidates: sel.candidates.clone(),
            final_seeds: sel.final_seeds.clone(),
            source,
            source_digest,
            build: build_key.clone(),
            device,
        };
        if sel.candidates.len() == 1 {
            // Nothing to choose: the finals are known now.
            g.add_finals_of(&finals, 0);
            continue;
        }
        let key = g.add(Node::Select(SelectNode {
            dataset: sel.dataset.clone(),
            family: sel.family.clone(),
            candidates,
        }));
        g.selections.insert(key, finals);
    }
    Ok(g)
}

fn build_node(
    b: &Backbone,
    device: DeviceKind,
    weights_digest: &dyn Fn(&std::path::Path) -> Result<String, String>,
) -> Result<BuildNode, String> {
    let weights = match &b.weights {
        Weights::File(p) => BuildWeights::File {
            path: p.clone(),
            blake3: weights_digest(p)?,
        },
        Weights::Pretrain(r) => BuildWeights::Pretrain {
            recipe: r.clone(),
            img_size: b.arch.img_size,
            numerics: Numerics::resolve(kernels::train::Precision::Auto, device),
        },
    };
    Ok(BuildNode {
        arch: b.arch.clone(),
        mean: b.mean,
        std: b.std,
        weights,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::{Format, RealSource};

    /// A child process receives its node as JSON: every kind must survive the round trip
    /// (a real source once failed with "duplicate field `format`").
    #[test]
    fn prep_specs_roundtrip_through_json() {
        let real = Source::Real(RealSource {
            format: Format::Imagefolder,
            root: "/data/x".into(),
            dtd_split: None,
            train_csv: None,
            test_csv: None,
        });
        let synth = Source::Synthetic {
            task: crate::datasets::synthetic::Task::Count,
            test_images: 9,
        };
        for source in [real, synth] {
            let node = Node::Prep(PrepNode {
                dataset: "d".into(),
                source,
                source_digest: "abc".into(),
                split: Split::Test,
                img_size: 32,
                sample_seed: 0,
                view_of: None,
            });
            let back: Node = serde_json::from_str(&serde_json::to_string(&node).unwrap()).unwrap();
            assert_eq!(back, node);
            assert_eq!(
                crate::identity::fingerprint(&back).key(),
                crate::identity::fingerprint(&node).key()
            );
        }
    }
}
