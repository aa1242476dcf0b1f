#!/usr/bin/env python3
"""onnxruntime CPU latency of one SCRFD detection on given letterboxed inputs: the peer column of
`cargo run --release -p efq-shared --example detect_bench`, which writes the inputs (N × 3 × S × S
float32, already normalised) and calls this script in the same run. Prints one JSON object.

    $EFQ_PYTHON bench/ort_detect_bench.py --model $EFQ_DETECTOR --input x.f32 --size 640 --threads 2
"""
import argparse, json, statistics, time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True, help="raw little-endian float32, N×3×size×size")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads")
    ap.add_argument("--rounds", type=int, default=5, help="timed passes over all the inputs")
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.fromfile(a.input, dtype="<f4").reshape(-1, 1, 3, a.size, a.size)
    sess.run(None, {name: x[0]})  # warm-up
    times = []
    cpu0 = time.process_time()
    for _ in range(a.rounds):
        for img in x:
            t = time.perf_counter()
            sess.run(None, {name: img})
            times.append(time.perf_counter() - t)
    print(json.dumps({
        "backend": f"onnxruntime {ort.__version__} CPU",
        "threads": a.threads,
        "runs": len(times),
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        # CPU time of the whole process per run (all threads, spin-waits included): on a
        # machine shared with other work it moves less than the wall-clock latency.
        "cpu_ms_per_run": (time.process_time() - cpu0) / len(times) * 1e3,
    }))


if __name__ == "__main__":
    main()
