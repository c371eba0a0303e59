// JIT capture: the second call is captured, later calls replay one graph with the inputs
// rebound and give the bits of the uncaptured function; shape or dtype changes capture
// again; KITTEN_JIT=0 turns it off; and the training check, with the fused optimiser and
// the JIT on and off.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "frontend/jit.h"
#include "frontend/optim.h"
#include "frontend/schedule.h"
#include "frontend/train_demo.h"
#include "tests/frontend/frontend_test_util.h"

namespace kitten {
namespace {

class JitCapture : public FrontendDeviceTest {};

// Several kernels: a row softmax, a matmul and an element-wise tail.
std::vector<Tensor> several_kernels(const std::vector<Tensor>& in) {
  Tensor a = in[0].softmax(-1);
  Tensor b = a.matmul(in[1]) + in[0].sum({1}, true);
  return {b.tanh(), a.max({0})};
}

TEST_P(JitCapture, ReplaysTheCapturedGraphWithTheSameBits) {
  Jit jit(several_kernels);
  std::vector<std::vector<std::byte>> first_outputs;
  std::vector<Tensor> kept;
  for (int call = 0; call < 5; ++call) {
    Tensor x = random({7, 33}, 10 + uint64_t(call)), w = random({33, 5}, 20 + uint64_t(call));
    std::vector<Tensor> want = several_kernels({x, w});
    for (Tensor& t : want) t.realize();
    int64_t realizes = realize_stats().realizes, replays = realize_stats().replays;
    std::vector<Tensor> got = jit({x, w});
    EXPECT_EQ(jit.replayed(), call >= 2) << "call " << call;
    if (call >= 2) {
      // One submission, nothing scheduled.
      EXPECT_EQ(realize_stats().replays - replays, 1);
      EXPECT_EQ(realize_stats().realizes, realizes);
      EXPECT_GE(jit.graph_kernels(), 2u);
    }
    ASSERT_EQ(got.size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ(got[i].shape(), want[i].shape());
      EXPECT_TRUE(got[i].bytes() == want[i].bytes()) << "call " << call << " output " << i;
    }
    if (call == 2) first_outputs = {got[0].bytes(), got[1].bytes()};
    if (call == 2) kept = got;
  }
  // Outputs of an earlier replay keep their values (each replay writes fresh buffers).
  EXPECT_TRUE(kept[0].bytes() == first_outputs[0]);
  EXPECT_TRUE(kept[1].bytes() == first_outputs[1]);
}

TEST_P(JitCapture, ShapeOrDtypeChangesCaptureAgain) {
  Jit jit([](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0] * 2.0 + 1.0}; });
  auto call = [&](Shape s, DType d, uint64_t seed) {
    Tensor x = random(s, seed, d);
    Tensor got = jit({x})[0];
    EXPECT_TRUE(got.bytes() == (x * 2.0 + 1.0).bytes()) << shape_text(s) << " " << d.name();
    return jit.replayed();
  };
  EXPECT_FALSE(call({4, 5}, dtypes::float32, 1));
  EXPECT_FALSE(call({4, 5}, dtypes::float32, 2));
  EXPECT_TRUE(call({4, 5}, dtypes::float32, 3));
  EXPECT_FALSE(call({4, 6}, dtypes::float32, 4));  // a new shape runs, then is captured
  EXPECT_FALSE(call({4, 6}, dtypes::float32, 5));
  EXPECT_TRUE(call({4, 6}, dtypes::float32, 6));
  EXPECT_FALSE(call({4, 5}, dtypes::int32, 7));
  EXPECT_TRUE(call({4, 5}, dtypes::float32, 8));  // the first capture is kept
}

TEST_P(JitCapture, RepeatedInputsAndOutputsAndMovedParameters) {
  // An output returned twice is one buffer; inputs given as one buffer are a signature of
  // their own.
  Jit twice([](const std::vector<Tensor>& in) {
    Tensor y = in[0] + in[1];
    return std::vector<Tensor>{y, y};
  });
  for (int call = 0; call < 4; ++call) {
    Tensor x = random({5}, 40 + uint64_t(call)), z = random({5}, 50 + uint64_t(call));
    std::vector<Tensor> same = twice({x, x});
    EXPECT_TRUE(same[0].bytes() == (x + x).bytes()) << "call " << call;
    std::vector<Tensor> got = twice({x, z});
    EXPECT_TRUE(got[0].bytes() == (x + z).bytes()) << "call " << call;
    EXPECT_TRUE(got[1].bytes() == (x + z).bytes()) << "call " << call;
  }
  // A function reading parameters, captured, then the parameters moved into a fused
  // optimiser's buffer: replays read them where they are now.
  Tensor w = random({4, 3}, 60).requires_grad_();
  Jit forward([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0].matmul(w)}; });
  Tensor x = random({2, 4}, 61);
  forward({x});
  forward({x});
  SGD opt({w}, 0.1, 0.0, 0.0, true);
  Tensor moved = random({4, 3}, 62);
  w.assign(moved);
  Tensor got = forward({x})[0];
  EXPECT_TRUE(forward.replayed());
  EXPECT_TRUE(got.bytes() == x.matmul(moved).bytes());
}

TEST_P(JitCapture, OffWithTheEnvironmentVariable) {
  setenv("KITTEN_JIT", "0", 1);
  Jit jit(several_kernels);
  unsetenv("KITTEN_JIT");
  for (int call = 0; call < 3; ++call) {
    Tensor x = random({3, 4}, uint64_t(call)), w = random({4, 2}, 9);
    EXPECT_TRUE(jit({x, w})[0].bytes() == several_kernels({x, w})[0].bytes());
    EXPECT_FALSE(jit.replayed());
  }
}

TEST_P(JitCapture, ReplayedTrainingStepsUpdateTheParametersInPlace) {
  // SGD on a small regression: the replayed steps write the parameters and the momentum
  // in place; the losses and the final parameters equal those of uncaptured steps.
  auto run = [&](bool jit_on, bool fused) {
    Tensor w = random({6, 3}, 31).requires_grad_(), x = random({10, 6}, 32),
           y = random({10, 3}, 33);
    SGD opt({w}, 0.05, 0.9, 0.0, fused);
    auto step = [&](const std::vector<Tensor>& in) {
      opt.zero_grad();
      Tensor loss = (in[0].matmul(w) - in[1]).square().mean();
      loss.backward();
      opt.step({&loss});
      return std::vector<Tensor>{loss};
    };
    Jit jit(step);
    std::vector<double> losses;
    for (int s = 0; s < 8; ++s)
      losses.push_back((jit_on ? jit({x, y}) : step({x, y}))[0].to_doubles()[0]);
    EXPECT_EQ(jit.replayed(), jit_on);
    return std::make_pair(losses, w.bytes());
  };
  auto plain = run(false, false);
  for (bool fused : {false, true}) {
    auto captured = run(true, fused);
    EXPECT_EQ(captured.first, plain.first) << (fused ? "fused" : "unfused");
    EXPECT_TRUE(captured.second == plain.second) << (fused ? "fused" : "unfused");
  }
  EXPECT_LT(plain.first.back(), plain.first.front());
}

TEST_P(JitCapture, DecodeLoopCapturesOnceAndRebindsThePosition) {
  // One attention step of a decoder over a KV cache: append the new key and value at
  // position t, attend from the new query to positions 0..t. Captured at t = 1, replayed
  // for every later t with the position rebound; the same bits as running it uncaptured.
  const int64_t n = 12, d = 8;
  auto decoder = [&](Tensor kc, Tensor vc) {
    return [=](const std::vector<Tensor>& in) {
      const Tensor &q = in[0], &k = in[1], &v = in[2], &t = in[3];
      Tensor::assign({{kc.slice(0, t, 1), k}, {vc.slice(0, t, 1), v}});
      Tensor pos = Tensor::arange(0, double(n), 1, dtypes::int32, q.device()).reshape({1, n});
      Tensor s = q.matmul(kc.transpose()) * (1 / std::sqrt(double(d)));
      Tensor p = pos.le(t).where(s, s.scalar(-INFINITY)).softmax(-1);
      return std::vector<Tensor>{p.matmul(vc)};
    };
  };
  auto zeros = [&] { return Tensor::zeros({n, d}, dtypes::float32, dev()).contiguous(); };
  Tensor kc1 = zeros(), vc1 = zeros(), kc2 = zeros(), vc2 = zeros();
  Jit jit(decoder(kc1, vc1));
  auto plain = decoder(kc2, vc2);
  size_t kernels = 0;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<Tensor> in{random({1, d}, 100 + uint64_t(t)), random({1, d}, 200 + uint64_t(t)),
                           random({1, d}, 300 + uint64_t(t)),
                           Tensor::variable("t", t, 0, n - 1, dev())};
    Tensor got = jit(in)[0], want = plain(in)[0];
    EXPECT_EQ(jit.replayed(), t >= 2) << "t = " << t;
    if (t == 2) kernels = jit.graph_kernels();
    if (t > 2) {
      EXPECT_EQ(jit.graph_kernels(), kernels);
    }
    EXPECT_TRUE(got.bytes() == want.bytes()) << "t = " << t;
  }
  EXPECT_TRUE(kc1.bytes() == kc2.bytes());
  EXPECT_TRUE(vc1.bytes() == vc2.bytes());
}

INSTANTIATE_TEST_SUITE_P(Devices, JitCapture, testing::ValuesIn(frontend_devices()));

// The training check (cpu here; cuda in frontend_cuda_tests): CE < 0.05 within 500 AdamW
// steps with the fused optimiser and the JIT on, and the same curve with both off.
class TrainingCheck : public FrontendDeviceTest {};

TEST_P(TrainingCheck, TransformerMemorisesASequence) {
  TrainDemoOptions on;
  on.device = GetParam();
  TrainDemoOptions off = on;
  off.fused = off.jit = false;
  TrainDemoResult a = train_demo(on), b = train_demo(off);
  ASSERT_EQ(a.losses.size(), 500u);
  ASSERT_EQ(b.losses.size(), 500u);
  double worst = 0;
  for (size_t i = 0; i < a.losses.size(); ++i)
    worst = std::max(worst, std::abs(a.losses[i] - b.losses[i]));
  std::printf(
      "transformer on %s: CE %.4f -> %.4f (fused+jit %.2f s, plain %.2f s), largest "
      "difference %.3g\n",
      GetParam().c_str(), a.losses.front(), a.losses.back(), a.seconds, b.seconds, worst);
  EXPECT_LT(a.losses.back(), 0.05);
  EXPECT_LE(worst, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Devices, TrainingCheck,
                         testing::ValuesIn(frontend_devices()[0] == "cuda"
                                               ? std::vector<std::string>{"cuda"}
                                               : std::vector<std::string>{"cpu"}));

}  // namespace
}  // namespace kitten
