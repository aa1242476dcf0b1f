#!/usr/bin/env bash
# The GPU measurements, on a machine with an NVIDIA GPU: fine-tuning on CUDA, and the engine's
# tests and benchmarks on NVIDIA's Vulkan driver. The GPU machine needs no network, no Rust and
# no ../shared: it gets the checkout and the .gpu/ folder that `prepare` fills on the build
# machine, and needs NVIDIA's driver and a python3 with a CUDA build of PyTorch 2.11.0 (or
# TORCH_LIB pointing at its lib/; the same build as the CPU libtorch here, so binaries built
# here run there against its libraries) and onnxruntime for the CPU row. The engine reaches
# NVIDIA's Vulkan driver through the Vulkan loader that .gpu/ carries.
#
#   bash bench/gpu_check.sh prepare     # on the build machine: .gpu/ = stripped trainer and engine
#                                       # test binaries, teacher, Vulkan loader, as many training
#                                       # crops as fit in about 60 MB
#   then copy the checkout with .gpu/ to the GPU machine and there:
#   DEADLINE=400 bash bench/gpu_check.sh run          # results in $OUT (default out/gpu)
#
# `run`, each stage capped by `timeout` so that the whole run ends within DEADLINE seconds:
#  1. fine-tunes (EKD) mbf (the real teacher) and a generated iresnet50 on CUDA over the .gpu/
#     training crops (one pass, checkpoints off): $OUT/gpu-<model>-<bits>.json, GPU memory from nvidia-smi;
#  2. runs the engine's kernel and whole-model agreement tests on the NVIDIA Vulkan adapter;
#  3. benchmarks inference: the engine (wgpu, Vulkan) against libtorch on CUDA (tch) and
#     onnxruntime on the machine's CPUs: $OUT/bench-table.md;
#     everything printed is also in $OUT/gpu-log.txt.
# The epoch figure for 13,233 images is steady images/s scaled, printed as such.
# Knobs (a CPU dry run here: TORCH_LIB=$LIBTORCH/lib FORCE_TRAIN=1 PY=$EFQ_PYTHON MODELS=mbf
#   STEPS=2 BATCH=8 BATCHES=1 SECS=0.5 OUT=/tmp/g):
#   MODELS="mbf r50", ONLY_ENGINE=1 (no fine-tuning), STEPS (stop after, default: the whole pass), BATCH (64), SECS (bench, 2).
set -uo pipefail
cd "$(dirname "$0")/.."
G=.gpu
case "${1:-}" in
  prepare)
    set -e
    . scripts/setup.sh
    set -euo pipefail
    cargo build --release -q -p efq-trainer --bin trainer
    # The test binaries: cargo prints each executable it built as JSON.
    mapfile -t tests < <(cargo test --release -q -p efq-engine -p efq-tests --no-run \
      --message-format=json 2>/dev/null | "$EFQ_PYTHON" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("kernels", "engine_agreement"):
        print(m["target"]["name"], m["executable"])')
    rm -rf "$G" && mkdir -p "$G/lfw/aligned112" "$G/lfw/insightface112" "$G/tests" "$G/gl"
    # Stripped and xz-compressed (a third of the size), to leave room for crops.
    strip -o "$G/trainer" target/release/trainer
    for t in "${tests[@]}"; do strip -o "$G/tests/${t%% *}" "${t#* }"; done
    cp "$EFQ_TEACHER" "$G/w600k_mbf.onnx"
    xz -9 -T2 "$G/trainer" "$G"/tests/* "$G/w600k_mbf.onnx"
    cp "$EFQ_LFW/pairs.txt" "$G/lfw/"
    # The agreement test reads the first 4 test crops in path order.
    for d in $(ls -d "$EFQ_LFW"/insightface112/*/ | head -8); do cp -r "$d" "$G/lfw/insightface112/"; done
    # The Vulkan loader and glvnd, which NVIDIA's Vulkan driver (libGLX_nvidia) links.
    (cd "$G/gl" && apt-get download -q libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
    # Whole identity folders in name order while .gpu/ and the checkout stay under ~60 MB.
    tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
    budget=$((60 * 1000 * 1000 - tree - $(du -sb "$G" | cut -f1)))
    n=0
    for d in "$EFQ_LFW"/aligned112/*/; do
      s=$(du -sb "$d" | cut -f1)
      [ "$s" -ge "$budget" ] && break
      cp -r "$d" "$G/lfw/aligned112/"
      budget=$((budget - s)); n=$((n + $(ls "$d" | wc -l)))
    done
    du -sh "$G"; echo "$n training crops"
    ;;
  run)
    OUT="${OUT:-out/gpu}"; mkdir -p "$OUT"
    exec > >(tee "$OUT/gpu-log.txt") 2>&1
    T0=$SECONDS
    stage() { echo; echo "=== [$((SECONDS - T0)) s] $*"; }
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
    TL="${TORCH_LIB:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}"
    CU="$(find "$TL/../.." -name 'libcudart.so.13' -printf '%h' -quit 2>/dev/null)"
    export LD_LIBRARY_PATH="$TL:$CU:${LD_LIBRARY_PATH:-}"
    # Built against the CPU libraries, the binaries do not name libtorch_cuda: preload it so
    # that its CUDA kernels register.
    [ -f "$TL/libtorch_cuda.so" ] && export LD_PRELOAD="$TL/libtorch_cuda.so"
    # Vulkan: the loader from .gpu, NVIDIA's driver manifest where the system keeps it.
    if ! ldconfig -p | grep -q libvulkan.so.1 || ! ldconfig -p | grep -q libGLdispatch.so.0; then
      for f in "$G"/gl/*.deb; do dpkg -x "$f" /; done; ldconfig
    fi
    nv=/usr/local/nvidia/share
    [ -f $nv/vulkan/icd.d/nvidia_icd.json ] && export VK_DRIVER_FILES=$nv/vulkan/icd.d/nvidia_icd.json
    [ -f $nv/glvnd/egl_vendor.d/10_nvidia.json ] && export __EGL_VENDOR_LIBRARY_FILENAMES=$nv/glvnd/egl_vendor.d/10_nvidia.json
    B=/tmp/efq-bin; mkdir -p $B
    for f in "$G"/*.xz "$G"/tests/*.xz; do
      python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
        "$f" "$B/$(basename "${f%.xz}")"
    done
    chmod +x $B/trainer $B/kernels $B/engine_agreement 2>/dev/null
    export EFQ_TEACHER=$B/w600k_mbf.onnx EFQ_LFW="$PWD/$G/lfw"
    T=$B/trainer
    # GPU memory in use, sampled every 100 ms while a stage runs (includes the CUDA context and
    # the caching allocator's reserve).
    gpumem() {
      command -v nvidia-smi >/dev/null || { "$@"; return; }
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/mem.txt &
      local smi=$! rc=0
      "$@" || rc=$?
      kill $smi 2>/dev/null; wait $smi 2>/dev/null
      echo "GPU memory used, peak: $(sort -n /tmp/mem.txt | tail -1) MiB (idle $(head -1 /tmp/mem.txt) MiB)" >&2
      return $rc
    }

    # Every stage's timeout is cut to what is left of DEADLINE seconds, so the run ends in time
    # whatever hangs; stages run most important first.
    DEADLINE="${DEADLINE:-420}"
    cap() {
      local left=$((DEADLINE - (SECONDS - T0)))
      [ "$left" -ge 10 ] || { echo "(skipped: out of time)" >&2; return 1; }
      echo $(($1 < left ? $1 : left))
    }
    TIME=(); [ -x /usr/bin/time ] && TIME=(/usr/bin/time -f "wall %e s, host peak RSS %M KB")
    stop=(); [ -n "${STEPS:-}" ] && stop=(--stop-after "$STEPS")
    # The float model called $1 (mbf: the teacher in .gpu; r50: generated once, seeded), its path
    # printed; fails when it could not be had in time.
    float_model() {
      [ "$1" = mbf ] && { echo "$EFQ_TEACHER"; return; }
      local f=/tmp/r50.onnx t
      if [ ! -f $f ]; then
        t=$(cap 60) && timeout "$t" "$T" generate --arch iresnet50 --seed 1 --out $f >&2 || return 1
      fi
      echo $f
    }
    finetune() {
      local m=$1 bits=$2 teacher t d=/tmp/ft-$1-$2
      case " ${MODELS:-mbf r50} " in *" $m "*) ;; *) return 0 ;; esac
      teacher=$(float_model "$m") || return 0
      stage "finetune $m $bits (EKD) on the crops in .gpu"
      rm -rf "$d"
      t=$(cap "${FT_TIMEOUT:-120}") || return 0
      gpumem timeout "$t" "${TIME[@]}" \
        "$T" finetune --teacher "$teacher" --bits "$bits" --lfw "$EFQ_LFW" \
        --train-crops aligned112 --out-dir "$d" --no-eval --checkpoint-every 100000 \
        --batch "${BATCH:-64}" "${stop[@]}" > /tmp/ft.log || { tail -5 /tmp/ft.log; return 0; }
      cp "$d/training.json" "$OUT/gpu-$m-$bits.json"
      cp "$d/student.efq" "/tmp/$m-$bits.efq"
      python3 - "$d/training.json" "$m $bits" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
s = t.get("steady_images_per_second") or t["images_per_second"]
print(f"{sys.argv[2]}: {t['images']} images, {t['steps']} steps in {t['seconds']:.1f} s "
      f"= {t['images_per_second']:.1f} images/s, {s:.1f} after the first step -> a 13,233-image "
      f"epoch ~ {13233 / s:.0f} s; device {t['device']}; host peak RSS {t['peak_rss_mb']:.0f} MB")
PY
    }
    stage "does the trainer see CUDA?"
    probe=$(timeout 60 "$T" bench --backend tch --model "$EFQ_TEACHER" --batches 1 --seconds 0 --json 2>&1)
    echo "$probe" | grep -o '"backend": *"[^"]*"' || echo "$probe" | tail -5
    if [ -n "${ONLY_ENGINE:-}" ]; then
      MODELS=""
    elif echo "$probe" | grep -q 'Cuda' || [ -n "${FORCE_TRAIN:-}" ]; then
      finetune mbf w8a8
      finetune r50 w6a6
    else
      echo "no CUDA in the trainer: skipping the fine-tuning runs"; ldd "$T" | grep -E "torch|c10|not found"
      MODELS=""
    fi

    stage "engine tests on the Vulkan adapter"
    VK_LOADER_DEBUG=error,warn timeout 30 "$T" bench --backend wgpu --model "$EFQ_TEACHER" --batches 1 \
      --seconds 0 2>&1 | grep -v "^ *[0-9]*: " | head -15
    for t in kernels engine_agreement; do
      [ -x "$B/$t" ] || continue
      echo "--- $t"
      c=$(cap "${TEST_TIMEOUT:-90}") || break
      timeout "$c" "$B/$t" --test-threads 1 2>&1 | grep -E "^test |test result|panicked|adapter" | tail -40
    done

    stage "inference benchmarks"
    BS="${BATCHES:-1,32,256}"
    # The rows go into one table, $OUT/bench-table.md.
    J=/tmp/bench-json; rm -rf $J; mkdir -p $J
    bench() {
      local name=$1 t; shift; echo "--- $name"
      t=$(cap 40) || return 0
      timeout "$t" "$T" bench --batches "$BS" --seconds "${SECS:-2}" "$@" --json > "$J/$name.json" \
        || rm -f "$J/$name.json"
    }
    for m in ${BENCH_MODELS:-mbf r50}; do
      q=/tmp/$m-w8a8.efq; [ -f $q ] || q=/tmp/$m-w6a6.efq
      f=$(float_model "$m") || continue
      if [ ! -f $q ]; then
        q=/tmp/$m-w8a8.efq
        t=$(cap 40) && timeout "$t" "$T" quantize --model "$f" --bits w8a8 --calib-images 64 \
          --lfw "$EFQ_LFW" --out $q > /dev/null
      fi
      [ -f $q ] && bench "$m-wgpu-int" --backend wgpu --model $q
      bench "$m-wgpu-f32" --backend wgpu --model "$f"
      bench "$m-tch-cuda-f32" --backend tch --model "$f"
      [ -f $q ] && bench "$m-tch-cuda-int" --backend tch --model $q
    done
    echo "--- onnxruntime, CPU"
    t=$(cap 40) && timeout "$t" "${PY:-python3}" bench/ort_bench.py --model "$EFQ_TEACHER" --label "mbf fp32" \
      --batches "$BS" --seconds "${SECS:-2}" --json "$J/mbf-ort-cpu.json"
    shopt -s nullglob
    python3 bench/bench_table.py "$J"/mbf-*.json "$J"/r50-*.json | tee "$OUT/bench-table.md"
    if [ -f /tmp/mbf-w8a8.efq ]; then
      stage "engine kernel profile, mbf w8a8 at batch 32"
      t=$(cap 40) && timeout "$t" "$T" bench --backend wgpu --model /tmp/mbf-w8a8.efq --batches 32 --profile | head -40
    fi
    [ -n "${MODELS-x}" ] && finetune mbf w6a6
    stage "done"
    ;;
  *) echo "usage: bash bench/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
