//! `vtab-orch exec <key>`: runs one node inside a child process — reads its spec, runs the
//! executor into a staging directory, commits to the store. The scheduler spawns it; a
//! cluster back-end could too.
use crate::graph::Node;
use crate::nodes::{self, NodeError};
use crate::store::{host_name, Manifest, Store};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const SPEC: &str = "spec.json";

/// Where this scheduler process leaves the spec of a node it is about to run (one file
/// per run: two runs on one store must not remove each other's specs).
pub fn spec_path(store: &Store, key: &str) -> PathBuf {
    store
        .root
        .join("specs")
        .join(format!("{key}.{}.json", std::process::id()))
}

/// Writes the spec for `vtab-orch exec <key> --spec PATH`; returns the path.
pub fn write_spec(store: &Store, key: &str, node: &Node) -> std::io::Result<PathBuf> {
    let p = spec_path(store, key);
    std::fs::create_dir_all(p.parent().expect("specs dir"))?;
    std::fs::write(
        &p,
        serde_json::to_string_pretty(node).expect("node serialises"),
    )?;
    Ok(p)
}

fn read_node(path: &Path) -> nodes::Result<Node> {
    nodes::read_json(path)
}

/// The spec of a finished input node (kept inside its store entry).
fn input(store: &Store, kind: &str, key: &str) -> nodes::Result<(Node, PathBuf)> {
    let dir = store.entry(kind, key);
    if !store.is_complete(kind, key) {
        return Err(NodeError::Failed(format!(
            "input {kind} {key} is not in the store (run its node first)"
        )));
    }
    Ok((read_node(&dir.join(SPEC))?, dir))
}

/// Where a training node keeps its epoch checkpoints: outside the store entry (which
/// appears only when finished), keyed by the node key, removed after the commit.
pub fn checkpoints(store: &Store, key: &str) -> PathBuf {
    store.root.join("checkpoints").join(key)
}

/// What `exec` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Ran the node and committed it.
    Done,
    /// Another process holds the node's lease (it is running the node now).
    Leased,
    /// The node was already in the store (finished by another run meanwhile).
    AlreadyDone,
}

/// Runs a node under its lease (`lease.rs`: an owner record with heartbeats, and a flock
/// between processes of one host), so two runs never execute a node at once, even on
/// different hosts of a shared store, and a killed holder's lease is taken over. On failure the staging directory is removed (a
/// full disk must not stay full of a failed node's partial outputs).
pub fn exec(
    store_root: &Path,
    key: &str,
    spec: &Path,
    cpu: bool,
    run: Option<&str>,
) -> nodes::Result<Outcome> {
    exec_since(store_root, key, spec, cpu, run, process_started())
}

/// [`exec`] for a node whose wall time counts from `t0` (a warm worker runs several nodes
/// in one process: each counts from when it was handed over).
pub fn exec_since(
    store_root: &Path,
    key: &str,
    spec: &Path,
    cpu: bool,
    run: Option<&str>,
    t0: Instant,
) -> nodes::Result<Outcome> {
    crate::nodes::checkpoint::catch_stop_signals();
    let store = Store::open(store_root)?;
    // A job that Slurm started again after it had finished (requeued on a node failure) may
    // find its spec removed by the driver: its entry is what counts.
    if !spec.exists()
        && crate::store::KINDS
            .iter()
            .any(|kind| store.is_complete(kind, key))
    {
        return Ok(Outcome::AlreadyDone);
    }
    let node = read_node(spec)?;
    let timing = crate::lease::Timing::from_env().map_err(NodeError::Failed)?;
    let done = || store.is_complete(node.kind(), key);
    let mut lease = match crate::lease::acquire(&store.root, key, timing, &done) {
        Ok(crate::lease::Acquired::Held(l)) => l,
        Ok(crate::lease::Acquired::Busy(_)) => return Ok(Outcome::Leased),
        // Committed by another process moments ago; its entry may not show here yet.
        Ok(crate::lease::Acquired::Committed(_)) => return Ok(Outcome::AlreadyDone),
        Err(e) => {
            return Err(NodeError::Io {
                path: crate::lease::owner_path(&store.root, key),
                source: e,
            })
        }
    };
    if store.is_complete(node.kind(), key) {
        return Ok(Outcome::AlreadyDone);
    }
    // What the launcher gave it, for the run record (a Slurm job's GPUs, a local slot's).
    nodes::progress(serde_json::json!({
        "started": true,
        "host": host_name(),
        "cuda_visible_devices": std::env::var("CUDA_VISIBLE_DEVICES").ok(),
    }));
    let staged = store.stage(key)?;
    let result = exec_into(&store, key, node, cpu, &staged, t0).and_then(|mut manifest| {
        manifest.run = run.map(str::to_string);
        // Fencing: a process whose lease was taken over while it stalled must not commit.
        lease.check().map_err(NodeError::Failed)?;
        store.commit(&staged, manifest)?;
        lease.committed();
        let _ = std::fs::remove_dir_all(checkpoints(&store, key));
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staged);
    }
    result.map(|_| Outcome::Done)
}

/// Runs `node` into `staged` and returns its manifest, not yet committed.
fn exec_into(
    store: &Store,
    key: &str,
    node: Node,
    cpu: bool,
    staged: &Path,
    t0: Instant,
) -> nodes::Result<Manifest> {
    let store = store.clone();
    let fp = crate::identity::fingerprint(&node);
    if fp.key() != key {
        return Err(NodeError::Failed(format!(
            "spec for {key} hashes to {}: stale spec file",
            fp.key()
        )));
    }
    // Prep and checkpoint builds are CPU work; device nodes compute where their key says.
    let device = match node.numerics() {
        Some(n) => nodes::train::device(n, cpu)?,
        None => tch::Device::Cpu,
    };
    match &node {
        Node::Prep(p) => match &p.view_of {
            Some(whole) => {
                let (_, whole_dir) = input(&store, crate::node::PREP.name, whole)?;
                nodes::prep::run_view(p, &whole_dir, staged)?;
            }
            None => {
                nodes::prep::run(p, staged, &crate::load::file_digests(&store.root))?;
            }
        },
        Node::Build(b) => nodes::build::run(b, staged, device)?,
        Node::Train(t) => {
            let (_, prep_dir) = input(&store, crate::node::PREP.name, &t.prep)?;
            let (bn, build_dir) = input(&store, crate::node::BUILD.name, &t.build)?;
            let Node::Build(b) = bn else {
                return Err(NodeError::Failed("build input is not a build node".into()));
            };
            nodes::train::run(
                t,
                &b,
                &prep_dir,
                &build_dir,
                staged,
                &checkpoints(&store, key),
                device,
            )?;
        }
        Node::Select(s) => {
            nodes::select::run(s, &store, staged)?;
        }
        Node::Eval(e) => {
            let (tn, train_dir) = input(&store, crate::node::TRAIN.name, &e.train)?;
            let (_, prep_dir) = input(&store, crate::node::PREP.name, &e.prep)?;
            let (bn, build_dir) = input(&store, crate::node::BUILD.name, &e.build)?;
            let (Node::Train(t), Node::Build(b)) = (tn, bn) else {
                return Err(NodeError::Failed("eval inputs have the wrong kinds".into()));
            };
            nodes::eval::run(
                e,
                &t,
                &b,
                [&train_dir, &prep_dir, &build_dir],
                staged,
                device,
            )?;
        }
    }
    std::fs::write(
        staged.join(SPEC),
        serde_json::to_string_pretty(&node).expect("node serialises"),
    )
    .map_err(nodes::io_err(staged))?;
    let manifest = Manifest {
        kind: node.kind().to_string(),
        key: key.to_string(),
        label: node.label(),
        identity: node.identity(),
        fingerprint: fp,
        artifacts: Default::default(),
        wall_s: t0.elapsed().as_secs_f64(),
        host: host_name(),
        code_version: env!("CARGO_PKG_VERSION").to_string(),
        finished_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        run: None,
    };
    Ok(manifest)
}

/// When this process started: a node's wall time includes its process's start-up (loading
/// libtorch, a CUDA context), which is part of what a node costs. Linux: from
/// `/proc/self/stat` and `/proc/uptime`; now where that cannot be read.
fn process_started() -> Instant {
    let age = || -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Field 22 (starttime, in clock ticks since boot), counted after the `(comm)` field.
        let after = stat.rsplit_once(')')?.1;
        let ticks: f64 = after.split_whitespace().nth(19)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some((uptime - ticks / hz).max(0.0))
    };
    let now = Instant::now();
    age()
        .and_then(|a| now.checked_sub(std::time::Duration::from_secs_f64(a)))
        .unwrap_or(now)
}
