//! The PEFT wrapper: a backbone with a method applied (adapters inserted, a new head,
//! the right tensors frozen), parameter counts, trainable-only save/load, merge/unmerge.
use crate::checkpoint::{copy_into, read_safetensors};
use crate::error::{Error, Result};
use crate::linear::{Linear, Role};
use crate::method::{Buffers, Method};
use crate::vit::VisionTransformer;
use std::collections::BTreeSet;
use std::path::Path;
use tch::{Kind, Tensor};

/// Trainable and total parameter counts (frozen VeRA projections are buffers, as in peft,
/// and are not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParamCounts {
    pub trainable: i64,
    /// Trainable minus the classification head (what PEFT papers quote).
    pub trainable_backbone: i64,
    pub total: i64,
}

impl ParamCounts {
    pub fn trainable_percent(&self) -> f64 {
        100.0 * self.trainable as f64 / self.total as f64
    }
}

pub struct AdaptedVit {
    pub vit: VisionTransformer,
    pub method: Method,
    /// Frozen tensors the method's layers share (VeRA's projections; layers hold views).
    pub buffers: Buffers,
    trainable: Vec<(String, Tensor)>,
    counts: ParamCounts,
    merged: bool,
}

impl AdaptedVit {
    /// Applies `method` to `vit`. With `num_classes = Some(n)` a fresh n-way head replaces
    /// the backbone's; random draws (head, LoRA A, dropout later) follow `seed`.
    pub fn new(
        mut vit: VisionTransformer,
        method: &Method,
        num_classes: Option<i64>,
        seed: i64,
    ) -> Result<Self> {
        method.validate().map_err(Error::Config)?;
        let device = vit.device();
        tch::manual_seed(seed);
        if let Some(n) = num_classes {
            if n <= 0 {
                return Err(Error::Config(format!("num_classes must be >= 1, got {n}")));
            }
            vit.head = Some(tch::no_grad(|| {
                Linear::new(vit.cfg.embed_dim, n, true, device)
            }));
            vit.cfg.num_classes = n;
        }
        if vit.head.is_none() {
            return Err(Error::Config(
                "the model has no head: pass num_classes".into(),
            ));
        }
        let buffers = tch::no_grad(|| method.spec().insert(&mut vit, seed))?;
        let mut model = AdaptedVit {
            vit,
            method: method.clone(),
            buffers,
            trainable: Vec::new(),
            counts: ParamCounts {
                trainable: 0,
                trainable_backbone: 0,
                total: 0,
            },
            merged: false,
        };
        model.freeze();
        Ok(model)
    }

    /// Sets `requires_grad` by the method's rule and caches the trainable handles.
    fn freeze(&mut self) {
        let spec = self.method.clone();
        let mut trainable = Vec::new();
        let mut counts = ParamCounts {
            trainable: 0,
            trainable_backbone: 0,
            total: 0,
        };
        self.vit.visit(&mut |name, t, role| {
            let train = match role {
                Role::Head | Role::Adapter => true,
                Role::Backbone => spec.spec().trains_backbone(name),
            };
            let n = t.numel() as i64;
            counts.total += n;
            let _ = t.set_requires_grad(train);
            if train {
                counts.trainable += n;
                if role != Role::Head {
                    counts.trainable_backbone += n;
                }
                trainable.push((name.to_string(), t.shallow_clone()));
            }
        });
        self.trainable = trainable;
        self.counts = counts;
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.vit.forward(x, train)
    }

    pub fn counts(&self) -> ParamCounts {
        self.counts
    }

    /// (name, handle) of every trainable tensor, in a fixed order.
    pub fn trainable(&self) -> &[(String, Tensor)] {
        &self.trainable
    }

    /// Writes the trainable tensors (adapter + head, or everything for full fine-tuning).
    pub fn save_trainable(&self, path: &Path) -> Result<()> {
        let named: Vec<(&str, Tensor)> = self
            .trainable
            .iter()
            .map(|(n, t)| (n.as_str(), t.detach().to_device(tch::Device::Cpu)))
            .collect();
        Tensor::write_safetensors(&named, path).map_err(|e| Error::File {
            path: path.into(),
            msg: e.to_string(),
        })
    }

    /// Reads tensors written by `save_trainable` for the same method and architecture.
    pub fn load_trainable(&mut self, path: &Path) -> Result<()> {
        let file = read_safetensors(path)?;
        self.load_trainable_map(file, path)
    }

    /// Like `load_trainable`, from tensors already in memory (`path` names their origin).
    pub fn load_trainable_map(
        &mut self,
        file: std::collections::BTreeMap<String, Tensor>,
        path: &Path,
    ) -> Result<()> {
        let names: BTreeSet<String> = self.trainable.iter().map(|(n, _)| n.clone()).collect();
        copy_into_named(&mut self.vit, file, path, &names)
    }

    /// Whether the method folds into the backbone's weights (every method that changes
    /// linear layers only; not one that adds a module beside them, such as AdaptFormer).
    pub fn can_merge(&self) -> bool {
        self.method.spec().mergeable()
    }

    /// Folds every adapter into its base weights (evaluation runs at plain-ViT speed). A
    /// method that cannot merge ([`Self::can_merge`]) stays unmerged, computing the same.
    pub fn merge(&mut self) {
        if !self.can_merge() {
            return;
        }
        self.vit.patch_embed.merge();
        self.vit.linears_mut().for_each(|(_, l)| l.merge());
        self.vit.norms_mut().for_each(|(_, n)| n.merge());
        self.merged = true;
    }

    pub fn unmerge(&mut self) {
        self.vit.patch_embed.unmerge();
        self.vit.linears_mut().for_each(|(_, l)| l.unmerge());
        self.vit.norms_mut().for_each(|(_, n)| n.unmerge());
        self.merged = false;
    }

    pub fn is_merged(&self) -> bool {
        self.merged
    }

    /// Stores frozen linear and patch-embedding weights in `kind` (bf16): autocast would
    /// cast them on every forward anyway, so results are unchanged and the per-step casts
    /// of the frozen backbone disappear. Only for autocast training/eval on an accelerator.
    pub fn cast_frozen(&mut self, kind: Kind) {
        let cast = |t: &mut Tensor| {
            if !t.requires_grad() && t.kind() != kind {
                *t = t.to_kind(kind);
            }
        };
        self.vit.linears_mut().for_each(|(_, l)| {
            cast(&mut l.base.weight);
            if let Some(b) = &mut l.base.bias {
                cast(b);
            }
        });
        cast(&mut self.vit.patch_embed.weight);
        cast(&mut self.vit.patch_embed.bias);
    }
}

fn copy_into_named(
    vit: &mut VisionTransformer,
    file: std::collections::BTreeMap<String, Tensor>,
    path: &Path,
    names: &BTreeSet<String>,
) -> Result<()> {
    copy_into(vit, file, path, |name, _| names.contains(name))
}
