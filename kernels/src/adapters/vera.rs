//! VeRA (Kopiczko et al. 2024) with peft's semantics: one frozen pair A [r, max_in],
//! B [max_out, r] shared by every adapted layer and sliced per layer; trainable
//! lambda_d [r] (init d_initial) and lambda_b [out] (zeros);
//! y = W0 x + b + lambda_b * B (lambda_d * A drop(x)).
use crate::linear::{add_weight_on_range, Adapter, Linear, OutRange, Role, Visit};
use tch::{Device, Kind, Tensor};

/// The shared frozen projections.
pub struct VeraProjections {
    pub a: Tensor,
    pub b: Tensor,
}

impl VeraProjections {
    /// peft's `_kaiming_init` for A then B, drawn on the CPU from a generator seeded with
    /// `prng_key` (the same numbers peft draws), then moved to `device`.
    ///
    /// tch exposes no generator objects, so this reseeds torch's default generator; the
    /// caller reseeds afterwards (see `AdaptedVit::new`).
    pub fn generate(r: i64, max_in: i64, max_out: i64, prng_key: i64, device: Device) -> Self {
        tch::manual_seed(prng_key);
        let kaiming = |rows: i64, fan_in: i64| {
            let bound = 3f64.sqrt() * 2f64.sqrt() / (fan_in as f64).sqrt();
            Tensor::empty([rows, fan_in], (Kind::Float, Device::Cpu)).uniform_(-bound, bound)
        };
        let a = kaiming(r, max_in);
        let b = kaiming(max_out, r);
        VeraProjections {
            a: a.to_device(device),
            b: b.to_device(device),
        }
    }
}

pub struct Vera {
    pub name: String,
    /// Views of the shared projections: [r, in] and [out, r].
    a: Tensor,
    b: Tensor,
    pub lambda_d: Tensor,
    pub lambda_b: Tensor,
    pub dropout: f64,
    pub range: OutRange,
}

impl Vera {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        shared: &VeraProjections,
        in_f: i64,
        out_f: i64,
        d_initial: f64,
        dropout: f64,
        range: OutRange,
    ) -> Self {
        let r = shared.a.size()[0];
        let device = shared.a.device();
        Vera {
            name,
            // Slices, not copies: A's rows keep their stride (a valid BLAS leading dimension).
            a: shared.a.narrow(1, 0, in_f),
            b: shared.b.narrow(0, 0, out_f),
            lambda_d: Tensor::full([r], d_initial, (Kind::Float, device)),
            lambda_b: Tensor::zeros([out_f], (Kind::Float, device)),
            dropout,
            range,
        }
    }

    /// diag(lambda_b) B diag(lambda_d) A.
    pub fn delta_weight(&self) -> Tensor {
        (self
            .b
            .matmul(&(self.a.shallow_clone() * self.lambda_d.unsqueeze(-1))))
            * self.lambda_b.unsqueeze(-1)
    }
}

impl Adapter for Vera {
    fn delta(&self, x: &Tensor, train: bool) -> Option<(Tensor, OutRange)> {
        let x = if self.dropout > 0.0 && train {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        // Lambdas are cast to the activations' dtype so a bf16 path stays bf16 (peft lets
        // the fp32 lambda_b promote the whole layer output to fp32); in fp32 nothing changes.
        let h = x.linear::<&Tensor>(&self.a, None);
        let h = &h * self.lambda_d.to_kind(h.kind());
        let delta = h.linear::<&Tensor>(&self.b, None);
        let delta = &delta * self.lambda_b.to_kind(delta.kind());
        Some((delta, self.range))
    }

    fn merge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), self.range, 1.0);
    }

    fn unmerge(&self, base: &mut Linear) {
        add_weight_on_range(base, &self.delta_weight(), self.range, -1.0);
    }

    fn visit(&mut self, f: &mut Visit) {
        f(
            &format!("{}.vera_lambda_b", self.name),
            &mut self.lambda_b,
            Role::Adapter,
        );
        f(
            &format!("{}.vera_lambda_d", self.name),
            &mut self.lambda_d,
            Role::Adapter,
        );
    }
}
