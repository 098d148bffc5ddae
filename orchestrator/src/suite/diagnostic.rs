//! Typed suite errors: each names the key to change, what is wrong with it and, for a value
//! not in the file, where it came from (`--set`, an environment variable); did-you-mean.
use std::path::PathBuf;

/// Every problem found in a suite, sorted, each naming the file and the key.
#[derive(Debug)]
pub struct SuiteError {
    pub file: PathBuf,
    pub errors: Vec<Diagnostic>,
}

impl SuiteError {
    /// Sorted as they print (so the order never depends on the order of checks), repeats
    /// dropped.
    pub fn new(file: impl Into<PathBuf>, mut errors: Vec<Diagnostic>) -> Self {
        errors.sort_by_cached_key(|d| d.to_string());
        errors.dedup();
        SuiteError {
            file: file.into(),
            errors,
        }
    }
}

impl std::fmt::Display for SuiteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for SuiteError {}

/// One problem: the dotted key to change (`defaults.epochs`, `override[0].dataset`; empty
/// for the file as a whole), what is wrong, and where a value not in the file came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub key: String,
    pub problem: Problem,
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A key this table does not have, with the likely intended one.
    UnknownKey {
        suggestion: Option<String>,
        allowed: Vec<String>,
    },
    /// A value of the wrong type (`expected a positive integer, found the string "3"`).
    WrongType { expected: String, found: String },
    /// A name outside a closed list (a method, a dataset, a layer...).
    UnknownName {
        what: String,
        name: String,
        suggestion: Option<String>,
        names: Vec<String>,
    },
    /// TOML that does not parse, at 1-based line and column.
    Syntax {
        line: usize,
        col: usize,
        message: String,
    },
    /// A key that contradicts `[protocol]` (the protocol decides it), and why.
    ContradictsProtocol(String),
    /// Any other rule, as a sentence.
    Invalid(String),
}

/// Where a value that is not in the suite file came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// `--set KEY=VALUE`, as typed.
    Set(String),
    /// A `VTAB_ORCH_*` environment variable, by name.
    Env(String),
}

impl Diagnostic {
    pub fn new(key: impl Into<String>, problem: Problem) -> Self {
        Diagnostic {
            key: key.into(),
            problem,
            origin: None,
        }
    }

    /// A rule broken at `key`, as a sentence.
    pub fn invalid(key: impl Into<String>, msg: impl std::fmt::Display) -> Self {
        Diagnostic::new(key, Problem::Invalid(msg.to_string()))
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        write!(f, "{}", self.problem)?;
        match &self.origin {
            Some(Origin::Set(s)) => write!(f, " (from --set {s})"),
            Some(Origin::Env(v)) => write!(f, " (from the environment variable {v})"),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::UnknownKey {
                suggestion: Some(s),
                ..
            } => write!(f, "unknown key; did you mean `{s}`?"),
            Problem::UnknownKey {
                suggestion: None,
                allowed,
            } => write!(f, "unknown key; allowed here: {}", allowed.join(", ")),
            Problem::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            Problem::UnknownName {
                what,
                name,
                suggestion,
                names,
            } => {
                let hint = suggestion
                    .as_ref()
                    .map(|n| format!("did you mean `{n}`? "))
                    .unwrap_or_default();
                write!(
                    f,
                    "unknown {what} `{name}` ({hint}one of: {})",
                    names.join(", ")
                )
            }
            Problem::Syntax { line, col, message } => {
                write!(f, "{line}:{col}: TOML syntax error: {message}")
            }
            Problem::ContradictsProtocol(why) => {
                write!(f, "contradicts [protocol]: {why}")
            }
            Problem::Invalid(msg) => f.write_str(msg),
        }
    }
}

/// An unknown name, with the nearest known one as a suggestion.
pub fn unknown_name(what: &str, name: &str, names: &[&str]) -> Problem {
    Problem::UnknownName {
        what: what.into(),
        name: name.into(),
        suggestion: nearest(name, names).map(String::from),
        names: names.iter().map(|n| n.to_string()).collect(),
    }
}

/// The name a misspelt `k` most likely meant: a common synonym (peft's names), else the
/// closest by edit distance, at most 1 edit for short names and 2 from four letters on.
pub(super) fn nearest<'a>(k: &str, names: &[&'a str]) -> Option<&'a str> {
    const SYNONYMS: [(&str, &str); 5] = [
        ("learning_rate", "lr"),
        ("rank", "r"),
        ("lora_alpha", "alpha"),
        ("lora_dropout", "dropout"),
        ("target_modules", "targets"),
    ];
    let synonym = SYNONYMS.iter().find(|(from, _)| *from == k);
    if let Some(n) = synonym.and_then(|(_, to)| names.iter().find(|n| *n == to)) {
        return Some(n);
    }
    names
        .iter()
        .map(|n| (edits(k, n), *n))
        .filter(|(d, n)| {
            let short = k.chars().count().min(n.chars().count());
            *d < short && *d <= if short >= 4 { 2 } else { 1 }
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Edit distance with transpositions (optimal string alignment).
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, x) in d[0].iter_mut().enumerate() {
        *x = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let swap = i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1];
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]))
                .min(if swap {
                    d[i - 2][j - 2] + 1
                } else {
                    usize::MAX
                });
        }
    }
    d[a.len()][b.len()]
}
