//! Node identity: a `Fingerprint` (kind, kind revision, semantic parameters, input keys)
//! serialised to canonical bytes and hashed with blake3. Nothing else decides a key.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The revision of node kind `kind` (registered in `node::KINDS`).
pub fn revision(kind: &str) -> u32 {
    crate::node::KINDS
        .iter()
        .find(|k| k.name == kind)
        .map(|k| k.revision)
        .expect("known node kind")
}

/// Everything that determines a node's outputs. Maps are sorted (BTreeMap, and
/// serde_json's Map is a BTreeMap here), so the encoding is canonical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub kind: String,
    pub revision: u32,
    pub params: BTreeMap<String, Value>,
    pub inputs: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn new(kind: &str) -> Self {
        Fingerprint {
            kind: kind.to_string(),
            revision: revision(kind),
            params: BTreeMap::new(),
            inputs: BTreeMap::new(),
        }
    }

    /// A fingerprint whose parameters are the fields of `identity` (a struct of
    /// `identity.rs`), each a top-level parameter.
    pub fn of(kind: &str, identity: &impl Serialize) -> Self {
        let Value::Object(fields) = serde_json::to_value(identity).expect("identity serialises")
        else {
            panic!("an identity serialises to a map of fields")
        };
        let mut fp = Fingerprint::new(kind);
        fp.params.extend(fields);
        fp
    }

    pub fn param(mut self, k: &str, v: impl Serialize) -> Self {
        self.params.insert(
            k.to_string(),
            serde_json::to_value(v).expect("serialisable parameter"),
        );
        self
    }

    pub fn input(mut self, k: &str, key: &str) -> Self {
        self.inputs.insert(k.to_string(), key.to_string());
        self
    }

    /// The canonical bytes: compact JSON with sorted keys and floats in Rust's shortest
    /// round-trip form.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("fingerprint serialises")
    }

    /// blake3 of the canonical bytes, hex (64 chars).
    pub fn key(&self) -> String {
        blake3::hash(&self.canonical_bytes()).to_hex().to_string()
    }

    /// Human-readable differences against another fingerprint of the same kind
    /// ("lr: 0.001 -> 0.0005", "input prep changed").
    pub fn diff(&self, old: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        if self.revision != old.revision {
            out.push(format!(
                "{} revision {} -> {}",
                self.kind, old.revision, self.revision
            ));
        }
        let keys: std::collections::BTreeSet<&String> =
            self.params.keys().chain(old.params.keys()).collect();
        for k in keys {
            match (old.params.get(k), self.params.get(k)) {
                (a, b) if a == b => {}
                (Some(a), Some(b)) => diff_value(k, a, b, &mut out),
                (None, Some(b)) => out.push(format!("{k}: (unset) -> {b}")),
                (Some(a), None) => out.push(format!("{k}: {a} -> (unset)")),
                (None, None) => {}
            }
        }
        for (k, v) in &self.inputs {
            if old.inputs.get(k) != Some(v) {
                out.push(format!("input {k} changed"));
            }
        }
        out
    }
}

fn diff_value(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(a), Some(b)) if a != b => diff_value(&p, a, b, out),
                    (None, Some(b)) => out.push(format!("{p}: (unset) -> {b}")),
                    (Some(a), None) => out.push(format!("{p}: {a} -> (unset)")),
                    _ => {}
                }
            }
        }
        _ => out.push(format!("{path}: {a} -> {b}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_and_key() {
        let fp = Fingerprint::new("train")
            .param("lr", 0.001)
            .param("seed", 3u64)
            .input("prep", "ab")
            .input("build", "cd");
        // Pinned: changing the encoding changes every key in every store.
        assert_eq!(
            String::from_utf8(fp.canonical_bytes()).unwrap(),
            r#"{"kind":"train","revision":2,"params":{"lr":0.001,"seed":3},"inputs":{"build":"cd","prep":"ab"}}"#
        );
        assert_eq!(
            fp.key(),
            blake3::hash(&fp.canonical_bytes()).to_hex().to_string()
        );
        assert_eq!(
            fp.key(),
            "be55feccbd6d573fac0f460448bb0f49ffedebd2a54b775712f538de8b96c748"
        );
    }

    #[test]
    fn param_order_does_not_matter() {
        let a = Fingerprint::new("eval").param("x", 1).param("y", 2);
        let b = Fingerprint::new("eval").param("y", 2).param("x", 1);
        assert_eq!(a.key(), b.key());
    }

    #[test]
    fn diff_names_changed_params_and_inputs() {
        let a = Fingerprint::new("train")
            .param("lr", 0.001)
            .input("prep", "a");
        let b = Fingerprint::new("train")
            .param("lr", 0.0005)
            .input("prep", "b");
        assert_eq!(
            b.diff(&a),
            vec![
                "lr: 0.001 -> 0.0005".to_string(),
                "input prep changed".to_string()
            ]
        );
    }
}
