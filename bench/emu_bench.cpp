// The emulator's speed: the 256^3 tensor-core matmul (mma.sync through shared memory, one
// warp per 16x8 tile) and the shared-memory tiled float32 matmul, with the emulated
// warp-instructions per second and the shared-memory bank passes and conflicts per run.
// Run: build/bin/kitten_bench_emu.
#include <benchmark/benchmark.h>

#include <vector>

#include "backends/emu/emu_device.h"
#include "backends/emu/emulator.h"
#include "kernels/examples.h"

namespace kitten {
namespace {

void run_matmul(benchmark::State& state, const UOp& kernel, int64_t m, int64_t n, int64_t k,
                int in_bytes) {
  auto dev = make_emu_device();
  Allocator& al = dev->allocator();
  std::vector<unsigned char> a(size_t(m * k * in_bytes), 0x3f), b(size_t(k * n * in_bytes), 0x3f);
  Buffer da = al.alloc(a.size()), db = al.alloc(b.size()), dc = al.alloc(size_t(m * n * 4));
  al.copy_in(da, a.data(), a.size());
  al.copy_in(db, b.data(), b.size());
  LinearProgram p = linearize(kernel);
  auto compiled = emu_compile(p);
  LaunchDims grid, block;
  emu_launch_dims(*compiled, grid, block);
  std::vector<KernelArg> args = {dc, da, db};
  EmuStats stats;
  for (auto _ : state) emu_run(*compiled, grid, block, args, &stats);
  state.counters["warp_instr/s"] =
      benchmark::Counter(double(stats.warp_instructions), benchmark::Counter::kIsRate);
  state.counters["warp_instr"] =
      benchmark::Counter(double(stats.warp_instructions), benchmark::Counter::kAvgIterations);
  state.counters["shared_wavefronts"] =
      benchmark::Counter(double(stats.shared_wavefronts), benchmark::Counter::kAvgIterations);
  state.counters["bank_conflicts"] =
      benchmark::Counter(double(stats.bank_conflicts), benchmark::Counter::kAvgIterations);
  al.free(da);
  al.free(db);
  al.free(dc);
}

void BM_EmuMmaMatmul256(benchmark::State& state) {
  run_matmul(state, mma_matmul_kernel(256, 256, 256), 256, 256, 256, 2);
}
BENCHMARK(BM_EmuMmaMatmul256)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_EmuTiledMatmul128(benchmark::State& state) {
  run_matmul(state, tiled_matmul_kernel(128, 128, 128, 16), 128, 128, 128, 4);
}
BENCHMARK(BM_EmuTiledMatmul128)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace kitten

BENCHMARK_MAIN();
