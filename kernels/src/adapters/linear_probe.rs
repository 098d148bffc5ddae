//! Linear probe: the backbone frozen, a new head trained.
use crate::method::{from_serde, Method, MethodInfo, MethodSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearProbe {}

pub static INFO: MethodInfo = MethodInfo {
    name: "linear",
    about: "linear probe: the head only",
    params: &[],
    from_fields: from_serde::<LinearProbe>,
    peft: None,
    bench: || vec![("linear", Method::linear())],
};

impl MethodSpec for LinearProbe {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }
}
