//! A `[methods.NAME]` table: the method, its parameters, and the grid its list values span,
//! expanded into runs over the datasets it applies to.
use super::defaults::{Opt, OPT_KEYS};
use super::diagnostic::{nearest, unknown_name};
use super::grid::grid_points;
use super::parser::{display, Parser, MAX_RUNS};
use super::Run;
use kernels::method::{lookup, names, MethodInfo, ParamKind};
use kernels::peft_targets::{select, ModuleSpec};
use kernels::{Method, Target};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// `peft_suffix_match = true`: a method's `targets` are matched like peft's `target_modules`.
/// A suite key of every method with targets, not a method parameter (it resolves to targets).
const SUFFIX_MATCH: &str = "peft_suffix_match";

/// Method-table keys that are method parameters of some registered method (the rest are
/// optimisation settings).
fn spec_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = kernels::adapters::REGISTRY
        .iter()
        .flat_map(|m| m.params.iter().map(|p| p.key))
        .collect();
    keys.push(SUFFIX_MATCH);
    keys.sort();
    keys.dedup();
    keys
}

fn has_targets(info: &MethodInfo) -> bool {
    info.params.iter().any(|p| p.kind == ParamKind::Targets)
}

/// The keys of `info`'s table that are its parameters.
fn params_of(info: &MethodInfo) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = info.params.iter().map(|p| p.key).collect();
    if has_targets(info) {
        keys.push(SUFFIX_MATCH);
    }
    keys
}

impl Parser {
    pub(super) fn method(
        &mut self,
        family: &str,
        v: &Value,
        ds: &BTreeMap<String, (Opt, Option<Vec<u64>>)>,
        declared: &[&str],
        seeds: &[u64],
    ) -> Vec<Run> {
        let key = format!("methods.{family}");
        let mut allowed: Vec<&str> = spec_keys();
        allowed.extend(OPT_KEYS);
        allowed.extend(["method", "datasets", "seeds"]);
        let Some(m) = self.table(&key, v, &allowed) else {
            return Vec::new();
        };
        let Some(info) = self.method_kind(&key, family, m).and_then(lookup) else {
            return Vec::new();
        };
        // Parameters the method label shows (`peft_suffix_match` through the targets it
        // resolves to) stay out of the row label.
        let mut labelled: Vec<&str> = info
            .params
            .iter()
            .filter(|p| p.labelled)
            .map(|p| p.key)
            .collect();
        labelled.push(SUFFIX_MATCH);
        let only = m
            .get("datasets")
            .map(|d| self.dataset_list(&format!("{key}.datasets"), d, declared));
        let method_seeds = m
            .get("seeds")
            .map(|s| self.seeds(&format!("{key}.seeds"), s));
        let grid_keys = allowed
            .iter()
            .copied()
            .filter(|k| !["method", "datasets", "seeds"].contains(k));
        let axes = self.grid_axes(&key, m, &grid_keys.collect::<Vec<_>>());
        let size = axes
            .iter()
            .try_fold(1usize, |n, (_, values)| n.checked_mul(values.len()))
            .filter(|n| *n <= MAX_RUNS);
        if size.is_none() {
            self.err(
                &key,
                format!(
                    "its grid has more than {MAX_RUNS} points (the product of its list \
                     lengths); split the study into several suites"
                ),
            );
            return Vec::new();
        }
        let points = grid_points(&axes);
        // Every setting the table gives (a grid axis or a single value: either way it differs
        // from the defaults on purpose) goes into the row label, unless the method label shows
        // it already or it is not semantic (`eval_batch_size`).
        let varying: BTreeSet<&str> = axes
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| *k != "eval_batch_size" && !labelled.contains(k))
            .collect();
        let mut runs = Vec::new();
        for point in points {
            let Some(method) = self.method_spec(&key, info, &point) else {
                continue;
            };
            for (dname, (dopt, dseeds)) in ds {
                if only.as_ref().is_some_and(|o| !o.contains(dname)) {
                    continue;
                }
                let mut opt = dopt.clone();
                let mut hparams = BTreeMap::new();
                let mut config = method.label();
                for (k, v) in &point {
                    if OPT_KEYS.contains(&k.as_str()) {
                        self.opt_key(&format!("{key}.{k}"), k, v, &mut opt);
                    }
                    if varying.contains(k.as_str()) {
                        config += &format!(" {k}={}", display(v));
                    }
                    hparams.insert(k.clone(), display(v));
                }
                if point
                    .iter()
                    .any(|(k, v)| k == SUFFIX_MATCH && v == &Value::Bool(true))
                {
                    // The report shows what peft's matching resolved the names to.
                    let resolved: Vec<&str> = method.targets().iter().map(|t| t.as_str()).collect();
                    hparams.insert("targets".into(), resolved.join(","));
                }
                hparams.insert("lr".into(), opt.lr.to_string());
                hparams.insert("epochs".into(), opt.epochs.to_string());
                let run_seeds = method_seeds
                    .clone()
                    .or_else(|| dseeds.clone())
                    .unwrap_or_else(|| seeds.to_vec());
                if runs.len() + run_seeds.len() > MAX_RUNS {
                    self.err(
                        &key,
                        format!(
                            "expands to more than {MAX_RUNS} runs (grid points x datasets x \
                             seeds); split the study into several suites"
                        ),
                    );
                    return Vec::new();
                }
                for seed in run_seeds {
                    runs.push(Run {
                        dataset: dname.clone(),
                        family: family.to_string(),
                        method: method.clone(),
                        opt: opt.clone(),
                        seed,
                        config: config.clone(),
                        hparams: hparams.clone(),
                    });
                }
            }
        }
        runs
    }

    /// The method a table configures: its `method` key, else its name.
    fn method_kind<'a>(
        &mut self,
        key: &str,
        family: &'a str,
        m: &'a serde_json::Map<String, Value>,
    ) -> Option<&'a str> {
        let methods = names();
        match m.get("method") {
            Some(v) => self.one_of(&format!("{key}.method"), v, "method", &methods),
            None if methods.contains(&family) => Some(family),
            None => {
                let hint = nearest(family, &methods)
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                self.err(
                    key,
                    format!(
                        "`{family}` is not a method{hint}: name the table after one of {}, or set `method = \"...\"` in it",
                        methods.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// A method's `datasets = [...]`: names of declared datasets.
    pub(super) fn dataset_list(&mut self, key: &str, v: &Value, declared: &[&str]) -> Vec<String> {
        let Some(list) = v.as_array() else {
            self.wrong_type(key, "a list of dataset names", v);
            return Vec::new();
        };
        if list.is_empty() {
            self.err(
                key,
                "is empty: list datasets, or leave `datasets` out to run on all",
            );
        }
        list.iter()
            .filter_map(|x| self.one_of(key, x, "dataset", declared))
            .map(String::from)
            .collect()
    }

    /// The method a grid point configures: each parameter read by its kind (errors name the
    /// key), the spec built by the registry, then validated.
    pub(super) fn method_spec(
        &mut self,
        key: &str,
        info: &MethodInfo,
        point: &[(String, Value)],
    ) -> Option<Method> {
        let kind = info.name;
        let get = |k: &str| point.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.clone());
        let allowed = params_of(info);
        for (k, _) in point
            .iter()
            .filter(|(k, _)| !OPT_KEYS.contains(&k.as_str()))
        {
            if !allowed.contains(&k.as_str()) {
                self.err(
                    &format!("{key}.{k}"),
                    format!(
                        "not a parameter of {kind} (its parameters: {})",
                        if allowed.is_empty() {
                            "none".to_string()
                        } else {
                            allowed.join(", ")
                        }
                    ),
                );
            }
        }
        let suffix_match = match get(SUFFIX_MATCH) {
            Some(v) => self.bool(&format!("{key}.{SUFFIX_MATCH}"), &v)?,
            None => false,
        };
        let mut fields = Map::new();
        for p in info.params {
            let pkey = format!("{key}.{}", p.key);
            let v = get(p.key);
            let value = match (p.kind, v) {
                (ParamKind::Targets, v) => {
                    let targets = if suffix_match {
                        self.peft_targets(&pkey, v)?
                    } else {
                        self.targets(&pkey, v)?
                    };
                    serde_json::to_value(targets).expect("targets serialise")
                }
                (_, None) => continue,
                // A negative allowed value (LoKr's decompose_factor = -1) is taken as is.
                (ParamKind::Int { min, .. }, Some(v))
                    if v.as_i64().is_some_and(|x| x < 0 && x >= min) =>
                {
                    v
                }
                (ParamKind::Int { min, max }, Some(v)) => {
                    let x = self.integer_in(&pkey, &v, min.max(0) as u64, max.max(0) as u64)?;
                    Value::from(x)
                }
                (ParamKind::Float, Some(v)) => Value::from(self.f64(&pkey, &v)?),
                (ParamKind::Bool, Some(v)) => Value::from(self.bool(&pkey, &v)?),
                (ParamKind::Choice(names), Some(v)) => {
                    Value::from(self.one_of(&pkey, &v, p.key, names)?)
                }
                (ParamKind::Names(names), Some(v)) => Value::from(self.names(&pkey, &v, names)?),
            };
            fields.insert(p.key.to_string(), value);
        }
        let method = match Method::from_fields(kind, fields) {
            Ok(m) => m,
            Err(e) => {
                self.err(key, e);
                return None;
            }
        };
        if let Err(e) = method.validate() {
            // Its messages read "lora: `alpha` must be > 0, got 0": file them under the field.
            let msg = e.split_once(": ").map_or(e.as_str(), |(_, m)| m);
            let field = msg.split('`').nth(1).filter(|f| allowed.contains(f));
            self.err(
                &field.map_or(key.to_string(), |f| format!("{key}.{f}")),
                msg,
            );
            return None;
        }
        Some(method)
    }

    /// `targets` with `peft_suffix_match = true`: names matched like peft's `target_modules`
    /// list (a timm module name or a dotted suffix of one: `proj` is attn.proj and
    /// patch_embed.proj), resolved to our targets on the backbone's blocks.
    fn peft_targets(&mut self, tkey: &str, v: Option<Value>) -> Option<Vec<Target>> {
        let Some(v) = v else {
            self.err(
                tkey,
                "missing (e.g. \"qkv,proj,fc1,fc2\", peft's target_modules)",
            );
            return None;
        };
        let entries: Vec<String> = self
            .str(tkey, &v)?
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        // Without a valid backbone (already an error) there are no blocks to match.
        let depth = self.depth?;
        let spec = ModuleSpec::List(entries);
        let sel = match select(&spec, None, &["head".into()], depth) {
            Ok(sel) => sel,
            Err(e) => {
                self.err(tkey, format!("with peft_suffix_match: {e}"));
                return None;
            }
        };
        if let Some(e) = sel.unmatched.first() {
            self.err(
                tkey,
                format!(
                    "with peft_suffix_match, `{e}` matches no timm module name (entries are \
                     module names or their dotted suffixes: qkv, proj, attn.proj, fc1, mlp.fc2, \
                     patch_embed.proj; q/k/v slices are not modules)"
                ),
            );
            return None;
        }
        Some(sel.targets)
    }

    /// `norms = "norm1,norm"`: distinct names of `names`, in the order `names` lists them.
    fn names(&mut self, key: &str, v: &Value, names: &[&'static str]) -> Option<Vec<&'static str>> {
        let mut out: Vec<&'static str> = Vec::new();
        for t in self
            .str(key, v)?
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let Some(x) = names.iter().copied().find(|x| *x == t) else {
                self.problem(key, unknown_name("name", t, names));
                return None;
            };
            if out.contains(&x) {
                self.err(key, format!("lists `{t}` twice"));
                return None;
            }
            out.push(x);
        }
        out.sort_by_key(|x| names.iter().position(|n| n == x));
        Some(out)
    }

    /// `targets = "q,v"`: distinct known layers, not both qkv and one of its slices, sorted
    /// (order does not matter to the model: "v,q" is the same run and key as "q,v").
    fn targets(&mut self, tkey: &str, v: Option<Value>) -> Option<Vec<Target>> {
        let layers = Target::ALL.map(Target::as_str);
        let Some(v) = v else {
            self.err(
                tkey,
                format!("missing (e.g. \"q,v\"; layers: {})", layers.join(", ")),
            );
            return None;
        };
        let mut out: Vec<Target> = Vec::new();
        for t in self
            .str(tkey, &v)?
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let Some(x) = Target::ALL.into_iter().find(|x| x.as_str() == t) else {
                self.problem(tkey, unknown_name("layer", t, &layers));
                return None;
            };
            if out.contains(&x) {
                self.err(tkey, format!("lists `{t}` twice"));
                return None;
            }
            let clash = out.iter().find(|o| {
                (**o == Target::Qkv && x.qkv_slice().is_some())
                    || (x == Target::Qkv && o.qkv_slice().is_some())
            });
            if let Some(o) = clash {
                self.err(
                    tkey,
                    format!(
                        "has both `{}` and `{t}`: q, k and v are slices of qkv; choose one",
                        o.as_str()
                    ),
                );
                return None;
            }
            out.push(x);
        }
        out.sort();
        Some(out)
    }
}
