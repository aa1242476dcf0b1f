#!/usr/bin/env bash
# Rows of the quantization table on this machine's CPU, one after the other (two libtorch
# processes at once oversubscribe the cores and run ~10x slower):
#   PTQ w6a6 → EKD w6a6 (one epoch, paper protocol) → PTQ w8a8, w4a4 → onnxruntime int8 QDQ.
# Usage: bash bench/quant_rows.sh [OUT_DIR]   (default out/quant)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
OUT="${1:-out/quant}"
mkdir -p "$OUT"
cargo build --release -q -p efq-trainer --bin trainer
T=target/release/trainer
ptq() {
  $T quantize --bits "$1" --out "$OUT/mbf-$1-ptq.efq"
  $T eval --model "$OUT/mbf-$1-ptq.efq" --teacher "$EFQ_TEACHER" --out "$OUT/eval-ptq-$1" | tee "$OUT/eval-ptq-$1.txt"
}
ptq w6a6
/usr/bin/time -v $T finetune --student-init "$OUT/mbf-w6a6-ptq.efq" --loss ekd --protocol paper \
  --out-dir "$OUT/ekd-w6a6" 2> "$OUT/ekd-w6a6.time" | tee "$OUT/ekd-w6a6.txt"
ptq w8a8
ptq w4a4
"$EFQ_PYTHON" bench/ort_quantize_qdq.py --out "$OUT/w600k_mbf-int8-qdq.onnx"
"$EFQ_PYTHON" bench/ort_lfw.py --model "$OUT/w600k_mbf-int8-qdq.onnx" --teacher "$EFQ_TEACHER" --batch 16 \
  --json "$OUT/ort-int8-qdq.json" 2>/dev/null | tee "$OUT/ort-int8-qdq.txt"
