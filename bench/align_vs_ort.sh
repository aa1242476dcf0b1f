#!/usr/bin/env bash
# `trainer align` over a photo folder against onnxruntime doing decode + letterbox + SCRFD on the
# same photos (bench/ort_align.py), back to back in one run, both on --threads 2 (issue #33's
# "at most 2× onnxruntime's time").
# Usage: bash bench/align_vs_ort.sh [PHOTOS] [OUT]   (default $EFQ_LFW/raw250-sample, out/align-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
PHOTOS="${1:-$EFQ_LFW/raw250-sample}"
OUT="${2:-out/align-bench}"
cargo build --release -q -p efq-trainer --bin trainer
T="${TRAINER:-target/release/trainer}"
rm -rf "$OUT"
for round in 1 2; do
  "$EFQ_PYTHON" bench/ort_align.py --model "$EFQ_DETECTOR" --photos "$PHOTOS" --threads 2 > "$OUT.ort$round.json"
  start=$(date +%s.%N)
  RAYON_NUM_THREADS=2 "$T" align "$PHOTOS" "$OUT" --json > "$OUT.efq$round.json"
  end=$(date +%s.%N)
  python3 - "$OUT.ort$round.json" "$OUT.efq$round.json" "$start" "$end" <<'PY'
import json, sys
ort = json.load(open(sys.argv[1])); efq = json.load(open(sys.argv[2]))
wall = float(sys.argv[4]) - float(sys.argv[3])
print(f"| {efq['images']} photos | trainer align {efq['seconds']:.1f} s (process {wall:.1f} s, {efq['aligned']} aligned) "
      f"| onnxruntime {ort['onnxruntime']} decode+letterbox+SCRFD {ort['seconds']:.1f} s | ratio {efq['seconds'] / ort['seconds']:.2f}× |")
PY
  rm -rf "$OUT"
done
