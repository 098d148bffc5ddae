//! `vtab-orch`: the command-line entry point. Parses arguments and dispatches; the work
//! lives in the `kernels` and `orchestrator` crates. Exit codes: 0 success, 1 a node
//! failed, 2 the suite or the command line is invalid.
mod cli;
mod export_cmd;
mod fetch_cmd;
mod study_cmd;
mod view;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use kernels::bench::{bench_method, markdown, standard_methods, BenchOptions};
use kernels::train::Precision;
use kernels::VitConfig;
use std::path::PathBuf;
use tch::Device;

#[derive(Parser)]
#[command(
    name = "vtab-orch",
    version,
    about = "Parameter-efficient fine-tuning studies of Vision Transformers",
    after_help = "Suite commands read suite.toml by default and take --set KEY=VALUE, --store DIR and --gpus.\n\
`report` writes its tables and plots into a folder of the suite's own (see `vtab-orch report --help`).\n\n\
Exit codes: 0 success; 1 a node failed or is blocked (run), corruption found (verify), nothing to report;\n\
2 an invalid suite or argument (nothing is written)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a suite: every node not in the store yet, in dependency order, over all GPUs.
    Run(cli::RunArgs),
    /// Show what `run` would do: per node cached / run (and why) / blocked.
    Plan(cli::PlanArgs),
    /// A study on Slurm: nodes done, jobs running (where, since when, which epoch) and queued,
    /// found by their comment; works with or without a driver.
    Status(study_cmd::StatusArgs),
    /// Cancel a study's Slurm jobs (found by their comment: node and store), and nothing else.
    Cancel(study_cmd::CancelArgs),
    /// Tables (CSV, Markdown, JSON) and plots from a suite's finished runs, written to
    /// reports/<suite name>/ beside the store (default results/reports/<suite name>/; or --out DIR); the table is also
    /// printed. Exit 1 when no run is finished (nothing is written then).
    Report(cli::ReportArgs),
    /// Re-hash every artifact of a store; quarantine corrupt entries so they are recomputed.
    Verify(cli::VerifyArgs),
    /// List (and with --yes delete) store entries that no given suite reaches.
    Gc(cli::GcArgs),
    /// Run one node (used by the scheduler in child processes).
    #[command(hide = true)]
    Exec(cli::ExecArgs),
    /// Run nodes handed over on stdin, one after another (used by `run --warm-workers`).
    #[command(hide = true)]
    Worker(cli::WorkerArgs),
    /// Orchestration overhead benchmark: plan and fully cached run of a generated suite.
    Overhead(cli::OverheadArgs),
    /// Download the datasets and weights a suite references and is missing.
    Fetch(fetch_cmd::FetchArgs),
    /// Write one trained run as a peft adapter directory or a merged timm checkpoint.
    Export(export_cmd::ExportArgs),
    /// Print libtorch, CUDA and device information, and whether test hooks are built in.
    Env,
    /// Train-step benchmark of every adaptation method on random data.
    Bench(BenchArgs),
    /// The method catalogue: every method, its suite options, its peft form, and the
    /// trainable parameters of its bench configurations on a ViT (default ViT-B/16, 100 classes).
    Methods(MethodsArgs),
}

#[derive(clap::Args)]
struct MethodsArgs {
    /// timm preset the trainable counts are for.
    #[arg(long, default_value = "vit_base_patch16_224")]
    preset: String,
    /// Classes of the new head.
    #[arg(long, default_value_t = 100)]
    classes: i64,
}

/// Prints the catalogue as Markdown: one row per bench configuration of each method.
fn methods(a: MethodsArgs) -> Result<()> {
    use kernels::method::ParamKind;
    let cfg = VitConfig::preset(&a.preset).ok_or_else(|| {
        anyhow::Error::new(cli::UsageError(format!(
            "--preset: unknown preset `{}` (one of: {})",
            a.preset,
            VitConfig::preset_names().collect::<Vec<_>>().join(", ")
        )))
    })?;
    println!(
        "| method | options | peft form | configuration | trainable ({}, {} classes) | % |",
        a.preset, a.classes
    );
    println!("|---|---|---|---|---:|---:|");
    for info in kernels::adapters::REGISTRY {
        let options: Vec<String> = info
            .params
            .iter()
            .map(|p| match p.kind {
                ParamKind::Int { min, max: i64::MAX } => format!("`{}` (integer >= {min})", p.key),
                ParamKind::Int { min, max } => format!("`{}` ({min}..={max})", p.key),
                ParamKind::Float => format!("`{}` (number)", p.key),
                ParamKind::Bool => format!("`{}` (bool)", p.key),
                ParamKind::Targets => format!("`{}` (layers)", p.key),
                ParamKind::Choice(c) => format!("`{}` ({})", p.key, c.join("/")),
                ParamKind::Names(c) => format!("`{}` (some of {})", p.key, c.join(",")),
            })
            .collect();
        let options = if options.is_empty() {
            "-".to_string()
        } else {
            options.join(", ")
        };
        let peft = info.peft.as_ref().map_or("-", |r| r.peft_type);
        for (i, (row, method)) in (info.bench)().into_iter().enumerate() {
            // The options once per method.
            let options = if i == 0 { options.as_str() } else { "\"" };
            let vit = tch::no_grad(|| kernels::VisionTransformer::new(&cfg, Device::Cpu))?;
            let model = kernels::AdaptedVit::new(vit, &method, Some(a.classes), 0)
                .with_context(|| format!("building {row}"))?;
            let c = model.counts();
            println!(
                "| {} | {options} | {peft} | `{row}`: {} | {} | {:.3} |",
                info.name,
                method.label(),
                c.trainable,
                c.trainable_percent()
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct BenchArgs {
    /// timm preset (vit_tiny/small/base/large_patch16_224).
    #[arg(long, default_value = "vit_base_patch16_224")]
    preset: String,
    /// Override the preset's image size (e.g. 64 for a quick CPU run).
    #[arg(long)]
    img_size: Option<i64>,
    /// Override the preset's depth.
    #[arg(long)]
    depth: Option<i64>,
    #[arg(long, default_value_t = 64)]
    batch: i64,
    #[arg(long, default_value_t = 256)]
    eval_batch: i64,
    /// auto (bf16 autocast on CUDA, fp32 on the CPU), fp32, bf16, or tf32 (fp32 tensors with
    /// TF32 tensor-core matmuls on CUDA, as PyTorch's allow_tf32; plain fp32 on the CPU).
    #[arg(long, default_value = "auto")]
    precision: Precision,
    #[arg(long, default_value_t = 8)]
    warmup: usize,
    #[arg(long, default_value_t = 25)]
    steps: usize,
    #[arg(long, default_value_t = 10)]
    eval_steps: usize,
    /// Comma-separated subset of the configurations (default: all), by the names
    /// `vtab-orch methods` lists (e.g. lora_qkv_r8, dora_qkv_r8, ia3_qkv_fc2).
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// cpu, cuda or cuda:N (default: cuda if available).
    #[arg(long)]
    device: Option<String>,
    /// Keep frozen weights in fp32 under autocast (peft's behaviour) instead of bf16.
    #[arg(long)]
    no_cast_frozen: bool,
    /// Also write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_device(s: Option<&str>) -> Result<Device> {
    Ok(match s {
        None => Device::cuda_if_available(),
        Some("cpu") => Device::Cpu,
        Some("cuda") => Device::Cuda(0),
        Some(d) => match d.strip_prefix("cuda:") {
            Some(i) => Device::Cuda(i.parse().with_context(|| format!("bad device `{d}`"))?),
            None => bail!("unknown device `{d}` (cpu, cuda, cuda:N)"),
        },
    })
}

fn bench(a: BenchArgs) -> Result<()> {
    let usage = |msg: String| anyhow::Error::new(cli::UsageError(msg));
    let mut cfg = VitConfig::preset(&a.preset).ok_or_else(|| {
        usage(format!(
            "--preset: unknown preset `{}` (one of: {})",
            a.preset,
            VitConfig::preset_names().collect::<Vec<_>>().join(", ")
        ))
    })?;
    if let Some(s) = a.img_size {
        cfg.img_size = s;
    }
    if let Some(d) = a.depth {
        cfg.depth = d;
    }
    let device = parse_device(a.device.as_deref()).map_err(|e| usage(format!("--device: {e}")))?;
    if device.is_cuda() && !tch::Cuda::is_available() {
        return Err(usage(format!(
            "--device {}: CUDA is not available to libtorch (`vtab-orch env`); use --device cpu",
            a.device.unwrap_or_default()
        )));
    }
    let opts = BenchOptions {
        cfg,
        num_classes: 100,
        batch: a.batch,
        eval_batch: a.eval_batch,
        warmup: a.warmup,
        steps: a.steps,
        eval_steps: a.eval_steps,
        precision: a.precision,
        device,
        cast_frozen: !a.no_cast_frozen,
    };
    let all = standard_methods();
    for m in &a.methods {
        if !all.iter().any(|(n, _)| n == m) {
            return Err(usage(format!(
                "--methods: unknown method `{m}` (one of: {})",
                all.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    eprintln!(
        "bench: {} img {} depth {} batch {} eval-batch {} precision {:?} device {:?} cast-frozen {}",
        a.preset, opts.cfg.img_size, opts.cfg.depth, opts.batch, opts.eval_batch, opts.precision, device, opts.cast_frozen
    );
    let mut rows = Vec::new();
    for (name, method) in all
        .iter()
        .filter(|(n, _)| a.methods.is_empty() || a.methods.iter().any(|m| m == n))
    {
        let row =
            bench_method(name, method, &opts).with_context(|| format!("benchmarking {name}"))?;
        eprintln!("{}", serde_json::to_string(&row)?);
        rows.push(row);
    }
    print!("{}", markdown(&rows));
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`vtab-orch plan --json | head`)
/// panics. The default action ends the process quietly instead, as for other Unix tools.
/// Not in `exec` children: their progress pipe closes when the parent dies, and they must
/// finish their node (under its lease) all the same. Not in `run` either: a driver whose
/// output pipe closed (`run | tee log`, Ctrl-C) must still cancel its jobs (its writes ignore
/// the error instead).
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn env() {
    println!("vtab-orch {}", env!("CARGO_PKG_VERSION"));
    println!("cuda available: {}", tch::Cuda::is_available());
    println!("cuda devices: {}", tch::Cuda::device_count());
    println!("cudnn available: {}", tch::Cuda::cudnn_is_available());
    println!("cpu threads: {}", tch::get_num_threads());
    // The end-to-end tests that use the hooks check this line.
    let hooks = orchestrator::test_hooks::COMPILED_IN;
    println!("test hooks: {}", if hooks { "on" } else { "off" });
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Exec(_) | Cmd::Worker(_) | Cmd::Run(_)) {
        restore_sigpipe();
    }
    let result = match cli.cmd {
        Cmd::Run(a) => cli::run(a),
        Cmd::Plan(a) => cli::plan(a),
        Cmd::Status(a) => study_cmd::status(a),
        Cmd::Cancel(a) => study_cmd::cancel(a),
        Cmd::Report(a) => cli::report(a),
        Cmd::Exec(a) => cli::exec(a),
        Cmd::Worker(a) => cli::worker(a),
        Cmd::Overhead(a) => cli::overhead(a),
        Cmd::Verify(a) => cli::verify(a),
        Cmd::Gc(a) => cli::gc(a),
        Cmd::Fetch(a) => fetch_cmd::fetch(a),
        Cmd::Export(a) => export_cmd::export(a),
        Cmd::Env => {
            env();
            Ok(0)
        }
        Cmd::Bench(a) => bench(a).map(|_| 0),
        Cmd::Methods(a) => methods(a).map(|_| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            use orchestrator::report::ReportError;
            let bad_reference = matches!(
                e.downcast_ref::<ReportError>(),
                Some(ReportError::Reference { .. } | ReportError::InsideStore { .. })
            );
            let code = if bad_reference
                || e.downcast_ref::<orchestrator::suite::SuiteError>()
                    .is_some()
                || e.downcast_ref::<cli::UsageError>().is_some()
            {
                2
            } else {
                1
            };
            eprintln!("error: {e:#}");
            std::process::exit(code);
        }
    }
}
