#!/usr/bin/env bash
# The paper's compression comparison (Tables 1 and 5) on w600k_mbf: structured pruning sp02
# (L2 and Taylor scores) before and after recovery, pruning + w8a8, and distillation into a fresh half-width
# MobileFaceNet, each evaluated on all 7,701 LFW test crops (all pairs, flip) with its
# fidelity to the teacher. Resumable like bench/quant_rows.sh: a row whose report exists is
# skipped, an interrupted fine-tuning continues from its checkpoint.
# Usage: bash bench/compression_rows.sh [OUT_DIR]   (default out/compress)
#   ROWS="sp02 sp02-ekd-clean …"  runs only those rows, in that order.
#   Table: python3 bench/compression_table.py OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
OUT="${1:-out/compress}"
mkdir -p "$OUT"
cargo build --release -q -p efq-trainer --bin trainer
T="${TRAINER:-target/release/trainer}"
ROWS="${ROWS:-sp02 sp02-taylor sp02-ekd-clean sp02-taylor-ekd-clean sp02-quantface-clean sp02-taylor-quantface-clean sp02-w8a8-ekd-clean half-ekd-clean-e1 half-ekd-clean-e5 sp02-taylor-ekd sp02-ekd half-ekd-e1}"

pruned() { [ -f "$OUT/mbf-sp02.onnx" ] || $T prune --score l2 --sparsity 0.2 --out "$OUT/mbf-sp02.onnx" --json > "$OUT/prune-sp02.json"; }
taylor() { [ -f "$OUT/mbf-sp02-taylor.onnx" ] || $T prune --sparsity 0.2 --score taylor --out "$OUT/mbf-sp02-taylor.onnx" --json > "$OUT/prune-sp02-taylor.json"; }
half() { [ -f "$OUT/mbf-half.onnx" ] || $T generate --like "$EFQ_TEACHER" --width 0.5 --out "$OUT/mbf-half.onnx"; }
# ft NAME INIT [finetune options…]: fine-tune INIT with the teacher, then the LFW eval.
ft() {
  local name="$1" init="$2"; shift 2
  [ -f "$OUT/$name/eval/report.json" ] && return
  local resume=""
  [ -d "$OUT/$name" ] && resume="--resume"
  $T finetune --student-init "$init" --out-dir "$OUT/$name" $resume "$@" | tee "$OUT/$name.txt"
}
for row in $ROWS; do
  case "$row" in
    sp02)
      pruned
      [ -f "$OUT/eval-sp02/report.json" ] ||
        $T eval --model "$OUT/mbf-sp02.onnx" --teacher "$EFQ_TEACHER" --out "$OUT/eval-sp02" | tee "$OUT/eval-sp02.txt" ;;
    sp02-taylor)
      taylor
      [ -f "$OUT/eval-sp02-taylor/report.json" ] ||
        $T eval --model "$OUT/mbf-sp02-taylor.onnx" --teacher "$EFQ_TEACHER" --out "$OUT/eval-sp02-taylor" | tee "$OUT/eval-sp02-taylor.txt" ;;
    sp02-ekd-clean) pruned; ft "$row" "$OUT/mbf-sp02.onnx" --protocol clean --loss ekd --optimizer sgd --lr 1e-3 ;;
    sp02-taylor-ekd-clean) taylor; ft "$row" "$OUT/mbf-sp02-taylor.onnx" --protocol clean --loss ekd --optimizer sgd --lr 1e-3 ;;
    sp02-taylor-ekd) taylor; ft "$row" "$OUT/mbf-sp02-taylor.onnx" --loss ekd --optimizer sgd --lr 1e-3 ;;
    sp02-taylor-quantface-clean) taylor; ft "$row" "$OUT/mbf-sp02-taylor.onnx" --protocol clean --loss quantface --optimizer sgd --lr 1e-3 ;;
    sp02-ekd) pruned; ft "$row" "$OUT/mbf-sp02.onnx" --loss ekd --optimizer sgd --lr 1e-3 ;;
    sp02-quantface-clean) pruned; ft "$row" "$OUT/mbf-sp02.onnx" --protocol clean --loss quantface --optimizer sgd --lr 1e-3 ;;
    sp02-w8a8-ekd-clean)
      pruned
      [ -f "$OUT/mbf-sp02-w8a8.efq" ] || $T quantize --model "$OUT/mbf-sp02.onnx" --bits w8a8 --out "$OUT/mbf-sp02-w8a8.efq"
      ft "$row" "$OUT/mbf-sp02-w8a8.efq" --protocol clean ;;
    half-ekd-clean-e1) half; ft "$row" "$OUT/mbf-half.onnx" --protocol clean --loss ekd --optimizer sgd --lr 1e-3 ;;
    half-ekd-clean-e5) half; ft "$row" "$OUT/mbf-half.onnx" --protocol clean --epochs 5 --loss ekd --optimizer sgd --lr 1e-3 ;;
    half-ekd-e1) half; ft "$row" "$OUT/mbf-half.onnx" --loss ekd --optimizer sgd --lr 1e-3 ;;
    # Recovery with Adam (scale-free steps: SGD at 1e-3 barely moves a float student whose
    # feature loss is ~1e-3 per element) — the recipe search in docs/EXPERIMENTS.md. The
    # feature loss with Adam 1e-4 is now finetune's default for a float student; the rows
    # name every option so they mean the same whatever the defaults.
    sp02-taylor-qf-adam4-clean) taylor; ft "$row" "$OUT/mbf-sp02-taylor.onnx" --protocol clean --loss quantface --optimizer adam --lr 1e-4 ;;
    sp02-taylor-qf-adam4) taylor; ft "$row" "$OUT/mbf-sp02-taylor.onnx" --loss quantface --optimizer adam --lr 1e-4 ;;
    sp02-taylor-qf-adam4-clean-e5) taylor; ft "$row" "$OUT/mbf-sp02-taylor.onnx" --protocol clean --loss quantface --optimizer adam --lr 1e-4 --epochs 5 ;;
    sp02-taylor-qf-adam3-clean) taylor; ft "$row" "$OUT/mbf-sp02-taylor.onnx" --protocol clean --loss quantface --optimizer adam --lr 1e-3 ;;
    sp02-taylor-ekd-adam4-clean) taylor; ft "$row" "$OUT/mbf-sp02-taylor.onnx" --protocol clean --loss ekd --optimizer adam --lr 1e-4 ;;
    sp02-qf-adam4-clean) pruned; ft "$row" "$OUT/mbf-sp02.onnx" --protocol clean --loss quantface --optimizer adam --lr 1e-4 ;;
    # The recovered pruned student (clean set, 5 epochs) quantized: w8a8 PTQ, then EKD.
    sp02-rec-w8a8)
      [ -f "$OUT/mbf-sp02-rec.onnx" ] || $T convert "$OUT/sp02-taylor-qf-adam4-clean-e5/student.efq" --out "$OUT/mbf-sp02-rec.onnx"
      [ -f "$OUT/mbf-sp02-rec-w8a8.efq" ] || $T quantize --model "$OUT/mbf-sp02-rec.onnx" --bits w8a8 --out "$OUT/mbf-sp02-rec-w8a8.efq"
      [ -f "$OUT/eval-sp02-rec-w8a8/report.json" ] ||
        $T eval --model "$OUT/mbf-sp02-rec-w8a8.efq" --teacher "$EFQ_TEACHER" --out "$OUT/eval-sp02-rec-w8a8" | tee "$OUT/eval-sp02-rec-w8a8.txt" ;;
    sp02-rec-w8a8-ekd-clean) ft "$row" "$OUT/mbf-sp02-rec-w8a8.efq" --protocol clean ;;
    half-qf-adam3-e5) half; ft "$row" "$OUT/mbf-half.onnx" --loss quantface --optimizer adam --lr 1e-3 --epochs 5 ;;
    half-qf-adam3-clean-e5) half; ft "$row" "$OUT/mbf-half.onnx" --protocol clean --loss quantface --optimizer adam --lr 1e-3 --epochs 5 ;;
    half-ekd-adam3-clean-e5) half; ft "$row" "$OUT/mbf-half.onnx" --protocol clean --loss ekd --optimizer adam --lr 1e-3 --epochs 5 ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
done
