// Every op of the Tensor against a float64 reference written here as plain loops, on
// fresh random data at awkward sizes, on every device (docs/testing.md, "Front end").
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>

#include "frontend/schedule.h"
#include "tests/frontend/frontend_test_util.h"

namespace kitten {
namespace {

// Row-major strides of a shape, and the multi-index of a flat position.
std::vector<int64_t> strides_of(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (size_t i = s.size(); i-- > 1;) st[i - 1] = st[i] * s[i];
  return st;
}
std::vector<int64_t> unflat(int64_t f, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (size_t i = s.size(); i-- > 0;) {
    idx[i] = s[i] ? f % s[i] : 0;
    f = s[i] ? f / s[i] : 0;
  }
  return idx;
}
int64_t flat_of(const std::vector<int64_t>& idx, const Shape& s) {
  int64_t f = 0;
  auto st = strides_of(s);
  for (size_t i = 0; i < s.size(); ++i) f += idx[i] * st[i];
  return f;
}
// The reference tensor of `shape` whose element at idx is f(idx).
std::vector<double> tabulate(const Shape& s,
                             const std::function<double(const std::vector<int64_t>&)>& f) {
  std::vector<double> v(size_t(numel(s)));
  for (int64_t i = 0; i < numel(s); ++i) v[size_t(i)] = f(unflat(i, s));
  return v;
}
// Broadcast read: x (of shape xs) at an index of a larger shape (aligned at the right).
double bcast(const std::vector<double>& x, const Shape& xs, const std::vector<int64_t>& idx) {
  std::vector<int64_t> at(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    int64_t v = idx[idx.size() - xs.size() + i];
    at[i] = xs[i] == 1 ? 0 : v;
  }
  return x[size_t(flat_of(at, xs))];
}

class TensorOps : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { skip_unavailable(GetParam()); }
  const std::string& dev() const { return GetParam(); }
  Tensor make(const std::vector<double>& v, Shape s, DType d = dtypes::float32) const {
    return Tensor::from_doubles(v, std::move(s), d, dev());
  }
  void attention_case(int64_t h, int64_t nq, int64_t nk, int64_t d);
};

TEST_P(TensorOps, BinaryOpsBroadcastExactly) {
  Shape as{3, 1, 5}, bs{4, 5}, out{3, 4, 5};
  auto a = random_values(15, dtypes::float32, 1), b = random_values(20, dtypes::float32, 2);
  b[3] = 0;  // a division by zero
  Tensor ta = make(a, as), tb = make(b, bs);
  using F = std::function<double(double, double)>;
  std::vector<std::tuple<const char*, Tensor, F>> cases = {
      {"add", ta + tb, [](double x, double y) { return x + y; }},
      {"sub", ta - tb, [](double x, double y) { return x - y; }},
      {"mul", ta * tb, [](double x, double y) { return x * y; }},
      {"div", ta / tb, [](double x, double y) { return x / y; }},
      {"maximum", ta.maximum(tb), [](double x, double y) { return std::max(x, y); }},
      {"minimum", ta.minimum(tb), [](double x, double y) { return std::min(x, y); }},
      {"lt", ta.lt(tb), [](double x, double y) { return double(x < y); }},
      {"le", ta.le(tb), [](double x, double y) { return double(x <= y); }},
      {"gt", ta.gt(tb), [](double x, double y) { return double(x > y); }},
      {"ge", ta.ge(tb), [](double x, double y) { return double(x >= y); }},
      {"eq", ta.eq(ta + tb * 0.0), [](double, double) { return 1.0; }},
      {"ne", ta.ne(tb), [](double x, double y) { return double(x != y); }},
      {"where", ta.lt(tb).where(ta, tb * 2.0),
       [](double x, double y) { return x < y ? x : double(float(y * 2)); }},
      {"scalar", 2.5 - ta * 3.0,
       [](double x, double) { return double(float(2.5 - double(float(x * 3)))); }},
  };
  for (auto& [name, t, f] : cases) {
    ASSERT_EQ(t.shape(), std::string(name) == "scalar" ? as : out) << name;
    auto want = tabulate(t.shape(), [&](auto& i) {
      return round_to_dtype(t.dtype(), f(bcast(a, as, i), bcast(b, bs, i)));
    });
    // 2.5 - a * 3 may be contracted into one fused multiply-add (NVRTC does): the product
    // is not rounded, which moves the result by up to half an ulp of the product (|a| < 6).
    bool fma = std::string(name) == "scalar";
    expect_close(t.to_doubles(), want, 0, fma ? 0x1p-20 : 0, name);
  }
}

TEST_P(TensorOps, UnaryOpsWithinTolerance) {
  const int64_t n = 301;
  auto x = random_values(n, dtypes::float32, 3, 2.0);
  x[0] = 0;
  x[1] = double(1e-4f);
  x[2] = double(-3e-3f);
  std::vector<double> pos(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    pos[i] = round_to_dtype(dtypes::float32, std::abs(x[i]) + 0.01);
  Tensor t = make(x, {n}), p = make(pos, {n});
  using F = std::function<double(double)>;
  struct Case {
    const char* name;
    Tensor got;
    const std::vector<double>& in;
    F f;
    double rtol, atol;
  };
  double s2 = std::sqrt(2.0);
  std::vector<Case> cases = {
      {"neg", -t, x, [](double v) { return -v; }, 0, 0},
      {"abs", t.abs(), x, [](double v) { return std::abs(v); }, 0, 0},
      {"relu", t.relu(), x, [](double v) { return std::max(v, 0.0); }, 0, 0},
      {"recip", p.recip(), pos, [](double v) { return 1 / v; }, 1e-7, 0},
      {"sqrt", p.sqrt(), pos, [](double v) { return std::sqrt(v); }, 1e-7, 0},
      {"rsqrt", p.rsqrt(), pos, [](double v) { return 1 / std::sqrt(v); }, 3e-7, 0},
      {"exp", t.exp(), x, [](double v) { return std::exp(v); }, 2e-6, 0},
      {"exp2", t.exp2(), x, [](double v) { return std::exp2(v); }, 3e-7, 0},
      {"log", p.log(), pos, [](double v) { return std::log(v); }, 3e-7, 3e-7},
      {"log2", p.log2(), pos, [](double v) { return std::log2(v); }, 3e-7, 3e-7},
      {"sin", t.sin(), x, [](double v) { return std::sin(v); }, 1e-6, 1e-6},
      {"cos", t.cos(), x, [](double v) { return std::cos(v); }, 1e-6, 1e-6},
      {"tanh", t.tanh(), x, [](double v) { return std::tanh(v); }, 2e-6, 1e-7},
      {"erf", t.erf(), x, [](double v) { return std::erf(v); }, 2e-6, 2e-7},
      {"sigmoid", t.sigmoid(), x, [](double v) { return 1 / (1 + std::exp(-v)); }, 2e-6, 0},
      {"silu", t.silu(), x, [](double v) { return v / (1 + std::exp(-v)); }, 2e-6, 1e-7},
      {"gelu", t.gelu(), x, [=](double v) { return 0.5 * v * (1 + std::erf(v / s2)); }, 2e-6, 2e-7},
      {"gelu_tanh", t.gelu(true), x,
       [](double v) {
         return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
       },
       2e-6, 2e-7},
      {"pow2.5", p.pow(2.5), pos, [](double v) { return std::pow(v, 2.5); }, 3e-6, 0},
      {"pow3", t.pow(3), x, [](double v) { return v * v * v; }, 3e-7, 0},
      {"pow-3", t.pow(t.scalar(-3)), x, [](double v) { return std::pow(v, -3); }, 3e-6, 0},
  };
  for (auto& c : cases) {
    std::vector<double> want;
    for (double v : c.in) want.push_back(c.f(v));
    expect_close(c.got.to_doubles(), want, c.rtol, c.atol, c.name);
  }
}

TEST_P(TensorOps, DtypesAndCasts) {
  const int64_t n = 37;
  // Narrow floats compute in float32 and round once when stored.
  for (DType d : {dtypes::float16, dtypes::bfloat16, dtypes::float64}) {
    auto a = random_values(n, d, 4), b = random_values(n, d, 5);
    Tensor r = make(a, {n}, d) * make(b, {n}, d) + make(a, {n}, d);
    std::vector<double> want;
    for (int64_t i = 0; i < n; ++i)
      want.push_back(round_to_dtype(
          d, d == dtypes::float64 ? a[i] * b[i] + a[i] : double(float(float(a[i] * b[i]) + a[i]))));
    EXPECT_EQ(r.dtype(), d);
    // float64 may contract a * b + a into one fused multiply-add (one rounding fewer).
    expect_close(r.to_doubles(), want, 0, d == dtypes::float64 ? 2e-15 : 0, std::string(d.name()));
  }
  // Integers: exact arithmetic, promotion to float by true division.
  for (DType d : {dtypes::int32, dtypes::int64}) {
    auto a = random_values(n, d, 6), b = random_values(n, d, 7);
    Tensor ta = make(a, {n}, d), tb = make(b, {n}, d);
    Tensor r = ta * tb - ta * 3;
    std::vector<double> want, div;
    for (int64_t i = 0; i < n; ++i) {
      want.push_back(a[i] * b[i] - a[i] * 3);
      div.push_back(double(float(a[i]) / float(b[i])));
    }
    EXPECT_EQ(r.dtype(), d);
    expect_close(r.to_doubles(), want, 0, 0, std::string(d.name()));
    EXPECT_EQ((ta / tb).dtype(), dtypes::float32);
    expect_close((ta / tb).to_doubles(), div, 0, 0, "int division");
  }
  // Bool logic and casts.
  auto a = random_values(n, dtypes::bool_, 8), b = random_values(n, dtypes::bool_, 9);
  Tensor ta = make(a, {n}, dtypes::bool_), tb = make(b, {n}, dtypes::bool_);
  std::vector<double> want_and, want_or, want_not;
  for (int64_t i = 0; i < n; ++i) {
    want_and.push_back(double(a[i] && b[i]));
    want_or.push_back(double(a[i] || b[i]));
    want_not.push_back(double(!a[i]));
  }
  expect_close(ta.logical_and(tb).to_doubles(), want_and, 0, 0, "and");
  expect_close(ta.logical_or(tb).to_doubles(), want_or, 0, 0, "or");
  expect_close(ta.logical_not().to_doubles(), want_not, 0, 0, "not");
  auto x = random_values(n, dtypes::float32, 10, 30);
  Tensor tx = make(x, {n});
  std::vector<double> to_i, to_h, to_e4, to_b;
  for (double v : x) {
    to_i.push_back(std::trunc(v));
    to_h.push_back(round_to_dtype(dtypes::float16, v));
    to_e4.push_back(round_to_dtype(dtypes::float8_e4m3, v));
    to_b.push_back(double(v != 0));
  }
  expect_close(tx.cast(dtypes::int32).to_doubles(), to_i, 0, 0, "float32 -> int32");
  expect_close(tx.cast(dtypes::float16).cast(dtypes::float32).to_doubles(), to_h, 0, 0,
               "-> float16");
  expect_close(tx.cast(dtypes::float8_e4m3).to_doubles(), to_e4, 0, 0, "-> float8_e4m3");
  expect_close(tx.cast(dtypes::bool_).to_doubles(), to_b, 0, 0, "-> bool");
}

TEST_P(TensorOps, Reductions) {
  Shape s{5, 31, 3};
  auto x = random_values(size_t(numel(s)), dtypes::float32, 11);
  Tensor t = make(x, s);
  for (std::vector<int> axes : std::vector<std::vector<int>>{{0}, {1}, {-1}, {0, 2}, {}}) {
    std::vector<bool> red(3, axes.empty());
    for (int a : axes) red[size_t(a < 0 ? a + 3 : a)] = true;
    Shape ks = s;
    int64_t count = 1;
    for (size_t i = 0; i < 3; ++i)
      if (red[i]) {
        ks[i] = 1;
        count *= s[i];
      }
    std::vector<double> sum(size_t(numel(ks)), 0), mx(size_t(numel(ks)), -INFINITY),
        sq(size_t(numel(ks)), 0);
    for (int64_t f = 0; f < numel(s); ++f) {
      auto i = unflat(f, s);
      for (size_t a = 0; a < 3; ++a)
        if (red[a]) i[a] = 0;
      size_t o = size_t(flat_of(i, ks));
      sum[o] += x[size_t(f)];
      mx[o] = std::max(mx[o], x[size_t(f)]);
    }
    for (int64_t f = 0; f < numel(s); ++f) {
      auto i = unflat(f, s);
      for (size_t a = 0; a < 3; ++a)
        if (red[a]) i[a] = 0;
      size_t o = size_t(flat_of(i, ks));
      double d = x[size_t(f)] - sum[o] / double(count);
      sq[o] += d * d;
    }
    std::vector<double> mean, var, mn;
    for (size_t o = 0; o < sum.size(); ++o) {
      mean.push_back(sum[o] / double(count));
      var.push_back(sq[o] / double(count - 1));
    }
    double tol = 1e-6 * std::sqrt(double(count));
    std::string what = "axes " + std::to_string(axes.size());
    Tensor ts = t.sum(axes, true);
    EXPECT_EQ(ts.shape(), ks);
    expect_close(ts.to_doubles(), sum, tol, tol, "sum " + what);
    expect_close(t.max(axes, true).to_doubles(), mx, 0, 0, "max " + what);
    expect_close(t.mean(axes).to_doubles(), mean, tol, tol, "mean " + what);
    expect_close(t.var(axes).to_doubles(), var, 4 * tol, tol, "var " + what);
    EXPECT_EQ(t.sum(axes).ndim(), int(3 - std::count(red.begin(), red.end(), true)));
  }
  // min, integer and bool sums, an empty axis.
  std::vector<double> mn(5 * 3, INFINITY);
  for (int64_t f = 0; f < numel(s); ++f) {
    auto i = unflat(f, s);
    mn[size_t(i[0] * 3 + i[2])] = std::min(mn[size_t(i[0] * 3 + i[2])], x[size_t(f)]);
  }
  expect_close(t.min({1}).to_doubles(), mn, 0, 0, "min");
  auto iv = random_values(60, dtypes::int32, 12);
  double isum = std::accumulate(iv.begin(), iv.end(), 0.0);
  expect_close(make(iv, {60}, dtypes::int32).sum().to_doubles(), {isum}, 0, 0, "int sum");
  Tensor bools = make(iv, {60}, dtypes::int32).gt(make({0}, {1}, dtypes::int32));
  double positives = double(std::count_if(iv.begin(), iv.end(), [](double v) { return v > 0; }));
  EXPECT_EQ(bools.sum().dtype(), dtypes::int32);
  expect_close(bools.sum().to_doubles(), {positives}, 0, 0, "bool sum");
  expect_close(Tensor::zeros({4, 0}, dtypes::float32, dev()).sum({1}).to_doubles(), {0, 0, 0, 0}, 0,
               0, "empty sum");
}

TEST_P(TensorOps, MovementOpsAreIndexArithmetic) {
  Shape s{2, 3, 4};
  auto x = random_values(24, dtypes::float32, 13);
  Tensor t = make(x, s);
  auto at = [&](int64_t i, int64_t j, int64_t k) { return x[size_t(i * 12 + j * 4 + k)]; };
  // reshape through several views; a permute between them is not contiguous.
  expect_close(t.reshape({4, 6}).reshape({24}).reshape({6, -1}).to_doubles(), x, 0, 0, "reshape");
  Tensor p = t.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  expect_close(p.to_doubles(), tabulate({4, 2, 3}, [&](auto& i) { return at(i[1], i[2], i[0]); }),
               0, 0, "permute");
  expect_close(p.reshape({8, 3}).transpose().to_doubles(),
               tabulate({3, 8}, [&](auto& i) { return at(i[1] % 2, i[0], i[1] / 2); }), 0, 0,
               "permute, reshape, transpose");
  expect_close(t.slice(1, 1, 3).expand({2, 2, 4}).unsqueeze(0).expand({3, 2, 2, 4}).to_doubles(),
               tabulate({3, 2, 2, 4}, [&](auto& i) { return at(i[1], i[2] + 1, i[3]); }), 0, 0,
               "slice, expand");
  expect_close(t.pad({{1, 0}, {0, 2}, {3, 1}}).to_doubles(),
               tabulate({3, 5, 8},
                        [&](auto& i) {
                          bool in = i[0] >= 1 && i[1] < 3 && i[2] >= 3 && i[2] < 7;
                          return in ? at(i[0] - 1, i[1], i[2] - 3) : 0.0;
                        }),
               0, 0, "pad");
  expect_close(t.pad({{0, 0}, {1, 1}, {0, 0}}).exp().to_doubles(),
               tabulate({2, 5, 4},
                        [&](auto& i) {
                          return i[1] >= 1 && i[1] < 4
                                     ? double(float(std::exp(at(i[0], i[1] - 1, i[2]))))
                                     : 1.0;
                        }),
               2e-6, 0, "exp of pad (the pad's zeros go through exp)");
  expect_close(t.shrink({{1, 2}, {0, 3}, {1, 3}}).to_doubles(),
               tabulate({1, 3, 2}, [&](auto& i) { return at(1, i[1], i[2] + 1); }), 0, 0, "shrink");
  expect_close(t.flip({0, 2}).to_doubles(),
               tabulate(s, [&](auto& i) { return at(1 - i[0], i[1], 3 - i[2]); }), 0, 0, "flip");
  expect_close(t.flip({2}).pad({{0, 0}, {0, 0}, {2, 0}}).flip({2}).to_doubles(),
               tabulate({2, 3, 6}, [&](auto& i) { return i[2] < 4 ? at(i[0], i[1], i[2]) : 0.0; }),
               0, 0, "flip, pad, flip");
  // cat along the middle axis with a zero-width piece, and stack.
  auto y = random_values(2 * 2 * 4, dtypes::float32, 14);
  Tensor ty = make(y, {2, 2, 4}), empty = Tensor::zeros({2, 0, 4}, dtypes::float32, dev());
  Tensor c = Tensor::cat({t, empty, ty, t.slice(1, 0, 1)}, 1);
  EXPECT_EQ(c.shape(), (Shape{2, 6, 4}));
  expect_close(c.to_doubles(),
               tabulate({2, 6, 4},
                        [&](auto& i) {
                          if (i[1] < 3) return at(i[0], i[1], i[2]);
                          if (i[1] < 5) return y[size_t(i[0] * 8 + (i[1] - 3) * 4 + i[2])];
                          return at(i[0], 0, i[2]);
                        }),
               0, 0, "cat");
  Tensor st = Tensor::stack({t, t * 2.0}, 1);
  EXPECT_EQ(st.shape(), (Shape{2, 2, 3, 4}));
  expect_close(st.to_doubles(),
               tabulate({2, 2, 3, 4}, [&](auto& i) { return at(i[0], i[2], i[3]) * (i[1] + 1); }),
               0, 0, "stack");
  // Zero-size and size-1 axes.
  Tensor z = Tensor::zeros({3, 0, 2}, dtypes::float32, dev()) + 1.0;
  EXPECT_EQ(z.to_doubles().size(), 0u);
  expect_close((make({5}, {1, 1}) * t).to_doubles(),
               tabulate(s, [&](auto& i) { return double(float(5 * at(i[0], i[1], i[2]))); }), 0, 0,
               "size-1 broadcast");
}

TEST_P(TensorOps, MatmulAndBatchedMatmul) {
  auto check = [&](Shape as, Shape bs, uint64_t seed) {
    auto a = random_values(size_t(numel(as)), dtypes::float32, seed);
    auto b = random_values(size_t(numel(bs)), dtypes::float32, seed + 1);
    Tensor r = make(a, as).matmul(make(b, bs));
    // The reference: torch's rules for 1-D operands and broadcast batch axes.
    Shape a2 = as.size() == 1 ? Shape{1, as[0]} : as, b2 = bs.size() == 1 ? Shape{bs[0], 1} : bs;
    int64_t m = a2[a2.size() - 2], k = a2.back(), n = b2.back();
    Shape ba(a2.begin(), a2.end() - 2), bb(b2.begin(), b2.end() - 2), batch;
    for (size_t i = 0; i < std::max(ba.size(), bb.size()); ++i) {
      int64_t x = i < ba.size() ? ba[ba.size() - 1 - i] : 1,
              y = i < bb.size() ? bb[bb.size() - 1 - i] : 1;
      batch.insert(batch.begin(), std::max(x, y));
    }
    Shape full = batch;
    full.insert(full.end(), {m, n});
    auto want = tabulate(full, [&](auto& i) {
      double s = 0;
      std::vector<int64_t> ia(i.begin(), i.end() - 2), ib = ia;
      for (int64_t kk = 0; kk < k; ++kk) {
        auto ai = ia, bi = ib;
        ai.insert(ai.end(), {i[i.size() - 2], kk});
        bi.insert(bi.end(), {kk, i.back()});
        s += bcast(a, a2, ai) * bcast(b, b2, bi);
      }
      return s;
    });
    EXPECT_EQ(int64_t(r.to_doubles().size()), numel(full));
    expect_close(r.to_doubles(), want, 1e-5, 1e-5 * std::sqrt(double(k)),
                 "matmul " + shape_text(as) + " @ " + shape_text(bs));
  };
  check({5, 7}, {7, 3}, 20);
  check({2, 1, 4, 6}, {3, 6, 5}, 22);
  check({7}, {7, 3}, 24);
  check({5, 7}, {7}, 26);
  check({1, 31}, {31, 33}, 28);
}

TEST_P(TensorOps, GatherEmbeddingArgmaxCumsumTopk) {
  auto x = random_values(6 * 9, dtypes::float32, 30);
  x[3] = x[7] = 10;  // a tie in row 0: the first maximum wins
  Tensor t = make(x, {6, 9});
  std::vector<double> idx = {3, 0, 8, 8, 1, 2, 5, 7, 0, 4, 6, 1};
  Tensor g = t.gather(1, make(idx, {6, 2}, dtypes::int32));
  expect_close(g.to_doubles(),
               tabulate({6, 2},
                        [&](auto& i) {
                          return x[size_t(i[0] * 9 + int64_t(idx[size_t(i[0] * 2 + i[1])]))];
                        }),
               0, 0, "gather");
  std::vector<double> ids = {5, 0, 2, 2, 4};
  Tensor e = t.embedding(make(ids, {5}, dtypes::int32));
  EXPECT_EQ(e.shape(), (Shape{5, 9}));
  expect_close(
      e.to_doubles(),
      tabulate({5, 9}, [&](auto& i) { return x[size_t(int64_t(ids[size_t(i[0])]) * 9 + i[1])]; }),
      0, 0, "embedding");
  std::vector<double> am, cs, tv, ti;
  for (int r = 0; r < 6; ++r) {
    auto row = std::vector<double>(x.begin() + r * 9, x.begin() + r * 9 + 9);
    am.push_back(double(std::max_element(row.begin(), row.end()) - row.begin()));
    double s = 0;
    for (double v : row) cs.push_back(double(float(s += v)));
    std::vector<int> order(9);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return row[size_t(a)] > row[size_t(b)]; });
    for (int k = 0; k < 3; ++k) {
      tv.push_back(row[size_t(order[size_t(k)])]);
      ti.push_back(order[size_t(k)]);
    }
  }
  Tensor a = t.argmax(1);
  EXPECT_EQ(a.dtype(), dtypes::int32);
  expect_close(a.to_doubles(), am, 0, 0, "argmax");
  expect_close(t.cumsum(1).to_doubles(), cs, 1e-6, 1e-6, "cumsum");
  auto [values, indices] = t.topk(3, 1);
  expect_close(values.to_doubles(), tv, 0, 0, "topk values");
  expect_close(indices.to_doubles(), ti, 0, 0, "topk indices");
}

TEST_P(TensorOps, NormsAndSoftmax) {
  const int64_t rows = 5, cols = 37;
  auto x = random_values(rows * cols, dtypes::float32, 40, 3);
  auto w = random_values(cols, dtypes::float32, 41), b = random_values(cols, dtypes::float32, 42);
  Tensor t = make(x, {rows, cols});
  std::vector<double> sm, lsm, ln, rms, sm0(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i) {
    double m = -INFINITY, s = 0, mean = 0, var = 0, sq = 0;
    for (int64_t j = 0; j < cols; ++j) m = std::max(m, x[size_t(i * cols + j)]);
    for (int64_t j = 0; j < cols; ++j) s += std::exp(x[size_t(i * cols + j)] - m);
    for (int64_t j = 0; j < cols; ++j) mean += x[size_t(i * cols + j)] / double(cols);
    for (int64_t j = 0; j < cols; ++j) {
      double d = x[size_t(i * cols + j)] - mean;
      var += d * d / double(cols);
      sq += x[size_t(i * cols + j)] * x[size_t(i * cols + j)] / double(cols);
    }
    for (int64_t j = 0; j < cols; ++j) {
      double v = x[size_t(i * cols + j)];
      sm.push_back(std::exp(v - m) / s);
      lsm.push_back(v - m - std::log(s));
      ln.push_back((v - mean) / std::sqrt(var + 1e-5) * w[size_t(j)] + b[size_t(j)]);
      rms.push_back(v / std::sqrt(sq + 1e-6) * w[size_t(j)]);
    }
  }
  for (int64_t j = 0; j < cols; ++j) {
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < rows; ++i) m = std::max(m, x[size_t(i * cols + j)]);
    for (int64_t i = 0; i < rows; ++i) s += std::exp(x[size_t(i * cols + j)] - m);
    for (int64_t i = 0; i < rows; ++i)
      sm0[size_t(i * cols + j)] = std::exp(x[size_t(i * cols + j)] - m) / s;
  }
  Tensor tw = make(w, {cols}), tb = make(b, {cols});
  expect_close(t.softmax(-1).to_doubles(), sm, 1e-5, 1e-7, "softmax");
  expect_close(t.softmax(0).to_doubles(), sm0, 1e-5, 1e-7, "softmax over axis 0");
  expect_close(t.log_softmax(-1).to_doubles(), lsm, 1e-5, 1e-5, "log_softmax");
  expect_close(t.layernorm(tw, tb).to_doubles(), ln, 1e-5, 1e-5, "layernorm");
  expect_close(t.rmsnorm(tw).to_doubles(), rms, 1e-5, 1e-6, "rmsnorm");
}

TEST_P(TensorOps, ScaledDotProductAttention) {
  // The second shape's causal mask is computed on vectors of lanes on cpu (vectors of bool).
  for (auto [h, nq, nk, d] : {std::array<int64_t, 4>{3, 5, 9, 8}, {4, 64, 64, 16}})
    attention_case(h, nq, nk, d);
}

void TensorOps::attention_case(int64_t h, int64_t nq, int64_t nk, int64_t d) {
  auto q = random_values(size_t(h * nq * d), dtypes::float32, 50),
       k = random_values(size_t(h * nk * d), dtypes::float32, 51),
       v = random_values(size_t(h * nk * d), dtypes::float32, 52);
  for (bool causal : {false, true}) {
    Tensor o = Tensor::scaled_dot_product_attention(make(q, {h, nq, d}), make(k, {h, nk, d}),
                                                    make(v, {h, nk, d}), {}, causal);
    EXPECT_EQ(o.node()->kind, NodeKind::Named);
    EXPECT_EQ(o.node()->name, "scaled_dot_product_attention");
    std::vector<double> want = attention_reference(q, k, v, h, nq, nk, nk, d, d, causal);
    expect_close(o.to_doubles(), want, 1e-5, 1e-6, causal ? "causal" : "non-causal");
  }
}

TEST_P(TensorOps, RandIsUniformAndRandnNormal) {
  Tensor u = Tensor::rand({4000}, dtypes::float32, dev(), 1234);
  auto v = u.to_doubles();
  double mean = std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
  EXPECT_GE(*std::min_element(v.begin(), v.end()), 0.0);
  EXPECT_LT(*std::max_element(v.begin(), v.end()), 1.0);
  EXPECT_NEAR(mean, 0.5, 0.02);
  auto n = Tensor::randn({4000}, dtypes::float32, dev(), 99).to_doubles();
  double nm = std::accumulate(n.begin(), n.end(), 0.0) / double(n.size()), var = 0;
  for (double x : n) var += (x - nm) * (x - nm) / double(n.size());
  EXPECT_NEAR(nm, 0, 0.06);
  EXPECT_NEAR(var, 1, 0.08);
  EXPECT_NE(Tensor::rand({8}, dtypes::float32, dev()).to_doubles(),
            Tensor::rand({8}, dtypes::float32, dev()).to_doubles());
}

TEST_P(TensorOps, HostDataInAndOut) {
  // A DLPack view of a realized tensor reads its values; a strided host view comes in.
  auto x = random_values(12, dtypes::float32, 60);
  Tensor t = make(x, {3, 4}) * 2.0;
  DLView v = t.dlpack();
  EXPECT_EQ(v.ndim, 2);
  EXPECT_EQ(v.strides, (std::vector<int64_t>{4, 1}));
  if (v.device_type == 1) {
    for (int i = 0; i < 12; ++i) EXPECT_EQ(static_cast<float*>(v.data)[i], float(x[size_t(i)] * 2));
  }
  std::vector<float> host(12);
  for (int i = 0; i < 12; ++i) host[size_t(i)] = float(i);
  DLView in;
  in.data = host.data();
  in.ndim = 2;
  in.shape = {4, 3};
  in.strides = {1, 4};  // the transpose of a 3x4 row-major array
  Tensor back = Tensor::from_dlpack(in, dev());
  expect_close(back.to_doubles(), tabulate({4, 3}, [](auto& i) { return double(i[1] * 4 + i[0]); }),
               0, 0, "from_dlpack");
  // An explicit copy between devices.
  expect_close(t.to("cpu").to_doubles(), t.to_doubles(), 0, 0, "to(cpu)");
}

INSTANTIATE_TEST_SUITE_P(Devices, TensorOps, testing::ValuesIn(frontend_devices()));

#ifndef KITTEN_CUDA_TESTS
TEST(TensorErrors, NameTheOpAndBothShapes) {
  auto msg = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const TensorError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
  EXPECT_EQ(msg([&] { (void)(a + b); }), "add: shapes [2, 3] and [4] do not broadcast");
  EXPECT_NE(msg([&] {
              (void)a.matmul(Tensor::zeros({4, 5}));
            }).find("[2, 3] and [4, 5]"),
            std::string::npos);
  EXPECT_NE(msg([&] { (void)a.reshape({4, 2}); }).find("cannot reshape [2, 3]"), std::string::npos);
  EXPECT_NE(msg([&] {
              (void)Tensor::cat({a, Tensor::zeros({3, 3})}, 1);
            }).find("[2, 3] and [3, 3]"),
            std::string::npos);
  EXPECT_NE(msg([&] { (void)a.sum({2}); }).find("axis 2 is out of range for shape [2, 3]"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              (void)a.gather(0, Tensor::zeros({2, 3}));
            }).find("float32"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              (void)(a + Tensor::zeros({2, 3}, dtypes::float32, "emu"));
            }).find("copy one with .to()"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              (void)Tensor::from_doubles(std::vector<double>(5), {2, 3});
            }).find("5 values for shape [2, 3]"),
            std::string::npos);
}

TEST(TensorRand, SameBitsOnEveryHostDevice) {
  auto cpu = Tensor::rand({1000}, dtypes::float32, "cpu", 77).bytes();
  auto emu = Tensor::rand({1000}, dtypes::float32, "emu", 77).bytes();
  EXPECT_EQ(cpu, emu);
  auto ncpu = Tensor::randn({500}, dtypes::float32, "cpu", 5).to_doubles();
  auto nemu = Tensor::randn({500}, dtypes::float32, "emu", 5).to_doubles();
  expect_close(ncpu, nemu, 1e-6, 1e-6, "randn cpu vs emu");
}
#endif

}  // namespace
}  // namespace kitten
