//! The layers a suite is read from: the file, then `VTAB_ORCH_*` environment variables, then
//! `--set` assignments (both validated like the file); TOML syntax errors with line:column.
use super::diagnostic::{Diagnostic, Origin, Problem, SuiteError};
use super::parser::Parser;
use super::Suite;
use figment::providers::{Format as _, Serialized, Toml};
use figment::Figment;
use serde_json::Value;
use std::path::Path;

/// Prefix of environment variables that set suite keys.
const ENV_PREFIX: &str = "VTAB_ORCH_";
/// Top-level keys an environment variable may set without a `__` level separator.
const ENV_TOP: [&str; 3] = ["name", "store", "seeds"];

/// [`super::load`] with an explicit environment (tests pass their own).
pub fn load_with_env(
    path: &Path,
    sets: &[String],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Suite, SuiteError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let problem = Diagnostic::invalid("", format!("cannot read the suite: {e}"));
        SuiteError::new(path, vec![problem])
    })?;
    parse_str(&text, path, sets, env)
}

/// [`load_with_env`] of the suite text `text`, as if read from `path` (named in errors, and
/// the folder relative paths start from). Pure: nothing is read from disk.
pub fn parse_str(
    text: &str,
    path: &Path,
    sets: &[String],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Suite, SuiteError> {
    let fail = |d: Diagnostic| SuiteError::new(path, vec![d]);
    let file = toml::from_str::<toml::Table>(text).map_err(|e| fail(syntax_error(text, &e)))?;
    let mut fig = Figment::from(Toml::string(text));
    let mut assigned = Vec::new();
    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    let layers = env_assignments(&env)
        .into_iter()
        .chain(sets.iter().map(|s| set_assignment(s)));
    for a in layers {
        let (key, value, origin) = a.map_err(|d| fail(*d))?;
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        fig = fig.merge(Serialized::default(&key, value));
        assigned.push((key, origin));
    }
    let root: Value = fig
        .extract()
        .map_err(|e| fail(Diagnostic::invalid("", e)))?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut p = Parser {
        errors: Vec::new(),
        base,
        patch_size: None,
        depth: None,
        file,
        assigned,
    };
    let suite = p.suite(path, &root);
    if p.errors.is_empty() {
        Ok(suite.expect("no errors means a suite"))
    } else {
        Err(SuiteError::new(path, p.errors))
    }
}

/// (dotted key, value in TOML syntax, origin) of one override layer entry.
type Assignment<'a> = Result<(String, &'a str, Origin), Box<Diagnostic>>;

/// `--set KEY=VALUE`.
fn set_assignment(s: &str) -> Assignment<'_> {
    let origin = Origin::Set(s.to_string());
    let bad = |msg: String| Box::new(Diagnostic::invalid("", format!("--set `{s}`: {msg}")));
    let Some((k, v)) = s.split_once('=') else {
        return Err(bad("expected KEY=VALUE, e.g. defaults.epochs=2".into()));
    };
    let k = k.trim();
    if !is_dotted_key(k) {
        return Err(bad(format!(
            "`{k}` is not a dotted key such as defaults.epochs"
        )));
    }
    Ok((k.to_string(), v, origin))
}

/// `VTAB_ORCH_DEFAULTS__EPOCHS=2` is `defaults.epochs = 2`: `__` separates levels, names
/// are case-insensitive (lowercased). Variables without `__` are the tool's own settings
/// (`VTAB_ORCH_HOME`, `VTAB_ORCH_PYTHON`, ...), except `NAME`, `STORE` and `SEEDS`.
fn env_assignments(env: &[(String, String)]) -> Vec<Assignment<'_>> {
    env.iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            let key = rest.to_lowercase().replace("__", ".");
            if !rest.contains("__") && !ENV_TOP.contains(&key.as_str()) {
                return None;
            }
            let origin = Origin::Env(name.clone());
            Some(if is_dotted_key(&key) {
                Ok((key, value.as_str(), origin))
            } else {
                Err(Box::new(Diagnostic::invalid(
                    "",
                    format!("environment variable {name}: `{key}` is not a dotted key (write VTAB_ORCH_DEFAULTS__EPOCHS for defaults.epochs)"),
                )))
            })
        })
        .collect()
}

fn is_dotted_key(k: &str) -> bool {
    k.split('.').all(|p| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// A TOML syntax error at line:column, quoting the source line.
fn syntax_error(text: &str, e: &toml::de::Error) -> Diagnostic {
    let mut what = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return Diagnostic::invalid("", format!("TOML syntax error: {what}"));
    };
    if what == "duplicate key" {
        // The span covers the repeated key (the last part of a repeated table header).
        if let Some(k) = text.get(span.clone()).map(str::trim) {
            what = format!("duplicate key `{k}`");
        }
    }
    let (line, col) = line_col(text, span.start);
    let source: String = text
        .lines()
        .nth(line - 1)
        .unwrap_or("")
        .trim()
        .chars()
        .take(60)
        .collect();
    if !source.is_empty() {
        what = format!("{what} in `{source}`");
    }
    Diagnostic::new(
        "",
        Problem::Syntax {
            line,
            col,
            message: what,
        },
    )
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}
