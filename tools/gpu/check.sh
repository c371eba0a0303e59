#!/usr/bin/env bash
# On the GPU machine: build without the LLVM/Clang cpu JIT (that machine has no LLVM
# headers), run every test labelled cuda, then the GPU benchmarks with torch as the peer
# in the same run; print a short table last and write JSON into OUTDIR. Inside 10 minutes.
#   tools/gpu/check.sh OUTDIR
set -euo pipefail
out=${1:?usage: tools/gpu/check.sh OUTDIR}
cd "$(dirname "$0")/../.."
mkdir -p "$out"
build=build-gpu
cmake -S . -B "$build" -G Ninja -DKITTEN_WITH_LLVM=OFF -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1 ||
  { cat "$out/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
status=0
# The GPU machine cannot download: the MiniLM test reads the model from a directory carried
# there (model.safetensors, config.json, vocab.txt; docs/frontend.md), by default
# build/minilm-f16 (tools/minilm/to_float16.py makes its weights small enough to carry).
if [ -z "${KITTEN_MINILM_DIR:-}" ] && [ -f build/minilm-f16/model.safetensors ]; then
  export KITTEN_MINILM_DIR=$PWD/build/minilm-f16
fi
(cd "$build" && ctest -L cuda -j 4 --output-on-failure) > "$out/tests.log" 2>&1 || status=1
tail -3 "$out/tests.log"
[ $status -eq 0 ] || grep -E "Failed|FAILED" "$out/tests.log" | head -40
# On the GPU machine a cuda test may skip only for a reason that has nothing to do with the
# GPU (a cpu-only case); all of them skipping means the GPU was not used at all.
ran=$(grep -cE "Test +#[0-9]+: .*Passed" "$out/tests.log" || true)
if [ "$ran" -lt 10 ]; then
  echo "check.sh: only $ran cuda tests passed: was the GPU seen? (see $out/tests.log)"
  status=1
fi
"$build/bin/kitten_bench_cuda" --json "$out/kitten.json" > "$out/kitten_bench.log" 2>&1 || { cat "$out/kitten_bench.log"; exit 1; }
python3 tools/gpu/torch_peer.py --json "$out/torch.json" > "$out/torch.log" 2>&1 || { cat "$out/torch.log"; exit 1; }
python3 tools/gpu/report.py "$out/kitten.json" "$out/torch.json" "$out/report.json" | tee "$out/table.txt"
exit $status
