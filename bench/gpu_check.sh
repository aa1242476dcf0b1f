#!/usr/bin/env bash
# The issue-#3 GPU measurements, for a session that is lent a CUDA machine (an H200) through the
# `device` tool, in one call. The machine gets only the working tree and carried folders, no
# network and no ../shared, but has PyTorch 2.11.0+cu130 (/opt/torch/.venv) — the same build as
# the libtorch here — so the trainer built here runs there against its libraries.
#
#   bash bench/gpu_check.sh prepare          # here: .gpu/ = stripped trainer, teacher, ~1,600 crops
#   device run: command "bash bench/gpu_check.sh run", carry [".gpu"], timeout_s 540
#
# `run` times fine-tuning steps of mbf (the real teacher) and of a generated iresnet50 on CUDA over
# the carried crops (one pass each, checkpoints off) and writes $OUT/gpu-*.json and a log.
# The epoch estimate for 13,233 images is images/s scaled, printed as such.
# Knobs (a CPU dry run here: TORCH_LIB=$LIBTORCH/lib MODELS=mbf STEPS=2 BATCH=8 OUT=/tmp/g):
#   MODELS="mbf r50", BITS="w8a8 w6a6", STEPS (stop after, default: the whole pass), BATCH (64).
set -euo pipefail
cd "$(dirname "$0")/.."
G=.gpu
case "${1:-}" in
  prepare)
    . scripts/setup.sh
    set -euo pipefail
    cargo build --release -q -p efq-trainer --bin trainer
    rm -rf "$G" && mkdir -p "$G/lfw/aligned112"
    strip -o "$G/trainer" target/release/trainer
    cp "$EFQ_TEACHER" "$G/w600k_mbf.onnx"
    cp "$EFQ_LFW/pairs.txt" "$G/lfw/"
    # Whole identity folders in name order until ~1,600 images (~15 MB; the call carries 64 MiB).
    n=0
    for d in "$EFQ_LFW"/aligned112/*/; do
      cp -r "$d" "$G/lfw/aligned112/"
      n=$((n + $(ls "$d" | wc -l)))
      [ "$n" -ge 1600 ] && break
    done
    du -sh "$G"; echo "$n crops"
    ;;
  run)
    OUT="${OUT:-out/gpu}"; mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu-log.txt") 2>&1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    TL="${TORCH_LIB:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}"
    export LD_LIBRARY_PATH="$TL:${LD_LIBRARY_PATH:-}"
    # Built against the CPU libraries, the binary does not name libtorch_cuda: preload it so that
    # its CUDA kernels register.
    [ -f "$TL/libtorch_cuda.so" ] && export LD_PRELOAD="$TL/libtorch_cuda.so"
    T="$G/trainer"
    stop=(); [ -n "${STEPS:-}" ] && stop=(--stop-after "$STEPS")
    for m in ${MODELS:-mbf r50}; do
      teacher="$G/w600k_mbf.onnx"
      if [ "$m" = r50 ]; then
        teacher=/tmp/r50.onnx
        [ -f $teacher ] || $T generate --arch iresnet50 --out $teacher
      fi
      for bits in ${BITS:-w8a8 w6a6}; do
        d=/tmp/ft-$m-$bits; rm -rf "$d"
        /usr/bin/time -v "$T" finetune --teacher "$teacher" --bits "$bits" --lfw "$G/lfw" \
          --train-crops aligned112 --out-dir "$d" --no-eval --checkpoint-every 100000 \
          --batch "${BATCH:-64}" "${stop[@]}" \
          2> >(grep -E "Maximum resident|Elapsed|error|Error" >&2)
        cp "$d/training.json" "$OUT/gpu-$m-$bits.json"
        python3 - "$d/training.json" "$m $bits" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
ips = t["images_per_second"]
print(f"{sys.argv[2]}: {t['images']} images in {t['seconds']:.1f} s = {ips:.1f} images/s "
      f"(incl. warm-up) -> 13,233-image epoch ~ {13233 / ips:.0f} s; device {t['device']}; "
      f"host peak RSS {t['peak_rss_mb']:.0f} MB")
PY
      done
    done
    ;;
  *) echo "usage: bash bench/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
