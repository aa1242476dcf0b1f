#!/usr/bin/env bash
# 1:N search at 1,000, 10,000 and 100,000 enrolled 512-d faces (generated): efq_shared::gallery
# and numpy on the same file, one after the other. Usage: bash bench/gallery_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
cargo build --release -q -p efq-shared --example gallery_bench
for n in ${SIZES:-1000 10000 100000}; do
  echo "efq:   $(target/release/examples/gallery_bench "$n" "/tmp/gallery-$n.safetensors")"
  echo "numpy: $("$EFQ_PYTHON" bench/gallery_peer.py "/tmp/gallery-$n.safetensors")"
done
