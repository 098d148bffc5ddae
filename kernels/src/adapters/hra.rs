//! HRA (Yuan et al. 2024, "Bridging the gap between low-rank and orthogonal adaptation via
//! Householder reflection adaptation") with peft's semantics (`HRAConfig`): the weight is
//! multiplied on its input side by r Householder reflections, W' = W H with
//! H = (I - 2 u1 u1^T)(I - 2 u2 u2^T)... (u_i = U[:, i] / |U[:, i]|), or with `apply_gs`
//! H = I - 2 Q Q^T for the Gram-Schmidt orthonormalised columns Q of U. y = x H^T W^T + b: the
//! reflections act on the layer's input, so the bias is unchanged. U [in, r] starts with its
//! columns in equal pairs (kaiming-uniform, a = sqrt 5, then each repeated), so the reflections
//! cancel and the layer starts unchanged (for an odd r peft draws every column: not the
//! identity). H is orthogonal: merging multiplies W by H, unmerging by H^T.
use super::loha::kaiming;
use super::{push_adapter, sites};
use crate::linear::{Adapter, Linear, Role, Visit};
use crate::method::{
    from_serde, refuse_slices, targets_label, validate_rank, validate_targets, Buffers, Method,
    MethodInfo, MethodSpec, Param, ParamKind, PeftReader, Target,
};
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HraSpec {
    /// The number of reflections (even: the layer starts unchanged).
    pub r: i64,
    /// Orthonormalise the reflection vectors (Gram-Schmidt) into one reflection I - 2 Q Q^T.
    #[serde(default)]
    pub apply_gs: bool,
    pub targets: Vec<Target>,
}

pub static INFO: MethodInfo = MethodInfo {
    name: "hra",
    about: "HRA: r Householder reflections of each targeted layer's input",
    params: &[
        Param::RANK,
        Param {
            key: "apply_gs",
            kind: ParamKind::Bool,
            labelled: true,
        },
        Param::TARGETS,
    ],
    from_fields: |mut f| {
        f.entry("r").or_insert(json!(8));
        from_serde::<HraSpec>(f)
    },
    peft: Some(PeftReader {
        peft_type: "HRA",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "hra_qkv_r8",
            Method::new(HraSpec {
                r: 8,
                apply_gs: false,
                targets: vec![Target::Qkv],
            }),
        )]
    },
};

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    if c.cfg["init_weights"].as_bool() == Some(false) {
        return Err(c.err(
            "`init_weights` is false (random reflections): only peft's default, symmetric \
             initialisation is supported",
        ));
    }
    Ok(Method::new(HraSpec {
        r: c.rank(Some(8))?,
        apply_gs: c.flag("apply_GS"),
        targets: c.targets()?,
    }))
}

impl MethodSpec for HraSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!(
            "hra r={}{} {}",
            self.r,
            if self.apply_gs { " gs" } else { "" },
            targets_label(&self.targets)
        )
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("hra", &self.targets)?;
        refuse_slices(
            "hra",
            &self.targets,
            "HRA reflects a layer's input, which the three slices of qkv share",
        )?;
        validate_rank("hra", self.r)?;
        Ok(())
    }

    fn fresh_is_identity(&self) -> bool {
        self.r % 2 == 0 && !self.apply_gs
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let device = vit.device();
        for site in sites(vit, &self.targets) {
            let a = Hra::new(site.name, site.in_features, self, device);
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        let v = json!({
            "peft_type": "HRA", "r": self.r, "apply_GS": self.apply_gs, "init_weights": true,
            "bias": "none",
        });
        Ok(v.as_object().expect("json object").clone())
    }
}

pub struct Hra {
    pub name: String,
    /// [in, r]
    pub u: Tensor,
    pub apply_gs: bool,
}

impl Hra {
    fn new(name: String, in_f: i64, spec: &HraSpec, device: Device) -> Self {
        let r = spec.r;
        let u = if r % 2 == 0 {
            // kaiming_uniform_ of a [in, r/2] tensor (fan_in r/2), each column twice.
            kaiming(in_f, r / 2, device).repeat_interleave_self_int(2, 1, None)
        } else {
            kaiming(in_f, r, device)
        };
        Hra {
            name,
            u,
            apply_gs: spec.apply_gs,
        }
    }

    /// H [in, in], as peft's `get_delta_weight` builds it.
    pub fn reflection(&self) -> Tensor {
        let (n, r) = self.u.size2().expect("hra_u is [in, r]");
        let eye = Tensor::eye(n, (Kind::Float, self.u.device()));
        if self.apply_gs {
            let mut q: Vec<Tensor> = Vec::new();
            for i in 0..r {
                let mut ui = self.u.narrow(1, i, 1);
                for qj in &q {
                    ui = &ui - qj.transpose(0, 1).matmul(&ui) * qj;
                }
                let norm = ui.norm();
                q.push(ui / norm);
            }
            let q = Tensor::cat(&q, 1);
            eye - q.matmul(&q.transpose(0, 1)) * 2.0
        } else {
            let u = &self.u / self.u.norm_scalaropt_dim(2.0, [0i64].as_slice(), false);
            let mut h = eye;
            for i in 0..r {
                let ui = u.narrow(1, i, 1);
                h = &h - h.matmul(&ui).matmul(&ui.transpose(0, 1)) * 2.0;
            }
            h
        }
    }
}

impl Adapter for Hra {
    fn changes_input(&self) -> bool {
        true
    }

    /// x H^T, so that the base layer computes x (W H)^T + b.
    fn on_input(&self, x: Tensor) -> Tensor {
        x.linear::<&Tensor>(&self.reflection().to_kind(x.kind()), None)
    }

    fn merge(&self, base: &mut Linear) {
        let w = base.weight.to_kind(Kind::Float).matmul(&self.reflection());
        base.weight.copy_(&w.to_kind(base.weight.kind()));
    }

    fn unmerge(&self, base: &mut Linear) {
        let h = self.reflection();
        let w = base.weight.to_kind(Kind::Float).matmul(&h.transpose(0, 1));
        base.weight.copy_(&w.to_kind(base.weight.kind()));
    }

    fn visit(&mut self, f: &mut Visit) {
        f(&format!("{}.hra_u", self.name), &mut self.u, Role::Adapter);
    }
}
