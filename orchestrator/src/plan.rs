//! `plan`: per node, whether it is cached, will run (and why: new, or what changed against
//! the closest stored node of the same identity), or is blocked by a missing input; with a
//! protocol, the final runs of selections not made yet are `pending` (no key yet).
use crate::datasets::SourceFingerprint;
use crate::graph::{Graph, Node};
use crate::hash::Fingerprint;
use crate::store::Store;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Cached,
    Run,
    Blocked,
    /// A final run of the protocol whose settings wait for its select node (key empty).
    Pending,
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
    // Stored entries by kind/identity: (key, fingerprint).
    let mut previous: BTreeMap<String, Vec<(String, Fingerprint)>> = BTreeMap::new();
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
                        .push((m.key, m.fingerprint));
                }
            }
            let fp = crate::identity::fingerprint(node);
            let closest = previous
                .get(&format!("{kind}/{}", node.identity()))
                .and_then(|cands| {
                    cands
                        .iter()
                        .map(|(old_key, old)| (old_key, fp.diff(old)))
                        .filter(|(_, d)| !d.is_empty())
                        .min_by_key(|(_, d)| d.len())
                });
            let (st, reason) = match closest {
                _ if store.entry(kind, &key).exists() => (
                    Status::Run,
                    "stored entry incomplete or corrupt".to_string(),
                ),
                Some((old_key, d)) => {
                    let d = name_changed_files(g, store, node, old_key, d);
                    (Status::Run, format!("changed: {}", d.join(", ")))
                }
                None => (Status::Run, "new".to_string()),
            };
            match checkpoint_epoch(&store.root.join("checkpoints").join(&key)) {
                Some(e) => (
                    st,
                    format!("{reason}; resumes after epoch {e} from its checkpoint"),
                ),
                None => (st, reason),
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
    out.extend(pending(g));
    out
}

/// The final runs of the select nodes that have not chosen yet: a train and an eval per
/// final seed, without keys (their settings are not known).
fn pending(g: &Graph) -> Vec<PlanEntry> {
    let mut out = Vec::new();
    let mut waiting: Vec<_> = g
        .selections
        .iter()
        .filter(|(k, _)| !g.grown.contains(*k))
        .collect();
    waiting.sort_by_key(|(_, f)| (&f.dataset, &f.family));
    for (select, f) in waiting {
        let reason = format!("waits for select {} {}", f.dataset, f.family);
        for seed in &f.final_seeds {
            for kind in ["train", "eval"] {
                out.push(PlanEntry {
                    key: String::new(),
                    kind: kind.into(),
                    label: format!("{kind} {} {} (selected) s{seed}", f.dataset, f.family),
                    status: Status::Pending,
                    reason: reason.clone(),
                    deps: vec![select.clone()],
                });
            }
        }
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
            Status::Pending => "pending",
        };
        let key = if e.key.is_empty() { "-" } else { &e.key[..12] };
        s += &format!("{status} {key:<12} {}{reason}\n", e.label);
    }
    let count = |st| entries.iter().filter(|e| e.status == st).count();
    s += &format!(
        "{} nodes: {} cached, {} to run, {} blocked",
        entries.len(),
        count(Status::Cached),
        count(Status::Run),
        count(Status::Blocked)
    );
    match count(Status::Pending) {
        0 => s += "\n",
        n => s += &format!(", {n} pending a selection\n"),
    }
    s
}

/// A changed dataset is named by its files, not by two digests: "files: 1 modified
/// (a/0.png)", from the stored prep's `source.json` and the graph's current fingerprint.
fn name_changed_files(
    g: &Graph,
    store: &Store,
    node: &Node,
    old_key: &str,
    diff: Vec<String>,
) -> Vec<String> {
    let Node::Prep(p) = node else { return diff };
    let old: Option<SourceFingerprint> = std::fs::read(
        store
            .entry("prep", old_key)
            .join(crate::nodes::prep::SOURCE),
    )
    .ok()
    .and_then(|b| serde_json::from_slice(&b).ok());
    let (Some(old), Some(now)) = (old, g.sources.get(&p.source_digest)) else {
        return diff;
    };
    diff.into_iter()
        .map(|d| {
            if d.starts_with("source_digest:") {
                now.changes_since(&old).to_string()
            } else {
                d
            }
        })
        .collect()
}

/// The last epoch saved in a training node's checkpoint (`<store>/checkpoints/<key>/`), read
/// from the safetensors header and its `meta.json` tensor without loading any weights.
pub fn checkpoint_epoch(dir: &Path) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dir.join("ckpt.safetensors")).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    let mut header = vec![0u8; usize::try_from(len).ok().filter(|l| *l < 1 << 26)?];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let offsets = header.get("meta.json")?.get("data_offsets")?.as_array()?;
    let (start, end) = (offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?);
    f.seek(SeekFrom::Start(8 + len + start)).ok()?;
    let mut meta = vec![0u8; usize::try_from(end.checked_sub(start)?).ok()?];
    f.read_exact(&mut meta).ok()?;
    let meta: serde_json::Value = serde_json::from_slice(&meta).ok()?;
    meta.get("epoch")?.as_u64()
}
