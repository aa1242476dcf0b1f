#!/usr/bin/env bash
# Builds the demo page into web/dist (gitignored):
#   web/dist/{index.html,app.js,worker.js,style.css}   from web/www
#   web/dist/pkg/                                      the wasm module (wasm-bindgen --target web)
#   web/dist/pkg-relaxed/                              the same with relaxed SIMD (fused multiply-
#                                                      adds in the float convolutions), loaded
#                                                      where the browser validates it
#   web/dist/pkg-threads/                              relaxed SIMD and wasm threads (rayon on Web
#                                                      Workers; pages served cross-origin isolated)
#   web/dist/models/default.efq                        the default model
#   web/dist/models/detector.onnx                      SCRFD-500M ($EFQ_DETECTOR), for face detection
# The default model is w600k_mbf quantized at w8a8 (out/web/w600k_mbf-w8a8.efq; built here if
# missing, never committed: the teacher's weights are non-commercial). The page needs a decision
# threshold in the model; a PTQ model has none, so it is measured once with `trainer eval` on
# the first $EFQ_WEB_EVAL_LIMIT LFW test crops (default 2000, ~2 min; 0 = all 7,701, ~7 min)
# with the flip test, as the page embeds each face with its mirror image, and stored at FAR 1e-3 by
# `web-tool threshold`. EFQ_WEB_EVAL_REPORT=path/report.json reuses an existing eval report.
#
# Serve:  python3 web/serve.py            then open http://localhost:8000/
#         (a static server that sends the cross-origin-isolation headers the threaded CPU path
#         needs; `python3 -m http.server -d web/dist` works too, single-threaded)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${EFQ_TEACHER:-}" ] || [ -z "${LIBTORCH:-}" ]; then . scripts/setup.sh; set -euo pipefail; fi
log() { printf '\033[1;34m[web]\033[0m %s\n' "$*" >&2; }
JOBS="${EFQ_JOBS:-2}"
DIST=web/dist
TARGET="${CARGO_TARGET_DIR:-target}"
MODEL="${EFQ_WEB_MODEL:-out/web/w600k_mbf-w8a8.efq}"

log "building the wasm module"
cargo build -q -j"$JOBS" --release -p efq-web --lib --target wasm32-unknown-unknown
cargo build -q -j"$JOBS" --release -p efq-web --bin web-tool
mkdir -p "$DIST"
rm -rf "$DIST/pkg"
wasm-bindgen --target web --no-typescript --out-dir "$DIST/pkg" \
  "$TARGET/wasm32-unknown-unknown/release/efq_web.wasm"
# The relaxed-SIMD build, in its own target directory (RUSTFLAGS replace .cargo/config.toml's
# flags, so +simd128 is repeated): f32x4.relaxed_madd is a fused multiply-add where the CPU has
# one, twice the rate of the multiply and add that SIMD128 alone offers (`shared::cpu::gemm_fma`).
log "building the wasm module with relaxed SIMD"
RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd" CARGO_TARGET_DIR="$TARGET/wasm-relaxed" \
  cargo build -q -j"$JOBS" --release -p efq-web --lib --target wasm32-unknown-unknown
rm -rf "$DIST/pkg-relaxed"
wasm-bindgen --target web --no-typescript --out-dir "$DIST/pkg-relaxed" \
  "$TARGET/wasm-relaxed/wasm32-unknown-unknown/release/efq_web.wasm"
# The threaded build: std rebuilt with atomics on the pinned nightly (scripts/setup.sh), in its
# own target directory so the two builds never invalidate each other. rustc no longer turns
# `+atomics` into the linker's shared-memory flags by itself, so they are spelled out: memory
# imported and shared (wasm-bindgen hands it to every worker), with a declared maximum (4 GiB,
# wasm32's whole address space), and the thread-local-storage symbols wasm-bindgen initialises
# on each thread exported.
log "building the threaded wasm module ($EFQ_WASM_NIGHTLY, -Z build-std)"
LINK=""
for a in --shared-memory --import-memory --max-memory=4294967296 --export=__wasm_init_tls \
  --export=__tls_size --export=__tls_align --export=__tls_base; do
  LINK="$LINK -C link-arg=$a"
done
RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+simd128,+relaxed-simd$LINK" \
  CARGO_TARGET_DIR="$TARGET/wasm-threads" \
  cargo "+$EFQ_WASM_NIGHTLY" build -q -j"$JOBS" --release -p efq-web --lib --features threads \
  --target wasm32-unknown-unknown -Z build-std=panic_abort,std
rm -rf "$DIST/pkg-threads"
wasm-bindgen --target web --no-typescript --out-dir "$DIST/pkg-threads" \
  "$TARGET/wasm-threads/wasm32-unknown-unknown/release/efq_web.wasm"
cp web/www/* "$DIST/"

if [ ! -f "$MODEL" ]; then
  log "quantizing the default model into $MODEL"
  cargo build -q -j"$JOBS" --release -p efq-trainer --bin trainer
  mkdir -p "$(dirname "$MODEL")"
  "$TARGET"/release/trainer quantize --model "$EFQ_TEACHER" --bits w8a8 --out "$MODEL"
fi
if ! "$TARGET"/release/web-tool has-threshold --model "$MODEL"; then
  REPORT="${EFQ_WEB_EVAL_REPORT:-out/web/eval/report.json}"
  if [ ! -f "$REPORT" ]; then
    LIMIT="${EFQ_WEB_EVAL_LIMIT:-2000}"
    log "measuring the decision threshold of $MODEL on LFW (${LIMIT/#0/all} crops)"
    cargo build -q -j"$JOBS" --release -p efq-trainer --bin trainer
    args=(); [ "$LIMIT" != 0 ] && args=(--limit "$LIMIT")
    "$TARGET"/release/trainer eval --model "$MODEL" "${args[@]}" --out "$(dirname "$REPORT")" >/dev/null
  fi
  "$TARGET"/release/web-tool threshold --model "$MODEL" --report "$REPORT"
fi
mkdir -p "$DIST/models"
cp "$MODEL" "$DIST/models/default.efq"
cp "$EFQ_DETECTOR" "$DIST/models/detector.onnx"
log "built $DIST ($(du -sh "$DIST" | cut -f1)); serve it with: python3 web/serve.py"
