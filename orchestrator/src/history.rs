//! Owns the store's history of wall times and what makes two nodes comparable ([`Work`]): a
//! node's time is the median seconds per unit of its class times its units. Must not write.
use crate::datasets::Split;
use crate::graph::{Graph, Node};
use crate::node::{BuildWeights, PrepNode};
use crate::store::Store;
use crate::suite::Source;
use std::collections::BTreeMap;

/// What a node's time scales with: its `class` (what makes two nodes comparable) and its
/// size in `units` of that class.
///
/// | kind | class | units |
/// |---|---|---|
/// | train | method table, method, backbone architecture, image size, numerics | epochs x training examples |
/// | eval | method table, backbone architecture, image size, numerics | examples evaluated |
/// | prep | source (synthetic or the real format), decoded or a view, image size | examples |
/// | build (pretraining) | backbone architecture, image size, numerics | epochs x images |
/// | build (weights file) | backbone architecture | 1 |
/// | select | - | 1 |
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub class: String,
    pub units: f64,
}

/// Per class, seconds per unit of every stored node of the class; per kind, wall times.
#[derive(Debug, Default)]
pub struct History {
    per_unit: BTreeMap<String, Vec<f64>>,
    per_kind: BTreeMap<String, Vec<f64>>,
    /// The specs of the stored nodes, by key (the inputs of a node being described).
    specs: BTreeMap<String, Node>,
    /// Examples of each stored prep entry (lines of its `members.txt`), by key.
    examples: BTreeMap<String, u64>,
    /// The same, by identity (`dataset split`), from the newest entry: the size of a real
    /// split whose files changed since.
    examples_by_identity: BTreeMap<String, u64>,
}

impl History {
    /// Reads every stored entry of every kind (manifest, `spec.json`, a prep's member list).
    /// Entries without a readable spec count only towards their kind's median.
    pub fn read(store: &Store) -> History {
        let mut h = History::default();
        let mut stored = Vec::new();
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        for kind in crate::node::KINDS {
            for m in store.manifests(kind.name) {
                if !m.wall_s.is_finite() || m.wall_s < 0.0 {
                    continue;
                }
                h.per_kind
                    .entry(kind.name.to_string())
                    .or_default()
                    .push(m.wall_s);
                let dir = store.entry(kind.name, &m.key);
                if kind.name == crate::node::PREP.name {
                    if let Some(n) = count_members(&dir) {
                        h.examples.insert(m.key.clone(), n);
                        if newest
                            .get(&m.identity)
                            .is_none_or(|t| *t <= m.finished_unix)
                        {
                            newest.insert(m.identity.clone(), m.finished_unix);
                            h.examples_by_identity.insert(m.identity.clone(), n);
                        }
                    }
                }
                let spec = std::fs::read(dir.join(crate::exec::SPEC))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Node>(&b).ok());
                if let Some(node) = spec {
                    h.specs.insert(m.key.clone(), node);
                    stored.push((m.key, m.wall_s));
                }
            }
        }
        let rates: Vec<(String, f64)> = stored
            .into_iter()
            .filter_map(|(key, wall_s)| {
                let w = h.work(&key, &h.specs[&key], None)?;
                (w.units > 0.0).then(|| (w.class, wall_s / w.units))
            })
            .collect();
        for (class, rate) in rates {
            h.per_unit.entry(class).or_default().push(rate);
        }
        h
    }

    /// How many stored nodes there are of `class`.
    pub fn comparable(&self, class: &str) -> usize {
        self.per_unit.get(class).map_or(0, Vec::len)
    }

    /// The work of node `key` of `g` (its inputs from `g`, else from the store); None when its
    /// size cannot be known before it runs (a real test split never prepared).
    pub fn work_of(&self, g: &Graph, key: &str) -> Option<Work> {
        self.work(key, g.node(key)?, Some(g))
    }

    /// Seconds node `key` of `g` should take from its comparable history: the median seconds
    /// per unit of its class times its units; None without comparable history.
    pub fn from_comparable(&self, g: &Graph, key: &str) -> Option<f64> {
        let w = self.work_of(g, key)?;
        Some(median(self.per_unit.get(&w.class)?)? * w.units)
    }

    /// The median wall time of the store's nodes of `kind`, whatever their size.
    pub fn kind_median(&self, kind: &str) -> Option<f64> {
        median(self.per_kind.get(kind)?)
    }

    /// What the scheduler expects node `key` to take: from comparable history, else the median
    /// of its kind in the store, else the kind's default.
    pub fn expected_s(&self, g: &Graph, key: &str) -> f64 {
        let Some(node) = g.node(key) else {
            return crate::node::TRAIN.default_expected_s;
        };
        let kind = node.kind_of();
        self.from_comparable(g, key)
            .or_else(|| self.kind_median(kind.name))
            .unwrap_or(kind.default_expected_s)
    }

    /// A node by key: from `g` (a planned node), else a stored spec.
    fn node<'a>(&'a self, g: Option<&'a Graph>, key: &str) -> Option<&'a Node> {
        g.and_then(|g| g.node(key)).or_else(|| self.specs.get(key))
    }

    fn work(&self, key: &str, node: &Node, g: Option<&Graph>) -> Option<Work> {
        let arch = |build: &str| match self.node(g, build)? {
            Node::Build(b) => serde_json::to_string(&b.arch).ok(),
            _ => None,
        };
        let prep = |key: &str| match self.node(g, key)? {
            Node::Prep(p) => Some(p),
            _ => None,
        };
        let (class, units) = match node {
            Node::Prep(p) => (
                format!(
                    "prep {} {} {}px",
                    source_class(&p.source),
                    if p.view_of.is_some() {
                        "view"
                    } else {
                        "decode"
                    },
                    p.img_size
                ),
                self.examples(key, p)? as f64,
            ),
            Node::Build(b) => match &b.weights {
                BuildWeights::Pretrain {
                    recipe,
                    img_size,
                    numerics,
                } => (
                    format!(
                        "build pretrain {} {img_size}px {numerics}",
                        arch_json(&b.arch)?
                    ),
                    (recipe.epochs * recipe.images) as f64,
                ),
                BuildWeights::File { .. } => (format!("build file {}", arch_json(&b.arch)?), 1.0),
            },
            Node::Train(t) => (
                format!(
                    "train {} {} {} {}px {}",
                    t.family,
                    t.method.name(),
                    arch(&t.build)?,
                    t.opt.img_size,
                    t.numerics
                ),
                (t.opt.epochs * self.examples(&t.prep, prep(&t.prep)?)?) as f64,
            ),
            Node::Eval(e) => {
                let p = prep(&e.prep)?;
                (
                    format!(
                        "eval {} {} {}px {}",
                        e.family,
                        arch(&e.build)?,
                        p.img_size,
                        e.numerics
                    ),
                    self.examples(&e.prep, p)? as f64,
                )
            }
            Node::Select(_) => ("select".to_string(), 1.0),
        };
        Some(Work { class, units })
    }

    /// Examples of prep node `key`: counted in its stored entry, else known from the suite (a
    /// synthetic split; a real training split of a dataset prepared before, else its VTAB-1k
    /// size), else unknown (a real test split never prepared).
    fn examples(&self, key: &str, p: &PrepNode) -> Option<u64> {
        if let Some(n) = self.examples.get(key) {
            return Some(*n);
        }
        let nominal = match p.split {
            Split::Train800 => Some(800),
            Split::Val200 => Some(200),
            Split::Train800val200 => Some(1000),
            Split::Test => None,
        };
        match &p.source {
            Source::Synthetic { test_images, .. } => nominal.or(Some(*test_images)),
            Source::Real(_) => {
                let identity = Node::Prep(p.clone()).identity();
                self.examples_by_identity
                    .get(&identity)
                    .copied()
                    .or(nominal)
            }
        }
    }
}

fn arch_json(arch: &kernels::VitConfig) -> Option<String> {
    serde_json::to_string(arch).ok()
}

fn source_class(s: &Source) -> String {
    match s {
        Source::Synthetic { .. } => "synthetic".into(),
        Source::Real(r) => format!("{:?}", r.format).to_lowercase(),
    }
}

/// Lines of a prep entry's member list (one example each).
fn count_members(dir: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(crate::nodes::prep::MEMBERS)).ok()?;
    Some(text.lines().filter(|l| !l.is_empty()).count() as u64)
}

/// The median of `v` (the mean of the middle two for an even count); None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::numerics::DeviceKind;
    use crate::store::Manifest;

    /// A small synthetic suite (linear and LoRA on one task, no protocol), with `extra` TOML
    /// lines appended and `sets` applied (as `--set`), expanded for the CPU.
    pub(crate) fn graph(extra: &str, sets: &[&str]) -> Graph {
        let text = format!(
            "name = \"h\"\n[defaults]\nimg_size = 16\nepochs = 2\nbatch_size = 4\nwarmup_epochs = 0\n\
             [backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 16\npatch_size = 8\n\
             embed_dim = 24\ndepth = 1\nnum_heads = 2\n\
             [backbone.pretrain]\nimages = 50\nepochs = 1\n\
             [datasets.shape]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = 100\n\
             [methods.linear]\n[methods.lora]\nr = 4\ntargets = \"q,v\"\n{extra}"
        );
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let suite =
            crate::suite::parse_str(&text, std::path::Path::new("h.toml"), &sets, Vec::new())
                .expect("the test suite parses");
        let mut no_real = |_: &crate::datasets::RealSource| unreachable!("synthetic only");
        let digests = crate::graph::Digests {
            weights: &|_| Err("no weights file".into()),
            source: &mut no_real,
        };
        crate::graph::expand(&suite, DeviceKind::Cpu, digests).expect("the test suite expands")
    }

    /// Commits every node of `g` into `store` as if it ran for `wall(node)` seconds: spec,
    /// and for a prep its member list (as many lines as its split has examples).
    pub(crate) fn commit_all(store: &Store, g: &Graph, wall: &dyn Fn(&Node) -> f64) {
        for key in g.topo() {
            let node = g.node(&key).unwrap();
            let staged = store.stage(&key).unwrap();
            std::fs::write(
                staged.join(crate::exec::SPEC),
                serde_json::to_string(node).unwrap(),
            )
            .unwrap();
            if let Node::Prep(p) = node {
                let n = History::default().examples(&key, p).unwrap();
                let members: String = (0..n).map(|i| format!("{i}\n")).collect();
                std::fs::write(staged.join(crate::nodes::prep::MEMBERS), members).unwrap();
            }
            let m = Manifest {
                kind: node.kind().into(),
                key: key.clone(),
                label: node.label(),
                identity: node.identity(),
                fingerprint: crate::identity::fingerprint(node),
                artifacts: Default::default(),
                wall_s: wall(node),
                host: "test".into(),
                code_version: "0".into(),
                finished_unix: 0,
                run: None,
            };
            store.commit(&staged, m).unwrap();
        }
    }

    /// The history of the small suite at 2 epochs and 100 test images: prep 0.01 s per image,
    /// pretraining 10 s, a linear probe 4 s and LoRA 8 s (2 epochs x 1000 examples), evals
    /// 1 s (100 examples).
    pub(crate) fn small_run(dir: &std::path::Path) -> Store {
        let _ = std::fs::remove_dir_all(dir);
        let store = Store::open(dir).unwrap();
        commit_all(&store, &graph("", &[]), &|n| match n {
            Node::Prep(p) if p.split == Split::Test => 1.0,
            Node::Prep(_) => 10.0,
            Node::Build(_) => 10.0,
            Node::Train(t) if t.family == "linear" => 4.0,
            Node::Train(_) => 8.0,
            _ => 1.0,
        });
        store
    }

    fn key_of(g: &Graph, label: &str) -> String {
        g.topo()
            .into_iter()
            .find(|k| g.node(k).unwrap().label() == label)
            .unwrap_or_else(|| panic!("no node `{label}`"))
    }

    /// A bigger variant (3 epochs, 200 test images) is priced from the small run's per-unit
    /// times: epochs x examples for train, examples for eval and prep; a method the store has
    /// never run has no comparable history (the scheduler then takes its kind's median).
    #[test]
    fn history_scales_comparable_nodes_by_their_size() {
        let dir = std::env::temp_dir().join(format!("vtab-history-{}", std::process::id()));
        let store = small_run(&dir);
        let h = History::read(&store);
        let g = graph(
            "[methods.bitfit]\n",
            &["defaults.epochs=3", "datasets.shape.test_images=200"],
        );
        let s = |label: &str| h.from_comparable(&g, &key_of(&g, label));
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(
            close(s("train shape linear s0"), 6.0),
            "{:?}",
            s("train shape linear s0")
        );
        assert!(close(s("train shape lora r=4 a=4 q,v s0"), 12.0));
        assert!(close(s("eval shape linear s0"), 2.0));
        assert!(close(s("prep shape test 16px"), 2.0));
        assert!(close(s("build pretrain source 1ep"), 10.0));
        assert_eq!(s("train shape bitfit s0"), None);
        assert_eq!(s("eval shape bitfit s0"), None);
        let bitfit = key_of(&g, "train shape bitfit s0");
        assert_eq!(
            h.expected_s(&g, &bitfit),
            6.0,
            "median of the stored trains"
        );
        assert_eq!(h.comparable(&h.work_of(&g, &bitfit).unwrap().class), 0);
        std::fs::remove_dir_all(&dir).ok();
    }
}
