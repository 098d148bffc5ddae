//! vtab-orch kernels: a timm-exact Vision Transformer, PEFT adapters with Hugging Face
//! peft's semantics, and the training primitives, on tch (libtorch). No orchestration here.
pub mod accel;
pub mod adapters;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod linear;
pub mod method;
pub mod model;
pub mod optim;
pub mod peft_format;
pub mod peft_import;
pub mod peft_targets;
pub mod safetensors_file;
pub mod schedule;
pub mod train;
pub mod vit;

pub use adapters::{Ia3Spec, LoraSpec, VeraSpec};
pub use config::VitConfig;
pub use error::{Error, Result};
pub use method::{Method, Target};
pub use model::{AdaptedVit, ParamCounts};
pub use vit::VisionTransformer;
