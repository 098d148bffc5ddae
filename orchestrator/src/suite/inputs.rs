//! What a suite names on disk: dataset roots (layout checked) and the weights file (its
//! tensors against the backbone, from the safetensors header only). Reads, never writes.
use super::diagnostic::{Diagnostic, SuiteError};
use super::parser::sub;
use super::{Source, Suite, Weights};
use crate::datasets::DatasetError;
use kernels::{VisionTransformer, VitConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Checks the sources a plan depends on (dataset roots, the weights file and whether its
/// tensors fit the backbone): clear errors before anything runs or is written.
pub fn check_inputs(suite: &Suite) -> Result<(), SuiteError> {
    let mut errors = Vec::new();
    for d in suite.datasets.values() {
        if let Source::Real(r) = &d.source {
            if let Err(e) = crate::datasets::check_source(r) {
                let field = match &e {
                    DatasetError::MissingRoot { .. } => Some("root"),
                    DatasetError::MissingField { field, .. }
                    | DatasetError::BadField { field, .. } => Some(*field),
                    _ => None,
                };
                let key = format!("datasets.{}", d.name);
                errors.push(Diagnostic::invalid(
                    field.map_or(key.clone(), |f| sub(&key, f)),
                    e,
                ));
            }
        }
    }
    if let Weights::File(p) = &suite.backbone.weights {
        if !p.is_file() {
            errors.push(Diagnostic::invalid(
                "backbone.weights",
                format!(
                    "{} does not exist (download timm weights as safetensors; see README)",
                    p.display()
                ),
            ));
        } else if let Err(e) = check_weights(p, &suite.backbone.arch) {
            errors.push(Diagnostic::invalid(
                "backbone.weights",
                format!("{}: {e}", p.display()),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SuiteError::new(&suite.path, errors))
    }
}

/// Whether the checkpoint at `path` loads into `arch` as the build node loads it (strict
/// names and shapes, `head.*` dropped, a position embedding for another square grid
/// resampled). Reads the safetensors header only.
fn check_weights(path: &Path, arch: &VitConfig) -> Result<(), String> {
    let file = safetensors_shapes(path)?;
    let want = backbone_shapes(arch).map_err(|e| e.to_string())?;
    let resampled = |have: &[i64], want: &[i64]| {
        let side = (have.get(1).map_or(0, |n| n - 1) as f64).sqrt() as i64;
        have.len() == 3 && have[0] == 1 && have[2] == want[2] && side * side + 1 == have[1]
    };
    let mut problems = Vec::new();
    for (name, shape) in &want {
        match file.get(name) {
            None => problems.push(format!("has no `{name}` (needed: {shape:?})")),
            Some(have) if have != shape && !(name == "pos_embed" && resampled(have, shape)) => {
                problems.push(format!(
                    "`{name}` is {have:?}, the backbone needs {shape:?}"
                ))
            }
            Some(_) => {}
        }
    }
    let want: BTreeSet<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    let extra: Vec<&String> = file
        .keys()
        .filter(|n| !n.starts_with("head.") && !want.contains(n.as_str()))
        .collect();
    if let Some(first) = extra.first() {
        problems.push(format!(
            "has {} tensor(s) the backbone lacks, e.g. `{first}`",
            extra.len()
        ));
    }
    match problems.len() {
        0 => Ok(()),
        1 => Err(format!("does not fit the backbone: {}", problems[0])),
        n => Err(format!(
            "does not fit the backbone: {} (and {} more problems); check backbone.arch, embed_dim, depth, num_heads, patch_size and mlp_ratio",
            problems[0],
            n - 1
        )),
    }
}

/// Names and shapes of the tensors in a safetensors file, from its checked header.
fn safetensors_shapes(path: &Path) -> Result<BTreeMap<String, Vec<i64>>, String> {
    let header = kernels::safetensors_file::read_header(path).map_err(|e| match e {
        kernels::Error::Safetensors { msg, .. } => format!("not a safetensors file: {msg}"),
        other => other.to_string(),
    })?;
    Ok(header
        .tensors
        .into_iter()
        .map(|(name, t)| (name, t.shape))
        .collect())
}

/// The backbone tensors `arch` needs (timm names, no head), with their shapes. Every block
/// is alike, so one is built and its names repeated: a ViT-B takes a second to initialise.
fn backbone_shapes(arch: &VitConfig) -> kernels::Result<Vec<(String, Vec<i64>)>> {
    let one = VitConfig {
        depth: 1,
        num_classes: 0,
        ..arch.clone()
    };
    let mut vit = tch::no_grad(|| VisionTransformer::new(&one, tch::Device::Cpu))?;
    let mut out = Vec::new();
    for (name, t, _) in vit.named_tensors() {
        match name.strip_prefix("blocks.0.") {
            Some(rest) => {
                out.extend((0..arch.depth).map(|i| (format!("blocks.{i}.{rest}"), t.size())))
            }
            None => out.push((name, t.size())),
        }
    }
    Ok(out)
}
