// The cuda backend where it can be checked without a GPU (the CUDA source of every
// built-in kernel compiles with NVRTC for sm_90a; a machine without a GPU says why), and
// what needs one (an out-of-bounds kernel is reported cleanly).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

#include "backends/c_renderer.h"
#include "backends/cuda/cuda_api.h"
#include "backends/cuda/cuda_device.h"
#include "backends/emu/emu_device.h"
#include "dsl/lower.h"
#include "kernels/examples.h"

namespace kitten {
namespace {

std::vector<std::pair<std::string, UOp>> kernels() {
  std::vector<std::pair<std::string, UOp>> ks;
  for (const std::string& n : builtin_kernel_names()) ks.emplace_back(n, builtin_kernel(n));
  ks.emplace_back("add_f16", elementwise_add_kernel(7, 1000, dtypes::float16, true));
  ks.emplace_back("add_bf16", elementwise_add_kernel(3, 1023, dtypes::bfloat16, false));
  ks.emplace_back("max_f16", reduce_kernel(5, 1023, 0, Op::MAX, dtypes::float16));
  ks.emplace_back("inplace", inplace_update_kernel(1000));
  ks.emplace_back("stencil", stencil_kernel(1023));
  ks.emplace_back("matmul_bf16", matmul_kernel(33, 17, 65, dtypes::bfloat16));
  ks.emplace_back("mma_matmul", mma_matmul_kernel(48, 24, 64));
  {  // a gated 16-byte vector copy
    DType f = dtypes::float32, v4 = f.vec(4);
    UOp in = param(1, f.ptr()), out = param(0, f.ptr());
    UOp i = range(101, 0, AxisKind::Global), m1 = const_(f, -1.0);
    UOp v = load(UOp::make(Op::INDEX, v4.ptr(), {in, i * 4, i < 100}),
                 UOp::make(Op::VECTORIZE, {m1, m1, m1, m1}));
    ks.emplace_back(
        "vec_copy",
        sink({end(store(UOp::make(Op::INDEX, v4.ptr(), {out, i * 4}), v), {i})}, "vec_copy"));
  }
  ks.emplace_back("add_e4m3", elementwise_add_kernel(7, 100, dtypes::float8_e4m3, true));
  ks.emplace_back("add_e5m2", elementwise_add_kernel(7, 100, dtypes::float8_e5m2, false));
  {  // an async copy of a 16-byte vector, waited for
    DType f = dtypes::float32, v4 = f.vec(4);
    UOp t = special(SpecialKind::ThreadIdx, 0, 32);
    UOp sm = define_local(f, 128, 0), in = param(1, f.ptr()), out = param(0, f.ptr());
    UOp copy = UOp::make(Op::ASYNC_COPY, dtypes::token,
                         {UOp::make(Op::INDEX, v4.ptr(AddrSpace::Local), {sm, t * 4}),
                          UOp::make(Op::INDEX, v4.ptr(), {in, t * 4})});
    UOp landed =
        UOp::make(Op::BARRIER, dtypes::void_, {UOp::make(Op::WAIT, dtypes::void_, {copy})});
    ks.emplace_back("async",
                    sink({store(index(out, t), load(index(after(sm, {landed}), t)))}, "async"));
  }
  return ks;
}

TEST(CudaSource, EveryBuiltinKernelCompilesWithNvrtcForSm90a) {
  if (!cu::nvrtc().loaded) GTEST_SKIP() << cu::nvrtc().why;
  auto nvrtc = make_nvrtc_compiler("sm_90a", CompileCache(""));
  for (const auto& [name, k] : kernels()) {
    RenderedKernel r = render_cuda(linearize(k));
    std::string cubin;
    try {
      cubin = nvrtc->compile(r.source);
    } catch (const BackendError& e) {
      ADD_FAILURE() << name << ": " << e.what() << "\n" << r.source;
      continue;
    }
    EXPECT_GT(cubin.size(), 0u) << name;
  }
}

// The lowering's map_grid gives the grid; the renderer takes the launch shape from the
// SPECIALs and runs an unlowered kernel's loops in one thread.
TEST(CudaSource, GlobalRangesBecomeTheGrid) {
  UOp add = elementwise_add_kernel(7, 1000, dtypes::float32, true);
  RenderedKernel r = render_cuda(linearize(lower(add, h100_target(), Schedule::parse("NOOPT=1"))));
  EXPECT_EQ(r.info.local.x, 256);
  EXPECT_EQ(r.info.global.x, 4);  // 1000 columns in blocks of 256
  EXPECT_EQ(r.info.global.y, 7);  // one block row per row
  EXPECT_NE(r.source.find("blockIdx.x"), std::string::npos) << r.source;
  EXPECT_NE(r.source.find("threadIdx.x"), std::string::npos) << r.source;
  EXPECT_EQ(r.source.find("for ("), std::string::npos) << r.source;
  RenderedKernel one = render_cuda(linearize(add));
  EXPECT_EQ(one.info.global.x * one.info.local.x, 1);
  EXPECT_NE(one.source.find("for ("), std::string::npos) << one.source;
  RenderedKernel t = render_cuda(linearize(tiled_matmul_kernel(64, 64, 64, 16)));
  EXPECT_EQ(t.info.global.x, 4);
  EXPECT_EQ(t.info.local.y, 16);
  EXPECT_NE(t.source.find("__syncthreads();"), std::string::npos);
  EXPECT_NE(t.source.find("__shared__ __align__(16) float smem0[256];"), std::string::npos);
}

TEST(CudaSource, LargeSharedMemoryIsDynamic) {
  DType f = dtypes::float32;
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp big = define_local(f, 16384, 0), small = define_local(f, 32, 1), out = param(0, f.ptr());
  UOp w = UOp::make(Op::BARRIER, dtypes::void_,
                    {store(index(big, t), const_(f, 1.0)), store(index(small, t), const_(f, 2.0))});
  UOp v = load(index(after(big, {w}), t)) + load(index(after(small, {w}), t));
  RenderedKernel r = render_cuda(linearize(sink({store(index(out, t), v)}, "big")));
  EXPECT_EQ(r.info.dynamic_shared, 65536u + 128u);
  EXPECT_NE(r.source.find("extern __shared__ __align__(1024) unsigned char kt_dynamic_smem[];"),
            std::string::npos)
      << r.source;
}

TEST(CudaSource, ACompileErrorShowsNvrtcsLogAndTheSource) {
  if (!cu::nvrtc().loaded) GTEST_SKIP() << cu::nvrtc().why;
  auto nvrtc = make_nvrtc_compiler("sm_90a", CompileCache(""));
  try {
    nvrtc->compile("extern \"C\" __global__ void k() {\n  int x = ;\n}\n");
    FAIL() << "compiled";
  } catch (const BackendError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("cuda: NVRTC (sm_90a) could not compile"), std::string::npos) << m;
    EXPECT_NE(m.find("> 2 |   int x = ;"), std::string::npos) << m;
  }
}

TEST(CudaDevice, WithoutAGpuSaysWhy) {
  std::string why = cuda_unavailable_reason();
  if (why.empty()) GTEST_SKIP() << "this machine has a GPU";
  try {
    make_cuda_device();
    FAIL() << "opened";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

TEST(CudaDevice, AnOutOfBoundsKernelIsReportedCleanly) {
  std::string why = cuda_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << "no GPU: " << why;
  auto dev = make_cuda_device(CompileCache(""));
  DType f = dtypes::float32;
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp out = param(0, f.ptr()), in = param(1, f.ptr());
  UOp far = t * (1 << 28) + (1 << 30);  // gigabytes past the end of a small buffer
  CompiledKernel k =
      compile_kernel(*dev, sink({store(index(out, t), load(index(in, far)))}, "reads_far"));
  Buffer a = dev->allocator().alloc(128), b = dev->allocator().alloc(128);
  std::vector<KernelArg> args = {a, b};
  try {
    k.run(args);
    FAIL() << "an illegal address went unreported";
  } catch (const BackendError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("cuda: kernel 'reads_far' (grid 1x1x1, block 32x1x1) failed:"),
              std::string::npos)
        << m;
    EXPECT_NE(m.find("the CUDA context is lost"), std::string::npos) << m;
  }
}

// The emulator with the GPU's own target profile lowers every kernel to the same graph as
// the GPU does, and runs it on the same fresh inputs; where the result is exact
// (element-wise ops, max, sums in a fixed order, copies) every output byte agrees.
TEST(CudaDevice, EmulatorAndGpuAgreeBitForBit) {
  std::string why = cuda_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << "no GPU: " << why;
  auto gpu = make_cuda_device(CompileCache(""));
  auto emu = make_emu_device(gpu->props().target);
  for (auto& [name, k] : kernels())
    EXPECT_EQ(lower_kernels(k, emu->props().target).kernels,
              lower_kernels(k, gpu->props().target).kernels)
        << name;
  std::random_device rd;
  uint64_t seed = std::getenv("KITTEN_TEST_SEED")
                      ? std::strtoull(std::getenv("KITTEN_TEST_SEED"), nullptr, 0)
                      : rd();
  SCOPED_TRACE("KITTEN_TEST_SEED=" + std::to_string(seed));
  const std::set<std::string> exact = {"add",      "sum",      "block_sum", "add_f16",
                                       "add_bf16", "max_f16",  "inplace",   "stencil",
                                       "vec_copy", "add_e4m3", "add_e5m2",  "async"};
  const size_t elems = 1 << 16;
  for (auto& [name, k] : kernels()) {
    if (!exact.count(name)) continue;
    SCOPED_TRACE(name);
    LinearProgram p = linearize(k);
    std::vector<std::vector<unsigned char>> init;  // per parameter slot
    std::mt19937_64 rng(seed ^ std::hash<std::string>{}(name));
    std::normal_distribution<double> normal(0.0, 1.0);
    for (const UOp& u : p.ops) {
      if (u.op() != Op::PARAM) continue;
      DType e = u.dtype().pointee();
      std::vector<unsigned char> bytes(elems * size_t(e.itemsize()), 0xFF);
      for (size_t i = 0; i < elems; ++i) {
        double v = normal(rng);
        if (const FloatFormat* f = e.narrow_float()) {
          uint32_t code = encode_float(*f, v);
          std::memcpy(&bytes[i * size_t(e.itemsize())], &code, size_t(e.itemsize()));
        } else {
          float x = float(v);
          std::memcpy(&bytes[i * 4], &x, 4);
        }
      }
      if (init.size() <= size_t(u.int_arg())) init.resize(size_t(u.int_arg()) + 1);
      init[size_t(u.int_arg())] = std::move(bytes);
    }
    init[0].assign(init[0].size(), 0xFF);  // slot 0 is the output: poisoned alike
    std::vector<std::vector<unsigned char>> results;
    for (Device* dev : {emu.get(), gpu.get()}) {
      std::vector<Buffer> bufs;
      std::vector<KernelArg> kargs;
      for (const auto& bytes : init) {
        bufs.push_back(dev->allocator().alloc(bytes.size()));
        dev->allocator().copy_in(bufs.back(), bytes.data(), bytes.size());
        kargs.emplace_back(std::in_place_type<Buffer>, bufs.back());
      }
      compile_kernel(*dev, k).run(kargs);
      for (size_t s = 0; s < bufs.size(); ++s) {
        std::vector<unsigned char> out(init[s].size());
        dev->allocator().copy_out(out.data(), bufs[s], out.size());
        results.push_back(std::move(out));
        dev->allocator().free(bufs[s]);
      }
    }
    size_t slots = init.size();
    for (size_t s = 0; s < slots; ++s)
      EXPECT_TRUE(results[s] == results[slots + s]) << "parameter " << s << " differs";
  }
}

}  // namespace
}  // namespace kitten
