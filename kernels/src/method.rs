//! Adaptation methods as data: the open catalogue. A method is one file under `adapters/`
//! holding its spec (a serde struct), a [`MethodSpec`] implementation (validation, label,
//! which tensors train, how adapters go into the model, peft's format) and a
//! [`MethodInfo`] (its name, its suite parameters, its peft reader, its bench rows) listed
//! in [`crate::adapters::REGISTRY`]. Everything else (the suite parser, node identity, the
//! report, `bench`, peft import and export) learns methods from that registry.
use crate::config::VitConfig;
use crate::peft_import::PeftConfig;
use crate::vit::VisionTransformer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::any::Any;
use std::fmt;
use std::sync::Arc;
use tch::Tensor;

/// A layer an adapter can target: a linear layer of every ViT block, or the patch
/// embedding's conv (`patch_embed.proj`, once per model). `q`, `k`, `v` are row slices of
/// the fused `qkv` (something peft cannot express on a timm model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `patch_embed.proj`, a conv with kernel = stride = patch size (peft's Conv2d LoRA/IA3).
    #[serde(rename = "patch_embed")]
    PatchEmbed,
    Q,
    K,
    V,
    Qkv,
    Proj,
    Fc1,
    Fc2,
}

impl Target {
    pub const ALL: [Target; 8] = [
        Target::PatchEmbed,
        Target::Q,
        Target::K,
        Target::V,
        Target::Qkv,
        Target::Proj,
        Target::Fc1,
        Target::Fc2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::PatchEmbed => "patch_embed",
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::Qkv => "qkv",
            Target::Proj => "proj",
            Target::Fc1 => "fc1",
            Target::Fc2 => "fc2",
        }
    }

    /// Index of the q/k/v slice inside the fused qkv, if this is a slice.
    pub fn qkv_slice(self) -> Option<i64> {
        match self {
            Target::Q => Some(0),
            Target::K => Some(1),
            Target::V => Some(2),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The largest LoRA or VeRA rank (`r`): ranks allocate `r x width` per adapted layer, and
/// published ViT studies stay below a few hundred.
pub const MAX_RANK: i64 = 4096;

/// Frozen tensors a method shares between its layers and saves with its adapter (VeRA's
/// projections): (name in peft's file after `base_model.`, tensor).
pub type Buffers = Vec<(String, Tensor)>;

/// What a method does. One implementation per file under `adapters/`; the spec struct
/// derives `Serialize`, and every serialised field is part of the train node's key (so a
/// new field cannot be left out of it; give an option that keeps its old behaviour
/// `skip_serializing_if` at its default, and old keys stay valid).
pub trait MethodSpec: fmt::Debug + Send + Sync + SpecFields {
    /// Its registry entry.
    fn info(&self) -> &'static MethodInfo;

    /// A short human label for tables, e.g. `lora r=8 a=8 q,v`.
    fn label(&self) -> String {
        self.info().name.to_string()
    }

    /// The layers it adapts (none for methods that only choose what trains).
    fn targets(&self) -> &[Target] {
        &[]
    }

    /// Checks ranks, rates and targets; the message reads "<method>: `<field>` ...".
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether the backbone tensor `name` (timm's name) trains. Adapters and the head
    /// always train.
    fn trains_backbone(&self, _name: &str) -> bool {
        false
    }

    /// Puts the method's adapters into `vit` (under `no_grad`; draws follow the seed set
    /// before). Returns the frozen tensors the layers share.
    fn insert(&self, _vit: &mut VisionTransformer, _seed: i64) -> crate::Result<Buffers> {
        Ok(Vec::new())
    }

    /// Whether a fresh model computes what the backbone does (peft's FourierFT default and HRA
    /// with Gram-Schmidt or an odd r do not).
    fn fresh_is_identity(&self) -> bool {
        true
    }

    /// Whether it fits a model of `cfg` (block sizes that divide the targeted widths, ranks
    /// within them, ...): checked when a suite is read, long before `insert` would fail.
    fn fits(&self, _cfg: &crate::config::VitConfig) -> Result<(), String> {
        Ok(())
    }

    /// Whether its change folds into the backbone's weights (`export --format merged`).
    fn mergeable(&self) -> bool {
        true
    }

    /// peft's `adapter_config.json` keys for this method (beyond the common ones), or why
    /// peft cannot hold it on a fused-qkv timm ViT.
    fn peft_config(&self) -> Result<Map<String, Value>, String> {
        Err(format!(
            "peft has no {} adapter (full fine-tuning, BitFit and linear probes are not peft tuners)",
            self.info().name
        ))
    }

    /// The trainable tensors in peft's layout and names (`base_model.model.` + ours).
    fn peft_tensors(&self, trainable: &[(String, Tensor)], _cfg: &VitConfig) -> Buffers {
        trainable
            .iter()
            .map(|(n, t)| (format!("{}{n}", crate::peft_format::PREFIX), t.detach()))
            .collect()
    }

    /// A tensor read from a peft file (name without `base_model.model.`): our name and layout.
    fn peft_tensor_in(&self, name: &str, t: Tensor) -> (String, Tensor) {
        (name.to_string(), t)
    }
}

/// What every spec gets from its derives: its fields as JSON, and downcasting.
pub trait SpecFields {
    /// The serialised fields (a JSON object).
    fn fields(&self) -> Map<String, Value>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Serialize + Any> SpecFields for T {
    fn fields(&self) -> Map<String, Value> {
        match serde_json::to_value(self).expect("a method spec serialises") {
            Value::Object(m) => m,
            other => panic!("a method spec serialises to an object, not {other}"),
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A method's registry entry.
pub struct MethodInfo {
    /// The suite's and the node's name for it (`[methods.lora]`, `"method": "lora"`).
    pub name: &'static str,
    /// One line for the README and error messages.
    pub about: &'static str,
    /// Its suite parameters (every key of its spec).
    pub params: &'static [Param],
    /// The spec from its fields, defaults filled in (not validated yet).
    pub from_fields: fn(Map<String, Value>) -> Result<Method, String>,
    /// peft's `peft_type` for it and the reader of that `adapter_config.json`.
    pub peft: Option<PeftReader>,
    /// The configurations `vtab-orch bench` measures: (row name, method).
    pub bench: fn() -> Vec<(&'static str, Method)>,
}

/// A peft `peft_type` a method reads, and how (the `PeftConfig` holds the parsed targets).
pub struct PeftReader {
    pub peft_type: &'static str,
    pub read: fn(&PeftConfig) -> crate::Result<Method>,
}

/// A suite parameter of a method.
pub struct Param {
    pub key: &'static str,
    pub kind: ParamKind,
    /// Shown by the method's label (so the report's row label need not repeat it).
    pub labelled: bool,
}

impl Param {
    /// `r`: a rank from 1 to [`MAX_RANK`], shown by the label.
    pub const RANK: Param = Param {
        key: "r",
        kind: ParamKind::Int {
            min: 1,
            max: MAX_RANK,
        },
        labelled: true,
    };
    /// `alpha`: the scale's numerator, shown by the label.
    pub const ALPHA: Param = Param {
        key: "alpha",
        kind: ParamKind::Float,
        labelled: true,
    };
    /// `dropout` on the adapter's input while training.
    pub const DROPOUT: Param = Param {
        key: "dropout",
        kind: ParamKind::Float,
        labelled: false,
    };
    /// `targets`: the layers adapted, shown by the label.
    pub const TARGETS: Param = Param {
        key: "targets",
        kind: ParamKind::Targets,
        labelled: true,
    };
}

/// `from_fields` defaults of a rank-and-scale method: `r` = `r` when absent, `alpha` = r
/// (scale 1, peft's default for LoRA, LoHa and LoKr at r = 8).
pub fn default_rank_alpha(fields: &mut Map<String, Value>, r: i64) {
    let r = fields.entry("r").or_insert(Value::from(r)).clone();
    fields.entry("alpha").or_insert(r);
}

/// Checks a rank: "<method>: `r` must be from 1 to 4096, got 0".
pub fn validate_rank(method: &str, r: i64) -> Result<(), String> {
    if (1..=MAX_RANK).contains(&r) {
        Ok(())
    } else {
        Err(format!(
            "{method}: `r` must be from 1 to {MAX_RANK}, got {r}"
        ))
    }
}

/// Checks a scale numerator: "<method>: `alpha` must be > 0, got 0".
pub fn validate_alpha(method: &str, alpha: f64) -> Result<(), String> {
    if alpha > 0.0 && alpha.is_finite() {
        Ok(())
    } else {
        Err(format!("{method}: `alpha` must be > 0, got {alpha}"))
    }
}

/// Checks a dropout probability: "<method>: `dropout` must be in [0, 1), got 1".
pub fn validate_dropout(method: &str, p: f64) -> Result<(), String> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("{method}: `dropout` must be in [0, 1), got {p}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamKind {
    /// An integer in `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    /// A finite number (ranges are the spec's `validate`).
    Float,
    Bool,
    /// A comma-separated list of [`Target`]s (`"q,v"`).
    Targets,
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A comma-separated subset of these names (`"norm1,norm"`), kept in this order.
    Names(&'static [&'static str]),
}

/// `from_fields` for a spec that serde can build (its defaults are serde's).
pub fn from_serde<T: MethodSpec + DeserializeOwned + 'static>(
    fields: Map<String, Value>,
) -> Result<Method, String> {
    serde_json::from_value::<T>(Value::Object(fields))
        .map(Method::new)
        .map_err(|e| e.to_string())
}

/// The registry entry named `name`.
pub fn lookup(name: &str) -> Option<&'static MethodInfo> {
    crate::adapters::REGISTRY
        .iter()
        .copied()
        .find(|m| m.name == name)
}

/// Every method's name, in registry order.
pub fn names() -> Vec<&'static str> {
    crate::adapters::REGISTRY.iter().map(|m| m.name).collect()
}

/// Checks a target list: not empty, no layer twice, not qkv with one of its slices.
/// `targets` of a method that adapts linear layers only (peft wraps `nn.Linear`, not the
/// patch embedding's Conv2d).
pub fn refuse_patch_embed(method: &str, targets: &[Target]) -> Result<(), String> {
    if targets.contains(&Target::PatchEmbed) {
        return Err(format!(
            "{method}: `targets` has patch_embed, a Conv2d: {method} (like peft's) adapts \
             linear layers only"
        ));
    }
    Ok(())
}

/// `targets` of a method that changes whole layers: no q/k/v slice of the fused qkv. `why`
/// says what makes a slice impossible.
pub fn refuse_slices(method: &str, targets: &[Target], why: &str) -> Result<(), String> {
    if targets.iter().any(|t| t.qkv_slice().is_some()) {
        return Err(format!(
            "{method}: `targets` has a q/k/v slice: {why} (target qkv)"
        ));
    }
    Ok(())
}

pub fn validate_targets(method: &str, targets: &[Target]) -> Result<(), String> {
    if targets.is_empty() {
        return Err(format!(
            "{method}: `targets` is empty (choose from patch_embed, q, k, v, qkv, proj, fc1, fc2)"
        ));
    }
    let mut seen = targets.to_vec();
    seen.sort();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!(
            "{method}: `targets` lists a layer twice: {targets:?}"
        ));
    }
    if seen.contains(&Target::Qkv) && seen.iter().any(|t| t.qkv_slice().is_some()) {
        return Err(format!(
            "{method}: `targets` has both qkv and a q/k/v slice of it"
        ));
    }
    Ok(())
}

/// `targets` joined for labels: `q,v`.
pub fn targets_label(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// How a backbone is adapted: one spec from the registry. Every method trains a new
/// classification head. Serialises as the spec's fields plus `"method": <name>`.
#[derive(Clone)]
pub struct Method(Arc<dyn MethodSpec>);

impl Method {
    pub fn new(spec: impl MethodSpec + 'static) -> Self {
        Method(Arc::new(spec))
    }

    /// Linear probe: the head only.
    pub fn linear() -> Self {
        Method::new(crate::adapters::linear_probe::LinearProbe {})
    }

    /// Full fine-tuning: every tensor.
    pub fn full() -> Self {
        Method::new(crate::adapters::full::Full {})
    }

    /// BitFit: every bias and the head.
    pub fn bitfit() -> Self {
        Method::new(crate::adapters::bitfit::Bitfit {})
    }

    pub fn spec(&self) -> &dyn MethodSpec {
        &*self.0
    }

    /// The spec as its concrete type, if it is one.
    pub fn downcast<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }

    pub fn name(&self) -> &'static str {
        self.0.info().name
    }

    pub fn label(&self) -> String {
        self.0.label()
    }

    pub fn targets(&self) -> &[Target] {
        self.0.targets()
    }

    pub fn validate(&self) -> Result<(), String> {
        self.0.validate()
    }

    /// The spec's fields, without the name.
    pub fn fields(&self) -> Map<String, Value> {
        self.0.fields()
    }

    /// A method from its name and fields (what `Deserialize` and the suite use).
    pub fn from_fields(name: &str, fields: Map<String, Value>) -> Result<Method, String> {
        let info = lookup(name)
            .ok_or_else(|| format!("unknown method `{name}` (one of: {})", names().join(", ")))?;
        (info.from_fields)(fields)
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name() && self.fields() == other.fields()
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = self.fields();
        m.insert("method".into(), Value::String(self.name().into()));
        m.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut m = Map::<String, Value>::deserialize(d)?;
        let name = match m.remove("method") {
            Some(Value::String(s)) => s,
            _ => {
                return Err(serde::de::Error::custom(
                    "a method needs `method`: its name",
                ))
            }
        };
        Method::from_fields(&name, m).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_method_round_trips_through_its_fields() {
        for info in crate::adapters::REGISTRY {
            for (row, m) in (info.bench)() {
                assert_eq!(m.name(), info.name, "{row}");
                m.validate().unwrap_or_else(|e| panic!("{row}: {e}"));
                let json = serde_json::to_string(&m).unwrap();
                let back: Method = serde_json::from_str(&json).unwrap();
                assert_eq!(back, m, "{row}: {json}");
                for k in m.fields().keys() {
                    assert!(
                        info.params.iter().any(|p| p.key == k),
                        "{row}: field `{k}` is no suite parameter of {}",
                        info.name
                    );
                }
            }
        }
        let mut names = names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), crate::adapters::REGISTRY.len(), "a name twice");
    }

    #[test]
    fn an_unknown_name_or_field_is_an_error() {
        let e = serde_json::from_str::<Method>(r#"{"method": "lorax"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown method `lorax`"), "{e}");
        let e = serde_json::from_str::<Method>(r#"{"method": "ia3", "targets": ["q"], "r": 2}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `r`"), "{e}");
    }
}
