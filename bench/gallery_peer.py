"""numpy's 1:N search on the gallery file gallery_bench wrote: load, then top 5 of 1 and of 100
probes (one matrix product, argpartition), median ms. Usage: python bench/gallery_peer.py PATH"""
import json
import resource
import sys
import time

import numpy as np


def load(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        meta = header["embeddings"]
        a, b = meta["data_offsets"]
        f.seek(8 + n + a)
        return np.frombuffer(f.read(b - a), dtype=np.float32).reshape(meta["shape"])


def median_ms(fn, runs):
    t = []
    for _ in range(runs):
        s = time.perf_counter()
        fn()
        t.append((time.perf_counter() - s) * 1e3)
    return sorted(t)[runs // 2]


def main():
    t = time.perf_counter()
    g = load(sys.argv[1])
    load_s = time.perf_counter() - t
    rng = np.random.default_rng(1)
    p = rng.uniform(-1, 1, (100, g.shape[1])).astype(np.float32)
    p /= np.linalg.norm(p, axis=1, keepdims=True)

    def top5(q):
        s = q @ g.T
        i = np.argpartition(-s, 4, axis=1)[:, :5]
        return np.take_along_axis(s, i, 1)

    one = median_ms(lambda: top5(p[:1]), 21)
    hundred = median_ms(lambda: top5(p), 7)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"faces": g.shape[0], "load_s": round(load_s, 3), "one_probe_ms": round(one, 3),
                      "hundred_probes_ms": round(hundred, 3), "peak_rss_mb": round(rss)}))


if __name__ == "__main__":
    main()
