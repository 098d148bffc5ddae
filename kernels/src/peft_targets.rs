//! Which of our adapter targets a peft `target_modules` selects, by peft's own matching
//! rules over timm's module names; must not read files or touch tensors (`peft_import.rs`).
//!
//! peft (`tuners_utils.check_target_module_exists`): a string is a regex that must match a
//! module name in full; a list entry matches a name equal to it or ending in `.entry`
//! (so `proj` hits `blocks.N.attn.proj` and `patch_embed.proj`). `exclude_modules` follows
//! the same two rules; a module under `modules_to_save` is never a target.
use crate::method::Target;
use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};

/// peft's `target_modules` (or `exclude_modules`): a regex string or a list of names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleSpec {
    Regex(String),
    List(Vec<String>),
}

/// What a module spec selects in a ViT: our targets, and list entries that matched nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub targets: Vec<Target>,
    pub unmatched: Vec<String>,
}

/// Every module name of timm's `VisionTransformer` with `depth` blocks, as
/// `named_modules()` lists them (identity and dropout modules too: peft matches all).
pub fn timm_module_names(depth: usize) -> Vec<String> {
    let mut out: Vec<String> = [
        "patch_embed",
        "patch_embed.proj",
        "patch_embed.norm",
        "pos_drop",
        "patch_drop",
        "norm_pre",
        "blocks",
    ]
    .map(String::from)
    .to_vec();
    let block = [
        "",
        "norm1",
        "attn",
        "attn.qkv",
        "attn.q_norm",
        "attn.k_norm",
        "attn.attn_drop",
        "attn.norm",
        "attn.proj",
        "attn.proj_drop",
        "ls1",
        "drop_path1",
        "norm2",
        "mlp",
        "mlp.fc1",
        "mlp.act",
        "mlp.drop1",
        "mlp.norm",
        "mlp.fc2",
        "mlp.drop2",
        "ls2",
        "drop_path2",
    ];
    for i in 0..depth {
        for m in block {
            out.push(match m {
                "" => format!("blocks.{i}"),
                m => format!("blocks.{i}.{m}"),
            });
        }
    }
    out.extend(["norm", "fc_norm", "head_drop", "head"].map(String::from));
    out
}

/// The target a module name is, with its block (`None` for the patch embedding).
fn target_of(name: &str) -> Option<(Target, Option<usize>)> {
    if name == "patch_embed.proj" {
        return Some((Target::PatchEmbed, None));
    }
    let rest = name.strip_prefix("blocks.")?;
    let (i, module) = rest.split_once('.')?;
    let t = match module {
        "attn.qkv" => Target::Qkv,
        "attn.proj" => Target::Proj,
        "mlp.fc1" => Target::Fc1,
        "mlp.fc2" => Target::Fc2,
        _ => return None,
    };
    Some((t, Some(i.parse().ok()?)))
}

fn compile(key: &str, pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        format!("`{key}` regex `{pattern}` does not compile (Rust `regex` syntax: no look-around or back-references): {e}")
    })
}

/// A compiled module spec: does a module name match it?
enum Matcher {
    Regex(Regex),
    List(Vec<String>),
}

impl Matcher {
    fn new(key: &str, spec: &ModuleSpec) -> Result<Self, String> {
        Ok(match spec {
            ModuleSpec::Regex(p) => Matcher::Regex(compile(key, p)?),
            ModuleSpec::List(l) => Matcher::List(l.clone()),
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Regex(re) => re.is_match(name),
            Matcher::List(list) => list.iter().any(|e| entry_matches(e, name)),
        }
    }
}

/// peft's rule for one list entry: the name itself or a `.`-separated suffix of it.
pub fn entry_matches(entry: &str, name: &str) -> bool {
    name == entry
        || name
            .strip_suffix(entry)
            .is_some_and(|head| head.ends_with('.'))
}

/// The timm module names a peft config selects on a ViT with `depth` blocks: matched by
/// `target_modules`, not by `exclude_modules`, not under `modules_to_save`. Errors (naming
/// the key) when a regex does not compile.
pub fn select_names(
    target_modules: &ModuleSpec,
    exclude_modules: Option<&ModuleSpec>,
    modules_to_save: &[String],
    depth: usize,
) -> Result<Vec<String>, String> {
    let wanted = Matcher::new("target_modules", target_modules)?;
    let excluded = exclude_modules
        .map(|e| Matcher::new("exclude_modules", e))
        .transpose()?;
    // peft: re.match(rf"(^|.*\.){m}($|\..*)", key) for every modules_to_save entry m.
    let saved = modules_to_save
        .iter()
        .map(|m| compile("modules_to_save", &format!(r"(|.*\.){m}(|\..*)")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(timm_module_names(depth)
        .into_iter()
        .filter(|name| {
            let skip = excluded.as_ref().is_some_and(|e| e.matches(name))
                || saved.iter().any(|re| re.is_match(name));
            !skip && wanted.matches(name)
        })
        .collect())
}

/// Our targets for a peft config on a ViT with `depth` blocks. Errors (as text naming the
/// key) when a selected module cannot be adapted, or a block target is on some blocks only.
pub fn select(
    target_modules: &ModuleSpec,
    exclude_modules: Option<&ModuleSpec>,
    modules_to_save: &[String],
    depth: usize,
) -> Result<Selection, String> {
    let names = timm_module_names(depth);
    let mut blocks: BTreeMap<Target, BTreeSet<usize>> = BTreeMap::new();
    let mut foreign = Vec::new();
    for name in select_names(target_modules, exclude_modules, modules_to_save, depth)? {
        match target_of(&name) {
            Some((t, i)) => {
                blocks.entry(t).or_default().extend(i);
            }
            None => foreign.push(name),
        }
    }
    if !foreign.is_empty() {
        return Err(format!(
            "`target_modules` selects {} which vtab-orch cannot adapt (adapters go on \
             patch_embed.proj and the block linears attn.qkv, attn.proj, mlp.fc1, mlp.fc2)",
            shorten(&foreign)
        ));
    }
    for (t, on) in &blocks {
        if *t != Target::PatchEmbed && on.len() != depth {
            let layers: Vec<String> = on.iter().map(|i| format!("blocks.{i}")).collect();
            return Err(format!(
                "`target_modules` selects `{t}` in {} only, not in all {depth} blocks: \
                 per-layer adapters are not supported",
                layers.join(", ")
            ));
        }
    }
    let unmatched = match target_modules {
        ModuleSpec::List(l) => l
            .iter()
            .filter(|e| !names.iter().any(|n| entry_matches(e, n)))
            .cloned()
            .collect(),
        ModuleSpec::Regex(_) => Vec::new(),
    };
    Ok(Selection {
        targets: blocks.into_keys().collect(),
        unmatched,
    })
}

/// IA3's `feedforward_modules` (peft: a regex matched in full, or list entries matched as
/// plain suffixes, without the dot) must mark exactly the fc2 layers: our IA3 scales the
/// input of fc2 and the output of every other target. The first module that differs.
/// Errors (naming the key) when the regex does not compile.
pub fn feedforward_mismatch(
    ff: &ModuleSpec,
    targets: &[Target],
    depth: usize,
) -> Result<Option<String>, String> {
    let re = match ff {
        ModuleSpec::Regex(p) => Some(compile("feedforward_modules", p)?),
        ModuleSpec::List(_) => None,
    };
    let is_ff = |name: &str| match (ff, &re) {
        (_, Some(re)) => re.is_match(name),
        (ModuleSpec::List(l), None) => l.iter().any(|e| name.ends_with(e.as_str())),
        (ModuleSpec::Regex(_), None) => false,
    };
    Ok(timm_module_names(depth).into_iter().find(|name| {
        target_of(name)
            .is_some_and(|(t, _)| targets.contains(&t) && is_ff(name) != (t == Target::Fc2))
    }))
}

/// Up to four names, then a count.
fn shorten(names: &[String]) -> String {
    let mut s: Vec<String> = names.iter().take(4).map(|n| format!("`{n}`")).collect();
    if names.len() > 4 {
        s.push(format!("and {} more", names.len() - 4));
    }
    s.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use Target::*;

    fn list(entries: &[&str]) -> ModuleSpec {
        ModuleSpec::List(entries.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_feedforward_regex_that_does_not_compile_is_an_error_not_no_match() {
        let bad = ModuleSpec::Regex(r"blocks\.(?=\d).*fc2".into()); // look-ahead: Python only
        let err = feedforward_mismatch(&bad, &[Qkv, Fc2], 2).unwrap_err();
        assert!(
            err.contains("`feedforward_modules`") && err.contains("does not compile"),
            "{err}"
        );
        let fc2 = ModuleSpec::Regex(r"blocks\.\d+\.mlp\.fc2".into());
        assert_eq!(feedforward_mismatch(&fc2, &[Qkv, Fc2], 2), Ok(None));
        assert_eq!(
            feedforward_mismatch(&list(&["fc1"]), &[Fc1, Fc2], 1),
            Ok(Some("blocks.0.mlp.fc1".into()))
        );
    }

    fn targets(spec: ModuleSpec) -> Result<Vec<Target>, String> {
        select(&spec, None, &["head".into()], 3).map(|s| s.targets)
    }

    #[test]
    fn list_entries_match_by_dotted_suffix_like_peft() {
        assert_eq!(
            targets(list(&["qkv", "proj", "fc1", "fc2"])).unwrap(),
            vec![PatchEmbed, Qkv, Proj, Fc1, Fc2]
        );
        assert_eq!(
            targets(list(&["attn.proj", "mlp.fc2"])).unwrap(),
            vec![Proj, Fc2]
        );
        assert_eq!(
            targets(list(&["patch_embed.proj"])).unwrap(),
            vec![PatchEmbed]
        );
        // `roj` is a suffix of `proj` but not a dotted one.
        let s = select(&list(&["roj", "fc1"]), None, &[], 2).unwrap();
        assert_eq!(
            (s.targets, s.unmatched),
            (vec![Fc1], vec!["roj".to_string()])
        );
    }

    #[test]
    fn a_regex_must_match_the_whole_name() {
        assert_eq!(
            targets(ModuleSpec::Regex(r"blocks\.\d+\.attn\.(qkv|proj)".into())).unwrap(),
            vec![Qkv, Proj]
        );
        assert_eq!(
            targets(ModuleSpec::Regex(".*proj".into())).unwrap(),
            vec![PatchEmbed, Proj]
        );
        // `qkv` alone matches no whole name.
        assert_eq!(targets(ModuleSpec::Regex("qkv".into())).unwrap(), vec![]);
        let err = targets(ModuleSpec::Regex("(?=x)".into())).unwrap_err();
        assert!(
            err.contains("target_modules") && err.contains("does not compile"),
            "{err}"
        );
    }

    #[test]
    fn some_layers_only_or_a_foreign_module_is_refused_by_name() {
        let err = targets(ModuleSpec::Regex(r"blocks\.[01]\.mlp\.fc1".into())).unwrap_err();
        assert!(
            err.contains("`target_modules`") && err.contains("blocks.0, blocks.1"),
            "{err}"
        );
        let err = targets(list(&["blocks.2.attn.qkv"])).unwrap_err();
        assert!(err.contains("blocks.2 only"), "{err}");
        let err = targets(list(&["qkv", "norm1"])).unwrap_err();
        assert!(
            err.contains("`blocks.0.norm1`") && err.contains("cannot adapt"),
            "{err}"
        );
    }

    #[test]
    fn excluded_and_saved_modules_are_not_targets() {
        let ex = list(&["patch_embed.proj"]);
        let s = select(&list(&["proj"]), Some(&ex), &[], 2).unwrap();
        assert_eq!(s.targets, vec![Proj]);
        // `head` in modules_to_save keeps a `.*` regex off the head; the rest still fails.
        let err = targets(ModuleSpec::Regex(".*".into())).unwrap_err();
        assert!(!err.contains("`head`"), "{err}");
        let s = select(
            &ModuleSpec::Regex("head|.*fc1".into()),
            None,
            &["head".into()],
            2,
        );
        assert_eq!(s.unwrap().targets, vec![Fc1]);
        let err = select(&ModuleSpec::Regex("head|.*fc1".into()), None, &[], 2).unwrap_err();
        assert!(err.contains("`head`"), "{err}");
    }
}
