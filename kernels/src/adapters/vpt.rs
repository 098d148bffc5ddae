//! VPT (Jia et al. 2022, "Visual Prompt Tuning"), as its official code (KMnP/vpt,
//! `PromptedTransformer`, no projection): n learned prompt tokens go in after the class token,
//! behind the position embedding, x = [cls, P, patches]; VPT-deep replaces them before every
//! later block with that block's own n tokens (`deep_prompt_embeddings`), VPT-shallow keeps
//! the first block's output. The head still reads the class token. Prompts start
//! uniform(-v, v), v = sqrt(6 / (3 p^2 + D)) (p the patch size: the code's xavier-style
//! bound), and are dropped out while training with `dropout`. peft has no VPT (its prompt
//! tuning is for language models); the reference is `scripts/gen_fixtures.py`'s, written from
//! the paper and the official code. Not mergeable: the prompts are extra tokens.
use crate::linear::{Role, Visit};
use crate::method::{
    from_serde, validate_dropout, Buffers, Method, MethodInfo, MethodSpec, Param, ParamKind,
};
use crate::vit::{Prompts, VisionTransformer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VptSpec {
    /// Prompt tokens per layer (the paper searches 1 to 200).
    pub tokens: i64,
    /// VPT-deep (new prompts before every block) or VPT-shallow (before the first only).
    pub deep: bool,
    /// Dropout on the prompts while training.
    pub dropout: f64,
}

/// The most prompt tokens (each adds a token to every attention).
pub const MAX_TOKENS: i64 = 1024;

pub static INFO: MethodInfo = MethodInfo {
    name: "vpt",
    about: "VPT: learned prompt tokens before the first block (shallow) or every block (deep)",
    params: &[
        Param {
            key: "tokens",
            kind: ParamKind::Int {
                min: 1,
                max: MAX_TOKENS,
            },
            labelled: true,
        },
        Param {
            key: "deep",
            kind: ParamKind::Bool,
            labelled: true,
        },
        Param {
            key: "dropout",
            kind: ParamKind::Float,
            labelled: false,
        },
    ],
    from_fields,
    peft: None,
    bench: || {
        vec![(
            "vpt_deep_n10",
            Method::new(VptSpec {
                tokens: 10,
                deep: true,
                dropout: 0.0,
            }),
        )]
    },
};

/// Defaults: 10 tokens, deep, no dropout.
fn from_fields(mut f: Map<String, Value>) -> Result<Method, String> {
    f.entry("tokens").or_insert(json!(10));
    f.entry("deep").or_insert(json!(true));
    f.entry("dropout").or_insert(json!(0.0));
    from_serde::<VptSpec>(f)
}

impl MethodSpec for VptSpec {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn label(&self) -> String {
        format!(
            "vpt n={} {}",
            self.tokens,
            if self.deep { "deep" } else { "shallow" }
        )
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_TOKENS).contains(&self.tokens) {
            return Err(format!(
                "vpt: `tokens` must be from 1 to {MAX_TOKENS}, got {}",
                self.tokens
            ));
        }
        validate_dropout("vpt", self.dropout)?;
        Ok(())
    }

    fn fresh_is_identity(&self) -> bool {
        false
    }

    fn mergeable(&self) -> bool {
        false
    }

    fn insert(&self, vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        let (d, p, c) = (vit.cfg.embed_dim, vit.cfg.patch_size, vit.cfg.in_chans);
        let opts = (Kind::Float, vit.device());
        let v = (6.0 / (c * p * p + d) as f64).sqrt();
        let n = self.tokens;
        let first = Tensor::empty([1, n, d], opts).uniform_(-v, v);
        let deep = (self.deep && vit.blocks.len() > 1)
            .then(|| Tensor::empty([vit.blocks.len() as i64 - 1, n, d], opts).uniform_(-v, v));
        vit.prompts = Some(Box::new(Vpt {
            first,
            deep,
            dropout: self.dropout,
        }));
        Ok(Vec::new())
    }

    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        Err(
            "peft has no VPT for vision transformers (vtab-orch checks it against a reference \
             written from the paper and its official code)"
                .into(),
        )
    }
}

pub struct Vpt {
    /// [1, n, D]: the prompts entering the first block.
    pub first: Tensor,
    /// [depth - 1, n, D]: those replacing them before each later block (VPT-deep).
    pub deep: Option<Tensor>,
    pub dropout: f64,
}

impl Vpt {
    fn tokens(&self, p: &Tensor, b: i64, train: bool) -> Tensor {
        let p = p.expand([b, -1, -1], false);
        if self.dropout > 0.0 && train {
            p.dropout(self.dropout, true)
        } else {
            p
        }
    }
}

impl Prompts for Vpt {
    fn enter(&self, block: usize, x: Tensor, train: bool) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let n = self.first.size()[1];
        let cls = x.narrow(1, 0, 1);
        match (block, &self.deep) {
            (0, _) => {
                let p = self.tokens(&self.first, b, train).to_kind(x.kind());
                Tensor::cat(&[cls, p, x.narrow(1, 1, t - 1)], 1)
            }
            (i, Some(deep)) => {
                let p = self.tokens(&deep.get(i as i64 - 1).unsqueeze(0), b, train);
                let rest = x.narrow(1, 1 + n, t - 1 - n);
                Tensor::cat(&[cls, p.to_kind(x.kind()), rest], 1)
            }
            (_, None) => x,
        }
    }

    fn visit(&mut self, f: &mut Visit) {
        f("prompt_embeddings", &mut self.first, Role::Adapter);
        if let Some(deep) = &mut self.deep {
            f("deep_prompt_embeddings", deep, Role::Adapter);
        }
    }
}
