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
    (ylo, yhi, nice_step((yhi - ylo) / 6.0))
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
                if labelled { count_label(v) } else { String::new() },
                m == 1,
            ));
        }
    }
    out
}

/// Places text labels so they do not overlap: each label starts where asked and moves down
/// in steps of its height until it is clear of the labels placed before it.
#[derive(Default)]
pub(super) struct Labels {
    boxes: Vec<(f64, f64, f64, f64)>,
}

impl Labels {
    /// Where to draw a label of `chars` characters (font size `size`) wanted at (x, y).
    pub(super) fn place(&mut self, x: f64, y: f64, chars: usize, size: f64) -> (f64, f64) {
        let w = chars as f64 * size * 0.58;
        let h = size + 1.0;
        let mut y = y;
        for _ in 0..40 {
            let clash = self
                .boxes
                .iter()
                .any(|(x0, x1, y0, y1)| x < *x1 && x + w > *x0 && y - h < *y1 && y > *y0);
            if !clash {
                break;
            }
            y += h;
        }
        self.boxes.push((x, x + w, y - h, y));
        (x, y)
    }
}

/// `<svg ...>` with a white background and a centred title.
pub(super) fn open(s: &mut String, w: f64, h: f64, title: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#
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
#[allow(clippy::too_many_arguments)]
pub(super) fn y_grid(
    s: &mut String,
    (x0, x1): (f64, f64),
    sy: impl Fn(f64) -> f64,
    lo: f64,
    hi: f64,
    step: f64,
    fmt: impl Fn(f64) -> String,
) {
    let n = ((hi - lo) / step).round() as i32;
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
    }

    #[test]
    fn labels_do_not_overlap() {
        let mut l = Labels::default();
        let a = l.place(10.0, 50.0, 10, 9.0);
        let b = l.place(12.0, 52.0, 10, 9.0);
        assert_eq!(a, (10.0, 50.0));
        assert!(b.1 >= a.1 + 10.0, "{b:?}");
        // Far away: left where asked.
        assert_eq!(l.place(300.0, 50.0, 5, 9.0), (300.0, 50.0));
    }
}
