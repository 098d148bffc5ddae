//! A suite's graph as the scheduler sees it ([`sched::Work`]): node kinds, the store's entries,
//! the spec and log files of `vtab-orch exec`, and the protocol stage's growth (a select node
//! done adds the final runs it chose). The scheduler itself knows none of these.
use crate::graph::{Graph, Node};
use crate::sched::state::NodeSpec;
use crate::sched::{self, Event, Launcher, Options, Summary};
use crate::store::Store;
use std::path::PathBuf;

pub struct GraphWork<'a> {
    /// The run's own copy: it grows by the finals of each select node done.
    g: Graph,
    store: &'a Store,
    /// The store's history of wall times, read at the first question.
    history: std::cell::OnceCell<crate::history::History>,
}

impl<'a> GraphWork<'a> {
    pub fn new(g: &Graph, store: &'a Store) -> GraphWork<'a> {
        GraphWork {
            g: g.clone(),
            store,
            history: Default::default(),
        }
    }

    fn node(&self, key: &str) -> &Node {
        self.g.node(key).expect("a node of the graph")
    }
}

impl sched::Work for GraphWork<'_> {
    fn order(&self) -> Vec<String> {
        self.g.topo()
    }

    fn spec(&self, key: &str) -> NodeSpec {
        let node = self.node(key);
        NodeSpec {
            key: key.to_string(),
            deps: node.deps(),
            resources: node.resources(),
            // A select chooses among the candidates that finished.
            tolerant: matches!(node, Node::Select(_)),
        }
    }

    fn label(&self, key: &str) -> String {
        self.g.node(key).map(|n| n.label()).unwrap_or_default()
    }

    fn kind(&self, key: &str) -> &'static str {
        self.node(key).kind()
    }

    fn is_done(&self, key: &str) -> bool {
        self.store.is_complete(self.node(key).kind(), key)
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.store.entry(self.node(key).kind(), key)
    }

    fn prepare(&self, key: &str) -> Result<PathBuf, String> {
        std::fs::create_dir_all(self.store.root.join("logs"))
            .and_then(|_| crate::exec::write_spec(self.store, key, self.node(key)))
            .map_err(|e| format!("writing the spec of {key}: {e}"))
    }

    fn log(&self, key: &str) -> PathBuf {
        self.store.root.join("logs").join(format!("{key}.log"))
    }

    fn ended(&self, key: &str) {
        let _ = std::fs::remove_file(crate::exec::spec_path(self.store, key));
        // An earlier run's failure record of it is history now (a new one follows if it
        // failed again).
        let _ = std::fs::remove_file(crate::store::failure_path(self.store, key));
    }

    fn failed(&self, key: &str, why: &str, by: Option<&str>) {
        let f = crate::store::Failure {
            label: self.label(key),
            reason: why.trim().to_string(),
            blocked_by: by.map(str::to_string),
        };
        if let Err(e) = crate::store::write_failure(self.store, key, &f) {
            eprintln!("warning: recording the failure of {key}: {e}");
        }
    }

    /// From the store's nodes comparable with it, scaled to its size; else the median wall
    /// time of the store's nodes of its kind; else the kind's default (`History::expected_s`).
    fn expected_s(&self, key: &str) -> f64 {
        self.history
            .get_or_init(|| crate::history::History::read(self.store))
            .expected_s(&self.g, key)
    }

    fn made_by(&self, key: &str) -> Option<(Option<String>, f64)> {
        let m = self.store.manifest(self.node(key).kind(), key)?;
        Some((m.run, m.wall_s))
    }

    fn grow(&mut self, key: &str, ran: bool) -> Vec<String> {
        if ran && matches!(self.g.node(key), Some(Node::Select(_))) {
            crate::test_hooks::abort_after_select();
        }
        if !self.g.selections.contains_key(key) {
            return Vec::new();
        }
        match crate::nodes::select::chosen(self.store, key) {
            Some(chosen) => self.g.add_finals(key, chosen),
            None => Vec::new(),
        }
    }
}

/// Runs every node of `g` not in the store yet through `launcher` ([`sched::run`]). With a
/// protocol the graph grows as select nodes finish (or are found done): their final runs
/// join the run.
pub fn run(
    g: &Graph,
    store: &Store,
    launcher: &mut dyn Launcher,
    opts: Options,
    on_event: &mut dyn FnMut(&Event),
) -> Summary {
    let mut work = GraphWork::new(g, store);
    sched::run(&mut work, store, launcher, opts, on_event)
}
