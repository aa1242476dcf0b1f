#!/usr/bin/env python3
"""Prints the quantization table (markdown) from the reports bench/quant_rows.sh leaves.

    python3 bench/quant_table.py out/bench-eval out/quant
"""
import json, sys
from pathlib import Path

teacher_dir, quant = Path(sys.argv[1]), Path(sys.argv[2])


def row(name, r, size):
    f = r["flip"]
    t = {round(x["far"], 9): x["tar"] * 100 for x in f["all_pairs"]["tar_at_far"]}
    fid = r.get("fidelity")
    fid = f"{fid['flip']['mean_cosine']:.4f} / {fid['flip']['p1_cosine']:.4f}" if fid else "1 / 1"
    return (f"| {name} | {size} | {f['ten_fold']['mean_accuracy'] * 100:.2f} ± {f['ten_fold']['std_accuracy'] * 100:.2f} "
            f"| {t[1e-4]:.2f} | {t[1e-5]:.2f} | {t[1e-6]:.2f} | {fid} |")


def mb(path):
    return f"{Path(path).stat().st_size / 1e6:.2f}"


teacher_model = json.load(open(teacher_dir / "trainer/report.json"))["model_path"]
print("| model | file MB | LFW 10-fold % (flip) | TAR % @ 1e-4 | 1e-5 | 1e-6 | fidelity mean / 1st pct |")
print("|---|---|---|---|---|---|---|")
print(row("FP32 teacher (w600k_mbf.onnx)", json.load(open(teacher_dir / "trainer/report.json")), mb(teacher_model)))
ort = quant / "ort-int8-qdq.json"
if ort.exists():
    o = json.load(open(ort))
    print(row("onnxruntime int8 QDQ per-channel (PTQ)", o, mb(quant / "w600k_mbf-int8-qdq.onnx")))
for bits in ("w8a8", "w6a6", "w4a4"):
    p = quant / f"eval-ptq-{bits}/report.json"
    if p.exists():
        r = json.load(open(p))
        print(row(f"ours, PTQ {bits}", r, mb(quant / f"mbf-{bits}-ptq.efq")))
    e = quant / f"ekd-{bits}/eval/report.json"
    if e.exists():
        print(row(f"ours, EKD {bits}, 1 epoch, paper protocol", json.load(open(e)), mb(quant / f"ekd-{bits}/student.efq")))
