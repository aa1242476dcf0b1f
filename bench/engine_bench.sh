#!/usr/bin/env bash
# Inference speed on this machine, every runtime in one run, one process at a time (two
# processes at once would share the 2 cores): the wgpu engine (lavapipe here, any GPU
# elsewhere), libtorch through tch, and onnxruntime (float32 and its own int8 QDQ), for the
# real MobileFaceNet teacher and a generated iresnet50, at batch 1, 32 and 256.
# Usage: bash bench/engine_bench.sh [OUT_DIR] [SECONDS]     (default out/bench-engine, 5)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
OUT="${1:-out/bench-engine}"
SECS="${2:-5}"
mkdir -p "$OUT"
cargo build --release -q -p efq-trainer --bin trainer
T=target/release/trainer
PY="$EFQ_PYTHON"

# Models: mbf (real), r50 (generated weights), each as float ONNX, our w8a8 PTQ, ORT int8 QDQ.
cp -f "$EFQ_TEACHER" "$OUT/mbf.onnx"
[ -f "$OUT/r50.onnx" ] || $T generate --arch iresnet50 --seed 1 --out "$OUT/r50.onnx"
for m in mbf r50; do
  [ -f "$OUT/$m-w8a8.efq" ] || $T quantize --model "$OUT/$m.onnx" --bits w8a8 --calib-images 64 --out "$OUT/$m-w8a8.efq"
  [ -f "$OUT/$m-int8-qdq.onnx" ] || "$PY" bench/ort_quantize_qdq.py --model "$OUT/$m.onnx" --calib-images 64 --out "$OUT/$m-int8-qdq.onnx"
done

# Batch sizes: R50 (12.6 GOP per image) at 256 on 2 CPU cores takes minutes per run for every
# runtime; R50_BATCHES=1,32,256 asks for it anyway.
MBF_B=1,32,256
R50_B="${R50_BATCHES:-1,32}"
row() { echo "== $*" >&2; "$@"; }
for m in mbf r50; do
  B=$MBF_B; [ $m = r50 ] && B=$R50_B
  row $T bench --backend wgpu --model "$OUT/$m-w8a8.efq" --batches $B --seconds "$SECS" --json > "$OUT/$m-wgpu-w8a8.json"
  [ $m = mbf ] && row $T bench --backend wgpu --model "$OUT/$m.onnx" --batches $B --seconds "$SECS" --json > "$OUT/$m-wgpu-fp32.json"
  row $T bench --backend tch --cpu --model "$OUT/$m.onnx" --batches $B --seconds "$SECS" --json > "$OUT/$m-tch-fp32.json"
  row "$PY" bench/ort_bench.py --model "$OUT/$m.onnx" --label "$m fp32" --batches $B --seconds "$SECS" --json "$OUT/$m-ort-fp32.json"
  row "$PY" bench/ort_bench.py --model "$OUT/$m-int8-qdq.onnx" --label "$m int8 QDQ" --batches $B --seconds "$SECS" --json "$OUT/$m-ort-int8.json"
done
"$PY" bench/bench_table.py "$OUT"/*.json | tee "$OUT/table.md"
