//! The `[backbone]` section: a timm preset with shape overrides, normalisation, and either a
//! weights file or a `[backbone.pretrain]` recipe. Checks timm's construction rules.
use super::parser::{
    held_bytes, sub, Parser, MAX_BATCH, MAX_EPOCHS, MAX_HELD_BYTES, MAX_IMAGES, MAX_IMG_SIZE,
};
use super::{Backbone, Pretrain, Weights};
use crate::datasets::listed::MAX_CLASSES;
use crate::datasets::synthetic::Task;
use kernels::VitConfig;
use serde_json::Value;

/// Bounds of the architecture's sizes (ViT-g has width 1536, depth 40, 24 heads).
const MAX_EMBED_DIM: u64 = 16_384;
const MAX_DEPTH_OR_HEADS: u64 = 1_024;
const MAX_MLP_RATIO: f64 = 64.0;

impl Parser {
    pub(super) fn backbone(&mut self, v: &Value) -> Option<Backbone> {
        const ARCH: [&str; 7] = [
            "img_size",
            "patch_size",
            "embed_dim",
            "depth",
            "num_heads",
            "mlp_ratio",
            "num_classes",
        ];
        let mut allowed = vec!["arch", "weights", "pretrain", "mean", "std"];
        allowed.extend(ARCH);
        let m = self.table("backbone", v, &allowed)?;
        let presets: Vec<_> = VitConfig::preset_names().collect();
        let arch_name = match m.get("arch") {
            Some(a) => self.one_of("backbone.arch", a, "architecture", &presets)?,
            None => "vit_base_patch16_224",
        };
        let mut arch = VitConfig::preset(arch_name).expect("a preset name");
        let before = self.errors.len();
        for k in ARCH {
            let Some(v) = m.get(k) else { continue };
            let key = format!("backbone.{k}");
            match k {
                "mlp_ratio" => {
                    let ok = |x: f64| x > 0.0 && x <= MAX_MLP_RATIO;
                    let what = format!("> 0 and at most {MAX_MLP_RATIO}");
                    arch.mlp_ratio = self.number_in(&key, v, &what, ok).unwrap_or(arch.mlp_ratio)
                }
                "num_classes" => {
                    arch.num_classes = self
                        .integer_in(&key, v, 0, MAX_CLASSES as u64)
                        .map_or(arch.num_classes, |x| x as i64)
                }
                _ => {
                    let max = match k {
                        "img_size" | "patch_size" => MAX_IMG_SIZE,
                        "embed_dim" => MAX_EMBED_DIM,
                        _ => MAX_DEPTH_OR_HEADS,
                    };
                    let Some(x) = self.integer_in(&key, v, 1, max) else {
                        continue;
                    };
                    let x = x as i64;
                    match k {
                        "img_size" => arch.img_size = x,
                        "patch_size" => arch.patch_size = x,
                        "embed_dim" => arch.embed_dim = x,
                        "depth" => arch.depth = x,
                        _ => arch.num_heads = x,
                    }
                }
            }
        }
        if self.errors.len() == before {
            // timm's construction rules, each filed under the key to change.
            let (img, patch, dim, heads) = (
                arch.img_size,
                arch.patch_size,
                arch.embed_dim,
                arch.num_heads,
            );
            if img % patch != 0 {
                self.err(
                    "backbone.img_size",
                    format!("{img} is not a multiple of patch_size {patch}"),
                );
            }
            if dim % heads != 0 {
                self.err(
                    "backbone.embed_dim",
                    format!("{dim} is not a multiple of num_heads {heads}"),
                );
            }
            if img % patch == 0 && dim % heads == 0 {
                match arch.validate() {
                    Ok(()) => {
                        self.patch_size = Some(patch);
                        self.depth = Some(arch.depth as usize);
                    }
                    Err(e) => {
                        // Its messages start with the field ("mlp_ratio 0.1 gives no hidden units").
                        let field = e.split(' ').next().filter(|f| ARCH.contains(f));
                        self.err(&field.map_or("backbone".into(), |f| sub("backbone", f)), e);
                    }
                }
            }
        }
        let weights = match (m.get("weights"), m.get("pretrain")) {
            (Some(_), Some(_)) => {
                self.err(
                    "backbone",
                    "has both `weights` (a file) and [backbone.pretrain]; keep one",
                );
                None
            }
            (Some(w), None) => self
                .str("backbone.weights", w)
                .map(|s| Weights::File(self.base.join(s))),
            (None, Some(p)) => self
                .pretrain(p)
                .filter(|p| self.pretrain_fits(p, arch.img_size))
                .map(Weights::Pretrain),
            (None, None) => {
                self.err(
                    "backbone",
                    "missing `weights = \"FILE.safetensors\"` (timm weights) or a [backbone.pretrain] recipe",
                );
                None
            }
        };
        let mut triple = |k: &str, default: f64| -> [f64; 3] {
            let key = format!("backbone.{k}");
            match m.get(k) {
                None => [default; 3],
                Some(Value::Array(a)) if a.len() == 3 => {
                    let v: Vec<f64> = a.iter().filter_map(|x| self.f64(&key, x)).collect();
                    if k == "std" && v.iter().any(|s| *s <= 0.0) {
                        self.err(&key, format!("must be > 0, got {v:?}"));
                    }
                    v.try_into().unwrap_or([default; 3])
                }
                Some(other) => {
                    self.wrong_type(&key, "a list of 3 numbers", other);
                    [default; 3]
                }
            }
        };
        let mean = triple("mean", 0.5);
        let std = triple("std", 0.5);
        Some(Backbone {
            arch,
            weights: weights?,
            mean,
            std,
        })
    }

    /// Whether the pretraining set fits in memory, where the build node holds it whole
    /// (at most [`MAX_HELD_BYTES`]); else an error.
    fn pretrain_fits(&mut self, p: &Pretrain, img_size: i64) -> bool {
        let side = img_size.max(0);
        let bytes = held_bytes(p.images, side);
        if bytes > MAX_HELD_BYTES {
            self.err(
                "backbone.pretrain.images",
                format!(
                    "{} images of {side}x{side} need {:.1} GiB in memory (the build node holds \
                     the pretraining set whole); at most {} GiB: use fewer images",
                    p.images,
                    bytes as f64 / (1u64 << 30) as f64,
                    MAX_HELD_BYTES >> 30
                ),
            );
            return false;
        }
        true
    }

    pub(super) fn pretrain(&mut self, v: &Value) -> Option<Pretrain> {
        let m = self.table(
            "backbone.pretrain",
            v,
            &[
                "task",
                "images",
                "epochs",
                "lr",
                "batch_size",
                "weight_decay",
                "seed",
            ],
        )?;
        let mut p = Pretrain {
            task: Task::Source,
            images: 4000,
            epochs: 10,
            lr: 1e-3,
            batch_size: 64,
            weight_decay: 0.05,
            seed: 0,
        };
        for (k, v) in m {
            let key = format!("backbone.pretrain.{k}");
            match k.as_str() {
                "task" => p.task = self.task(&key, v).unwrap_or(p.task),
                "images" => p.images = self.integer_in(&key, v, 1, MAX_IMAGES).unwrap_or(p.images),
                "epochs" => p.epochs = self.integer_in(&key, v, 1, MAX_EPOCHS).unwrap_or(p.epochs),
                "batch_size" => {
                    p.batch_size = self
                        .integer_in(&key, v, 1, MAX_BATCH)
                        .map_or(p.batch_size, |x| x as i64)
                }
                "seed" => p.seed = self.u64(&key, v).unwrap_or(p.seed),
                "lr" => p.lr = self.positive(&key, v).unwrap_or(p.lr),
                "weight_decay" => {
                    p.weight_decay = self.non_negative(&key, v).unwrap_or(p.weight_decay)
                }
                _ => {} // reported by `table`
            }
        }
        Some(p)
    }
}
