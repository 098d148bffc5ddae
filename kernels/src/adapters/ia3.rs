//! IA3 (Liu et al. 2022) with peft's semantics: learned vectors (init 1) that scale a
//! layer's output (k, v, optionally q: the bias is scaled too) or, for a feed-forward
//! layer (fc2), its input.
use super::{push_adapter, sites, target_name};
use crate::config::VitConfig;
use crate::linear::{Adapter, Linear, Role, Visit};
use crate::method::{
    from_serde, targets_label, validate_targets, Buffers, Method, MethodInfo, MethodSpec, Param,
    PeftReader, Target,
};
use crate::peft_import::PeftConfig;
use crate::peft_targets::{feedforward_mismatch, ModuleSpec};
use crate::vit::VisionTransformer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ia3Spec {
    /// Output scaling for q/k/v/qkv/proj/fc1; input (feed-forward) scaling for fc2.
    pub targets: Vec<Target>,
}

pub static INFO: MethodInfo = MethodInfo {
    name: "ia3",
    about: "IA3: learned vectors scaling layer outputs (fc2: its input)",
    params: &[Param::TARGETS],
    from_fields: from_serde::<Ia3Spec>,
    peft: Some(PeftReader {
        peft_type: "IA3",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "ia3_qkv_fc2",
            Method::new(Ia3Spec {
                targets: vec![Target::Qkv, Target::Fc2],
            }),
        )]
    },
};

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    let ff = c
        .module_spec("feedforward_modules")?
        .unwrap_or(ModuleSpec::List(Vec::new()));
    let targets = c.targets()?;
    let mismatch = feedforward_mismatch(&ff, &targets, c.depth).map_err(|m| c.err(m))?;
    if let Some(m) = mismatch {
        return Err(c.err(format!(
            "IA3 `feedforward_modules` marks `{m}` differently from vtab-orch's IA3, \
             which scales the input of fc2 only (feedforward_modules = [\"fc2\"])"
        )));
    }
    Ok(Method::new(Ia3Spec { targets }))
}

impl MethodSpec for Ia3Spec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!("ia3 {}", targets_label(&self.targets))
    }

    fn targets(&self) -> &[Target] {
        &self.targets
    }

    fn validate(&self) -> Result<(), String> {
        validate_targets("ia3", &self.targets)
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let targets = &self.targets;
        let device = vit.device();
        let d = vit.cfg.embed_dim;
        // q, k, v slices share one vector over the fused qkv output; a slice that is not
        // adapted keeps fixed ones.
        let slices: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|t| t.qkv_slice().is_some())
            .collect();
        if !slices.is_empty() {
            for i in 0..vit.blocks.len() {
                let parts: Vec<(Option<String>, i64)> = [Target::Q, Target::K, Target::V]
                    .iter()
                    .map(|t| (slices.contains(t).then(|| target_name(i, *t)), d))
                    .collect();
                let a = Box::new(Ia3::new(&parts, false, device));
                push_adapter(vit, i, Target::Qkv, a);
            }
        }
        let whole: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|t| t.qkv_slice().is_none())
            .collect();
        for site in sites(vit, &whole) {
            let on_input = site.target == Target::Fc2;
            let len = if on_input {
                site.in_features
            } else {
                site.out_features
            };
            let a = Ia3::new(&[(Some(site.name), len)], on_input, device);
            push_adapter(vit, site.block, site.target, Box::new(a));
        }
        Ok(Vec::new())
    }

    /// IA3 on q/k/v slices is one qkv vector in peft (its fixed parts are ones).
    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        let ff: Vec<&str> = self
            .targets
            .iter()
            .filter(|t| **t == Target::Fc2)
            .map(|_| "fc2")
            .collect();
        let v = json!({
            "peft_type": "IA3", "feedforward_modules": ff, "init_ia3_weights": true,
            "fan_in_fan_out": false,
        });
        Ok(v.as_object().expect("json object").clone())
    }

    /// Output scaling is [out, 1] (the conv's [1, out, 1, 1]); feed-forward input scaling
    /// [1, in]; q/k/v slices become one qkv vector.
    fn peft_tensors(&self, trainable: &[(String, Tensor)], _cfg: &VitConfig) -> Buffers {
        let prefix = crate::peft_format::PREFIX;
        let mut out = Vec::new();
        let mut qkv: BTreeMap<String, Vec<(usize, Tensor)>> = BTreeMap::new();
        for (name, t) in trainable {
            let t = t.detach();
            let Some(rest) = name.strip_suffix(".ia3_l") else {
                out.push((format!("{prefix}{name}"), t));
                continue;
            };
            if let Some((block, part)) = rest
                .rsplit_once(".attn.")
                .filter(|(_, p)| ["q", "k", "v"].contains(p))
            {
                let idx = ["q", "k", "v"].iter().position(|p| *p == part).unwrap_or(0);
                qkv.entry(format!("{block}.attn.qkv"))
                    .or_default()
                    .push((idx, t));
                continue;
            }
            let shaped = if rest == "patch_embed.proj" {
                t.view([1, -1, 1, 1])
            } else if rest.ends_with(".fc2") {
                t.unsqueeze(0)
            } else {
                t.unsqueeze(-1)
            };
            out.push((format!("{prefix}{rest}.ia3_l"), shaped));
        }
        for (module, parts) in qkv {
            let d = parts[0].1.size()[0];
            let mut full: Vec<Tensor> = (0..3)
                .map(|_| Tensor::ones([d], (Kind::Float, parts[0].1.device())))
                .collect();
            for (i, t) in parts {
                full[i] = t;
            }
            out.push((
                format!("{prefix}{module}.ia3_l"),
                Tensor::cat(&full, 0).unsqueeze(-1),
            ));
        }
        out
    }

    /// IA3 vectors are [out, 1], [1, in] or [1, D, 1, 1] in peft, flat here.
    fn peft_tensor_in(&self, name: &str, t: Tensor) -> (String, Tensor) {
        let t = if name.ends_with(".ia3_l") {
            t.flatten(0, -1)
        } else {
            t
        };
        (name.to_string(), t)
    }
}

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
    fn changes_input(&self) -> bool {
        self.on_input
    }

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
