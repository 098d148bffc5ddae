//! `export`: one trained run out of the store, as a peft adapter directory or as a merged
//! timm checkpoint. Finds the run by key or label; reads the store; writes only under OUT.
use crate::graph::{split_name, BuildNode, BuildWeights, EvalNode, Graph, Node, TrainNode};
use crate::nodes::{self, build, prep, train};
use crate::store::Store;
use kernels::{AdaptedVit, Method, VitConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::Device;

/// What `export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An adapter directory for `peft.PeftModel.from_pretrained(timm_model, OUT)`.
    Peft,
    /// `config.json` + `model.safetensors` with the adapter merged and the trained head:
    /// `timm.create_model("local-dir:OUT", pretrained=True)`.
    Merged,
}

/// Where the export's own record goes (which run, which suite, how to load it).
pub const RECORD: &str = "vtab-orch.json";
/// A merged export's weights (timm's file name for a local model folder).
pub const MERGED_WEIGHTS: &str = "model.safetensors";
/// The base weights copied beside a peft export whose backbone was pretrained in the store.
pub const BASE_WEIGHTS: &str = "base_model.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Nothing matched the `--run` text: an invalid argument.
    #[error("--run `{spec}` names no run of this suite; {hint}")]
    NoMatch { spec: String, hint: String },
    /// Several runs matched: an invalid argument.
    #[error("--run `{spec}` matches {} runs; pass one of their keys:\n{}", .list.len(), .list.join("\n"))]
    Ambiguous { spec: String, list: Vec<String> },
    #[error("run `{label}` (train {key}) is not trained yet: run `vtab-orch run` first")]
    NotTrained { label: String, key: String },
    /// The method has no such format (e.g. full fine-tuning as a peft adapter).
    #[error("{0}")]
    Unsupported(String),
    #[error("{}: exists and is not empty; pass --force to replace it", .0.display())]
    OutExists(PathBuf),
    #[error(transparent)]
    Node(#[from] nodes::NodeError),
    #[error(transparent)]
    Kernels(#[from] kernels::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ExportError {
    /// Exit code 2 (the command line is wrong) or 1 (the store cannot give it yet).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::NoMatch { .. }
                | Self::Ambiguous { .. }
                | Self::Unsupported(_)
                | Self::OutExists(_)
        )
    }
}

type Result<T> = std::result::Result<T, ExportError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A run of the suite: its train and eval nodes and the build they start from.
#[derive(Clone)]
pub struct Found<'a> {
    pub train_key: String,
    pub eval_key: String,
    pub train: &'a TrainNode,
    pub eval: &'a EvalNode,
    pub build: &'a BuildNode,
    /// A protocol's final run (train800val200 -> test), not a search run.
    pub is_final: bool,
    /// Keyed for the device kind of the first graph given to [`find`] (this machine's).
    pub here: bool,
}

impl Found<'_> {
    pub fn label(&self) -> String {
        Node::Train(self.train.clone()).label()
    }

    /// One line for lists: key, label, numerics and split.
    fn line(&self, store: &Store) -> String {
        let state = if store.is_complete("train", &self.train_key) {
            "trained"
        } else {
            "not trained"
        };
        format!(
            "  {}  {}  ({}, {} -> {}, {state})",
            &self.train_key[..12.min(self.train_key.len())],
            self.label(),
            self.train.numerics,
            split_name(self.train.opt.train_split),
            split_name(self.train.opt.eval_split),
        )
    }

    /// The texts `--run` accepts for this run besides its keys: the labels `plan` prints
    /// (`train D CONFIG sN`, `eval D CONFIG sN`) and the report's dataset / method / config /
    /// seed columns (`D CONFIG sN`, `D METHOD sN`, and both without the seed).
    fn names(&self) -> Vec<String> {
        let t = self.train;
        let (d, c, f, s) = (&t.dataset, &t.config, &t.family, t.seed);
        vec![
            self.label(),
            Node::Eval(self.eval.clone()).label(),
            format!("{d} {c} s{s}"),
            format!("{d} {f} s{s}"),
            format!("{d} {c}"),
            format!("{d} {f}"),
        ]
    }
}

fn normalise(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every run (search and final) of the graphs, once per train key.
fn runs<'a>(graphs: &[&'a Graph]) -> Vec<Found<'a>> {
    let mut out: Vec<Found<'a>> = Vec::new();
    for (i, g) in graphs.iter().enumerate() {
        let finals = g.finals.iter().map(|(_, k)| (k, true));
        let searches = g.runs.iter().map(|(_, k)| (k, false));
        for (eval_key, is_final) in searches.chain(finals) {
            let Some(Node::Eval(eval)) = g.node(eval_key) else {
                continue;
            };
            let Some(Node::Train(train)) = g.node(&eval.train) else {
                continue;
            };
            let Some(Node::Build(build)) = g.node(&train.build) else {
                continue;
            };
            if out.iter().any(|f| f.train_key == eval.train) {
                continue;
            }
            out.push(Found {
                train_key: eval.train.clone(),
                eval_key: eval_key.clone(),
                train,
                eval,
                build,
                is_final,
                here: i == 0,
            });
        }
    }
    out
}

/// The one run `spec` names: a key (train or eval, or a prefix of at least 6 characters) or
/// a label. Among several matches, trained runs win over untrained ones (and when none is
/// trained, those keyed for this machine's device kind, the first graph), then a protocol's
/// finals over its search runs; what is still ambiguous is an error listing the keys.
pub fn find<'a>(graphs: &[&'a Graph], store: &Store, spec: &str) -> Result<Found<'a>> {
    let all = runs(graphs);
    let want = normalise(spec);
    let is_key = want.len() >= 6 && want.chars().all(|c| c.is_ascii_hexdigit());
    let mut hits: Vec<Found<'a>> = all
        .iter()
        .filter(|f| {
            (is_key && (f.train_key.starts_with(&want) || f.eval_key.starts_with(&want)))
                || f.names().contains(&want)
        })
        .cloned()
        .collect();
    if hits.is_empty() {
        let mut examples: Vec<String> = all.iter().take(3).map(|f| f.label()).collect();
        examples.dedup();
        let hint = if examples.is_empty() {
            "the suite has no runs".to_string()
        } else {
            format!(
                "pass a key or a label as `vtab-orch plan` prints it, e.g. `{}`",
                examples.join("`, `")
            )
        };
        return Err(ExportError::NoMatch {
            spec: spec.to_string(),
            hint,
        });
    }
    let trained = |f: &Found| store.is_complete("train", &f.train_key);
    if hits.iter().any(trained) {
        hits.retain(trained);
    } else if hits.iter().any(|f| f.here) {
        hits.retain(|f| f.here);
    }
    if hits.iter().any(|f| f.is_final) {
        hits.retain(|f| f.is_final);
    }
    match hits.len() {
        1 => {
            let f = hits.remove(0);
            if !trained(&f) {
                return Err(ExportError::NotTrained {
                    label: f.label(),
                    key: f.train_key,
                });
            }
            Ok(f)
        }
        _ => Err(ExportError::Ambiguous {
            spec: spec.to_string(),
            list: hits.iter().map(|f| f.line(store)).collect(),
        }),
    }
}

/// The trained model of `f`, on the CPU in fp32, adapters not merged; with the class names
/// of its training split.
pub fn load_model(store: &Store, f: &Found) -> Result<(AdaptedVit, Vec<String>)> {
    let train_dir = store.entry("train", &f.train_key);
    let prep_dir = store.entry("prep", &f.train.prep);
    let build_dir = store.entry("build", &f.train.build);
    let log: train::TrainLog = read_json(&train_dir.join(train::LOG))?;
    let info = prep::info(&prep_dir)?;
    let mut model = train::model(
        &build_dir,
        f.build,
        info.img_size,
        &f.train.method,
        log.num_classes,
        f.train.seed,
        Device::Cpu,
    )?;
    model.load_trainable(&train_dir.join(train::TRAINABLE))?;
    Ok((model, info.class_names))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text)
        .map_err(|e| nodes::NodeError::Failed(format!("{}: {e}", path.display())).into())
}

/// The timm architecture name for `cfg`: the patch-16 preset with the same width, depth and
/// heads, else `vit_base_patch16_224` (the model arguments in `config.json` override its
/// shape either way).
fn timm_architecture(cfg: &VitConfig) -> &'static str {
    VitConfig::preset_names()
        .find(|n| {
            VitConfig::preset(n).is_some_and(|p| {
                (p.embed_dim, p.depth, p.num_heads, p.patch_size)
                    == (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.patch_size)
            })
        })
        .unwrap_or("vit_base_patch16_224")
}

/// timm `VisionTransformer` keyword arguments of the trained model.
fn model_args(cfg: &VitConfig) -> serde_json::Value {
    json!({
        "img_size": cfg.img_size, "patch_size": cfg.patch_size, "in_chans": cfg.in_chans,
        "embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_heads": cfg.num_heads,
        "mlp_ratio": cfg.mlp_ratio, "qkv_bias": cfg.qkv_bias,
    })
}

/// What an export wrote.
pub struct Written {
    pub dir: PathBuf,
    pub files: Vec<String>,
}

/// Writes run `f` to `out` in `format`. The files are written into a sibling staging folder
/// and renamed into place, so `out` is either the whole export or absent; an existing
/// non-empty `out` is replaced only with `force`.
pub fn export(
    store: &Store,
    suite_path: &Path,
    f: &Found,
    format: Format,
    out: &Path,
    force: bool,
) -> Result<Written> {
    let not_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if not_empty && !force {
        return Err(ExportError::OutExists(out.to_path_buf()));
    }
    check_format(&f.train.method, format)?;
    let (mut model, class_names) = load_model(store, f)?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!(".{name}.export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let written = write_into(
        store,
        suite_path,
        f,
        format,
        &mut model,
        &class_names,
        &staging,
    );
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    std::fs::rename(&staging, out).map_err(io(out))?;
    let mut files: Vec<String> = std::fs::read_dir(out)
        .map_err(io(out))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    Ok(Written {
        dir: out.to_path_buf(),
        files,
    })
}

fn check_format(method: &Method, format: Format) -> Result<()> {
    let peft_has_it = match method {
        Method::Lora(s) => !s.targets.iter().any(|t| t.qkv_slice().is_some()),
        Method::Vera(s) => !s.targets.iter().any(|t| t.qkv_slice().is_some()),
        Method::Ia3(_) => true,
        Method::Linear | Method::Full | Method::Bitfit => false,
    };
    if format == Format::Peft && !peft_has_it {
        return Err(ExportError::Unsupported(format!(
            "`{}` has no peft adapter form (peft has LoRA and VeRA on whole modules, and IA3); \
             use --format merged for a timm checkpoint with the trained weights",
            method.label()
        )));
    }
    Ok(())
}

fn write_into(
    store: &Store,
    suite_path: &Path,
    f: &Found,
    format: Format,
    model: &mut AdaptedVit,
    class_names: &[String],
    dir: &Path,
) -> Result<()> {
    let cfg = model.vit.cfg.clone();
    let arch = timm_architecture(&cfg);
    let (base, how) = match format {
        Format::Peft => {
            kernels::peft_format::export_peft(model, dir)?;
            let base = base_weights(store, f, dir)?;
            let how = format!(
                "m = timm.create_model('{arch}', pretrained=True, pretrained_cfg_overlay=dict(file='{base}'), \
                 num_classes={n}, **record['model_args']); m = peft.PeftModel.from_pretrained(m, OUT)",
                n = cfg.num_classes
            );
            (Some(base), how)
        }
        Format::Merged => {
            model.merge();
            kernels::checkpoint::save_timm(&mut model.vit, &dir.join(MERGED_WEIGHTS))?;
            let config = json!({
                "architecture": arch,
                "num_classes": cfg.num_classes,
                "num_features": cfg.embed_dim,
                "model_args": model_args(&cfg),
                "label_names": class_names,
                "pretrained_cfg": {
                    "input_size": [cfg.in_chans, cfg.img_size, cfg.img_size],
                    "mean": f.build.mean, "std": f.build.std,
                    "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                    "num_classes": cfg.num_classes, "classifier": "head",
                    "first_conv": "patch_embed.proj",
                },
            });
            write_json(&dir.join("config.json"), &config)?;
            (
                None,
                "m = timm.create_model('local-dir:OUT', pretrained=True)".to_string(),
            )
        }
    };
    let metrics: Option<nodes::eval::Metrics> = store
        .is_complete("eval", &f.eval_key)
        .then(|| read_json(&store.entry("eval", &f.eval_key).join(nodes::eval::METRICS)).ok())
        .flatten();
    let record = json!({
        "format": match format { Format::Peft => "peft", Format::Merged => "merged" },
        "suite": suite_path,
        "run": f.label(),
        "dataset": f.train.dataset,
        "method": f.train.family,
        "config": f.train.config,
        "seed": f.train.seed,
        "train_key": f.train_key,
        "eval_key": f.eval_key,
        "numerics": f.train.numerics.to_string(),
        "train_split": split_name(f.train.opt.train_split),
        "eval_split": split_name(f.train.opt.eval_split),
        "top1": metrics.as_ref().map(|m| m.top1),
        "trainable": model.counts().trainable,
        "timm_architecture": arch,
        "model_args": model_args(&cfg),
        "num_classes": cfg.num_classes,
        "class_names": class_names,
        "mean": f.build.mean,
        "std": f.build.std,
        "base_weights": base,
        "load": how,
    });
    write_json(&dir.join(RECORD), &record)
}

/// The base model a peft adapter goes on: the suite's timm checkpoint, or (for a backbone
/// pretrained by the build node) a copy of the store's backbone beside the adapter.
fn base_weights(store: &Store, f: &Found, dir: &Path) -> Result<String> {
    match &f.build.weights {
        // Absolute: the record is read from wherever the export is copied to.
        BuildWeights::File { path, .. } => Ok(std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string()),
        BuildWeights::Pretrain { .. } => {
            let from = store.entry("build", &f.train.build).join(build::BACKBONE);
            let to = dir.join(BASE_WEIGHTS);
            std::fs::copy(&from, &to).map_err(io(&from))?;
            Ok(format!("OUT/{BASE_WEIGHTS}"))
        }
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("json");
    std::fs::write(path, text + "\n").map_err(io(path))
}
