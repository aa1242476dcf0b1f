#!/usr/bin/env bash
# Issue #3's table of losses and protocols: at w8a8, w6a6 and w4a4, the width's best
# post-training start (docs/RESULTS.md) and one epoch of each loss from it — EKD, QuantFace's,
# EKD + CE — under the paper's protocol (all 13,233 aligned112 crops) and the clean one (only
# people who appear nowhere in pairs.txt), then onnxruntime's int8 row. Each row is a
# bench/quant_rows.sh row, so the queue is resumable in the same way; the clean rows come
# first because they are short (about 1,550 images against 13,233).
# Usage: bash bench/loss_matrix.sh [OUT_DIR]   (default out/matrix)
#   WIDTHS="w4a4"  for some widths only; table: python3 bench/quant_table.py out/bench-eval OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/matrix}"
WIDTHS="${WIDTHS:-w8a8 w6a6 w4a4}"
declare -A START=(
  [w8a8]=""
  [w6a6]="--reconstruct 200 --reconstruct-blocks 200"
  [w4a4]="--calib-images 2048 --reconstruct 200 --reconstruct-blocks 600 --reconstruct-drop 0.5 --reconstruct-storage f16"
)
for b in $WIDTHS; do
  QUANTIZE_FLAGS="${START[$b]}" ROWS="ptq-$b" bash bench/quant_rows.sh "$OUT"
done
rows=""
for protocol in -clean ""; do
  for b in $WIDTHS; do
    for loss in ekd quantface ekdce; do rows+=" $loss-$b$protocol"; done
  done
done
ROWS="$rows" bash bench/quant_rows.sh "$OUT"
ROWS="ort-int8 teacher" bash bench/quant_rows.sh "$OUT"
