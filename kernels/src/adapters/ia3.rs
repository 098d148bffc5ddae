//! IA3 (Liu et al. 2022) with peft's semantics: learned vectors (init 1) that scale a
//! layer's output (k, v, optionally q: the bias is scaled too) or, for a feed-forward
//! layer (fc2), its input.
use crate::linear::{Adapter, Linear, Role, Visit};
use tch::{Device, Kind, Tensor};

/// One stretch of the scaling vector: a trainable `l` named `<name>.ia3_l`, or (name
/// `None`) fixed ones, for the q rows of a qkv when only k and v are adapted.
pub struct Ia3Part {
    pub name: Option<String>,
    pub l: Tensor,
}

pub struct Ia3 {
    pub parts: Vec<Ia3Part>,
    /// Scale the input (feed-forward) instead of the output.
    pub on_input: bool,
}

impl Ia3 {
    /// `parts`: (name or None for fixed, length), in output (or input) order.
    pub fn new(parts: &[(Option<String>, i64)], on_input: bool, device: Device) -> Self {
        let parts = parts
            .iter()
            .map(|(name, len)| Ia3Part {
                name: name.clone(),
                l: Tensor::ones([*len], (Kind::Float, device)),
            })
            .collect();
        Ia3 { parts, on_input }
    }

    /// The whole scaling vector (one `cat` when q is fixed; no copy otherwise).
    pub fn vector(&self) -> Tensor {
        if self.parts.len() == 1 {
            return self.parts[0].l.shallow_clone();
        }
        Tensor::cat(&self.parts.iter().map(|p| &p.l).collect::<Vec<_>>(), 0)
    }

    fn scale_weight(&self, base: &mut Linear, v: &Tensor) {
        let v = v.to_kind(base.weight.kind());
        if self.on_input {
            let _ = base.weight.g_mul_(&v.unsqueeze(0));
        } else {
            let _ = base.weight.g_mul_(&v.unsqueeze(-1));
            if let Some(b) = &mut base.bias {
                let _ = b.g_mul_(&v);
            }
        }
    }
}

impl Adapter for Ia3 {
    // The vector is cast to the activations' dtype (bf16 under autocast) so the product
    // stays in that dtype: multiplying by an fp32 vector would promote a [B, N, 3D] qkv
    // output to fp32 and cost extra passes over it. In fp32 nothing changes.
    fn on_input(&self, x: Tensor) -> Tensor {
        if self.on_input {
            let v = self.vector().to_kind(x.kind());
            x * v
        } else {
            x
        }
    }

    fn on_output(&self, y: Tensor) -> Tensor {
        if self.on_input {
            y
        } else {
            let v = self.vector().to_kind(y.kind());
            y * v
        }
    }

    fn merge(&self, base: &mut Linear) {
        self.scale_weight(base, &self.vector());
    }

    fn unmerge(&self, base: &mut Linear) {
        self.scale_weight(base, &self.vector().reciprocal());
    }

    fn visit(&mut self, f: &mut Visit) {
        for p in &mut self.parts {
            if let Some(name) = &p.name {
                f(&format!("{name}.ia3_l"), &mut p.l, Role::Adapter);
            }
        }
    }
}
