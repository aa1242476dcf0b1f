#!/usr/bin/env bash
# Set up (idempotent), then run every check CI runs: formatting, lints, the whole test suite,
# and the browser crate's wasm build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
set -euo pipefail
cargo fmt --all --check
cargo clippy -q --workspace --all-targets -- -D warnings
cargo build -q -p efq-web --target wasm32-unknown-unknown
cargo test --workspace 2>&1
