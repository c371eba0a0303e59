// The built-in kernels on every device, against float64 references computed from inputs
// already rounded to the kernel's dtype, at awkward sizes, with docs/testing.md's tolerances.
#include <algorithm>
#include <tuple>

#include "kernels/examples.h"
#include "test_device.h"

namespace kitten {
namespace {

class Kernels : public DeviceTest {};

const std::vector<std::pair<int64_t, int64_t>> kShapes = {
    {1, 1}, {1, 7}, {7, 1000}, {3, 1023}, {64, 64}};

TEST_P(Kernels, ElementwiseAddWithBroadcasting) {
  for (DType dt : {dtypes::float32, dtypes::float16, dtypes::bfloat16, dtypes::float8_e4m3,
                   dtypes::float8_e5m2})
    for (bool bcast : {false, true})
      for (auto [m, n] : kShapes) {
        SCOPED_TRACE(std::string(dt.name()) + (bcast ? " broadcast " : " ") + std::to_string(m) +
                     "x" + std::to_string(n));
        HostData a = HostData::random(dt, size_t(m * n), 1),
                 b = HostData::random(dt, size_t(bcast ? n : m * n), 2);
        HostData out = HostData::poisoned(dt, size_t(m * n));
        std::vector<double> want(size_t(m * n));
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j)
            want[size_t(i * n + j)] =
                a.values[size_t(i * n + j)] + b.values[size_t(bcast ? j : i * n + j)];
        DeviceBuffer da(*dev, a), db(*dev, b), dout(*dev, out);
        CompiledKernel k = compile_kernel(*dev, elementwise_add_kernel(m, n, dt, bcast));
        k.run(args({&dout, &da, &db}));
        dout.read(out);
        expect_exact(out, want);
      }
}

TEST_P(Kernels, ReductionsAlongEachAxis) {
  for (DType dt : {dtypes::float32, dtypes::float16})
    for (Op op : {Op::ADD, Op::MAX})
      for (int axis : {0, 1})
        for (auto [m, n] :
             std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 1000}, {1023, 7}, {5, 1023}}) {
          SCOPED_TRACE(std::string(dt.name()) + " " + op_name(op) + " axis " +
                       std::to_string(axis) + " " + std::to_string(m) + "x" + std::to_string(n));
          HostData x = HostData::random(dt, size_t(m * n), 3);
          int64_t kept = axis == 0 ? n : m, red = axis == 0 ? m : n;
          std::vector<double> want(size_t(kept), op == Op::ADD ? 0.0 : -INFINITY),
              scale(size_t(kept), 0.0);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              double& w = want[size_t(axis == 0 ? j : i)];
              double v = x.values[size_t(i * n + j)];
              w = op == Op::ADD ? w + v : std::max(w, v);
              scale[size_t(axis == 0 ? j : i)] += std::abs(v);
            }
          HostData out = HostData::poisoned(dt, size_t(kept));
          DeviceBuffer dx(*dev, x), dout(*dev, out);
          CompiledKernel k = compile_kernel(*dev, reduce_kernel(m, n, axis, op, dt));
          k.run(args({&dout, &dx}));
          dout.read(out);
          if (op == Op::MAX)
            expect_exact(out, want);
          else
            expect_accumulated(out, want, scale, red);
        }
}

TEST_P(Kernels, MatmulWithARegisterAccumulator) {
  for (DType dt : {dtypes::float32, dtypes::bfloat16})
    for (auto [m, n, kk] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {1, 1, 1}, {7, 13, 1000}, {33, 17, 65}, {64, 64, 64}}) {
      SCOPED_TRACE(std::string(dt.name()) + " " + std::to_string(m) + "x" + std::to_string(n) +
                   "x" + std::to_string(kk));
      HostData a = HostData::random(dt, size_t(m * kk), 4),
               b = HostData::random(dt, size_t(kk * n), 5);
      std::vector<double> scale, want = matmul_reference(a, b, m, n, kk, &scale);
      HostData c = HostData::poisoned(dt, size_t(m * n));
      DeviceBuffer da(*dev, a), db(*dev, b), dc(*dev, c);
      CompiledKernel k = compile_kernel(*dev, matmul_kernel(m, n, kk, dt));
      k.run(args({&dc, &da, &db}));
      dc.read(c);
      expect_accumulated(c, want, scale, kk);
    }
}

// Softmax of each row: three loops per row (max, sum of exponentials, normalise). Each
// value lies within (cols + 8) float32 roundings of its float64 reference, relative: the
// exponential's few ulp, the sum of positive terms, the division (docs/testing.md).
TEST_P(Kernels, RowSoftmax) {
  for (auto [rows, cols] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 33}, {100, 257}, {3, 1000}}) {
    SCOPED_TRACE(std::to_string(rows) + "x" + std::to_string(cols));
    HostData x = HostData::random(dtypes::float32, size_t(rows * cols), 6);
    std::vector<double> want = softmax_reference(x, rows, cols);
    HostData out = HostData::poisoned(dtypes::float32, x.values.size());
    DeviceBuffer dx(*dev, x), dout(*dev, out);
    compile_kernel(*dev, softmax_kernel(rows, cols)).run(args({&dout, &dx}));
    dout.read(out);
    expect_softmax(out, want, cols);
  }
}

TEST_P(Kernels, OnePassWritesSumAndSumOfSquares) {
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 1000}, {1, 1023}}) {
    HostData x = HostData::random(dtypes::float32, size_t(m * n), 6);
    std::vector<double> s(size_t(m), 0.0), q(size_t(m), 0.0), abs_s(size_t(m), 0.0);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double v = x.values[size_t(i * n + j)];
        s[size_t(i)] += v;
        q[size_t(i)] += v * v;
        abs_s[size_t(i)] += std::abs(v);
      }
    HostData os = HostData::poisoned(dtypes::float32, size_t(m)),
             oq = HostData::poisoned(dtypes::float32, size_t(m));
    DeviceBuffer dx(*dev, x), ds(*dev, os), dq(*dev, oq);
    CompiledKernel k = compile_kernel(*dev, sum_and_squares_kernel(m, n));
    k.run(args({&ds, &dq, &dx}));
    ds.read(os);
    dq.read(oq);
    expect_accumulated(os, s, abs_s, n);
    expect_accumulated(oq, q, q, n);  // the squares are their own magnitudes
  }
}

TEST_P(Kernels, InPlaceUpdateSeenThroughAfter) {
  for (int64_t n : {1, 7, 1000}) {
    HostData buf = HostData::random(dtypes::float32, size_t(n), 7);
    std::vector<double> doubled(static_cast<size_t>(n)), want(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      doubled[size_t(i)] = buf.values[size_t(i)] * 2;
      want[size_t(i)] = doubled[size_t(i)] + 1;
    }
    HostData out = HostData::poisoned(dtypes::float32, size_t(n));
    DeviceBuffer dbuf(*dev, buf), dout(*dev, out);
    CompiledKernel k = compile_kernel(*dev, inplace_update_kernel(n));
    k.run(args({&dout, &dbuf}));
    dout.read(out);
    dbuf.read(buf);
    expect_exact(out, want);
    expect_exact(buf, doubled);
  }
}

TEST_P(Kernels, GatedLoadsAtTheEdges) {
  for (int64_t n : {1, 7, 1000, 1023}) {
    HostData x = HostData::random(dtypes::float32, size_t(n), 8);
    std::vector<double> want(static_cast<size_t>(n)), scale(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      double l = i > 0 ? x.values[size_t(i - 1)] : 0, r = i + 1 < n ? x.values[size_t(i + 1)] : 0;
      want[size_t(i)] = l + x.values[size_t(i)] + r;
      scale[size_t(i)] = std::abs(l) + std::abs(x.values[size_t(i)]) + std::abs(r);
    }
    HostData out = HostData::poisoned(dtypes::float32, size_t(n));
    DeviceBuffer dx(*dev, x), dout(*dev, out);
    CompiledKernel k = compile_kernel(*dev, stencil_kernel(n));
    k.run(args({&dout, &dx}));
    dout.read(out);
    expect_accumulated(out, want, scale, 3);
  }
}

// out[i] = x[i] converted to `to`: every float16 value (and Inf and NaN) through each
// narrow format, bit for bit as dsl's exact conversions give it (float8 saturating, float16
// and bfloat16 to Inf), and every code of each narrow format back to float32 exactly.
TEST_P(Kernels, NarrowFloatConversionsAreExact) {
  const size_t n = 65536;
  HostData x(dtypes::float32, n);
  for (size_t i = 0; i < n; ++i) x.set(i, decode_float(kFloat16, uint32_t(i)));
  DeviceBuffer dx(*dev, x);
  for (DType to : {dtypes::float16, dtypes::bfloat16, dtypes::float8_e4m3, dtypes::float8_e5m2}) {
    SCOPED_TRACE(std::string(to.name()));
    const FloatFormat& f = *to.narrow_float();
    UOp in = param(1, dtypes::float32.ptr()), out = param(0, to.ptr());
    UOp i = range(int64_t(n), 0, AxisKind::Global);
    CompiledKernel k = compile_kernel(
        *dev, sink({end(store(index(out, i), cast(load(index(in, i)), to)), {i})}, "narrow"));
    HostData o = HostData::poisoned(to, n);
    DeviceBuffer dout(*dev, o);
    k.run(args({&dout, &dx}));
    dout.read(o);
    int wrong = 0;
    for (size_t j = 0; j < n && wrong < 5; ++j) {
      uint32_t got = 0, want = encode_float(f, x.values[j]);
      std::memcpy(&got, &o.bytes[j * size_t(to.itemsize())], size_t(to.itemsize()));
      bool both_nan = std::isnan(decode_float(f, got)) && std::isnan(decode_float(f, want));
      if (got != want && !both_nan) {
        ++wrong;
        ADD_FAILURE() << x.values[j] << " -> 0x" << std::hex << got << ", want 0x" << want;
      }
    }
    // Back: every code of the format to float32.
    size_t codes = size_t(1) << f.bits();
    HostData c(to, codes);
    for (size_t j = 0; j < codes; ++j)
      std::memcpy(&c.bytes[j * size_t(to.itemsize())], &j, size_t(to.itemsize()));
    UOp in2 = param(1, to.ptr()), out2 = param(0, dtypes::float32.ptr());
    UOp r = range(int64_t(codes), 0, AxisKind::Global);
    CompiledKernel back = compile_kernel(
        *dev, sink({end(store(index(out2, r), cast(load(index(in2, r)), dtypes::float32)), {r})},
                   "widen"));
    HostData w = HostData::poisoned(dtypes::float32, codes);
    DeviceBuffer dc(*dev, c), dw(*dev, w);
    back.run(args({&dw, &dc}));
    dw.read(w);
    for (size_t j = 0; j < codes; ++j) {
      double want = decode_float(f, uint32_t(j));
      if (!(w.get(j) == want || (std::isnan(w.get(j)) && std::isnan(want)))) {
        ADD_FAILURE() << "code 0x" << std::hex << j << " -> " << w.get(j) << ", want " << want;
        break;
      }
    }
  }
}

// 16-byte vector loads and stores: out[4i..4i+3] = x[4i..4i+3] for i < n, and for the
// extra i == n the load is gated off and yields its alternative vector (-1, -1, -1, -1).
TEST_P(Kernels, GatedVectorLoadsAndStores) {
  DType f = dtypes::float32, v4 = f.vec(4);
  for (int64_t n : {1, 7, 1000}) {
    UOp in = param(1, f.ptr()), out = param(0, f.ptr());
    UOp i = range(n + 1, 0, AxisKind::Global);
    UOp m1 = const_(f, -1.0);
    UOp alt = UOp::make(Op::VECTORIZE, {m1, m1, m1, m1});
    UOp v = load(UOp::make(Op::INDEX, v4.ptr(), {in, i * 4, i < n}), alt);
    UOp k = sink({end(store(UOp::make(Op::INDEX, v4.ptr(), {out, i * 4}), v), {i})}, "vec_copy");
    HostData x = HostData::random(f, size_t(n * 4), 25),
             o = HostData::poisoned(f, size_t(n * 4 + 4));
    std::vector<double> want(x.values);
    for (int e = 0; e < 4; ++e) want.push_back(-1.0);
    DeviceBuffer dx(*dev, x), dout(*dev, o);
    compile_kernel(*dev, k).run(args({&dout, &dx}));
    dout.read(o);
    EXPECT_EQ(rel_error(o, want), 0.0) << n;
  }
}

TEST_P(Kernels, WrongArgumentsAreAClearError) {
  CompiledKernel k = compile_kernel(*dev, stencil_kernel(4));
  HostData x = HostData::random(dtypes::float32, 4, 9);
  DeviceBuffer dx(*dev, x);
  try {
    k.run(args({&dx}));
    FAIL() << "ran with one argument";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("kernel 'stencil' takes 2 arguments, got 1"),
              std::string::npos)
        << e.what();
  }
  std::vector<KernelArg> bad = {int64_t(3), dx.buf};
  EXPECT_THROW(k.run(bad), BackendError);
}

TEST_P(Kernels, KernelsThatNeedABlockAreRefused) {
  if (dev->props().name != "cpu") GTEST_SKIP() << dev->props().name << " runs blocks of threads";
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp buf = param(0, dtypes::float32.ptr());
  try {
    compile_kernel(*dev,
                   sink({store(index(buf, t), const_(dtypes::float32, 1.0))}, "uses_threads"));
    FAIL() << "compiled";
  } catch (const BackendError& e) {
    EXPECT_NE(
        std::string(e.what()).find(
            "kernel 'uses_threads' uses SPECIAL, which needs the threads of a block to cooperate"),
        std::string::npos)
        << e.what();
  }
}

TEST_P(Kernels, ACompileErrorShowsTheSourceAndLeavesTheProcessUsable) {
  if (dev->props().name == "emu")
    GTEST_SKIP() << "emu compiles nothing: it interprets the linear program";
  try {
    dev->compiler().compile(
        "void broken(void* const* args, long long lo, long long hi) {\n  int x = ;\n}\n");
    FAIL() << "compiled";
  } catch (const BackendError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("could not compile"), std::string::npos) << m;
    EXPECT_NE(m.find("2 |   int x = ;"), std::string::npos)
        << m;  // the source, shown around the error
  }
  CompiledKernel k = compile_kernel(*dev, stencil_kernel(3));  // still works
  HostData x = HostData::random(dtypes::float32, 3, 10),
           out = HostData::poisoned(dtypes::float32, 3);
  DeviceBuffer dx(*dev, x), dout(*dev, out);
  k.run(args({&dout, &dx}));
  dout.read(out);
  EXPECT_FALSE(std::isnan(out.get(0)));
}

TEST_P(Kernels, AMalformedKernelFailsVerification) {
  UOp r = range(4, 0, AxisKind::Loop);
  UOp never_closed =
      sink({store(index(param(0, dtypes::float32.ptr()), r), const_(dtypes::float32, 1.0))});
  EXPECT_THROW(compile_kernel(*dev, never_closed), IrError);
}

INSTANTIATE_TEST_SUITE_P(Devices, Kernels, testing::ValuesIn(test_devices()), test_name);

}  // namespace
}  // namespace kitten
