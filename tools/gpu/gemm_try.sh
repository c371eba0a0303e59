set -e
cmake -S . -B build-gpu -G Ninja -DKITTEN_WITH_LLVM=OFF -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build-gpu -j 16 --target kitten cuda_kernel_tests > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
./build-gpu/bin/cuda_kernel_tests 2>&1 | tail -2
K=./build-gpu/bin/kitten
python3 tools/gpu/gemm_peer.py 4096,4096,4096
for s in "BM=128 BN=128 BK=32 WM=2 WN=2 STAGES=4 SWIZZLE=128" "BM=128 BN=128 BK=64 WM=2 WN=2 STAGES=3 SWIZZLE=128" "BM=128 BN=256 BK=64 WM=2 WN=4 STAGES=3 SWIZZLE=128" "BM=128 BN=128 BK=64 WM=2 WN=2 STAGES=4 SWIZZLE=128" "BM=256 BN=128 BK=64 WM=4 WN=2 STAGES=3 SWIZZLE=128"; do
  $K bench gemm --device cuda --shape 4096,4096,4096 --schedule "$s" | grep -E "schedule|time|resources|FAILED" || true
done
