#!/usr/bin/env bash
# On the GPU machine, after tools/gpu/check.sh built build-gpu: the tile-DSL GEMM against
# torch.matmul (cuBLAS) at the issue's shapes, in the same run, every output checked.
#   tools/gpu/gemm_figures.sh [SCHEDULE]
set -euo pipefail
cd "$(dirname "$0")/../.."
s=${1:-BM=128 BN=128 BK=64 WM=2 WN=2 STAGES=3 SWIZZLE=128 GROUP=1}
shapes="4096,4096,4096 8192,8192,8192 4095,4095,4095 1,4096,4096"
python3 tools/gpu/gemm_peer.py $shapes
for shape in $shapes; do
  build-gpu/bin/kitten bench gemm --device cuda --shape "$shape" --schedule "$s" --reps 20
done
