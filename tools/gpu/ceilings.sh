#!/usr/bin/env bash
# On the GPU machine: the Hopper ceilings the kernels are judged against (wgmma and
# mma.sync peaks, TMA and cp.async streams from HBM, mbarrier and barrier round trips, from
# `kitten bench ceilings`), and torch's device-to-device copy of the same bytes in the same
# run as the bandwidth peer. Writes OUTDIR/ceilings.txt.
#   tools/gpu/ceilings.sh OUTDIR
set -euo pipefail
out=${1:?usage: tools/gpu/ceilings.sh OUTDIR}
cd "$(dirname "$0")/../.."
mkdir -p "$out"
cmake -S . -B build-gpu -G Ninja -DKITTEN_WITH_LLVM=OFF -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1 ||
  { cat "$out/configure.log"; exit 1; }
cmake --build build-gpu -j "$(nproc)" --target kitten > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
./build-gpu/bin/kitten bench ceilings --device cuda --reps 10 | tee "$out/ceilings.txt"
bytes=$(grep "^stream bytes:" "$out/ceilings.txt" | awk '{print $3}')
python3 - "$bytes" <<'PY' | tee -a "$out/ceilings.txt"
import sys, torch
n = int(float(sys.argv[1])) // 2
src = torch.randn(n, device="cuda").to(torch.bfloat16)
dst = torch.empty_like(src)
for _ in range(5): dst.copy_(src)
times = []
for _ in range(10):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record(); dst.copy_(src); b.record(); torch.cuda.synchronize()
    times.append(a.elapsed_time(b))
ms = sorted(times)[len(times) // 2]
assert torch.equal(dst, src)
print(f"torch copy of the same bytes: {2 * n * 2 / (ms * 1e6):.0f} GB/s read+write "
      f"({n * 2 / (ms * 1e6):.0f} GB/s read; {ms:.3f} ms)")
PY
