//! `plot_<dataset>.svg`: top-1 against trainable parameters (log x axis), one marker per
//! configuration, ± sample std bars, a chance line. Hand-written SVG from records only.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::svg::{
    family_colour, frame, log_ticks, open, percent_range, x_title, xml_escape, y_grid, y_title,
    Labels,
};
use super::table::{cell_of, family_rank, group};
use super::{cell_text, file_stem, human_count, Cell, ReportError, RunRecord};

/// One configuration on one dataset, as plotted.
struct Point {
    config: String,
    method: String,
    trainable: f64,
    cell: Cell,
}

const W: f64 = 800.0;
const H: f64 = 500.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;

/// Chance level in percent for a dataset of `classes` classes (0 when unknown).
pub(super) fn chance(classes: i64) -> f64 {
    if classes > 0 {
        100.0 / classes as f64
    } else {
        0.0
    }
}

/// The x range (log10) of the points, at least a decade wide, with room on either side.
fn x_range(lx: &[f64]) -> (f64, f64) {
    let lmin = lx.iter().copied().fold(f64::INFINITY, f64::min);
    let lmax = lx.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let c = (lmin + lmax) / 2.0;
    let half = ((lmax - lmin) / 2.0).max(0.5);
    // 8 % of the span left for a marker, 25 % right for its label.
    (c - half * 1.16, c + half * 1.5)
}

fn svg_plot(dataset: &str, points: &[Point], classes: i64) -> String {
    let (px0, px1, py0, py1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let lx: Vec<f64> = points
        .iter()
        .map(|p| p.trainable.max(1.0).log10())
        .collect();
    let (vlo, vhi) = x_range(&lx);
    let sx = |l: f64| px0 + (l - vlo) / (vhi - vlo) * (px1 - px0);
    let spread = |p: &Point| p.cell.std.unwrap_or(0.0);
    let lo = points
        .iter()
        .map(|p| p.cell.mean - spread(p))
        .fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.cell.mean + spread(p))
        .fold(f64::NEG_INFINITY, f64::max);
    let ch = chance(classes);
    let (ylo, yhi, step) = percent_range(lo, hi, ch);
    let sy = |v: f64| py1 - (v.clamp(ylo, yhi) - ylo) / (yhi - ylo) * (py1 - py0);

    let mut s = String::new();
    open(
        &mut s,
        W,
        H,
        &format!("{dataset}: top-1 vs trainable parameters"),
    );
    let _ = writeln!(s, r##"<g stroke-width="1">"##);
    for (l, _, major) in log_ticks(vlo, vhi) {
        let x = sx(l);
        let colour = if major { "#ccc" } else { "#eee" };
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{py0:.1}" x2="{x:.1}" y2="{py1:.1}" stroke="{colour}"/>"#
        );
    }
    s.push_str("</g>\n");
    y_grid(&mut s, (px0, px1), sy, ylo, yhi, step, |v| {
        format!("{v:.0}")
    });
    frame(&mut s, px0, py0, px1, py1);
    let _ = writeln!(s, r#"<g font-size="11">"#);
    for (l, label, _) in log_ticks(vlo, vhi) {
        if !label.is_empty() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
                sx(l),
                py1 + 16.0
            );
        }
    }
    s.push_str("</g>\n");
    x_title(
        &mut s,
        px0,
        px1,
        H - 16.0,
        "trainable parameters, head included (log scale)",
    );
    y_title(&mut s, 18.0, py0, py1, "top-1 (%)");
    if ch > 0.0 {
        let y = sy(ch);
        let _ = writeln!(
            s,
            r##"<line class="chance" x1="{px0:.1}" y1="{y:.1}" x2="{px1:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="5 4"/>"##
        );
    }
    // Points: error bar, marker (with a tooltip), label (off every marker).
    let mut labels = Labels::default();
    // Labels stay inside the frame: off the title above it and the legend right of it.
    labels.block(0.0, W, 0.0, py0);
    labels.block(px1, W, 0.0, H);
    for (p, l) in points.iter().zip(&lx) {
        let (x, y) = (sx(*l), sy(p.cell.mean));
        labels.block(x - 5.0, x + 5.0, y - 5.0, y + 5.0);
    }
    for (p, l) in points.iter().zip(&lx) {
        let (x, y) = (sx(*l), sy(p.cell.mean));
        let colour = family_colour(&p.method);
        if let Some(sd) = p.cell.std {
            let (ya, yb) = (sy(p.cell.mean - sd), sy(p.cell.mean + sd));
            let _ = writeln!(
                s,
                r#"<path class="errbar" d="M{x:.1} {ya:.1}V{yb:.1}M{:.1} {ya:.1}h8M{:.1} {yb:.1}h8" stroke="{colour}" fill="none"/>"#,
                x - 4.0,
                x - 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<circle class="marker" cx="{x:.1}" cy="{y:.1}" r="4.5" fill="{colour}" stroke="black" stroke-width="0.5"><title>{}: {} top-1, {} trainable</title></circle>"#,
            xml_escape(&p.config),
            xml_escape(&cell_text(&p.cell)),
            human_count(p.trainable)
        );
        let ((tx, ty), moved) = labels.place_near(x, y, p.config.chars().count(), 9.0);
        if moved {
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-width="0.6"/>"##,
                tx - 1.0,
                ty - 3.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{tx:.1}" y="{ty:.1}" font-size="9">{}</text>"#,
            xml_escape(&p.config)
        );
    }
    legend(&mut s, points, px1 + 16.0, py0, ch);
    s.push_str("</svg>\n");
    s
}

/// The method families present, what the bars mean, and the chance line.
fn legend(s: &mut String, points: &[Point], x: f64, y0: f64, chance: f64) {
    let mut families: Vec<&str> = points.iter().map(|p| p.method.as_str()).collect();
    families.sort_by(|a, b| family_rank(a).cmp(&family_rank(b)).then(a.cmp(b)));
    families.dedup();
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{:.1}" font-size="12" font-weight="bold">method</text>"#,
        y0 + 10.0
    );
    let mut y = y0 + 26.0;
    for f in &families {
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="{}" stroke="black" stroke-width="0.5"/><text x="{:.1}" y="{y:.1}" font-size="11">{}</text>"#,
            x + 5.0,
            y - 4.0,
            family_colour(f),
            x + 16.0,
            xml_escape(f)
        );
        y += 18.0;
    }
    y += 8.0;
    let _ = writeln!(
        s,
        r#"<path d="M{:.1} {:.1}V{:.1}M{:.1} {:.1}h8M{:.1} {:.1}h8" stroke="black" fill="none"/><text x="{:.1}" y="{y:.1}" font-size="11">± sample std over seeds</text>"#,
        x + 5.0,
        y - 12.0,
        y + 2.0,
        x + 1.0,
        y - 12.0,
        x + 1.0,
        y + 2.0,
        x + 16.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="11">(bar only where n &gt; 1)</text>"#,
        x + 16.0,
        y + 14.0
    );
    if chance > 0.0 {
        y += 38.0;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="5 4"/><text x="{:.1}" y="{y:.1}" font-size="11">chance ({chance:.1} %)</text>"##,
            y - 4.0,
            x + 12.0,
            y - 4.0,
            x + 16.0
        );
    }
}

/// Per dataset, the plotted points (each configuration's mean top-1 over seeds and its
/// trainable count on that dataset, in table row order) and the dataset's class count.
fn plot_points(records: &[RunRecord]) -> BTreeMap<&str, (Vec<Point>, i64)> {
    let mut out: BTreeMap<&str, (Vec<Point>, i64)> = BTreeMap::new();
    for (key, by_ds) in group(records) {
        for (ds, rs) in by_ds {
            let cell = cell_of(&rs);
            let e = out.entry(ds).or_default();
            e.1 = e.1.max(rs.iter().map(|r| r.num_classes).max().unwrap_or(0));
            e.0.push(Point {
                config: key.config.clone(),
                method: key.method.clone(),
                trainable: cell.trainable,
                cell,
            });
        }
    }
    out
}

/// Writes `<dir>/plot_<dataset>.svg` for every dataset (creating `dir`), returning the
/// paths in dataset order. Characters outside `[A-Za-z0-9._-]` in a dataset name become `_`
/// in its file name. No records: no plots, and `dir` is left alone.
pub fn write_plots(records: &[RunRecord], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let points = plot_points(records);
    let mut paths = Vec::new();
    for (ds, (pts, classes)) in points {
        let path = dir.join(format!("plot_{}.svg", file_stem(ds)));
        super::folder::write_file(&path, &svg_plot(ds, &pts, classes))?;
        paths.push(path);
    }
    Ok(paths)
}
