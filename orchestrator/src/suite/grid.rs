//! The whole suite: top-level keys, sections in order, runs checked for collisions, and
//! `[[override]]` entries applied to the runs they match.
use super::defaults::{Opt, OPT_KEYS};
use super::parser::{display, held_bytes, Parser, MAX_HELD_BYTES, MAX_LIST, MAX_RUNS};
use super::{DatasetDef, Run, Source, Suite, TOP_KEYS};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

impl Parser {
    pub(super) fn suite(&mut self, path: &Path, root: &Value) -> Option<Suite> {
        let top = self.table("", root, &TOP_KEYS)?;
        let name = top
            .get("name")
            .and_then(|v| self.str("name", v))
            .unwrap_or("suite")
            .to_string();
        let store = top
            .get("store")
            .and_then(|v| self.str("store", v))
            .map(|s| self.base.join(s))
            .unwrap_or_else(|| self.base.join("results/store"));
        let protocol = self.protocol(top);
        // With a protocol, the runs expanded here are the finals (seeds: final_seeds).
        let seeds = match (&protocol, top.get("seeds")) {
            (Some(p), _) => p.final_seeds.clone(),
            (None, Some(v)) => self.seeds("seeds", v),
            (None, None) => vec![0],
        };
        let slurm = self.slurm(top.get("slurm"));
        // The backbone first: run image sizes are checked against its patch size.
        let backbone = match top.get("backbone") {
            Some(b) => self.backbone(b),
            None => {
                self.err("backbone", "missing: every suite needs a [backbone] table");
                None
            }
        };
        let mut defaults = Opt::default();
        if let Some(d) = top.get("defaults") {
            if let Some(m) = self.table("defaults", d, &OPT_KEYS) {
                self.opt_into("defaults", m, &mut defaults);
            }
        }
        let mut datasets = BTreeMap::new();
        let mut ds_opts = BTreeMap::new();
        // Every declared name, also of tables with errors (to check references without
        // repeating those errors).
        let mut declared = Vec::new();
        if let Some(m) = self.named_tables(top, "datasets") {
            for (name, v) in m {
                declared.push(name.as_str());
                if let Some((def, opt, seeds_override)) = self.dataset(name, v, &defaults) {
                    ds_opts.insert(name.clone(), (opt, seeds_override));
                    datasets.insert(name.clone(), def);
                }
            }
        }
        let mut runs = Vec::new();
        let mut families = Vec::new();
        if let Some(m) = self.named_tables(top, "methods") {
            for (family, v) in m {
                families.push(family.as_str());
                runs.extend(self.method(family, v, &ds_opts, &declared, &seeds));
                if runs.len() > MAX_RUNS {
                    self.err(
                        "methods",
                        format!(
                            "the method tables expand to more than {MAX_RUNS} runs in all (grid \
                             points x datasets x seeds); split the study into several suites"
                        ),
                    );
                    runs.clear();
                    break;
                }
            }
        }
        if let Some(o) = top.get("override") {
            self.overrides(o, &mut runs, &declared, &families);
        }
        self.distinct_runs(&runs);
        if let Some(b) = &backbone {
            self.methods_fit(&b.arch, &runs);
        }
        self.synthetic_splits_fit(&datasets, &runs);
        // A run image size that nothing set is the default: it must fit the patches too.
        if let Some(p) = self.patch_size {
            let set_somewhere = self.errors.iter().any(|e| e.key.ends_with(".img_size"));
            if !set_somewhere && runs.iter().any(|r| r.opt.img_size % p != 0) {
                self.err(
                    "defaults.img_size",
                    format!(
                        "not set, and the default {} is not a multiple of backbone.patch_size {p}",
                        Opt::default().img_size
                    ),
                );
            }
        }
        let (runs, selections) = match &protocol {
            Some(p) => super::protocol::search(runs, p),
            None => (runs, Vec::new()),
        };
        Some(Suite {
            path: path.to_path_buf(),
            protocol,
            selections,
            name,
            store,
            backbone: backbone?,
            datasets,
            runs,
            slurm,
        })
    }

    /// `[slurm]`: parsed by the Slurm launcher's own config type.
    fn slurm(&mut self, v: Option<&Value>) -> crate::sched::slurm::SlurmConfig {
        use crate::sched::slurm::config::{SlurmConfig, KEYS};
        let Some(m) = v.and_then(|v| self.table("slurm", v, &KEYS)) else {
            return SlurmConfig::default();
        };
        let (config, errors) = SlurmConfig::parse(m);
        for (key, msg) in errors {
            self.err(&key, msg);
        }
        config
    }

    /// `[datasets]` or `[methods]`: a non-empty table of tables.
    pub(super) fn named_tables<'a>(
        &mut self,
        top: &'a Map<String, Value>,
        key: &str,
    ) -> Option<&'a Map<String, Value>> {
        let what = format!("declare at least one [{key}.NAME]");
        match top.get(key) {
            None => self.err(key, format!("missing: {what}")),
            Some(Value::Object(m)) if m.is_empty() => self.err(key, format!("is empty: {what}")),
            Some(Value::Object(m)) => return Some(m),
            Some(v) => self.wrong_type(key, &format!("[{key}.NAME] tables"), v),
        }
        None
    }

    /// Two runs with the same dataset, configuration label and seed would share a row (and
    /// one would be lost): name the method tables that collide.
    /// Every method fits the backbone (block sizes dividing its widths, ranks within them):
    /// an error here, not a failed train node after the search has run.
    fn methods_fit(&mut self, arch: &kernels::VitConfig, runs: &[Run]) {
        let mut seen = std::collections::BTreeSet::new();
        for r in runs {
            if !seen.insert((&r.family, r.method.label())) {
                continue;
            }
            if let Err(e) = r.method.spec().fits(arch) {
                let msg = e.split_once(": ").map_or(e.as_str(), |(_, m)| m);
                self.err(
                    &format!("methods.{}", r.family),
                    format!(
                        "{msg} (the backbone: embed_dim {}, mlp {}, patch {})",
                        arch.embed_dim,
                        arch.mlp_hidden(),
                        arch.patch_size
                    ),
                );
            }
        }
    }

    pub(super) fn distinct_runs(&mut self, runs: &[Run]) {
        let mut seen: BTreeMap<(&str, &str, u64), &str> = BTreeMap::new();
        let mut clashes: BTreeMap<(&str, &str), &Run> = BTreeMap::new();
        for r in runs {
            if let Some(first) = seen.insert((&r.dataset, &r.config, r.seed), &r.family) {
                clashes.entry((first, &r.family)).or_insert(r);
            }
        }
        for ((first, family), r) in clashes {
            let what = if first == family {
                "expands to the same run twice".to_string()
            } else {
                format!("repeats runs of [methods.{first}]")
            };
            self.err(
                &format!("methods.{family}"),
                format!(
                    "{what} (`{}` on {}, seed {}); change or remove one",
                    r.config, r.dataset, r.seed
                ),
            );
        }
    }

    pub(super) fn overrides(
        &mut self,
        v: &Value,
        runs: &mut [Run],
        datasets: &[&str],
        families: &[&str],
    ) {
        // After other errors the runs may be incomplete: "matches no run" could be wrong.
        let complete = self.errors.is_empty();
        let Some(list) = v.as_array() else {
            self.wrong_type("override", "[[override]] entries (an array of tables)", v);
            return;
        };
        for (i, o) in list.iter().enumerate() {
            let key = format!("override[{i}]");
            let mut allowed = vec!["dataset", "method"];
            allowed.extend(OPT_KEYS);
            let Some(m) = self.table(&key, o, &allowed) else {
                continue;
            };
            if !m.keys().any(|k| OPT_KEYS.contains(&k.as_str())) {
                self.err(&key, "sets nothing (give settings such as epochs or lr)");
            }
            let mut known = true;
            let mut name = |p: &mut Parser, k: &str, what: &str, names: &[&str]| {
                let v = m.get(k)?;
                let n = p.one_of(&format!("{key}.{k}"), v, what, names);
                known &= n.is_some();
                n
            };
            let ds = name(self, "dataset", "dataset", datasets);
            let me = name(self, "method", "method table", families);
            let mut hits = 0;
            for r in runs.iter_mut() {
                if ds.is_some_and(|d| d != r.dataset) || me.is_some_and(|x| x != r.family) {
                    continue;
                }
                hits += 1;
                self.opt_into(&key, m, &mut r.opt);
                r.hparams.insert("lr".into(), r.opt.lr.to_string());
                r.hparams.insert("epochs".into(), r.opt.epochs.to_string());
            }
            if hits == 0 && known && complete {
                let why = match (ds, me) {
                    (Some(d), Some(x)) => {
                        format!("[methods.{x}] has no run on dataset `{d}` (see its `datasets`)")
                    }
                    (Some(d), None) => format!("no method runs on dataset `{d}`"),
                    _ => "no run".to_string(),
                };
                self.err(&key, format!("matches no run: {why}"));
            }
        }
    }

    /// The grid of a method table: every list value is an axis, a scalar an axis of one (in
    /// key order, so the expansion is stable). Empty axes and repeated values are errors.
    pub(super) fn grid_axes(
        &mut self,
        key: &str,
        m: &Map<String, Value>,
        grid_keys: &[&str],
    ) -> Vec<(String, Vec<Value>)> {
        let mut axes = Vec::new();
        for (k, v) in m.iter().filter(|(k, _)| grid_keys.contains(&k.as_str())) {
            let axis = format!("{key}.{k}");
            match v {
                Value::Array(a) if a.is_empty() => {
                    self.err(&axis, "is an empty grid axis: give at least one value")
                }
                Value::Array(a) if a.len() > MAX_LIST => self.err(
                    &axis,
                    format!("lists {} values, at most {MAX_LIST}", a.len()),
                ),
                Value::Array(a) => {
                    // A repeated value is reported and dropped (it would repeat runs).
                    let mut values = Vec::new();
                    for x in a {
                        if values.contains(x) {
                            self.err(&axis, format!("lists {} twice", display(x)));
                        } else {
                            values.push(x.clone());
                        }
                    }
                    axes.push((k.clone(), values))
                }
                other => axes.push((k.clone(), vec![other.clone()])),
            }
        }
        axes
    }
}

/// One point of a grid: (key, value) per axis.
pub(super) type Point = Vec<(String, Value)>;

/// The cartesian product of the axes, the first axis varying slowest.
pub(super) fn grid_points(axes: &[(String, Vec<Value>)]) -> Vec<Point> {
    let mut points: Vec<Point> = vec![Vec::new()];
    for (k, values) in axes {
        points = points
            .iter()
            .flat_map(|p| {
                values
                    .iter()
                    .map(move |v| [p.clone(), vec![(k.clone(), v.clone())]].concat())
            })
            .collect();
    }
    points
}

impl Parser {
    /// Each synthetic test split, generated and held whole by its prep node at the largest
    /// image size a run uses it with, fits in [`MAX_HELD_BYTES`]; else an error under its key.
    fn synthetic_splits_fit(&mut self, datasets: &BTreeMap<String, DatasetDef>, runs: &[Run]) {
        for (name, d) in datasets {
            let Source::Synthetic { test_images, .. } = d.source else {
                continue;
            };
            let side = runs
                .iter()
                .filter(|r| &r.dataset == name)
                .map(|r| r.opt.img_size)
                .max();
            let Some(side) = side else { continue };
            let bytes = held_bytes(test_images, side);
            if bytes > MAX_HELD_BYTES {
                self.err(
                    &format!("datasets.{name}.test_images"),
                    format!(
                        "{test_images} images of {side}x{side} need {:.1} GiB in memory (the prep \
                         node holds the split whole); at most {} GiB: use fewer test_images",
                        bytes as f64 / (1u64 << 30) as f64,
                        MAX_HELD_BYTES >> 30
                    ),
                );
            }
        }
    }
}
