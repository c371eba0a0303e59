// In-place writes: assign into views of a tensor, written in place where the kernel may
// (one kernel, the same buffer) and through a buffer of its own where the value reads the
// target elsewhere; the fused optimiser against the unfused one, bit for bit.
#include <gtest/gtest.h>

#include <cstring>

#include "frontend/optim.h"
#include "frontend/schedule.h"
#include "tests/frontend/frontend_test_util.h"

namespace kitten {
namespace {

class Assign : public FrontendDeviceTest {};

std::vector<double> iota_values(size_t n, double start = 0) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + double(i);
  return v;
}

TEST_P(Assign, ElementWiseUpdateIsOneKernelInTheSameBuffer) {
  std::vector<double> w0 = random_values(1000, dtypes::float32, 1);
  Tensor w = from(w0, {10, 100});
  void* before = w.node()->data()->buffer.ptr;
  int64_t kernels = realize_stats().kernels;
  w.assign(w * 2.0 + 1.0);
  EXPECT_EQ(realize_stats().kernels - kernels, 1);
  EXPECT_EQ(w.node()->data()->buffer.ptr, before);
  std::vector<double> want;
  for (double x : w0) want.push_back(double(float(float(x) * 2.0f + 1.0f)));
  expect_close(w.to_doubles(), want, 0, 0, "w * 2 + 1");
}

TEST_P(Assign, IntoViewsWritesOnlyTheirElements) {
  // A slice, a permuted slice and a flipped row of a [6, 7] tensor.
  Tensor a = from(iota_values(42), {6, 7});
  std::vector<double> want = iota_values(42);
  a.slice(0, 1, 3).assign(from(iota_values(14, 100), {2, 7}));
  for (int i = 0; i < 14; ++i) want[size_t(7 + i)] = 100 + i;
  a.slice(1, 2, 5).transpose(0, 1).slice(1, 4, 6).assign(from(iota_values(6, 200), {3, 2}));
  for (int c = 0; c < 3; ++c)
    for (int r = 0; r < 2; ++r) want[size_t((4 + r) * 7 + 2 + c)] = 200 + c * 2 + r;
  a.slice(0, 0, 1).flip({1}).assign(from(iota_values(7, 300), {1, 7}));
  for (int c = 0; c < 7; ++c) want[size_t(6 - c)] = 300 + c;
  expect_close(a.to_doubles(), want, 0, 0, "views");
  // A KV-cache append: row t of the cache, then a read of rows 0..t.
  Tensor cache = Tensor::zeros({5, 3}, dtypes::float32, dev()).contiguous();
  for (int t = 0; t < 5; ++t) {
    cache.slice(0, t, t + 1).assign(from({double(t), double(t) + 0.5, -double(t)}, {1, 3}));
    std::vector<double> got = cache.slice(0, 0, t + 1).sum({0}).to_doubles();
    double s = t * (t + 1) / 2.0;
    expect_close(got, {s, s + 0.5 * (t + 1), -s}, 0, 0, "cache rows 0.." + std::to_string(t));
  }
}

TEST_P(Assign, ValuesReadingTheTargetElsewhereSeeTheOldContents) {
  std::vector<double> v0 = random_values(33, dtypes::float32, 2);
  Tensor a = from(v0, {33});
  a.assign(a.flip({0}));  // a kernel writing a in place would read elements it changed
  std::vector<double> want(v0.rbegin(), v0.rend());
  expect_close(a.to_doubles(), want, 0, 0, "flip");
  Tensor b = from(v0, {33});
  b.assign(b - b.max());
  double mx = *std::max_element(v0.begin(), v0.end());
  want.clear();
  for (double x : v0) want.push_back(double(float(x) - float(mx)));
  expect_close(b.to_doubles(), want, 0, 0, "minus the max");
  // A swap, and an update that must run before the one writing what it reads.
  Tensor x = from(iota_values(8), {8}), y = from(iota_values(8, 10), {8});
  Tensor::assign({{x, y}, {y, x}});
  expect_close(x.to_doubles(), iota_values(8, 10), 0, 0, "swap x");
  expect_close(y.to_doubles(), iota_values(8), 0, 0, "swap y");
  Tensor p = from(iota_values(4), {4}), q = from(iota_values(4, 1), {4});
  Tensor::assign({{p, p * 2.0}, {q, q + p.sum()}});  // q reads all of p's old values
  expect_close(p.to_doubles(), {0, 2, 4, 6}, 0, 0, "p");
  expect_close(q.to_doubles(), {7, 8, 9, 10}, 0, 0, "q");
}

TEST_P(Assign, ABufferValueOverItsTargetIsReadBeforeTheWrite) {
  // The value is the target's own buffer, seen through another view.
  Tensor a = from(iota_values(6), {6});
  a.flip({0}).assign(a);
  expect_close(a.to_doubles(), {5, 4, 3, 2, 1, 0}, 0, 0, "a.flip() = a");
  Tensor m = from(iota_values(9), {3, 3});
  m.transpose().assign(m);
  expect_close(m.to_doubles(), {0, 3, 6, 1, 4, 7, 2, 5, 8}, 0, 0, "m.T = m");
  // A swap through views of different shapes.
  Tensor p = from(iota_values(4), {4}), q = from(iota_values(4, 10), {2, 2});
  Tensor::assign({{p.reshape({2, 2}), q}, {q.reshape({4}), p}});
  expect_close(p.to_doubles(), iota_values(4, 10), 0, 0, "p");
  expect_close(q.to_doubles(), iota_values(4), 0, 0, "q");
  // A write through detach() lands in the source.
  Tensor d = from(iota_values(3), {3});
  d.detach().assign(from({7, 8, 9}, {3}));
  expect_close(d.to_doubles(), {7, 8, 9}, 0, 0, "through detach");
}

TEST_P(Assign, RefusesWritesWithoutOneElementEach) {
  Tensor a = Tensor::zeros({1, 4}, dtypes::float32, dev()).contiguous();
  EXPECT_THROW(a.expand({3, 4}).assign(Tensor::ones({3, 4}, dtypes::float32, dev())), TensorError);
  EXPECT_THROW(Tensor::assign({{a.slice(1, 0, 2), Tensor::ones({1, 2}, dtypes::float32, dev())},
                               {a.slice(1, 2, 4), Tensor::ones({1, 2}, dtypes::float32, dev())}}),
               TensorError);
  EXPECT_THROW(a.assign(Tensor::ones({4}, dtypes::float32, dev())), TensorError);
  expect_close(a.to_doubles(), {0, 0, 0, 0}, 0, 0, "unchanged after the refusals");
}

TEST_P(Assign, BoundVariablesRunTheSameKernelsForEveryValue) {
  // A KV-cache append at a bound position t and a masked read of rows 0..t: every t after
  // the first compiles nothing.
  const int64_t n = 8, d = 4;
  Tensor cache = Tensor::zeros({n, d}, dtypes::float32, dev()).contiguous();
  std::vector<double> rows = random_values(size_t(n * d), dtypes::float32, 9);
  Tensor pos = Tensor::arange(0, double(n), 1, dtypes::int32, dev()).reshape({n, 1});
  int64_t compiled = 0;
  for (int64_t t = 0; t < n; ++t) {
    Tensor tv = Tensor::variable("t", t, 0, n - 1, dev());
    std::vector<double> row(rows.begin() + t * d, rows.begin() + (t + 1) * d);
    cache.slice(0, tv, 1).assign(from(row, {1, d}));
    Tensor seen = pos.le(tv).where(cache, cache.scalar(0)).sum({0});
    std::vector<double> want(size_t(d), 0.0);
    for (int64_t r = 0; r <= t; ++r)
      for (int64_t c = 0; c < d; ++c)
        want[size_t(c)] = double(float(want[size_t(c)] + rows[size_t(r * d + c)]));
    expect_close(seen.to_doubles(), want, 1e-6, 0, "rows 0.." + std::to_string(t));
    if (t == 1) compiled = realize_stats().compiled;
    if (t > 1) {
      EXPECT_EQ(realize_stats().compiled, compiled) << "t = " << t;
    }
  }
  // The gradient of a slice at a bound position lands on its rows.
  Tensor x = from(random_values(18, dtypes::float32, 10), {6, 3}).requires_grad_();
  std::vector<double> w = random_values(9, dtypes::float32, 11);
  (x.slice(0, Tensor::variable("t", 2, 0, 3, dev()), 3) * from(w, {3, 3})).sum().backward();
  std::vector<double> want(18, 0.0);
  for (size_t i = 0; i < 9; ++i) want[6 + i] = w[i];
  expect_close(x.grad().to_doubles(), want, 0, 0, "gradient of a bound slice");
}

TEST_P(Assign, BoundVariablesRefuseWhatCannotHold) {
  Tensor a = Tensor::zeros({5, 2}, dtypes::float32, dev());
  EXPECT_THROW(Tensor::variable("t", 6, 0, 5, dev()), TensorError);
  EXPECT_THROW(Tensor::variable("not a name", 0, 0, 5, dev()), TensorError);
  EXPECT_THROW(a.slice(0, Tensor::variable("t", 0, 0, 4, dev()), 2), TensorError);  // 4 + 2 > 5
  EXPECT_THROW(a.slice(0, a, 2), TensorError);
  Tensor t1 = Tensor::variable("t", 1, 0, 3, dev()), t2 = Tensor::variable("t", 2, 0, 3, dev());
  EXPECT_THROW((a.slice(0, t1, 2) + a.slice(0, t2, 2)).realize(), TensorError);
}

// A small model: two parameters of awkward sizes, one shared by both layers, and a
// third that gets no gradient on odd steps.
struct TinyModel {
  Tensor w1, w2, w3, x;
  explicit TinyModel(const std::string& dev) {
    w1 = Tensor::from_doubles(random_values(5 * 7, dtypes::float32, 3, 0.5), {5, 7},
                              dtypes::float32, dev)
             .requires_grad_();
    w2 = Tensor::from_doubles(random_values(7 * 3, dtypes::float32, 4, 0.5), {7, 3},
                              dtypes::float32, dev)
             .requires_grad_();
    w3 = Tensor::from_doubles(random_values(3, dtypes::float32, 5), {3}, dtypes::float32, dev)
             .requires_grad_();
    x = Tensor::from_doubles(random_values(4 * 5, dtypes::float32, 6), {4, 5}, dtypes::float32,
                             dev);
  }
  Tensor loss(int step) const {
    Tensor h = x.matmul(w1).tanh().matmul(w2);
    if (step % 2 == 0) h = h * w3;
    return (h * h).mean() + (w1 * w1).sum() * 1e-3;
  }
};

std::vector<std::vector<std::byte>> train(const std::string& dev, bool fused, bool sgd) {
  TinyModel m(dev);
  std::vector<Tensor> params{m.w1, m.w2, m.w3, m.w1};  // w1 twice: one parameter
  std::unique_ptr<Optimizer> opt;
  if (sgd)
    opt = std::make_unique<SGD>(params, 0.1, 0.9, 0.01, fused);
  else
    opt = std::make_unique<Adam>(params, 0.05, 0.9, 0.999, 1e-8, 0.01, true, fused);
  EXPECT_EQ(opt->params().size(), 3u);
  for (int s = 0; s < 6; ++s) {
    opt->zero_grad();
    Tensor loss = m.loss(s);
    loss.backward();
    opt->step({&loss});
  }
  return {m.w1.bytes(), m.w2.bytes(), m.w3.bytes()};
}

TEST_P(Assign, FusedOptimiserGivesTheSameBits) {
  // NVRTC contracts a*b+c into one rounding by its own choice per kernel: off for this test.
  if (dev() == "cuda") setenv("KITTEN_CUDA_FMAD", "0", 1);
  for (bool sgd : {true, false}) {
    auto unfused = train(dev(), false, sgd);
    int64_t kernels = realize_stats().kernels;
    auto fused = train(dev(), true, sgd);
    EXPECT_GT(realize_stats().kernels, kernels);
    for (size_t i = 0; i < unfused.size(); ++i)
      EXPECT_TRUE(unfused[i] == fused[i])
          << (sgd ? "SGD" : "AdamW") << " parameter " << i << " differs fused vs unfused";
  }
  unsetenv("KITTEN_CUDA_FMAD");
}

TEST_P(Assign, FusedStepWithElementWiseGradientsGivesTheSameBits) {
  // Gradients cheap enough to compute inline read the parameters, which the fused kernel
  // writes inside its one buffer: they are stored first.
  auto run = [&](bool fused) {
    Tensor w = from(random_values(37, dtypes::float32, 20), {37}).requires_grad_();
    Tensor b = from(random_values(37, dtypes::float32, 21), {37}).requires_grad_();
    Tensor x = from(random_values(37, dtypes::float32, 22), {37});
    Tensor t = from(random_values(37, dtypes::float32, 23), {37});
    SGD opt({w, b}, 0.1, 0.9, 0.0, fused);
    for (int s = 0; s < 4; ++s) {
      opt.zero_grad();
      Tensor loss = (x * w + b - t).square().sum();
      loss.backward();
      opt.step({&loss});
    }
    return std::make_pair(w.bytes(), b.bytes());
  };
  if (dev() == "cuda") setenv("KITTEN_CUDA_FMAD", "0", 1);
  auto unfused = run(false), fused = run(true);
  unsetenv("KITTEN_CUDA_FMAD");
  EXPECT_TRUE(unfused.first == fused.first);
  EXPECT_TRUE(unfused.second == fused.second);
}

TEST_P(Assign, FusedStepIsOneKernelOverAllParameters) {
  TinyModel m(dev());
  Adam opt({m.w1, m.w2, m.w3}, 0.01, 0.9, 0.999, 1e-8, 0, false, true);
  // Each parameter now lies inside one buffer; its values are unchanged.
  std::vector<double> w2 = m.w2.to_doubles();
  EXPECT_NE(m.w2.node()->data()->parent, nullptr);
  Tensor loss = m.loss(0);
  loss.backward();
  Tensor::realize({&loss});
  for (const Tensor& p : opt.params()) {
    Tensor g = p.grad();
    g.realize();
  }
  realize_stats().profile = true;
  realize_stats().times.clear();
  opt.step();
  realize_stats().profile = false;
  // The update of every parameter and its state, and the bias corrections' powers.
  ASSERT_EQ(realize_stats().times.size(), 2u);
  EXPECT_NE(m.w2.to_doubles(), w2);
}

INSTANTIATE_TEST_SUITE_P(Devices, Assign, testing::ValuesIn(frontend_devices()));

}  // namespace
}  // namespace kitten
