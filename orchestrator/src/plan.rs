//! `plan`: per node, whether it is cached, will run (and why: new, or what changed against
//! the closest stored node of the same identity), or is blocked by a missing input.
use crate::graph::Graph;
use crate::hash::Fingerprint;
use crate::store::Store;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Cached,
    Run,
    Blocked,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    pub key: String,
    pub kind: String,
    pub label: String,
    pub status: Status,
    pub reason: String,
    pub deps: Vec<String>,
}

/// The plan in topological order. `blocked` maps keys that cannot run (missing dataset root
/// or weights) to why; their dependants are blocked too.
pub fn plan(g: &Graph, store: &Store, blocked: &BTreeMap<String, String>) -> Vec<PlanEntry> {
    let mut previous: BTreeMap<String, Vec<Fingerprint>> = BTreeMap::new();
    let mut loaded: std::collections::BTreeSet<&'static str> = Default::default();
    let mut status: BTreeMap<String, Status> = BTreeMap::new();
    let mut out = Vec::new();
    for key in g.topo() {
        let node = g.node(&key).expect("topo keys are nodes");
        let deps = node.deps();
        let (st, reason) = if store.is_complete(node.kind(), &key) {
            (Status::Cached, String::new())
        } else if let Some(why) = blocked.get(&key) {
            (Status::Blocked, why.clone())
        } else if let Some(d) = deps
            .iter()
            .find(|d| status.get(*d) == Some(&Status::Blocked))
        {
            (
                Status::Blocked,
                format!(
                    "input {} is blocked",
                    g.node(d).map(|n| n.label()).unwrap_or_default()
                ),
            )
        } else {
            let kind = node.kind();
            if loaded.insert(kind) {
                for m in store.manifests(kind) {
                    previous
                        .entry(format!("{kind}/{}", m.identity))
                        .or_default()
                        .push(m.fingerprint);
                }
            }
            let fp = node.fingerprint();
            let closest = previous
                .get(&format!("{kind}/{}", node.identity()))
                .and_then(|cands| {
                    cands
                        .iter()
                        .map(|old| fp.diff(old))
                        .filter(|d| !d.is_empty())
                        .min_by_key(|d| d.len())
                });
            match closest {
                _ if store.entry(kind, &key).exists() => (
                    Status::Run,
                    "stored entry incomplete or corrupt".to_string(),
                ),
                Some(d) => (Status::Run, format!("changed: {}", d.join(", "))),
                None => (Status::Run, "new".to_string()),
            }
        };
        status.insert(key.clone(), st);
        out.push(PlanEntry {
            key,
            kind: node.kind().to_string(),
            label: node.label(),
            status: st,
            reason,
            deps,
        });
    }
    out
}

/// A readable table of the plan with a count line.
pub fn render(entries: &[PlanEntry]) -> String {
    let mut s = String::new();
    for e in entries {
        let reason = if e.reason.is_empty() {
            String::new()
        } else {
            format!("  ({})", e.reason)
        };
        let status = match e.status {
            Status::Cached => "cached ",
            Status::Run => "run    ",
            Status::Blocked => "blocked",
        };
        s += &format!("{status} {} {}{reason}\n", &e.key[..12], e.label);
    }
    let count = |st| entries.iter().filter(|e| e.status == st).count();
    s += &format!(
        "{} nodes: {} cached, {} to run, {} blocked\n",
        entries.len(),
        count(Status::Cached),
        count(Status::Run),
        count(Status::Blocked)
    );
    s
}
