//! The parser state and the typed readers every section uses (integers, numbers, names from
//! a closed list, tables with their allowed keys), each filing a typed diagnostic on failure.
use super::diagnostic::{nearest, unknown_name, Diagnostic, Origin, Problem};
use crate::datasets::synthetic::Task;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// Upper bounds of the suite's counts and sizes that allocate or multiply (tensors, images,
/// runs): far above any real study, low enough that a typo fails here, naming its key,
/// rather than in the allocator.
pub(super) const MAX_EPOCHS: u64 = 100_000;
pub(super) const MAX_BATCH: u64 = 65_536;
/// Pixels a side (of the backbone's and a run's image size).
pub(super) const MAX_IMG_SIZE: u64 = 4_096;
/// Synthetic images generated (pretraining, a synthetic test split).
pub(super) const MAX_IMAGES: u64 = 10_000_000;
/// Runs of one method table, and points of its grid (the product of its axes' lengths).
pub(super) const MAX_RUNS: usize = 100_000;
/// The longest list (a grid axis, seeds): each is checked for repeats value by value.
pub(super) const MAX_LIST: usize = 10_000;
/// The most memory an image set held whole may take (images x 3 x side^2 bytes): the
/// backbone's pretraining set, a synthetic test split.
pub(super) const MAX_HELD_BYTES: u64 = 16 << 30;

/// `images` images of `side` x `side` as held in memory (RGB bytes), saturating.
pub(super) fn held_bytes(images: u64, side: i64) -> u64 {
    let side = side.max(0) as u64;
    images
        .saturating_mul(3)
        .saturating_mul(side.saturating_mul(side))
}

pub(super) struct Parser {
    pub(super) errors: Vec<Diagnostic>,
    /// The suite file's folder: relative paths in it are relative to this.
    pub(super) base: PathBuf,
    /// `backbone.patch_size` once the backbone is valid: run image sizes must be multiples.
    pub(super) patch_size: Option<i64>,
    /// `backbone.depth` once the backbone is valid: peft-style targets match its blocks.
    pub(super) depth: Option<usize>,
    /// The file's own table and the environment / `--set` assignments (dotted key, origin),
    /// to say so when the value at fault is not in the file.
    pub(super) file: toml::Table,
    pub(super) assigned: Vec<(String, Origin)>,
}

/// What a value is, for "expected X, found Y" (scalars shown).
pub(super) fn found(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(a) if a.len() == 1 => "a list of 1 value".into(),
        Value::Array(a) => format!("a list of {} values", a.len()),
        Value::Object(_) => "a table".into(),
    }
}

/// `parent.k`, or `k` at the top level.
pub(super) fn sub(parent: &str, k: &str) -> String {
    if parent.is_empty() {
        k.to_string()
    } else {
        format!("{parent}.{k}")
    }
}

/// Whether the dotted `key` names something in the file itself.
fn in_table(table: &toml::Table, key: &str) -> bool {
    let mut at = Some(table);
    let mut parts = key.split('.').peekable();
    while let (Some(t), Some(p)) = (at, parts.next()) {
        match t.get(p) {
            Some(_) if parts.peek().is_none() => return true,
            Some(v) => at = v.as_table(),
            None => return false,
        }
    }
    false
}

impl Parser {
    /// Files `problem` under `key`, noting where the value came from if not from the file.
    pub(super) fn problem(&mut self, key: &str, problem: Problem) {
        // A key given or created by --set or the environment is not in the file: say so.
        let origin = self.assigned.iter().rev().find(|(k, _)| {
            key == k
                || key.starts_with(&format!("{k}."))
                || (k.starts_with(&format!("{key}.")) && !in_table(&self.file, key))
        });
        self.errors.push(Diagnostic {
            key: key.to_string(),
            problem,
            origin: origin.map(|(_, o)| o.clone()),
        });
    }

    /// A rule broken at `key`, as a sentence.
    pub(super) fn err(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.problem(key, Problem::Invalid(msg.to_string()));
    }

    /// `key` holds `v` where `expected` was wanted.
    pub(super) fn wrong_type(&mut self, key: &str, expected: &str, v: &Value) {
        self.problem(
            key,
            Problem::WrongType {
                expected: expected.into(),
                found: found(v),
            },
        );
    }

    pub(super) fn table<'a>(
        &mut self,
        key: &str,
        v: &'a Value,
        allowed: &[&str],
    ) -> Option<&'a Map<String, Value>> {
        let Some(m) = v.as_object() else {
            self.wrong_type(key, "a table", v);
            return None;
        };
        for k in m.keys().filter(|k| !allowed.contains(&k.as_str())) {
            let problem = Problem::UnknownKey {
                suggestion: nearest(k, allowed).map(String::from),
                allowed: allowed.iter().map(|a| a.to_string()).collect(),
            };
            self.problem(&sub(key, k), problem);
        }
        Some(m)
    }

    pub(super) fn u64(&mut self, key: &str, v: &Value) -> Option<u64> {
        self.integer(key, v, 0)
    }

    pub(super) fn integer(&mut self, key: &str, v: &Value, min: u64) -> Option<u64> {
        let (want, must) = match min {
            0 => (
                "a non-negative integer",
                "be a non-negative integer".to_string(),
            ),
            _ => ("a positive integer", format!("be >= {min}")),
        };
        match (v.as_u64(), v.as_i64()) {
            (Some(x), _) if x >= min => return Some(x),
            (_, Some(x)) => self.err(key, format!("must {must}, got {x}")),
            _ => self.wrong_type(key, want, v),
        }
        None
    }

    /// An integer in `min..=max` (a count or size that allocates or multiplies).
    pub(super) fn integer_in(&mut self, key: &str, v: &Value, min: u64, max: u64) -> Option<u64> {
        let x = self.integer(key, v, min)?;
        if x > max {
            self.err(key, format!("must be at most {max}, got {x}"));
            return None;
        }
        Some(x)
    }

    pub(super) fn f64(&mut self, key: &str, v: &Value) -> Option<f64> {
        match v.as_f64() {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                self.wrong_type(key, "a number", v);
                None
            }
        }
    }

    /// A number in `ok`, described by `what` ("> 0") when it is not.
    pub(super) fn number_in(
        &mut self,
        key: &str,
        v: &Value,
        what: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let x = self.f64(key, v)?;
        if ok(x) {
            Some(x)
        } else {
            self.err(key, format!("must be {what}, got {x}"));
            None
        }
    }

    pub(super) fn positive(&mut self, key: &str, v: &Value) -> Option<f64> {
        self.number_in(key, v, "> 0", |x| x > 0.0)
    }

    pub(super) fn non_negative(&mut self, key: &str, v: &Value) -> Option<f64> {
        self.number_in(key, v, ">= 0", |x| x >= 0.0)
    }

    pub(super) fn str<'a>(&mut self, key: &str, v: &'a Value) -> Option<&'a str> {
        match v.as_str() {
            Some(s) => Some(s),
            None => {
                self.wrong_type(key, "a string", v);
                None
            }
        }
    }

    pub(super) fn bool(&mut self, key: &str, v: &Value) -> Option<bool> {
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(key, "true or false", v);
                None
            }
        }
    }

    pub(super) fn enum_of<T: for<'de> Deserialize<'de>>(
        &mut self,
        key: &str,
        v: &Value,
        what: &str,
    ) -> Option<T> {
        match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(_) => {
                self.wrong_type(key, what, v);
                None
            }
        }
    }

    /// A name from a closed list (a method, a dataset, a task...).
    pub(super) fn one_of<'a>(
        &mut self,
        key: &str,
        v: &'a Value,
        what: &str,
        names: &[&str],
    ) -> Option<&'a str> {
        let s = self.str(key, v)?;
        if names.contains(&s) {
            return Some(s);
        }
        self.problem(key, unknown_name(what, s, names));
        None
    }

    pub(super) fn task(&mut self, key: &str, v: &Value) -> Option<Task> {
        self.one_of(key, v, "synthetic task", &Task::NAMES)
            .and_then(Task::parse)
    }
}

pub(super) fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
