#!/usr/bin/env python3
"""The peer of `trainer align` for bench/align_vs_ort.sh: decode every photo under a folder (PIL),
letterbox it to 640×640 as InsightFace does (bilinear resize of the longer side to 640, the rest
black), normalise and run SCRFD in onnxruntime (CPU, --threads intra-op threads), photo by photo.
No decoding of the heads, no NMS, no alignment, no writing: a lower bound on what a Python
aligner built on onnxruntime costs. Prints one JSON object.

    $EFQ_PYTHON bench/ort_align.py --model $EFQ_DETECTOR --photos $EFQ_LFW/raw250-sample --threads 2
"""
import argparse, json, os, time

import numpy as np
import onnxruntime as ort
from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--photos", required=True)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(a.photos) for f in fs
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    s = a.size
    start, cpu0 = time.perf_counter(), time.process_time()
    for path in files:
        img = Image.open(path).convert("RGB")
        w, h = img.size
        if h / w > 1:
            nh, nw = s, int(s / (h / w))
        else:
            nw, nh = s, int(s * (h / w))
        canvas = np.zeros((s, s, 3), dtype=np.uint8)
        canvas[:nh, :nw] = np.asarray(img.resize((nw, nh), Image.BILINEAR))
        x = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        sess.run(None, {name: x})
    print(json.dumps({"photos": len(files), "seconds": time.perf_counter() - start,
                      "cpu_seconds": time.process_time() - cpu0, "threads": a.threads,
                      "onnxruntime": ort.__version__}))


if __name__ == "__main__":
    main()
