//! InsightFace's letterbox: a photo resized into the top-left of the detector's square input
//! (bilinear, OpenCV's sampling), and the input normalisation.

use image::RgbImage;
use rayon::prelude::*;

/// Resizes `img` keeping its aspect ratio into the top-left of a black `size × size` canvas
/// (bilinear with pixel-centre alignment, like OpenCV's `INTER_LINEAR`); returns the canvas and
/// the scale factor `new / old`. InsightFace's sizes: the longer side becomes `size`, the other
/// `int(size · ratio)`.
///
/// # Panics
/// If `img` has no pixels (as [`letterbox_input`] and [`resize_bilinear`]; [`Scrfd::detect`]
/// refuses such a photo with an error).
///
/// [`Scrfd::detect`]: super::Scrfd::detect
pub fn letterbox(img: &RgbImage, size: usize) -> (RgbImage, f32) {
    let (nw, nh, scale) = fitted(img, size);
    // The resized photo is written straight into the canvas's rows.
    let mut canvas = vec![0u8; size * size * 3];
    resize_into(img, nw, nh, &mut canvas[..nh * size * 3], size * 3);
    let canvas = RgbImage::from_raw(size as u32, size as u32, canvas).expect("sized buffer");
    (canvas, scale)
}

/// The detector's input for `img`: `normalize(&letterbox(img, size).0)` (CHW floats) and the
/// scale, in one pass. Each rounded grey level goes straight to its plane instead of through
/// an interleaved canvas that [`normalize`] then reads back (in the browser's wasm the two
/// passes took 7–9 ms of a 640×640 detection).
pub fn letterbox_input(img: &RgbImage, size: usize) -> (Vec<f32>, f32) {
    let (nw, nh, scale) = fitted(img, size);
    let plane = size * size;
    let mut x = vec![normalized(0); 3 * plane];
    let rows = Across::new(img, nw, nh);
    // One task per output row of one channel: row `r` of the `3·size` is channel `r / size`.
    x.par_chunks_mut(size)
        .enumerate()
        .filter(|(r, _)| r % size < nh)
        .for_each(|(r, dst)| {
            let (c, oy) = (r / size, r % size);
            rows.blend(oy, c, &mut dst[..nw], normalized);
        });
    (x, scale)
}

/// InsightFace's letterbox size for `img` in a `size` square, and its scale: the longer side
/// becomes `size`, the other `int(size · ratio)`.
fn fitted(img: &RgbImage, size: usize) -> (usize, usize, f32) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let im_ratio = h as f64 / w as f64;
    let (nw, nh) = if im_ratio > 1.0 {
        (((size as f64) / im_ratio) as usize, size)
    } else {
        (size, ((size as f64) * im_ratio) as usize)
    };
    let (nw, nh) = (nw.max(1), nh.max(1));
    (nw, nh, nh as f32 / h as f32)
}

/// Grey level `v` as the detector reads it.
#[inline]
fn normalized(v: u8) -> f32 {
    (v as f32 - 127.5) / 128.0
}

/// Bilinear resize with OpenCV's `INTER_LINEAR` sampling (`src = (dst + ½)·in/out − ½`, clamped
/// to the image), rounded to the nearest grey level.
pub fn resize_bilinear(img: &RgbImage, nw: usize, nh: usize) -> RgbImage {
    let mut out = vec![0u8; nw * nh * 3];
    resize_into(img, nw, nh, &mut out, nw * 3);
    RgbImage::from_raw(nw as u32, nh as u32, out).expect("sized buffer")
}

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

/// The first half of the separable resize: each source row that an output row reads,
/// interpolated along x (`p(y, x0)·(1 − fx) + p(y, x1)·fx`) once instead of once per output row
/// that reads it, stored per channel (`[row][channel][nw]`) so that the second half, the blend
/// along y, runs over contiguous values. Those are the very f32 expressions of the per-pixel
/// definition (`tests::resize_matches_the_per_pixel_definition`), so the result is the same to
/// the bit.
struct Across {
    values: Vec<f32>,
    /// Each output row's two source rows' slots in `values` and the weight of the second.
    taps: Vec<(usize, usize, f32)>,
    nw: usize,
}

impl Across {
    fn new(img: &RgbImage, nw: usize, nh: usize) -> Self {
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
        let mut values = vec![0f32; rows.len() * 3 * nw];
        values
            .par_chunks_mut(3 * nw)
            .zip(&rows)
            .for_each(|(dst, &y)| {
                let row = &src[y * w * 3..][..w * 3];
                for (c, dst) in dst.chunks_exact_mut(nw).enumerate() {
                    for (v, &(x0, x1, fx)) in dst.iter_mut().zip(&tx) {
                        let p = |x: usize| row[x * 3 + c] as f32;
                        *v = p(x0) * (1.0 - fx) + p(x1) * fx;
                    }
                }
            });
        let taps = ty
            .iter()
            .map(|&(y0, y1, fy)| (slot[y0], slot[y1], fy))
            .collect();
        Across { values, taps, nw }
    }

    /// Output row `oy` of channel `c` (`nw` values) blended along y and rounded, each grey
    /// level written through `write`.
    #[inline]
    fn blend<T>(&self, oy: usize, c: usize, dst: &mut [T], write: impl Fn(u8) -> T) {
        let (s0, s1, fy) = self.taps[oy];
        let top = &self.values[(s0 * 3 + c) * self.nw..][..self.nw];
        let bot = &self.values[(s1 * 3 + c) * self.nw..][..self.nw];
        for ((d, &t), &b) in dst.iter_mut().zip(top).zip(bot) {
            *d = write(round_to_u8(t * (1.0 - fy) + b * fy));
        }
    }
}

/// [`resize_bilinear`] into the first `nw · 3` bytes of each `stride`-byte row of `out`.
fn resize_into(img: &RgbImage, nw: usize, nh: usize, out: &mut [u8], stride: usize) {
    let rows = Across::new(img, nw, nh);
    out.par_chunks_mut(stride)
        .take(nh)
        .enumerate()
        .for_each(|(oy, dst)| {
            let mut grey = vec![0u8; nw];
            for c in 0..3 {
                rows.blend(oy, c, &mut grey, |v| v);
                for (px, &v) in dst[..nw * 3].chunks_exact_mut(3).zip(&grey) {
                    px[c] = v;
                }
            }
        });
}

/// `v.round().clamp(0.0, 255.0) as u8` (halves away from zero) in operations that vectorise on
/// every target: no call to `roundf` (the baseline x86-64 target has no instruction for it),
/// no float clamp (NaN-handling sequences in wasm). `v − trunc(v)` is exact in f32; below zero
/// every rounding clamps to 0.
#[inline]
fn round_to_u8(v: f32) -> u8 {
    let i = v as i32;
    let up = (v - i as f32 >= 0.5) as i32;
    // (`min` first: `i + up` must not overflow for a saturated `i`.)
    (i.min(255) + up).clamp(0, 255) as u8
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
                *v = normalized(px[c]);
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

    /// A `w × h` image of pseudo-random grey levels from the LCG state `seed`.
    fn random_image(w: usize, h: usize, seed: &mut u32) -> RgbImage {
        let data = (0..w * h * 3)
            .map(|_| {
                *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (*seed >> 24) as u8
            })
            .collect();
        RgbImage::from_raw(w as u32, h as u32, data).unwrap()
    }

    #[test]
    fn letterbox_input_equals_normalizing_the_letterbox() {
        let mut seed = 7u32;
        for (w, h, size) in [(250, 250, 640), (91, 37, 64), (37, 91, 64), (1, 1, 8)] {
            let img = random_image(w, h, &mut seed);
            let (canvas, scale) = letterbox(&img, size);
            let (x, s) = letterbox_input(&img, size);
            assert_eq!(s, scale);
            assert_eq!(x, normalize(&canvas), "{w}×{h} in {size}");
        }
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
            let img = random_image(w, h, &mut seed);
            assert_eq!(
                resize_bilinear(&img, nw, nh).into_raw(),
                resize_per_pixel(&img, nw, nh),
                "{w}×{h} → {nw}×{nh}"
            );
        }
        for v in [
            -0.7f32,
            -0.5,
            -0.2,
            0.0,
            0.49999997,
            0.5,
            1.5,
            2.5,
            254.5,
            254.49998,
            255.4,
            255.5,
            300.0,
            3e9,
            -3e9,
            f32::NAN,
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
