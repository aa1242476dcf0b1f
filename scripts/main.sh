#!/usr/bin/env bash
# Set up (idempotent), then run the main job. With no arguments: evaluate the real teacher
# (w600k_mbf) on LFW and print the table. Any arguments are passed to `trainer`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
cargo build --release -q -p efq-trainer --bin trainer
if [ $# -eq 0 ]; then set -- eval; fi
exec target/release/trainer "$@"
