//! build: backbone weights in canonical timm names — either a verified timm checkpoint
//! (strict load, head dropped) or a small ViT pretrained here on a synthetic source task.
use super::{write_json, NodeError, Result};
use crate::datasets::synthetic;
use crate::graph::{BuildNode, BuildWeights};
use kernels::checkpoint::{load_timm, save_timm, HeadPolicy};
use kernels::{AdaptedVit, Method, VisionTransformer};
use std::path::Path;
use tch::{Device, Tensor};

pub const BACKBONE: &str = "backbone.safetensors";

/// The backbone without its head, under timm's names.
fn save_backbone(vit: &mut VisionTransformer, path: &Path) -> Result<()> {
    Ok(save_timm(vit, path, HeadPolicy::Ignore)?)
}

pub fn run(b: &BuildNode, out: &Path, device: Device) -> Result<()> {
    match &b.weights {
        BuildWeights::File { path, blake3 } => {
            // The key was made from this digest; weights replaced since then must not be
            // stored under it.
            let now = crate::store::digest_file(path)?;
            if &now != blake3 {
                return Err(NodeError::Failed(format!(
                    "{}: the file changed since the suite was planned (blake3 {now}, planned {blake3}); run again",
                    path.display()
                )));
            }
            let mut arch = b.arch.clone();
            arch.num_classes = 0;
            let mut vit = tch::no_grad(|| VisionTransformer::new(&arch, Device::Cpu))?;
            load_timm(&mut vit, path, HeadPolicy::Ignore)?;
            save_backbone(&mut vit, &out.join(BACKBONE))
        }
        BuildWeights::Pretrain {
            recipe,
            img_size,
            numerics,
        } => {
            let size = *img_size as u32;
            let classes = recipe.task.class_names().len() as i64;
            let mut pixels =
                Vec::with_capacity(recipe.images as usize * 3 * (size * size) as usize);
            let mut labels = Vec::new();
            for i in 0..recipe.images {
                // Its own stream (seed 1000 + recipe seed), never the downstream ones.
                let (px, l) = synthetic::example(recipe.task, size, 1000 + recipe.seed, i);
                pixels.extend_from_slice(&px);
                labels.push(l);
            }
            let n = labels.len() as i64;
            let images = Tensor::from_slice(&pixels)
                .reshape([n, 3, *img_size, *img_size])
                .to_device(device);
            let labels = Tensor::from_slice(&labels).to_device(device);
            let mut arch = b.arch.clone();
            arch.img_size = *img_size;
            arch.num_classes = 0;
            tch::manual_seed(recipe.seed as i64);
            let vit = tch::no_grad(|| VisionTransformer::new(&arch, device))?;
            let model = AdaptedVit::new(vit, &Method::full(), Some(classes), recipe.seed as i64)?;
            let c = super::fit::FitConfig {
                epochs: recipe.epochs,
                batch_size: recipe.batch_size,
                warmup_epochs: 1.min(recipe.epochs),
                lr: recipe.lr,
                min_lr: recipe.lr * 0.01,
                weight_decay: recipe.weight_decay,
                label_smoothing: 0.1,
                clip_grad_norm: Some(1.0),
                precision: numerics.precision,
                flip: true,
                crop: false,
                mean: b.mean,
                std: b.std,
            };
            let (mut model, epochs) =
                super::fit::fit(model, &images, &labels, &c, recipe.seed, None)?;
            write_json(&out.join("pretrain_log.json"), &epochs)?;
            save_backbone(&mut model.vit, &out.join(BACKBONE))
        }
    }
}
