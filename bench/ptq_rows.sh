#!/usr/bin/env bash
# Post-training-quantization rows of the results table: our PTQ at w8a8, w6a6, w4a4 and
# onnxruntime's own int8 QDQ (per channel), each evaluated on LFW with fidelity to the teacher.
# Usage: bash bench/ptq_rows.sh [OUT_DIR]   (default out/ptq)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
OUT="${1:-out/ptq}"
mkdir -p "$OUT"
cargo build --release -q -p efq-trainer --bin trainer
for bits in w8a8 w6a6 w4a4; do
  target/release/trainer quantize --bits "$bits" --out "$OUT/mbf-$bits-ptq.efq"
  target/release/trainer eval --model "$OUT/mbf-$bits-ptq.efq" --teacher "$EFQ_TEACHER" --out "$OUT/eval-$bits" | tee "$OUT/eval-$bits.txt"
done
"$EFQ_PYTHON" bench/ort_quantize_qdq.py --out "$OUT/w600k_mbf-int8-qdq.onnx"
"$EFQ_PYTHON" bench/ort_lfw.py --model "$OUT/w600k_mbf-int8-qdq.onnx" --teacher "$EFQ_TEACHER" --batch 16 \
  --json "$OUT/ort-int8-qdq.json" 2>/dev/null | tee "$OUT/ort-int8-qdq.txt"
