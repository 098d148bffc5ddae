//! The VTAB-1k table as papers print it: methods as rows, datasets as columns grouped
//! natural | specialized | structured (then groups of the suite's own, then `other`), the
//! group means, and both averages papers use: the mean over tasks and the mean of the group
//! means. Aggregation and its Markdown and CSV text (LaTeX: `latex.rs`); records only.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::groups::{group_rank, group_title, task_rank, OTHER};
use super::table::{cell_of, mark_best, mean, natural_cmp, RowKey};
use super::{md_escape, Cell, RunRecord};

/// What a row of the table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsBy {
    /// A `[methods.NAME]` table (the protocol: each cell is that method's chosen setting).
    MethodTable,
    /// A configuration (a grid suite: each grid point is a method).
    Config,
}

/// A dataset column and its group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub dataset: String,
    pub group: String,
}

/// A mean over some cells of a row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    /// `None` when the row has none of the cells it averages.
    pub value: Option<f64>,
    /// Over fewer cells (or groups) than the table has: the row lacks some.
    pub partial: bool,
}

impl Mean {
    fn of(values: &[f64], of: usize) -> Mean {
        Mean {
            value: (!values.is_empty()).then(|| mean(values)),
            partial: !values.is_empty() && values.len() < of,
        }
    }
}

/// One method (row) of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VtabRow {
    /// The row's label: the method table (`lora_mlp`) or the configuration.
    pub method: String,
    /// The method family (`lora`).
    pub family: String,
    /// One per [`VtabTable::columns`]; `None` where the method has no finished run.
    pub cells: Vec<Option<Cell>>,
    /// One per [`VtabTable::groups`]: the mean of the row's cells in that group.
    pub group_means: Vec<Mean>,
    /// The mean over every grouped task the row has (`other` datasets are in no mean).
    pub mean_tasks: Mean,
    /// The mean of the row's group means.
    pub mean_groups: Mean,
    /// Grouped datasets of the table this row lacks (its means are then partial).
    pub missing: Vec<String>,
}

/// Methods x datasets with the group means and both averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VtabTable {
    /// Datasets in print order: by group (natural, specialized, structured, the suite's own
    /// by name, other), within one in the papers' task order, then by name.
    pub columns: Vec<Column>,
    /// The groups with a mean column, in order (`other` has none).
    pub groups: Vec<String>,
    pub rows: Vec<VtabRow>,
}

impl VtabTable {
    /// Columns of `group`.
    pub fn columns_of<'a>(&'a self, group: &'a str) -> impl Iterator<Item = usize> + 'a {
        (0..self.columns.len()).filter(move |i| self.columns[*i].group == group)
    }

    /// Datasets in `other` (in no mean).
    pub fn ungrouped(&self) -> Vec<&str> {
        self.columns
            .iter()
            .filter(|c| c.group == OTHER)
            .map(|c| c.dataset.as_str())
            .collect()
    }

    /// Whether any mean of any row is partial.
    pub fn any_partial(&self) -> bool {
        self.rows.iter().any(|r| !r.missing.is_empty())
    }
}

fn columns(records: &[RunRecord]) -> Vec<Column> {
    let mut by_ds: BTreeMap<&str, &str> = BTreeMap::new();
    for r in records {
        by_ds.entry(&r.dataset).or_insert(&r.group);
    }
    let mut cols: Vec<Column> = by_ds
        .into_iter()
        .map(|(d, g)| Column {
            dataset: d.to_string(),
            group: if g.is_empty() { OTHER } else { g }.to_string(),
        })
        .collect();
    cols.sort_by(|a, b| {
        group_rank(&a.group)
            .cmp(&group_rank(&b.group))
            .then_with(|| {
                let rank = |d: &str| task_rank(d).unwrap_or(usize::MAX);
                rank(&a.dataset).cmp(&rank(&b.dataset))
            })
            .then_with(|| natural_cmp(&a.dataset, &b.dataset))
    });
    cols
}

/// Means of one row's cells: per group, over the grouped tasks, over the group means.
fn row_means(cols: &[Column], groups: &[String], cells: &[Option<Cell>]) -> VtabRow {
    let value = |i: usize| cells[i].as_ref().map(|c| c.mean);
    let group_means: Vec<Mean> = groups
        .iter()
        .map(|g| {
            let idx: Vec<usize> = (0..cols.len()).filter(|i| cols[*i].group == *g).collect();
            let have: Vec<f64> = idx.iter().filter_map(|i| value(*i)).collect();
            Mean::of(&have, idx.len())
        })
        .collect();
    let grouped: Vec<usize> = (0..cols.len())
        .filter(|i| cols[*i].group != OTHER)
        .collect();
    let have: Vec<f64> = grouped.iter().filter_map(|i| value(*i)).collect();
    let mean_tasks = Mean::of(&have, grouped.len());
    let gm: Vec<f64> = group_means.iter().filter_map(|m| m.value).collect();
    let mut mean_groups = Mean::of(&gm, groups.len());
    mean_groups.partial |= group_means.iter().any(|m| m.partial);
    VtabRow {
        method: String::new(),
        family: String::new(),
        cells: cells.to_vec(),
        group_means,
        mean_tasks,
        mean_groups,
        missing: grouped
            .iter()
            .filter(|i| value(**i).is_none())
            .map(|i| cols[*i].dataset.clone())
            .collect(),
    }
}

/// The table of `records` (test results), a row per method table or per configuration.
pub fn build_vtab_table(records: &[RunRecord], by: RowsBy) -> VtabTable {
    let cols = columns(records);
    let mut groups: Vec<String> = Vec::new();
    for c in cols.iter().filter(|c| c.group != OTHER) {
        if !groups.contains(&c.group) {
            groups.push(c.group.clone());
        }
    }
    let mut by_row: BTreeMap<RowKey, BTreeMap<&str, Vec<&RunRecord>>> = BTreeMap::new();
    for r in records {
        let config = match by {
            RowsBy::MethodTable => r.method_row().to_string(),
            RowsBy::Config => r.config.clone(),
        };
        let key = RowKey {
            method: r.method.clone(),
            config,
        };
        by_row
            .entry(key)
            .or_default()
            .entry(&r.dataset)
            .or_default()
            .push(r);
    }
    let mut rows: Vec<VtabRow> = by_row
        .into_iter()
        .map(|(key, by_ds)| {
            let cells: Vec<Option<Cell>> = cols
                .iter()
                .map(|c| by_ds.get(c.dataset.as_str()).map(|rs| cell_of(rs)))
                .collect();
            VtabRow {
                method: key.config,
                family: key.method,
                ..row_means(&cols, &groups, &cells)
            }
        })
        .collect();
    mark_best(rows.iter_mut().map(|r| &mut r.cells).collect());
    VtabTable {
        columns: cols,
        groups,
        rows,
    }
}

/// A mean as papers print it (one decimal), `-` where there is none, `†` when partial.
pub(super) fn mean_text(m: &Mean, dagger: &str) -> String {
    match m.value {
        Some(v) => format!("{v:.1}{}", if m.partial { dagger } else { "" }),
        None => "-".to_string(),
    }
}

/// The notes under the table, in words (shared by Markdown and LaTeX).
pub(super) fn notes(t: &VtabTable, split: &str) -> Vec<String> {
    let tasks = t.columns.iter().filter(|c| c.group != OTHER).count();
    let mut notes = vec![format!(
        "Cells: {split} top-1 (%), the mean over the seeds (their sample std and count are in \
         the report's other tables and CSVs), one decimal as papers print it; bold: the best \
         in its column."
    )];
    let groups = t.groups.len();
    notes.push(format!(
        "Two averages, because papers use both: Mean (tasks) is the mean over the {tasks} \
         grouped task{} (VTAB-1k: 19); Mean (groups) is the mean of the {groups} group \
         mean{} (VTAB-1k: natural, specialized, structured). They differ as soon as the groups \
         differ in size (VTAB-1k: 7, 4, 8) and in results: for full fine-tuning of a ViT-B/16 \
         about 3 points. Say which one you compare with.",
        if tasks == 1 { "" } else { "s" },
        if groups == 1 { "" } else { "s" },
    ));
    let ungrouped = t.ungrouped();
    if !ungrouped.is_empty() {
        notes.push(format!(
            "In no mean: {} (group `other`: not a VTAB-1k task and no `group` key in its \
             [datasets.NAME] table).",
            ungrouped.join(", ")
        ));
    }
    for r in t.rows.iter().filter(|r| !r.missing.is_empty()) {
        notes.push(format!(
            "† {}: partial means, over only the datasets it has (it lacks {}).",
            r.method,
            r.missing.join(", ")
        ));
    }
    notes
}

/// The table in Markdown, a line naming each group's datasets above it, the notes below.
pub fn markdown(t: &VtabTable, split: &str) -> String {
    let mut s = String::new();
    let mut blocks: Vec<String> = t
        .groups
        .iter()
        .map(|g| {
            let ds: Vec<&str> = t
                .columns_of(g)
                .map(|i| t.columns[i].dataset.as_str())
                .collect();
            format!("{}: {}", group_title(g), ds.join(", "))
        })
        .collect();
    let ungrouped = t.ungrouped();
    if !ungrouped.is_empty() {
        blocks.push(format!("other (in no mean): {}", ungrouped.join(", ")));
    }
    let _ = writeln!(s, "Columns by group. {}.\n", blocks.join("; "));
    let mut header = vec!["method".to_string()];
    header.extend(t.columns.iter().map(|c| md_escape(&c.dataset)));
    header.extend(t.groups.iter().map(|g| group_title(g)));
    header.extend(["Mean (tasks)".to_string(), "Mean (groups)".to_string()]);
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let mut align = vec![":---"];
    align.extend(std::iter::repeat_n("---:", header.len() - 1));
    let _ = writeln!(s, "| {} |", align.join(" | "));
    for r in &t.rows {
        let mut cells = vec![md_escape(&r.method)];
        cells.extend(r.cells.iter().map(|c| match c {
            Some(c) if c.best => format!("**{:.1}**", c.mean),
            Some(c) => format!("{:.1}", c.mean),
            None => "-".to_string(),
        }));
        cells.extend(r.group_means.iter().map(|m| mean_text(m, "†")));
        cells.push(mean_text(&r.mean_tasks, "†"));
        cells.push(mean_text(&r.mean_groups, "†"));
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    s.push('\n');
    s.push_str(&notes(t, split).join("\n\n"));
    s.push('\n');
    s
}

/// `vtab_table.csv`: `method`, `method_kind`, a column per dataset (mean top-1, print
/// order), `mean_<group>` per group, `mean_tasks`, `mean_groups` (4 decimals; empty where
/// there is none), `partial_means` (the means over fewer cells than the table has, by
/// column name), `missing` (the grouped datasets the row lacks).
pub fn csv_rows(t: &VtabTable) -> Vec<Vec<String>> {
    let mut header = vec!["method".to_string(), "method_kind".to_string()];
    header.extend(t.columns.iter().map(|c| c.dataset.clone()));
    let group_cols: Vec<String> = t.groups.iter().map(|g| format!("mean_{g}")).collect();
    header.extend(group_cols.iter().cloned());
    header.extend(["mean_tasks", "mean_groups", "partial_means", "missing"].map(String::from));
    let num = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    let mut rows = vec![header];
    for r in &t.rows {
        let mut row = vec![r.method.clone(), r.family.clone()];
        row.extend(r.cells.iter().map(|c| num(c.as_ref().map(|c| c.mean))));
        row.extend(r.group_means.iter().map(|m| num(m.value)));
        row.push(num(r.mean_tasks.value));
        row.push(num(r.mean_groups.value));
        let mut partial: Vec<&str> = group_cols
            .iter()
            .zip(&r.group_means)
            .filter(|(_, m)| m.partial)
            .map(|(c, _)| c.as_str())
            .collect();
        if r.mean_tasks.partial {
            partial.push("mean_tasks");
        }
        if r.mean_groups.partial {
            partial.push("mean_groups");
        }
        row.push(partial.join(" "));
        row.push(r.missing.join(" "));
        rows.push(row);
    }
    rows
}
