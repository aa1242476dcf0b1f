#!/usr/bin/env bash
# Latency of the compression table's models (docs/RESULTS.md "Compression beyond
# quantization"): one face (batch 1) and a batch of 32, on the CPU backend and on the wgpu
# engine (lavapipe where there is no GPU), one process at a time.
# Usage: bash bench/compression_latency.sh [OUT_DIR]   (default out/compress; writes latency.json there)
#   Needs bench/compression_rows.sh's models; the quantized baselines come from
#   `trainer quantize --bits w8a8|w6a6` (paths below, override with W8A8=… W6A6=…).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
OUT="${1:-out/compress}"
T="${TRAINER:-target/release/trainer}"
W8A8="${W8A8:-out/calib/mbf-w8a8-clean.efq}"
W6A6="${W6A6:-out/calib/mbf-w6a6-clean.efq}"
MODELS=(
  "teacher=$EFQ_TEACHER"
  "w8a8=$W8A8"
  "w6a6=$W6A6"
  "sp02=$OUT/sp02-taylor-qf-adam4-clean-e5/student.efq"
  "sp02-w8a8=$OUT/mbf-sp02-rec-w8a8.efq"
  "half=$OUT/half-qf-adam3-clean-e5/student.efq"
)
rows=()
for m in "${MODELS[@]}"; do
  name="${m%%=*}" model="${m#*=}"
  [ -f "$model" ] || { echo "skipping $name: $model missing" >&2; continue; }
  for backend in cpu wgpu; do
    batches=1,32
    [ "$backend" = wgpu ] && batches=1
    echo "$name on $backend …" >&2
    json=$($T bench --model "$model" --backend "$backend" --batches "$batches" --seconds 3 --json)
    rows+=("{\"name\": \"$name\", \"model\": \"$model\", \"backend\": \"$backend\", \"bench\": $json}")
  done
done
(IFS=,; echo "[${rows[*]}]") > "$OUT/latency.json"
echo "wrote $OUT/latency.json" >&2
