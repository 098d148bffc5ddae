//! `curves_<dataset>.svg`: training loss and learning rate per epoch of every run of a
//! dataset (from the train node's log), one colour per configuration. Records only.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::svg::{frame, nice_step, open, palette, x_title, xml_escape, y_grid, y_title};
use super::table::group;
use super::{file_stem, ReportError, RunRecord};

const PANEL_W: f64 = 330.0;
const TOP: f64 = 50.0;
const PANEL_H: f64 = 300.0;
const H: f64 = TOP + PANEL_H + 60.0;

/// One run's curve: (epoch, value) pairs, with its colour and seed.
struct Series<'a> {
    points: Vec<(f64, f64)>,
    colour: &'static str,
    seed: u64,
    config: &'a str,
}

/// One panel: every series as a polyline over [1, epochs]; the y axis from 0 (learning rate,
/// `sci` labels) or zoomed to the values (loss: only its shape matters).
fn panel(s: &mut String, x0: f64, title: &str, series: &[Series], epochs: f64, sci: bool) {
    let (x1, y0, y1) = (x0 + PANEL_W, TOP, TOP + PANEL_H);
    let values = || series.iter().flat_map(|r| r.points.iter().map(|p| p.1));
    let ymax = values().fold(0.0f64, f64::max);
    let ymin = if sci {
        0.0
    } else {
        values().fold(f64::INFINITY, f64::min).min(ymax)
    };
    let step = nice_step(((ymax - ymin) / 5.0).max(ymax.abs() * 1e-3).max(1e-12));
    let ylo = (ymin / step).floor() * step;
    let yhi = ((ymax / step).ceil() * step).max(ylo + step);
    let sx = |e: f64| x0 + (e - 1.0) / (epochs - 1.0).max(1.0) * (x1 - x0);
    let sy = |v: f64| y1 - (v - ylo) / (yhi - ylo) * (y1 - y0);
    let digits = (-step.log10().floor()).max(0.0) as usize;
    let fmt = |v: f64| match sci {
        _ if v == 0.0 => "0".to_string(),
        true => format!("{v:.0e}"),
        false => format!("{v:.digits$}"),
    };
    y_grid(s, (x0, x1), sy, ylo, yhi, step, fmt);
    frame(s, x0, y0, x1, y1);
    let estep = nice_step((epochs / 8.0).max(1.0)).max(1.0);
    let _ = writeln!(s, r#"<g font-size="11">"#);
    let mut ticks = vec![1.0];
    let mut e = estep;
    while e <= epochs + 1e-9 {
        if e > 1.0 {
            ticks.push(e);
        }
        e += estep;
    }
    for e in ticks {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{e:.0}</text>"#,
            sx(e),
            y1 + 16.0
        );
    }
    s.push_str("</g>\n");
    x_title(s, x0, x1, y1 + 34.0, "epoch");
    y_title(s, x0 - 44.0, y0, y1, title);
    for r in series {
        let d: Vec<String> = r
            .points
            .iter()
            .map(|(e, v)| format!("{:.1},{:.1}", sx(*e), sy(*v)))
            .collect();
        let dash = match r.seed % 3 {
            0 => "",
            1 => r#" stroke-dasharray="6 3""#,
            _ => r#" stroke-dasharray="2 2""#,
        };
        let _ = writeln!(
            s,
            r#"<polyline class="curve" points="{}" fill="none" stroke="{}" stroke-width="1.5"{dash}><title>{} s{}</title></polyline>"#,
            d.join(" "),
            r.colour,
            xml_escape(r.config),
            r.seed
        );
        if r.points.len() == 1 {
            let (x, y) = (sx(r.points[0].0), sy(r.points[0].1));
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#,
                r.colour
            );
        }
    }
}

/// What the rows of `records` are: `method` where each is labelled by its method table (a
/// protocol's report), else `configuration`.
pub(super) fn row_kind<'a>(mut records: impl Iterator<Item = &'a RunRecord>) -> &'static str {
    match records.all(|r| r.config == r.method_row()) {
        true => "method",
        false => "configuration",
    }
}

fn svg_curves(dataset: &str, runs: &[(&str, Vec<&RunRecord>)]) -> String {
    let epochs = runs
        .iter()
        .flat_map(|(_, rs)| rs.iter().flat_map(|r| r.curve.iter().map(|p| p.epoch)))
        .max()
        .unwrap_or(1) as f64;
    let series = |f: fn(&super::EpochPoint) -> f64| -> Vec<Series> {
        runs.iter()
            .enumerate()
            .flat_map(|(i, (config, rs))| {
                rs.iter().map(move |r| Series {
                    points: r.curve.iter().map(|p| (p.epoch as f64, f(p))).collect(),
                    colour: palette(i),
                    seed: r.seed,
                    config,
                })
            })
            .collect()
    };
    // Room on the right for the longest configuration name.
    let longest = runs
        .iter()
        .map(|(c, _)| c.chars().count())
        .max()
        .unwrap_or(0);
    let w = 480.0 + PANEL_W + 50.0 + (longest.max(28) as f64) * 5.8;
    let mut s = String::new();
    open(
        &mut s,
        w,
        H,
        &format!("{dataset}: training loss and learning rate per epoch"),
    );
    panel(
        &mut s,
        70.0,
        "training loss",
        &series(|p| p.loss),
        epochs,
        false,
    );
    panel(
        &mut s,
        480.0,
        "learning rate",
        &series(|p| p.lr),
        epochs,
        true,
    );
    let x = 480.0 + PANEL_W + 20.0;
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{:.1}" font-size="12" font-weight="bold">{}</text>"#,
        TOP + 10.0,
        row_kind(runs.iter().flat_map(|(_, rs)| rs.iter().copied()))
    );
    for (i, (config, _)) in runs.iter().enumerate() {
        let y = TOP + 28.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"/><text x="{:.1}" y="{y:.1}" font-size="10">{}</text>"#,
            y - 4.0,
            x + 14.0,
            y - 4.0,
            palette(i),
            x + 18.0,
            xml_escape(config)
        );
    }
    let y = TOP + 36.0 + 16.0 * runs.len() as f64;
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{y:.1}" font-size="10">seeds: solid s0, dashed s1,</text><text x="{x:.1}" y="{:.1}" font-size="10">dotted s2 (then repeating)</text>"#,
        y + 13.0
    );
    s.push_str("</svg>\n");
    s
}

/// Writes `<dir>/curves_<dataset>.svg` for every dataset with a recorded curve, returning the
/// paths in dataset order.
pub fn write_curves(records: &[RunRecord], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let mut by_ds: BTreeMap<&str, Vec<(&str, Vec<&RunRecord>)>> = BTreeMap::new();
    for (_, per_ds) in group(records) {
        for (ds, rs) in per_ds {
            let rs: Vec<&RunRecord> = rs.into_iter().filter(|r| !r.curve.is_empty()).collect();
            if !rs.is_empty() {
                let config = rs[0].config.as_str();
                by_ds.entry(ds).or_default().push((config, rs));
            }
        }
    }
    let mut paths = Vec::new();
    for (ds, runs) in by_ds {
        let path = dir.join(format!("curves_{}.svg", file_stem(ds)));
        super::folder::write_file(&path, &svg_curves(ds, &runs))?;
        paths.push(path);
    }
    Ok(paths)
}
