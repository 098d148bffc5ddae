//! `vtab-orch fetch`: downloads the datasets and weights a suite references and is missing.
//! Owns only the command's arguments and terminal output; the work is `orchestrator::fetch`.
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use orchestrator::datasets::RealSource;
use orchestrator::fetch::{self, Client, Missing, Progress, UnpackLimits, Vtab1kArchive};
use orchestrator::suite::{self, Source};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct FetchArgs {
    /// The suite file.
    #[arg(default_value = "suite.toml")]
    suite: PathBuf,
    /// Only `data` or only `weights`.
    #[arg(long)]
    only: Option<String>,
    /// Put datasets and weights under DIR (named as in the suite) instead of the suite's paths;
    /// prints the `--set` overrides that point the suite at them.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Your copy of the VTAB-1k archive (vtab1k-pytorch / NOAH layout; it has no official
    /// URL): a .zip or .tar.gz file, or an http(s) URL with --vtab1k-sha256. Its tasks are
    /// unpacked into the folder holding the suite's VTAB-1k roots, each checked.
    #[arg(long, value_name = "FILE|URL")]
    vtab1k: Option<String>,
    /// The sha256 of the archive at the --vtab1k URL.
    #[arg(long, value_name = "HEX")]
    vtab1k_sha256: Option<String>,
    /// Override a suite setting (as for `run`; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Refuse a download larger than this (GiB; a server's Content-Length is held to as well).
    #[arg(long, value_name = "GIB", default_value_t = 64.0)]
    max_download_gib: f64,
    /// Refuse an archive that unpacks to more than this (GiB, all files together).
    #[arg(long, value_name = "GIB", default_value_t = 64.0)]
    max_unpacked_gib: f64,
    /// Refuse an archive with more entries (files and folders) than this.
    #[arg(long, value_name = "N", default_value_t = UnpackLimits::default().max_entries)]
    max_entries: u64,
    /// Refuse an archive that expands more than this many times its compressed size (beyond
    /// each entry's first MiB): a compression bomb.
    #[arg(long, value_name = "R", default_value_t = UnpackLimits::default().max_ratio)]
    max_ratio: u64,
}

/// `gib` GiB in bytes, for a limit given on the command line (positive and finite).
fn gib_bytes(flag: &str, gib: f64) -> Result<u64> {
    if !(gib.is_finite() && gib > 0.0 && gib <= 1e9) {
        anyhow::bail!("{flag} {gib}: expected a positive number of GiB");
    }
    Ok((gib * (1u64 << 30) as f64) as u64)
}

/// An indicatif bar with bytes and rate on a terminal; nothing otherwise.
struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn begin(&mut self, name: &str, done: u64, total: Option<u64>) {
        if !std::io::stderr().is_terminal() {
            eprintln!("downloading {name}");
            return;
        }
        let bar = ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_string());
        bar.set_position(done);
        self.0 = Some(bar);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
    fn end(&mut self) {
        if let Some(b) = self.0.take() {
            b.finish();
        }
    }
}

pub fn fetch(a: FetchArgs) -> Result<i32> {
    let (data, weights) = match a.only.as_deref() {
        None => (true, true),
        Some("data") => (true, false),
        Some("weights") => (false, true),
        Some(o) => {
            eprintln!("error: --only {o}: expected `data` or `weights`");
            return Ok(2);
        }
    };
    let mut s = suite::load(&a.suite, &a.sets)?;
    let mut sets = Vec::new();
    if let Some(dir) = &a.dir {
        // Absolute: the printed `--set` values are read relative to the suite file, not here.
        let dir = &std::path::absolute(dir)?;
        // Each root becomes DIR/<its last name>: two datasets must not land on one folder.
        let mut seen = std::collections::BTreeMap::new();
        for d in s.datasets.values_mut() {
            if let Source::Real(r) = &mut d.source {
                r.root = dir.join(r.root.file_name().unwrap_or_default());
                if let Some(other) = seen.insert(r.root.clone(), d.name.clone()) {
                    eprintln!(
                        "error: --dir: datasets.{other} and datasets.{} would both go to {}; \
                         fetch without --dir, or give their roots different folder names",
                        d.name,
                        r.root.display()
                    );
                    return Ok(2);
                }
                sets.push(format!("datasets.{}.root={:?}", d.name, r.root));
            }
        }
        if let suite::Weights::File(p) = &mut s.backbone.weights {
            *p = dir.join(p.file_name().unwrap_or_default());
            sets.push(format!("backbone.weights={p:?}"));
        }
    }
    let vtab1k = match &a.vtab1k {
        Some(spec) => match Vtab1kArchive::parse(spec, a.vtab1k_sha256.as_deref()) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(2);
            }
        },
        None => None,
    };
    let mut client = Client::new();
    client.max_download_bytes = gib_bytes("--max-download-gib", a.max_download_gib)?;
    client.unpack_limits = UnpackLimits {
        max_bytes: gib_bytes("--max-unpacked-gib", a.max_unpacked_gib)?,
        max_entries: a.max_entries,
        max_ratio: a.max_ratio,
    };
    let mut bar = Bar(None);
    let mut manual = Vec::new();
    let mut vtab1k_sources = Vec::new();
    let todo = fetch::missing(&s, data, weights);
    if todo.is_empty() {
        eprintln!("{}: nothing to fetch", a.suite.display());
    }
    for m in todo {
        match m {
            Missing::Data {
                dataset,
                root,
                archive,
            } => {
                let src = real_source(&s, &dataset)
                    .ok_or_else(|| anyhow::anyhow!("dataset {dataset} is not a real dataset"))?;
                let at = fetch::fetch_archive(&client, &src, &archive, &mut bar)?;
                eprintln!(
                    "{dataset}: {} unpacked at {} (root {})",
                    archive.file_name,
                    at.display(),
                    root.display()
                );
            }
            Missing::Weights { path, weights } => {
                fetch::fetch_weights(&client, &weights, &path, &mut bar)?;
                eprintln!(
                    "weights: {}.{} saved at {}",
                    weights.name,
                    weights.tag,
                    path.display()
                );
            }
            Missing::Vtab1k { source, .. } if vtab1k.is_some() => vtab1k_sources.push(source),
            Missing::Vtab1k {
                dataset, problem, ..
            } => manual.push(format!(
                "datasets.{dataset}: VTAB-1k has no official download; get the archive as \
                 README \"VTAB-1k\" says and pass it with --vtab1k FILE (or URL with \
                 --vtab1k-sha256): {problem}"
            )),
            Missing::Manual { dataset, problem } => manual.push(format!(
                "datasets.{dataset}: no download for this format; place it by hand (README \
                 \"Real studies\"): {problem}"
            )),
            Missing::UnknownWeights { path } => manual.push(format!(
                "backbone.weights: {} is missing and its name does not say which timm checkpoint \
                 it is; name it `<timm name>.<tag>.safetensors` (e.g. \
                 vit_base_patch16_224.orig_in21k.safetensors) to fetch it from the hub",
                path.display()
            )),
        }
    }
    if let Some(archive) = &vtab1k {
        if !data {
            eprintln!("--vtab1k: ignored with --only weights (it installs data)");
        } else if vtab1k_sources.is_empty() {
            eprintln!("--vtab1k: no VTAB-1k dataset of the suite is missing; nothing unpacked");
        } else {
            let at = fetch::install_vtab1k(&client, archive, &vtab1k_sources, &mut bar)?;
            let names: Vec<String> = vtab1k_sources
                .iter()
                .map(|s| s.root.display().to_string())
                .collect();
            eprintln!(
                "VTAB-1k unpacked into {}; checked {}",
                at.display(),
                names.join(", ")
            );
        }
    }
    if !sets.is_empty() {
        eprintln!("point the suite at them with:");
        for s in &sets {
            eprintln!("  --set '{s}'");
        }
    }
    for m in &manual {
        eprintln!("not fetched: {m}");
    }
    Ok(if manual.is_empty() { 0 } else { 1 })
}

fn real_source(s: &suite::Suite, name: &str) -> Option<RealSource> {
    match &s.datasets.get(name)?.source {
        Source::Real(r) => Some(r.clone()),
        Source::Synthetic { .. } => None,
    }
}

/// A line for `plan`/`run` errors when the suite misses something `fetch` can download.
pub fn hint(s: &suite::Suite) -> Option<String> {
    let missing = fetch::missing(s, true, true);
    let vtab1k = missing.iter().any(|m| matches!(m, Missing::Vtab1k { .. }));
    let names: Vec<String> = missing
        .into_iter()
        .filter_map(|m| match m {
            Missing::Data {
                dataset, archive, ..
            } => Some(format!("datasets.{dataset} ({})", archive.file_name)),
            Missing::Weights { weights, .. } => Some(format!(
                "backbone.weights (timm {}.{})",
                weights.name, weights.tag
            )),
            _ => None,
        })
        .collect();
    let mut lines = Vec::new();
    if !names.is_empty() {
        lines.push(format!(
            "`vtab-orch fetch {}` downloads {}",
            s.path.display(),
            names.join(", ")
        ));
    }
    if vtab1k {
        lines.push(format!(
            "`vtab-orch fetch {} --vtab1k FILE` unpacks your copy of the VTAB-1k archive into \
             place and checks it (it has no official download: README \"VTAB-1k\")",
            s.path.display()
        ));
    }
    (!lines.is_empty()).then(|| lines.join("; "))
}
