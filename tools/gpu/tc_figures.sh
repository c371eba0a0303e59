#!/usr/bin/env bash
# On the GPU machine, after build-gpu is built: the autotuner's search from cold (an empty
# compile cache, no stored results) over a generated (not DSL) bf16 matmul, where TC=1
# routes it onto the tile GEMM, with torch.matmul in the same run (tools/gpu/search_peer.py;
# every output checked); the search's candidates are timed after an L2 flush, as the
# peer is, and its winner is checked against the kernel as written.
#   tools/gpu/tc_figures.sh [BUDGET_SECONDS] [M,N,K ...]   (default 30; 4096,4096,4096)
set -uo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-30}
shift || true
shapes=${*:-4096,4096,4096}
k=build-gpu/bin/kitten
python3 tools/gpu/search_peer.py --gemm $shapes
export KITTEN_CACHE_DIR=$(mktemp -d)  # cold
for shape in $shapes; do
  t0=$(date +%s%N)
  timeout $((budget + 180)) $k search matmul --device cuda --shape "$shape" --dtype bfloat16 \
    --budget "$budget" 2> /tmp/search.err | grep -vE "^  refused"
  echo "search wall time: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  tail -3 /tmp/search.err
done
