// Optimisers against the update rules written here as loops, the in-place update seen by
// every tensor sharing a parameter, and a training run that must converge.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "frontend/optim.h"
#include "tests/frontend/frontend_test_util.h"

namespace kitten {
namespace {

Tensor param(const std::vector<double>& v) {
  return Tensor::from_doubles(v, {int64_t(v.size())}).requires_grad_();
}

// loss = sum(w * x) + sum(w * w) / 2: gradient x + w.
std::vector<double> grad_of(const std::vector<double>& w, const std::vector<double>& x) {
  std::vector<double> g;
  for (size_t i = 0; i < w.size(); ++i) g.push_back(x[i] + w[i]);
  return g;
}

void run_steps(Optimizer& opt, Tensor& w, const std::vector<double>& x, int steps) {
  Tensor tx = Tensor::from_doubles(x, {int64_t(x.size())});
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    ((w * tx).sum() + (w * w).sum() * 0.5).backward();
    opt.step();
  }
}

TEST(Optimizers, SgdWithMomentumAndWeightDecayFollowsTheRule) {
  std::vector<double> w0 = random_values(9, dtypes::float32, 1),
                      x = random_values(9, dtypes::float32, 2);
  Tensor w = param(w0);
  SGD opt({w}, 0.1, 0.9, 0.01);
  run_steps(opt, w, x, 4);
  std::vector<double> ref = w0, buf(9, 0);
  for (int s = 0; s < 4; ++s) {
    auto g = grad_of(ref, x);
    for (size_t i = 0; i < 9; ++i) {
      buf[i] = 0.9 * buf[i] + g[i] + 0.01 * ref[i];
      ref[i] -= 0.1 * buf[i];
    }
  }
  expect_close(w.to_doubles(), ref, 1e-5, 1e-6, "sgd");
}

TEST(Optimizers, AdamAndAdamWFollowTheRule) {
  for (bool decoupled : {false, true}) {
    std::vector<double> w0 = random_values(11, dtypes::float32, 3),
                        x = random_values(11, dtypes::float32, 4);
    Tensor w = param(w0);
    Adam opt({w}, 0.05, 0.9, 0.999, 1e-8, 0.1, decoupled);
    run_steps(opt, w, x, 5);
    std::vector<double> ref = w0, m(11, 0), v(11, 0);
    for (int t = 1; t <= 5; ++t) {
      auto g = grad_of(ref, x);
      for (size_t i = 0; i < 11; ++i) {
        double gi = decoupled ? g[i] : g[i] + 0.1 * ref[i];
        m[i] = 0.9 * m[i] + 0.1 * gi;
        v[i] = 0.999 * v[i] + 0.001 * gi * gi;
        double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.999, t));
        if (decoupled) ref[i] -= 0.05 * 0.1 * ref[i];
        ref[i] -= 0.05 * mh / (std::sqrt(vh) + 1e-8);
      }
    }
    expect_close(w.to_doubles(), ref, 1e-5, 1e-6, decoupled ? "adamw" : "adam");
  }
}

TEST(Optimizers, UpdateLandsInTheParameterItself) {
  // Every tensor holding the parameter sees the step (an update written into a copy
  // would leave `alias` with the old values), and a parameter read by two layers gets
  // both reads' gradients in one update.
  std::vector<double> w0 = {1, 2, 3}, x1 = {0.5, -1, 2}, x2 = {1, 1, -3};
  Tensor w = param(w0), alias = w;
  Tensor layer1 = w * Tensor::from_doubles(x1, {3}), layer2 = w * Tensor::from_doubles(x2, {3});
  SGD opt({w}, 0.5);
  (layer1.sum() + layer2.sum()).backward();
  opt.step();
  std::vector<double> want;
  for (size_t i = 0; i < 3; ++i) want.push_back(w0[i] - 0.5 * (x1[i] + x2[i]));
  expect_close(alias.to_doubles(), want, 0, 0, "alias after the step");
  expect_close(w.to_doubles(), want, 0, 0, "parameter after the step");
  EXPECT_EQ(alias.node(), w.node());
  EXPECT_THROW(w.assign(Tensor::zeros({4})), TensorError);
}

// An SGD whose update lands in a copy of the parameter: what a broken in-place assign does.
class CopyingSGD : public SGD {
 public:
  using SGD::SGD;

 private:
  void update(const Tensor& w, const Tensor& g, const std::vector<Tensor>& state,
              std::vector<std::pair<Tensor, Tensor>>& out) override {
    Tensor copy = w.contiguous();
    copy.realize();
    out.emplace_back(copy, w - g * 0.5);
    (void)state;
  }
};

// Whether a step of `opt` on loss sum(w * x) reached w through every tensor sharing it.
bool step_reaches_the_parameter(Optimizer& opt, Tensor& w, const std::vector<double>& x) {
  std::vector<double> w0 = w.to_doubles();
  Tensor alias = w;
  (w * Tensor::from_doubles(x, {int64_t(x.size())})).sum().backward();
  opt.step();
  std::vector<double> got = alias.to_doubles();
  for (size_t i = 0; i < x.size(); ++i)
    if (got[i] != w0[i] - 0.5 * x[i]) return false;
  return true;
}

TEST(Optimizers, TheInPlaceCheckFailsOnAnUpdateWrittenToACopy) {
  std::vector<double> x = {0.5, -1, 2};
  Tensor w1 = param({1, 2, 3}), w2 = param({1, 2, 3});
  SGD right({w1}, 0.5);
  CopyingSGD broken({w2}, 0.5);
  EXPECT_TRUE(step_reaches_the_parameter(right, w1, x));
  EXPECT_FALSE(step_reaches_the_parameter(broken, w2, x));
}

TEST(Training, MlpFitsSin3xWithAdam) {
  // y = sin(3x) on 256 points of [-1, 1]; 1 -> 64 (tanh) -> 1; Adam lr 1e-2.
  std::vector<double> xs, ys;
  for (int i = 0; i < 256; ++i) {
    double x = -1 + 2.0 * i / 255;
    xs.push_back(x);
    ys.push_back(std::sin(3 * x));
  }
  Tensor x = Tensor::from_doubles(xs, {256, 1}), y = Tensor::from_doubles(ys, {256, 1});
  Tensor w1 =
      (Tensor::randn({1, 64}, dtypes::float32, "cpu", 11) * 1.0).contiguous().requires_grad_();
  Tensor b1 = Tensor::zeros({64}).contiguous().requires_grad_();
  Tensor w2 =
      (Tensor::randn({64, 1}, dtypes::float32, "cpu", 12) * 0.125).contiguous().requires_grad_();
  Tensor b2 = Tensor::zeros({1}).contiguous().requires_grad_();
  Adam opt({w1, b1, w2, b2}, 1e-2);
  auto loss_of = [&] {
    Tensor pred = (x.matmul(w1) + b1).tanh().matmul(w2) + b2;
    return (pred - y).square().mean();
  };
  double first = loss_of().to_doubles()[0], last = first;
  int steps = 0;
  for (; steps < 2000 && last >= 1e-3; ++steps) {
    opt.zero_grad();
    Tensor loss = loss_of();
    loss.backward();
    opt.step();
    if (steps % 100 == 99) last = loss_of().to_doubles()[0];
  }
  last = loss_of().to_doubles()[0];
  std::printf("sin(3x) MLP: MSE %.3g after %d Adam steps (from %.3g)\n", last, steps, first);
  EXPECT_LT(last, 1e-3) << "MSE after " << steps << " steps (from " << first << ")";
}

}  // namespace
}  // namespace kitten
