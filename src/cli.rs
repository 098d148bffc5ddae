//! The suite commands (`run`, `plan`, `report`, `exec`): argument types, loading and
//! expanding the suite, and the terminal view of scheduler events.
use anyhow::{Context, Result};
use orchestrator::graph::{expand, Graph, Node};
use orchestrator::plan::{plan as make_plan, render, Status};
use orchestrator::report::{self, RunRecord};
use orchestrator::sched::{self, Event, Gpus, RunOptions};
use orchestrator::store::{digest_file, Store};
use orchestrator::suite::{self, Suite};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// The suite file.
    #[arg(default_value = "suite.toml")]
    suite: PathBuf,
    /// Override a suite setting, e.g. `--set defaults.epochs=2` (TOML value syntax; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Store directory (default: the suite's `store`, else results/ next to the suite).
    #[arg(long)]
    store: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    s: SuiteArgs,
    /// GPUs for train/eval nodes: auto (all that libtorch sees), none (CPU), or a list like 0,2.
    #[arg(long, default_value = "auto")]
    gpus: String,
    /// Concurrent nodes per GPU.
    #[arg(long, default_value_t = 1)]
    jobs_per_gpu: usize,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    s: SuiteArgs,
    /// Print one JSON array (key, kind, label, status, reason, deps per node).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    s: SuiteArgs,
    /// Format of the table printed on stdout: md, csv or json.
    #[arg(long, default_value = "md")]
    format: String,
}

#[derive(clap::Args)]
pub struct ExecArgs {
    key: String,
    #[arg(long)]
    store: PathBuf,
    /// The node's spec (JSON of the graph node), written by the scheduler.
    #[arg(long)]
    spec: PathBuf,
    /// Compute on the CPU even if CUDA is visible.
    #[arg(long)]
    cpu: bool,
}

struct Loaded {
    suite: Suite,
    store: Store,
    graph: Graph,
    /// Nodes that cannot run, with why (missing dataset root or weights file).
    blocked: BTreeMap<String, String>,
}

/// Weights digests, cached per (path, size, mtime) in the store: hashing a ViT-B file on
/// every `plan` would cost a third of a second.
fn weights_digest(store_root: &Path) -> impl Fn(&Path) -> std::result::Result<String, String> + '_ {
    move |p: &Path| {
        let meta = std::fs::metadata(p)
            .map_err(|e| format!("`backbone.weights`: {}: {e}", p.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let id = format!("{}|{}|{mtime}", p.display(), meta.len());
        let cache = store_root.join("digests.json");
        let mut map: BTreeMap<String, String> = std::fs::read_to_string(&cache)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if let Some(d) = map.get(&id) {
            return Ok(d.clone());
        }
        let d = digest_file(p).map_err(|e| e.to_string())?;
        map.insert(id, d.clone());
        // Only into an existing store: planning an invalid suite must write nothing.
        if store_root.is_dir() {
            let _ = std::fs::write(
                &cache,
                serde_json::to_string_pretty(&map).unwrap_or_default(),
            );
        }
        Ok(d)
    }
}

fn load(a: &SuiteArgs) -> Result<Loaded> {
    let suite = suite::load(&a.suite, &a.sets)?;
    let root = a.store.clone().unwrap_or_else(|| suite.store.clone());
    if let Err(mut e) = suite::check_inputs(&suite) {
        e.errors.extend(crate::fetch_cmd::hint(&suite));
        return Err(e.into());
    }
    let graph = expand(&suite, &weights_digest(&root)).map_err(|errors| suite::SuiteError {
        file: a.suite.clone(),
        errors,
    })?;
    Ok(Loaded {
        suite,
        store: Store::at(&root),
        graph,
        blocked: BTreeMap::new(),
    })
}

pub fn plan(a: PlanArgs) -> Result<i32> {
    let l = load(&a.s)?;
    let entries = make_plan(&l.graph, &l.store, &l.blocked);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", render(&entries));
    }
    Ok(if entries.iter().any(|e| e.status == Status::Blocked) {
        1
    } else {
        0
    })
}

pub fn run(a: RunArgs) -> Result<i32> {
    let gpus: Gpus = a.gpus.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    if let Gpus::List(list) = &gpus {
        let visible = tch::Cuda::device_count().max(0) as usize;
        if let Some(bad) = list.iter().find(|g| **g >= visible) {
            anyhow::bail!("--gpus {}: GPU {bad} does not exist (libtorch sees {visible}; `vtab-orch env` lists them)", a.gpus);
        }
    }
    let l = load(&a.s)?;
    let store = Store::open(&l.store.root)
        .with_context(|| format!("opening the store {}", l.store.root.display()))?;
    let opts = RunOptions {
        gpus,
        jobs_per_gpu: a.jobs_per_gpu,
        exe: std::env::current_exe()?,
    };
    let total = l.graph.len();
    let mut view = crate::view::View::new(total);
    eprintln!(
        "suite {}: {} runs, {} nodes, store {}",
        l.suite.name,
        l.suite.runs.len(),
        total,
        store.root.display()
    );
    let s = sched::run(&l.graph, &store, &opts, &mut |e: &Event| view.on(e));
    view.finish();
    eprintln!(
        "\n{} ran, {} cached, {} failed, {} blocked in {:.1} s",
        s.ran,
        s.cached,
        s.failed.len(),
        s.blocked,
        s.wall_s
    );
    for (label, log) in &s.failed {
        eprintln!("  failed: {label}  (log: {})", log.display());
    }
    Ok(if s.failed.is_empty() && s.blocked == 0 {
        0
    } else {
        1
    })
}

pub fn exec(a: ExecArgs) -> Result<i32> {
    use orchestrator::exec::Outcome;
    match orchestrator::exec::exec(&a.store, &a.key, &a.spec, a.cpu)
        .with_context(|| format!("node {}", a.key))?
    {
        Outcome::Leased => Ok(sched::EXIT_LEASED),
        Outcome::Done | Outcome::AlreadyDone => Ok(0),
    }
}

/// One record per finished run of the suite (runs not evaluated yet are skipped, and
/// counted on stderr).
fn records(l: &Loaded) -> Result<(Vec<RunRecord>, usize)> {
    let mut out = Vec::new();
    let mut missing = 0;
    for (run, key) in &l.graph.runs {
        if !l.store.is_complete("eval", key) {
            missing += 1;
            continue;
        }
        let dir = l.store.entry("eval", key);
        let m: orchestrator::nodes::eval::Metrics =
            serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json"))?)?;
        let Some(Node::Eval(_)) = l.graph.node(key) else {
            continue;
        };
        out.push(RunRecord {
            dataset: run.dataset.clone(),
            method: run.method.name().to_string(),
            config: run.config.clone(),
            hparams: run.hparams.clone(),
            seed: run.seed,
            top1: m.top1,
            trainable: m.train.counts.trainable,
            trainable_pct: m.train.trainable_pct,
            epoch_time_s: m.train.mean_epoch_s(),
            peak_mem_mib: m.train.peak_mem_mib(),
            train_img_s: m.train.mean_img_s(),
            wall_s: m.train.wall_s,
            key: key.clone(),
        });
    }
    Ok((out, missing))
}

pub fn report(a: ReportArgs) -> Result<i32> {
    let format: report::Format = a
        .format
        .parse()
        .map_err(|e| anyhow::anyhow!("--format: {e}"))?;
    let l = load(&a.s)?;
    let (recs, missing) = records(&l)?;
    if missing > 0 {
        eprintln!("note: {missing} of {} runs are not finished yet and are left out (run `vtab-orch run` first)", l.graph.runs.len());
    }
    let dir = &l.store.root;
    std::fs::create_dir_all(dir)?;
    let table = report::build_table(&recs);
    report::write_summary_csv(&recs, &dir.join("summary.csv"))?;
    report::write_table_csv(&table, &dir.join("table.csv"))?;
    let plots = report::write_plots(&recs, &dir.join("plots"))?;
    print!("{}", report::render(&table, &recs, format));
    eprintln!(
        "wrote {}, {} and {} plot(s) under {}",
        dir.join("summary.csv").display(),
        dir.join("table.csv").display(),
        plots.len(),
        dir.join("plots").display()
    );
    Ok(0)
}

#[derive(clap::Args)]
pub struct OverheadArgs {
    /// Runs in the generated suite (each is a train and an eval node).
    #[arg(long, default_value_t = 5000)]
    runs: usize,
    /// Where to put the generated suite and store (default: a temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Orchestration overhead: `plan` of a generated suite of ~2 x `runs` nodes against an
/// empty store, then a fully cached `run` of it (every entry present). Prints seconds.
pub fn overhead(a: OverheadArgs) -> Result<i32> {
    use std::time::Instant;
    let dir = a.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("vtab-overhead-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let datasets = 10usize;
    let per = a.runs.div_ceil(datasets);
    let alphas = per.div_ceil(50).max(1);
    let mut text = String::from("name = \"overhead\"\nstore = \"store\"\n[defaults]\nimg_size = 32\n[backbone]\narch = \"vit_tiny_patch16_224\"\nimg_size = 32\npatch_size = 8\n[backbone.pretrain]\n");
    for d in 0..datasets {
        text += &format!(
            "[datasets.d{d}]\nformat = \"synthetic\"\ntask = \"shape\"\ntest_images = {}\n",
            100 + d
        );
    }
    let ranks: Vec<String> = (1..=50.min(per)).map(|r| r.to_string()).collect();
    let alphas: Vec<String> = (1..=alphas).map(|x| format!("{x}.0")).collect();
    text += &format!(
        "[methods.lora]\nr = [{}]\nalpha = [{}]\ntargets = \"q,v\"\n",
        ranks.join(", "),
        alphas.join(", ")
    );
    let path = dir.join("suite.toml");
    std::fs::write(&path, text)?;
    let args = SuiteArgs {
        suite: path,
        sets: Vec::new(),
        store: None,
    };

    let t = Instant::now();
    let l = load(&args)?;
    let t_load = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let entries = make_plan(&l.graph, &l.store, &l.blocked);
    let t_plan = t.elapsed().as_secs_f64();

    // Fill the store: a complete (artifact-less) entry for every node.
    let store = Store::open(&l.store.root)?;
    for key in l.graph.topo() {
        let node = l.graph.node(&key).expect("node");
        let staged = store.stage(&key)?;
        let m = orchestrator::store::Manifest {
            kind: node.kind().into(),
            key: key.clone(),
            label: node.label(),
            identity: node.identity(),
            fingerprint: node.fingerprint(),
            artifacts: Default::default(),
            wall_s: 0.0,
            host: String::new(),
            code_version: String::new(),
            finished_unix: 0,
        };
        store.commit(&staged, m)?;
    }
    let t = Instant::now();
    let l2 = load(&args)?;
    let opts = RunOptions {
        gpus: Gpus::None,
        jobs_per_gpu: 1,
        exe: std::env::current_exe()?,
    };
    let s = sched::run(&l2.graph, &store, &opts, &mut |_| {});
    let t_run = t.elapsed().as_secs_f64();
    println!(
        "suite of {} runs, {} nodes ({} to run at first)",
        l.suite.runs.len(),
        entries.len(),
        entries.iter().filter(|e| e.status == Status::Run).count()
    );
    println!("load + expand:            {t_load:.3} s");
    println!("plan (empty store):       {t_plan:.3} s");
    println!(
        "run, everything cached:   {t_run:.3} s (load + expand + {} cached, {} ran)",
        s.cached, s.ran
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(0)
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The store to check.
    #[arg(default_value = "results")]
    store: PathBuf,
}

/// Re-hashes every artifact in the store; corrupt or incomplete entries are moved to
/// `<store>/quarantine/` and will be recomputed by the next run. Exit 1 if any was found.
pub fn verify(a: VerifyArgs) -> Result<i32> {
    let store = Store::at(&a.store);
    let entries = store.entries().len();
    let bad = store.verify();
    for (entry, why) in &bad {
        println!("CORRUPT {entry}: {why}");
    }
    println!("{entries} entries checked, {} corrupt", bad.len());
    Ok(if bad.is_empty() { 0 } else { 1 })
}

#[derive(clap::Args)]
pub struct GcArgs {
    /// Suites whose nodes are kept (default: suite.toml).
    #[arg(default_value = "suite.toml")]
    suites: Vec<PathBuf>,
    /// The store (default: the first suite's).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Suite overrides the kept runs were made with (applied to every suite; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Delete; without it, only list.
    #[arg(long)]
    yes: bool,
}

/// Store entries that none of the given suites reaches; listed, and deleted with `--yes`.
pub fn gc(a: GcArgs) -> Result<i32> {
    let mut keep = std::collections::BTreeSet::new();
    let mut root = a.store.clone();
    for path in &a.suites {
        let l = load(&SuiteArgs {
            suite: path.clone(),
            sets: a.sets.clone(),
            store: a.store.clone(),
        })?;
        root.get_or_insert(l.store.root.clone());
        keep.extend(l.graph.topo());
    }
    let store = Store::at(&root.expect("at least one suite"));
    let mut freed = 0u64;
    let mut n = 0;
    for (kind, key) in store.entries() {
        if keep.contains(&key) {
            continue;
        }
        let dir = store.entry(&kind, &key);
        let label = store
            .manifest(&kind, &key)
            .map(|m| m.label)
            .unwrap_or_else(|| "(incomplete)".into());
        let bytes: u64 = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        freed += bytes;
        n += 1;
        println!(
            "{} {kind}/{key} {label} ({:.1} MB)",
            if a.yes { "deleted" } else { "unreachable" },
            bytes as f64 / 1e6
        );
        if a.yes {
            std::fs::remove_dir_all(&dir).with_context(|| format!("deleting {}", dir.display()))?;
        }
    }
    let verb = if a.yes {
        "deleted"
    } else {
        "would free (rerun with --yes to delete)"
    };
    println!(
        "{n} unreachable entries, {:.1} MB {verb}",
        freed as f64 / 1e6
    );
    Ok(0)
}
