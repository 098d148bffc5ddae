//! Owns `plan`'s cost estimate: each node to run priced from `history.rs`, the wall time found
//! by playing the scheduler's state machine (`sched::state`) over the DAG on the local slots.
//! Must not run, launch or write anything.
use crate::graph::{Graph, Node};
use crate::history::History;
use crate::numerics::DeviceKind;
use crate::plan::{PlanEntry, Status};
use crate::sched::state::{Capacity, Core, Exit};
use crate::sched::Work as _;
use crate::store::Store;
use std::collections::BTreeMap;

/// Where the nodes would run: the local launcher's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// GPUs (0: device nodes run one at a time on the CPU).
    pub gpus: usize,
    pub per_gpu: usize,
    /// Threads shared by the nodes that need no GPU.
    pub cpu_threads: u32,
}

/// One node the run would start.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCost {
    pub key: String,
    pub label: String,
    pub kind: &'static str,
    pub seconds: f64,
    /// False: no comparable node in the store (or a size unknown before it runs); `seconds` is
    /// the kind's default.
    pub from_history: bool,
    /// It holds a GPU (a device node, when the device is CUDA).
    pub on_gpu: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// The nodes to run, inputs first: the plan's `run` nodes and the final runs of the
    /// selections not made yet (as if each chose its first candidate).
    pub nodes: Vec<NodeCost>,
    /// Start of the first node to end of the last on `slots`.
    pub wall_s: f64,
    pub device: DeviceKind,
    pub slots: Slots,
    /// Selections not made yet whose finals are counted as their first candidate's.
    pub stand_ins: usize,
}

impl Estimate {
    pub fn without_history(&self) -> usize {
        self.nodes.iter().filter(|n| !n.from_history).count()
    }

    /// Node-seconds holding a GPU.
    pub fn gpu_s(&self) -> f64 {
        self.nodes
            .iter()
            .filter(|n| n.on_gpu)
            .map(|n| n.seconds)
            .sum()
    }

    /// Node-seconds on the CPU (every node, on a machine without GPUs).
    pub fn cpu_s(&self) -> f64 {
        self.nodes
            .iter()
            .filter(|n| !n.on_gpu)
            .map(|n| n.seconds)
            .sum()
    }

    /// `estimate: N nodes to run, ~W wall on 2 GPUs x 1 job, G GPU-hours + C CPU-hours of
    /// node time; 2 nodes without comparable history (counted at their kind's default: 1 train
    /// 1800 s, 1 eval 120 s)`, and a line on the finals not keyed yet.
    pub fn render(&self) -> String {
        if self.nodes.is_empty() {
            return "estimate: nothing to run\n".to_string();
        }
        let on = match (self.device, self.slots.gpus) {
            (DeviceKind::Cuda, g) if g > 0 => format!(
                "{g} GPU{} x {} job{}",
                plural(g),
                self.slots.per_gpu,
                plural(self.slots.per_gpu)
            ),
            _ => format!(
                "the CPU (1 device slot, {} CPU thread{})",
                self.slots.cpu_threads,
                plural(self.slots.cpu_threads as usize)
            ),
        };
        let hours = |s: f64| {
            let h = s / 3600.0;
            if h < 10.0 {
                format!("{h:.2}")
            } else {
                format!("{h:.1}")
            }
        };
        let node_time = if self.device == DeviceKind::Cuda {
            format!(
                "{} GPU-hours + {} CPU-hours",
                hours(self.gpu_s()),
                hours(self.cpu_s())
            )
        } else {
            format!("{} CPU-hours", hours(self.cpu_s()))
        };
        let missing = self.without_history();
        let mut s = format!(
            "estimate: {} node{} to run, ~{} wall on {on}, {node_time} of node time; {missing} node{} without comparable history",
            self.nodes.len(),
            plural(self.nodes.len()),
            duration(self.wall_s),
            plural(missing)
        );
        if missing > 0 {
            let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
            for n in self.nodes.iter().filter(|n| !n.from_history) {
                *by_kind.entry(n.kind).or_default() += 1;
            }
            let parts: Vec<String> = crate::node::KINDS
                .iter()
                .filter_map(|k| {
                    let n = by_kind.get(k.name)?;
                    Some(format!("{n} {} {} s", k.name, k.default_expected_s))
                })
                .collect();
            s += &format!(" (counted at their kind's default: {})", parts.join(", "));
        }
        s += "\n";
        if self.stand_ins > 0 {
            s += &format!(
                "  (the final runs of {} selection{} not made yet are counted as their first candidate's)\n",
                self.stand_ins,
                plural(self.stand_ins)
            );
        }
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `45 s`, `3.2 min`, `1.8 h`.
fn duration(s: f64) -> String {
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// The estimate for running `g` as `plan` found it (`entries`) on `slots`, computing on
/// `device`, with times from `store`'s history.
pub fn estimate(
    g: &Graph,
    store: &Store,
    entries: &[PlanEntry],
    device: DeviceKind,
    slots: Slots,
) -> Estimate {
    let status: BTreeMap<&str, Status> = entries
        .iter()
        .filter(|e| !e.key.is_empty())
        .map(|e| (e.key.as_str(), e.status))
        .collect();
    // The finals of selections not made yet, keyed as if each chose its first candidate; in
    // the run they start only once their select node is done.
    let mut g = g.clone();
    let mut after_select: BTreeMap<String, String> = BTreeMap::new();
    let waiting: Vec<String> = g
        .selections
        .keys()
        .filter(|k| !g.grown.contains(*k) && status.get(k.as_str()) != Some(&Status::Blocked))
        .cloned()
        .collect();
    for select in &waiting {
        for k in g.add_finals(select, 0) {
            after_select.insert(k, select.clone());
        }
    }
    let runs = |key: &str| match status.get(key) {
        Some(s) => *s == Status::Run,
        None => g
            .node(key)
            .is_some_and(|n| !store.is_complete(n.kind(), key)),
    };
    let order = g.topo();
    let history = if order.iter().any(|k| runs(k)) {
        History::read(store)
    } else {
        History::default()
    };
    let mut nodes = Vec::new();
    for key in &order {
        let node = g.node(key).expect("topo keys are nodes");
        if !runs(key) {
            continue;
        }
        let kind = node.kind_of();
        let (seconds, from_history) = match history.from_comparable(&g, key) {
            Some(s) => (s * remaining(store, node, key), true),
            None => (kind.default_expected_s, false),
        };
        nodes.push(NodeCost {
            key: key.clone(),
            label: node.label(),
            kind: kind.name,
            seconds,
            from_history,
            on_gpu: device == DeviceKind::Cuda && node.resources().gpus > 0,
        });
    }
    let seconds: BTreeMap<&str, f64> = nodes.iter().map(|n| (n.key.as_str(), n.seconds)).collect();
    let skip = |k: &str| status.get(k) == Some(&Status::Blocked);
    let wall_s = play(&g, &order, &after_select, &seconds, &skip, store, slots);
    Estimate {
        nodes,
        wall_s,
        device,
        slots,
        stand_ins: waiting.len(),
    }
}

/// The part of a training node still to do: after the epochs of its checkpoint, if any.
fn remaining(store: &Store, node: &Node, key: &str) -> f64 {
    let Node::Train(t) = node else { return 1.0 };
    let done = crate::plan::checkpoint_epoch(&store.root.join("checkpoints").join(key));
    match done {
        Some(e) if t.opt.epochs > 0 => {
            (t.opt.epochs.saturating_sub(e)) as f64 / t.opt.epochs as f64
        }
        _ => 1.0,
    }
}

/// Plays the scheduler's state machine over `order` on `slots`: a node in `seconds` runs that
/// long from when the machine would start it, any other is done from the start; `skip`ped
/// (blocked) nodes are left out. Returns when the last node ends.
fn play(
    g: &Graph,
    order: &[String],
    after_select: &BTreeMap<String, String>,
    seconds: &BTreeMap<&str, f64>,
    skip: &dyn Fn(&str) -> bool,
    store: &Store,
    slots: Slots,
) -> f64 {
    let work = crate::work::GraphWork::new(g, store);
    let specs = order.iter().filter(|k| !skip(k)).map(|k| {
        let mut spec = work.spec(k);
        spec.deps.extend(after_select.get(k).cloned());
        spec
    });
    let mut core = Core::new();
    if core.extend(specs).is_err() {
        // Not expected of a sealed graph; the plain sum is still an upper bound.
        return seconds.values().sum();
    }
    for k in order
        .iter()
        .filter(|k| !skip(k) && !seconds.contains_key(k.as_str()))
    {
        let _ = core.on_exit(k, Exit::Cached);
    }
    let cap = Capacity::Local {
        gpus: slots.gpus,
        per_gpu: slots.per_gpu.max(1),
        cpu_threads: slots.cpu_threads.max(1),
    };
    let mut now = 0.0f64;
    let mut running: Vec<(f64, String)> = Vec::new();
    loop {
        for l in core.next(&cap) {
            let s = seconds.get(l.key.as_str()).copied().unwrap_or(0.0);
            running.push((now + s, l.key));
        }
        let Some(i) = (0..running.len()).min_by(|a, b| running[*a].0.total_cmp(&running[*b].0))
        else {
            return now;
        };
        let (end, key) = running.swap_remove(i);
        now = end;
        let _ = core.on_exit(&key, Exit::Done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::{graph, small_run};

    fn cpu(threads: u32) -> Slots {
        Slots {
            gpus: 0,
            per_gpu: 1,
            cpu_threads: threads,
        }
    }

    fn estimate_of(g: &Graph, store: &Store, slots: Slots) -> Estimate {
        let entries = crate::plan::plan(g, store, &Default::default());
        estimate(g, store, &entries, DeviceKind::Cpu, slots)
    }

    /// The store holds the small run (see `history::tests::small_run`); the bigger variant
    /// (3 epochs, 200 test images, BitFit besides) runs new preps (the test-set size is in
    /// their keys: 2 s and 10 s), the linear probe and LoRA (6 s, 12 s) and their evals (2 s
    /// each), and BitFit's train and eval without history (at 1800 s and 120 s). The preps run
    /// side by side on 8 threads; then one device slot runs the device nodes one after another
    /// (10 + 1942 s).
    #[test]
    fn estimate_counts_nodes_without_history_and_plays_the_schedule() {
        let dir = std::env::temp_dir().join(format!("vtab-estimate-{}", std::process::id()));
        let store = small_run(&dir);
        let g = graph(
            "[methods.bitfit]\n",
            &["defaults.epochs=3", "datasets.shape.test_images=200"],
        );
        let e = estimate_of(&g, &store, cpu(8));
        let costs: Vec<(&str, f64, bool)> = e
            .nodes
            .iter()
            .map(|n| {
                (
                    n.label.as_str(),
                    (n.seconds * 1e6).round() / 1e6,
                    n.from_history,
                )
            })
            .collect();
        assert_eq!(
            costs,
            [
                ("prep shape test 16px", 2.0, true),
                ("prep shape train800val200 16px", 10.0, true),
                ("train shape lora r=4 a=4 q,v s0", 12.0, true),
                ("eval shape lora r=4 a=4 q,v s0", 2.0, true),
                ("train shape linear s0", 6.0, true),
                ("eval shape linear s0", 2.0, true),
                ("train shape bitfit s0", 1800.0, false),
                ("eval shape bitfit s0", 120.0, false),
            ]
        );
        assert_eq!(e.without_history(), 2);
        assert!((e.wall_s - 1952.0).abs() < 1e-6, "{}", e.wall_s);
        assert!((e.cpu_s() - 1954.0).abs() < 1e-6 && e.gpu_s() == 0.0);
        assert_eq!(
            e.render(),
            "estimate: 8 nodes to run, ~32.5 min wall on the CPU (1 device slot, 8 CPU threads), \
             0.54 CPU-hours of node time; 2 nodes without comparable history (counted at their \
             kind's default: 1 train 1800 s, 1 eval 120 s)\n"
        );

        // Two device lanes: no shorter than the longest chain (the training split's prep,
        // BitFit's train and eval: 1930 s), shorter than one lane.
        let two = estimate_of(&g, &store, Slots { gpus: 2, ..cpu(8) });
        assert!(
            two.wall_s >= 1930.0 - 1e-6 && two.wall_s < 1952.0,
            "{}",
            two.wall_s
        );

        // The small run itself: nothing to run.
        let same = estimate_of(&graph("", &[]), &store, cpu(2));
        assert!(same.nodes.is_empty());
        assert_eq!(same.render(), "estimate: nothing to run\n");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Under the protocol the final runs of a selection not made yet have no keys; the
    /// estimate counts them as their first candidate's, after their select node.
    #[test]
    fn estimate_counts_the_finals_of_selections_not_made_yet() {
        let dir = std::env::temp_dir().join(format!("vtab-estimate-p-{}", std::process::id()));
        let store = small_run(&dir);
        let g = graph(
            "[protocol]\nkind = \"vtab1k\"\n",
            &["methods.linear.lr=[0.002, 0.01]"],
        );
        let entries = crate::plan::plan(&g, &store, &Default::default());
        let count = |s| entries.iter().filter(|e| e.status == s).count();
        let e = estimate(&g, &store, &entries, DeviceKind::Cpu, cpu(2));
        assert_eq!(e.stand_ins, 1);
        assert!(
            e.nodes.len() >= count(Status::Run) + count(Status::Pending),
            "{} nodes, plan: {} run + {} pending",
            e.nodes.len(),
            count(Status::Run),
            count(Status::Pending)
        );
        let finals: Vec<(&str, f64)> = e
            .nodes
            .iter()
            .filter(|n| !n.label.contains("(search)") && n.kind != "prep" && n.kind != "select")
            .map(|n| (n.label.as_str(), n.seconds))
            .collect();
        assert_eq!(
            finals,
            [
                ("train shape linear lr=0.002 s0", 4.0),
                ("eval shape linear lr=0.002 s0", 1.0)
            ]
        );
        // With room for everything at once the wall time is the chain: a view prep (no
        // history: 120 s), a search train (3.2 s) and eval (2 s), the select (5 s), then the
        // final train (4 s) and eval (1 s).
        let wide = Slots {
            gpus: 8,
            per_gpu: 1,
            cpu_threads: 64,
        };
        let e = estimate(&g, &store, &entries, DeviceKind::Cpu, wide);
        assert!((e.wall_s - 135.2).abs() < 1e-6, "{}", e.wall_s);
        assert!(e.render().ends_with(
            "(the final runs of 1 selection not made yet are counted as their first candidate's)\n"
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
