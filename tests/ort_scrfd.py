"""SCRFD detection with onnxruntime, decoded exactly as InsightFace's model_zoo/scrfd.py.

The peer that tests/tests/detect_agreement.rs checks the Rust CPU backend against. It reads
letterboxed canvases written by the Rust side (PNG, lossless, so both sides see the same
pixels) and each one's letterbox scale, and writes JSON with every detection above
--threshold after NMS, plus per-image onnxruntime latency.

    python tests/ort_scrfd.py --model scrfd_500m_bnkps.onnx --manifest in.json --out out.json

manifest: [{"png": path, "det_scale": float}, ...]
"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort
from PIL import Image


def distance2bbox(points, distance):
    x1 = points[:, 0] - distance[:, 0]
    y1 = points[:, 1] - distance[:, 1]
    x2 = points[:, 0] + distance[:, 2]
    y2 = points[:, 1] + distance[:, 3]
    return np.stack([x1, y1, x2, y2], axis=-1)


def distance2kps(points, distance):
    preds = []
    for i in range(0, distance.shape[1], 2):
        px = points[:, i % 2] + distance[:, i]
        py = points[:, i % 2 + 1] + distance[:, i + 1]
        preds.append(px)
        preds.append(py)
    return np.stack(preds, axis=-1)


def nms(dets, thresh):
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        inds = np.where(ovr <= thresh)[0]
        order = order[inds + 1]
    return keep


def detect(sess, canvas, det_scale, threshold, nms_thresh):
    blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
    t0 = time.perf_counter()
    outs = sess.run(None, {sess.get_inputs()[0].name: blob})
    dt = time.perf_counter() - t0
    h, w = blob.shape[2], blob.shape[3]
    fmc, num_anchors = 3, 2
    scores_list, bboxes_list, kpss_list = [], [], []
    for idx, stride in enumerate([8, 16, 32]):
        scores = outs[idx][0]
        bbox_preds = outs[idx + fmc][0] * stride
        kps_preds = outs[idx + fmc * 2][0] * stride
        height, width = h // stride, w // stride
        centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
        centers = (centers * stride).reshape((-1, 2))
        centers = np.stack([centers] * num_anchors, axis=1).reshape((-1, 2))
        pos = np.where(scores >= threshold)[0]
        bboxes = distance2bbox(centers, bbox_preds)
        scores_list.append(scores[pos])
        bboxes_list.append(bboxes[pos])
        kpss = distance2kps(centers, kps_preds).reshape((-1, 5, 2))
        kpss_list.append(kpss[pos])
    scores = np.vstack(scores_list)
    order = scores.ravel().argsort()[::-1]
    bboxes = np.vstack(bboxes_list) / det_scale
    kpss = np.vstack(kpss_list) / det_scale
    pre_det = np.hstack((bboxes, scores)).astype(np.float32, copy=False)[order, :]
    keep = nms(pre_det, nms_thresh)
    det = pre_det[keep, :]
    kpss = kpss[order][keep]
    faces = [
        {"bbox": [float(v) for v in d[:4]], "score": float(d[4]), "kps": k.tolist()}
        for d, k in zip(det, kpss)
    ]
    return faces, dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--nms", type=float, default=0.4)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (latency)")
    args = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    items = json.load(open(args.manifest))
    results, times = [], []
    for i, it in enumerate(items):
        canvas = np.asarray(Image.open(it["png"]).convert("RGB"))
        if i == 0:  # warm-up, not timed
            detect(sess, canvas, it["det_scale"], args.threshold, args.nms)
        faces, dt = detect(sess, canvas, it["det_scale"], args.threshold, args.nms)
        results.append(faces)
        times.append(dt)
    json.dump(
        {
            "faces": results,
            "latency_ms": {
                "median": float(np.median(times) * 1e3),
                "mean": float(np.mean(times) * 1e3),
                "threads": args.threads,
                "onnxruntime": ort.__version__,
            },
        },
        open(args.out, "w"),
    )


if __name__ == "__main__":
    main()
