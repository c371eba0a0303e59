#!/usr/bin/env bash
# On the GPU machine, after build-gpu is built: the tile-DSL GEMM against torch.matmul
# (cuBLAS) at the issue's shapes, in the same run, every output checked, bf16 in and out;
# then the SASS of the 4096^3 kernel counted for HGMMA (wgmma) instructions.
#   tools/gpu/gemm_figures.sh [SCHEDULE]   (default: the kernel's own for the H100)
set -euo pipefail
cd "$(dirname "$0")/../.."
s=${1:-}
shapes="4096,4096,4096 8192,8192,8192 4096,4096,4000 4095,4095,4095"
python3 tools/gpu/gemm_peer.py $shapes
src=$(mktemp --suffix=.cu)
for shape in $shapes; do
  timeout 120 build-gpu/bin/kitten bench gemm --device cuda --shape "$shape" --schedule "$s" \
    --out bfloat16 --reps 20 --source "$src"
  if [ "$shape" = 4096,4096,4096 ]; then
    nvcc -w -arch=sm_90a -cubin -o "$src.cubin" "$src" &&
      echo "SASS: $(cuobjdump -sass "$src.cubin" | grep -c HGMMA) HGMMA instructions"
  fi
done
