#!/usr/bin/env bash
# Browser tests (run by scripts/test.sh; headless system Chromium, WebGPU on SwiftShader):
#  1. web/build.sh: the wasm module, the page and the default model (w8a8, with its threshold);
#  2. the browser fixture: a few LFW crops and their embeddings from the native CPU backend,
#     and the faces (and aligned crop) it finds in one raw LFW photo;
#  3. wasm-bindgen-test in Chromium: the WebGPU engine and the CPU path compiled to wasm
#     reproduce the native embeddings and detections (web/tests/browser.rs);
#  4. Playwright (playwright-core, system Chromium): the page's verdicts on a same-person and a
#     different-people LFW pair on both paths, as aligned crops and as raw photos (detection in
#     the page), the CPU path again with wasm threads on a cross-origin-isolated copy of the
#     page (the same similarities, bit for bit), a photo taken with the (fake) camera, and its
#     error messages; the raw photos' results against `trainer verify` natively
#     (tests/browser/e2e.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${EFQ_TEACHER:-}" ] || [ -z "${LIBTORCH:-}" ]; then . scripts/setup.sh; set -euo pipefail; fi
TARGET="${CARGO_TARGET_DIR:-target}"
MODEL="${EFQ_WEB_MODEL:-out/web/w600k_mbf-w8a8.efq}"
bash web/build.sh
"$TARGET"/release/web-tool fixture --model "$MODEL" --lfw "$EFQ_LFW" --out out/web/fixture --n 4 \
  --detector "$EFQ_DETECTOR"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}" \
WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-600}" \
  cargo test -j"${EFQ_JOBS:-2}" --release -p efq-web --target wasm32-unknown-unknown --test browser
cargo build -q -j"${EFQ_JOBS:-2}" --release -p efq-trainer --bin trainer
EFQ_TRAINER="$TARGET/release/trainer" node tests/browser/e2e.mjs
