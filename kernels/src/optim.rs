//! AdamW (decoupled weight decay) on libtorch's fused kernel, with timm's rule for which
//! tensors get no weight decay. Owns optimiser state; knows nothing of models.
use crate::accel::{clear_grad, fused_adamw};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    pub weight_decay: f64,
    #[serde(default = "betas")]
    pub betas: (f64, f64),
    #[serde(default = "eps")]
    pub eps: f64,
}

fn betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn eps() -> f64 {
    1e-8
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            weight_decay: 0.05,
            betas: betas(),
            eps: eps(),
        }
    }
}

/// timm's `param_groups_weight_decay`: no decay for 1-D tensors (biases, norms, IA3 and
/// VeRA vectors), `*.bias`, and the position embedding and class token.
pub fn no_weight_decay(name: &str, t: &Tensor) -> bool {
    t.dim() <= 1 || name.ends_with(".bias") || name == "pos_embed" || name == "cls_token"
}

struct Group {
    names: Vec<String>,
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// One step counter per group (fp32 scalar on the device, as the fused kernel wants);
    /// every trainable tensor receives a gradient at every step in our models.
    step: Tensor,
    weight_decay: f64,
}

/// `torch.optim.AdamW(fused=True)` with two parameter groups (decay / no decay).
pub struct AdamW {
    cfg: AdamWConfig,
    groups: Vec<Group>,
}

impl AdamW {
    pub fn new(named: &[(String, Tensor)], cfg: AdamWConfig) -> Self {
        let mut groups = Vec::new();
        for decay in [true, false] {
            let (names, params): (Vec<String>, Vec<Tensor>) = named
                .iter()
                .filter(|(n, t)| no_weight_decay(n, t) != decay)
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .unzip();
            let Some(first) = params.first() else {
                continue;
            };
            let device = first.device();
            groups.push(Group {
                exp_avg: params.iter().map(|p| p.zeros_like().detach()).collect(),
                exp_avg_sq: params.iter().map(|p| p.zeros_like().detach()).collect(),
                step: Tensor::zeros([], (Kind::Float, device)),
                weight_decay: if decay { cfg.weight_decay } else { 0.0 },
                names,
                params,
            });
        }
        AdamW { cfg, groups }
    }

    /// One update with learning rate `lr`, from the gradients currently held.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        tch::no_grad(|| {
            for g in &mut self.groups {
                let grads: Vec<Tensor> = g.params.iter().map(|p| p.grad()).collect();
                if grads.iter().any(|t| !t.defined()) {
                    return Err(crate::Error::Config(
                        "AdamW::step: a trainable tensor has no gradient (was backward run?)"
                            .into(),
                    ));
                }
                let _ = g.step.g_add_scalar_(1.0);
                let steps: Vec<Tensor> = g.params.iter().map(|_| g.step.shallow_clone()).collect();
                let params: Vec<Tensor> = g.params.iter().map(|p| p.shallow_clone()).collect();
                fused_adamw(
                    &params,
                    &grads,
                    &g.exp_avg,
                    &g.exp_avg_sq,
                    &steps,
                    lr,
                    self.cfg.betas,
                    g.weight_decay,
                    self.cfg.eps,
                )?;
            }
            Ok(())
        })
    }

    /// Drops every gradient (`zero_grad(set_to_none=True)`).
    pub fn zero_grad(&self) -> Result<()> {
        self.groups
            .iter()
            .flat_map(|g| &g.params)
            .try_for_each(clear_grad)
    }

    /// The optimiser state by name (`exp_avg.<param>`, `exp_avg_sq.<param>`,
    /// `step.<group>`), for checkpoints. Handles share storage with the live state.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (gi, g) in self.groups.iter().enumerate() {
            for (j, n) in g.names.iter().enumerate() {
                out.push((format!("exp_avg.{n}"), g.exp_avg[j].shallow_clone()));
                out.push((format!("exp_avg_sq.{n}"), g.exp_avg_sq[j].shallow_clone()));
            }
            out.push((format!("step.{gi}"), g.step.shallow_clone()));
        }
        out
    }

    /// Restores a state written by `state` (same parameters); names a missing entry.
    pub fn load_state(&mut self, saved: &std::collections::BTreeMap<String, Tensor>) -> Result<()> {
        tch::no_grad(|| {
            for (name, mut t) in self.state() {
                let src = saved.get(&name).ok_or_else(|| {
                    crate::Error::Config(format!(
                        "optimiser state `{name}` missing from the checkpoint"
                    ))
                })?;
                t.copy_(src);
            }
            Ok(())
        })
    }

    /// All trainable tensors, decay group first.
    pub fn params(&self) -> impl Iterator<Item = &Tensor> {
        self.groups.iter().flat_map(|g| &g.params)
    }
}
