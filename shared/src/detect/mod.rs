//! Face detection with InsightFace's SCRFD (`scrfd_500m_bnkps.onnx`): ONNX import, the forward
//! pass on the CPU backend, letterbox preprocessing, anchor decoding, NMS and the rule that picks
//! one face per photo. [`crate::align`] turns the picked face's five keypoints into a 112×112
//! ArcFace crop.
//!
//! # The detector is a [`Graph`] with several outputs
//!
//! The importer builds an ordinary float [`Graph`] (Conv / Relu / Add / Upsample) **cut at the
//! nine head convolutions**, plus one [`Head`] record per head (kind, stride, value). Everything
//! after the head convolutions in the ONNX file is layout plumbing (`Transpose(0,2,3,1)` +
//! `Reshape` to `[N, H·W·A, k]`, and a `Sigmoid` on the score heads) that
//! [`Scrfd::heads_from_nchw`] applies; the `Shape/Gather/Unsqueeze/Concat/Slice/Cast` chains that
//! feed `Resize` its target size are traced symbolically at import and become an
//! [`Op::Upsample`](crate::graph::Op::Upsample) by the whole factor between the two tensors. Because it is a `Graph`, the
//! CPU backend (`cpu::forward_values`) and the wgpu engine
//! (`GpuModel::from_graph_with_outputs`) both run it, reading the nine head values back.
//!
//! The input size is fixed at import (default 640×640, InsightFace's `det_size`): it fixes the
//! head strides and the anchor grid, and must be a multiple of 32.
//!
//! # Decoding, exactly as InsightFace's `model_zoo/scrfd.py`
//!
//! - letterbox: resize keeping the aspect ratio into the top-left of a `size × size` canvas,
//!   zero padding, input `(p − 127.5) / 128`, RGB;
//! - anchors: `A` per location (2 here), centre `(x·s, y·s)` for stride `s`;
//! - box `(cx − l·s, cy − t·s, cx + r·s, cy + b·s)`, keypoint `i` `(cx + dx_i·s, cy + dy_i·s)`,
//!   divided by the letterbox scale;
//! - keep scores `≥ threshold` (0.5), sort by score, greedy NMS at IoU 0.4 with InsightFace's
//!   `+1` pixel areas.
//!
//! # One face per photo
//!
//! [`pick_central`] keeps the detection whose box centre is nearest the image centre. Photos
//! of a person (LFW and most identity collections) are framed on the subject; the largest or
//! most confident face is often a bystander in front of the camera. It is also the rule that
//! produced `aligned112` (see the data README), so re-aligned crops are comparable to it.

mod import;
mod letterbox;
mod nms;

use image::RgbImage;

use crate::Error;
use crate::graph::{Graph, SampleShape, ValueId};

pub use letterbox::{letterbox, letterbox_input, normalize, resize_bilinear};
pub use nms::{iou, iou_plus1, nms, pick_central};

/// What a head predicts per anchor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// One face probability (after the sigmoid).
    Score,
    /// Distances `(l, t, r, b)` from the anchor centre, in strides.
    BBox,
    /// Five keypoint offsets `(dx, dy)` from the anchor centre, in strides.
    Keypoints,
}

impl HeadKind {
    /// Values per anchor.
    pub fn width(self) -> usize {
        match self {
            HeadKind::Score => 1,
            HeadKind::BBox => 4,
            HeadKind::Keypoints => 10,
        }
    }
}

/// One of the detector's outputs: the head convolution that computes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    pub kind: HeadKind,
    pub stride: usize,
    /// The ONNX output name (`score_8`, `bbox_16`, …).
    pub name: String,
    /// The head convolution's value.
    pub value: usize,
}

/// An SCRFD detector imported from ONNX, cut at its head convolutions.
#[derive(Clone, Debug)]
pub struct Scrfd {
    pub name: String,
    /// `[H, W]` of the network input.
    pub input_size: [usize; 2],
    /// Anchors per location.
    pub num_anchors: usize,
    /// Heads in the ONNX output order (InsightFace's: scores, boxes, keypoints, each by stride).
    pub heads: Vec<Head>,
    /// The network up to the head convolutions, at `input_size`.
    pub graph: Graph,
    /// `[C, H, W]` of every value of `graph`.
    shapes: Vec<SampleShape>,
}

impl Scrfd {
    /// The graph values of the heads, in head order.
    pub fn head_values(&self) -> Vec<ValueId> {
        self.heads.iter().map(|h| h.value).collect()
    }

    /// Runs the network on one normalised CHW image of `input_size` on the CPU backend;
    /// returns every head's output as [`Scrfd::heads_from_nchw`] lays it out.
    pub fn forward(&self, chw: &[f32]) -> Result<Vec<Vec<f32>>, Error> {
        let [h, w] = self.input_size;
        if chw.len() != 3 * h * w {
            return Err(Error::Input(format!(
                "the detector expects a 3×{h}×{w} image ({} values), got {}",
                3 * h * w,
                chw.len()
            )));
        }
        let values = crate::cpu::forward_values(&self.graph, chw, 1, &self.head_values())?;
        Ok(self.heads_from_nchw(&values))
    }

    /// Runs the network on `n` normalised NCHW images of `input_size` at once on the CPU
    /// backend; returns each image's head values (NCHW, as [`Scrfd::detect_from_heads`]
    /// takes them).
    pub fn forward_batch(&self, nchw: &[f32], n: usize) -> Result<Vec<Vec<Vec<f32>>>, Error> {
        let [h, w] = self.input_size;
        if n == 0 || nchw.len() != n * 3 * h * w {
            return Err(Error::Input(format!(
                "the detector expects {n} 3×{h}×{w} images ({} values), got {}",
                n * 3 * h * w,
                nchw.len()
            )));
        }
        let values = crate::cpu::forward_values(&self.graph, nchw, n, &self.head_values())?;
        Ok(split_batch(&values, n))
    }

    /// The heads' NCHW values of one image (as `cpu::forward_values` or the engine return
    /// them) in ONNX output layout: `[H·W·A, k]` row-major (NHWC order), sigmoid on the scores.
    pub fn heads_from_nchw(&self, values: &[Vec<f32>]) -> Vec<Vec<f32>> {
        self.heads
            .iter()
            .zip(values)
            .map(|(hd, x)| {
                let s = &self.shapes[hd.value];
                let (c, p) = (s[0], s[1] * s[2]);
                let mut out = vec![0f32; c * p];
                for ch in 0..c {
                    for i in 0..p {
                        out[i * c + ch] = x[ch * p + i];
                    }
                }
                if hd.kind == HeadKind::Score {
                    out.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
                }
                out
            })
            .collect()
    }

    /// Decodes head outputs (as [`Scrfd::forward`] returns them) into detections in network
    /// input pixels divided by `det_scale` (original image pixels for a letterboxed input),
    /// before NMS, in head order.
    pub fn decode(
        &self,
        outs: &[Vec<f32>],
        det_scale: f32,
        score_threshold: f32,
    ) -> Vec<Detection> {
        let a = self.num_anchors;
        let mut dets = Vec::new();
        let find = |kind: HeadKind, stride: usize| {
            self.heads
                .iter()
                .position(|h| h.kind == kind && h.stride == stride)
                .expect("every stride has all three heads (checked at import)")
        };
        for (si, hd) in self.heads.iter().enumerate() {
            if hd.kind != HeadKind::Score {
                continue;
            }
            let s = hd.stride;
            let (scores, boxes, kps) = (
                &outs[si],
                &outs[find(HeadKind::BBox, s)],
                &outs[find(HeadKind::Keypoints, s)],
            );
            let width = self.input_size[1] / s;
            let sf = s as f32;
            for (i, &score) in scores.iter().enumerate() {
                if score < score_threshold {
                    continue;
                }
                let loc = i / a;
                let (cx, cy) = (((loc % width) * s) as f32, ((loc / width) * s) as f32);
                let d = &boxes[i * 4..][..4];
                let bbox = [
                    (cx - d[0] * sf) / det_scale,
                    (cy - d[1] * sf) / det_scale,
                    (cx + d[2] * sf) / det_scale,
                    (cy + d[3] * sf) / det_scale,
                ];
                let k = &kps[i * 10..][..10];
                let kps = std::array::from_fn(|j| {
                    [
                        (cx + k[2 * j] * sf) / det_scale,
                        (cy + k[2 * j + 1] * sf) / det_scale,
                    ]
                });
                dets.push(Detection { bbox, score, kps });
            }
        }
        dets
    }

    /// Detects faces in a letterboxed `input_size` image (see [`letterbox`]): forward, decode,
    /// sort by score, NMS. Coordinates are in the original photo (`/ det_scale`).
    pub fn detect_letterboxed(
        &self,
        canvas: &RgbImage,
        det_scale: f32,
        cfg: &DetectConfig,
    ) -> Result<Vec<Detection>, Error> {
        let outs = self.forward(&normalize(canvas))?;
        let dets = self.decode(&outs, det_scale, cfg.score_threshold);
        Ok(nms(dets, cfg.nms_iou))
    }

    /// Detections from the heads' NCHW values of one letterboxed image, computed elsewhere
    /// (the wgpu engine): layout, decode, NMS, as [`Scrfd::detect_letterboxed`].
    pub fn detect_from_heads(
        &self,
        values: &[Vec<f32>],
        det_scale: f32,
        cfg: &DetectConfig,
    ) -> Result<Vec<Detection>, Error> {
        let expected: Vec<usize> = self
            .heads
            .iter()
            .map(|h| self.shapes[h.value].iter().product())
            .collect();
        let got: Vec<usize> = values.iter().map(Vec::len).collect();
        if got != expected {
            return Err(Error::Input(format!(
                "head values of sizes {got:?}, the detector's heads have {expected:?}"
            )));
        }
        let outs = self.heads_from_nchw(values);
        Ok(nms(
            self.decode(&outs, det_scale, cfg.score_threshold),
            cfg.nms_iou,
        ))
    }

    /// Detects faces in a photo: letterbox to the input size, then as [`Scrfd::detect_letterboxed`].
    pub fn detect(&self, img: &RgbImage, cfg: &DetectConfig) -> Result<Vec<Detection>, Error> {
        if self.input_size[0] != self.input_size[1] {
            return Err(Error::Input(
                "letterboxing needs a square detector input".into(),
            ));
        }
        if img.width() == 0 || img.height() == 0 {
            return Err(Error::Input(format!(
                "a photo of {}×{} pixels has nothing to detect",
                img.width(),
                img.height()
            )));
        }
        let (x, scale) = letterbox_input(img, self.input_size[0]);
        let outs = self.forward(&x)?;
        Ok(nms(
            self.decode(&outs, scale, cfg.score_threshold),
            cfg.nms_iou,
        ))
    }
}

/// Per-output values of a batch of `n` images (each output's images one after the other, as
/// `cpu::forward_values` and the engine return them) regrouped per image.
pub fn split_batch(values: &[Vec<f32>], n: usize) -> Vec<Vec<Vec<f32>>> {
    (0..n)
        .map(|i| {
            values
                .iter()
                .map(|v| {
                    let per = v.len() / n;
                    v[i * per..][..per].to_vec()
                })
                .collect()
        })
        .collect()
}

/// One detected face, in original image pixels.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    /// `x1, y1, x2, y2`.
    pub bbox: [f32; 4],
    pub score: f32,
    /// Left eye, right eye, nose, left mouth corner, right mouth corner (as seen in the image).
    pub kps: [[f32; 2]; 5],
}

/// Thresholds and size of a detection run; the defaults are InsightFace's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectConfig {
    pub score_threshold: f32,
    pub nms_iou: f32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            score_threshold: 0.5,
            nms_iou: 0.4,
        }
    }
}
