#!/usr/bin/env bash
# On the GPU machine, after tools/gpu/check.sh built build-gpu: the tile-DSL attention
# forward against torch SDPA's flash and cuDNN backends at the issue's shapes
# (B*N = 16384, H*D = 2048), in the same run, every output checked.
#   tools/gpu/attention_figures.sh [SCHEDULE]
set -euo pipefail
cd "$(dirname "$0")/../.."
s=${1:-}
cases="4,16,4096,128 1,16,16384,128 4,16,4096,128,causal 1,16,16384,128,causal 4,32,4096,64"
python3 tools/gpu/attention_peer.py $cases
for c in $cases; do
  IFS=, read -r b h n d causal <<<"$c"
  timeout 120 build-gpu/bin/kitten bench flash_attention_fwd --device cuda --shape "$b,$h,$h,$n,$n,$d" \
    ${causal:+--causal} ${s:+--schedule "$s"} --reps 20
done
