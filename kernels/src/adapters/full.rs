//! Full fine-tuning: every tensor trains.
use crate::method::{from_serde, Method, MethodInfo, MethodSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Full {}

pub static INFO: MethodInfo = MethodInfo {
    name: "full",
    about: "full fine-tuning: every tensor",
    params: &[],
    from_fields: from_serde::<Full>,
    peft: None,
    bench: || vec![("full", Method::full())],
};

impl MethodSpec for Full {
    fn info(&self) -> &'static MethodInfo {
        &INFO
    }

    fn trains_backbone(&self, _name: &str) -> bool {
        true
    }
}
