//! LoRA (Hu et al. 2021) with peft's semantics: y = W0 x + b + s * B A drop(x),
//! A kaiming-uniform(a = sqrt 5), B zeros, s = alpha / r (rsLoRA: alpha / sqrt r).
use crate::linear::{add_weight_on_range, Adapter, Linear, OutRange, Role, Visit};
use tch::{Device, Kind, Tensor};

pub struct Lora {
    /// Name of the adapted (virtual) module, e.g. `blocks.0.attn.qkv` or `blocks.0.attn.q`.
    pub name: String,
    /// [r, in]
    pub a: Tensor,
    /// [out, r]
    pub b: Tensor,
    pub scale: f64,
    pub dropout: f64,
    pub range: OutRange,
}

/// The LoRA scale: alpha / r, or alpha / sqrt(r) for rsLoRA.
pub fn lora_scale(r: i64, alpha: f64, rslora: bool) -> f64 {
    if rslora {
        alpha / (r as f64).sqrt()
    } else {
        alpha / r as f64
    }
}

impl Lora {
    /// A fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform_ with a = sqrt 5),
    /// B = 0, so the layer starts as the identity change.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        in_f: i64,
        out_f: i64,
        r: i64,
        scale: f64,
        dropout: f64,
        range: OutRange,
        device: Device,
    ) -> Self {
        let bound = 1.0 / (in_f as f64).sqrt();
        let a = Tensor::empty([r, in_f], (Kind::Float, device)).uniform_(-bound, bound);
        let b = Tensor::zeros([out_f, r], (Kind::Float, device));
        Lora {
            name,
            a,
            b,
            scale,
            dropout,
            range,
        }
    }

    /// s * B A, shaped like the adapted rows of the base weight.
    pub fn delta_weight(&self) -> Tensor {
        self.b.matmul(&self.a) * self.scale
    }
}

impl Adapter for Lora {
    fn delta(&self, x: &Tensor, train: bool) -> Option<(Tensor, OutRange)> {
        let x = if self.dropout > 0.0 && train {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        // The scale is applied to the rank-r activations, the smallest tensor on the path.
        let h = x.linear::<&Tensor>(&self.a, None) * self.scale;
        Some((h.linear::<&Tensor>(&self.b, None), self.range))
    }

    fn merge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), self.range, 1.0);
    }

    fn unmerge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), self.range, -1.0);
    }

    fn visit(&mut self, f: &mut Visit) {
        f(
            &format!("{}.lora_A.weight", self.name),
            &mut self.a,
            Role::Adapter,
        );
        f(
            &format!("{}.lora_B.weight", self.name),
            &mut self.b,
            Role::Adapter,
        );
    }
}
