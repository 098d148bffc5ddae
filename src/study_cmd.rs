//! `vtab-orch status SUITE` and `vtab-orch cancel SUITE`: a study on Slurm seen and stopped
//! from any shell, with or without its driver. Its jobs are found by their comment (node key
//! and store, `sched/slurm`), its progress in the store and in the jobs' output files.
use crate::cli::{load_suite_for_launcher, LauncherKind, SuiteArgs};
use anyhow::Result;
use orchestrator::sched::slurm::{self, poll};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    s: SuiteArgs,
    /// Where the study runs: keys are those `run --launcher` would use (slurm: GPU nodes
    /// keyed for CUDA wherever this command runs).
    #[arg(long, value_enum, default_value_t = LauncherKind::Slurm)]
    launcher: LauncherKind,
}

#[derive(clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    s: SuiteArgs,
}

/// The last `{"epoch": .., "epochs": ..}` line of a job's output, as "epoch 3/10".
fn epoch_of(out: &Path) -> Option<String> {
    let text = std::fs::read_to_string(out).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        let e = v.get("epoch")?.as_u64()?;
        let n = v.get("epochs").and_then(|n| n.as_u64());
        Some(n.map_or(format!("epoch {e}"), |n| format!("epoch {e}/{n}")))
    })
}

pub fn status(a: StatusArgs) -> Result<i32> {
    let l = load_suite_for_launcher(&a.s, a.launcher)?;
    let store = std::path::absolute(&l.store.root)?;
    let order = l.graph.topo();
    let done = order
        .iter()
        .filter(|k| {
            l.graph
                .node(k)
                .is_some_and(|n| l.store.is_complete(n.kind(), k))
        })
        .count();
    let clusters = slurm::clusters_of(&l.suite.slurm.extra_args);
    let jobs = match slurm::study_jobs(&store, &clusters) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("warning: cannot ask Slurm about the study's jobs: {e}");
            BTreeMap::new()
        }
    };
    let mut running = Vec::new();
    let mut queued = Vec::new();
    // Warm workers' nodes: the claims in the pool folder (node key, worker job).
    let pool = slurm::pool::dir_of(&store);
    let claims = slurm::pool::claims(&pool, "running");
    let label_of = |key: &str| {
        l.graph
            .node(key)
            .map_or_else(|| format!("node {key}"), |n| n.label())
    };
    for (key, j) in &jobs {
        let (id, job) = (&j.id, &j.listed);
        let bare = poll::split_id(id).0;
        // A warm worker's job shows the node it runs, if any.
        let (label, out_key, what) = match key.strip_prefix("worker-") {
            None => (label_of(key), key.clone(), "slurm job"),
            Some(w) => match claims.iter().find(|(_, job)| job == bare) {
                Some((node, _)) => (label_of(node), node.clone(), "warm worker job"),
                None => (format!("warm worker {w}"), String::new(), "slurm job"),
            },
        };
        if job.state == "RUNNING" || job.state == "COMPLETING" {
            let out = store.join("logs").join(format!("{out_key}.{bare}.out"));
            let epoch = epoch_of(&out).map_or(String::new(), |e| format!(", {e}"));
            let idle = if out_key.is_empty() { ", idle" } else { "" };
            running.push(format!(
                "running  {label}  ({what} {id} on {} since {}{epoch}{idle})",
                job.node, job.start
            ));
        } else {
            queued.push(format!("queued   {label}  ({what} {id}, {})", job.state));
        }
    }
    // Nodes waiting in the pool for a worker.
    for kind in slurm::pool::KINDS {
        let Ok(rd) = std::fs::read_dir(pool.join("queue").join(kind)) else {
            continue;
        };
        let mut keys: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        keys.sort();
        for key in keys {
            queued.push(format!(
                "queued   {}  (waiting for a {kind} warm worker)",
                label_of(&key)
            ));
        }
    }
    let total = order.len() + l.graph.pending_finals();
    println!(
        "suite {}: {total} nodes, {done} done, {} running, {} queued, store {}",
        l.suite.name,
        running.len(),
        queued.len(),
        store.display()
    );
    for line in running.iter().chain(&queued) {
        println!("{line}");
    }
    // Which drivers watch them: a dead one's jobs go on; `run` again adopts them.
    let timing = orchestrator::lease::Timing::from_env().unwrap_or_default();
    let drivers: std::collections::BTreeSet<&str> =
        jobs.values().map(|j| j.driver.as_str()).collect();
    for d in drivers {
        match orchestrator::lease::owner(&store, d) {
            Some(o) if o.alive(timing) => println!("driver   {}", o.describe()),
            _ => println!(
                "driver   {d} is gone: its jobs go on; `vtab-orch run` of this suite adopts them"
            ),
        }
    }
    Ok(0)
}

pub fn cancel(a: CancelArgs) -> Result<i32> {
    let l = load_suite_for_launcher(&a.s, LauncherKind::Slurm)?;
    let store = std::path::absolute(&l.store.root)?;
    let clusters = slurm::clusters_of(&l.suite.slurm.extra_args);
    // A COMPLETING job has ended already (Slurm is cleaning up after it).
    let mut jobs = slurm::study_jobs(&store, &clusters).map_err(anyhow::Error::msg)?;
    jobs.retain(|_, j| j.listed.state != "COMPLETING");
    if jobs.is_empty() {
        println!(
            "suite {}: no job of this study is queued or running",
            l.suite.name
        );
        return Ok(0);
    }
    let ids: Vec<String> = jobs.values().map(|j| j.id.clone()).collect();
    // scancel fails for a job that ended meanwhile: what counts is that none is left.
    slurm::scancel(&ids);
    let t0 = std::time::Instant::now();
    let left = loop {
        let left: Vec<String> = slurm::study_jobs(&store, &clusters)
            .map_err(anyhow::Error::msg)?
            .into_values()
            .filter(|j| ids.contains(&j.id) && j.listed.state != "COMPLETING")
            .map(|j| j.id)
            .collect();
        if left.is_empty() || t0.elapsed() > std::time::Duration::from_secs(30) {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    println!(
        "suite {}: cancelled {} job(s): {}",
        l.suite.name,
        ids.len() - left.len(),
        ids.join(" ")
    );
    if !left.is_empty() {
        eprintln!(
            "error: still queued or running after 30 s: {}",
            left.join(" ")
        );
        return Ok(1);
    }
    Ok(0)
}
