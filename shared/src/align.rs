//! Five-point face alignment onto the ArcFace template, as InsightFace's `face_align.norm_crop`:
//! a least-squares similarity transform (rotation, uniform scale, translation; no reflection)
//! of the detected keypoints onto [`ARCFACE_TEMPLATE`], then a bilinear warp to 112×112.

use image::RgbImage;

/// Where the eyes, nose tip and mouth corners of a 112×112 ArcFace crop are.
pub const ARCFACE_TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Side of an aligned crop.
pub const CROP_SIZE: usize = 112;

/// A 2-D affine map `[x', y'] = M · [x, y, 1]`, row-major 2×3.
pub type Affine = [[f64; 3]; 2];

/// The least-squares similarity transform taking `src` points onto `dst` (Umeyama's estimate
/// without reflection, as scikit-image's `SimilarityTransform.estimate`).
///
/// In 2-D a similarity is `[[a, −b], [b, a]]` plus a translation, linear in `(a, b, tx, ty)`, so
/// the least-squares problem has a closed form: with demeaned points `p` (source) and `q`
/// (target), `a = Σ p·q / Σ|p|²`, `b = Σ p×q / Σ|p|²`. It is the same optimum as Umeyama's SVD
/// solution with the reflection correction (`s·R` with `s = √(a²+b²) ≥ 0`, `R ∈ SO(2)`).
/// Returns `None` when the source points coincide.
pub fn similarity_transform(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Affine> {
    let n = src.len();
    if n == 0 || n != dst.len() {
        return None;
    }
    let mean = |pts: &[[f32; 2]]| {
        let (sx, sy) = pts
            .iter()
            .fold((0f64, 0f64), |(x, y), p| (x + p[0] as f64, y + p[1] as f64));
        (sx / n as f64, sy / n as f64)
    };
    let (mx, my) = mean(src);
    let (nx, ny) = mean(dst);
    let (mut dot, mut cross, mut norm) = (0f64, 0f64, 0f64);
    for (p, q) in src.iter().zip(dst) {
        let (px, py) = (p[0] as f64 - mx, p[1] as f64 - my);
        let (qx, qy) = (q[0] as f64 - nx, q[1] as f64 - ny);
        dot += px * qx + py * qy;
        cross += px * qy - py * qx;
        norm += px * px + py * py;
    }
    if norm <= f64::EPSILON * 1e3 {
        return None;
    }
    let (a, b) = (dot / norm, cross / norm);
    Some([
        [a, -b, nx - (a * mx - b * my)],
        [b, a, ny - (b * mx + a * my)],
    ])
}

/// Applies an affine map to a point.
pub fn apply(m: &Affine, p: [f64; 2]) -> [f64; 2] {
    [
        m[0][0] * p[0] + m[0][1] * p[1] + m[0][2],
        m[1][0] * p[0] + m[1][1] * p[1] + m[1][2],
    ]
}

/// The inverse of an invertible affine map.
pub fn invert(m: &Affine) -> Option<Affine> {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    if det.abs() < 1e-12 {
        return None;
    }
    let (a, b, c, d) = (m[1][1] / det, -m[0][1] / det, -m[1][0] / det, m[0][0] / det);
    Some([
        [a, b, -(a * m[0][2] + b * m[1][2])],
        [c, d, -(c * m[0][2] + d * m[1][2])],
    ])
}

/// Warps `img` by `m` (source → destination pixels) into an `out_w × out_h` image, as OpenCV's
/// `warpAffine` with `INTER_LINEAR` and a black constant border: destination pixel `(x, y)` samples
/// the source at `m⁻¹(x, y)` (pixel centres on integer coordinates), blending neighbours outside
/// the image as black. Returns `None` when `m` is singular.
pub fn warp_affine(img: &RgbImage, m: &Affine, out_w: usize, out_h: usize) -> Option<RgbImage> {
    let inv = invert(m)?;
    let (w, h) = (img.width() as i64, img.height() as i64);
    let src = img.as_raw();
    let mut out = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let [sx, sy] = apply(&inv, [x as f64, y as f64]);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for c in 0..3 {
                let p = |yy: i64, xx: i64| -> f64 {
                    if xx < 0 || yy < 0 || xx >= w || yy >= h {
                        0.0
                    } else {
                        src[((yy * w + xx) * 3) as usize + c] as f64
                    }
                };
                let top = p(y0, x0) * (1.0 - fx) + p(y0, x0 + 1) * fx;
                let bot = p(y0 + 1, x0) * (1.0 - fx) + p(y0 + 1, x0 + 1) * fx;
                let v = top * (1.0 - fy) + bot * fy;
                out[(y * out_w + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(out_w as u32, out_h as u32, out)
}

/// The 112×112 ArcFace crop of the face with keypoints `kps` (image pixels).
pub fn align_face(img: &RgbImage, kps: &[[f32; 2]; 5]) -> Option<RgbImage> {
    let m = similarity_transform(kps, &ARCFACE_TEMPLATE)?;
    warp_affine(img, &m, CROP_SIZE, CROP_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn similarity(scale: f64, angle: f64, tx: f64, ty: f64) -> Affine {
        let (c, s) = (scale * angle.cos(), scale * angle.sin());
        [[c, -s, tx], [s, c, ty]]
    }

    #[test]
    fn recovers_a_known_similarity_exactly() {
        let m = similarity(1.7, 0.4, -12.5, 30.25);
        let src: Vec<[f32; 2]> = ARCFACE_TEMPLATE.to_vec();
        let dst: Vec<[f32; 2]> = src
            .iter()
            .map(|p| {
                let q = apply(&m, [p[0] as f64, p[1] as f64]);
                [q[0] as f32, q[1] as f32]
            })
            .collect();
        let e = similarity_transform(&src, &dst).unwrap();
        for r in 0..2 {
            for c in 0..3 {
                assert!((e[r][c] - m[r][c]).abs() < 1e-4, "{e:?} vs {m:?}");
            }
        }
        // And the inverse maps back.
        let back = similarity_transform(&dst, &src).unwrap();
        let p = apply(&back, apply(&m, [3.0, 4.0]));
        assert!((p[0] - 3.0).abs() < 1e-4 && (p[1] - 4.0).abs() < 1e-4);
    }

    #[test]
    fn never_reflects_and_fits_in_the_least_squares_sense() {
        // Mirror-image target: the best proper similarity is not a reflection.
        let src = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]];
        let dst = [[0.0, 0.0], [-10.0, 0.0], [0.0, 10.0]];
        let m = similarity_transform(&src, &dst).unwrap();
        let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
        assert!(det >= 0.0, "{m:?}");
        // Perturbing the optimum never lowers the squared error.
        let err = |m: &Affine| -> f64 {
            src.iter()
                .zip(&dst)
                .map(|(p, q)| {
                    let r = apply(m, [p[0] as f64, p[1] as f64]);
                    (r[0] - q[0] as f64).powi(2) + (r[1] - q[1] as f64).powi(2)
                })
                .sum()
        };
        let best = err(&m);
        for (da, db) in [(0.01, 0.0), (-0.01, 0.0), (0.0, 0.01), (0.0, -0.01)] {
            let mut p = m;
            p[0][0] += da;
            p[1][1] += da;
            p[0][1] -= db;
            p[1][0] += db;
            assert!(err(&p) > best);
        }
        assert!(similarity_transform(&[[1.0, 1.0]; 3], &dst).is_none());
    }

    #[test]
    fn warp_translates_rotates_and_blends_exactly() {
        // A 4×4 gradient image.
        let mut img = RgbImage::new(4, 4);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 10) as u8, (y * 10) as u8, 7]);
        }
        // Pure translation by (−1, −2): out(x, y) = in(x + 1, y + 2), black outside.
        let t = [[1.0, 0.0, -1.0], [0.0, 1.0, -2.0]];
        let o = warp_affine(&img, &t, 4, 4).unwrap();
        assert_eq!(o.get_pixel(0, 0).0, [10, 20, 7]);
        assert_eq!(o.get_pixel(2, 1).0, [30, 30, 7]);
        assert_eq!(o.get_pixel(3, 3).0, [0, 0, 0]);
        // Half-pixel shift: out(x, 0) = mean of in(x, 0) and in(x + 1, 0).
        let t = [[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]];
        let o = warp_affine(&img, &t, 4, 4).unwrap();
        assert_eq!(o.get_pixel(0, 0).0, [5, 0, 7]);
        assert_eq!(o.get_pixel(1, 2).0, [15, 20, 7]);
        // The last column blends with the black border: (30 + 0) / 2, and 7 / 2 = 3.5 → 4.
        assert_eq!(o.get_pixel(3, 0).0, [15, 0, 4]);
        // 90° rotation about the centre (1.5, 1.5): m(sx, sy) = (sy, 3 − sx), so
        // out(x, y) = in(3 − y, x).
        let r = [[0.0, 1.0, 0.0], [-1.0, 0.0, 3.0]];
        let o = warp_affine(&img, &r, 4, 4).unwrap();
        for y in 0..4u32 {
            for x in 0..4u32 {
                assert_eq!(o.get_pixel(x, y), img.get_pixel(3 - y, x));
            }
        }
    }

    #[test]
    fn aligning_template_keypoints_is_the_identity_crop() {
        let mut img = RgbImage::new(112, 112);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([x as u8, y as u8, (x + y) as u8]);
        }
        let crop = align_face(&img, &ARCFACE_TEMPLATE).unwrap();
        assert_eq!(crop, img);
    }
}
