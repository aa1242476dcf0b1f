"""The compression table (docs/RESULTS.md "Compression beyond quantization") from the reports
bench/compression_rows.sh writes. Usage: python3 bench/compression_table.py OUT_DIR [TEACHER_EVAL]
(TEACHER_EVAL: the teacher's eval folder, default out/eval-w600k_mbf). Sizes come from
`trainer inspect --json` of each row's model, latencies (one face, ms) from OUT_DIR/latency.json
(bench/compression_latency.sh) where it has the row's model."""
import json
import os
import subprocess
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "out/compress"
TEACHER_EVAL = sys.argv[2] if len(sys.argv) > 2 else "out/eval-w600k_mbf"
TRAINER = os.environ.get("TRAINER", "target/release/trainer")

ROWS = [
    ("teacher (float)", os.environ.get("EFQ_TEACHER", ""), TEACHER_EVAL, None),
    ("pruned sp02, no recovery", f"{OUT}/mbf-sp02.onnx", f"{OUT}/eval-sp02", None),
    ("pruned sp02 (Taylor), no recovery", f"{OUT}/mbf-sp02-taylor.onnx", f"{OUT}/eval-sp02-taylor", None),
    ("pruned sp02 (Taylor) + EKD, clean", f"{OUT}/sp02-taylor-ekd-clean/student.efq", f"{OUT}/sp02-taylor-ekd-clean/eval", f"{OUT}/sp02-taylor-ekd-clean/training.json"),
    ("pruned sp02 (Taylor) + QuantFace's loss, clean", f"{OUT}/sp02-taylor-quantface-clean/student.efq", f"{OUT}/sp02-taylor-quantface-clean/eval", f"{OUT}/sp02-taylor-quantface-clean/training.json"),
    ("pruned sp02 (Taylor) + EKD, paper", f"{OUT}/sp02-taylor-ekd/student.efq", f"{OUT}/sp02-taylor-ekd/eval", f"{OUT}/sp02-taylor-ekd/training.json"),
    ("pruned sp02 (Taylor) + QuantFace's loss, Adam 1e-4, clean", f"{OUT}/sp02-taylor-qf-adam4-clean/student.efq", f"{OUT}/sp02-taylor-qf-adam4-clean/eval", f"{OUT}/sp02-taylor-qf-adam4-clean/training.json"),
    ("pruned sp02 (Taylor) + QuantFace's loss, Adam 1e-4, clean, 5 epochs", f"{OUT}/sp02-taylor-qf-adam4-clean-e5/student.efq", f"{OUT}/sp02-taylor-qf-adam4-clean-e5/eval", f"{OUT}/sp02-taylor-qf-adam4-clean-e5/training.json"),
    ("pruned sp02 (Taylor) + QuantFace's loss, Adam 1e-4, paper", f"{OUT}/sp02-taylor-qf-adam4/student.efq", f"{OUT}/sp02-taylor-qf-adam4/eval", f"{OUT}/sp02-taylor-qf-adam4/training.json"),
    ("pruned sp02 (Taylor) + QuantFace's loss, Adam 1e-3, clean", f"{OUT}/sp02-taylor-qf-adam3-clean/student.efq", f"{OUT}/sp02-taylor-qf-adam3-clean/eval", f"{OUT}/sp02-taylor-qf-adam3-clean/training.json"),
    ("pruned sp02 (Taylor) + EKD, Adam 1e-4, clean", f"{OUT}/sp02-taylor-ekd-adam4-clean/student.efq", f"{OUT}/sp02-taylor-ekd-adam4-clean/eval", f"{OUT}/sp02-taylor-ekd-adam4-clean/training.json"),
    ("pruned sp02 (L2) + QuantFace's loss, Adam 1e-4, clean", f"{OUT}/sp02-qf-adam4-clean/student.efq", f"{OUT}/sp02-qf-adam4-clean/eval", f"{OUT}/sp02-qf-adam4-clean/training.json"),
    ("pruned sp02 (Taylor), recovered (Adam, clean, 5 epochs) + w8a8 PTQ", f"{OUT}/mbf-sp02-rec-w8a8.efq", f"{OUT}/eval-sp02-rec-w8a8", None),
    ("pruned sp02 (Taylor), recovered + w8a8 + EKD, clean", f"{OUT}/sp02-rec-w8a8-ekd-clean/student.efq", f"{OUT}/sp02-rec-w8a8-ekd-clean/eval", f"{OUT}/sp02-rec-w8a8-ekd-clean/training.json"),
    ("pruned sp02 + EKD, clean protocol", f"{OUT}/sp02-ekd-clean/student.efq", f"{OUT}/sp02-ekd-clean/eval", f"{OUT}/sp02-ekd-clean/training.json"),
    ("pruned sp02 + EKD, paper protocol", f"{OUT}/sp02-ekd/student.efq", f"{OUT}/sp02-ekd/eval", f"{OUT}/sp02-ekd/training.json"),
    ("pruned sp02 + QuantFace's loss, clean", f"{OUT}/sp02-quantface-clean/student.efq", f"{OUT}/sp02-quantface-clean/eval", f"{OUT}/sp02-quantface-clean/training.json"),
    ("pruned sp02 + w8a8 + EKD, clean", f"{OUT}/sp02-w8a8-ekd-clean/student.efq", f"{OUT}/sp02-w8a8-ekd-clean/eval", f"{OUT}/sp02-w8a8-ekd-clean/training.json"),
    ("half-width MobileFaceNet, EKD 1 epoch, clean", f"{OUT}/half-ekd-clean-e1/student.efq", f"{OUT}/half-ekd-clean-e1/eval", f"{OUT}/half-ekd-clean-e1/training.json"),
    ("half-width MobileFaceNet, EKD 5 epochs, clean", f"{OUT}/half-ekd-clean-e5/student.efq", f"{OUT}/half-ekd-clean-e5/eval", f"{OUT}/half-ekd-clean-e5/training.json"),
    ("half-width MobileFaceNet, EKD 1 epoch, paper", f"{OUT}/half-ekd-e1/student.efq", f"{OUT}/half-ekd-e1/eval", f"{OUT}/half-ekd-e1/training.json"),
    ("half-width MobileFaceNet, QuantFace's loss, Adam 1e-3, 5 epochs, clean", f"{OUT}/half-qf-adam3-clean-e5/student.efq", f"{OUT}/half-qf-adam3-clean-e5/eval", f"{OUT}/half-qf-adam3-clean-e5/training.json"),
    ("half-width MobileFaceNet, QuantFace's loss, Adam 1e-3, 5 epochs, paper", f"{OUT}/half-qf-adam3-e5/student.efq", f"{OUT}/half-qf-adam3-e5/eval", f"{OUT}/half-qf-adam3-e5/training.json"),
    ("half-width MobileFaceNet, EKD, Adam 1e-3, 5 epochs, clean", f"{OUT}/half-ekd-adam3-clean-e5/student.efq", f"{OUT}/half-ekd-adam3-clean-e5/eval", f"{OUT}/half-ekd-adam3-clean-e5/training.json"),
]
for extra in sys.argv[3:]:
    name, model, ev = extra.split("=", 2)[0], *extra.split("=", 2)[1].split(",")
    ROWS.append((name, model, ev, None))


# Latency per face (batch 1, ms) by model file, from bench/compression_latency.sh.
LATENCY = {}
if os.path.exists(f"{OUT}/latency.json"):
    for row in json.load(open(f"{OUT}/latency.json")):
        one = next(b for b in row["bench"] if b["batch"] == 1)
        LATENCY[(os.path.realpath(row["model"]), row["backend"])] = one["latency_ms"]


def latency(model, backend):
    ms = LATENCY.get((os.path.realpath(model), backend))
    return "—" if ms is None else f"{ms:.1f}"


def tar(report, far):
    for t in report["flip"]["all_pairs"]["tar_at_far"]:
        if abs(t["far"] - far) < far * 1e-6:
            return 100 * t["tar"]


print("| model | parameters (M) | GMAC | file MB | LFW 10-fold % | TAR % @ 1e-4 | @ 1e-5 | fidelity | epoch | CPU ms | engine ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name, model, ev, training in ROWS:
    rep = os.path.join(ev, "report.json")
    if not (os.path.exists(model) and os.path.exists(rep)):
        continue
    info = json.loads(subprocess.run([TRAINER, "inspect", model, "--json"], capture_output=True, text=True, check=True).stdout)
    r = json.load(open(rep))
    fid = ((r.get("fidelity") or {}).get("flip") or {}).get("mean_cosine")
    epoch = "—"
    if training and os.path.exists(training):
        t = json.load(open(training))
        epochs = t["config"].get("epochs", 1)
        # A record from before resumes were accounted for shows a finished run resumed
        # again as 0 images: no time to report.
        if t["images"] > 0:
            epoch = f"{t['seconds'] / epochs:.0f} s"
    print(f"| {name} | {info['parameters'] / 1e6:.2f} | {info['gmac']:.3f} | {info['file_bytes'] / 1e6:.2f} | "
          f"{100 * r['flip']['ten_fold']['mean_accuracy']:.2f} | {tar(r, 1e-4):.2f} | {tar(r, 1e-5):.2f} | "
          f"{'—' if fid is None else f'{fid:.4f}'} | {epoch} | {latency(model, 'cpu')} | {latency(model, 'wgpu')} |")
