// Gradients of every op in float64 against central finite differences, and of softmax,
// layernorm, gelu and attention against hand-derived formulas written here as loops.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "tests/frontend/frontend_test_util.h"

namespace kitten {
namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
const DType f64 = dtypes::float64;

Tensor make(const std::vector<double>& v, const Shape& s) {
  return Tensor::from_doubles(v, s, f64);
}

// Checks d sum(f(x) * r) / dx for every input against central differences (h = 1e-6).
// `positive`: inputs drawn away from zero (for log, sqrt, pow, division).
void check_grad(const char* what, const Fn& f, const std::vector<Shape>& shapes,
                bool positive = false, uint64_t seed = 1) {
  std::vector<std::vector<double>> xs;
  for (size_t i = 0; i < shapes.size(); ++i) {
    auto v = random_values(size_t(numel(shapes[i])), f64, seed * 31 + i);
    if (positive)
      for (double& x : v) x = std::abs(x) + 0.5;
    xs.push_back(v);
  }
  auto inputs = [&](const std::vector<std::vector<double>>& vals) {
    std::vector<Tensor> t;
    for (size_t i = 0; i < vals.size(); ++i) t.push_back(make(vals[i], shapes[i]));
    return t;
  };
  std::vector<Tensor> x = inputs(xs);
  for (Tensor& t : x) t.requires_grad_();
  Tensor y = f(x);
  auto r = random_values(size_t(y.numel()), f64, seed + 99);
  Tensor rt = make(r, y.shape());
  (y * rt).sum().backward();
  auto loss = [&](const std::vector<std::vector<double>>& vals) {
    return (f(inputs(vals)) * rt).sum().to_doubles()[0];
  };
  for (size_t i = 0; i < xs.size(); ++i) {
    ASSERT_TRUE(x[i].grad().defined()) << what << ": input " << i << " got no gradient";
    EXPECT_EQ(x[i].grad().shape(), shapes[i]) << what;
    std::vector<double> got = x[i].grad().to_doubles(), want(got.size());
    for (size_t k = 0; k < got.size(); ++k) {
      auto up = xs, down = xs;
      const double h = 1e-6;
      up[i][k] += h;
      down[i][k] -= h;
      want[k] = (loss(up) - loss(down)) / (2 * h);
    }
    expect_close(got, want, 1e-6, 1e-7, std::string(what) + " input " + std::to_string(i));
  }
}

TEST(Autograd, ElementwiseOps) {
  check_grad("add", [](auto& x) { return x[0] + x[1]; }, {{3, 4}, {4}});
  check_grad("sub", [](auto& x) { return x[0] - x[1]; }, {{3, 1}, {1, 5}});
  check_grad("mul", [](auto& x) { return x[0] * x[1]; }, {{2, 3}, {2, 3}});
  check_grad(
      "div", [](auto& x) { return x[0] / x[1]; }, {{5}, {5}}, true);
  check_grad("neg", [](auto& x) { return -x[0] * 3.0; }, {{4}});
  check_grad(
      "recip", [](auto& x) { return x[0].recip(); }, {{4}}, true);
  check_grad(
      "sqrt", [](auto& x) { return x[0].sqrt(); }, {{4}}, true);
  check_grad(
      "rsqrt", [](auto& x) { return x[0].rsqrt(); }, {{4}}, true);
  check_grad("exp", [](auto& x) { return x[0].exp(); }, {{6}});
  check_grad(
      "log", [](auto& x) { return x[0].log(); }, {{6}}, true);
  check_grad("sin", [](auto& x) { return x[0].sin(); }, {{6}});
  check_grad("cos", [](auto& x) { return x[0].cos(); }, {{6}});
  check_grad("tanh", [](auto& x) { return x[0].tanh(); }, {{7}});
  check_grad("erf", [](auto& x) { return x[0].erf(); }, {{7}});
  check_grad("sigmoid", [](auto& x) { return x[0].sigmoid(); }, {{6}});
  check_grad("gelu", [](auto& x) { return x[0].gelu(); }, {{6}});
  check_grad("gelu_tanh", [](auto& x) { return x[0].gelu(true); }, {{6}});
  check_grad("silu", [](auto& x) { return x[0].silu(); }, {{6}});
  check_grad("abs", [](auto& x) { return x[0].abs(); }, {{6}});
  check_grad(
      "pow", [](auto& x) { return x[0].pow(2.5); }, {{5}}, true);
  check_grad(
      "pow tensor", [](auto& x) { return x[0].pow(x[1]); }, {{5}, {5}}, true);
  check_grad("maximum", [](auto& x) { return x[0].maximum(x[1]); }, {{8}, {8}});
  check_grad("minimum", [](auto& x) { return x[0].minimum(x[1]); }, {{8}, {8}});
  check_grad("where", [](auto& x) { return x[0].gt(x[1]).where(x[0] * 2.0, x[1]); }, {{8}, {8}});
}

TEST(Autograd, ReductionsAndMovement) {
  check_grad("sum", [](auto& x) { return x[0].sum({1}); }, {{3, 4, 2}});
  check_grad("mean", [](auto& x) { return x[0].mean({0, 2}, true); }, {{3, 4, 2}});
  check_grad("var", [](auto& x) { return x[0].var({1}); }, {{3, 5}});
  check_grad("max", [](auto& x) { return x[0].max({1}); }, {{4, 5}});
  check_grad("min", [](auto& x) { return x[0].min(); }, {{4, 5}});
  check_grad("reshape permute",
             [](auto& x) {
               return x[0].reshape({4, 3}).permute({1, 0}) * 2.0;
             },
             {{2, 6}});
  check_grad("expand", [](auto& x) { return x[0].expand({3, 4}) * x[1]; }, {{3, 1}, {3, 4}});
  check_grad("pad shrink flip",
             [](auto& x) {
               return x[0].pad({{1, 2}, {0, 1}}).flip({0}).shrink({{1, 4}, {0, 3}});
             },
             {{3, 2}});
  check_grad("cat stack",
             [](auto& x) {
               return Tensor::cat({x[0], x[1].exp()}, 1) * Tensor::stack({x[2], x[2]}, 0).sum({0});
             },
             {{2, 3}, {2, 1}, {2, 4}});
  check_grad("cumsum", [](auto& x) { return x[0].cumsum(1); }, {{2, 5}});
}

TEST(Autograd, ProductsLookupsAndNorms) {
  check_grad("matmul", [](auto& x) { return x[0].matmul(x[1]); }, {{2, 3, 4}, {4, 5}});
  check_grad("gather",
             [](auto& x) {
               Tensor idx = Tensor::from_doubles(std::vector<double>{2, 0, 1, 1, 3, 0}, {3, 2},
                                                 dtypes::int32);
               return x[0].gather(1, idx);
             },
             {{4, 4}});
  check_grad("embedding",
             [](auto& x) {
               return x[0].embedding(
                   Tensor::from_doubles(std::vector<double>{1, 3, 1, 0}, {2, 2}, dtypes::int32));
             },
             {{5, 3}});
  check_grad("softmax", [](auto& x) { return x[0].softmax(-1); }, {{3, 5}});
  check_grad("log_softmax", [](auto& x) { return x[0].log_softmax(0); }, {{3, 5}});
  check_grad("layernorm", [](auto& x) { return x[0].layernorm(x[1], x[2]); }, {{3, 6}, {6}, {6}});
  check_grad("rmsnorm", [](auto& x) { return x[0].rmsnorm(x[1]); }, {{3, 6}, {6}});
  check_grad(
      "attention",
      [](auto& x) { return Tensor::scaled_dot_product_attention(x[0], x[1], x[2], {}, true); },
      {{2, 3, 4}, {2, 5, 4}, {2, 5, 4}});
}

// Hand-derived gradients: softmax y (g - sum g y); layernorm's three-term formula; gelu's
// Phi(x) + x phi(x); attention's dV = P^T dO, dS = P (dP - rowsum(dP P)), dQ, dK.
TEST(Autograd, MatchesHandDerivedGradients) {
  const int64_t r = 3, c = 7;
  auto xv = random_values(r * c, f64, 5), gv = random_values(r * c, f64, 6);
  Tensor x = make(xv, {r, c}).requires_grad_(), g = make(gv, {r, c});
  Tensor y = x.softmax(-1);
  y.backward(g);
  auto yv = y.to_doubles();
  std::vector<double> want(size_t(r * c));
  for (int64_t i = 0; i < r; ++i) {
    double dot = 0;
    for (int64_t j = 0; j < c; ++j) dot += gv[size_t(i * c + j)] * yv[size_t(i * c + j)];
    for (int64_t j = 0; j < c; ++j)
      want[size_t(i * c + j)] = yv[size_t(i * c + j)] * (gv[size_t(i * c + j)] - dot);
  }
  expect_close(x.grad().to_doubles(), want, 1e-12, 1e-14, "softmax");

  Tensor x2 = make(xv, {r, c}).requires_grad_();
  x2.layernorm({}, {}, 1e-5).backward(g);
  for (int64_t i = 0; i < r; ++i) {
    double mean = 0, var = 0, gm = 0, gxm = 0;
    for (int64_t j = 0; j < c; ++j) mean += xv[size_t(i * c + j)] / double(c);
    for (int64_t j = 0; j < c; ++j) var += std::pow(xv[size_t(i * c + j)] - mean, 2) / double(c);
    double rstd = 1 / std::sqrt(var + 1e-5);
    for (int64_t j = 0; j < c; ++j) {
      double xh = (xv[size_t(i * c + j)] - mean) * rstd;
      gm += gv[size_t(i * c + j)] / double(c);
      gxm += gv[size_t(i * c + j)] * xh / double(c);
    }
    for (int64_t j = 0; j < c; ++j) {
      double xh = (xv[size_t(i * c + j)] - mean) * rstd;
      want[size_t(i * c + j)] = rstd * (gv[size_t(i * c + j)] - gm - xh * gxm);
    }
  }
  expect_close(x2.grad().to_doubles(), want, 1e-10, 1e-12, "layernorm");

  Tensor x3 = make(xv, {r, c}).requires_grad_();
  x3.gelu().backward(g);
  for (size_t k = 0; k < xv.size(); ++k) {
    double v = xv[k];
    want[k] = gv[k] * (0.5 * (1 + std::erf(v / std::sqrt(2.0))) +
                       v * std::exp(-v * v / 2) / std::sqrt(2 * M_PI));
  }
  // erf is float32-accurate (Numerical Recipes erfc beyond |x| = 0.5), in float64 too.
  expect_close(x3.grad().to_doubles(), want, 1e-6, 2e-7, "gelu");

  const int64_t nq = 3, nk = 4, d = 5;
  auto qv = random_values(nq * d, f64, 7), kv = random_values(nk * d, f64, 8),
       vv = random_values(nk * d, f64, 9), ov = random_values(nq * d, f64, 10);
  Tensor q = make(qv, {nq, d}).requires_grad_(), k = make(kv, {nk, d}).requires_grad_(),
         v = make(vv, {nk, d}).requires_grad_();
  Tensor::scaled_dot_product_attention(q, k, v).backward(make(ov, {nq, d}));
  double sc = 1 / std::sqrt(double(d));
  std::vector<double> p(size_t(nq * nk)), dq(size_t(nq * d), 0), dk(size_t(nk * d), 0),
      dv(size_t(nk * d), 0);
  for (int64_t i = 0; i < nq; ++i) {
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < nk; ++j) {
      double dot = 0;
      for (int64_t e = 0; e < d; ++e) dot += qv[size_t(i * d + e)] * kv[size_t(j * d + e)];
      p[size_t(i * nk + j)] = dot * sc;
      m = std::max(m, dot * sc);
    }
    for (int64_t j = 0; j < nk; ++j)
      s += (p[size_t(i * nk + j)] = std::exp(p[size_t(i * nk + j)] - m));
    for (int64_t j = 0; j < nk; ++j) p[size_t(i * nk + j)] /= s;
  }
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<double> dp(size_t(nk), 0);
    double rowsum = 0;
    for (int64_t j = 0; j < nk; ++j) {
      for (int64_t e = 0; e < d; ++e) {
        dv[size_t(j * d + e)] += p[size_t(i * nk + j)] * ov[size_t(i * d + e)];
        dp[size_t(j)] += ov[size_t(i * d + e)] * vv[size_t(j * d + e)];
      }
      rowsum += dp[size_t(j)] * p[size_t(i * nk + j)];
    }
    for (int64_t j = 0; j < nk; ++j) {
      double ds = p[size_t(i * nk + j)] * (dp[size_t(j)] - rowsum) * sc;
      for (int64_t e = 0; e < d; ++e) {
        dq[size_t(i * d + e)] += ds * kv[size_t(j * d + e)];
        dk[size_t(j * d + e)] += ds * qv[size_t(i * d + e)];
      }
    }
  }
  expect_close(q.grad().to_doubles(), dq, 1e-10, 1e-12, "attention dQ");
  expect_close(k.grad().to_doubles(), dk, 1e-10, 1e-12, "attention dK");
  expect_close(v.grad().to_doubles(), dv, 1e-10, 1e-12, "attention dV");
}

TEST(Autograd, AccumulatesAndRespectsNoGradAndDetach) {
  Tensor w = make({1, 2, 3}, {3}).requires_grad_();
  (w * w).sum().backward();
  (w * 3.0).sum().backward();  // accumulates: 2w + 3
  expect_close(w.grad().to_doubles(), {5, 7, 9}, 0, 0, "accumulated");
  w.zero_grad();
  EXPECT_FALSE(w.grad().defined());
  // A parameter used twice gets both uses' gradients once each.
  (w * 2.0 + w.exp()).sum().backward();
  expect_close(w.grad().to_doubles(), {2 + std::exp(1.0), 2 + std::exp(2.0), 2 + std::exp(3.0)},
               1e-13, 0, "used twice");
  w.zero_grad();
  Tensor frozen;
  {
    NoGrad off;
    frozen = w * 10.0;
  }
  (frozen * w + w.detach() * w).sum().backward();  // 10w + w: only the direct uses count
  expect_close(w.grad().to_doubles(), {11, 22, 33}, 0, 0, "no_grad and detach");
  EXPECT_THROW((frozen * 2.0).sum().backward(), TensorError);
  EXPECT_THROW(Tensor::zeros({2}, dtypes::int32).requires_grad_(), TensorError);
  EXPECT_THROW((w * 2.0).backward(), TensorError);  // not a scalar: needs a gradient
}

}  // namespace
}  // namespace kitten
