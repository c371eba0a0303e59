// Every tile op on a device that runs blocks (emu here, cuda on the GPU): a float32 tile
// goes from a view through shared memory into registers, the op runs, the result goes to
// a view; checked against float64 (or float32, op by op, where the kernel rounds after
// every op) from the inputs as rounded.
#include <cmath>

#include "../backends/test_device.h"
#include "backends/emu/emu_device.h"
#include "dsl/lower.h"
#include "dsl/printer.h"
#include "tiles/tile.h"

namespace kitten {
namespace {

using namespace tiles;

UOp i32(int64_t v) { return const_int(dtypes::int32, v); }

// Y (out_rows x out_cols, float32) = f(X) for X rows x cols float32 on wm x wn warps.
UOp op_kernel(int rows, int cols, int wm, int wn, int out_rows, int out_cols,
              const std::function<Tile(Kernel&, const Tile&)>& f) {
  Kernel k("tile_op", wm, wn);
  View x = k.view(1, dtypes::float32, i32(rows), i32(cols), i32(cols), i32(1));
  View y = k.view(0, dtypes::float32, i32(out_rows), i32(out_cols), i32(out_cols), i32(1));
  Tile s = k.shared(dtypes::float32, rows, cols);
  Tile ready = k.landed(s, {k.copy(s, x, i32(0), i32(0))});
  Tile t = load(ready, k.reg(dtypes::float32, rows, cols));
  Tile r = f(k, t);
  if (r.type().elem != dtypes::float32) r = cast(r, dtypes::float32);
  k.store(y, i32(0), i32(0), r);
  return k.finish();
}

class TileOpKernels : public DeviceTest {
 protected:
  // Runs op_kernel on fresh data and returns the output; `x` gets the input.
  HostData run(int rows, int cols, int wm, int wn, int out_rows, int out_cols,
               const std::function<Tile(Kernel&, const Tile&)>& f, HostData& x,
               std::vector<KernelArg> extra = {}) {
    x = HostData::random(dtypes::float32, size_t(rows * cols), seed_++);
    HostData y = HostData::poisoned(dtypes::float32, size_t(out_rows * out_cols));
    DeviceBuffer dx(*dev, x), dy(*dev, y);
    std::vector<KernelArg> a = args({&dy, &dx});
    a.insert(a.end(), extra.begin(), extra.end());
    compile_kernel(*dev, op_kernel(rows, cols, wm, wn, out_rows, out_cols, f)).run(a);
    dy.read(y);
    return y;
  }
  uint64_t seed_ = 500;
};

// No product feeds a sum here: the lowering may fuse those (docs/testing.md).
TEST_P(TileOpKernels, ElementwiseMapsRoundAfterEveryOp) {
  HostData x(dtypes::float32, 0);
  HostData y = run(
      32, 48, 2, 1, 32, 48,
      [](Kernel&, const Tile& t) {
        Tile third = map(Op::FDIV, t, const_(dtypes::float32, 3.0));
        Tile s = map(Op::ADD, map(Op::SUB, third, const_(dtypes::float32, 1.0)), t);
        return map(Op::MAX, map(Op::NEG, map(Op::MUL, t, const_(dtypes::float32, 0.5))), s);
      },
      x);
  std::vector<double> want;
  for (double v : x.values) {
    float f = float(v), third = f / 3.0f, s = (third - 1.0f) + f;
    want.push_back(std::max(-(f * 0.5f), s));
  }
  expect_exact(y, want);
}

TEST_P(TileOpKernels, CastsRoundOnceToTheNarrowElement) {
  HostData x(dtypes::float32, 0);
  HostData y = run(
      16, 32, 1, 2, 16, 32, [](Kernel&, const Tile& t) { return cast(t, dtypes::bfloat16); }, x);
  std::vector<double> want;
  for (double v : x.values) want.push_back(rounded(dtypes::bfloat16, v));
  expect_exact(y, want);
}

TEST_P(TileOpKernels, Exp2AndLog2WithinTwoUlp) {
  HostData x(dtypes::float32, 0);
  HostData y = run(
      32, 32, 2, 2, 32, 32,
      [](Kernel&, const Tile& t) { return map(Op::ADD, exp2(t), log2(map(Op::MUL, t, t))); }, x);
  for (size_t i = 0; i < x.values.size(); ++i) {
    float v = float(x.values[i]);
    double want = std::exp2(double(v)) + std::log2(double(v * v));
    double bound = 2 * ulp(dtypes::float32, std::exp2(double(v))) +
                   2 * ulp(dtypes::float32, std::log2(double(v * v))) + ulp(dtypes::float32, want);
    EXPECT_NEAR(y.get(i), want, bound) << "element " << i << " of " << v;
  }
}

TEST_P(TileOpKernels, RowReductionsAcrossTheLanesOfARow) {
  for (int wm : {1, 2}) {
    HostData x(dtypes::float32, 0);
    HostData ys = run(
        32, 64, wm, 1, 32, 1, [](Kernel&, const Tile& t) { return row_sum(t); }, x);
    std::vector<double> want(32, 0.0), scale(32, 0.0), mx(32, -INFINITY);
    for (int r = 0; r < 32; ++r)
      for (int c = 0; c < 64; ++c) {
        double v = x.values[size_t(r * 64 + c)];
        want[size_t(r)] += v, scale[size_t(r)] += std::fabs(v);
      }
    expect_accumulated(ys, want, scale, 64);
    HostData ym = run(
        32, 64, wm, 1, 32, 1, [](Kernel&, const Tile& t) { return row_max(t); }, x);
    for (int r = 0; r < 32; ++r)
      for (int c = 0; c < 64; ++c)
        mx[size_t(r)] = std::max(mx[size_t(r)], x.values[size_t(r * 64 + c)]);
    expect_exact(ym, mx);
  }
}

TEST_P(TileOpKernels, ColumnReductionsAcrossTheLanesOfAColumn) {
  HostData x(dtypes::float32, 0);
  HostData y = run(
      48, 64, 1, 2, 1, 64, [](Kernel&, const Tile& t) { return col_max(t); }, x);
  std::vector<double> want(64, -INFINITY);
  for (int r = 0; r < 48; ++r)
    for (int c = 0; c < 64; ++c)
      want[size_t(c)] = std::max(want[size_t(c)], x.values[size_t(r * 64 + c)]);
  expect_exact(y, want);
  HostData ys = run(
      48, 64, 1, 2, 1, 64, [](Kernel&, const Tile& t) { return col_sum(t); }, x);
  std::vector<double> sum(64, 0.0), scale(64, 0.0);
  for (int r = 0; r < 48; ++r)
    for (int c = 0; c < 64; ++c) {
      double v = x.values[size_t(r * 64 + c)];
      sum[size_t(c)] += v, scale[size_t(c)] += std::fabs(v);
    }
  expect_accumulated(ys, sum, scale, 48);
}

// Online softmax's steps: x - rowmax, exp2, divided by the row sum; and a column broadcast.
TEST_P(TileOpKernels, BroadcastsOfRowAndColumnVectors) {
  HostData x(dtypes::float32, 0);
  HostData y = run(
      32, 32, 2, 1, 32, 32,
      [](Kernel&, const Tile& t) {
        Tile e = exp2(sub_row(t, row_max(t)));
        return div_row(e, row_sum(e));
      },
      x);
  for (int r = 0; r < 32; ++r) {
    double m = -INFINITY, s = 0;
    for (int c = 0; c < 32; ++c) m = std::max(m, x.values[size_t(r * 32 + c)]);
    for (int c = 0; c < 32; ++c) s += std::exp2(x.values[size_t(r * 32 + c)] - m);
    for (int c = 0; c < 32; ++c) {
      double want = std::exp2(x.values[size_t(r * 32 + c)] - m) / s;
      EXPECT_NEAR(y.get(size_t(r * 32 + c)), want, (32 + 8) * std::ldexp(1.0, -24) * want + 1e-30)
          << r << "," << c;
    }
  }
  HostData z = run(
      16, 48, 1, 3, 16, 48,
      [](Kernel&, const Tile& t) { return col_broadcast(Op::SUB, t, col_max(t)); }, x);
  std::vector<double> want(16 * 48);
  for (int c = 0; c < 48; ++c) {
    float m = -INFINITY;
    for (int r = 0; r < 16; ++r) m = std::max(m, float(x.values[size_t(r * 48 + c)]));
    for (int r = 0; r < 16; ++r) want[size_t(r * 48 + c)] = float(x.values[size_t(r * 48 + c)]) - m;
  }
  expect_exact(z, want);
}

// A causal mask aligned bottom-right by a run-time offset (Nkv - Nq).
TEST_P(TileOpKernels, MasksCompareCoordinatesWithRunTimeValues) {
  for (int64_t off : {0, 5, -3}) {
    HostData x(dtypes::float32, 0);
    UOp o = define_var("offset", -64, 64);
    HostData y =
        run(32, 32, 2, 2, 32, 32,
            [&](Kernel&, const Tile& t) {
              return mask(
                  t, [&](const UOp& r, const UOp& c) { return alu(Op::CMPLT, c, r + o + 1); },
                  -INFINITY);
            },
            x, {off});
    std::vector<double> want;
    for (int r = 0; r < 32; ++r)
      for (int c = 0; c < 32; ++c)
        want.push_back(c <= r + off ? x.values[size_t(r * 32 + c)] : -INFINITY);
    expect_exact(y, want);
  }
}

// An accumulator becomes the A operand of the next product in registers (P in P@V).
TEST_P(TileOpKernels, AnAccumulatorFeedsTheNextProductInRegisters) {
  const int m = 32, k = 32, n = 16;
  Kernel kb("p_at_v", 2, 1);
  View p = kb.view(1, dtypes::float32, i32(m), i32(k), i32(k), i32(1));
  View v = kb.view(2, dtypes::bfloat16, i32(k), i32(n), i32(n), i32(1));
  View o = kb.view(0, dtypes::float32, i32(m), i32(n), i32(n), i32(1));
  Tile sp = kb.shared(dtypes::float32, m, k), sv = kb.shared(dtypes::bfloat16, k, n);
  Tile pr = kb.landed(sp, {kb.copy(sp, p, i32(0), i32(0))});
  Tile vr = kb.landed(sv, {kb.copy(sv, v, i32(0), i32(0))});
  Owner rows_only{Unit::Warp, 2, 1, Split::GridRows, Split::None};
  Tile acc = load(pr, register_tile(dtypes::float32, m, k, Layout::Row, rows_only));
  Tile a = to_operand(acc, dtypes::bfloat16);
  Tile out0 = fill(kb.reg(dtypes::float32, m, n), 0.0);
  Tile b = load(vr, operand_tile(out0, vr, 'b', "AB"));
  kb.store(o, i32(0), i32(0), mma_AB(out0, a, b));
  UOp kernel = kb.finish();
  HostData hp = HostData::random(dtypes::float32, m * k, 600),
           hv = HostData::random(dtypes::bfloat16, k * n, 601);
  HostData ho = HostData::poisoned(dtypes::float32, m * n);
  std::vector<double> want(m * n, 0.0), scale(m * n, 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      for (int r = 0; r < k; ++r) {
        double t =
            rounded(dtypes::bfloat16, hp.values[size_t(i * k + r)]) * hv.values[size_t(r * n + j)];
        want[size_t(i * n + j)] += t, scale[size_t(i * n + j)] += std::fabs(t);
      }
  DeviceBuffer dp(*dev, hp), dv(*dev, hv), dout(*dev, ho);
  compile_kernel(*dev, kernel).run(args({&dout, &dp, &dv}));
  dout.read(ho);
  expect_accumulated(ho, want, scale, k);
}

TEST(TileOpErrors, ReductionsAndBroadcastsCheckTheirShapes) {
  Kernel k("t", 2, 2);
  Tile t = fill(k.reg(dtypes::float32, 32, 32), 0.0);
  std::string e;
  try {
    row_max(t);  // the columns are split over two warps
  } catch (const TileError& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("a reduction stays inside a warp"), std::string::npos) << e;
  Owner rows_only{Unit::Warp, 2, 2, Split::GridRows, Split::None};
  Tile r = fill(register_tile(dtypes::float32, 32, 32, Layout::Row, rows_only), 0.0);
  Tile other = fill(register_tile(dtypes::float32, 64, 32, Layout::Row, rows_only), 0.0);
  e.clear();
  try {
    sub_row(r, row_max(other));
  } catch (const TileError& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("takes rv<float32,32,w2x2:r->, not rv<float32,64,w2x2:r->"), std::string::npos)
      << e;
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Devices, TileOpKernels, testing::ValuesIn(block_devices()), test_name);

}  // namespace kitten

namespace kitten {
namespace {

using namespace tiles;

// A two-stage pipeline written by hand whose next copy is issued before the barrier: the
// copy into a slot races with the reads of that slot in the previous iteration, and the
// emulator says so; the same loop with the copy AFTER the barrier runs clean.
UOp hand_pipeline(bool ordered) {
  const int n = 4;
  Kernel k(ordered ? "pipeline_ok" : "pipeline_race", 1, 1);
  View x = k.view(1, dtypes::float32, i32(16 * n), i32(16), i32(16), i32(1));
  View y = k.view(0, dtypes::float32, i32(16 * n), i32(16), i32(16), i32(1));
  Ring ring = k.ring(dtypes::float32, 16, 16, Swizzle::None, 2);
  UOp first = UOp::make(Op::ASYNC_COMMIT, dtypes::token, {k.copy(ring[i32(0)], x, i32(0), i32(0))});
  k.loop(i32(n), [&](const UOp& i) {
    UOp wait = UOp::make(Op::WAIT_GROUP, dtypes::void_, {first}, int64_t(0));
    k.issue(wait);
    auto copy_next = [&](const Tile& next) {
      return UOp::make(Op::ASYNC_COMMIT, dtypes::token, {k.copy(next, x, (i + 1) * 16, i32(0))});
    };
    UOp early = ordered ? UOp() : copy_next(ring[(i + 1) % 2]);
    UOp bar = ordered ? UOp::make(Op::BARRIER, dtypes::void_, {wait})
                      : UOp::make(Op::BARRIER, dtypes::void_,
                                  {UOp::make(Op::GROUP, dtypes::void_, {wait, early})});
    Tile mine = {UOp::make(Op::AFTER, {ring[i % 2].node, bar})};
    k.issue(ordered ? copy_next({UOp::make(Op::AFTER, {ring[(i + 1) % 2].node, bar})}) : early);
    k.store(y, i * 16, i32(0), load(mine, k.reg(dtypes::float32, 16, 16)));
  });
  return k.finish();
}

TEST(TilePipelines, ACopyIntoASlotStillReadIsCaughtOnTheEmulator) {
  auto dev = make_emu_device();
  HostData x = HostData::random(dtypes::float32, 16 * 5 * 16, 700),
           y = HostData::poisoned(dtypes::float32, 64 * 16);
  DeviceBuffer dx(*dev, x), dy(*dev, y);
  compile_kernel(*dev, hand_pipeline(true)).run(args({&dy, &dx}));
  dy.read(y);
  std::vector<double> want(x.values.begin(), x.values.begin() + 64 * 16);
  expect_exact(y, want);
  std::string e;
  try {
    compile_kernel(*dev, hand_pipeline(false)).run(args({&dy, &dx}));
  } catch (const std::exception& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("async copy into shared memory"), std::string::npos) << e;
}

}  // namespace
}  // namespace kitten

namespace kitten {
namespace {

using namespace tiles;

// Registers -> a swizzled shared tile -> registers again, in both register layouts: every
// element comes back where it was.
class TileRoundTrips : public DeviceTest {};

TEST_P(TileRoundTrips, RegistersThroughSwizzledSharedMemory) {
  for (Swizzle sw : {Swizzle::None, Swizzle::B64, Swizzle::B128}) {
    SCOPED_TRACE(std::string(swizzle_name(sw)));
    const int rows = 64, cols = 64;
    Kernel k("round_trip", 2, 1);
    View x = k.view(1, dtypes::bfloat16, i32(rows), i32(cols), i32(cols), i32(1));
    View y = k.view(0, dtypes::float32, i32(rows), i32(cols), i32(cols), i32(1));
    Tile in = k.shared(dtypes::bfloat16, rows, cols, sw);
    Tile a =
        load(k.landed(in, {k.copy(in, x, i32(0), i32(0))}), k.reg(dtypes::bfloat16, rows, cols));
    Tile mid = k.shared(dtypes::bfloat16, rows, cols, sw, Layout::Col);
    UOp put = UOp::make(tile_ops().store, dtypes::void_, {mid.node, a.node});
    Tile back = {UOp::make(Op::AFTER, {mid.node, UOp::make(Op::BARRIER, dtypes::void_, {put})})};
    Owner o = k.owner();
    Tile c = load(back, register_tile(dtypes::bfloat16, rows, cols, Layout::Col, o));
    k.store(y, i32(0), i32(0), cast(c, dtypes::float32));
    UOp kernel = k.finish();
    int stores = 0;  // the register -> shared store goes as stmatrix where the target has it
    for (const UOp& u : toposort(lower(kernel, dev->props().target)))
      stores += u.op() == Op::STMATRIX;
    EXPECT_EQ(stores > 0, dev->props().target.has(kFeatureStmatrix));
    HostData hx = HostData::random(dtypes::bfloat16, rows * cols, 800),
             hy = HostData::poisoned(dtypes::float32, rows * cols);
    DeviceBuffer dx(*dev, hx), dy(*dev, hy);
    compile_kernel(*dev, kernel).run(args({&dy, &dx}));
    dy.read(hy);
    expect_exact(hy, hx.values);
  }
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Devices, TileRoundTrips, testing::ValuesIn(block_devices()), test_name);

}  // namespace kitten
