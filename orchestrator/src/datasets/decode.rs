//! `load_image`: decoding an [`ImageRef`] (JPEG/PNG/TIFF file or in-memory RGB) and resizing it
//! to a square CHW u8 tensor. Owns pixels only; it must not list or sample datasets.
//!
//! Decoding is limited ([`MAX_SIDE`] pixels a side, [`MAX_DECODE_MIB`] MiB of buffers): the
//! image crate refuses a larger header before it allocates anything.
use image::imageops::{self, FilterType};
use image::{ImageError, ImageReader, Limits, RgbImage};
use std::io::{BufRead, Cursor, Seek};
use std::path::Path;

use super::{DatasetError, ImageRef};

/// The widest and tallest image decoded (VTAB images are at most a few thousand pixels).
pub const MAX_SIDE: u32 = 16_384;
/// The most memory the decoder may allocate for one image, in MiB.
pub const MAX_DECODE_MIB: u64 = 512;

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_MIB << 20);
    limits
}

thread_local! {
    /// Whether this thread is inside the image decoder, whose panics [`decode`] catches.
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is decoding an image now (a panic hook that aborts, like the fuzzer's,
/// lets [`decode`] catch the decoder's panics instead).
pub fn decoding() -> bool {
    DECODING.with(|d| d.get())
}

/// Decodes the image `reader` reads (format guessed from its bytes) within [`limits`] and
/// converts it to RGB; errors name `path`.
fn decode<R: BufRead + Seek>(
    reader: ImageReader<R>,
    path: &Path,
) -> Result<RgbImage, DatasetError> {
    let decode_err = |problem: String| DatasetError::Decode {
        path: path.to_path_buf(),
        problem,
    };
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    reader.limits(limits());
    // A malformed file can make the decoder itself panic (png 0.18.1 on a short palette, found
    // by fuzzing): that is a bad file, not a crash of the run.
    let decoded = {
        DECODING.with(|d| d.set(true));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.decode()));
        DECODING.with(|d| d.set(false));
        r
    };
    let Ok(decoded) = decoded else {
        return Err(decode_err(
            "the image decoder panicked on this file (a malformed image)".into(),
        ));
    };
    match decoded {
        Ok(image) => Ok(image.into_rgb8()),
        Err(e @ ImageError::Limits(_)) => Err(decode_err(format!(
            "{e} (images are limited to {MAX_SIDE} x {MAX_SIDE} pixels and {MAX_DECODE_MIB} MiB \
             while decoding)"
        ))),
        Err(e) => Err(decode_err(e.to_string())),
    }
}

/// The image in `bytes` (JPEG, PNG or TIFF, as read from `path`, which errors name) as RGB,
/// within the decoding limits.
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage, DatasetError> {
    decode(ImageReader::new(Cursor::new(bytes)), path)
}

/// Decodes `img`, converts it to RGB (grayscale is replicated, alpha dropped, 16-bit scaled to
/// 8), resizes it to `size x size` with CatmullRom (bicubic, antialiased when shrinking) unless
/// it already has that size, and returns the three planes R, G, B (CHW, 3*size*size bytes).
pub(crate) fn load_image(img: &ImageRef, size: u32) -> Result<Vec<u8>, DatasetError> {
    if size == 0 {
        return Err(DatasetError::BadSize { size });
    }
    let rgb = match img {
        ImageRef::File(path) => {
            let reader = ImageReader::open(path).map_err(|e| DatasetError::Decode {
                path: path.clone(),
                problem: e.to_string(),
            })?;
            decode(reader, path)?
        }
        ImageRef::Rgb {
            width,
            height,
            data,
            offset,
        } => {
            let len = (*width as usize)
                .checked_mul(*height as usize)
                .and_then(|n| n.checked_mul(3));
            let pixels = len
                .and_then(|n| Some(*offset..offset.checked_add(n)?))
                .and_then(|range| data.get(range))
                .ok_or_else(|| DatasetError::BadPixels {
                    problem: format!(
                        "{width}x{height} RGB at offset {offset} overruns its {}-byte buffer",
                        data.len()
                    ),
                })?;
            RgbImage::from_raw(*width, *height, pixels.to_vec()).ok_or_else(|| {
                DatasetError::BadPixels {
                    problem: format!("{width}x{height} RGB does not fit its pixels"),
                }
            })?
        }
    };
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(match img {
            ImageRef::File(path) => DatasetError::Decode {
                path: path.clone(),
                problem: "the image is empty (0 pixels)".into(),
            },
            ImageRef::Rgb { .. } => DatasetError::BadPixels {
                problem: "the image is empty (0 pixels)".into(),
            },
        });
    }
    let resized = if rgb.dimensions() == (size, size) {
        rgb
    } else {
        imageops::resize(&rgb, size, size, FilterType::CatmullRom)
    };
    let plane = (size as usize) * (size as usize);
    let mut chw = vec![0u8; 3 * plane];
    for (i, px) in resized.pixels().enumerate() {
        chw[i] = px[0];
        chw[plane + i] = px[1];
        chw[2 * plane + i] = px[2];
    }
    Ok(chw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::testutil::TempDir;
    use image::{GrayImage, Luma, Rgb, Rgba, RgbaImage};
    use std::sync::Arc;

    #[test]
    fn load_image_red_png_gives_r_plane_255_in_chw() {
        let dir = TempDir::new("red");
        let path = dir.path().join("red.png");
        RgbImage::from_pixel(10, 6, Rgb([255, 0, 0]))
            .save(&path)
            .unwrap();
        for size in [4, 6, 16] {
            let chw = load_image(&ImageRef::File(path.clone()), size).unwrap();
            let plane = (size * size) as usize;
            assert_eq!(chw.len(), 3 * plane);
            assert!(chw[..plane].iter().all(|&v| v == 255));
            assert!(chw[plane..].iter().all(|&v| v == 0));
        }
    }

    #[test]
    fn load_image_red_jpeg_and_tiff_are_red() {
        let dir = TempDir::new("redjpg");
        for name in ["red.jpg", "red.tif"] {
            let path = dir.path().join(name);
            RgbImage::from_pixel(16, 16, Rgb([255, 0, 0]))
                .save(&path)
                .unwrap();
            let chw = load_image(&ImageRef::File(path), 8).unwrap();
            assert_eq!(chw.len(), 3 * 64);
            assert!(chw[..64].iter().all(|&v| v >= 250), "{name}");
            assert!(chw[64..].iter().all(|&v| v <= 5), "{name}");
        }
    }

    #[test]
    fn load_image_grayscale_and_rgba_become_rgb() {
        let dir = TempDir::new("gray");
        let gray = dir.path().join("gray.png");
        GrayImage::from_pixel(5, 5, Luma([77])).save(&gray).unwrap();
        let chw = load_image(&ImageRef::File(gray), 3).unwrap();
        assert_eq!(chw, vec![77; 27]);
        let rgba = dir.path().join("rgba.png");
        RgbaImage::from_pixel(3, 3, Rgba([1, 2, 3, 4]))
            .save(&rgba)
            .unwrap();
        let chw = load_image(&ImageRef::File(rgba), 3).unwrap();
        assert_eq!(chw, [vec![1; 9], vec![2; 9], vec![3; 9]].concat());
    }

    #[test]
    fn load_image_rgb_buffer_is_hwc_in_and_chw_out() {
        // Two 2x1 images in one buffer; the second is [red, blue].
        let data = Arc::new(vec![0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 0, 255]);
        let img = ImageRef::Rgb {
            width: 2,
            height: 1,
            data: data.clone(),
            offset: 6,
        };
        // 2x1 is not square, so it is resized; check a same-size path with a 1x1 image too.
        assert_eq!(load_image(&img, 2).unwrap().len(), 12);
        let one = ImageRef::Rgb {
            width: 1,
            height: 1,
            data,
            offset: 9,
        };
        assert_eq!(load_image(&one, 1).unwrap(), vec![0, 0, 255]);
        let over = ImageRef::Rgb {
            width: 2,
            height: 2,
            data: Arc::new(vec![0; 12]),
            offset: 3,
        };
        assert!(matches!(
            load_image(&over, 2),
            Err(DatasetError::BadPixels { .. })
        ));
    }

    #[test]
    fn load_image_corrupt_or_missing_file_names_the_file() {
        let dir = TempDir::new("corrupt");
        let bad = dir.path().join("broken.jpg");
        std::fs::write(&bad, b"\xff\xd8\xff\xe0 definitely not a jpeg").unwrap();
        let msg = load_image(&ImageRef::File(bad), 8).unwrap_err().to_string();
        assert!(msg.contains("broken.jpg"), "{msg}");
        // A real JPEG cut in half.
        let good = dir.path().join("good.jpg");
        RgbImage::from_pixel(32, 32, Rgb([9, 99, 199]))
            .save(&good)
            .unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
        let msg = load_image(&ImageRef::File(cut), 8).unwrap_err().to_string();
        assert!(msg.contains("cut.jpg"), "{msg}");
        let missing = dir.path().join("missing.png");
        let msg = load_image(&ImageRef::File(missing), 8)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing.png"), "{msg}");
        let zero = load_image(&ImageRef::File(good), 0).unwrap_err();
        assert!(matches!(zero, DatasetError::BadSize { size: 0 }));
    }

    /// A PNG of `width` x `height` 8-bit grey pixels: signature and IHDR only (no pixels).
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        let mut crc = flate2::Crc::new();
        crc.update(&ihdr);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(13u32.to_be_bytes());
        png.extend(ihdr);
        png.extend(crc.sum().to_be_bytes());
        png
    }

    #[test]
    fn huge_image_headers_are_refused_before_decoding() {
        // 20,000 x 20,000 grey is 400 MB: under the image crate's default memory limit, so
        // only the side limit refuses it before the pixels are allocated.
        for (w, h) in [(20_000, 20_000), (60_000, 60_000), (16_385, 1)] {
            let msg = decode_bytes(&png_header(w, h), Path::new("big.png"))
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains("big.png") && msg.contains("16384 x 16384"),
                "{msg}"
            );
        }
        // Within the limits, the same header fails only for its missing pixels.
        let msg = decode_bytes(&png_header(64, 64), Path::new("small.png"))
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("limited"), "{msg}");
        let dir = TempDir::new("bigfile");
        let path = dir.path().join("big.png");
        std::fs::write(&path, png_header(60_000, 60_000)).unwrap();
        let msg = load_image(&ImageRef::File(path), 8)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("big.png") && msg.contains("limited"), "{msg}");
    }
}
