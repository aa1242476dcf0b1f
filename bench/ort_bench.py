#!/usr/bin/env python3
"""onnxruntime CPU throughput of an ONNX face model at several batch sizes: the peer row of
`trainer bench` (same random-input protocol: one warm-up, then timed runs for at least
--seconds and 3 runs; the median batch time gives images/s and latency).

    $EFQ_PYTHON bench/ort_bench.py --model $EFQ_TEACHER --batches 1,32,256 --json out/ort.json
"""
import argparse, json, resource, statistics, time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--label", default=None, help="row label (default: the file name)")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    rows = []
    rng = np.random.default_rng(1)
    for b in [int(x) for x in a.batches.split(",")]:
        x = rng.uniform(-1, 1, size=(b, 3, 112, 112)).astype(np.float32)
        sess.run(None, {inp.name: x})
        times, start = [], time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < a.seconds:
            t = time.perf_counter()
            sess.run(None, {inp.name: x})
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        rows.append({
            "model": a.label or a.model.rsplit("/", 1)[-1],
            "backend": f"onnxruntime {ort.__version__} CPU",
            "batch": b,
            "iterations": len(times),
            "images_per_second": b / med,
            "latency_ms": med * 1e3,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        })
        print(f"{rows[-1]['model']:<28} batch {b:>4}: {b / med:8.2f} images/s, {med * 1e3:9.1f} ms", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
