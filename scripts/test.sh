#!/usr/bin/env bash
# Set up (idempotent), then run every check CI runs: formatting, lints, the whole test suite,
# the browser crate's wasm build and lints, and the browser tests (web/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
# One clean build, not an edit loop: incremental caches would only add ~2 GB to target/.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all --check
cargo clippy -q --workspace --all-targets -- -D warnings
cargo clippy -q -p efq-web --target wasm32-unknown-unknown -- -D warnings
cargo test --workspace 2>&1
bash web/test.sh
