//! Loading timm checkpoints (safetensors, timm's tensor names) into a `VisionTransformer`,
//! with timm's bicubic position-embedding resampling. Reads files; never writes.
use crate::error::{Error, Result};
use crate::linear::Role;
use crate::vit::VisionTransformer;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// What to do with `head.*` tensors in the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPolicy {
    /// The checkpoint must hold a head of the model's shape; load it.
    Load,
    /// Keep the model's freshly initialised head; a head in the file is ignored.
    Ignore,
}

pub use crate::safetensors_file::read_safetensors;

/// Writes `model`'s backbone under timm's names, with its head for [`HeadPolicy::Load`] and
/// without for [`HeadPolicy::Ignore`], in fp32 on the CPU: the inverse of [`load_timm`].
/// Adapter tensors are left out (merge them first).
pub fn save_timm(model: &mut VisionTransformer, path: &Path, head: HeadPolicy) -> Result<()> {
    let named: Vec<(String, Tensor)> = model
        .named_tensors()
        .into_iter()
        .filter(|(_, _, role)| match role {
            Role::Backbone => true,
            Role::Head => head == HeadPolicy::Load,
            Role::Adapter => false,
        })
        .map(|(n, t, _)| {
            let t = t.detach().to_device(tch::Device::Cpu);
            (n, t.to_kind(Kind::Float).contiguous())
        })
        .collect();
    Tensor::write_safetensors(&named, path).map_err(|e| Error::File {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Loads a timm checkpoint into `model` (strict: every backbone tensor must be present
/// with its shape, and no unknown tensor may be left over). A position embedding made for
/// another image size is resampled as timm's `resample_abs_pos_embed` does.
pub fn load_timm(model: &mut VisionTransformer, path: &Path, head: HeadPolicy) -> Result<()> {
    let mut file = read_safetensors(path)?;
    if head == HeadPolicy::Ignore {
        file.retain(|k, _| !k.starts_with("head."));
    }
    if let Some(pe) = file.get("pos_embed") {
        let want = model.pos_embed.size();
        if pe.size() != want && pe.dim() == 3 && pe.size()[2] == want[2] {
            let resampled =
                resample_abs_pos_embed(pe, model.cfg.grid_size(), 1).map_err(|msg| {
                    Error::File {
                        path: path.to_path_buf(),
                        msg,
                    }
                })?;
            file.insert("pos_embed".into(), resampled);
        }
    }
    copy_into(model, file, path, |_, role| {
        role != Role::Adapter && (role != Role::Head || head == HeadPolicy::Load)
    })
}

/// Copies `file` tensors into the model parameters selected by `wanted(role)`, checking
/// names and shapes; used for checkpoints and for trainable-tensor files.
pub(crate) fn copy_into(
    model: &mut VisionTransformer,
    mut file: BTreeMap<String, Tensor>,
    path: &Path,
    wanted: impl Fn(&str, Role) -> bool,
) -> Result<()> {
    let mut err = None;
    tch::no_grad(|| {
        model.visit(&mut |name, t, role| {
            if err.is_some() || !wanted(name, role) {
                return;
            }
            match file.remove(name) {
                None => {
                    err = Some(Error::MissingTensor {
                        path: path.into(),
                        name: name.into(),
                        expected: t.size(),
                    })
                }
                Some(src) if src.size() != t.size() => {
                    err = Some(Error::ShapeMismatch {
                        path: path.into(),
                        name: name.into(),
                        found: src.size(),
                        expected: t.size(),
                    })
                }
                Some(src) => t.copy_(&src),
            }
        })
    });
    if let Some(e) = err {
        return Err(e);
    }
    if !file.is_empty() {
        return Err(Error::UnexpectedTensors {
            path: path.into(),
            names: file.into_keys().collect(),
        });
    }
    Ok(())
}

/// timm `resample_abs_pos_embed(posemb, (g, g), num_prefix_tokens, 'bicubic', antialias=True)`:
/// the square grid of [1, prefix + n*n, D] is resized to `new_grid`^2 with PyTorch's
/// antialiased bicubic interpolation; prefix (class) tokens are kept as they are.
pub fn resample_abs_pos_embed(
    posemb: &Tensor,
    new_grid: i64,
    num_prefix: i64,
) -> std::result::Result<Tensor, String> {
    let (one, n, d) = posemb.size3().map_err(|e| e.to_string())?;
    let old = ((n - num_prefix) as f64).sqrt().round() as i64;
    if one != 1 || old * old != n - num_prefix {
        return Err(format!("pos_embed of shape [{one}, {n}, {d}] is not a square grid with {num_prefix} prefix token(s)"));
    }
    if old == new_grid {
        return Ok(posemb.shallow_clone());
    }
    let prefix = posemb.narrow(1, 0, num_prefix);
    let grid = posemb
        .narrow(1, num_prefix, n - num_prefix)
        .reshape([1, old, old, d])
        .permute([0, 3, 1, 2]);
    let grid = grid.internal_upsample_bicubic2d_aa([new_grid, new_grid], false, None, None);
    let grid = grid
        .permute([0, 2, 3, 1])
        .reshape([1, new_grid * new_grid, d]);
    Ok(Tensor::cat(&[prefix, grid], 1))
}
