//! `tradeoff.svg`: top-1 against trainable parameters (log x) for every method on every
//! dataset, a panel per dataset group: a small marker per (method, dataset) with ± std over
//! its seeds, a large hollow one at the method's group mean; one marker and colour per
//! method. Hand-written SVG from records only.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::groups::{group_rank, group_title, OTHER};
use super::plot::chance;
use super::svg::{
    frame, log_ticks, open, palette, percent_range, shape_path, x_title, xml_escape, y_grid,
    y_title,
};
use super::table::{cell_of, group, mean};
use super::{cell_text, human_count, Cell, ReportError, RunRecord};

const PANEL_W: f64 = 300.0;
const PANEL_H: f64 = 300.0;
const GAP: f64 = 60.0;
const LEFT: f64 = 64.0;
const TOP: f64 = 64.0;
const LEGEND_W: f64 = 250.0;

/// One method on one dataset.
struct Point {
    method: usize,
    dataset: String,
    trainable: f64,
    cell: Cell,
}

/// Per group (in print order), its points; the methods (row order) and the lowest chance.
struct Panels {
    groups: Vec<(String, Vec<Point>, f64)>,
    methods: Vec<String>,
}

/// A group's place in print order (its rank and, for a group of one's own, its name) and name.
type GroupKey = ((usize, String), String);

fn panels(records: &[RunRecord]) -> Panels {
    let mut methods = Vec::new();
    let mut by_group: BTreeMap<GroupKey, (Vec<Point>, f64)> = BTreeMap::new();
    for (m, (key, by_ds)) in group(records).into_iter().enumerate() {
        methods.push(key.config.clone());
        for (ds, rs) in by_ds {
            let g = rs[0].group.clone();
            let (rank, name) = group_rank(&g);
            let e = by_group
                .entry(((rank, name.to_string()), g))
                .or_insert((Vec::new(), 100.0));
            let classes = rs.iter().map(|r| r.num_classes).max().unwrap_or(0);
            e.1 = e.1.min(chance(classes));
            let cell = cell_of(&rs);
            e.0.push(Point {
                method: m,
                dataset: ds.to_string(),
                trainable: cell.trainable.max(1.0),
                cell,
            });
        }
    }
    Panels {
        groups: by_group
            .into_iter()
            .map(|((_, g), (pts, ch))| (g, pts, ch))
            .collect(),
        methods,
    }
}

/// Method `method`'s marker: filled (`class` marker or legend), hollow (a group mean), or
/// hollow and dashed (a partial group mean, over fewer of the group's datasets).
fn marker(s: &mut String, method: usize, (x, y): (f64, f64), r: f64, class: &str, tip: &str) {
    let c = palette(method);
    let (fill, stroke, width, dash) = match class {
        "group-mean" => ("none", c, 2.0, ""),
        "group-mean partial" => ("none", c, 2.0, r#" stroke-dasharray="3 2""#),
        _ => (c, "black", 0.5, ""),
    };
    let _ = writeln!(
        s,
        r#"<path class="{class}" d="{}" fill="{fill}" stroke="{stroke}" stroke-width="{width}"{dash}><title>{}</title></path>"#,
        shape_path(method, x, y, r),
        xml_escape(tip)
    );
}

/// One panel at x0: its points, each method's group mean.
fn panel(
    s: &mut String,
    x0: f64,
    title: &str,
    pts: &[Point],
    ch: f64,
    xr: (f64, f64),
    methods: &[String],
) {
    let (x1, y0, y1) = (x0 + PANEL_W, TOP, TOP + PANEL_H);
    let lo = pts
        .iter()
        .map(|p| p.cell.mean - p.cell.std.unwrap_or(0.0))
        .fold(f64::INFINITY, f64::min);
    let hi = pts
        .iter()
        .map(|p| p.cell.mean + p.cell.std.unwrap_or(0.0))
        .fold(f64::NEG_INFINITY, f64::max);
    let (ylo, yhi, step) = percent_range(lo, hi, ch);
    let sx = |v: f64| x0 + (v.log10() - xr.0) / (xr.1 - xr.0) * PANEL_W;
    let sy = |v: f64| y1 - (v.clamp(ylo, yhi) - ylo) / (yhi - ylo) * PANEL_H;
    let ticks = log_ticks(xr.0, xr.1);
    for (l, _, major) in &ticks {
        let x = x0 + (l - xr.0) / (xr.1 - xr.0) * PANEL_W;
        let colour = if *major { "#ccc" } else { "#eee" };
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="{colour}"/>"#
        );
    }
    y_grid(s, (x0, x1), sy, ylo, yhi, step, |v| format!("{v:.0}"));
    frame(s, x0, y0, x1, y1);
    let _ = writeln!(s, r#"<g font-size="11">"#);
    for (l, label, _) in &ticks {
        if !label.is_empty() {
            let x = x0 + (l - xr.0) / (xr.1 - xr.0) * PANEL_W;
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
                y1 + 16.0
            );
        }
    }
    s.push_str("</g>\n");
    let datasets = {
        let mut d: Vec<&str> = pts.iter().map(|p| p.dataset.as_str()).collect();
        d.sort_unstable();
        d.dedup();
        d.len()
    };
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">{} ({datasets} dataset{})</text>"#,
        (x0 + x1) / 2.0,
        y0 - 10.0,
        xml_escape(title),
        if datasets == 1 { "" } else { "s" }
    );
    if ch > ylo {
        let y = sy(ch);
        let _ = writeln!(
            s,
            r##"<line class="chance" x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="5 4"/>"##
        );
    }
    for p in pts {
        let (x, y) = (sx(p.trainable), sy(p.cell.mean));
        if let Some(sd) = p.cell.std {
            let (ya, yb) = (sy(p.cell.mean - sd), sy(p.cell.mean + sd));
            let _ = writeln!(
                s,
                r#"<path class="errbar" d="M{x:.1} {ya:.1}V{yb:.1}M{:.1} {ya:.1}h6M{:.1} {yb:.1}h6" stroke="{}" fill="none"/>"#,
                x - 3.0,
                x - 3.0,
                palette(p.method)
            );
        }
        let tip = format!(
            "{} on {}: {}, {} trainable",
            methods[p.method],
            p.dataset,
            cell_text(&p.cell),
            human_count(p.trainable)
        );
        marker(s, p.method, (x, y), 3.5, "marker", &tip);
    }
    // The group mean of each method: mean top-1, geometric mean of the trainable counts.
    for (m, name) in methods.iter().enumerate() {
        let mine: Vec<&Point> = pts.iter().filter(|p| p.method == m).collect();
        if mine.is_empty() {
            continue;
        }
        let top = mean(&mine.iter().map(|p| p.cell.mean).collect::<Vec<_>>());
        let lx = mean(&mine.iter().map(|p| p.trainable.log10()).collect::<Vec<_>>());
        let partial = mine.len() < datasets;
        let tip = format!(
            "{name}: mean over {} of the {datasets} dataset(s) of {title}: {top:.2}",
            mine.len()
        );
        let class = if partial {
            "group-mean partial"
        } else {
            "group-mean"
        };
        marker(s, m, (sx(10f64.powf(lx)), sy(top)), 8.0, class, &tip);
    }
}

fn svg_tradeoff(p: &Panels) -> String {
    let all = || p.groups.iter().flat_map(|g| g.1.iter());
    let lmin = all()
        .map(|q| q.trainable.log10())
        .fold(f64::INFINITY, f64::min);
    let lmax = all()
        .map(|q| q.trainable.log10())
        .fold(f64::NEG_INFINITY, f64::max);
    let c = (lmin + lmax) / 2.0;
    let half = ((lmax - lmin) / 2.0).max(0.5) * 1.12;
    let xr = (c - half, c + half);
    let n = p.groups.len() as f64;
    let w = LEFT + n * PANEL_W + (n - 1.0) * GAP + 30.0 + LEGEND_W;
    let legend_h = TOP + 40.0 + 22.0 * p.methods.len() as f64 + 124.0;
    let h = (TOP + PANEL_H + 56.0).max(legend_h);
    let mut s = String::new();
    open(
        &mut s,
        w,
        h,
        "top-1 vs trainable parameters, by dataset group",
    );
    for (i, (g, pts, ch)) in p.groups.iter().enumerate() {
        let x0 = LEFT + i as f64 * (PANEL_W + GAP);
        let title = if g == OTHER {
            "Other, in no group".to_string()
        } else {
            group_title(g)
        };
        panel(&mut s, x0, &title, pts, *ch, xr, &p.methods);
        if i == 0 {
            y_title(&mut s, 18.0, TOP, TOP + PANEL_H, "test top-1 (%)");
        }
    }
    x_title(
        &mut s,
        LEFT,
        LEFT + n * PANEL_W + (n - 1.0) * GAP,
        TOP + PANEL_H + 38.0,
        "trainable parameters, head included (log scale)",
    );
    legend(
        &mut s,
        LEFT + n * PANEL_W + (n - 1.0) * GAP + 30.0,
        &p.methods,
    );
    s.push_str("</svg>\n");
    s
}

fn legend(s: &mut String, x: f64, methods: &[String]) {
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{:.1}" font-size="12" font-weight="bold">method</text>"#,
        TOP + 4.0
    );
    let mut y = TOP + 24.0;
    for (m, name) in methods.iter().enumerate() {
        marker(s, m, (x + 6.0, y - 4.0), 4.5, "legend", name);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{y:.1}" font-size="11">{}</text>"#,
            x + 18.0,
            xml_escape(name)
        );
        y += 22.0;
    }
    y += 8.0;
    let lines = [
        "small: one dataset, mean over its",
        "final seeds (bar: ± sample std, n > 1)",
        "large, hollow: the method's mean",
        "over the group's datasets (dashed:",
        "over only some of them)",
        "dashed: lowest chance in the group",
    ];
    for (i, l) in lines.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" font-size="10">{l}</text>"#,
            y + 14.0 * i as f64
        );
    }
}

/// Writes `<dir>/tradeoff.svg` (nothing without records); returns its path.
pub fn write_tradeoff(records: &[RunRecord], dir: &Path) -> Result<Option<PathBuf>, ReportError> {
    if records.is_empty() {
        return Ok(None);
    }
    let path = dir.join("tradeoff.svg");
    super::folder::write_file(&path, &svg_tradeoff(&panels(records)))?;
    Ok(Some(path))
}
