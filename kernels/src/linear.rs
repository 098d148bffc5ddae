//! A frozen (or trainable) base `Linear` with the adapters that wrap it, and the
//! `Adapter` trait they implement. Knows nothing about ViT structure.
use tch::Tensor;

/// Which part of the model a tensor belongs to (decides freezing and counting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Backbone,
    Head,
    Adapter,
}

/// Visitor over named parameters: (timm-style name, tensor, role).
pub type Visit<'a> = dyn FnMut(&str, &mut Tensor, Role) + 'a;

/// `torch.nn.Linear`: y = x W^T + b.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// timm's init: weight ~ N(0, 0.02) (trunc_normal_ with bounds +-2 is this in practice), bias 0.
    pub fn new(in_features: i64, out_features: i64, bias: bool, device: tch::Device) -> Self {
        let opts = (tch::Kind::Float, device);
        Linear {
            weight: Tensor::randn([out_features, in_features], opts) * 0.02,
            bias: bias.then(|| Tensor::zeros([out_features], opts)),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }

    pub fn in_features(&self) -> i64 {
        self.weight.size()[1]
    }

    pub fn out_features(&self) -> i64 {
        self.weight.size()[0]
    }

    pub fn visit(&mut self, prefix: &str, role: Role, f: &mut Visit) {
        f(&format!("{prefix}.weight"), &mut self.weight, role);
        if let Some(b) = &mut self.bias {
            f(&format!("{prefix}.bias"), b, role);
        }
    }
}

/// A parameter-efficient change to one linear layer. `on_input` runs before the base
/// layer, `on_output` after it; merging folds the change into the base weights so that
/// the plain layer computes the same function.
pub trait Adapter: Send {
    fn on_input(&self, x: Tensor) -> Tensor {
        x
    }
    /// `x` is the layer input (before `on_input`), `y` the base output.
    fn on_output(&self, _x: &Tensor, y: Tensor, _train: bool) -> Tensor {
        y
    }
    /// Folds the adapter into `base` (in place, without autograd).
    fn merge(&self, base: &mut Linear);
    /// Exactly undoes `merge`.
    fn unmerge(&self, base: &mut Linear);
    /// The adapter's trainable tensors, named from the model root.
    fn visit(&mut self, f: &mut Visit);
}

/// A base linear layer and the adapters on it (usually none or one; two for LoRA on the
/// q and v slices of a fused qkv).
pub struct AdaptedLinear {
    pub base: Linear,
    pub adapters: Vec<Box<dyn Adapter>>,
    merged: bool,
}

impl AdaptedLinear {
    pub fn new(base: Linear) -> Self {
        AdaptedLinear {
            base,
            adapters: Vec::new(),
            merged: false,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        if self.merged || self.adapters.is_empty() {
            return self.base.forward(x);
        }
        let mut h = x.shallow_clone();
        for a in &self.adapters {
            h = a.on_input(h);
        }
        let mut y = self.base.forward(&h);
        for a in &self.adapters {
            y = a.on_output(x, y, train);
        }
        y
    }

    pub fn is_merged(&self) -> bool {
        self.merged
    }

    pub fn merge(&mut self) {
        if !self.merged {
            tch::no_grad(|| self.adapters.iter().for_each(|a| a.merge(&mut self.base)));
            self.merged = true;
        }
    }

    pub fn unmerge(&mut self) {
        if self.merged {
            tch::no_grad(|| {
                self.adapters
                    .iter()
                    .rev()
                    .for_each(|a| a.unmerge(&mut self.base))
            });
            self.merged = false;
        }
    }

    pub fn visit(&mut self, prefix: &str, f: &mut Visit) {
        self.base.visit(prefix, Role::Backbone, f);
        for a in &mut self.adapters {
            a.visit(f);
        }
    }
}

/// Rows `[start, start+len)` of a layer's output (a q, k or v slice of a fused qkv);
/// `None` is the whole output.
pub type OutRange = Option<(i64, i64)>;

/// y + delta on the output columns `range` (additive adapters: LoRA, VeRA).
pub(crate) fn add_on_range(y: Tensor, delta: &Tensor, range: OutRange) -> Tensor {
    match range {
        None => y + delta,
        Some((start, len)) => {
            // In-place add on a view of a non-leaf: autograd records it (add needs no saved
            // values), and it avoids materialising a zero-padded delta of the full width.
            let y = y;
            let _ = y.narrow(-1, start, len).g_add_(delta);
            y
        }
    }
}

/// W += sign * delta_w on the output rows `range` (merge / unmerge of additive adapters).
pub(crate) fn add_weight_on_range(base: &mut Linear, delta_w: &Tensor, range: OutRange, sign: f64) {
    let dw = delta_w.to_kind(base.weight.kind()) * sign;
    let _ = match range {
        None => base.weight.g_add_(&dw),
        Some((start, len)) => base.weight.narrow(0, start, len).g_add_(&dw),
    };
}
