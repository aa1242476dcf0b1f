#!/usr/bin/env bash
# Where one engine layer's time goes inside llvmpipe's JIT code: runs a `conv_chain` of that
# shape, samples it with perf, dumps the process's anonymous executable mappings (the JIT code)
# with gdb, and charges each sample to the instruction before it (perf's skid) by kind: storage
# read components (llvmpipe's per-lane loop), float arithmetic, stack spills, execution-mask
# tests, blends. How the findings of EXPERIMENTS.md, Part 6, "Arrays llvmpipe keeps in memory",
# were made. Needs perf, gdb and objdump (binutils); lavapipe, not a GPU.
# Usage: bash bench/llvmpipe_jit_profile.sh CHANNELS SIZE KERNEL [SECONDS]   (EFQ_DEPTHWISE=1: depthwise)
# e.g.   bash bench/llvmpipe_jit_profile.sh 72 80 1
set -euo pipefail
cd "$(dirname "$0")/.."
C="${1:?channels}" S="${2:?size}" K="${3:?kernel size}" SECS="${4:-6}"
OUT="${OUT:-out/jit-profile}"
mkdir -p "$OUT"
cargo build --release -q -p efq-engine --example conv_chain
target/release/examples/conv_chain "$C" "$S" "$K" 31 $((SECS + 20)) > "$OUT/chain.txt" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
sleep 7 # compiled and running
perf record -q -p "$PID" -o "$OUT/perf.data" sleep "$SECS" > /dev/null 2>&1
perf script -i "$OUT/perf.data" -F ip 2> /dev/null | sort | uniq -c | sort -rn > "$OUT/ips.txt"
rm -f "$OUT"/jit-*.bin
# The JIT code: executable mappings with no file behind them.
awk '$2 ~ /x/ && $6 == "" { print $1 }' "/proc/$PID/maps" | while read -r range; do
  gdb -p "$PID" -batch -ex "dump binary memory $OUT/jit-${range%-*}.bin 0x${range%-*} 0x${range#*-}" > /dev/null 2>&1
done
kill "$PID" 2> /dev/null || true
python3 - "$OUT" <<'PY'
import collections, glob, os, re, subprocess, sys
out = sys.argv[1]
ips = [(int(n), int(ip, 16)) for n, ip in (l.split() for l in open(f"{out}/ips.txt"))]
total = sum(n for n, _ in ips)
best = None
for path in glob.glob(f"{out}/jit-*.bin"):
    base = int(os.path.basename(path)[4:-4], 16)
    size = os.path.getsize(path)
    samples = collections.Counter({ip - base: n for n, ip in ips if base <= ip < base + size})
    if best is None or sum(samples.values()) > sum(best[1].values()):
        best = (path, samples)
path, samples = best
asm = subprocess.run(["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", path],
                     capture_output=True, text=True, check=True).stdout
text, order = {}, []
for line in asm.splitlines():
    m = re.match(r"\s+([0-9a-f]+):\t[0-9a-f ]+\t(.*)", line)
    if m:
        a = int(m.group(1), 16)
        text[a] = m.group(2).strip()
        order.append(a)
before = {order[i]: order[i - 1] for i in range(1, len(order))}
kinds = collections.Counter()
for a, n in samples.items():
    t = text.get(before.get(a), "")
    op = t.split()[0] if t else "?"
    if op == "vpbroadcastd" and "(" in t and "%rsp" not in t:
        k = "storage read component (masked broadcast)"
    elif op.startswith(("vfmadd", "vmulps", "vaddps", "vsubps")):
        k = "float arithmetic"
    elif op.startswith("vmov") and "(%rsp" in t:
        k = "vector spill or stack move"
    elif op == "mov" and "(%rsp" in t:
        k = "scalar stack move (arrays kept in memory)"
    elif op in ("testb", "test") and "(%rsp" in t:
        k = "per-lane execution-mask test"
    elif op == "vblendvps":
        k = "blend (masked update)"
    else:
        k = "other: " + op
    kinds[k] += n
jit = sum(samples.values())
print(f"{jit} of {total} samples in the JIT code ({os.path.basename(path)})")
for k, n in kinds.most_common(12):
    print(f"{100 * n / jit:5.1f} %  {k}")
PY
