// Schedules through the lowering pipeline on every device: upcast, unroll and local splits
// of matmul and reductions, with amounts that divide the extents and amounts that do not,
// against float64 references computed from inputs already rounded to the dtype.
#include <algorithm>
#include <cmath>
#include <tuple>

#include "dsl/lower.h"
#include "dsl/opt.h"
#include "dsl/printer.h"
#include "kernels/examples.h"
#include "test_device.h"

namespace kitten {
namespace {

class Scheduled : public DeviceTest {
 protected:
  bool blocks() const { return dev->props().target.has(kFeatureBlocks); }
};

struct Action {
  const char* name;
  int64_t axis, amount;
};

// The actions whose amounts fit their axes' extents (an amount above the extent is
// refused, and is tested in tests/dsl/lower_test.cpp); LOCAL only on devices with blocks.
Schedule fitted(const std::vector<Action>& actions, const std::vector<int64_t>& extents,
                bool blocks) {
  Schedule s;
  std::vector<int64_t> left = extents;
  for (const Action& a : actions) {
    int64_t& rest = left[size_t(a.axis)];
    std::string name = a.name;
    if (((name == "LOCAL" || name == "GROUP") && !blocks) || a.amount > rest ||
        (name == "GROUP" && a.amount < 2))
      continue;
    s.action(a.name, a.axis, a.amount);
    rest = (rest + a.amount - 1) / a.amount;
  }
  return s.empty() ? Schedule::parse("NOOPT=1") : s;
}

const std::vector<std::vector<Action>> kMatmulSchedules = {
    {},                                    // the heuristic
    {{"UPCAST", 1, 4}, {"UPCAST", 0, 3}},  // a register tile, 3 not dividing
    {{"UNROLL", 2, 4}},                    // the reduction unrolled
    {{"UPCAST", 1, 8}, {"UNROLL", 2, 3}},  // both
    {{"UNROLL", 2, 2}, {"UNROLL", 2, 2}},  // the reduction unrolled twice (found by the search)
    {{"UPCAST", 1, 2}, {"LOCAL", 1, 8}, {"LOCAL", 0, 4}, {"UPCAST", 0, 2}},  // threads
};

TEST_P(Scheduled, MatmulSchedulesEqualTheReference) {
  for (auto [m, n, kk] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {7, 7, 7}, {33, 33, 33}, {100, 100, 100}, {257, 7, 33}, {7, 257, 100}})
    for (const auto& actions : kMatmulSchedules) {
      Schedule s = actions.empty() ? Schedule() : fitted(actions, {m, n, kk}, blocks());
      SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(kk) +
                   " schedule '" + s.to_string() + "'");
      DType dt = dtypes::float32;
      HostData a = HostData::random(dt, size_t(m * kk), 4),
               b = HostData::random(dt, size_t(kk * n), 5);
      std::vector<double> scale, want = matmul_reference(a, b, m, n, kk, &scale);
      HostData c = HostData::poisoned(dt, size_t(m * n));
      DeviceBuffer da(*dev, a), db(*dev, b), dc(*dev, c);
      compile_kernel(*dev, matmul_kernel(m, n, kk, dt), s).run(args({&dc, &da, &db}));
      dc.read(c);
      expect_accumulated(c, want, scale, kk);
    }
}

const std::vector<std::vector<Action>> kReduceSchedules = {
    {},
    {{"UPCAST", 0, 4}},
    {{"UNROLL", 1, 4}},
    {{"UPCAST", 0, 3}, {"UNROLL", 1, 5}},
    {{"LOCAL", 0, 32}, {"UNROLL", 1, 2}},
    {{"GROUP", 1, 32}},                    // the block's threads share each reduction
    {{"GROUP", 1, 16}, {"UNROLL", 1, 3}},  // and each thread's part unrolled
    // Rows side by side, each row's partials staged apart (the search found copies
    // sharing the staging memory: a race)
    {{"GROUP", 1, 64}, {"UPCAST", 0, 2}},
    {{"GROUP", 1, 32}, {"UPCAST", 0, 3}},
    // Each thread's part unrolled by 4 innermost: one 16-byte load where rows allow it
    {{"UNROLL", 1, 4}, {"GROUP", 1, 32}},
    {{"UNROLL", 1, 4}},
};

TEST_P(Scheduled, ReductionSchedulesEqualTheReference) {
  for (int axis : {0, 1})
    for (auto [rows, cols] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 33}, {100, 7}, {257, 100}, {33, 257}})
      for (const auto& actions : kReduceSchedules) {
        int64_t kept = axis == 0 ? cols : rows, red = axis == 0 ? rows : cols;
        Schedule s = actions.empty() ? Schedule() : fitted(actions, {kept, red}, blocks());
        SCOPED_TRACE("axis " + std::to_string(axis) + " " + std::to_string(rows) + "x" +
                     std::to_string(cols) + " schedule '" + s.to_string() + "'");
        DType dt = dtypes::float32;
        HostData x = HostData::random(dt, size_t(rows * cols), 3);
        std::vector<double> scale, want = sum_reference(x, rows, cols, axis, scale);
        HostData out = HostData::poisoned(dt, size_t(kept));
        DeviceBuffer dx(*dev, x), dout(*dev, out);
        compile_kernel(*dev, reduce_kernel(rows, cols, axis, Op::ADD, dt), s)
            .run(args({&dout, &dx}));
        dout.read(out);
        expect_accumulated(out, want, scale, red);
      }
}

// Softmax rows shared by the block's threads: both reductions grouped, the normalising
// loop split over the same threads, at sizes the thread count does and does not divide.
TEST_P(Scheduled, GroupedSoftmaxEqualsTheReference) {
  if (!blocks()) GTEST_SKIP() << GetParam() << " has no blocks of threads to GROUP over";
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 33}, {7, 100}, {5, 257}})
    for (int64_t a : {8, 32}) {
      std::string text = "GROUP:1:" + std::to_string(a) + " GROUP:2:" + std::to_string(a) +
                         " LOCAL:3:" + std::to_string(a);
      SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols) + " " + text);
      HostData x = HostData::random(dtypes::float32, size_t(rows * cols), 8);
      std::vector<double> want = softmax_reference(x, rows, cols);
      HostData out = HostData::poisoned(dtypes::float32, x.values.size());
      DeviceBuffer dx(*dev, x), dout(*dev, out);
      compile_kernel(*dev, softmax_kernel(rows, cols), Schedule::parse(text))
          .run(args({&dout, &dx}));
      dout.read(out);
      expect_softmax(out, want, cols);
    }
}

// Upcast elementwise kernels move whole vectors where the rows allow it (1000 columns:
// 16-byte aligned rows), scalars where they do not (1001), and the results are exact.
TEST_P(Scheduled, UpcastElementwiseIsExact) {
  for (DType dt : {dtypes::float32, dtypes::bfloat16})
    for (int64_t cols : {1000, 1001})
      for (const char* text : {"UPCAST:1:4", "UPCAST:1:8 UPCAST:0:2", "UNROLL:0:3"}) {
        SCOPED_TRACE(std::string(dt.name()) + " 9x" + std::to_string(cols) + " " + text);
        HostData a = HostData::random(dt, size_t(9 * cols), 1),
                 b = HostData::random(dt, size_t(9 * cols), 2);
        HostData out = HostData::poisoned(dt, size_t(9 * cols));
        std::vector<double> want(out.values.size());
        for (size_t i = 0; i < want.size(); ++i) want[i] = rounded(dt, a.values[i] + b.values[i]);
        DeviceBuffer da(*dev, a), db(*dev, b), dout(*dev, out);
        compile_kernel(*dev, elementwise_add_kernel(9, cols, dt, false), Schedule::parse(text))
            .run(args({&dout, &da, &db}));
        dout.read(out);
        expect_exact(out, want);
      }
}

// A kernel cut into launches (CUT: the first parts with the schedule's actions, the rest
// as written under NOOPT=1, or each part with its own entries, @P) gives bit for bit what
// the uncut kernel gives: every output element sums its terms in the same order. (The
// heuristic may GROUP a part's reduction on blocks, which reorders the sum.)
TEST_P(Scheduled, ACutKernelEqualsTheUncutKernel) {
  for (auto [m, text, launches] : std::vector<std::tuple<int64_t, std::string, size_t>>{
           {100, "CUT:0:64 UPCAST:0:4 UPCAST:1:4 NOOPT=1", 2},
           {7, "CUT:0:3 NOOPT=1", 2},
           {100, "CUT:1:99 UNROLL:2:4 NOOPT=1", 2},
           {100, "CUT:0:64 UPCAST:0:4 NOOPT=1 UNROLL:2:4@1 UPCAST:1:3@1", 2},
           {100, "CUT:0:32 CUT:0:65 UPCAST:1:4@0 UNROLL:2:2@1 UPCAST:0:3@1 NOOPT=1@2", 3}}) {
    SCOPED_TRACE(std::to_string(m) + " " + text);
    int64_t n = 100, kk = 37;
    DType dt = dtypes::float32;
    HostData a = HostData::random(dt, size_t(m * kk), 4),
             b = HostData::random(dt, size_t(kk * n), 5);
    HostData one = HostData::poisoned(dt, size_t(m * n)), two = one;
    DeviceBuffer da(*dev, a), db(*dev, b), d1(*dev, one), d2(*dev, two);
    compile_kernel(*dev, matmul_kernel(m, n, kk, dt), Schedule::parse("NOOPT=1"))
        .run(args({&d1, &da, &db}));
    CompiledKernel cut = compile_kernel(*dev, matmul_kernel(m, n, kk, dt), Schedule::parse(text));
    EXPECT_EQ(cut.then.size() + 1, launches);
    cut.run(args({&d2, &da, &db}));
    d1.read(one);
    d2.read(two);
    std::vector<double> scale, want = matmul_reference(a, b, m, n, kk, &scale);
    expect_accumulated(two, want, scale, kk);
    EXPECT_EQ(one.bytes, two.bytes);
  }
}

// A reduction split across blocks (SPLIT): partials into a temporary buffer, then the
// kernel itself reducing them; row and column sums, matmul and the two-output kernel, at
// amounts that divide the reduction and do not.
TEST_P(Scheduled, SplitReductionsEqualTheReference) {
  for (auto [rows, cols, axis, n] : std::vector<std::tuple<int64_t, int64_t, int, int64_t>>{
           {3, 1000, 1, 8}, {3, 1000, 1, 7}, {1000, 5, 0, 16}, {1, 257, 1, 257}}) {
    std::string text = "SPLIT:1:" + std::to_string(n);
    SCOPED_TRACE("sum axis " + std::to_string(axis) + " " + std::to_string(rows) + "x" +
                 std::to_string(cols) + " " + text);
    HostData x = HostData::random(dtypes::float32, size_t(rows * cols), 10);
    int64_t kept = axis == 0 ? cols : rows, red = axis == 0 ? rows : cols;
    std::vector<double> scale, want = sum_reference(x, rows, cols, axis, scale);
    HostData out = HostData::poisoned(dtypes::float32, size_t(kept));
    DeviceBuffer dx(*dev, x), dout(*dev, out);
    CompiledKernel k = compile_kernel(
        *dev, reduce_kernel(rows, cols, axis, Op::ADD, dtypes::float32), Schedule::parse(text));
    EXPECT_EQ(k.then.size(), 1u);
    EXPECT_EQ(k.temps.size(), 1u);
    for (int rep = 0; rep < 2; ++rep) {  // the temporaries are reused
      k.run(args({&dout, &dx}));
      dout.read(out);
      expect_accumulated(out, want, scale, red);
    }
  }
  {
    SCOPED_TRACE("one sum of 100,003 terms, the heuristic schedule");
    HostData x = HostData::random(dtypes::float32, 100003, 12);
    std::vector<double> want(1, 0.0), scale(1, 0.0);
    for (double v : x.values) want[0] += v, scale[0] += std::abs(v);
    HostData out = HostData::poisoned(dtypes::float32, 1);
    DeviceBuffer dx(*dev, x), dout(*dev, out);
    CompiledKernel k = compile_kernel(*dev, reduce_kernel(1, 100003, 1, Op::ADD, dtypes::float32));
    EXPECT_EQ(k.then.size(), blocks() ? 1u : 0u);
    k.run(args({&dout, &dx}));
    dout.read(out);
    expect_accumulated(out, want, scale, 100003);
  }
  {
    SCOPED_TRACE("row sums 64x1000 SPLIT:1:8, the partials and the combine with their own entries");
    HostData x = HostData::random(dtypes::float32, 64000, 13);
    std::vector<double> scale, want = sum_reference(x, 64, 1000, 1, scale);
    HostData out = HostData::poisoned(dtypes::float32, 64);
    DeviceBuffer dx(*dev, x), dout(*dev, out);
    compile_kernel(*dev, reduce_kernel(64, 1000, 1, Op::ADD, dtypes::float32),
                   Schedule::parse("SPLIT:1:8 UPCAST:0:4@0 UNROLL:1:5@0 UPCAST:0:2@1"))
        .run(args({&dout, &dx}));
    dout.read(out);
    expect_accumulated(out, want, scale, 1000);
  }
  {
    SCOPED_TRACE("matmul 7x9x100 SPLIT:2:6");
    HostData a = HostData::random(dtypes::float32, 700, 4),
             b = HostData::random(dtypes::float32, 900, 5);
    std::vector<double> scale, want = matmul_reference(a, b, 7, 9, 100, &scale);
    HostData c = HostData::poisoned(dtypes::float32, 63);
    DeviceBuffer da(*dev, a), db(*dev, b), dc(*dev, c);
    compile_kernel(*dev, matmul_kernel(7, 9, 100, dtypes::float32), Schedule::parse("SPLIT:2:6"))
        .run(args({&dc, &da, &db}));
    dc.read(c);
    expect_accumulated(c, want, scale, 100);
  }
  {
    SCOPED_TRACE("sum and squares 5x300 SPLIT:1:4");
    HostData x = HostData::random(dtypes::float32, 1500, 11);
    std::vector<double> s(5, 0.0), q(5, 0.0), ss(5, 0.0), qs(5, 0.0);
    for (size_t i = 0; i < 1500; ++i) {
      double v = x.values[i];
      s[i / 300] += v, q[i / 300] += v * v, ss[i / 300] += std::abs(v), qs[i / 300] += v * v;
    }
    HostData hs = HostData::poisoned(dtypes::float32, 5), hq = hs;
    DeviceBuffer dx(*dev, x), ds(*dev, hs), dq(*dev, hq);
    CompiledKernel k =
        compile_kernel(*dev, sum_and_squares_kernel(5, 300), Schedule::parse("SPLIT:1:4"));
    EXPECT_EQ(k.temps.size(), 2u);
    k.run(args({&ds, &dq, &dx}));
    ds.read(hs);
    dq.read(hq);
    expect_accumulated(hs, s, ss, 300);
    expect_accumulated(hq, q, qs, 300);
  }
}

// Vector accesses wider than the device moves (float32x8 on 16-byte GPUs, narrow-float
// vectors on a cpu) are split by the legalize pass into the widths it has; the copy is exact.
TEST_P(Scheduled, WideVectorAccessesAreSplitToTheTargetsWidths) {
  for (DType dt : {dtypes::float32, dtypes::bfloat16}) {
    SCOPED_TRACE(dt.name());
    const int64_t n = 64;
    DType v8 = dt.vec(8);
    UOp out = param(0, dt.ptr()), x = param(1, dt.ptr());
    UOp i = range(n / 8, 0, AxisKind::Global);
    UOp src = UOp::make(Op::INDEX, v8.ptr(), {x, i * 8});
    UOp dst = UOp::make(Op::INDEX, v8.ptr(), {out, i * 8});
    UOp k = sink({end(store(dst, load(src)), {i})}, "copy8");
    const Target& t = dev->props().target;
    int widest = 0;
    for (const UOp& u : toposort(lower(k, t)))
      if (u.op() == Op::LOAD) widest = std::max(widest, int(u.dtype().count()));
    EXPECT_EQ(widest, std::min(8, t.max_vector_lanes(AddrSpace::Global, dt)));
    HostData hx = HostData::random(dt, size_t(n), 9), hout = HostData::poisoned(dt, size_t(n));
    DeviceBuffer dx(*dev, hx), dout(*dev, hout);
    compile_kernel(*dev, k).run(args({&dout, &dx}));
    dout.read(hout);
    expect_exact(hout, hx.values);
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, Scheduled, testing::ValuesIn(test_devices()), test_name);

}  // namespace
}  // namespace kitten
