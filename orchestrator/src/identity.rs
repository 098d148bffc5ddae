//! What enters a node's key, kind by kind: one explicit struct per kind, filled by
//! exhaustive destructuring of the node (and of the suite and kernels types it carries), so a
//! new field anywhere is a compile error here until it is hashed or declared non-semantic.
//! Owns the choice of what is semantic; the encoding and hashing are `hash.rs`.
use crate::datasets::synthetic::Task;
use crate::datasets::{Format, RealSource, Split};
use crate::hash::Fingerprint;
use crate::node::{
    BuildNode, BuildWeights, Candidate, EvalNode, Node, PrepNode, SelectNode, TrainNode,
};
use crate::numerics::Numerics;
use crate::suite::{Opt, Pretrain, Source};
use kernels::{Method, VitConfig};
use serde::Serialize;

/// The key of `node`: its kind, the kind's revision, the fields below, its inputs' keys.
pub fn fingerprint(node: &Node) -> Fingerprint {
    match node {
        Node::Prep(p) => {
            let fp = Fingerprint::of(crate::node::PREP.name, &PrepIdentity::of(p));
            match &p.view_of {
                Some(whole) => fp.input("view_of", whole),
                None => fp,
            }
        }
        Node::Build(b) => Fingerprint::of(crate::node::BUILD.name, &BuildIdentity::of(b)),
        Node::Train(t) => {
            let TrainNode { prep, build, .. } = t;
            Fingerprint::of(crate::node::TRAIN.name, &TrainIdentity::of(t))
                .input(crate::node::PREP.name, prep)
                .input(crate::node::BUILD.name, build)
        }
        Node::Eval(e) => {
            let EvalNode {
                train, prep, build, ..
            } = e;
            Fingerprint::of(crate::node::EVAL.name, &EvalIdentity::of(e))
                .input(crate::node::TRAIN.name, train)
                .input(crate::node::PREP.name, prep)
                .input(crate::node::BUILD.name, build)
        }
        Node::Select(s) => Fingerprint::of(crate::node::SELECT.name, &SelectIdentity::of(s)),
    }
}

/// A selection is its candidates' val200 eval keys, in suite order (the order breaks the
/// last tie). Labels and report settings are not semantic; the rule is the revision's.
#[derive(Serialize)]
pub struct SelectIdentity {
    /// Per candidate, its eval keys (one per search seed).
    pub candidates: Vec<Vec<String>>,
}

impl SelectIdentity {
    fn of(s: &SelectNode) -> Self {
        let SelectNode {
            dataset: _, // labels
            family: _,
            candidates,
        } = s;
        SelectIdentity {
            candidates: candidates
                .iter()
                .map(|c| {
                    let Candidate {
                        config: _,  // label
                        hparams: _, // report columns, derived from the train settings
                        seeds: _,   // the eval keys hold them
                        evals,
                    } = c;
                    evals.clone()
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct PrepIdentity {
    pub split: Split,
    pub img_size: i64,
    #[serde(flatten)]
    pub source: SourceIdentity,
    /// Only where the seed draws the 1000 training examples (real datasets without VTAB-1k
    /// lists, training splits); elsewhere it would only cause reruns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_seed: Option<u64>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum SourceIdentity {
    Synthetic {
        synthetic: Task,
        test_images: u64,
    },
    /// The files enter through their digest; where they live does not.
    Real {
        format: Format,
        source_digest: String,
        dtd_split: Option<u32>,
    },
}

impl PrepIdentity {
    fn of(p: &PrepNode) -> Self {
        let PrepNode {
            dataset: _, // a name: two datasets with the same files share their preps
            source,
            source_digest,
            split,
            img_size,
            sample_seed,
            view_of: _, // an input: its key is hashed as one
        } = p;
        let (source, draws) = match source {
            Source::Synthetic { task, test_images } => (
                SourceIdentity::Synthetic {
                    synthetic: *task,
                    test_images: *test_images,
                },
                false,
            ),
            Source::Real(r) => {
                let RealSource {
                    format,
                    root: _, // where the files are; their content is source_digest
                    dtd_split,
                    train_csv: _, // read through the digest (its file roles are part of it)
                    test_csv: _,
                } = r;
                let draws = *split != Split::Test && *format != Format::Vtab1k;
                (
                    SourceIdentity::Real {
                        format: format.clone(),
                        source_digest: source_digest.clone(),
                        dtd_split: *dtd_split,
                    },
                    draws,
                )
            }
        };
        PrepIdentity {
            split: *split,
            img_size: *img_size,
            source,
            sample_seed: draws.then_some(*sample_seed),
        }
    }
}

#[derive(Serialize)]
pub struct BuildIdentity {
    pub arch: ArchIdentity,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    #[serde(flatten)]
    pub weights: WeightsIdentity,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum WeightsIdentity {
    /// A checkpoint: its digest only, not its path.
    File { weights_blake3: String },
    Pretrain {
        pretrain: PretrainIdentity,
        img_size: i64,
        numerics: Numerics,
    },
}

#[derive(Serialize)]
pub struct ArchIdentity {
    pub img_size: i64,
    pub patch_size: i64,
    pub in_chans: i64,
    pub embed_dim: i64,
    pub depth: i64,
    pub num_heads: i64,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
}

impl ArchIdentity {
    fn of(a: &VitConfig) -> Self {
        let VitConfig {
            img_size,
            patch_size,
            in_chans,
            num_classes: _, // the stored backbone has no head
            embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            qkv_bias,
        } = a;
        ArchIdentity {
            img_size: *img_size,
            patch_size: *patch_size,
            in_chans: *in_chans,
            embed_dim: *embed_dim,
            depth: *depth,
            num_heads: *num_heads,
            mlp_ratio: *mlp_ratio,
            qkv_bias: *qkv_bias,
        }
    }
}

#[derive(Serialize)]
pub struct PretrainIdentity {
    pub task: Task,
    pub images: u64,
    pub epochs: u64,
    pub lr: f64,
    pub batch_size: i64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl BuildIdentity {
    fn of(b: &BuildNode) -> Self {
        let BuildNode {
            arch,
            mean,
            std,
            weights,
        } = b;
        let weights = match weights {
            BuildWeights::File { path: _, blake3 } => WeightsIdentity::File {
                weights_blake3: blake3.clone(),
            },
            BuildWeights::Pretrain {
                recipe,
                img_size,
                numerics,
            } => {
                let Pretrain {
                    task,
                    images,
                    epochs,
                    lr,
                    batch_size,
                    weight_decay,
                    seed,
                } = recipe;
                WeightsIdentity::Pretrain {
                    pretrain: PretrainIdentity {
                        task: *task,
                        images: *images,
                        epochs: *epochs,
                        lr: *lr,
                        batch_size: *batch_size,
                        weight_decay: *weight_decay,
                        seed: *seed,
                    },
                    img_size: *img_size,
                    numerics: *numerics,
                }
            }
        };
        BuildIdentity {
            arch: ArchIdentity::of(arch),
            mean: *mean,
            std: *std,
            weights,
        }
    }
}

#[derive(Serialize)]
pub struct TrainIdentity {
    pub method: MethodIdentity,
    pub seed: u64,
    pub epochs: u64,
    pub batch_size: i64,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub warmup_epochs: u64,
    pub label_smoothing: f64,
    pub clip_grad_norm: Option<f64>,
    pub augment: String,
    pub numerics: Numerics,
}

impl TrainIdentity {
    fn of(t: &TrainNode) -> Self {
        let TrainNode {
            dataset: _, // labels: what the run is called in reports
            config: _,
            family: _,
            method,
            opt,
            seed,
            numerics,
            prep: _, // inputs: their keys are hashed as inputs
            build: _,
        } = t;
        let Opt {
            epochs,
            batch_size,
            lr,
            min_lr,
            weight_decay,
            warmup_epochs,
            label_smoothing,
            clip_grad_norm,
            precision: _, // resolved into `numerics`
            img_size: _,  // the prep input's key holds it
            augment,
            sample_seed: _,      // the prep input's key holds it where it draws
            train_split: _,      // the prep input's key holds it
            eval_split: _,       // the eval node's prep input holds it
            eval_batch_size: _,  // evaluation only, and batching does not change results
            checkpoint_every: _, // resuming gives identical tensors (tested)
        } = opt;
        TrainIdentity {
            method: MethodIdentity::of(method),
            seed: *seed,
            epochs: *epochs,
            batch_size: *batch_size,
            lr: *lr,
            min_lr: *min_lr,
            weight_decay: *weight_decay,
            warmup_epochs: *warmup_epochs,
            label_smoothing: *label_smoothing,
            clip_grad_norm: *clip_grad_norm,
            augment: augment.clone(),
            numerics: *numerics,
        }
    }
}

/// A method and its parameters: its name and every field its spec serialises (the spec
/// derives `Serialize`, so a new field is in the key unless its file skips it at its
/// default, which keeps the keys of runs made before it existed).
#[derive(Serialize)]
pub struct MethodIdentity {
    pub name: &'static str,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl MethodIdentity {
    fn of(m: &Method) -> Self {
        MethodIdentity {
            name: m.name(),
            fields: m.fields(),
        }
    }
}

#[derive(Serialize)]
pub struct EvalIdentity {
    pub numerics: Numerics,
}

impl EvalIdentity {
    fn of(e: &EvalNode) -> Self {
        let EvalNode {
            dataset: _, // labels
            config: _,
            family: _,
            seed: _,    // the train input's key holds it
            hparams: _, // report columns, derived from the train node's settings
            numerics,
            eval_batch_size: _, // batching does not change results
            train: _,           // inputs
            prep: _,
            build: _,
        } = e;
        EvalIdentity {
            numerics: *numerics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::RealSource;
    use crate::numerics::DeviceKind;
    use kernels::train::Precision;
    use kernels::{LoraSpec, Target};

    fn cpu() -> Numerics {
        Numerics::resolve(Precision::Auto, DeviceKind::Cpu)
    }

    fn synthetic_prep() -> PrepNode {
        PrepNode {
            dataset: "shape".into(),
            source: Source::Synthetic {
                task: Task::Shape,
                test_images: 500,
            },
            source_digest: String::new(),
            split: Split::Train800val200,
            img_size: 32,
            sample_seed: 0,
            view_of: None,
        }
    }

    fn real_prep() -> PrepNode {
        PrepNode {
            dataset: "dtd".into(),
            source: Source::Real(RealSource {
                format: Format::Dtd,
                root: "/data/dtd".into(),
                dtd_split: Some(1),
                train_csv: None,
                test_csv: None,
            }),
            source_digest: "d1".into(),
            split: Split::Train800,
            img_size: 224,
            sample_seed: 0,
            view_of: None,
        }
    }

    fn arch() -> VitConfig {
        let mut a = VitConfig::preset("vit_tiny_patch16_224").unwrap();
        a.img_size = 32;
        a.patch_size = 8;
        a
    }

    fn pretrain_build() -> BuildNode {
        BuildNode {
            arch: arch(),
            mean: [0.5; 3],
            std: [0.5; 3],
            weights: BuildWeights::Pretrain {
                recipe: Pretrain {
                    task: Task::Source,
                    images: 6000,
                    epochs: 16,
                    lr: 1e-3,
                    batch_size: 128,
                    weight_decay: 0.05,
                    seed: 0,
                },
                img_size: 32,
                numerics: cpu(),
            },
        }
    }

    fn file_build() -> BuildNode {
        BuildNode {
            weights: BuildWeights::File {
                path: "/w/vit.safetensors".into(),
                blake3: "ab".into(),
            },
            ..pretrain_build()
        }
    }

    fn train() -> TrainNode {
        TrainNode {
            dataset: "shape".into(),
            config: "lora r=8 a=8 q,v".into(),
            family: "lora".into(),
            method: Method::new(LoraSpec {
                r: 8,
                alpha: 8.0,
                dropout: 0.0,
                rslora: false,
                targets: vec![Target::Q, Target::V],
                use_dora: false,
                init: Default::default(),
            }),
            opt: Opt::default(),
            seed: 0,
            numerics: cpu(),
            prep: "p".into(),
            build: "b".into(),
        }
    }

    fn eval() -> EvalNode {
        EvalNode {
            dataset: "shape".into(),
            config: "lora r=8 a=8 q,v".into(),
            family: "lora".into(),
            seed: 0,
            hparams: Default::default(),
            numerics: cpu(),
            eval_batch_size: 256,
            train: "t".into(),
            prep: "p".into(),
            build: "b".into(),
        }
    }

    fn select() -> SelectNode {
        let c = |config: &str, evals: [&str; 2]| Candidate {
            config: config.into(),
            hparams: Default::default(),
            seeds: vec![0, 1],
            evals: evals.map(String::from).to_vec(),
        };
        SelectNode {
            dataset: "shape".into(),
            family: "lora".into(),
            candidates: vec![
                c("lora lr=0.001", ["e1", "e2"]),
                c("lora lr=0.01", ["e3", "e4"]),
            ],
        }
    }

    fn key(n: Node) -> String {
        fingerprint(&n).key()
    }

    /// Pinned bytes and keys, one node of every kind (nested parameters included): a change
    /// here re-keys every store, so it must be deliberate (and bump the revision).
    #[test]
    fn golden_fingerprints_of_every_kind() {
        let cases = [
            (
                Node::Prep(synthetic_prep()),
                r#"{"kind":"prep","revision":2,"params":{"img_size":32,"split":"train800val200","synthetic":"shape","test_images":500},"inputs":{}}"#,
            ),
            (
                Node::Prep(real_prep()),
                r#"{"kind":"prep","revision":2,"params":{"dtd_split":1,"format":"dtd","img_size":224,"sample_seed":0,"source_digest":"d1","split":"train800"},"inputs":{}}"#,
            ),
            (
                Node::Build(pretrain_build()),
                r#"{"kind":"build","revision":2,"params":{"arch":{"depth":12,"embed_dim":192,"img_size":32,"in_chans":3,"mlp_ratio":4.0,"num_heads":3,"patch_size":8,"qkv_bias":true},"img_size":32,"mean":[0.5,0.5,0.5],"numerics":"cpu-fp32","pretrain":{"batch_size":128,"epochs":16,"images":6000,"lr":0.001,"seed":0,"task":"source","weight_decay":0.05},"std":[0.5,0.5,0.5]},"inputs":{}}"#,
            ),
            (
                Node::Build(file_build()),
                r#"{"kind":"build","revision":2,"params":{"arch":{"depth":12,"embed_dim":192,"img_size":32,"in_chans":3,"mlp_ratio":4.0,"num_heads":3,"patch_size":8,"qkv_bias":true},"mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5],"weights_blake3":"ab"},"inputs":{}}"#,
            ),
            (
                Node::Train(train()),
                r#"{"kind":"train","revision":2,"params":{"augment":"none","batch_size":64,"clip_grad_norm":null,"epochs":10,"label_smoothing":0.0,"lr":0.001,"method":{"alpha":8.0,"dropout":0.0,"name":"lora","r":8,"rslora":false,"targets":["q","v"]},"min_lr":1e-6,"numerics":"cpu-fp32","seed":0,"warmup_epochs":1,"weight_decay":0.0001},"inputs":{"build":"b","prep":"p"}}"#,
            ),
            (
                Node::Eval(eval()),
                r#"{"kind":"eval","revision":2,"params":{"numerics":"cpu-fp32"},"inputs":{"build":"b","prep":"p","train":"t"}}"#,
            ),
            (
                Node::Select(select()),
                r#"{"kind":"select","revision":1,"params":{"candidates":[["e1","e2"],["e3","e4"]]},"inputs":{}}"#,
            ),
        ];
        let mut keys = Vec::new();
        for (node, bytes) in cases {
            let fp = fingerprint(&node);
            assert_eq!(String::from_utf8(fp.canonical_bytes()).unwrap(), bytes);
            keys.push(fp.key());
        }
        assert_eq!(
            keys,
            [
                "fed2c0e18e37f731eb4137003181662776903a89b422fde01ff4780ad71a1a6f",
                "18b1bf81e5a834c75c0c86e3e2c5b671b43c3039dfc8272d33d0ac18d6b03787",
                "b12ba50f6f2f0c4e368109c714b7c13d9f7c0b1972a8070ac2364a48308b992a",
                "c45f8bce49bd6cb05eb3295d35c5e6d29fce1c6eb35a127827e418287c690c24",
                "5039d755237ccde8dc0fc50c0ace28a58ad4869c5240bf72eb952b769eaac6d8",
                "68f811320348419dd51e4e24900d0fe20d056342f4c11e4b1b0528b8ccf3d173",
                "ec207e2d1ed2372412378d061f73844a34d27455d07ef01eec046e6e3ed887cb",
            ]
        );
    }

    /// (what changes, the node before, the node after, whether the key must change).
    type Case = (&'static str, Node, Node, bool);

    fn case<T: Clone>(
        what: &'static str,
        base: T,
        wrap: fn(T) -> Node,
        change: impl FnOnce(&mut T),
        semantic: bool,
    ) -> Case {
        let mut changed = base.clone();
        change(&mut changed);
        (what, wrap(base), wrap(changed), semantic)
    }

    /// Changes the LoRA spec of a train node.
    fn lora(t: &mut TrainNode, change: impl FnOnce(&mut LoraSpec)) {
        let mut spec = t
            .method
            .downcast::<LoraSpec>()
            .expect("the base train node is LoRA")
            .clone();
        change(&mut spec);
        t.method = Method::new(spec);
    }

    fn real(p: &mut PrepNode) -> &mut RealSource {
        match &mut p.source {
            Source::Real(r) => r,
            _ => unreachable!("a real prep"),
        }
    }

    fn recipe(b: &mut BuildNode) -> &mut Pretrain {
        match &mut b.weights {
            BuildWeights::Pretrain { recipe, .. } => recipe,
            _ => unreachable!("a pretraining build"),
        }
    }

    fn cases() -> Vec<Case> {
        let cuda = Numerics::resolve(Precision::Auto, DeviceKind::Cuda);
        let (t, e) = (train(), eval());
        let (tr, ev) = (Node::Train as fn(_) -> _, Node::Eval as fn(_) -> _);
        let (pr, bu) = (Node::Prep as fn(_) -> _, Node::Build as fn(_) -> _);
        let (sp, rp) = (synthetic_prep(), real_prep());
        let test_split = PrepNode {
            split: Split::Test,
            ..real_prep()
        };
        let (fb, pb) = (file_build(), pretrain_build());
        let (se, sn) = (select(), Node::Select as fn(_) -> _);
        vec![
            case(
                "prep view_of",
                sp.clone(),
                pr,
                |p| p.view_of = Some("whole".into()),
                true,
            ),
            case(
                "select dataset",
                se.clone(),
                sn,
                |s| s.dataset = "x".into(),
                false,
            ),
            case(
                "select family",
                se.clone(),
                sn,
                |s| s.family = "x".into(),
                false,
            ),
            case(
                "select config",
                se.clone(),
                sn,
                |s| s.candidates[0].config = "x".into(),
                false,
            ),
            case(
                "select hparams",
                se.clone(),
                sn,
                |s| {
                    s.candidates[0].hparams.insert("lr".into(), "9".into());
                },
                false,
            ),
            case(
                "select eval key",
                se.clone(),
                sn,
                |s| s.candidates[1].evals[0] = "e9".into(),
                true,
            ),
            case(
                "select candidate order",
                se.clone(),
                sn,
                |s| s.candidates.swap(0, 1),
                true,
            ),
            case(
                "select candidates added",
                se,
                sn,
                |s| {
                    let c = s.candidates[0].clone();
                    s.candidates.push(c)
                },
                true,
            ),
            case(
                "train dataset label",
                t.clone(),
                tr,
                |t| t.dataset = "x".into(),
                false,
            ),
            case(
                "train config label",
                t.clone(),
                tr,
                |t| t.config = "x".into(),
                false,
            ),
            case(
                "train family",
                t.clone(),
                tr,
                |t| t.family = "x".into(),
                false,
            ),
            case(
                "train eval_batch_size",
                t.clone(),
                tr,
                |t| t.opt.eval_batch_size = 7,
                false,
            ),
            // Held by the prep input's key, not by the train node's own parameters.
            case(
                "train img_size",
                t.clone(),
                tr,
                |t| t.opt.img_size = 64,
                false,
            ),
            case(
                "train sample_seed",
                t.clone(),
                tr,
                |t| t.opt.sample_seed = 5,
                false,
            ),
            case(
                "train train_split",
                t.clone(),
                tr,
                |t| t.opt.train_split = Split::Train800,
                false,
            ),
            case(
                "train eval_split",
                t.clone(),
                tr,
                |t| t.opt.eval_split = Split::Val200,
                false,
            ),
            // Resolved before hashing: only the numerics it resolves to count.
            case(
                "train precision auto -> fp32 (cpu)",
                t.clone(),
                tr,
                |t| t.opt.precision = Precision::Fp32,
                false,
            ),
            case(
                "train numerics cpu -> cuda",
                t.clone(),
                tr,
                |t| t.numerics = cuda,
                true,
            ),
            case(
                "train lora r",
                t.clone(),
                tr,
                |t| lora(t, |s| s.r = 4),
                true,
            ),
            case(
                "train lora alpha",
                t.clone(),
                tr,
                |t| lora(t, |s| s.alpha = 16.0),
                true,
            ),
            case(
                "train lora dropout",
                t.clone(),
                tr,
                |t| lora(t, |s| s.dropout = 0.1),
                true,
            ),
            case(
                "train lora rslora",
                t.clone(),
                tr,
                |t| lora(t, |s| s.rslora = true),
                true,
            ),
            case(
                "train lora targets",
                t.clone(),
                tr,
                |t| lora(t, |s| s.targets = vec![Target::Qkv]),
                true,
            ),
            case(
                "train lora use_dora",
                t.clone(),
                tr,
                |t| lora(t, |s| s.use_dora = true),
                true,
            ),
            case(
                "train method",
                t.clone(),
                tr,
                |t| t.method = Method::linear(),
                true,
            ),
            case("train seed", t.clone(), tr, |t| t.seed = 1, true),
            case("train epochs", t.clone(), tr, |t| t.opt.epochs = 3, true),
            case(
                "train batch_size",
                t.clone(),
                tr,
                |t| t.opt.batch_size = 32,
                true,
            ),
            case("train lr", t.clone(), tr, |t| t.opt.lr = 5e-4, true),
            case("train min_lr", t.clone(), tr, |t| t.opt.min_lr = 0.0, true),
            case(
                "train weight_decay",
                t.clone(),
                tr,
                |t| t.opt.weight_decay = 0.0,
                true,
            ),
            case(
                "train warmup_epochs",
                t.clone(),
                tr,
                |t| t.opt.warmup_epochs = 0,
                true,
            ),
            case(
                "train label_smoothing",
                t.clone(),
                tr,
                |t| t.opt.label_smoothing = 0.1,
                true,
            ),
            case(
                "train clip_grad_norm",
                t.clone(),
                tr,
                |t| t.opt.clip_grad_norm = Some(1.0),
                true,
            ),
            case(
                "train augment",
                t.clone(),
                tr,
                |t| t.opt.augment = "flip".into(),
                true,
            ),
            case(
                "train prep input",
                t.clone(),
                tr,
                |t| t.prep = "p2".into(),
                true,
            ),
            case("train build input", t, tr, |t| t.build = "b2".into(), true),
            case(
                "eval dataset label",
                e.clone(),
                ev,
                |e| e.dataset = "x".into(),
                false,
            ),
            case(
                "eval config label",
                e.clone(),
                ev,
                |e| e.config = "x".into(),
                false,
            ),
            case(
                "eval family",
                e.clone(),
                ev,
                |e| e.family = "x".into(),
                false,
            ),
            case(
                "eval seed (held by train)",
                e.clone(),
                ev,
                |e| e.seed = 4,
                false,
            ),
            case(
                "eval hparams",
                e.clone(),
                ev,
                |e| {
                    e.hparams.insert("lr".into(), "1".into());
                },
                false,
            ),
            case(
                "eval eval_batch_size",
                e.clone(),
                ev,
                |e| e.eval_batch_size = 7,
                false,
            ),
            case("eval numerics", e.clone(), ev, |e| e.numerics = cuda, true),
            case(
                "eval train input",
                e.clone(),
                ev,
                |e| e.train = "t2".into(),
                true,
            ),
            case(
                "eval prep input",
                e.clone(),
                ev,
                |e| e.prep = "p2".into(),
                true,
            ),
            case("eval build input", e, ev, |e| e.build = "b2".into(), true),
            case(
                "prep dataset name",
                sp.clone(),
                pr,
                |p| p.dataset = "x".into(),
                false,
            ),
            case(
                "prep sample_seed (synthetic)",
                sp.clone(),
                pr,
                |p| p.sample_seed = 3,
                false,
            ),
            case(
                "prep sample_seed (test split)",
                test_split,
                pr,
                |p| p.sample_seed = 3,
                false,
            ),
            case(
                "prep root path",
                rp.clone(),
                pr,
                |p| real(p).root = "/elsewhere".into(),
                false,
            ),
            case(
                "prep split",
                sp.clone(),
                pr,
                |p| p.split = Split::Test,
                true,
            ),
            case("prep img_size", sp.clone(), pr, |p| p.img_size = 64, true),
            case(
                "prep task",
                sp.clone(),
                pr,
                |p| {
                    p.source = Source::Synthetic {
                        task: Task::Count,
                        test_images: 500,
                    }
                },
                true,
            ),
            case(
                "prep test_images",
                sp,
                pr,
                |p| {
                    p.source = Source::Synthetic {
                        task: Task::Shape,
                        test_images: 9,
                    }
                },
                true,
            ),
            case(
                "prep source_digest",
                rp.clone(),
                pr,
                |p| p.source_digest = "d2".into(),
                true,
            ),
            case(
                "prep sample_seed (drawing split)",
                rp.clone(),
                pr,
                |p| p.sample_seed = 3,
                true,
            ),
            case(
                "prep format",
                rp.clone(),
                pr,
                |p| real(p).format = Format::Imagefolder,
                true,
            ),
            case(
                "prep dtd_split",
                rp,
                pr,
                |p| real(p).dtd_split = Some(2),
                true,
            ),
            case(
                "build weights path",
                fb.clone(),
                bu,
                |b| {
                    b.weights = BuildWeights::File {
                        path: "/x.safetensors".into(),
                        blake3: "ab".into(),
                    }
                },
                false,
            ),
            case(
                "build arch.num_classes",
                fb.clone(),
                bu,
                |b| b.arch.num_classes = 7,
                false,
            ),
            case(
                "build weights digest",
                fb.clone(),
                bu,
                |b| {
                    b.weights = BuildWeights::File {
                        path: "/w/vit.safetensors".into(),
                        blake3: "cd".into(),
                    }
                },
                true,
            ),
            case(
                "build arch.depth",
                fb.clone(),
                bu,
                |b| b.arch.depth = 6,
                true,
            ),
            case(
                "build arch.img_size",
                fb.clone(),
                bu,
                |b| b.arch.img_size = 64,
                true,
            ),
            case(
                "build arch.patch_size",
                fb.clone(),
                bu,
                |b| b.arch.patch_size = 16,
                true,
            ),
            case("build mean", fb.clone(), bu, |b| b.mean = [0.4; 3], true),
            case("build std", fb, bu, |b| b.std = [0.4; 3], true),
            case(
                "build pretrain numerics",
                pb.clone(),
                bu,
                |b| {
                    if let BuildWeights::Pretrain { numerics, .. } = &mut b.weights {
                        *numerics = cuda;
                    }
                },
                true,
            ),
            case(
                "build pretrain epochs",
                pb.clone(),
                bu,
                |b| recipe(b).epochs = 2,
                true,
            ),
            case(
                "build pretrain images",
                pb.clone(),
                bu,
                |b| recipe(b).images = 100,
                true,
            ),
            case(
                "build pretrain lr",
                pb.clone(),
                bu,
                |b| recipe(b).lr = 0.1,
                true,
            ),
            case(
                "build pretrain batch_size",
                pb.clone(),
                bu,
                |b| recipe(b).batch_size = 8,
                true,
            ),
            case(
                "build pretrain weight_decay",
                pb.clone(),
                bu,
                |b| recipe(b).weight_decay = 0.0,
                true,
            ),
            case(
                "build pretrain seed",
                pb.clone(),
                bu,
                |b| recipe(b).seed = 9,
                true,
            ),
            case(
                "build pretrain task",
                pb,
                bu,
                |b| recipe(b).task = Task::Shape,
                true,
            ),
        ]
    }

    /// Every field of every registered method is in the train key: changing any one
    /// changes it (the spec's serialisation is the identity, so a new field is covered).
    #[test]
    fn every_method_field_is_in_the_key() {
        let base = train();
        let mut seen = 0;
        for (row, m) in kernels::bench::standard_methods() {
            let with = |m: Method| {
                key(Node::Train(TrainNode {
                    method: m,
                    ..base.clone()
                }))
            };
            let before = with(m.clone());
            for (k, v) in m.fields() {
                let changed = match &v {
                    serde_json::Value::Bool(b) => serde_json::json!(!b),
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => serde_json::json!(i + 1),
                        None => serde_json::json!(n.as_f64().unwrap() + 0.5),
                    },
                    serde_json::Value::Array(a) if a.len() > 1 => {
                        serde_json::Value::Array(a[1..].to_vec())
                    }
                    serde_json::Value::Array(_) => serde_json::json!(["fc2", "qkv"]),
                    // A choice: another of the registered names.
                    serde_json::Value::String(s) => {
                        let kind = m
                            .spec()
                            .info()
                            .params
                            .iter()
                            .find(|p| p.key == k)
                            .map(|p| p.kind);
                        match kind {
                            Some(kernels::method::ParamKind::Choice(names)) => {
                                serde_json::json!(names
                                    .iter()
                                    .find(|n| *n != s)
                                    .expect("two choices"))
                            }
                            _ => panic!("{row}: field {k} = {s:?}: teach this test to change it"),
                        }
                    }
                    other => panic!("{row}: field {k} = {other}: teach this test to change it"),
                };
                let mut fields = m.fields();
                fields.insert(k.clone(), changed);
                let other = Method::from_fields(m.name(), fields).unwrap();
                assert_ne!(with(other), before, "{row}: `{k}` is not in the key");
                seen += 1;
            }
        }
        assert!(seen >= 10, "only {seen} fields checked");
    }

    /// Field by field, every kind: labels, paths, eval batch size and the like leave the key
    /// alone; every semantic field changes it.
    #[test]
    fn each_field_is_semantic_or_not_as_declared() {
        let wrong: Vec<String> = cases()
            .into_iter()
            .filter(|(_, before, after, semantic)| {
                (key(before.clone()) != key(after.clone())) != *semantic
            })
            .map(|(what, _, _, semantic)| {
                format!(
                    "{what}: expected the key to {}change",
                    if semantic { "" } else { "not " }
                )
            })
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }
}
