//! The adapter implementations (LoRA, VeRA, IA3), one file each.
pub mod ia3;
pub mod lora;
pub mod vera;

pub use ia3::Ia3;
pub use lora::{lora_scale, Lora};
pub use vera::{Vera, VeraProjections};
