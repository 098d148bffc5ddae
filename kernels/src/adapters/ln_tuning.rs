//! LayerNorm tuning (Qi et al. 2022, "LN-Tune"; peft's `LNTuningConfig`): the weight and bias
//! of the chosen LayerNorms train, every other backbone tensor stays frozen. peft trains a
//! copy of each LayerNorm (`<module>.ln_tuning_layers.{weight,bias}`) that starts equal to
//! it; here the LayerNorm itself trains, which computes the same function.
use crate::config::VitConfig;
use crate::method::{
    from_serde, Buffers, Method, MethodInfo, MethodSpec, Param, ParamKind, PeftReader,
};
use crate::peft_format::PREFIX;
use crate::peft_import::PeftConfig;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use tch::Tensor;

/// The LayerNorms of a timm ViT: every block's two, and the final one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Norm {
    /// `blocks.N.norm1`, before attention.
    #[serde(rename = "norm1")]
    Norm1,
    /// `blocks.N.norm2`, before the MLP.
    #[serde(rename = "norm2")]
    Norm2,
    /// `norm`, after the last block.
    #[serde(rename = "norm")]
    Final,
}

impl Norm {
    pub const NAMES: [&'static str; 3] = ["norm1", "norm2", "norm"];

    fn as_str(self) -> &'static str {
        Norm::NAMES[self as usize]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LnTuningSpec {
    /// Which LayerNorms train (default all: norm1, norm2 and the final norm).
    #[serde(default = "all_norms")]
    pub norms: Vec<Norm>,
}

fn all_norms() -> Vec<Norm> {
    vec![Norm::Norm1, Norm::Norm2, Norm::Final]
}

pub static INFO: MethodInfo = MethodInfo {
    name: "ln_tuning",
    about: "LayerNorm tuning: the chosen LayerNorms' weights and biases",
    params: &[Param {
        key: "norms",
        kind: ParamKind::Names(&Norm::NAMES),
        labelled: true,
    }],
    from_fields: from_serde::<LnTuningSpec>,
    peft: Some(PeftReader {
        peft_type: "LN_TUNING",
        read: read_peft,
    }),
    bench: || {
        vec![(
            "ln_tuning",
            Method::new(LnTuningSpec { norms: all_norms() }),
        )]
    },
};

/// The LayerNorm a timm module name is, with its block.
fn norm_of(module: &str) -> Option<(Norm, Option<usize>)> {
    if module == "norm" {
        return Some((Norm::Final, None));
    }
    let (i, name) = module.strip_prefix("blocks.")?.split_once('.')?;
    let n = match name {
        "norm1" => Norm::Norm1,
        "norm2" => Norm::Norm2,
        _ => return None,
    };
    Some((n, Some(i.parse().ok()?)))
}

fn read_peft(c: &PeftConfig) -> crate::Result<Method> {
    let mut on: BTreeMap<Norm, BTreeSet<usize>> = BTreeMap::new();
    for m in c.modules()? {
        let Some((n, block)) = norm_of(&m) else {
            return Err(c.err(format!(
                "`target_modules` selects `{m}`: vtab-orch's LN tuning tunes the LayerNorms \
                 blocks.N.norm1, blocks.N.norm2 and norm (timm's other `*norm` modules are \
                 identities without parameters, which peft cannot tune either)"
            )));
        };
        on.entry(n).or_default().extend(block);
    }
    for (n, blocks) in &on {
        if *n != Norm::Final && blocks.len() != c.depth {
            return Err(c.err(format!(
                "`target_modules` selects `{}` in {} of {} blocks: per-layer tuning is not \
                 supported",
                n.as_str(),
                blocks.len(),
                c.depth
            )));
        }
    }
    if on.is_empty() {
        return Err(
            c.err("`target_modules` selects no LayerNorm of this ViT (peft would refuse it too)")
        );
    }
    Ok(Method::new(LnTuningSpec {
        norms: on.into_keys().collect(),
    }))
}

impl LnTuningSpec {
    /// Whether `module` (a timm module name) is one of the tuned LayerNorms.
    fn tunes(&self, module: &str) -> bool {
        norm_of(module).is_some_and(|(n, _)| self.norms.contains(&n))
    }
}

impl MethodSpec for LnTuningSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        let names: Vec<&str> = self.norms.iter().map(|n| n.as_str()).collect();
        format!("ln_tuning {}", names.join(","))
    }

    fn validate(&self) -> Result<(), String> {
        if self.norms.is_empty() {
            return Err("ln_tuning: `norms` is empty (choose from norm1, norm2, norm)".into());
        }
        let distinct: BTreeSet<&Norm> = self.norms.iter().collect();
        if distinct.len() != self.norms.len() {
            return Err(format!(
                "ln_tuning: `norms` lists a LayerNorm twice: {:?}",
                self.norms
            ));
        }
        Ok(())
    }

    fn trains_backbone(&self, name: &str) -> bool {
        name.rsplit_once('.')
            .is_some_and(|(module, p)| (p == "weight" || p == "bias") && self.tunes(module))
    }

    /// peft's config names the tuned LayerNorms with a regex (its suffix match of `norm`
    /// would also hit timm's parameterless `attn.q_norm`, which peft cannot wrap).
    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        let mut parts: Vec<String> = Vec::new();
        let block: Vec<&str> = self
            .norms
            .iter()
            .filter(|n| **n != Norm::Final)
            .map(|n| n.as_str())
            .collect();
        if !block.is_empty() {
            parts.push(format!(r"blocks\.\d+\.({})", block.join("|")));
        }
        if self.norms.contains(&Norm::Final) {
            parts.push("norm".into());
        }
        let v = json!({"peft_type": "LN_TUNING", "target_modules": parts.join("|")});
        Ok(v.as_object().expect("json object").clone())
    }

    /// `blocks.0.norm1.weight` is peft's `blocks.0.norm1.ln_tuning_layers.weight`.
    fn peft_tensors(&self, trainable: &[(String, Tensor)], _cfg: &VitConfig) -> Buffers {
        trainable
            .iter()
            .map(|(name, t)| {
                let name = match name.rsplit_once('.') {
                    Some((module, p)) if self.tunes(module) => {
                        format!("{module}.ln_tuning_layers.{p}")
                    }
                    _ => name.clone(),
                };
                (format!("{PREFIX}{name}"), t.detach())
            })
            .collect()
    }

    fn peft_tensor_in(&self, name: &str, t: Tensor) -> (String, Tensor) {
        (name.replace(".ln_tuning_layers.", "."), t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_chosen_layernorms_train() {
        let s = LnTuningSpec {
            norms: vec![Norm::Norm2, Norm::Final],
        };
        assert!(s.trains_backbone("blocks.3.norm2.weight"));
        assert!(s.trains_backbone("norm.bias"));
        assert!(!s.trains_backbone("blocks.3.norm1.weight"));
        assert!(!s.trains_backbone("blocks.3.attn.qkv.bias"));
        assert!(!s.trains_backbone("fc_norm.weight"));
        assert_eq!(
            s.peft_config().unwrap()["target_modules"],
            json!(r"blocks\.\d+\.(norm2)|norm")
        );
    }
}
