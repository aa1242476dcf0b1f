#!/usr/bin/env bash
# One run, one machine: `trainer eval` (libtorch) and onnxruntime on the same teacher, the same
# LFW crops and the same protocols, one after the other so neither competes for the cores.
# Usage: bash bench/eval_vs_onnxruntime.sh [OUT_DIR]   (default out/bench-eval)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
OUT="${1:-out/bench-eval}"
mkdir -p "$OUT"
cargo build --release -q -p efq-trainer --bin trainer
target/release/trainer eval --model "$EFQ_TEACHER" --lfw "$EFQ_LFW" --out "$OUT/trainer" | tee "$OUT/trainer.txt"
"$EFQ_PYTHON" bench/ort_lfw.py --model "$EFQ_TEACHER" --lfw "$EFQ_LFW" --batch 16 --json "$OUT/onnxruntime.json" 2>/dev/null | tee "$OUT/onnxruntime.txt"
# Throughput against batch size on the first 1,280 crops (both runtimes, same images).
echo "| batch | trainer eval (libtorch) images/s | onnxruntime images/s |" | tee "$OUT/sweep.md"
echo "|---|---|---|" | tee -a "$OUT/sweep.md"
for b in 1 4 16 64; do
  t=$(target/release/trainer eval --limit 1280 --batch $b --json --out "$OUT/sweep-$b" 2>/dev/null | "$EFQ_PYTHON" -c 'import json,sys; print(round(json.load(sys.stdin)["images_per_second"], 1))')
  o=$("$EFQ_PYTHON" bench/ort_lfw.py --model "$EFQ_TEACHER" --lfw "$EFQ_LFW" --limit 1280 --batch $b 2>/dev/null | "$EFQ_PYTHON" -c 'import json,sys; print(round(json.load(sys.stdin)["images_per_second"], 1))')
  echo "| $b | $t | $o |" | tee -a "$OUT/sweep.md"
done
"$EFQ_PYTHON" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
t = json.load(open(f"{out}/trainer/report.json")); o = json.load(open(f"{out}/onnxruntime.json"))
print("\n| run | images/s (flip: 2 forwards each) | 10-fold flip % | 10-fold no flip % | TAR@1e-3 | 1e-4 | 1e-5 | 1e-6 (flip, all pairs) |")
print("|---|---|---|---|---|---|---|---|")
for name, r in (("trainer eval (libtorch 2.11 CPU)", t), (o["runtime"] + " CPU", o)):
    f, n = r["flip"], r["no_flip"]
    tars = " | ".join(f"{x['tar']*100:.2f}" for x in f["all_pairs"]["tar_at_far"][1:])
    print(f"| {name} | {r['images_per_second']:.1f} | {f['ten_fold']['mean_accuracy']*100:.2f} ± {f['ten_fold']['std_accuracy']*100:.2f} | {n['ten_fold']['mean_accuracy']*100:.2f} ± {n['ten_fold']['std_accuracy']*100:.2f} | {tars} |")
for v in ("flip", "no_flip"):
    d = max(abs(a["tar"] - b["tar"]) for a, b in zip(t[v]["all_pairs"]["tar_at_far"], o[v]["all_pairs"]["tar_at_far"]))
    a = abs(t[v]["ten_fold"]["mean_accuracy"] - o[v]["ten_fold"]["mean_accuracy"])
    print(f"{v}: |Δ 10-fold| = {a*100:.3f} pp, max |Δ TAR| over FAR 1e-2..1e-6 = {d*100:.3f} pp")
PY
