//! InsightFace's letterbox: a photo resized into the top-left of the detector's square input
//! (bilinear, OpenCV's sampling), and the input normalisation.

use image::RgbImage;
use rayon::prelude::*;

/// Resizes `img` keeping its aspect ratio into the top-left of a black `size × size` canvas
/// (bilinear with pixel-centre alignment, like OpenCV's `INTER_LINEAR`); returns the canvas and
/// the scale factor `new / old`. InsightFace's sizes: the longer side becomes `size`, the other
/// `int(size · ratio)`.
pub fn letterbox(img: &RgbImage, size: usize) -> (RgbImage, f32) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let im_ratio = h as f64 / w as f64;
    let (nw, nh) = if im_ratio > 1.0 {
        (((size as f64) / im_ratio) as usize, size)
    } else {
        (size, ((size as f64) * im_ratio) as usize)
    };
    let (nw, nh) = (nw.max(1), nh.max(1));
    let scale = nh as f32 / h as f32;
    // The resized photo is written straight into the canvas's rows.
    let mut canvas = vec![0u8; size * size * 3];
    resize_into(img, nw, nh, &mut canvas[..nh * size * 3], size * 3);
    let canvas = RgbImage::from_raw(size as u32, size as u32, canvas).expect("sized buffer");
    (canvas, scale)
}

/// Bilinear resize with OpenCV's `INTER_LINEAR` sampling (`src = (dst + ½)·in/out − ½`, clamped
/// to the image), rounded to the nearest grey level.
pub fn resize_bilinear(img: &RgbImage, nw: usize, nh: usize) -> RgbImage {
    let mut out = vec![0u8; nw * nh * 3];
    resize_into(img, nw, nh, &mut out, nw * 3);
    RgbImage::from_raw(nw as u32, nh as u32, out).expect("sized buffer")
}

/// [`resize_bilinear`] into the first `nw · 3` bytes of each `stride`-byte row of `out`.
///
/// Half-pixel-centre bilinear taps of each of `n_out` outputs over `n_in` inputs: the two
/// source indices and the weight of the second, clamped at the borders.
fn bilinear_taps(n_out: usize, n_in: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let i = f.floor();
            let t = (f - i) as f32;
            let i = i as i64;
            if i < 0 {
                (0, 0, 0.0)
            } else if i as usize >= n_in - 1 {
                (n_in - 1, n_in - 1, 0.0)
            } else {
                (i as usize, i as usize + 1, t)
            }
        })
        .collect()
}

/// Separable, in parallel: each source row that an output row reads is first interpolated
/// along x (`p(y, x0)·(1 − fx) + p(y, x1)·fx`, once per source row instead of once per output
/// row that reads it), then each output row blends its two (`top·(1 − fy) + bot·fy`). Those are
/// the very f32 expressions of the per-pixel definition (`tests::resize_matches_the_per_pixel_definition`),
/// so the result is the same to the bit.
fn resize_into(img: &RgbImage, nw: usize, nh: usize, out: &mut [u8], stride: usize) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (tx, ty) = (bilinear_taps(nw, w), bilinear_taps(nh, h));
    let src = img.as_raw();
    // Source rows read, and each one's slot among them.
    let mut slot = vec![usize::MAX; h];
    let mut rows = Vec::new();
    for &(y0, y1, _) in &ty {
        for y in [y0, y1] {
            if slot[y] == usize::MAX {
                slot[y] = rows.len();
                rows.push(y);
            }
        }
    }
    let mut across = vec![0f32; rows.len() * nw * 3];
    across
        .par_chunks_mut(nw * 3)
        .zip(&rows)
        .for_each(|(dst, &y)| {
            let row = &src[y * w * 3..][..w * 3];
            for (px, &(x0, x1, fx)) in dst.chunks_exact_mut(3).zip(&tx) {
                for c in 0..3 {
                    let p = |x: usize| row[x * 3 + c] as f32;
                    px[c] = p(x0) * (1.0 - fx) + p(x1) * fx;
                }
            }
        });
    out.par_chunks_mut(stride)
        .zip(&ty)
        .for_each(|(dst, &(y0, y1, fy))| {
            let top = &across[slot[y0] * nw * 3..][..nw * 3];
            let bot = &across[slot[y1] * nw * 3..][..nw * 3];
            for ((d, &t), &b) in dst[..nw * 3].iter_mut().zip(top).zip(bot) {
                *d = round_to_u8(t * (1.0 - fy) + b * fy);
            }
        });
}

/// `v.round().clamp(0.0, 255.0) as u8` (halves away from zero) without a call to `roundf`,
/// which the baseline x86-64 target has no instruction for: `v − trunc(v)` is exact in f32.
#[inline]
fn round_to_u8(v: f32) -> u8 {
    let t = (v as i32) as f32;
    let r = if v - t >= 0.5 { t + 1.0 } else { t };
    r.clamp(0.0, 255.0) as u8
}

/// RGB image → CHW floats `(p − 127.5) / 128`, SCRFD's input normalisation.
pub fn normalize(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    let raw = img.as_raw();
    out.par_chunks_mut(w * h)
        .enumerate()
        .for_each(|(c, plane)| {
            for (v, px) in plane.iter_mut().zip(raw.chunks_exact(3)) {
                *v = (px[c] as f32 - 127.5) / 128.0;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_keeps_aspect_in_the_top_left() {
        let mut img = RgbImage::new(100, 50);
        img.pixels_mut()
            .for_each(|p| *p = image::Rgb([200, 100, 50]));
        let (canvas, scale) = letterbox(&img, 64);
        assert_eq!(scale, 32.0 / 50.0);
        assert_eq!(canvas.get_pixel(63, 31).0, [200, 100, 50]);
        assert_eq!(canvas.get_pixel(0, 32).0, [0, 0, 0]);
        let x = normalize(&canvas);
        assert_eq!(x[0], (200.0 - 127.5) / 128.0);
        assert_eq!(x[64 * 64 * 3 - 1], -127.5 / 128.0);
    }

    /// The per-pixel definition the separable resize must equal to the bit.
    fn resize_per_pixel(img: &RgbImage, nw: usize, nh: usize) -> Vec<u8> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (tx, ty) = (bilinear_taps(nw, w), bilinear_taps(nh, h));
        let src = img.as_raw();
        let mut out = vec![0u8; nw * nh * 3];
        for (oy, &(y0, y1, fy)) in ty.iter().enumerate() {
            for (ox, &(x0, x1, fx)) in tx.iter().enumerate() {
                for c in 0..3 {
                    let p = |y: usize, x: usize| src[(y * w + x) * 3 + c] as f32;
                    let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
                    let bot = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
                    let v = top * (1.0 - fy) + bot * fy;
                    out[(oy * nw + ox) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        out
    }

    #[test]
    fn resize_matches_the_per_pixel_definition() {
        let mut seed = 1u32;
        for (w, h, nw, nh) in [
            (250, 250, 640, 640),
            (37, 91, 251, 640),
            (640, 480, 123, 77),
            (5, 3, 5, 3),
            (1, 1, 7, 4),
        ] {
            let data = (0..w * h * 3)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            let img = RgbImage::from_raw(w as u32, h as u32, data).unwrap();
            assert_eq!(
                resize_bilinear(&img, nw, nh).into_raw(),
                resize_per_pixel(&img, nw, nh),
                "{w}×{h} → {nw}×{nh}"
            );
        }
        for v in [
            -0.7f32, -0.5, -0.2, 0.0, 0.49999997, 0.5, 1.5, 2.5, 254.5, 254.49998, 255.4, 300.0,
        ] {
            assert_eq!(round_to_u8(v), v.round().clamp(0.0, 255.0) as u8, "{v}");
        }
    }

    #[test]
    fn bilinear_resize_matches_opencv_sampling() {
        // 2×1 → 4×1: OpenCV gives src x = (d + ½)/2 − ½ = −¼, ¼, ¾, 1¼ → clamp, ¼, ¾, clamp.
        let img = RgbImage::from_raw(2, 1, vec![0, 0, 0, 100, 100, 100]).unwrap();
        let r = resize_bilinear(&img, 4, 1);
        let row: Vec<u8> = r.pixels().map(|p| p.0[0]).collect();
        assert_eq!(row, vec![0, 25, 75, 100]);
    }
}
