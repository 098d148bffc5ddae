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

/// A parameter-efficient change to one linear layer: `on_input` runs before the base
/// layer, `delta` is added to its output (on some output rows), `on_output` runs last.
/// Merging folds the change into the base weights so that the plain layer computes the
/// same function.
pub trait Adapter: Send {
    fn on_input(&self, x: Tensor) -> Tensor {
        x
    }
    /// Whether `on_input` changes anything (HRA; IA3 on fc2's input): the patch embedding
    /// then runs as a linear layer over flattened patches instead of its conv.
    fn changes_input(&self) -> bool {
        false
    }
    /// An additive change computed from the layer input `x` (before `on_input`) and, where
    /// the method needs them (DoRA), the base layer and its output: LoRA, VeRA.
    fn delta(&self, _x: &Tensor, _base: Base, _train: bool) -> Option<(Tensor, OutRange)> {
        None
    }
    /// A change to the output after the deltas are added: IA3's output scaling.
    fn on_output(&self, y: Tensor) -> Tensor {
        y
    }
    /// Folds the adapter into `base` (in place, without autograd).
    fn merge(&self, base: &mut Linear);
    /// Exactly undoes `merge`.
    fn unmerge(&self, base: &mut Linear);
    /// The adapter's trainable tensors, named from the model root.
    fn visit(&mut self, f: &mut Visit);
}

/// The base layer of an adapted layer and its output (bias included) for the current input.
#[derive(Clone, Copy)]
pub struct Base<'a> {
    pub layer: &'a Linear,
    pub y: &'a Tensor,
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
        let y = self.base.forward(&h);
        add_deltas_and_scale(&self.adapters, x, y, &self.base, train)
    }

    pub fn is_merged(&self) -> bool {
        self.merged
    }

    pub fn merge(&mut self) {
        if !self.merged {
            merge_all(&self.adapters, &mut self.base);
            self.merged = true;
        }
    }

    pub fn unmerge(&mut self) {
        if self.merged {
            unmerge_all(&self.adapters, &mut self.base);
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

/// Folds `adapters` into `base` in order, without autograd.
pub(crate) fn merge_all(adapters: &[Box<dyn Adapter>], base: &mut Linear) {
    tch::no_grad(|| adapters.iter().for_each(|a| a.merge(base)));
}

/// Exactly undoes [`merge_all`] (in reverse order).
pub(crate) fn unmerge_all(adapters: &[Box<dyn Adapter>], base: &mut Linear) {
    tch::no_grad(|| adapters.iter().rev().for_each(|a| a.unmerge(base)));
}

/// The rest of an adapted layer after its base output `y` (computed from the layer input
/// `x` after the `on_input` changes): adds the deltas, then applies the output changes.
/// Shared by `AdaptedLinear` and the patch embedding (whose input is the patches).
pub(crate) fn add_deltas_and_scale(
    adapters: &[Box<dyn Adapter>],
    x: &Tensor,
    mut y: Tensor,
    layer: &Linear,
    train: bool,
) -> Tensor {
    let base = Base { layer, y: &y };
    let deltas: Vec<(Tensor, OutRange)> = adapters
        .iter()
        .filter_map(|a| a.delta(x, base, train))
        .collect();
    if !deltas.is_empty() {
        y += combine_deltas(deltas, layer.out_features());
    }
    for a in adapters {
        y = a.on_output(y);
    }
    y
}

/// Rows `[start, start+len)` of a layer's output (a q, k or v slice of a fused qkv);
/// `None` is the whole output.
pub type OutRange = Option<(i64, i64)>;

/// One full-width delta from per-range deltas (q and v slices of a qkv): the slices in
/// order with zeros between them, joined by one `cat`. Its backward is free (views of the
/// incoming gradient), unlike an in-place add into a slice of the output, whose backward
/// copies the whole gradient once per slice.
fn combine_deltas(mut deltas: Vec<(Tensor, OutRange)>, out_features: i64) -> Tensor {
    if deltas.len() == 1 && deltas[0].1.is_none() {
        return deltas.pop().expect("one delta").0;
    }
    deltas.sort_by_key(|(_, r)| r.map_or(0, |r| r.0));
    let like = &deltas[0].0;
    let mut shape = like.size();
    let zeros = |shape: &mut Vec<i64>, n: i64| {
        *shape.last_mut().expect("delta has a feature dim") = n;
        Tensor::zeros(shape.as_slice(), (like.kind(), like.device()))
    };
    let mut parts = Vec::new();
    let mut at = 0;
    for (d, r) in &deltas {
        let (start, len) = r.unwrap_or((0, out_features));
        assert!(
            start >= at,
            "overlapping adapter ranges (validated away by Method::validate)"
        );
        if start > at {
            parts.push(zeros(&mut shape, start - at));
        }
        parts.push(d.shallow_clone());
        at = start + len;
    }
    if at < out_features {
        parts.push(zeros(&mut shape, out_features - at));
    }
    Tensor::cat(&parts, -1)
}

/// W += sign * delta_w on the output rows `range` (merge / unmerge of additive adapters).
pub(crate) fn add_weight_on_range(base: &mut Linear, delta_w: &Tensor, range: OutRange, sign: f64) {
    let dw = delta_w.to_kind(base.weight.kind()) * sign;
    let _ = match range {
        None => base.weight.g_add_(&dw),
        Some((start, len)) => base.weight.narrow(0, start, len).g_add_(&dw),
    };
}
