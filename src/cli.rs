//! The suite commands (`run`, `plan`, `report`, `exec`): argument types, loading and
//! expanding the suite, and the terminal view of scheduler events.
use crate::view::say;
use anyhow::{Context, Result};
use orchestrator::graph::Node;
use orchestrator::load::Loaded;
use orchestrator::numerics::DeviceKind;
use orchestrator::plan::{plan as make_plan, render, Status};
use orchestrator::report;
use orchestrator::sched::local::{self, LocalLauncher, LocalOptions};
use orchestrator::sched::slurm::{SlurmLauncher, SlurmOptions};
use orchestrator::sched::{self, Event, Gpus, Launcher};
use orchestrator::store::Store;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SuiteArgs {
    /// The suite file.
    #[arg(default_value = "suite.toml")]
    suite: PathBuf,
    /// Override a suite setting, e.g. `--set defaults.epochs=2` (TOML value syntax; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Store directory (default: the suite's `store`, else results/store/ next to the suite).
    #[arg(long)]
    store: Option<PathBuf>,
    /// GPUs for train/eval nodes: auto (all that libtorch sees, else the CPU), none (CPU), or
    /// a list like 0,2. Decides what runs are keyed for: `cuda-bf16` on GPUs, `cpu-fp32`
    /// on the CPU (with the default `precision = "auto"`); which GPUs is not part of a key.
    #[arg(long, default_value = "auto")]
    gpus: Gpus,
}

/// An invalid argument found after parsing (exit code 2, like clap's own errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The device kind device nodes compute on for `--gpus`.
fn device_kind(gpus: &Gpus) -> DeviceKind {
    match gpus {
        Gpus::None => DeviceKind::Cpu,
        Gpus::List(_) => DeviceKind::Cuda,
        Gpus::Auto if tch::Cuda::is_available() => DeviceKind::Cuda,
        Gpus::Auto => DeviceKind::Cpu,
    }
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    s: SuiteArgs,
    /// Concurrent nodes per GPU (at least 1).
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    jobs_per_gpu: usize,
    /// Run the device nodes of each GPU slot (or of the CPU) one after another in one warm
    /// worker process, instead of a process per node: libtorch is loaded and a CUDA context
    /// made once per slot. A node that fails or crashes still fails alone (its worker is
    /// replaced). Local launcher only.
    #[arg(long)]
    warm_workers: bool,
    /// Where nodes run: local (child processes on this machine) or slurm (one sbatch job
    /// per node).
    #[arg(long, value_enum, default_value_t = LauncherKind::Local)]
    launcher: LauncherKind,
    /// An extra sbatch argument for every job, after the suite's [slurm] table, e.g.
    /// `--slurm-arg=--partition=gpu` (repeatable).
    #[arg(long = "slurm-arg", value_name = "ARG", allow_hyphen_values = true)]
    slurm_args: Vec<String>,
    /// Seconds a node that ended well may take to show its store entry here before it counts
    /// as failed: on a shared filesystem (NFS, Lustre) an entry written on another host shows
    /// up after the client's attribute cache expires (often 30-60 s).
    #[arg(long, value_name = "SECONDS", default_value_t = sched::DEFAULT_ENTRY_WAIT_S, value_parser = entry_wait)]
    entry_wait: f64,
}

fn entry_wait(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("expected seconds from 0 to 86400, found {s:?}")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LauncherKind {
    Local,
    Slurm,
}

#[derive(clap::Args)]
pub struct PlanArgs {
    #[command(flatten)]
    s: SuiteArgs,
    /// Print one JSON array (key, kind, label, status, reason, deps per node).
    #[arg(long)]
    json: bool,
    /// Decode every image of every real dataset split first and list each file that cannot
    /// be read (exit 1 if any), writing nothing.
    #[arg(long)]
    check_data: bool,
    /// Concurrent nodes per GPU the estimate's wall time assumes (as `run --jobs-per-gpu`).
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    jobs_per_gpu: usize,
}

#[derive(clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    s: SuiteArgs,
    /// What is printed on stdout: md (the report), csv (the table), json (everything), latex
    /// (the VTAB-1k table as a booktabs tabular: vtab_table.tex).
    #[arg(long, default_value = "md")]
    format: report::Format,
    /// A CSV of published numbers (dataset,method,top1,source) to show beside ours, for the
    /// datasets prepared from the official VTAB-1k lists (e.g. docs/reference/*.csv).
    #[arg(long, value_name = "FILE")]
    reference: Option<PathBuf>,
    /// The report folder (default: reports/<suite name>/ beside the store, i.e. results/reports/<suite name>/). Its
    /// previous report files (CSVs, vtab_table.tex, report.md, plots/*.svg and *.png) are
    /// replaced; other files stay. A store (a folder with CACHEDIR.TAG) is refused.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    #[arg(long)]
    store: PathBuf,
    /// Compute on the CPU.
    #[arg(long)]
    cpu: bool,
    /// A warm worker on a cluster: take assignments from this pool folder (a Slurm pilot job;
    /// see sched/slurm/pool.rs) instead of stdin.
    #[arg(long, value_name = "DIR")]
    pool: Option<PathBuf>,
    /// The pool queue it serves: gpu or cpu.
    #[arg(long, default_value = "gpu")]
    kind: String,
    /// Seconds without an assignment before it ends.
    #[arg(long, default_value_t = 60.0)]
    idle_s: f64,
    /// Its job's time limit in seconds: it takes no node whose expected time does not fit.
    #[arg(long)]
    time_limit_s: Option<u64>,
}

/// A warm worker: runs the nodes its launcher hands it on stdin (see sched/worker.rs), or
/// those of a pool folder (`--pool`).
pub fn worker(a: WorkerArgs) -> Result<i32> {
    let Some(pool) = a.pool else {
        return Ok(orchestrator::worker::serve(&a.store, a.cpu));
    };
    if !(a.idle_s.is_finite() && (0.0..=86_400.0).contains(&a.idle_s)) {
        return usage_error("--idle-s: expected seconds from 0 to 86400");
    }
    let started = std::time::Instant::now();
    Ok(orchestrator::worker::serve_pool(
        &orchestrator::worker::PoolOptions {
            store: a.store,
            pool,
            kind: a.kind,
            cpu: a.cpu,
            idle: std::time::Duration::from_secs_f64(a.idle_s),
            deadline: a
                .time_limit_s
                .map(|s| started + std::time::Duration::from_secs(s)),
        },
    ))
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
    /// The run launching it (recorded in the node's manifest).
    #[arg(long)]
    run: Option<String>,
}

/// The suite as `run --launcher` would load it (on Slurm, `--gpus auto` keys GPU nodes for
/// CUDA wherever the driver runs).
pub fn load_suite_for_launcher(a: &SuiteArgs, launcher: LauncherKind) -> Result<Loaded> {
    let device = match (launcher, &a.gpus) {
        (LauncherKind::Slurm, Gpus::Auto) => DeviceKind::Cuda,
        _ => device_kind(&a.gpus),
    };
    load_for(a, device)
}

fn load(a: &SuiteArgs) -> Result<Loaded> {
    load_for(a, device_kind(&a.gpus))
}

fn load_for(a: &SuiteArgs, device: DeviceKind) -> Result<Loaded> {
    match orchestrator::load::load(&a.suite, &a.sets, a.store.as_deref(), device) {
        Ok(l) => Ok(l),
        Err(mut e) => {
            // Missing data or weights: name the `fetch` command that gets them.
            let fetchable = orchestrator::suite::load(&a.suite, &a.sets)
                .ok()
                .and_then(|s| crate::fetch_cmd::hint(&s));
            if let Some(h) = fetchable {
                e.errors
                    .push(orchestrator::suite::Diagnostic::invalid("", h));
            }
            Err(e.into())
        }
    }
}

pub fn plan(a: PlanArgs) -> Result<i32> {
    let l = load(&a.s)?;
    let entries = make_plan(&l.graph, &l.store, &Default::default());
    let data_ok = check_data(&l, a.check_data)?;
    if l.store.root.exists() {
        let lease = orchestrator::lease::Timing::from_env().map_err(UsageError)?;
        if let Some(n) = orchestrator::lease::filesystem_notice(&l.store.root, lease) {
            eprintln!("note: {n}");
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", render(&entries));
        print!(
            "{}",
            plan_estimate(&l, &entries, &a.s.gpus, a.jobs_per_gpu).render()
        );
    }
    Ok(
        if entries.iter().any(|e| e.status == Status::Blocked) || !data_ok {
            1
        } else {
            0
        },
    )
}

/// What running the plan would cost on this machine's local launcher (`--gpus`,
/// `--jobs-per-gpu`), from the store's history.
fn plan_estimate(
    l: &Loaded,
    entries: &[orchestrator::plan::PlanEntry],
    gpus: &Gpus,
    jobs_per_gpu: usize,
) -> orchestrator::estimate::Estimate {
    let count = match (l.device, gpus) {
        (DeviceKind::Cpu, _) | (_, Gpus::None) => 0,
        (_, Gpus::List(list)) => list.len(),
        (_, Gpus::Auto) => tch::Cuda::device_count().max(0) as usize,
    };
    let slots = orchestrator::estimate::Slots {
        gpus: count,
        per_gpu: jobs_per_gpu,
        cpu_threads: local::default_cpu_threads(),
    };
    orchestrator::estimate::estimate(&l.graph, &l.store, entries, l.device, slots)
}

/// Warns on stderr about classes without an example in a real split (e.g. too few images
/// for the test hold-out); with `decode`, also decodes every image of every real split and
/// lists each file that cannot be read. Returns whether every file could be read.
fn check_data(l: &Loaded, decode: bool) -> Result<bool> {
    let mut ok = true;
    for key in l.graph.topo() {
        let Some(Node::Prep(p)) = l.graph.node(&key) else {
            continue;
        };
        let check = orchestrator::nodes::prep::check_data(p, decode)
            .with_context(|| format!("checking datasets.{}", p.dataset))?;
        let split = serde_json::to_value(p.split)?;
        let split = split.as_str().unwrap_or_default();
        if !check.empty_classes.is_empty() {
            eprintln!(
                "warning: datasets.{} {split}: {} class(es) have no image in this split: {}",
                p.dataset,
                check.empty_classes.len(),
                check.empty_classes.join(", ")
            );
        }
        if !check.unreadable.is_empty() {
            ok = false;
            eprintln!(
                "{}",
                orchestrator::nodes::prep::unreadable(
                    &format!("datasets.{} {split}", p.dataset),
                    &check.unreadable
                )
            );
        }
        if decode
            && check.unreadable.is_empty()
            && matches!(p.source, orchestrator::suite::Source::Real(_))
        {
            eprintln!("checked datasets.{} {split}: every file decodes", p.dataset);
        }
    }
    Ok(ok)
}

/// An invalid command line: said on stderr, exit code 2.
fn usage_error(msg: impl std::fmt::Display) -> Result<i32> {
    eprintln!("error: {msg}");
    Ok(2)
}

/// The local launcher for `--gpus` and `--jobs-per-gpu`: GPU slots are positions in this
/// process's CUDA_VISIBLE_DEVICES.
fn local_launcher(
    gpus: &Gpus,
    jobs_per_gpu: usize,
    warm: bool,
    store: &Store,
) -> std::result::Result<LocalLauncher, String> {
    let count = if *gpus == Gpus::None {
        0
    } else {
        tch::Cuda::device_count().max(0) as usize
    };
    let parent = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let visible = local::visible_devices(parent.as_deref(), count);
    Ok(LocalLauncher::new(LocalOptions {
        exe: std::env::current_exe().map_err(|e| e.to_string())?,
        store: store.root.clone(),
        gpus: local::select_gpus(gpus, &visible)?,
        per_gpu: jobs_per_gpu,
        cpu_threads: local::default_cpu_threads(),
        warm,
    }))
}

pub fn run(a: RunArgs) -> Result<i32> {
    let gpus = a.s.gpus.clone();
    if let Gpus::List(list) = &gpus {
        let visible = tch::Cuda::device_count().max(0) as usize;
        if let Some(bad) = list.iter().find(|g| **g >= visible) {
            let hint = if visible == 0 {
                "; use --gpus none to run on the CPU".to_string()
            } else {
                String::new()
            };
            return Err(UsageError(format!("--gpus: GPU {bad} does not exist (libtorch sees {visible}; `vtab-orch env` lists them){hint}")).into());
        }
    }
    if a.launcher == LauncherKind::Local && !a.slurm_args.is_empty() {
        return usage_error("--slurm-arg needs --launcher slurm");
    }
    // On Slurm, `auto` means a GPU per GPU node wherever the driver runs (a login node
    // often has none): the nodes are keyed for CUDA.
    let l = load_suite_for_launcher(&a.s, a.launcher)?;
    let store = Store::open(&l.store.root)
        .with_context(|| format!("opening the store {}", l.store.root.display()))?;
    // Which suite asked for which entries: `gc` of another suite tells them apart.
    orchestrator::suite_log::record(&store.root, &l.suite.name, &l.suite.path, l.graph.topo())?;
    let mut launcher: Box<dyn Launcher> = match a.launcher {
        LauncherKind::Local => {
            match local_launcher(&gpus, a.jobs_per_gpu, a.warm_workers, &store) {
                Ok(l) => Box::new(l),
                Err(e) => return usage_error(e),
            }
        }
        LauncherKind::Slurm if a.warm_workers => {
            return usage_error("--warm-workers is for --launcher local; a Slurm job runs one node")
        }
        LauncherKind::Slurm => {
            let gpus = match gpus {
                Gpus::Auto => true,
                Gpus::None => false,
                Gpus::List(_) => {
                    return usage_error(
                        "--gpus with a list names GPUs of this machine; with --launcher slurm the cluster places GPU jobs: use auto (a GPU per GPU node) or none",
                    )
                }
            };
            if a.jobs_per_gpu != 1 {
                return usage_error(
                    "--jobs-per-gpu is for --launcher local; a Slurm job has its GPU to itself",
                );
            }
            let launcher = SlurmLauncher::new(SlurmOptions {
                exe: std::env::current_exe()?,
                store: std::path::absolute(&store.root)?,
                config: l.suite.slurm.clone(),
                cli_args: a.slurm_args.clone(),
                gpus,
            });
            for n in &launcher.notes {
                say!("note: {n}");
            }
            Box::new(launcher)
        }
    };
    // Ctrl-C, SIGTERM or SIGHUP: the scheduler cancels what it started, then stops. Under
    // `nohup` (SIGHUP ignored) a closed SSH session must not stop the study: ctrlc's handler
    // would replace the inherited SIG_IGN, so it is put back.
    let hangup_ignored = signal_ignored(libc::SIGHUP);
    let _ =
        ctrlc::set_handler(|| sched::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst));
    if hangup_ignored {
        // SAFETY: restores the disposition this process was started with.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    }
    let total = l.graph.len() + l.graph.pending_finals();
    let mut view = crate::view::View::new(total);
    say!(
        "suite {}: {} runs, {} nodes, store {}",
        l.suite.name,
        l.suite.runs.len(),
        total,
        store.root.display()
    );
    let lease = orchestrator::lease::Timing::from_env().map_err(UsageError)?;
    if let Some(n) = orchestrator::lease::filesystem_notice(&store.root, lease) {
        say!("note: {n}");
    }
    let opts = sched::Options {
        entry_wait: std::time::Duration::from_secs_f64(a.entry_wait),
        lease,
    };
    let s = orchestrator::work::run(
        &l.graph,
        &store,
        launcher.as_mut(),
        opts,
        &mut |e: &Event| view.on(e),
    );
    view.finish();
    say!(
        "\n{} ran, {} cached, {} failed, {} blocked in {:.1} s (record: {})",
        s.ran,
        s.cached,
        s.failed.len(),
        s.blocked,
        s.wall_s,
        s.record.display()
    );
    for (label, log) in &s.failed {
        say!("  failed: {label}  (log: {})", log.display());
    }
    Ok(if s.interrupted {
        130
    } else if s.failed.is_empty() && s.blocked == 0 {
        0
    } else {
        1
    })
}

pub fn exec(a: ExecArgs) -> Result<i32> {
    use orchestrator::exec::Outcome;
    let outcome = orchestrator::exec::exec(&a.store, &a.key, &a.spec, a.cpu, a.run.as_deref())
        .with_context(|| format!("node {}", a.key));
    match outcome {
        Ok(Outcome::Leased) => Ok(sched::EXIT_LEASED),
        Ok(Outcome::Done | Outcome::AlreadyDone) => Ok(0),
        Err(e) => {
            // Also on the progress channel (a pipe): the log may be on a disk that is full.
            orchestrator::nodes::progress(serde_json::json!({ "error": format!("{e:#}") }));
            Err(e)
        }
    }
}

pub fn report(a: ReportArgs) -> Result<i32> {
    let format = a.format;
    let reference = match &a.reference {
        // A bad file is an invalid argument: main exits with code 2 on ReportError::Reference.
        Some(path) => Some(report::load_reference(path)?),
        None => None,
    };
    let l = load(&a.s)?;
    let dir = a
        .out
        .clone()
        .unwrap_or_else(|| report::default_dir(&l.store.root, &l.suite.name));
    if l.suite.protocol.is_some() {
        return report_protocol(&l, &dir, format, reference.as_ref());
    }
    let c = orchestrator::records::collect(&l, &l.other_device()?)?;
    let runs = l.graph.runs.len();
    if c.records.is_empty() {
        eprintln!(
            "error: nothing to report: none of the {runs} runs of suite `{}` is finished in the \
             store {} (run `vtab-orch run {}` first); nothing written to {}",
            l.suite.name,
            l.store.root.display(),
            l.suite.path.display(),
            dir.display()
        );
        return Ok(1);
    }
    if c.missing > 0 {
        eprintln!(
            "note: {} of {runs} runs are not finished yet and are left out (run `vtab-orch run` first)",
            c.missing
        );
    }
    let recs = c.records;
    let table = report::build_table(&recs);
    let md = report::render_with(&table, &recs, report::Format::Md, reference.as_ref());
    let written = report::write_report(&dir, &recs, &table, &md)?;
    print!(
        "{}",
        report::render_with(&table, &recs, format, reference.as_ref())
    );
    let plots = written
        .files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "svg"))
        .count();
    eprintln!(
        "wrote summary.csv, table.csv, per_class.csv, vtab_table.csv, vtab_table.tex, report.md \
         and {plots} plot(s) (SVG and PNG) to {}",
        written.dir.display()
    );
    if let Some(tagged) = &written.under_cachedir {
        eprintln!(
            "note: {} carries CACHEDIR.TAG, so backup tools skip this report; copy it elsewhere \
             or write it with --out outside that folder",
            tagged.display()
        );
    }
    Ok(0)
}

/// `report` of a suite under `[protocol]`: the VTAB-1k table, the finals' metrics and cost,
/// the selections and the search, and the plots (orchestrator/src/report/protocol.rs).
fn report_protocol(
    l: &Loaded,
    dir: &std::path::Path,
    format: report::Format,
    reference: Option<&report::Reference>,
) -> Result<i32> {
    if dir.join("CACHEDIR.TAG").exists() {
        return Err(UsageError(format!(
            "report --out {}: that folder is a store; write the report elsewhere",
            dir.display()
        ))
        .into());
    }
    let other = l.other_device()?;
    let c = orchestrator::records::collect_protocol(l, &other)?;
    if c.finals.is_empty() {
        eprintln!(
            "error: nothing to report: no final run of suite `{}` is finished in the store {} \
             (run `vtab-orch run {}` first); nothing written to {}",
            l.suite.name,
            l.store.root.display(),
            l.suite.path.display(),
            dir.display()
        );
        return Ok(1);
    }
    if c.missing > 0 {
        eprintln!("note: {} selections or final runs are not finished yet and are left out (run `vtab-orch run` first)", c.missing);
    }
    let p = report::protocol::Protocol {
        suite: &l.suite.name,
        finals: &c.finals,
        search: &c.search,
        choices: &c.choices,
        reference,
    };
    let written = report::protocol::write(dir, &p)?;
    print!("{}", report::protocol::render(&p, format));
    let plots = written
        .files
        .iter()
        .filter(|f| f.extension().is_some_and(|x| x == "svg"))
        .count();
    eprintln!(
        "wrote selection.csv, search.csv, final.csv, summary.csv, per_class.csv, vtab_table.csv, \
         vtab_table.tex, report.md and {plots} plot(s) (SVG and PNG) to {}",
        written.dir.display()
    );
    if let Some(tagged) = &written.under_cachedir {
        eprintln!(
            "note: {} carries CACHEDIR.TAG, so backup tools skip this report; copy it elsewhere \
             or write it with --out outside that folder",
            tagged.display()
        );
    }
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
        gpus: Gpus::None,
    };

    let t = Instant::now();
    let l = load(&args)?;
    let t_load = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let entries = make_plan(&l.graph, &l.store, &Default::default());
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
            fingerprint: orchestrator::identity::fingerprint(node),
            artifacts: Default::default(),
            wall_s: 0.0,
            host: String::new(),
            code_version: String::new(),
            finished_unix: 0,
            run: None,
        };
        store.commit(&staged, m)?;
    }
    let t = Instant::now();
    let l2 = load(&args)?;
    let mut launcher =
        local_launcher(&Gpus::None, 1, false, &store).map_err(|e| anyhow::anyhow!(e))?;
    let s = orchestrator::work::run(
        &l2.graph,
        &store,
        &mut launcher,
        sched::Options::default(),
        &mut |_| {},
    );
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
    /// A suite file (its store is checked) or a store directory.
    #[arg(default_value = "suite.toml")]
    target: PathBuf,
    /// The store to check (default: the suite's).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Suite overrides (for a suite whose store is set with --set store=...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

/// Re-hashes every artifact in the store; corrupt or incomplete entries are moved to
/// `<store>/quarantine/` and will be recomputed by the next run. Exit 1 if any was found;
/// exit 2 if there is no store there.
pub fn verify(a: VerifyArgs) -> Result<i32> {
    let root = match (&a.store, a.target.is_dir()) {
        (Some(s), _) => s.clone(),
        (None, true) => a.target.clone(),
        (None, false) => orchestrator::suite::load(&a.target, &a.sets)?.store,
    };
    if !root.join("CACHEDIR.TAG").is_file() {
        let what = if root.exists() {
            "is not a vtab-orch store (no CACHEDIR.TAG)"
        } else {
            "does not exist (nothing has run into it yet)"
        };
        return Err(UsageError(format!("verify: {} {what}", root.display())).into());
    }
    let store = Store::at(&root);
    let entries = store.entries().len();
    let bad = store.verify();
    for (entry, why) in &bad {
        println!("CORRUPT {entry}: {why}");
    }
    println!(
        "{entries} entries checked in {}, {} corrupt",
        root.display(),
        bad.len()
    );
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
/// Entries that another suite recorded in the store (`<store>/suites/`) are announced first
/// and marked, so that a study is not taken for garbage because its suite was not named.
pub fn gc(a: GcArgs) -> Result<i32> {
    use orchestrator::suite_log;
    let mut keep = std::collections::BTreeSet::new();
    let mut root = a.store.clone();
    let mut named = Vec::new();
    for path in &a.suites {
        let args = SuiteArgs {
            suite: path.clone(),
            sets: a.sets.clone(),
            store: a.store.clone(),
            gpus: Gpus::None,
        };
        let l = load(&args)?;
        root.get_or_insert(l.store.root.clone());
        named.push(suite_log::absolute(&l.suite.path));
        // Runs made for either device kind are the suite's.
        keep.extend(l.graph.topo());
        keep.extend(l.other_device()?.topo());
    }
    let store = Store::at(&root.expect("at least one suite"));
    let unreachable: Vec<(String, String)> = store
        .entries()
        .into_iter()
        .filter(|(_, key)| !keep.contains(key))
        .collect();
    // Other suites that ran here, with how many of the unreachable entries they asked for.
    let others: Vec<(suite_log::SuiteRecord, usize)> = suite_log::all(&store.root)
        .into_iter()
        .filter(|r| !named.contains(&r.path))
        .map(|r| {
            let n = unreachable
                .iter()
                .filter(|(_, k)| r.keys.contains(k))
                .count();
            (r, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    if !others.is_empty() {
        println!(
            "note: this store also holds runs of other suites; their entries are listed below as \
             unreachable only because those suites were not named:"
        );
        for (r, n) in &others {
            println!("  suite `{}` ({}): {n} entries", r.name, r.path.display());
        }
        let paths: Vec<String> = a
            .suites
            .iter()
            .map(|p| p.display().to_string())
            .chain(others.iter().map(|(r, _)| r.path.display().to_string()))
            .collect();
        println!(
            "  to keep them, name those suites too: vtab-orch gc {}",
            paths.join(" ")
        );
    }
    let mut freed = 0u64;
    for (kind, key) in &unreachable {
        let dir = store.entry(kind, key);
        let label = store
            .manifest(kind, key)
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
        let owner: Vec<&str> = others
            .iter()
            .filter(|(r, _)| r.keys.contains(key))
            .map(|(r, _)| r.name.as_str())
            .collect();
        let owner = match owner.is_empty() {
            true => String::new(),
            false => format!(" [suite {}]", owner.join(", ")),
        };
        println!(
            "{} {kind}/{key} {label} ({:.1} MB){owner}",
            if a.yes { "deleted" } else { "unreachable" },
            bytes as f64 / 1e6
        );
        if a.yes {
            std::fs::remove_dir_all(&dir).with_context(|| format!("deleting {}", dir.display()))?;
        }
    }
    if a.yes {
        // Lease records left by holders that committed or died long ago.
        let timing = orchestrator::lease::Timing::from_env().unwrap_or_default();
        let swept = orchestrator::lease::sweep(&store.root, timing);
        if swept > 0 {
            println!("removed {swept} lease records of holders that committed or died");
        }
    }
    let verb = if a.yes {
        "deleted"
    } else {
        "would free (rerun with --yes to delete)"
    };
    println!(
        "{} unreachable entries, {:.1} MB {verb}",
        unreachable.len(),
        freed as f64 / 1e6
    );
    Ok(0)
}

/// Whether `sig` is ignored in this process (inherited: `nohup` ignores SIGHUP).
fn signal_ignored(sig: libc::c_int) -> bool {
    // SAFETY: reads the current disposition only (a null new action changes nothing).
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}
