//! `overview.svg`: every configuration across every dataset in one picture: a row per
//! configuration (table order), a marker per dataset at its mean top-1, a bar at the row's
//! average, each dataset's chance level. Reads the table and records only.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::plot::chance;
use super::svg::{frame, open, palette, percent_grid, percent_range, x_title, xml_escape};
use super::{cell_text, ReportError, RunRecord, Table};

const W: f64 = 940.0;
const LEFT: f64 = 230.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 50.0;
const ROW: f64 = 22.0;

/// A dataset's marker: circle, square or triangle in its colour; `class` for tests.
fn marker(s: &mut String, i: usize, (x, y): (f64, f64), class: &str, tip: &str) {
    let c = palette(i);
    let tip = xml_escape(tip);
    let _ = match i % 3 {
        0 => writeln!(
            s,
            r#"<circle class="{class}" cx="{x:.1}" cy="{y:.1}" r="5" fill="{c}" stroke="black" stroke-width="0.5"><title>{tip}</title></circle>"#
        ),
        1 => writeln!(
            s,
            r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="9" height="9" fill="{c}" stroke="black" stroke-width="0.5"><title>{tip}</title></rect>"#,
            x - 4.5,
            y - 4.5
        ),
        _ => writeln!(
            s,
            r#"<path class="{class}" d="M{x:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}Z" fill="{c}" stroke="black" stroke-width="0.5"><title>{tip}</title></path>"#,
            y - 5.5,
            x + 5.5,
            y + 4.5,
            x - 5.5,
            y + 4.5
        ),
    };
}

fn svg_overview(table: &Table, classes: &[i64], rows: &str) -> String {
    let h = TOP + ROW * table.rows.len() as f64 + 70.0;
    let (px0, px1, py0, py1) = (LEFT, W - RIGHT, TOP, h - 56.0);
    let cells = || table.rows.iter().flat_map(|r| r.cells.iter().flatten());
    let lo = cells().map(|c| c.mean).fold(f64::INFINITY, f64::min);
    let hi = cells().map(|c| c.mean).fold(f64::NEG_INFINITY, f64::max);
    let chances: Vec<f64> = classes.iter().map(|c| chance(*c)).collect();
    let min_chance = chances.iter().copied().fold(f64::INFINITY, f64::min);
    let (xlo, xhi, step) = percent_range(lo, hi, min_chance);
    let sx = |v: f64| px0 + (v - xlo) / (xhi - xlo) * (px1 - px0);
    let mut s = String::new();
    open(
        &mut s,
        W,
        h,
        &format!("top-1 of every {rows} on every dataset"),
    );
    percent_grid(&mut s, &sx, (xlo, xhi, step), py0, py1);
    frame(&mut s, px0, py0, px1, py1);
    x_title(&mut s, px0, px1, py1 + 36.0, "top-1 (%)");
    for (d, c) in chances.iter().enumerate() {
        if *c > 0.0 && *c >= xlo {
            let x = sx(*c);
            let _ = writeln!(
                s,
                r#"<line class="chance" x1="{x:.1}" y1="{py0:.1}" x2="{x:.1}" y2="{py1:.1}" stroke="{}" stroke-dasharray="5 4"/>"#,
                palette(d)
            );
        }
    }
    for (i, row) in table.rows.iter().enumerate() {
        let y = py0 + ROW * (i as f64 + 0.5) + 6.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            px0 - 8.0,
            y + 4.0,
            xml_escape(&row.config)
        );
        let _ = writeln!(
            s,
            r#"<line class="avg" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black" stroke-width="2.5"><title>avg {:.2}</title></line>"#,
            sx(row.avg),
            y - 8.0,
            sx(row.avg),
            y + 8.0,
            row.avg
        );
        for (d, cell) in row.cells.iter().enumerate() {
            if let Some(c) = cell {
                let tip = format!("{} on {}: {}", row.config, table.datasets[d], cell_text(c));
                marker(&mut s, d, (sx(c.mean), y), "marker", &tip);
            }
        }
    }
    let x = px1 + 16.0;
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{:.1}" font-size="12" font-weight="bold">dataset</text>"#,
        py0 + 10.0
    );
    for (d, ds) in table.datasets.iter().enumerate() {
        let y = py0 + 28.0 + 18.0 * d as f64;
        marker(&mut s, d, (x + 5.0, y - 4.0), "legend", ds);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{y:.1}" font-size="11">{}</text>"#,
            x + 16.0,
            xml_escape(ds)
        );
    }
    let y = py0 + 40.0 + 18.0 * table.datasets.len() as f64;
    let _ = writeln!(
        s,
        r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black" stroke-width="2.5"/><text x="{:.1}" y="{y:.1}" font-size="11">avg over datasets</text>"#,
        x + 5.0,
        y - 11.0,
        x + 5.0,
        y + 3.0,
        x + 16.0
    );
    let _ = writeln!(
        s,
        r##"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#555" stroke-dasharray="5 4"/><text x="{:.1}" y="{:.1}" font-size="11">chance (dataset's colour)</text>"##,
        y + 16.0,
        x + 12.0,
        y + 16.0,
        x + 16.0,
        y + 20.0
    );
    s.push_str("</svg>\n");
    s
}

/// Writes `<dir>/overview.svg` (nothing without rows); returns its path.
pub fn write_overview(
    table: &Table,
    records: &[RunRecord],
    dir: &Path,
) -> Result<Option<PathBuf>, ReportError> {
    if table.rows.is_empty() {
        return Ok(None);
    }
    let classes: Vec<i64> = table
        .datasets
        .iter()
        .map(|d| {
            records
                .iter()
                .filter(|r| r.dataset == *d)
                .map(|r| r.num_classes)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let path = dir.join("overview.svg");
    let rows = super::curves::row_kind(records.iter());
    super::folder::write_file(&path, &svg_overview(table, &classes, rows))?;
    Ok(Some(path))
}
