#!/usr/bin/env bash
# On the GPU machine, after build-gpu is built: the autotuner's search from cold (an empty
# compile cache, no stored results) on the DSL GEMM and on generated reductions, with the
# torch peers in the same run (tools/gpu/search_peer.py); each GEMM winner then benched
# against the default schedule with `kitten bench` (every output checked).
#   tools/gpu/search_figures.sh [BUDGET_SECONDS]   (default 60)
set -uo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-60}
k=build-gpu/bin/kitten
python3 tools/gpu/search_peer.py --gemm 4096,4096,4096 4095,4095,4095 --rows-compiled 4096,4096 32768,1024 \
  --gemv 4096,4096 --cat 4096,1024,2048,1024 16384,256,512,256
export KITTEN_CACHE_DIR=$(mktemp -d)  # cold
for shape in 4096,4096,4096 4095,4095,4095; do
  t0=$(date +%s%N)
  timeout $((budget + 120)) $k search gemm --device cuda --shape "$shape" --budget "$budget" \
    2> /tmp/search.err | tee /tmp/search.out
  echo "search wall time: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  tail -3 /tmp/search.err
  best=$(sed -n "s/^best: '\([^']*\)'.*/\1/p" /tmp/search.out)
  extra=""
  [ "$shape" = 4095,4095,4095 ] && extra="REPACK=1"
  for s in "" $extra "$best"; do
    timeout 60 $k bench gemm --device cuda --shape "$shape" --schedule "$s" --out bfloat16 --reps 20 |
      grep -E "^schedule|^time|^check|error" || true
  done
done
for case in sum:4096,4096 sum:32768,1024 softmax:4096,4096 softmax:32768,1024 \
  layernorm:4096,4096 layernorm:32768,1024 concat:4096,1024,2048,1024 concat:16384,256,512,256; do
  timeout $((budget + 120)) $k search "${case%%:*}" --device cuda --shape "${case#*:}" \
    --budget $((budget / 2)) 2> /tmp/search.err | grep -vE "^  refused"
  tail -2 /tmp/search.err
done
# A generated GEMV (1x4096 times 4096x4096, bf16): the reduction SPLIT across blocks.
timeout $((budget + 120)) $k search matmul --device cuda --shape 1,4096,4096 --dtype bfloat16 \
  --budget "$budget" 2> /tmp/search.err | grep -vE "^  refused"
tail -2 /tmp/search.err
