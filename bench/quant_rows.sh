#!/usr/bin/env bash
# Every row of the quantization table (issue #3) on this machine's CPU, one run after the other
# (two libtorch processes at once oversubscribe the cores). Resumable: a row whose report exists
# is skipped, and an interrupted fine-tuning continues from its checkpoint, so the queue can be
# stopped and started again. Rows, most informative first:
#   PTQ w6a6, w8a8, w4a4 → onnxruntime int8 QDQ → EKD w6a6 → QuantFace w6a6 → EKD w6a6 on 25 %
#   → EKD+CE w6a6 → EKD w8a8 → EKD w4a4 → EKD w6a6 clean protocol → EKD w6a6 on 50/75 %
#   → FP32 teacher.
# Usage: bash bench/quant_rows.sh [OUT_DIR]   (default out/quant); table: bench/quant_table.py
#   ROWS="ptq-w8a8 ekd-w6a6 …"  runs only those rows, in that order (names as the folders:
#   ekd-, ekdce- or quantface- and a width, then -clean for the clean protocol or -fF for a
#   fraction of the images; ort-int8; teacher); bench/loss_matrix.sh runs the whole table of
#   losses and protocols;
#   QUANTIZE_FLAGS="--no-equalize"  passes options to `trainer quantize` (the PTQ students
#   every fine-tuning row starts from, calibrated on every aligned112 crop as the paper's
#   protocol trains on them: `--calib-people all`); FINETUNE_FLAGS="--lr 0.01"  to every
#   `trainer finetune`.
#   QUANTIZE_FLAGS="--reconstruct 200" makes the PTQ starts layer-wise reconstructed, and
#   "--reconstruct 200 --reconstruct-blocks 200" then block-wise (the w6a6 start of
#   bench/loss_matrix.sh, which names each width's); activation grids below 8 bits are split by
#   default since 608fc43 (2026-11-30): QUANTIZE_FLAGS="--act-grid symmetric" repeats the earlier
#   rows. Fine-tuning takes positives from the identity folders, one view per image (the default
#   since 4900a4a, 2026-11-30); FINETUNE_FLAGS="--positives views" repeats the earlier two-view rows.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
OUT="${1:-out/quant}"
mkdir -p "$OUT"
cargo build --release -q -p efq-trainer --bin trainer
T=target/release/trainer
# shellcheck disable=SC2086  # QUANTIZE_FLAGS is a list of options
ptq() {
  [ -f "$OUT/eval-ptq-$1/report.json" ] && return
  [ -f "$OUT/mbf-$1-ptq.efq" ] || $T quantize --bits "$1" --calib-people all $QUANTIZE_FLAGS --out "$OUT/mbf-$1-ptq.efq"
  $T eval --model "$OUT/mbf-$1-ptq.efq" --teacher "$EFQ_TEACHER" --out "$OUT/eval-ptq-$1" | tee "$OUT/eval-ptq-$1.txt"
}
# ft NAME BITS [finetune options…]: one epoch from the PTQ student of BITS, then the LFW eval.
ft() {
  local name="$1" bits="$2"; shift 2
  [ -f "$OUT/$name/eval/report.json" ] && return
  ptq "$bits"
  # shellcheck disable=SC2086  # FINETUNE_FLAGS is a list of options
  /usr/bin/time -v $T finetune --student-init "$OUT/mbf-$bits-ptq.efq" --out-dir "$OUT/$name" --resume $FINETUNE_FLAGS "$@" \
    2> >(tee "$OUT/$name.time" >&2) | tee "$OUT/$name.txt"
}
# onnxruntime's own int8 post-training quantization of the teacher: the off-the-shelf row.
ort_int8() {
  [ -f "$OUT/ort-int8-qdq.json" ] && return
  "$EFQ_PYTHON" bench/ort_quantize_qdq.py --out "$OUT/w600k_mbf-int8-qdq.onnx"
  "$EFQ_PYTHON" bench/ort_lfw.py --model "$OUT/w600k_mbf-int8-qdq.onnx" --teacher "$EFQ_TEACHER" --batch 16 \
    --json "$OUT/ort-int8-qdq.json" 2>/dev/null | tee "$OUT/ort-int8-qdq.txt"
}
teacher() {
  [ -f out/bench-eval/trainer/report.json ] && return
  $T eval --model "$EFQ_TEACHER" --out out/bench-eval/trainer | tee out/bench-eval/trainer.txt
}
QUANTIZE_FLAGS="${QUANTIZE_FLAGS:-}"
FINETUNE_FLAGS="${FINETUNE_FLAGS:-}"
if [ -n "${ROWS:-}" ]; then
  for r in $ROWS; do
    case "$r" in
      ptq-*) ptq "${r#ptq-}" ;;
      ort-int8) ort_int8 ;;
      teacher) teacher ;;
      ekd-*-f*) b="${r#ekd-}"; ft "$r" "${b%-f*}" --loss ekd --fraction "${r##*-f}" ;;
      ekd-* | ekdce-* | quantface-*)
        # LOSS-BITS[-clean]: the folder name says the loss, the width and the protocol.
        loss="${r%%-*}"; b="${r#*-}"; protocol=paper
        [ "$loss" = ekdce ] && loss=ekd-ce
        case "$b" in *-clean) b="${b%-clean}"; protocol=clean ;; esac
        ft "$r" "$b" --loss "$loss" --protocol "$protocol" ;;
      *) echo "unknown row $r" >&2; exit 2 ;;
    esac
  done
  exit 0
fi
ptq w6a6; ptq w8a8; ptq w4a4
ort_int8
ft ekd-w6a6 w6a6 --loss ekd
ft quantface-w6a6 w6a6 --loss quantface
ft ekd-w6a6-f0.25 w6a6 --loss ekd --fraction 0.25
ft ekdce-w6a6 w6a6 --loss ekd-ce
ft ekd-w8a8 w8a8 --loss ekd
ft ekd-w4a4 w4a4 --loss ekd
ft ekd-w6a6-clean w6a6 --loss ekd --protocol clean
for f in 0.5 0.75; do ft "ekd-w6a6-f$f" w6a6 --loss ekd --fraction "$f"; done
teacher
