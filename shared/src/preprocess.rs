//! From image files to network input: decode, check the aligned-crop size, convert to
//! normalised CHW floats exactly as InsightFace does (`(p − 127.5) · (1 / 127.5)`, RGB).

use std::path::Path;

use crate::Error;
use crate::format::Preprocessing;

/// Decodes an aligned face crop into a CHW float tensor.
pub fn load_face(path: impl AsRef<Path>, pre: &Preprocessing) -> Result<Vec<f32>, Error> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_face(&bytes, pre).map_err(|e| match e {
        Error::Image { source, .. } => Error::Image {
            path: path.display().to_string(),
            source,
        },
        Error::Input(m) => Error::Input(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Like [`load_face`], from encoded bytes (JPEG or PNG).
pub fn decode_face(bytes: &[u8], pre: &Preprocessing) -> Result<Vec<f32>, Error> {
    let img = image::load_from_memory(bytes).map_err(|source| Error::Image {
        path: "<bytes>".into(),
        source,
    })?;
    let rgb = img.to_rgb8();
    let [h, w] = pre.size;
    if (rgb.width() as usize, rgb.height() as usize) != (w, h) {
        return Err(Error::Input(format!(
            "image is {}×{}, expected an aligned {w}×{h} face crop (align raw photos first)",
            rgb.width(),
            rgb.height()
        )));
    }
    Ok(pixels_to_chw(rgb.as_raw(), w, h, pre))
}

/// Interleaved RGB bytes → normalised CHW (BGR when the model asks for it).
pub fn pixels_to_chw(rgb: &[u8], w: usize, h: usize, pre: &Preprocessing) -> Vec<f32> {
    let inv = pre.std.map(|s| 1.0 / s);
    let bgr = pre.color.eq_ignore_ascii_case("BGR");
    let mut out = vec![0f32; 3 * h * w];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let src = if bgr { 2 - c } else { c };
            out[c * h * w + i] = (px[src] as f32 - pre.mean[c]) * inv[c];
        }
    }
    out
}

/// Mirrors a CHW image left to right (the flip of the flip test).
pub fn flip_horizontal(chw: &[f32], w: usize) -> Vec<f32> {
    let mut out = chw.to_vec();
    for row in out.chunks_mut(w) {
        row.reverse();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matches_insightface() {
        let pre = Preprocessing {
            size: [1, 2],
            ..Default::default()
        };
        let x = pixels_to_chw(&[0, 127, 255, 255, 0, 128], 2, 1, &pre);
        // R plane, G plane, B plane
        let e = |p: f32| (p - 127.5) * (1.0 / 127.5);
        assert_eq!(x, vec![e(0.), e(255.), e(127.), e(0.), e(255.), e(128.)]);
    }

    #[test]
    fn flip_reverses_each_row() {
        assert_eq!(
            flip_horizontal(&[1., 2., 3., 4., 5., 6.], 3),
            vec![3., 2., 1., 6., 5., 4.]
        );
    }

    #[test]
    fn non_crop_sizes_are_rejected_with_a_reason() {
        let mut png = Vec::new();
        image::RgbImage::new(50, 40)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let err = decode_face(&png, &Preprocessing::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("50×40") && err.contains("112×112"), "{err}");
        let err = decode_face(b"not an image", &Preprocessing::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot decode"), "{err}");
    }
}
