//! The scheduler core: a state machine over a graph that may grow during a run. It decides
//! what to launch on which slot and reacts to exits; it spawns, reads and prints nothing.
use std::collections::{BTreeMap, BTreeSet};

/// What a node needs while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Resources {
    /// Accelerators (0 or 1 today). A GPU node on a machine without one runs on the CPU
    /// device slot instead.
    pub gpus: u32,
    /// CPU threads it keeps busy (a Slurm job asks for this many cores).
    pub cpu_threads: u32,
    /// Seconds of light work (a select node, a view cut from a decoded split): on a cluster it
    /// runs beside the driver rather than in a job of its own.
    pub tiny: bool,
}

/// Where the launcher may run nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// This machine: `gpus` GPUs with `per_gpu` slots each (no GPU: one CPU device slot),
    /// and `cpu_threads` shared by the nodes that need no GPU.
    Local {
        gpus: usize,
        per_gpu: usize,
        cpu_threads: u32,
    },
    /// A cluster places the jobs itself; at most `max_jobs` in flight.
    Cluster { max_jobs: usize },
}

/// Where a launched node runs, stable for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    /// Position `gpu` in the launcher's GPU list, lane `lane` of it.
    Gpu { gpu: usize, lane: usize },
    /// The device slot of a machine without GPUs (GPU nodes compute on the CPU).
    CpuDevice,
    /// A node that needs no GPU, holding `threads` of the CPU budget.
    Cpu { threads: u32 },
    /// A cluster job.
    Cluster,
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Gpu { gpu, lane } => write!(f, "gpu{gpu}.{lane}"),
            Slot::CpuDevice => write!(f, "cpu"),
            Slot::Cpu { .. } => write!(f, "cpu-prep"),
            Slot::Cluster => write!(f, "cluster"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Some input is not done yet.
    Pending,
    /// Every input is done; waiting for capacity.
    Ready,
    Running,
    Done,
    Failed,
    /// An input failed (or is blocked); it will not run in this run.
    Blocked,
    /// Another run holds its lease; ready again when the lease is free.
    WaitingOnLease,
}

/// A node as the core sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub key: String,
    pub deps: Vec<String>,
    pub resources: Resources,
    /// Runs once every input has ended, done or not (a select node: a candidate that failed
    /// loses the selection instead of blocking it). Never blocked by an input.
    pub tolerant: bool,
}

/// The core's answer to "what now": start `key` on `slot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub key: String,
    pub slot: Slot,
}

/// How a launched (or about to be launched) node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It ran here and is in the store.
    Done,
    /// It was in the store already (finished by another run).
    Cached,
    Failed,
    /// Another run holds its lease.
    Leased,
}

/// A node that will not run because `by` (an input, perhaps indirectly) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub key: String,
    pub by: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("node {key} reads {dep}, which is not in the graph (add inputs before or with their consumers)")]
    UnknownInput { key: String, dep: String },
    #[error("node {key} was added twice with different inputs or resources")]
    Conflict { key: String },
    #[error("node {key}: {what} (the scheduler core has no such node in that state)")]
    BadTransition { key: String, what: &'static str },
}

#[derive(Debug)]
struct Entry {
    spec: NodeSpec,
    /// Insertion order: ready nodes start in the order they were added (topological).
    seq: usize,
    state: State,
    slot: Option<Slot>,
    dependants: Vec<String>,
}

/// The scheduler's state machine.
#[derive(Debug, Default)]
pub struct Core {
    nodes: BTreeMap<String, Entry>,
    ready: BTreeSet<(usize, String)>,
}

impl Core {
    pub fn new() -> Core {
        Core::default()
    }

    /// Adds nodes (inputs before their consumers, or in the same call). A node already known
    /// with the same inputs is skipped, so overlapping extensions share work. Returns the
    /// new nodes that are blocked at once because an input already failed.
    pub fn extend(
        &mut self,
        nodes: impl IntoIterator<Item = NodeSpec>,
    ) -> Result<Vec<Blocked>, CoreError> {
        let nodes: Vec<NodeSpec> = nodes.into_iter().collect();
        let adding: BTreeSet<&str> = nodes.iter().map(|n| n.key.as_str()).collect();
        for n in &nodes {
            if let Some(e) = self.nodes.get(&n.key) {
                if e.spec != *n {
                    return Err(CoreError::Conflict { key: n.key.clone() });
                }
            }
            if let Some(dep) = n
                .deps
                .iter()
                .find(|d| !self.nodes.contains_key(*d) && !adding.contains(d.as_str()))
            {
                return Err(CoreError::UnknownInput {
                    key: n.key.clone(),
                    dep: dep.clone(),
                });
            }
        }
        let mut blocked = Vec::new();
        for n in nodes {
            if self.nodes.contains_key(&n.key) {
                continue;
            }
            let seq = self.nodes.len();
            let key = n.key.clone();
            let bad = n.deps.iter().find(|d| {
                !n.tolerant
                    && matches!(
                        self.nodes.get(*d).map(|e| e.state),
                        Some(State::Failed | State::Blocked)
                    )
            });
            let inputs_ended = |s: &Self| n.deps.iter().all(|d| s.input_ended(d, n.tolerant));
            let state = match bad {
                Some(d) => {
                    blocked.push(Blocked {
                        key: key.clone(),
                        by: self.root_cause(d),
                    });
                    State::Blocked
                }
                None if inputs_ended(self) => {
                    self.ready.insert((seq, key.clone()));
                    State::Ready
                }
                None => State::Pending,
            };
            self.nodes.insert(
                key,
                Entry {
                    spec: n,
                    seq,
                    state,
                    slot: None,
                    dependants: Vec::new(),
                },
            );
        }
        self.relink();
        Ok(blocked)
    }

    fn relink(&mut self) {
        let edges: Vec<(String, String)> = self
            .nodes
            .values()
            .flat_map(|e| {
                e.spec
                    .deps
                    .iter()
                    .map(move |d| (d.clone(), e.spec.key.clone()))
            })
            .collect();
        for e in self.nodes.values_mut() {
            e.dependants.clear();
        }
        for (d, k) in edges {
            if let Some(e) = self.nodes.get_mut(&d) {
                e.dependants.push(k);
            }
        }
    }

    /// The failed node a blocked node is blocked by (itself if it failed).
    fn root_cause(&self, key: &str) -> String {
        let mut at = key.to_string();
        while let Some(e) = self.nodes.get(&at) {
            if e.state != State::Blocked {
                break;
            }
            match e
                .spec
                .deps
                .iter()
                .find(|d| matches!(self.state(d), Some(State::Failed | State::Blocked)))
            {
                Some(d) => at = d.clone(),
                None => break,
            }
        }
        at
    }

    pub fn state(&self, key: &str) -> Option<State> {
        self.nodes.get(key).map(|e| e.state)
    }

    /// Whether input `dep` lets its consumer start: done, or (for a tolerant consumer) ended
    /// any way it will in this run.
    fn input_ended(&self, dep: &str, tolerant: bool) -> bool {
        match self.state(dep) {
            Some(State::Done) => true,
            Some(State::Failed | State::Blocked) => tolerant,
            _ => false,
        }
    }

    /// Makes pending node `key` ready if each of its inputs has ended as it needs.
    fn ready_if_inputs_ended(&mut self, key: &str) {
        let e = &self.nodes[key];
        let ready = e.state == State::Pending
            && e.spec
                .deps
                .iter()
                .all(|d| self.input_ended(d, e.spec.tolerant));
        if ready {
            let e = self.nodes.get_mut(key).expect("known node");
            e.state = State::Ready;
            self.ready.insert((e.seq, key.to_string()));
        }
    }

    pub fn slot(&self, key: &str) -> Option<Slot> {
        self.nodes.get(key).and_then(|e| e.slot)
    }

    pub fn spec(&self, key: &str) -> Option<&NodeSpec> {
        self.nodes.get(key).map(|e| &e.spec)
    }

    /// Number of nodes in each state.
    pub fn count(&self, state: State) -> usize {
        self.nodes.values().filter(|e| e.state == state).count()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// True when nothing is ready, running or waiting: the run is over.
    pub fn is_finished(&self) -> bool {
        !self.nodes.values().any(|e| {
            matches!(
                e.state,
                State::Pending | State::Ready | State::Running | State::WaitingOnLease
            )
        })
    }

    /// Keys in `state`, in insertion order.
    pub fn keys_in(&self, state: State) -> Vec<String> {
        let mut v: Vec<(usize, String)> = self
            .nodes
            .values()
            .filter(|e| e.state == state)
            .map(|e| (e.seq, e.spec.key.clone()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    }

    /// Ready nodes that fit the free part of `cap`, in the order they were added, each with
    /// its slot; they are Running from now on. GPU slots fill round-robin across GPUs
    /// (gpu0.0, gpu1.0, gpu0.1, ...) so that a second lane opens only when every GPU is busy.
    pub fn next(&mut self, cap: &Capacity) -> Vec<Launch> {
        let mut used: BTreeSet<Slot> = BTreeSet::new();
        let mut cpu_used = 0u32;
        let mut in_flight = 0usize;
        for e in self.nodes.values().filter(|e| e.state == State::Running) {
            in_flight += 1;
            match e.slot {
                Some(Slot::Cpu { threads }) => cpu_used += threads,
                Some(s) => {
                    used.insert(s);
                }
                None => {}
            }
        }
        let mut out = Vec::new();
        let ready: Vec<(usize, String)> = self.ready.iter().cloned().collect();
        for (seq, key) in ready {
            let res = self.nodes[&key].spec.resources;
            let slot = match cap {
                Capacity::Cluster { max_jobs } => (in_flight < *max_jobs).then_some(Slot::Cluster),
                Capacity::Local {
                    gpus,
                    per_gpu,
                    cpu_threads,
                } => {
                    if res.gpus > 0 {
                        free_device_slot(&used, *gpus, *per_gpu)
                    } else {
                        // A node larger than the whole budget still runs, alone.
                        let want = res.cpu_threads.min(*cpu_threads).max(1);
                        (cpu_used + want <= (*cpu_threads).max(1))
                            .then_some(Slot::Cpu { threads: want })
                    }
                }
            };
            let Some(slot) = slot else { continue };
            match slot {
                Slot::Cpu { threads } => cpu_used += threads,
                s => {
                    used.insert(s);
                }
            }
            in_flight += 1;
            self.ready.remove(&(seq, key.clone()));
            let e = self.nodes.get_mut(&key).expect("ready node exists");
            e.state = State::Running;
            e.slot = Some(slot);
            out.push(Launch { key, slot });
        }
        out
    }

    /// Records how a running node ended; its slot is free again. A failure blocks every
    /// dependant (transitively), which is returned. `Cached` is also accepted for a node
    /// that is pending, ready or waiting (found in the store before it ran).
    pub fn on_exit(&mut self, key: &str, exit: Exit) -> Result<Vec<Blocked>, CoreError> {
        let e = self.nodes.get_mut(key).ok_or(CoreError::BadTransition {
            key: key.to_string(),
            what: "exit of an unknown node",
        })?;
        let allowed = match exit {
            Exit::Cached => matches!(
                e.state,
                State::Pending | State::Ready | State::Running | State::WaitingOnLease
            ),
            _ => e.state == State::Running,
        };
        if !allowed {
            return Err(CoreError::BadTransition {
                key: key.to_string(),
                what: "exit of a node that is not running",
            });
        }
        let seq = e.seq;
        e.slot = None;
        self.ready.remove(&(seq, key.to_string()));
        match exit {
            Exit::Done | Exit::Cached => {
                e.state = State::Done;
                for d in e.dependants.clone() {
                    self.ready_if_inputs_ended(&d);
                }
                Ok(Vec::new())
            }
            Exit::Leased => {
                e.state = State::WaitingOnLease;
                Ok(Vec::new())
            }
            Exit::Failed => {
                e.state = State::Failed;
                Ok(self.block_dependants(key))
            }
        }
    }

    /// The lease of a waiting node is free: it is ready again.
    pub fn lease_free(&mut self, key: &str) -> Result<(), CoreError> {
        match self.nodes.get_mut(key) {
            Some(e) if e.state == State::WaitingOnLease => {
                e.state = State::Ready;
                self.ready.insert((e.seq, key.to_string()));
                Ok(())
            }
            _ => Err(CoreError::BadTransition {
                key: key.to_string(),
                what: "lease freed for a node that is not waiting on one",
            }),
        }
    }

    fn block_dependants(&mut self, failed: &str) -> Vec<Blocked> {
        let mut out = Vec::new();
        let mut stack = vec![failed.to_string()];
        while let Some(k) = stack.pop() {
            let dependants = self.nodes[&k].dependants.clone();
            for d in dependants {
                if self.nodes[&d].spec.tolerant {
                    // It runs without this input once the others have ended.
                    self.ready_if_inputs_ended(&d);
                    continue;
                }
                let e = self.nodes.get_mut(&d).expect("dependant exists");
                if matches!(
                    e.state,
                    State::Pending | State::Ready | State::WaitingOnLease
                ) {
                    e.state = State::Blocked;
                    self.ready.remove(&(e.seq, d.clone()));
                    out.push(Blocked {
                        key: d.clone(),
                        by: failed.to_string(),
                    });
                    stack.push(d);
                }
            }
        }
        out.sort_by_key(|b| self.nodes[&b.key].seq);
        out
    }
}

/// The first free device slot in fill order: lane-major, so lane 0 of every GPU comes
/// before lane 1 of any.
fn free_device_slot(used: &BTreeSet<Slot>, gpus: usize, per_gpu: usize) -> Option<Slot> {
    if gpus == 0 {
        return (!used.contains(&Slot::CpuDevice)).then_some(Slot::CpuDevice);
    }
    (0..per_gpu.max(1))
        .flat_map(|lane| (0..gpus).map(move |gpu| Slot::Gpu { gpu, lane }))
        .find(|s| !used.contains(s))
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
