//! Writing one found run: the trained model rebuilt from the store, then a peft adapter
//! directory or a merged timm folder, staged beside OUT and renamed into place.
use super::{io, ExportError, Format, Found, Result, BASE_WEIGHTS, MERGED_WEIGHTS, RECORD};
use crate::graph::{split_name, BuildWeights};
use crate::nodes::{self, build, read_json, train, write_json};
use crate::store::Store;
use kernels::checkpoint::HeadPolicy;
use kernels::{AdaptedVit, Method, VitConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use tch::Device;

/// The trained model of `f`, on the CPU in fp32, adapters not merged; with the class names
/// of its training split.
pub fn load_model(store: &Store, f: &Found) -> Result<(AdaptedVit, Vec<String>)> {
    let train_dir = store.entry(crate::node::TRAIN.name, &f.train_key);
    let prep_dir = store.entry(crate::node::PREP.name, &f.train.prep);
    let build_dir = store.entry(crate::node::BUILD.name, &f.train.build);
    let dirs = [&*train_dir, &*prep_dir, &*build_dir];
    let (model, _, info) = train::load_trained(&f.train, &f.build, dirs, Device::Cpu)?;
    Ok((model, info.class_names))
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

/// Writes run `f` to `out` in `format`. The files are written into a staging folder beside
/// `out` and renamed into place, so `out` is either the whole export or absent (the staging
/// folder goes on any error). An existing non-empty `out` is replaced only with `force`, and
/// only if it is a previous export (it holds `vtab-orch.json`); `protected` (the store, the
/// suite file, the current directory) may never be inside `out`.
pub fn export(
    store: &Store,
    suite_path: &Path,
    f: &Found,
    format: Format,
    out: &Path,
    force: bool,
    protected: &[&Path],
) -> Result<Written> {
    check_out(out, force, protected)?;
    check_format(&f.train.method, format)?;
    let (mut model, class_names) = load_model(store, f)?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let staging = Staging::new(parent.join(format!(".{name}.export-{}", std::process::id())))?;
    let suite_path = std::fs::canonicalize(suite_path).unwrap_or_else(|_| suite_path.into());
    write_into(
        store,
        &suite_path,
        f,
        format,
        &mut model,
        &class_names,
        &staging.0,
    )?;
    // Replace a previous export: move it aside, move the new one in, then delete the old one.
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let replacing = out.exists();
    if replacing {
        std::fs::rename(out, &old).map_err(io(out))?;
    }
    if let Err(e) = std::fs::rename(&staging.0, out) {
        if replacing {
            let _ = std::fs::rename(&old, out);
        }
        return Err(io(out)(e));
    }
    staging.keep();
    if replacing {
        let _ = std::fs::remove_dir_all(&old);
    }
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

/// A staging folder removed when dropped, unless kept (renamed into place).
struct Staging(PathBuf, bool);

impl Staging {
    fn new(path: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(io(&path))?;
        Ok(Staging(path, true))
    }
    fn keep(mut self) {
        self.1 = false;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Where `out` may go: not a file; empty, absent, or (with `force`) a previous export; never
/// a folder that holds one of `protected`.
fn check_out(out: &Path, force: bool, protected: &[&Path]) -> Result<()> {
    let bad = |why: String| ExportError::BadOut {
        path: out.to_path_buf(),
        why,
    };
    if out.exists() && !out.is_dir() {
        return Err(bad("exists and is not a folder".into()));
    }
    if let Ok(at) = std::fs::canonicalize(out) {
        for p in protected {
            if std::fs::canonicalize(p).is_ok_and(|p| p.starts_with(&at)) {
                return Err(bad(format!(
                    "holds {}; an export needs a folder of its own",
                    p.display()
                )));
            }
        }
    }
    let not_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if not_empty && !force {
        return Err(bad(
            "exists and is not empty; pass --force to replace it".into()
        ));
    }
    if not_empty && !out.join(RECORD).is_file() {
        return Err(bad(format!(
            "is not a previous export (no {RECORD}); --force replaces only those"
        )));
    }
    Ok(())
}

fn check_format(method: &Method, format: Format) -> Result<()> {
    if format == Format::Peft {
        if let Err(why) = method.spec().peft_config() {
            return Err(ExportError::Unsupported(format!(
                "`{}` has no peft adapter form ({why}); use --format merged for a timm \
                 checkpoint with the trained weights",
                method.label()
            )));
        }
    }
    if format == Format::Merged && !method.spec().mergeable() {
        return Err(ExportError::Unsupported(format!(
            "`{}` cannot be merged: it adds modules beside the backbone's layers rather than \
             changing their weights, so no plain timm checkpoint computes it{}",
            method.label(),
            if method.spec().peft_config().is_ok() {
                "; use --format peft"
            } else {
                " (and peft has no form of it)"
            }
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
            kernels::checkpoint::save_timm(
                &mut model.vit,
                &dir.join(MERGED_WEIGHTS),
                HeadPolicy::Load,
            )?;
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
    let metrics: Option<nodes::eval::Metrics> = f
        .eval_key
        .as_ref()
        .filter(|k| store.is_complete(crate::node::EVAL.name, k))
        .and_then(|k| {
            read_json(
                &store
                    .entry(crate::node::EVAL.name, k)
                    .join(nodes::eval::METRICS),
            )
            .ok()
        });
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
    Ok(write_json(&dir.join(RECORD), &record)?)
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
            let from = store
                .entry(crate::node::BUILD.name, &f.train.build)
                .join(build::BACKBONE);
            let to = dir.join(BASE_WEIGHTS);
            std::fs::copy(&from, &to).map_err(io(&from))?;
            Ok(format!("OUT/{BASE_WEIGHTS}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered method either exports in a format or says why not, by name: merged
    /// for all but the ones that add modules (AdaptFormer), peft for peft's tuners.
    #[test]
    fn each_format_is_written_or_refused_with_the_reason() {
        for (row, m) in kernels::bench::standard_methods() {
            let merged = check_format(&m, Format::Merged);
            assert_eq!(merged.is_ok(), m.spec().mergeable(), "{row}");
            let peft = check_format(&m, Format::Peft);
            assert_eq!(peft.is_ok(), m.spec().peft_config().is_ok(), "{row}");
            for e in [merged.err(), peft.err()].into_iter().flatten() {
                assert!(e.to_string().contains(&m.label()), "{row}: {e}");
            }
        }
        let af = kernels::bench::standard_methods()
            .into_iter()
            .find(|(_, m)| m.name() == "adaptformer")
            .expect("AdaptFormer is registered")
            .1;
        let e = check_format(&af, Format::Merged).unwrap_err().to_string();
        assert!(
            e.contains("cannot be merged") && e.contains("peft has no form"),
            "{e}"
        );
    }
}
