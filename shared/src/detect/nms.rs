//! From scored boxes to faces: InsightFace's IoU and greedy NMS, and the one face a photo
//! gives.

use super::Detection;

/// Intersection over union with InsightFace's `+1` pixel convention (areas `(x2−x1+1)(y2−y1+1)`).
pub fn iou_plus1(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = w * h;
    inter / (area(a) + area(b) - inter)
}

/// Plain intersection over union of two `x1, y1, x2, y2` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Greedy non-maximum suppression: sorts by descending score (ties keep their order), keeps a
/// box and drops every later box whose [`iou_plus1`] with it exceeds `iou_threshold`.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::new();
    let mut dropped = vec![false; dets.len()];
    for i in 0..dets.len() {
        if dropped[i] {
            continue;
        }
        keep.push(dets[i]);
        for j in i + 1..dets.len() {
            if !dropped[j] && iou_plus1(&dets[i].bbox, &dets[j].bbox) > iou_threshold {
                dropped[j] = true;
            }
        }
    }
    keep
}

/// The one face to keep in a `width × height` photo: the detection whose box centre is nearest
/// the image centre (ties: the higher score, which comes first after NMS). See the module
/// documentation for why.
pub fn pick_central(dets: &[Detection], width: usize, height: usize) -> Option<&Detection> {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let dist = |d: &Detection| {
        let (bx, by) = ((d.bbox[0] + d.bbox[2]) / 2.0, (d.bbox[1] + d.bbox[3]) / 2.0);
        (bx - cx).powi(2) + (by - cy).powi(2)
    };
    dets.iter()
        .enumerate()
        .min_by(|(i, a), (j, b)| dist(a).total_cmp(&dist(b)).then(i.cmp(j)))
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(bbox: [f32; 4], score: f32) -> Detection {
        Detection {
            bbox,
            score,
            kps: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster() {
        let dets = vec![
            det([0., 0., 9., 9.], 0.8),
            det([1., 1., 10., 10.], 0.9), // IoU with the first (+1 areas): 81/119 = 0.68
            det([20., 20., 29., 29.], 0.7),
            det([0., 0., 9., 19.], 0.6),
            det([100., 100., 109., 109.], 0.95),
        ];
        let kept = nms(dets, 0.4);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        // 0.95 alone; 0.9 suppresses 0.8 (0.68) and 0.6 (IoU 90/210 = 0.43); 0.7 alone.
        assert_eq!(scores, vec![0.95, 0.9, 0.7]);
        // Just below the threshold survives.
        let kept = nms(
            vec![det([0., 0., 9., 9.], 0.9), det([0., 0., 9., 19.], 0.8)],
            0.5,
        );
        assert_eq!(kept.len(), 2, "IoU exactly 0.5 is not above 0.5");
        let kept = nms(
            vec![det([0., 0., 9., 9.], 0.9), det([0., 0., 9., 19.], 0.8)],
            0.49,
        );
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0., 0., 10., 10.], &[5., 0., 15., 10.]), 50.0 / 150.0);
        assert_eq!(iou(&[0., 0., 1., 1.], &[2., 2., 3., 3.]), 0.0);
        assert_eq!(iou_plus1(&[0., 0., 9., 9.], &[0., 0., 9., 9.]), 1.0);
    }

    #[test]
    fn central_face_wins_over_larger_and_more_confident() {
        let dets = vec![
            det([0., 0., 60., 60.], 0.99),
            det([40., 40., 60., 60.], 0.6),
        ];
        let d = pick_central(&dets, 100, 100).unwrap();
        assert_eq!(d.score, 0.6);
        assert!(pick_central(&[], 100, 100).is_none());
    }
}
