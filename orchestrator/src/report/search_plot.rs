//! `search_<dataset>.svg`: the VTAB-1k search of one dataset: per method table, every
//! candidate's val200 top-1 (a dot per search seed, a bar at their mean), the chosen one
//! marked, failed ones said so. Hand-written SVG from the selections only.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::protocol::Choice;
use super::svg::{frame, open, palette, percent_grid, percent_range, x_title, xml_escape};
use super::{file_stem, ReportError};

const ROW: f64 = 20.0;
const HEAD: f64 = 24.0;
const TOP: f64 = 58.0;
const PLOT_W: f64 = 380.0;
const RIGHT: f64 = 110.0;

fn svg_search(dataset: &str, choices: &[&Choice]) -> String {
    let values: Vec<f64> = choices
        .iter()
        .flat_map(|c| c.candidates.iter().flat_map(|x| x.val_top1.iter().copied()))
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (xlo, xhi, step) = if values.is_empty() {
        (0.0, 100.0, 20.0)
    } else {
        percent_range(lo, hi, lo)
    };
    let longest = choices
        .iter()
        .flat_map(|c| c.candidates.iter().map(|x| x.config.chars().count()))
        .max()
        .unwrap_or(10);
    let left = 24.0 + longest as f64 * 6.4;
    let rows: usize = choices.iter().map(|c| c.candidates.len()).sum();
    let h = TOP + HEAD * choices.len() as f64 + ROW * rows as f64 + 76.0;
    let w = left + PLOT_W + RIGHT;
    let (px0, px1, py0, py1) = (left, left + PLOT_W, TOP, h - 66.0);
    let sx = |v: f64| px0 + (v.clamp(xlo, xhi) - xlo) / (xhi - xlo) * PLOT_W;
    let mut s = String::new();
    open(
        &mut s,
        w,
        h,
        &format!("{dataset}: the search (val200 top-1, trained on train800)"),
    );
    percent_grid(&mut s, &sx, (xlo, xhi, step), py0, py1);
    frame(&mut s, px0, py0, px1, py1);
    x_title(&mut s, px0, px1, py1 + 34.0, "val200 top-1 (%)");
    let mut y = py0;
    for (m, c) in choices.iter().enumerate() {
        let colour = palette(m);
        y += HEAD;
        let seeds = c
            .search_seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" font-weight="bold" fill="{colour}">{} <tspan font-weight="normal" fill="black" font-size="10">(search seeds {seeds})</tspan></text>"#,
            8.0,
            y - 6.0,
            xml_escape(&c.method)
        );
        for (i, x) in c.candidates.iter().enumerate() {
            let cy = y + ROW / 2.0;
            let chosen = i == c.chosen;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end"{}>{}</text>"#,
                px0 - 8.0,
                cy + 4.0,
                if chosen { r#" font-weight="bold""# } else { "" },
                xml_escape(&x.config)
            );
            for v in &x.val_top1 {
                let _ = writeln!(
                    s,
                    r#"<circle class="seed" cx="{:.1}" cy="{cy:.1}" r="2.5" fill="none" stroke="{colour}"/>"#,
                    sx(*v)
                );
            }
            match (x.mean_val_top1, &x.failed) {
                (Some(v), None) => {
                    let xm = sx(v);
                    let _ = writeln!(
                        s,
                        r#"<line class="candidate" x1="{xm:.1}" y1="{:.1}" x2="{xm:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"><title>{}: {v:.2}</title></line>"#,
                        cy - 7.0,
                        cy + 7.0,
                        xml_escape(&x.config)
                    );
                    if chosen {
                        let _ = writeln!(
                            s,
                            r#"<circle class="chosen" cx="{xm:.1}" cy="{cy:.1}" r="8" fill="none" stroke="black" stroke-width="1.5"/><text x="{:.1}" y="{:.1}" font-size="11" font-weight="bold">chosen {v:.1}</text>"#,
                            px1 + 8.0,
                            cy + 4.0
                        );
                    }
                }
                (_, Some(why)) => {
                    let why: String = why.chars().take(60).collect();
                    let _ = writeln!(
                        s,
                        r##"<text class="failed" x="{:.1}" y="{:.1}" font-size="10" fill="#c00">failed: {}</text>"##,
                        px0 + 6.0,
                        cy + 4.0,
                        xml_escape(&why)
                    );
                }
                (None, None) => {}
            }
            y += ROW;
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="10">bar: mean over the search seeds; ring: a seed; circled: chosen</text>"#,
        px0,
        h - 10.0
    );
    s.push_str("</svg>\n");
    s
}

/// Writes `<dir>/search_<dataset>.svg` for every dataset with a searched selection (a
/// method table with more than one candidate), returning the paths in dataset order.
pub fn write_search_plots(
    choices: &[Option<super::protocol::Choice>],
    dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut by_ds: BTreeMap<&str, Vec<&Choice>> = BTreeMap::new();
    for c in choices
        .iter()
        .flatten()
        .filter(|c| !c.search_seeds.is_empty())
    {
        by_ds.entry(&c.dataset).or_default().push(c);
    }
    let mut paths = Vec::new();
    for (ds, cs) in by_ds {
        let path = dir.join(format!("search_{}.svg", file_stem(ds)));
        super::folder::write_file(&path, &svg_search(ds, &cs))?;
        paths.push(path);
    }
    Ok(paths)
}
