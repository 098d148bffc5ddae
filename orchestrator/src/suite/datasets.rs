//! A `[datasets.NAME]` table: synthetic or real source, its own settings and seeds.
use super::defaults::{Opt, OPT_KEYS};
use super::parser::{Parser, MAX_IMAGES};
use super::{DatasetDef, Source, FORMATS};
use crate::datasets::synthetic::Task;
use crate::datasets::{Format, RealSource};
use serde_json::Value;

impl Parser {
    #[allow(clippy::type_complexity)]
    pub(super) fn dataset(
        &mut self,
        name: &str,
        v: &Value,
        defaults: &Opt,
    ) -> Option<(DatasetDef, Opt, Option<Vec<u64>>)> {
        let key = format!("datasets.{name}");
        const SYNTHETIC: [&str; 2] = ["task", "test_images"];
        const REAL: [&str; 4] = ["root", "dtd_split", "train_csv", "test_csv"];
        let mut allowed = vec!["format", "seeds", "group"];
        allowed.extend(SYNTHETIC.iter().chain(&REAL).chain(&OPT_KEYS));
        let m = self.table(&key, v, &allowed)?;
        let mut opt = defaults.clone();
        self.opt_into(&key, m, &mut opt);
        let seeds = m
            .get("seeds")
            .map(|s| self.seeds(&format!("{key}.seeds"), s));
        let group = match m.get("group") {
            Some(g) => Some(self.group(&format!("{key}.group"), g)?),
            None => None,
        };
        let format = match m.get("format") {
            Some(f) => self.one_of(&format!("{key}.format"), f, "dataset format", &FORMATS)?,
            None => {
                self.err(
                    &format!("{key}.format"),
                    format!("missing (one of: {})", FORMATS.join(", ")),
                );
                return None;
            }
        };
        let (theirs, not_ours) = if format == "synthetic" {
            (&SYNTHETIC[..], &REAL[..])
        } else {
            (&REAL[..], &SYNTHETIC[..])
        };
        for k in not_ours.iter().filter(|k| m.contains_key(**k)) {
            self.err(
                &format!("{key}.{k}"),
                format!(
                    "not used by format {format} (its keys: {})",
                    theirs.join(", ")
                ),
            );
        }
        let source = if format == "synthetic" {
            let task = match m.get("task") {
                Some(t) => self.task(&format!("{key}.task"), t)?,
                None => {
                    self.err(
                        &format!("{key}.task"),
                        format!("missing (one of: {})", Task::NAMES.join(", ")),
                    );
                    return None;
                }
            };
            let test_images = match m.get("test_images") {
                Some(t) => self.integer_in(&format!("{key}.test_images"), t, 1, MAX_IMAGES)?,
                None => 1000,
            };
            Source::Synthetic { task, test_images }
        } else {
            let format: Format = serde_json::from_value(format.into()).expect("one of FORMATS");
            let root = match m.get("root") {
                Some(r) => {
                    let r = self.str(&format!("{key}.root"), r)?;
                    self.base.join(r)
                }
                None => {
                    self.err(
                        &format!("{key}.root"),
                        format!("missing: the folder holding the {format} files"),
                    );
                    return None;
                }
            };
            // (Out of range, it becomes a split number the dtd reader rejects.)
            let dtd_split = match m.get("dtd_split") {
                Some(s) => Some(
                    self.u64(&format!("{key}.dtd_split"), s)?
                        .try_into()
                        .unwrap_or(u32::MAX),
                ),
                None => None,
            };
            let mut file = |k: &str| match m.get(k) {
                Some(f) => self.str(&format!("{key}.{k}"), f).map(|f| Some(f.into())),
                None => Some(None),
            };
            Source::Real(RealSource {
                format,
                root,
                dtd_split,
                train_csv: file("train_csv")?,
                test_csv: file("test_csv")?,
            })
        };
        Some((
            DatasetDef {
                name: name.to_string(),
                source,
                group,
            },
            opt,
            seeds,
        ))
    }

    /// `group`: the dataset's group in the report's VTAB-1k table (`natural`, `specialized`,
    /// `structured`, or a name of one's own); not part of any key.
    fn group(&mut self, key: &str, v: &Value) -> Option<String> {
        let g = self.str(key, v)?.trim();
        if g.is_empty() {
            self.err(
                key,
                "empty: name the dataset's group (natural, specialized, structured, or one of \
                 your own)"
                    .to_string(),
            );
            return None;
        }
        Some(g.to_string())
    }
}
