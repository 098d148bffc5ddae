//! Shared pieces of the hand-written SVG plots: escaping, colours, axis ranges and ticks
//! (a log axis with readable labels, a percent axis that never passes 100 % and never zooms
//! in on noise), and label placement. Knows no records.
use std::fmt::Write as _;

pub(super) fn family_colour(method: &str) -> &'static str {
    match method {
        "linear" => "#7f7f7f",
        "bitfit" => "#9467bd",
        "ia3" => "#8c564b",
        "vera" => "#2ca02c",
        "lora" => "#1f77b4",
        "full" => "#d62728",
        _ => "#e377c2",
    }
}

/// A categorical palette (Tableau 10) for series that are not method families.
pub(super) fn palette(i: usize) -> &'static str {
    const P: [&str; 10] = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
        "#9c755f", "#bab0ac",
    ];
    P[i % P.len()]
}

/// The outline of marker `i` (circle, square, triangle, diamond, triangle down, hexagon,
/// then again) of radius `r` at (x, y), as SVG path data: one marker per method where
/// colour alone would not tell them apart (in print, for colour-blind readers).
pub(super) fn shape_path(i: usize, x: f64, y: f64, r: f64) -> String {
    let poly = |pts: &[(f64, f64)]| {
        let mut d = String::new();
        for (k, (px, py)) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1} {:.1}",
                if k == 0 { "M" } else { "L" },
                x + px * r,
                y + py * r
            );
        }
        d + "Z"
    };
    match i % 6 {
        0 => format!(
            "M{:.1} {y:.1}a{r:.1} {r:.1} 0 1 0 {:.1} 0a{r:.1} {r:.1} 0 1 0 {:.1} 0Z",
            x - r,
            2.0 * r,
            -2.0 * r
        ),
        1 => poly(&[(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)]),
        2 => poly(&[(0.0, -1.15), (1.05, 0.8), (-1.05, 0.8)]),
        3 => poly(&[(0.0, -1.2), (1.0, 0.0), (0.0, 1.2), (-1.0, 0.0)]),
        4 => poly(&[(0.0, 1.15), (1.05, -0.8), (-1.05, -0.8)]),
        _ => poly(&[
            (1.0, 0.0),
            (0.5, 0.87),
            (-0.5, 0.87),
            (-1.0, 0.0),
            (-0.5, -0.87),
            (0.5, -0.87),
        ]),
    }
}

pub(super) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A tick value for people: `1`, `20`, `500`, `1K`, `20K`, `1M`, `50M`, `1B`; `0.1` below one.
pub(super) fn count_label(v: f64) -> String {
    let (div, suffix) = match v {
        x if x >= 1e9 => (1e9, "B"),
        x if x >= 1e6 => (1e6, "M"),
        x if x >= 1e3 => (1e3, "K"),
        _ => (1.0, ""),
    };
    let x = v / div;
    let digits = if (x - x.round()).abs() < 1e-9 { 0 } else { 1 };
    format!("{x:.digits$}{suffix}")
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
pub(super) fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// A top-1 axis in percent: from a multiple of 10 at or below both the lowest value and
/// chance, to a multiple of 10 at or above the highest value, never below 0 nor above 100,
/// and at least 20 points tall, so that equal results never look far apart.
/// Returns (low, high, tick step).
pub(super) fn percent_range(lo: f64, hi: f64, chance: f64) -> (f64, f64, f64) {
    let lo = lo.min(chance).clamp(0.0, 100.0);
    let hi = hi.clamp(0.0, 100.0);
    let mut ylo = (lo / 10.0).floor() * 10.0;
    let mut yhi = ((hi / 10.0).ceil() * 10.0).max(ylo + 10.0);
    if yhi - ylo < 20.0 {
        yhi = (ylo + 20.0).min(100.0);
        ylo = yhi - 20.0;
    }
    // Ticks at multiples of the step (5, 10 or 20: each divides 100, so the top stays <= 100).
    let step = nice_step((yhi - ylo) / 6.0);
    let ylo = (ylo / step).floor() * step;
    let yhi = ((yhi / step).ceil() * step).min(100.0);
    (ylo, yhi, step)
}

/// Ticks of a log10 axis over [lo, hi] (log10 values): every decade, and also 2x and 5x of
/// each decade when the axis spans fewer than three decades (so a short axis still reads).
/// Returns (log10 value, label, major).
pub(super) fn log_ticks(lo: f64, hi: f64) -> Vec<(f64, String, bool)> {
    let minor_labels = hi - lo < 3.0;
    let mut out = Vec::new();
    for d in (lo.floor() as i32)..=(hi.ceil() as i32) {
        for m in 1..10 {
            let l = d as f64 + (m as f64).log10();
            if l < lo - 1e-9 || l > hi + 1e-9 {
                continue;
            }
            let v = 10f64.powi(d) * m as f64;
            let labelled = m == 1 || (minor_labels && (m == 2 || m == 5));
            out.push((
                l,
                if labelled {
                    count_label(v)
                } else {
                    String::new()
                },
                m == 1,
            ));
        }
    }
    out
}

/// Places text labels so they do not overlap each other or the blocked areas (markers):
/// beside the point (right above, right below, left above, left below), else stepping down
/// from right above until clear.
#[derive(Default)]
pub(super) struct Labels {
    boxes: Vec<(f64, f64, f64, f64)>,
}

impl Labels {
    /// Keeps labels off the box (x0, x1, y0, y1), e.g. a marker.
    pub(super) fn block(&mut self, x0: f64, x1: f64, y0: f64, y1: f64) {
        self.boxes.push((x0, x1, y0, y1));
    }

    fn clear(&self, x: f64, y: f64, w: f64, h: f64) -> bool {
        !self
            .boxes
            .iter()
            .any(|(x0, x1, y0, y1)| x < *x1 && x + w > *x0 && y - h < *y1 && y > *y0)
    }

    /// Where to draw (baseline start) a label of `chars` characters (font size `size`) for a
    /// point at (x, y), and whether it had to move away from the point (it then needs a
    /// leader line).
    pub(super) fn place_near(
        &mut self,
        x: f64,
        y: f64,
        chars: usize,
        size: f64,
    ) -> ((f64, f64), bool) {
        let w = chars as f64 * size * 0.58;
        let h = size + 1.0;
        let candidates = [
            (x + 7.0, y - 4.0),
            (x + 7.0, y + h + 2.0),
            (x - 7.0 - w, y - 4.0),
            (x - 7.0 - w, y + h + 2.0),
        ];
        let (mut lx, mut ly) = candidates[0];
        let moved = match candidates
            .iter()
            .find(|(cx, cy)| self.clear(*cx, *cy, w, h))
        {
            Some(c) => {
                (lx, ly) = *c;
                false
            }
            None => {
                for _ in 0..40 {
                    if self.clear(lx, ly, w, h) {
                        break;
                    }
                    ly += h;
                }
                true
            }
        };
        self.boxes.push((lx, lx + w, ly - h, ly));
        ((lx, ly), moved)
    }
}

/// `<svg ...>` with a white background and a centred title.
pub(super) fn open(s: &mut String, w: f64, h: f64, title: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{}, sans-serif">"#,
        super::png::FONT_FAMILY
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        w / 2.0,
        xml_escape(title)
    );
}

/// The frame of a plot area.
pub(super) fn frame(s: &mut String, x0: f64, y0: f64, x1: f64, y1: f64) {
    let _ = writeln!(
        s,
        r#"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        x1 - x0,
        y1 - y0
    );
}

/// A y axis title, rotated, centred on [y0, y1] at x.
pub(super) fn y_title(s: &mut String, x: f64, y0: f64, y1: f64, text: &str) {
    let y = (y0 + y1) / 2.0;
    let _ = writeln!(
        s,
        r#"<text x="{x:.1}" y="{y:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"#,
        xml_escape(text)
    );
}

/// An x axis title centred under [x0, x1].
pub(super) fn x_title(s: &mut String, x0: f64, x1: f64, y: f64, text: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{y:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        xml_escape(text)
    );
}

/// Horizontal grid lines and labels for a linear y axis from `lo` to `hi` every `step`.
pub(super) fn y_grid(
    s: &mut String,
    (x0, x1): (f64, f64),
    sy: impl Fn(f64) -> f64,
    lo: f64,
    hi: f64,
    step: f64,
    fmt: impl Fn(f64) -> String,
) {
    let n = ((hi - lo) / step + 1e-9).floor() as i32;
    let _ = writeln!(s, r##"<g stroke="#ddd" stroke-width="1">"##);
    for i in 0..=n {
        let y = sy(lo + i as f64 * step);
        let _ = writeln!(
            s,
            r#"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}"/>"#
        );
    }
    s.push_str("</g>\n<g font-size=\"11\">\n");
    for i in 0..=n {
        let v = lo + i as f64 * step;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            x0 - 6.0,
            sy(v) + 4.0,
            fmt(v)
        );
    }
    s.push_str("</g>\n");
}

/// The vertical grid lines of a percent axis from `xlo` to `xhi` every `step` (a
/// [`percent_range`]) between `py0` and `py1`, labelled below `py1`; `sx` maps a value to x.
pub(super) fn percent_grid(
    s: &mut String,
    sx: &dyn Fn(f64) -> f64,
    (xlo, xhi, step): (f64, f64, f64),
    py0: f64,
    py1: f64,
) {
    let n = ((xhi - xlo) / step + 1e-9).floor() as i32;
    let _ = writeln!(s, r##"<g stroke="#ddd">"##);
    for i in 0..=n {
        let x = sx(xlo + i as f64 * step);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{py0:.1}" x2="{x:.1}" y2="{py1:.1}"/>"#
        );
    }
    s.push_str("</g>\n<g font-size=\"11\">\n");
    for i in 0..=n {
        let v = xlo + i as f64 * step;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{v:.0}</text>"#,
            sx(v),
            py1 + 16.0
        );
    }
    s.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_ranges_read_well() {
        assert_eq!(count_label(1.0), "1");
        assert_eq!(count_label(20_000.0), "20K");
        assert_eq!(count_label(1_500_000.0), "1.5M");
        assert_eq!(count_label(5e9), "5B");
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(0.07), 0.1);
        // Short axis: 2x and 5x are labelled too; long axis: decades only.
        let short: Vec<String> = log_ticks(3.0, 4.5)
            .into_iter()
            .filter(|t| !t.1.is_empty())
            .map(|t| t.1)
            .collect();
        assert_eq!(short, ["1K", "2K", "5K", "10K", "20K"]);
        let long: Vec<String> = log_ticks(2.0, 8.0)
            .into_iter()
            .filter(|t| !t.1.is_empty())
            .map(|t| t.1)
            .collect();
        assert_eq!(long, ["100", "1K", "10K", "100K", "1M", "10M", "100M"]);
        // Percent axis: never past 100, includes chance, at least 20 points tall.
        assert_eq!(percent_range(96.0, 99.9, 1.0), (0.0, 100.0, 20.0));
        assert_eq!(percent_range(72.4, 72.5, 70.0), (70.0, 90.0, 5.0));
        assert_eq!(percent_range(99.0, 100.0, 95.0), (80.0, 100.0, 5.0));
        let (lo, hi, _) = percent_range(40.0, 110.0, 25.0);
        assert_eq!((lo, hi), (20.0, 100.0));
        // Ticks start at a multiple of the step, so the last tick is 100, not 110.
        assert_eq!(percent_range(74.0, 92.6, 12.5), (0.0, 100.0, 20.0));
        for (lo, hi, ch) in [(33.0, 47.0, 2.0), (61.0, 99.0, 50.0), (5.0, 7.0, 1.0)] {
            let (a, b, step) = percent_range(lo, hi, ch);
            assert!(a <= lo.min(ch) && b >= hi && b <= 100.0 && b - a >= 20.0);
            assert_eq!((a / step).fract(), 0.0);
            assert_eq!(((b - a) / step).fract(), 0.0, "{a} {b} {step}");
        }
    }

    #[test]
    fn labels_do_not_overlap() {
        let mut l = Labels::default();
        let a = l.place_near(100.0, 50.0, 10, 9.0).0;
        assert!(
            !l.place_near(100.0, 200.0, 3, 9.0).1,
            "beside: no leader line"
        );
        assert_eq!(a, (107.0, 46.0), "right above the point");
        // A second point close by: its label goes below its point instead.
        let b = l.place_near(102.0, 52.0, 10, 9.0).0;
        assert_eq!(b, (109.0, 64.0));
        // A blocked area (a marker) is avoided too.
        l.block(300.0, 400.0, 0.0, 100.0);
        let c = l.place_near(290.0, 50.0, 5, 9.0).0;
        assert!(c.0 + 5.0 * 9.0 * 0.58 <= 300.0, "{c:?}");
        // Far away: where asked.
        assert_eq!(l.place_near(600.0, 50.0, 5, 9.0).0, (607.0, 46.0));
        // Crowded: after the four spots beside a point are taken, the label moves (leader line).
        let moved: Vec<bool> = (0..5)
            .map(|_| l.place_near(800.0, 50.0, 5, 9.0).1)
            .collect();
        assert_eq!(moved, [false, false, false, false, true]);
    }
}
