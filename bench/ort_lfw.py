#!/usr/bin/env python3
"""onnxruntime as the peer: the same LFW protocols as `trainer eval`, measured independently.

    $EFQ_PYTHON bench/ort_lfw.py --model $EFQ_TEACHER --lfw ../shared/data/lfw --json out/ort.json
    $EFQ_PYTHON bench/ort_lfw.py --dump 8 --dump-out emb.json   # embeddings of the first 8 crops

Protocols (identical definitions to the Rust side, written independently here):
- 10-fold: flip embedding = emb(x) + emb(hflip(x)), L2-normalised; squared L2 distance;
  thresholds i*0.01 for i in 0..=400 (float32); best threshold on nine folds (first max) applied
  to the tenth; mean and population std.
- all pairs: cosine of normalised embeddings over every pair i<j of the crop folder; impostor
  scores sorted descending, threshold for FAR f = score at index floor(f*N); TAR = genuine > t.
"""
import argparse, json, os, sys, time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image


def scan(root: Path):
    images, labels = [], []
    for k, d in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for f in files:
            images.append(f.relative_to(root).as_posix())
            labels.append(k)
    return images, np.array(labels)


def cpu():
    """The CPU model and its int8 dot-product extensions. onnxruntime's int8 kernels take a
    different path on x86 without VNNI (16-bit intermediate sums that can saturate), so an int8
    row measured on one machine need not repeat on another: the report says which it was."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": "unknown", "int8_dot": []}
    # First CPU's fields only: every core of one machine reports the same model and flags.
    fields = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in info.split("\n\n")[0].splitlines() if ":" in l)}
    flags = fields.get("flags", "").split()
    return {"model": fields.get("model name", "unknown"), "int8_dot": [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags]}


def load(root: Path, rel: str):
    a = np.asarray(Image.open(root / rel).convert("RGB"), dtype=np.float32)
    return ((a - 127.5) * np.float32(1 / 127.5)).transpose(2, 0, 1)


def embed(sess, root, images, batch):
    name = sess.get_inputs()[0].name
    plain, flip = [], []
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        x = np.stack([load(root, p) for p in images[i:i + batch]])
        a = sess.run(None, {name: x})[0]
        b = sess.run(None, {name: np.ascontiguousarray(x[:, :, :, ::-1])})[0]
        plain.append(a)
        flip.append(a + b)
        print(f"\r{min(i + batch, len(images))}/{len(images)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    secs = time.perf_counter() - t0
    norm = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)
    return norm(np.concatenate(plain)), norm(np.concatenate(flip)), len(images) / secs


def parse_pairs(path):
    lines = Path(path).read_text().strip().splitlines()
    out = []
    for ln in lines[1:]:
        f = ln.split()
        if len(f) == 3:
            out.append((f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}/{f[0]}_{int(f[2]):04d}.jpg", True))
        else:
            out.append((f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}/{f[2]}_{int(f[3]):04d}.jpg", False))
    return out


def ten_fold(dist, same):
    thr = np.arange(401, dtype=np.float32) * np.float32(0.01)
    n = len(dist)
    folds = np.array_split(np.arange(n), 10)
    pred = dist[None, :] < thr[:, None]
    correct = pred == same[None, :]
    accs = []
    for f in folds:
        train = np.ones(n, bool)
        train[f] = False
        best = int(np.argmax(correct[:, train].sum(axis=1)))
        accs.append(correct[best, f].mean())
    return float(np.mean(accs)), float(np.std(accs))


def all_pairs(emb, labels, fars):
    s = emb @ emb.T
    iu = np.triu_indices(len(labels), 1)
    scores = s[iu]
    same = labels[iu[0]] == labels[iu[1]]
    gen, imp = scores[same], scores[~same]
    n = len(imp)
    ks = sorted({min(int(np.floor(f * n)), n - 1) for f in fars})
    # descending order statistic k = ascending index n-1-k
    part = np.partition(imp, [n - 1 - k for k in ks])
    thr = {k: part[n - 1 - k] for k in ks}
    res = []
    for f in fars:
        t = thr[min(int(np.floor(f * n)), n - 1)]
        res.append({"far": f, "threshold": float(t), "tar": float((gen > t).mean())})
    return {"n_genuine": int(len(gen)), "n_impostor": int(n), "tar_at_far": res}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("EFQ_TEACHER"))
    ap.add_argument("--lfw", default=os.environ.get("EFQ_LFW", "../shared/data/lfw"))
    ap.add_argument("--crops", default="insightface112")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json")
    ap.add_argument("--teacher", help="FP32 model to measure fidelity against (mean / 1st-percentile cosine)")
    ap.add_argument("--limit", type=int, help="only the first N crops: a throughput measurement, no metrics")
    ap.add_argument("--dump", type=int, help="only embed the first N crops and write them to --dump-out")
    ap.add_argument("--dump-out")
    ap.add_argument("--input-raw", help="with --dump: little-endian f32 NCHW input to use instead of decoding")
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.log_severity_level = 3  # the model declares batch 1 on its output; ORT warns on every batch
    sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    root = Path(a.lfw) / a.crops
    images, labels = scan(root)
    if a.dump:
        images = images[: a.dump]
        x = np.stack([load(root, p) for p in images])
        if a.input_raw:  # the caller's own decoded pixels: compares networks, not JPEG decoders
            x = np.fromfile(a.input_raw, dtype="<f4").reshape(x.shape)
        raw = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        Path(a.dump_out).write_text(json.dumps({"images": images, "raw": raw.tolist()}))
        return
    if a.limit:
        _, _, ips = embed(sess, root, images[: a.limit], a.batch)
        print(json.dumps({"runtime": f"onnxruntime {ort.__version__}", "batch": a.batch, "cpu": cpu(), "images": a.limit, "images_per_second": ips}))
        return
    plain, flip, ips = embed(sess, root, images, a.batch)
    index = {p: i for i, p in enumerate(images)}
    pairs = parse_pairs(Path(a.lfw) / "pairs.txt")
    ia = np.array([index[p[0]] for p in pairs]); ib = np.array([index[p[1]] for p in pairs])
    same = np.array([p[2] for p in pairs])
    fars = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    report = {"runtime": f"onnxruntime {ort.__version__}", "threads": a.threads, "batch": a.batch,
              "cpu": cpu(), "images": len(images), "images_per_second": ips}
    for name, e in (("flip", flip), ("no_flip", plain)):
        d = ((e[ia] - e[ib]) ** 2).sum(axis=1).astype(np.float32)
        m, s = ten_fold(d, same)
        report[name] = {"ten_fold": {"mean_accuracy": m, "std_accuracy": s}, "all_pairs": all_pairs(e, labels, fars)}
    if a.teacher:
        ts = ort.InferenceSession(a.teacher, so, providers=["CPUExecutionProvider"])
        tplain, tflip, _ = embed(ts, root, images, a.batch)
        def fid(s, t):
            c = np.sort((s * t).sum(axis=1).astype(np.float64))
            return {"mean_cosine": float(c.mean()), "p1_cosine": float(c[(len(c) - 1) // 100]), "min_cosine": float(c[0])}
        report["fidelity"] = {"flip": fid(flip, tflip), "no_flip": fid(plain, tplain)}
        print("fidelity", json.dumps(report["fidelity"]))
    c = report["cpu"]
    print(f"onnxruntime {ort.__version__}, {a.threads} threads, batch {a.batch}: {ips:.1f} images/s "
          f"({c['model']}; int8 dot: {', '.join(c['int8_dot']) or 'none'})")
    for name in ("flip", "no_flip"):
        r = report[name]
        t = " | ".join(f"{x['tar'] * 100:.2f}" for x in r["all_pairs"]["tar_at_far"])
        print(f"{name:8} 10-fold {r['ten_fold']['mean_accuracy'] * 100:.2f} ± {r['ten_fold']['std_accuracy'] * 100:.2f} | TAR@1e-2..1e-6: {t}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
