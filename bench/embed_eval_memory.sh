#!/usr/bin/env bash
# Peak resident memory of `trainer embed` and `trainer eval` as the number of crops grows:
# both read and run the images a batch at a time, so memory should follow the batch, not N.
# The first N crops of LFW's aligned112 folder (13,233 in all), the teacher, the default
# backend of each command. One process at a time.
# `eval` needs pairs of pairs.txt among its images (108 crops at the least on insightface112,
# 157 on aligned112; it says so), so its smallest count is 200.
# Usage: bash bench/embed_eval_memory.sh [OUT_DIR] [EMBED_COUNTS] [EVAL_COUNTS]
#   (defaults out/bench-memory, "32 1000 13233", "200 1000 13233"; "" skips a command)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
OUT="${1:-out/bench-memory}"
EMBED_COUNTS="${2-32 1000 13233}"
EVAL_COUNTS="${3-200 1000 13233}"
mkdir -p "$OUT"
# TRAINER=path uses a binary built before (e.g. a copy, while the tree is being edited).
if [ -z "${TRAINER:-}" ]; then
  cargo build --release -q -p efq-trainer --bin trainer
fi
T="${TRAINER:-target/release/trainer}"
CROPS="$EFQ_LFW/aligned112"
find "$CROPS" -name '*.jpg' | sort > "$OUT/all.txt"

measure() { # NAME N CMD... → one table row; the command's output goes to $OUT/NAME-N.log
  local name=$1 n=$2; shift 2
  /usr/bin/time -f '%M %e' -o "$OUT/time" "$@" > "$OUT/$name-$n.log" 2>&1
  read -r kb secs < "$OUT/time"
  printf '| %s | %s | %.0f | %.1f |\n' "$name" "$n" "$((kb / 1024))" "$secs"
}

echo "| command | crops | peak RSS (MB) | wall (s) |"
echo "|---|---:|---:|---:|"
for n in $EMBED_COUNTS; do
  # The first N crops as a folder of links: `embed` takes folders.
  rm -rf "$OUT/crops-$n" && mkdir -p "$OUT/crops-$n"
  head -n "$n" "$OUT/all.txt" | while read -r f; do ln -s "$f" "$OUT/crops-$n/$(basename "$f")"; done
  measure embed "$n" "$T" embed --out "$OUT/embed-$n.json" "$OUT/crops-$n"
done
for n in $EVAL_COUNTS; do
  measure eval "$n" "$T" eval --crops "$CROPS" --limit "$n" --out "$OUT/eval-$n" --json
done
