//! BitFit (Ben Zaken et al. 2022): every bias (linear, conv and LayerNorm) and the head.
use crate::method::{from_serde, Method, MethodInfo, MethodSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bitfit {}

pub static INFO: MethodInfo = MethodInfo {
    name: "bitfit",
    about: "BitFit: every bias (linear, conv, LayerNorm) and the head",
    params: &[],
    from_fields: from_serde::<Bitfit>,
    peft: None,
    bench: || vec![("bitfit", Method::bitfit())],
};

impl MethodSpec for Bitfit {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn trains_backbone(&self, name: &str) -> bool {
        name.ends_with(".bias")
    }
}
