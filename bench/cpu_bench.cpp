// The cpu backend: compile latency per kernel (in-process Clang + ORC vs a `clang -O2
// -shared` subprocess plus dlopen, same kernels, no cache), elementwise add and row sum
// bandwidth against memcpy, and matmul GFLOP/s. Run: build/bin/kitten_bench_cpu.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "backends/cpu/clang_jit.h"
#include "backends/cpu/cpu_device.h"
#include "kernels/examples.h"

namespace kitten {
namespace {

std::vector<UOp> kernels() {
  return {elementwise_add_kernel(64, 64, dtypes::float32, true),
          reduce_kernel(64, 64, 1, Op::ADD, dtypes::float32),
          matmul_kernel(64, 64, 64, dtypes::float32), sum_and_squares_kernel(64, 64),
          stencil_kernel(4096)};
}

// Compile and load one kernel per iteration, round robin over five kernels, no cache.
void compile_bench(benchmark::State& state, CpuCompileMode mode) {
  if (mode == CpuCompileMode::Jit && !cpu_has_jit()) {
    state.SkipWithError("this build has no LLVM/Clang");
    return;
  }
  if (mode == CpuCompileMode::Subprocess) setenv("KITTEN_CC", "clang", 1);
  auto dev = make_cpu_device(mode, CompileCache(""));
  std::vector<RenderedKernel> rendered;
  for (const UOp& k : kernels()) rendered.push_back(dev->render(linearize(k)));
  size_t i = 0;
  for (auto _ : state) {
    const RenderedKernel& r = rendered[i++ % rendered.size()];
    auto program = dev->load(dev->compiler().compile(r.source), r.info);
    benchmark::DoNotOptimize(program.get());
  }
  state.SetLabel(dev->props().compiler);
}
void BM_CompileInProcess(benchmark::State& s) { compile_bench(s, CpuCompileMode::Jit); }
void BM_CompileSubprocess(benchmark::State& s) { compile_bench(s, CpuCompileMode::Subprocess); }
BENCHMARK(BM_CompileInProcess)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_CompileSubprocess)->Unit(benchmark::kMillisecond)->UseRealTime();

constexpr int64_t kElems = int64_t(1) << 24;  // 64 MiB per float32 buffer

// out = a + b: bytes moved = 3 buffers.
void BM_ElementwiseAdd(benchmark::State& state) {
  auto dev = make_cpu_device();
  Allocator& al = dev->allocator();
  Buffer a = al.alloc(kElems * 4), b = al.alloc(kElems * 4), out = al.alloc(kElems * 4);
  std::memset(a.ptr, 0, kElems * 4);
  std::memset(b.ptr, 0, kElems * 4);
  std::memset(out.ptr, 0, kElems * 4);
  CompiledKernel k =
      compile_kernel(*dev, elementwise_add_kernel(kElems / 1024, 1024, dtypes::float32, false));
  std::vector<KernelArg> args = {out, a, b};
  for (auto _ : state) k.run(args);
  state.SetBytesProcessed(state.iterations() * kElems * 4 * 3);
  al.free(a);
  al.free(b);
  al.free(out);
}
BENCHMARK(BM_ElementwiseAdd)->Unit(benchmark::kMillisecond)->UseRealTime();

// A sum of each row of 1024 float32: bytes moved = the input.
void BM_RowSum(benchmark::State& state) {
  auto dev = make_cpu_device();
  Allocator& al = dev->allocator();
  Buffer x = al.alloc(kElems * 4), out = al.alloc(kElems / 1024 * 4);
  std::memset(x.ptr, 0, kElems * 4);
  CompiledKernel k =
      compile_kernel(*dev, reduce_kernel(kElems / 1024, 1024, 1, Op::ADD, dtypes::float32));
  std::vector<KernelArg> args = {out, x};
  for (auto _ : state) k.run(args);
  state.SetBytesProcessed(state.iterations() * kElems * 4);
  al.free(x);
  al.free(out);
}
BENCHMARK(BM_RowSum)->Unit(benchmark::kMillisecond)->UseRealTime();

// memcpy of one buffer into another: bytes moved = 2 buffers.
void BM_Memcpy(benchmark::State& state) {
  std::vector<float> a(kElems, 1.0f), out(kElems, 0.0f);
  for (auto _ : state) {
    std::memcpy(out.data(), a.data(), kElems * 4);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * kElems * 4 * 2);
}
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();

// The matmul kernel at 512^3 with the heuristic schedule (an 8 x 8 register tile).
void BM_Matmul(benchmark::State& state) {
  const int64_t n = 512;
  auto dev = make_cpu_device();
  Allocator& al = dev->allocator();
  std::vector<float> host(size_t(n * n), 0.5f);
  Buffer a = al.alloc(n * n * 4), b = al.alloc(n * n * 4), c = al.alloc(n * n * 4);
  al.copy_in(a, host.data(), n * n * 4);
  al.copy_in(b, host.data(), n * n * 4);
  CompiledKernel k = compile_kernel(*dev, matmul_kernel(n, n, n, dtypes::float32));
  std::vector<KernelArg> args = {c, a, b};
  for (auto _ : state) k.run(args);
  state.counters["GFLOP/s"] = benchmark::Counter(
      double(2 * n * n * n) * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  al.free(a);
  al.free(b);
  al.free(c);
}
BENCHMARK(BM_Matmul)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace kitten

BENCHMARK_MAIN();
