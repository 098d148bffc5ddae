//! PNG renderings of the report's SVG plots (resvg), at twice the SVG's size, with the font
//! vendored in `assets/fonts` (DejaVu Sans): the same pixels on a machine without fonts.
//! Bytes in, bytes out; no files.
use resvg::{tiny_skia, usvg};

/// DejaVu Sans (Bitstream Vera license, `assets/fonts/LICENSE-DejaVu.txt`).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// The family the plots name first (`svg.rs`), and the one every other name maps to.
pub const FONT_FAMILY: &str = "DejaVu Sans";
/// Pixels per SVG unit: crisp in a paper, readable on a screen.
const SCALE: f32 = 2.0;

fn options() -> usvg::Options<'static> {
    let mut opt = usvg::Options {
        font_family: FONT_FAMILY.to_string(),
        ..Default::default()
    };
    let db = opt.fontdb_mut();
    db.load_font_data(FONT.to_vec());
    db.set_sans_serif_family(FONT_FAMILY);
    db.set_serif_family(FONT_FAMILY);
    db.set_monospace_family(FONT_FAMILY);
    opt
}

/// `svg` rasterised to PNG bytes; the problem in words where it cannot be.
pub fn render(svg: &str) -> Result<Vec<u8>, String> {
    let tree = usvg::Tree::from_str(svg, &options()).map_err(|e| e.to_string())?;
    let size = tree.size();
    let (w, h) = (
        (size.width() * SCALE).ceil() as u32,
        (size.height() * SCALE).ceil() as u32,
    );
    let mut pixmap =
        tiny_skia::Pixmap::new(w, h).ok_or_else(|| format!("cannot make a {w}x{h} image"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(SCALE, SCALE),
        &mut pixmap.as_mut(),
    );
    pixmap.encode_png().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text is drawn with the vendored font (no system font needed): a label darkens pixels.
    #[test]
    fn renders_text_with_the_vendored_font() {
        let blank = r#"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40" fill="white"/></svg>"#;
        let text = r#"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40" font-family="DejaVu Sans, sans-serif"><rect width="120" height="40" fill="white"/><text x="4" y="28" font-size="20">top-1 ±</text></svg>"#;
        let dark = |png: &[u8]| {
            let img = image::load_from_memory(png).unwrap().to_luma8();
            assert_eq!(img.dimensions(), (240, 80));
            img.pixels().filter(|p| p.0[0] < 128).count()
        };
        assert_eq!(dark(&render(blank).unwrap()), 0);
        assert!(dark(&render(text).unwrap()) > 200, "the text was drawn");
        assert!(render("<svg").is_err());
    }
}
