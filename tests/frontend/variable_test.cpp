// Axes of variable length (Tensor::narrow by a bound variable): kernels run over the bound
// length, any length runs the same compiled kernels, ops that would read past the bound
// length are refused, and a JIT-captured decode step over a growing KV cache captures once.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "../expect_thrown.h"
#include "frontend/jit.h"
#include "frontend/schedule.h"
#include "frontend_test_util.h"

namespace kitten {
namespace {

class VariableAxes : public FrontendDeviceTest {
 protected:
  Tensor len(int64_t value, int64_t lo, int64_t hi) const {
    return Tensor::variable("len", value, lo, hi, dev());
  }
};

// Row-major rows [r0, r0 + rows) of a (?, cols) matrix.
std::vector<double> rows_of(const std::vector<double>& m, int64_t cols, int64_t r0, int64_t rows) {
  return {m.begin() + r0 * cols, m.begin() + (r0 + rows) * cols};
}

TEST_P(VariableAxes, ElementwiseAndReductionsRunOverTheBoundLength) {
  const int64_t n = 10, c = 6;
  std::vector<double> xv = random_values(size_t(n * c), dtypes::float32, 1);
  Tensor x = from(xv, {n, c});
  int64_t compiled = -1;
  for (int64_t l : {7, 1, 8, 4, 0}) {
    Tensor part = x.narrow(0, 2, len(l, 0, 8));
    EXPECT_EQ(part.shape(), (Shape{8, c}));
    EXPECT_EQ(part.live_shape(), (Shape{l, c}));
    std::vector<double> rows = rows_of(xv, c, 2, l);
    Tensor y = part * 2 + 1, col = part.sum({0}), mx = part.max({0}), rsum = part.sum({1});
    Tensor mean = part.mean({0}), sm = part.softmax(0);
    // A realized tensor narrowed over its whole extent is its buffer with a variable axis
    // (the reduction reads the leaf's variable).
    Tensor whole = x.narrow(0, 0, Tensor::variable("rows", l + 2, 0, n, dev())).sum({0});
    Tensor::realize({&y, &col, &mx, &rsum, &mean, &sm, &whole});
    int64_t before = realize_stats().compiled;
    // The same graph at another length compiles nothing (after the first length).
    if (compiled >= 0) {
      EXPECT_EQ(before, compiled) << "len " << l;
    }
    compiled = before;
    std::vector<double> wy, wcol(c, 0), wmx(c, -INFINITY), wrsum(size_t(l), 0), wsm(rows.size());
    for (int64_t i = 0; i < l; ++i)
      for (int64_t j = 0; j < c; ++j) {
        double v = rows[size_t(i * c + j)];
        wy.push_back(double(float(float(v * 2) + 1)));
        wcol[size_t(j)] += v;
        wmx[size_t(j)] = std::max(wmx[size_t(j)], v);
        wrsum[size_t(i)] += v;
      }
    std::vector<double> wmean(c);
    for (int64_t j = 0; j < c; ++j) {
      wmean[size_t(j)] = wcol[size_t(j)] / double(l);
      double z = 0;
      for (int64_t i = 0; i < l; ++i) z += std::exp(rows[size_t(i * c + j)] - wmx[size_t(j)]);
      for (int64_t i = 0; i < l; ++i)
        wsm[size_t(i * c + j)] = std::exp(rows[size_t(i * c + j)] - wmx[size_t(j)]) / z;
    }
    std::string at = "len " + std::to_string(l);
    std::vector<double> wwhole(c, 0);
    for (int64_t i = 0; i < (l + 2) * c; ++i) wwhole[size_t(i % c)] += xv[size_t(i)];
    expect_close(whole.to_doubles(), wwhole, 1e-6, 1e-6, "sum of a narrowed buffer " + at);
    EXPECT_EQ(y.live_shape(), (Shape{l, c}));
    EXPECT_EQ(y.to_doubles(), wy) << at;
    EXPECT_EQ(col.live_shape(), (Shape{c}));
    if (l == 0) {
      EXPECT_EQ(col.to_doubles(), std::vector<double>(c, 0)) << at;
      continue;  // max and mean of nothing: -inf and NaN, as torch
    }
    expect_close(col.to_doubles(), wcol, 1e-6, 1e-6, "sum " + at);
    EXPECT_EQ(mx.to_doubles(), wmx) << at;
    expect_close(rsum.to_doubles(), wrsum, 1e-6, 1e-6, "row sum " + at);
    expect_close(mean.to_doubles(), wmean, 1e-6, 1e-6, "mean " + at);
    expect_close(sm.to_doubles(), wsm, 1e-6, 1e-7, "softmax " + at);
  }
}

TEST_P(VariableAxes, AttentionOverAGrowingCache) {
  // Heads 2, a cache of 16 positions of width 8: 3 queries (a prefill chunk, causal,
  // aligned at the bottom right) attend to the first `len` keys.
  const int64_t h = 2, n = 16, d = 8, nq = 3;
  std::vector<double> qv = random_values(size_t(h * nq * d), dtypes::float32, 2);
  std::vector<double> kv = random_values(size_t(h * n * d), dtypes::float32, 3);
  std::vector<double> vv = random_values(size_t(h * n * d), dtypes::float32, 4);
  Tensor q = from(qv, {h, nq, d}), k = from(kv, {h, n, d}), v = from(vv, {h, n, d});
  for (bool causal : {false, true})
    for (int64_t l : {3, 9, 16}) {
      Tensor length = len(l, nq, n);
      Tensor o = Tensor::scaled_dot_product_attention(q, k.narrow(1, 0, length),
                                                      v.narrow(1, 0, length), {}, causal);
      EXPECT_EQ(o.live_shape(), (Shape{h, nq, d}));
      std::vector<double> want = attention_reference(qv, kv, vv, h, nq, n, l, d, d, causal);
      expect_close(o.to_doubles(), want, 1e-5, 1e-6,
                   (causal ? "causal len " : "len ") + std::to_string(l));
    }
}

TEST_P(VariableAxes, AStoredVariableAxisAndAnAssignThroughOne) {
  // A materialised intermediate with a variable axis (contiguous) is stored at its bound
  // length in a buffer of the largest; an assign through a narrowed view writes only the
  // bound rows.
  const int64_t n = 9, c = 5;
  std::vector<double> xv = random_values(size_t(n * c), dtypes::float32, 5);
  Tensor x = from(xv, {n, c});
  Tensor target = Tensor::zeros({n, c}, dtypes::float32, dev()).contiguous();
  target.realize();
  Tensor length = len(4, 0, n);
  Tensor stored = (x.narrow(0, 0, length) * 3).contiguous();
  target.narrow(0, 0, length).assign(stored.exp2().transpose().transpose());
  std::vector<double> want(size_t(n * c), 0);
  for (int64_t i = 0; i < 4 * c; ++i) want[size_t(i)] = double(std::exp2(float(xv[size_t(i)] * 3)));
  expect_close(target.to_doubles(), want, 1e-6, 0, "assigned rows");
  EXPECT_EQ(stored.live_shape(), (Shape{4, c}));
}

TEST_P(VariableAxes, OpsThatWouldReadPastTheLengthAreRefused) {
  Tensor x = Tensor::zeros({6, 4}, dtypes::float32, dev());
  Tensor part = x.narrow(0, 0, len(3, 0, 6));
  auto refused = [](auto f, const std::string& says) { expect_thrown<TensorError>(f, says); };
  refused([&] { part.pad({{1, 0}, {0, 0}}); }, "variable length len cannot be moved by pad");
  refused([&] { part.flip({0}); }, "cannot be moved by flip");
  refused([&] { part.slice(0, 1, 3); }, "cannot be moved by shrink");
  refused([&] { Tensor::cat({part, part}, 0); }, "cannot be joined");
  refused([&] { part.reshape({24}); }, "cannot be merged or split by a reshape to [24]");
  refused([&] { part + x.narrow(0, 0, Tensor::variable("m", 3, 0, 6, dev())); },
          "has the variable lengths len = 3 and m = 3");
  refused([&] { part + x.narrow(0, 0, len(5, 0, 6)); },
          "has the variable lengths len = 3 and len = 5");
  refused([&] { part.topk(1, 0); }, "variable length len (k could exceed it)");
  refused([&] { part.argmax(0); }, "the variable length len, which may be 0");
  refused([&] { x.narrow(0, 0, x.sum()); }, "not a bound variable");
  refused([&] { x.narrow(0, 2, len(3, 0, 6)); }, "leave axis 0");
  refused([&] { part.narrow(0, 0, len(2, 0, 6)); }, "already has the variable length len");
  for (bool realized : {false, true})  // a realized parameter too (not read as a bare buffer)
    refused(
        [&] {
          Tensor w = Tensor::ones({6, 4}, dtypes::float32, dev()).requires_grad_();
          if (realized)
            w = Tensor::from_doubles(std::vector<double>(24, 1.0), {6, 4}, dtypes::float32, dev())
                    .requires_grad_();
          ((w.narrow(0, 0, len(3, 0, 6)) * 2).sum() + (w * w).sum()).backward();
        },
        "gradient through an axis of variable length len");
  // Reshapes that keep the axis whole are fine, and so are other axes' moves.
  EXPECT_EQ(part.reshape({1, 6, 2, 2}).live_shape(), (Shape{1, 3, 2, 2}));
  EXPECT_EQ(part.transpose().live_shape(), (Shape{4, 3}));
  EXPECT_EQ(part.slice(1, 1, 3).live_shape(), (Shape{3, 2}));
}

TEST_P(VariableAxes, JitDecodeOverAGrowingCacheCapturesOnce) {
  // A decode step: append the new key and value at position t, attend from the new query
  // over the first t + 1 cache rows (an axis of variable length), and return the
  // attention weights too (an output of variable length). Captured once; every replay
  // gives the bits of the uncaptured step, and both match a float64 reference.
  const int64_t n = 12, d = 8;
  auto decoder = [&](Tensor kc, Tensor vc) {
    return [=](const std::vector<Tensor>& in) {
      const Tensor &q = in[0], &k = in[1], &v = in[2], &t = in[3], &length = in[4];
      Tensor::assign({{kc.slice(0, t, 1), k}, {vc.slice(0, t, 1), v}});
      Tensor keys = kc.narrow(0, 0, length), values = vc.narrow(0, 0, length);
      Tensor p = (q.matmul(keys.transpose()) * (1 / std::sqrt(double(d)))).softmax(-1);
      return std::vector<Tensor>{p.matmul(values), p};
    };
  };
  auto zeros = [&] { return Tensor::zeros({n, d}, dtypes::float32, dev()).contiguous(); };
  Tensor kc1 = zeros(), vc1 = zeros(), kc2 = zeros(), vc2 = zeros();
  Jit jit(decoder(kc1, vc1));
  auto plain = decoder(kc2, vc2);
  std::vector<double> keys, vals;
  size_t kernels = 0;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<double> qv = random_values(size_t(d), dtypes::float32, 100 + uint64_t(t));
    std::vector<double> kv = random_values(size_t(d), dtypes::float32, 200 + uint64_t(t));
    std::vector<double> vv = random_values(size_t(d), dtypes::float32, 300 + uint64_t(t));
    keys.insert(keys.end(), kv.begin(), kv.end());
    vals.insert(vals.end(), vv.begin(), vv.end());
    std::vector<Tensor> in{from(qv, {1, d}), from(kv, {1, d}), from(vv, {1, d}),
                           Tensor::variable("t", t, 0, n - 1, dev()),
                           Tensor::variable("len", t + 1, 1, n, dev())};
    std::vector<Tensor> got = jit(in), want = plain(in);
    std::string at = "t = " + std::to_string(t);
    EXPECT_EQ(jit.replayed(), t >= 2) << at;
    if (t == 2) kernels = jit.graph_kernels();
    if (t > 2) {
      EXPECT_EQ(jit.graph_kernels(), kernels) << at;
    }
    ASSERT_EQ(got[1].live_shape(), (Shape{1, t + 1})) << at;
    EXPECT_TRUE(got[0].bytes() == want[0].bytes()) << at;
    EXPECT_TRUE(got[1].bytes() == want[1].bytes()) << at;
    // The weights are the attention of one-hot values.
    std::vector<double> eye(size_t((t + 1) * (t + 1)), 0);
    for (int64_t j = 0; j <= t; ++j) eye[size_t(j * (t + 1) + j)] = 1;
    std::vector<double> s = attention_reference(qv, keys, eye, 1, 1, t + 1, t + 1, d, t + 1, false);
    std::vector<double> o = attention_reference(qv, keys, vals, 1, 1, t + 1, t + 1, d, d, false);
    expect_close(got[1].to_doubles(), s, 1e-5, 1e-7, "weights " + at);
    expect_close(got[0].to_doubles(), o, 1e-5, 1e-6, "output " + at);
  }
}

TEST_P(VariableAxes, CumsumOverTheBoundPart) {
  const int64_t n = 7;
  std::vector<double> xv = random_values(size_t(n), dtypes::float32, 6);
  Tensor x = from(xv, {n});
  for (int64_t l : {1, 4, 7}) {
    Tensor c = x.narrow(0, 0, len(l, 1, n)).cumsum(0);
    ASSERT_EQ(c.live_shape(), (Shape{l}));
    std::vector<double> want;
    double acc = 0;
    for (int64_t i = 0; i < l; ++i) want.push_back(acc += xv[size_t(i)]);
    expect_close(c.to_doubles(), want, 1e-6, 1e-6, "len " + std::to_string(l));
    expect_close(c.sum().to_doubles(), {std::accumulate(want.begin(), want.end(), 0.0)}, 1e-6, 1e-6,
                 "sum len " + std::to_string(l));
  }
}

TEST_P(VariableAxes, JitTakesAndReturnsVariableAxes) {
  // Inputs with a variable axis (a narrowed cache) and outputs that are views of inputs
  // or of tensors that lived before: every replay gives the lengths given now.
  const int64_t n = 6, c = 3;
  std::vector<double> xv = random_values(size_t(n * c), dtypes::float32, 7);
  Tensor base = from(xv, {n, c});
  Jit jit([base](const std::vector<Tensor>& in) {
    return std::vector<Tensor>{in[0].sum({0}), in[0], in[0] * 2, base.narrow(0, 0, in[1])};
  });
  for (int64_t l : {2, 5, 1, 6, 3}) {
    Tensor rows = Tensor::variable("rows", l, 1, n, dev());
    Tensor part = base.narrow(0, 0, Tensor::variable("len", l, 1, n, dev()));
    std::vector<Tensor> got = jit({part, rows});
    std::string at = "len " + std::to_string(l);
    std::vector<double> want_sum(c, 0), want_rows = rows_of(xv, c, 0, l), doubled;
    for (int64_t i = 0; i < l * c; ++i) {
      want_sum[size_t(i % c)] += xv[size_t(i)];
      doubled.push_back(2 * xv[size_t(i)]);
    }
    expect_close(got[0].to_doubles(), want_sum, 1e-6, 1e-6, "sum " + at);
    for (size_t k = 1; k < 4; ++k) ASSERT_EQ(got[k].live_shape(), (Shape{l, c})) << k << " " << at;
    EXPECT_EQ(got[1].to_doubles(), want_rows) << at;
    EXPECT_EQ(got[2].to_doubles(), doubled) << at;
    EXPECT_EQ(got[3].to_doubles(), want_rows) << at;
  }
  EXPECT_TRUE(jit.replayed());
}

INSTANTIATE_TEST_SUITE_P(Devices, VariableAxes, testing::ValuesIn(frontend_devices()));

}  // namespace
}  // namespace kitten
