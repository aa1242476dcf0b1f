#!/usr/bin/env python3
"""Prints the quantization tables (markdown) from the reports bench/quant_rows.sh leaves:
accuracy per row, then the cost of each fine-tuning run. Rows not run yet are left out.

    python3 bench/quant_table.py out/bench-eval out/quant [out/quant-eq=equalized …]

Each row folder after the first may carry a label (DIR=LABEL), added to its rows' names.
"""
import json, sys
from pathlib import Path

teacher_dir = Path(sys.argv[1])
folders = [(Path(a.split("=", 1)[0]), a.split("=", 1)[1] if "=" in a else "") for a in sys.argv[2:]]
quant = folders[0][0]


def row(name, r, size):
    f = r["flip"]
    t = {round(x["far"], 9): x["tar"] * 100 for x in f["all_pairs"]["tar_at_far"]}
    fid = r.get("fidelity")
    fid = f"{fid['flip']['mean_cosine']:.4f} / {fid['flip']['p1_cosine']:.4f}" if fid else "1 / 1"
    return (f"| {name} | {size} | {f['ten_fold']['mean_accuracy'] * 100:.2f} ± {f['ten_fold']['std_accuracy'] * 100:.2f} "
            f"| {t[1e-4]:.2f} | {t[1e-5]:.2f} | {t[1e-6]:.2f} | {fid} |")


def mb(path):
    return f"{Path(path).stat().st_size / 1e6:.2f}"


print("| model | file MB | LFW 10-fold % (flip) | TAR % @ 1e-4 | 1e-5 | 1e-6 | fidelity mean / 1st pct |")
print("|---|---|---|---|---|---|---|")
teacher = teacher_dir / "trainer/report.json"
if teacher.exists():
    r = json.load(open(teacher))
    print(row("FP32 teacher (w600k_mbf.onnx)", r, mb(r["model_path"])))
ort = quant / "ort-int8-qdq.json"
if ort.exists():
    print(row("onnxruntime int8 QDQ per-channel (PTQ)", json.load(open(ort)), mb(quant / "w600k_mbf-int8-qdq.onnx")))

RUNS = [  # (folder, label)
    ("ekd-{b}", "EKD {b}, 1 epoch"),
    ("quantface-{b}", "QuantFace loss {b}, 1 epoch"),
    ("ekdce-{b}", "EKD + CE {b}, 1 epoch"),
    ("ekd-{b}-clean", "EKD {b}, 1 epoch, clean protocol"),
    ("quantface-{b}-clean", "QuantFace loss {b}, 1 epoch, clean protocol"),
    ("ekdce-{b}-clean", "EKD + CE {b}, 1 epoch, clean protocol"),
    ("ekd-{b}-f0.25", "EKD {b}, 25 % of the images"),
    ("ekd-{b}-f0.5", "EKD {b}, 50 % of the images"),
    ("ekd-{b}-f0.75", "EKD {b}, 75 % of the images"),
]
costs = []
for bits in ("w8a8", "w6a6", "w4a4"):
    for quant, tag in folders:
        tag = f" ({tag})" if tag else ""
        p = quant / f"eval-ptq-{bits}/report.json"
        if p.exists():
            print(row(f"ours{tag}, PTQ {bits}", json.load(open(p)), mb(quant / f"mbf-{bits}-ptq.efq")))
        for folder, label in RUNS:
            d = quant / folder.format(b=bits)
            if (d / "eval/report.json").exists():
                name = f"{label.format(b=bits)}{tag}"
                print(row(f"ours, {name}", json.load(open(d / "eval/report.json")), mb(d / "student.efq")))
                if (d / "training.json").exists():
                    costs.append((name, json.load(open(d / "training.json"))))

if costs:
    print()
    print("| fine-tuning run | images | steps | wall | images/s | peak RSS | parameters MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, t in costs:
        print(f"| {label} | {t['images']:,} | {t['steps']} | {t['seconds'] / 60:.1f} min | {t['images_per_second']:.1f} "
              f"| {t['peak_rss_mb'] / 1024:.2f} GiB | {t['size_mb']:.2f} |")
