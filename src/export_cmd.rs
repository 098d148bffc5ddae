//! `vtab-orch export`: one trained run of a suite as a peft adapter directory or a merged timm
//! checkpoint. Owns only the command's arguments and terminal output; the work is
//! `orchestrator::export`.
use anyhow::Result;
use orchestrator::export::{self, Format};
use orchestrator::numerics::DeviceKind;
use orchestrator::store::Store;
use std::path::PathBuf;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    /// adapter_config.json + adapter_model.safetensors for peft.PeftModel.from_pretrained.
    Peft,
    /// config.json + model.safetensors (adapter merged, trained head) for
    /// timm.create_model("local-dir:OUT", pretrained=True).
    Merged,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The suite file.
    suite: PathBuf,
    /// The output folder (written whole or not at all).
    out: PathBuf,
    /// The run: a train or eval key (or a prefix of at least 6 characters, as `plan` prints
    /// it), a `plan` label (`train DATASET CONFIG sSEED`), or the report's `DATASET CONFIG
    /// sSEED` / `DATASET METHOD sSEED` (the seed may be left out when only one matches; with a
    /// protocol, the final run wins over the search runs).
    #[arg(long = "run", value_name = "LABEL|KEY")]
    run: String,
    #[arg(long, value_enum, default_value_t = FormatArg::Peft)]
    format: FormatArg,
    /// Replace OUT if it exists and is not empty.
    #[arg(long)]
    force: bool,
    /// Override a suite setting (as for `run`; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Store directory (default: the suite's).
    #[arg(long)]
    store: Option<PathBuf>,
}

pub fn export(a: ExportArgs) -> Result<i32> {
    // Runs made for either device kind are looked up (like `report`); this machine's first.
    let here = if tch::Cuda::is_available() {
        DeviceKind::Cuda
    } else {
        DeviceKind::Cpu
    };
    let format = match a.format {
        FormatArg::Peft => Format::Peft,
        FormatArg::Merged => Format::Merged,
    };
    let (store, suite_path, found) =
        match orchestrator::load::load(&a.suite, &a.sets, a.store.as_deref(), here) {
            Ok(l) => {
                let other = l.other_device()?;
                let found = export::find(&[&l.graph, &other], &l.store, &a.run);
                (l.store, l.suite.path, found)
            }
            // The suite's data or weights are not here: a key can still be found in the store.
            Err(e) => {
                let Ok(suite) = orchestrator::suite::load(&a.suite, &a.sets) else {
                    return Err(e.into());
                };
                let store = Store::at(&a.store.clone().unwrap_or(suite.store));
                match export::find_in_store(&store, &a.run) {
                    Ok(f) => (store, suite.path, Ok(f)),
                    Err(why) => {
                        eprintln!("note: {why}");
                        return Err(e.into());
                    }
                }
            }
        };
    let cwd = std::env::current_dir()?;
    let protected = [store.root.as_path(), suite_path.as_path(), cwd.as_path()];
    let result = found.and_then(|f| {
        export::export(&store, &suite_path, &f, format, &a.out, a.force, &protected).map(|w| (f, w))
    });
    match result {
        Ok((f, w)) => {
            eprintln!(
                "exported {} (train {}) to {}: {}",
                f.label(),
                &f.train_key[..12],
                w.dir.display(),
                w.files.join(", ")
            );
            eprintln!(
                "how to load it: see `load` in {}",
                w.dir.join(export::RECORD).display()
            );
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(if e.is_usage() { 2 } else { 1 })
        }
    }
}
