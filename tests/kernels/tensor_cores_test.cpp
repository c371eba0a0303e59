// TC=1: a generated matrix product routed onto the tile GEMM. The recogniser reads every
// layout and refuses what is not a product (with the reason); routed kernels equal the
// float64 reference of the inputs as stored (bf16/f16) within the accumulation bound, on
// emu (cuda in cuda_kernel_tests), and the same kernel unrouted; a cpu refuses by name.
#include "kernels/tensor_cores.h"

#include "../backends/test_device.h"
#include "../expect_thrown.h"
#include "dsl/lower.h"
#include "kernels/examples.h"

namespace kitten {
namespace {

TEST(TensorCores, RecognisesEveryLayoutOfAProduct) {
  for (bool at : {false, true})
    for (bool bt : {false, true}) {
      std::string why;
      std::optional<GemmProblem> p =
          matmul_problem(matmul_kernel(48, 40, 72, dtypes::bfloat16, at, bt), &why);
      ASSERT_TRUE(p) << why;
      EXPECT_EQ(p->m, 48);
      EXPECT_EQ(p->n, 40);
      EXPECT_EQ(p->k, 72);
      EXPECT_EQ(p->in, dtypes::bfloat16);
      EXPECT_EQ(p->out, dtypes::bfloat16);
      EXPECT_EQ(p->a_transposed, at);
      EXPECT_EQ(p->b_transposed, bt);
      EXPECT_EQ(p->lda, at ? 48 : 72);
      EXPECT_EQ(p->ldb, bt ? 72 : 40);
      EXPECT_EQ(p->ldc, 40);
      EXPECT_EQ(p->c_slot, 0);
      EXPECT_EQ(p->a_slot, 1);
      EXPECT_EQ(p->b_slot, 2);
    }
  std::optional<GemmProblem> gemv = matmul_problem(matmul_kernel(1, 64, 96, dtypes::float16));
  ASSERT_TRUE(gemv);
  EXPECT_EQ(gemv->m, 1);
  EXPECT_EQ(gemv->n, 64);
  EXPECT_EQ(gemv->in, dtypes::float16);
}

TEST(TensorCores, RefusesWhatIsNotAProductWithTheReason) {
  auto why_not = [](const UOp& k) {
    std::string why;
    EXPECT_FALSE(matmul_problem(k, &why)) << k.name_arg();
    return why;
  };
  EXPECT_NE(why_not(matmul_kernel(16, 16, 16, dtypes::float32)).find("not both bfloat16"),
            std::string::npos);
  EXPECT_NE(why_not(reduce_kernel(8, 32, 1, Op::ADD, dtypes::float32)).find("one product"),
            std::string::npos);
  EXPECT_NE(why_not(softmax_kernel(8, 32)).find("on floats"), std::string::npos);
}

// A 16x16x16 bf16 product written out as the generator writes it, with one thing changed.
enum class Change { None, ResetInsideTheLoop, ResultThroughInt, OperandSlotsSwapped, PitchOf20 };
UOp product(Change change) {
  DType bf = dtypes::bfloat16, f = dtypes::float32;
  auto i32 = [](int64_t v) { return const_int(dtypes::int32, v); };
  bool swapped = change == Change::OperandSlotsSwapped;
  int64_t lda = change == Change::PitchOf20 ? 20 : 16;
  UOp c = param(0, bf.ptr()), a = param(swapped ? 2 : 1, bf.ptr()),
      b = param(swapped ? 1 : 2, bf.ptr());
  UOp i = range(16, 0, AxisKind::Global), j = range(16, 1, AxisKind::Global);
  UOp r = range(16, 2, AxisKind::Reduce);
  UOp acc = define_reg(f, 1, 0);
  std::vector<UOp> outer{acc, i, j};
  if (change == Change::ResetInsideTheLoop) outer.push_back(r);
  UOp init =
      store(index(UOp::make(Op::AFTER, std::span<const UOp>(outer)), i32(0)), const_(f, 0.0));
  UOp in_loop = after(acc, {init, r});
  UOp prod = cast(load(index(a, i * lda + r)), f) * cast(load(index(b, r * 16 + j)), f);
  UOp loop = end(store(index(in_loop, i32(0)), load(index(in_loop, i32(0))) + prod), {r});
  UOp result = load(index(after(acc, {loop}), i32(0)));
  if (change == Change::ResultThroughInt) result = cast(cast(result, dtypes::int32), f);
  return sink({end(store(index(c, i * 16 + j), cast(result, bf)), {i, j})}, "product");
}

TEST(TensorCores, RefusesAccumulatorsAndCastsThatAreNotTheProducts) {
  std::string why;
  EXPECT_TRUE(matmul_problem(product(Change::None), &why)) << why;
  EXPECT_FALSE(matmul_problem(product(Change::ResetInsideTheLoop), &why));
  EXPECT_NE(why.find("reset inside the reduction"), std::string::npos) << why;
  EXPECT_FALSE(matmul_problem(product(Change::ResultThroughInt), &why));
  std::optional<GemmProblem> strided = matmul_problem(product(Change::PitchOf20), &why);
  ASSERT_TRUE(strided) << why;
  EXPECT_EQ(strided->lda, 20);
  register_tensor_core_route();
  Target h100 = h100_target();
  try {
    lower_kernels(product(Change::OperandSlotsSwapped), h100, Schedule::parse("TC=1"));
    ADD_FAILURE() << "operands at other slots routed";
  } catch (const ScheduleError& e) {
    EXPECT_NE(std::string(e.what()).find("slots 0, 1 and 2 (this kernel: 0, 2, 1)"),
              std::string::npos)
        << e.what();
  }
  try {
    lower_kernels(product(Change::PitchOf20), h100, Schedule::parse("TC=1 REPACK=1"));
    ADD_FAILURE() << "a strided operand repacked";
  } catch (const ScheduleError& e) {
    EXPECT_NE(std::string(e.what()).find("dense operands only"), std::string::npos) << e.what();
  }
}

TEST(TensorCores, ACpuOrAProgramWithoutTheRouteRefusesByName) {
  UOp k = matmul_kernel(64, 64, 64, dtypes::bfloat16);
  Schedule tc = Schedule::parse("TC=1");
  Target h100 = h100_target();
  auto refused = [](auto f, const std::string& says) { expect_thrown<ScheduleError>(f, says); };
  // lower() lowers one kernel through the passes: no route takes TC=1 there.
  refused([&] { lower(k, h100, tc); }, "register_tensor_core_route");
  register_tensor_core_route();
  register_tensor_core_route();  // once
  refused([&] { lower_kernels(k, host_target("x86_64", 2), tc); }, "needs tensor cores");
  refused([&] { lower_kernels(k, h100, Schedule::parse("TC=1 UPCAST:0:2")); }, "not actions");
  refused([&] { lower_kernels(matmul_kernel(16, 16, 16, dtypes::float32), h100, tc); },
          "TC=1 needs a matrix product");
  refused([&] { lower_kernels(k, h100, Schedule::parse("TC=1 BM=48")); }, "gemm schedule");
  // The Hopper schedule by default: A, B and C described as the tensor maps it takes.
  LoweredKernels hopper = lower_kernels(k, h100, tc);
  ASSERT_EQ(hopper.maps.size(), 3u);
  EXPECT_EQ(hopper.maps[0], (MapParam{1, {64, 64}, {128}}));
  EXPECT_EQ(hopper.maps[2], (MapParam{0, {64, 64}, {128}}));
}

class TensorCores : public DeviceTest {};

// The routed kernel (and the kernel as generated, unrouted, on the same inputs) against
// the float64 reference.
void check_routed(Device& dev, int64_t m, int64_t n, int64_t k, DType dt, bool at, bool bt,
                  const std::string& knobs, uint64_t seed) {
  SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " " +
               std::string(dt.name()) + (at ? " A^T" : "") + (bt ? " B^T" : "") + " '" + knobs +
               "'");
  register_tensor_core_route();
  UOp kernel = matmul_kernel(m, n, k, dt, at, bt);
  HostData a = HostData::random(dt, size_t(m * k), seed),
           b = HostData::random(dt, size_t(k * n), seed + 1);
  std::vector<double> want(size_t(m * n), 0.0), scale(want.size(), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t r = 0; r < k; ++r) {
        double t = a.values[size_t(at ? r * m + i : i * k + r)] *
                   b.values[size_t(bt ? j * k + r : r * n + j)];
        want[size_t(i * n + j)] += t;
        scale[size_t(i * n + j)] += std::fabs(t);
      }
  DeviceBuffer da(dev, a), db(dev, b);
  for (const char* s : {"", "TC=1 "}) {
    HostData c = HostData::poisoned(dt, want.size());
    DeviceBuffer dc(dev, c);
    try {
      CompiledKernel ck = compile_kernel(dev, kernel, Schedule::parse(s + knobs));
      ck.run(std::vector<KernelArg>{dc.buf, da.buf, db.buf});
    } catch (const std::exception& e) {
      FAIL() << s << e.what();
    }
    dc.read(c);
    EXPECT_TRUE(expect_accumulated(c, want, scale, k)) << (*s ? "routed" : "generated");
  }
}

TEST_P(TensorCores, RoutedProductsEqualTheReference) {
  uint64_t seed = 500;
  const std::string small = "BM=32 BN=32 BK=32 WM=2 WN=1 STAGES=2 SWIZZLE=64 WGMMA=0";
  for (bool at : {false, true})
    for (bool bt : {false, true})
      check_routed(*dev, 33, 40, 72, dtypes::bfloat16, at, bt, small, seed += 2);
  check_routed(*dev, 1, 64, 100, dtypes::float16, false, false, small, seed += 2);
  check_routed(*dev, 17, 1, 31, dtypes::bfloat16, false, true, small, seed += 2);
  // The Hopper schedule (tensor maps of the caller's buffers), and with A and B repacked
  // into padded rows (K = 71: rows of 142 bytes).
  const std::string hopper = "BM=64 BN=64 BK=64 WM=1 WN=1 STAGES=2 EPILOGUE=0";
  check_routed(*dev, 72, 136, 64, dtypes::bfloat16, false, true, hopper, seed += 2);
  check_routed(*dev, 64, 64, 128, dtypes::bfloat16, false, false, hopper + " EPILOGUE=1",
               seed += 2);
  check_routed(*dev, 40, 48, 71, dtypes::bfloat16, false, false, hopper + " REPACK=1", seed += 2);
  check_routed(*dev, 64, 60, 64, dtypes::bfloat16, false, false, "",
               seed += 2);  // C rows of 120 bytes
  if (GetParam() == "cuda") {
    check_routed(*dev, 1000, 1023, 1024, dtypes::bfloat16, false, false, "", seed += 2);
    check_routed(*dev, 1000, 1024, 1024, dtypes::bfloat16, true, false, "", seed += 2);
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, TensorCores, testing::ValuesIn(block_devices()), test_name);

}  // namespace
}  // namespace kitten
