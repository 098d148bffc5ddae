//! `vtab_table.tex`: the VTAB-1k table as a booktabs `tabular` to `\input` into a paper
//! (needs `\usepackage{booktabs}`), with LaTeX's special characters escaped. Text only.
use std::fmt::Write as _;

use super::groups::{group_title, OTHER};
use super::vtab_table::{mean_text, notes, VtabTable};

/// `s` with LaTeX's special characters escaped for text mode.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '~' => out.push_str(r"\textasciitilde{}"),
            '^' => out.push_str(r"\textasciicircum{}"),
            '<' => out.push_str(r"\textless{}"),
            '>' => out.push_str(r"\textgreater{}"),
            '|' => out.push_str(r"\textbar{}"),
            '±' => out.push_str(r"$\pm$"),
            '†' => out.push_str(r"\textsuperscript{\dag}"),
            '×' => out.push_str(r"$\times$"),
            c => out.push(c),
        }
    }
    out
}

/// Notes' Markdown marks as LaTeX: `**x**` is not used in notes; backticks become
/// `\texttt`.
fn note_text(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, r"\texttt{{{}}}", escape(part));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

/// The table: a header row of group names over their datasets (with `\cmidrule`s), a row of
/// dataset names, a row per method (the best of each column bold), the group means and both
/// averages (`\dag`: partial); `caption` in a comment at the top and the notes in comments
/// at the end, for the paper's caption.
pub fn vtab_table(t: &VtabTable, split: &str, caption: &str) -> String {
    let n_means = t.groups.len() + 2;
    let ncols = 1 + t.columns.len() + n_means;
    let mut s = String::new();
    let _ = writeln!(s, "% {}", caption.replace('\n', " "));
    s.push_str(
        "% Written by `vtab-orch report`; needs \\usepackage{booktabs}. \\dag: a partial mean \
         (see the notes at the end).\n",
    );
    let _ = writeln!(s, "\\begin{{tabular}}{{l{}}}", "r".repeat(ncols - 1));
    s.push_str("\\toprule\n");
    // Group header: each group over its datasets, then "Means" over the mean columns.
    let mut spans: Vec<(String, usize, usize)> = Vec::new();
    let mut col = 2;
    let mut i = 0;
    while i < t.columns.len() {
        let g = &t.columns[i].group;
        let n = t.columns[i..].iter().take_while(|c| c.group == *g).count();
        let title = if g == OTHER {
            "Other (in no mean)".to_string()
        } else {
            group_title(g)
        };
        spans.push((title, col, col + n - 1));
        col += n;
        i += n;
    }
    spans.push(("Means".to_string(), col, col + n_means - 1));
    let mut head = String::new();
    for (title, a, b) in &spans {
        let _ = write!(
            head,
            " & \\multicolumn{{{}}}{{c}}{{{}}}",
            b - a + 1,
            escape(title)
        );
    }
    let _ = writeln!(s, "{head} \\\\");
    for (_, a, b) in &spans {
        let _ = write!(s, "\\cmidrule(lr){{{a}-{b}}}");
    }
    s.push('\n');
    let mut names = vec!["Method".to_string()];
    names.extend(t.columns.iter().map(|c| escape(&c.dataset)));
    names.extend(t.groups.iter().map(|g| escape(&group_title(g))));
    names.extend(["Mean (tasks)".to_string(), "Mean (groups)".to_string()]);
    let _ = writeln!(s, "{} \\\\", names.join(" & "));
    s.push_str("\\midrule\n");
    let dag = r"\textsuperscript{\dag}";
    for r in &t.rows {
        let mut cells = vec![escape(&r.method)];
        cells.extend(r.cells.iter().map(|c| match c {
            Some(c) if c.best => format!("\\textbf{{{:.1}}}", c.mean),
            Some(c) => format!("{:.1}", c.mean),
            None => "--".to_string(),
        }));
        let m = |x| match mean_text(x, dag).as_str() {
            "-" => "--".to_string(),
            t => t.to_string(),
        };
        cells.extend(r.group_means.iter().map(m));
        cells.push(m(&r.mean_tasks));
        cells.push(m(&r.mean_groups));
        let _ = writeln!(s, "{} \\\\", cells.join(" & "));
    }
    s.push_str("\\bottomrule\n");
    s.push_str("\\end{tabular}\n");
    // The notes, for the caption (inside the tabular they would widen its last column).
    s.push_str("% Notes for the caption:\n");
    for note in notes(t, split) {
        let _ = writeln!(s, "% {}", note_text(&note));
    }
    s
}
