// The fusion rules (docs/frontend.md): kernel counts for softmax, layernorm, an MLP block
// and an attention block; shared work computed once; several outputs in one kernel; the
// memory plan never aliasing a live value; schedules kept by the structure of their graph.
#include <gtest/gtest.h>

#include <filesystem>

#include "frontend/schedule.h"
#include "frontend/state_dict.h"
#include "tests/frontend/frontend_test_util.h"

namespace kitten {
namespace {

Tensor input(Shape s, uint64_t seed) {
  return Tensor::from_doubles(random_values(size_t(numel(s)), dtypes::float32, seed), s);
}
KernelSchedule sched(const Tensor& t) { return schedule_nodes({t.node()}); }

TEST(Fusion, SoftmaxAndLayernormAreOneKernel) {
  Tensor x = input({64, 100}, 1), w = input({100}, 2), b = input({100}, 3);
  for (const Tensor& t : {x.softmax(-1), x.log_softmax(-1), x.layernorm(w, b), x.rmsnorm(w)})
    EXPECT_EQ(sched(t).items.size(), 1u) << schedule_text(sched(t));
}

TEST(Fusion, ElementwiseChainsFuseIntoOneKernel) {
  Tensor x = input({33, 17}, 4), y = input({17}, 5);
  Tensor t = ((x * 2.0 + y).exp().sqrt() - x.transpose().transpose()).gelu();
  EXPECT_EQ(sched(t).items.size(), 1u) << schedule_text(sched(t));
  EXPECT_EQ(sched(x.sum({1}) * 2.0 + 1.0).items.size(), 1u) << "a reduction with its epilogue";
}

TEST(Fusion, MlpBlockStoresTheActivationOnce) {
  // gelu(x W1 + b1) W2 + b2: the first product with its bias and gelu is one kernel (its
  // result, read by every column of the second product, is stored: rule 3), the second
  // product with its bias another.
  Tensor x = input({16, 24}, 6), w1 = input({24, 48}, 7), b1 = input({48}, 8),
         w2 = input({48, 24}, 9), b2 = input({24}, 10);
  Tensor out = (x.matmul(w1) + b1).gelu().matmul(w2) + b2;
  KernelSchedule s = sched(out);
  ASSERT_EQ(s.items.size(), 2u) << schedule_text(s);
  ASSERT_EQ(s.splits.size(), 1u);
  EXPECT_EQ(s.splits[0].first->kind, NodeKind::Alu) << s.splits[0].second;
  EXPECT_EQ(s.items[0].outputs[0]->shape, (Shape{16, 48}));
  // And it computes the right thing.
  auto want = ((x.matmul(w1) + b1).gelu().contiguous().matmul(w2) + b2).to_doubles();
  expect_close(out.to_doubles(), want, 1e-6, 1e-6, "mlp");
}

TEST(Fusion, AttentionBlockSplitsScoresAndProbabilities) {
  // softmax(q k^T / sqrt(d)) v: the scores are read by the max, the sum and the output
  // (rule 1: stored), the probabilities by every column of the product with v (rule 3).
  Tensor q = input({2, 10, 8}, 11), k = input({2, 12, 8}, 12), v = input({2, 12, 8}, 13);
  Tensor o = Tensor::scaled_dot_product_attention(q, k, v);
  KernelSchedule s = sched(o);
  EXPECT_EQ(s.items.size(), 3u) << schedule_text(s);
}

TEST(Fusion, LayernormOfAResidualStoresTheResidual) {
  // x + h W: the product is read by the mean, the variance and the output of the
  // layernorm (rule 1), so the residual sum is stored once and normalised in one kernel.
  Tensor x = input({8, 32}, 14), h = input({8, 32}, 15), w = input({32, 32}, 16),
         g = input({32}, 17);
  Tensor r = x + h.matmul(w);
  Tensor y = r.layernorm(g, {});
  KernelSchedule s = sched(y);
  ASSERT_EQ(s.items.size(), 2u) << schedule_text(s);
  EXPECT_EQ(s.splits[0].first, r.node().get()) << schedule_text(s);
  expect_close(y.to_doubles(), r.contiguous().layernorm(g, {}).to_doubles(), 1e-5, 1e-5,
               "residual");
}

TEST(Fusion, TargetsOfOneShapeShareAKernel) {
  Tensor x = input({9, 13}, 18);
  Tensor a = x.exp(), b = x * x - x.sum({1}, true);
  KernelSchedule s = schedule_nodes({a.node(), b.node()});
  ASSERT_EQ(s.items.size(), 1u) << schedule_text(s);
  EXPECT_EQ(s.items[0].outputs.size(), 2u);
  auto wa = a.exp().log().to_doubles();  // computed separately
  Tensor::realize({&a, &b});
  expect_close(a.to_doubles(), wa, 1e-6, 1e-6, "grouped a");
  auto xs = x.to_doubles();
  std::vector<double> wb;
  for (int i = 0; i < 9; ++i) {
    double s = 0;
    for (int j = 0; j < 13; ++j) s += xs[size_t(i * 13 + j)];
    for (int j = 0; j < 13; ++j) wb.push_back(xs[size_t(i * 13 + j)] * xs[size_t(i * 13 + j)] - s);
  }
  expect_close(b.to_doubles(), wb, 1e-5, 1e-5, "grouped b");
}

TEST(ScheduleCache, AGraphOfTheSameStructureIsNotScheduledAgain) {
  auto block = [](const Tensor& x, const Tensor& w, double scale) {
    return (x.matmul(w) * scale).softmax(-1).sum({0});
  };
  auto fresh = [](uint64_t seed) { return input({9, 13}, seed); };
  Tensor w = input({13, 5}, 3);
  ScheduleCacheStats before = schedule_cache_stats();
  Tensor a = block(fresh(1), w, 0.5);
  KernelSchedule first = sched(a);
  EXPECT_EQ(schedule_cache_stats().misses, before.misses + 1);
  // Other buffers, the same structure: the cached schedule, naming this graph's nodes.
  Tensor x2 = fresh(2), b = block(x2, w, 0.5);
  KernelSchedule again = sched(b);
  EXPECT_EQ(schedule_cache_stats().hits, before.hits + 1);
  ASSERT_EQ(again.items.size(), first.items.size());
  for (size_t i = 0; i < again.items.size(); ++i)
    EXPECT_EQ(again.items[i].sink, first.items[i].sink);
  EXPECT_EQ(again.items.back().outputs[0], b.node().get());
  bool reads_x2 = false;
  for (const ScheduleItem& item : again.items)
    for (const LazyNode* n : item.inputs) reads_x2 = reads_x2 || n == x2.node().get();
  EXPECT_TRUE(reads_x2);
  std::vector<double> want = block(x2, w, 0.5).contiguous().to_doubles();
  EXPECT_EQ(b.to_doubles(), want);
  // Another constant, another kernel; the unfused baseline is its own entry too.
  int64_t misses = schedule_cache_stats().misses;
  sched(block(fresh(3), w, 0.25));
  EXPECT_EQ(schedule_cache_stats().misses, misses + 1);
  setenv("KITTEN_FUSION", "0", 1);
  KernelSchedule unfused = sched(block(fresh(4), w, 0.5));
  unsetenv("KITTEN_FUSION");
  EXPECT_EQ(schedule_cache_stats().misses, misses + 2);
  EXPECT_GT(unfused.items.size(), first.items.size());
}

TEST(Fusion, ReusedBuffersNeverAliasLiveValues) {
  // A chain of products, each stored (rule 2), with a value read again at the end: the
  // plan reuses dead buffers, and the result matches the chain computed step by step.
  Tensor x = input({12, 12}, 19), w = input({12, 12}, 20);
  Tensor a = x.matmul(w).exp() * 0.1, b = a.matmul(w).exp() * 0.1, c = b.matmul(w).exp() * 0.1,
         d = c.matmul(w).exp() * 0.1;
  Tensor out = d.matmul(w) + a.sum({1}, true);
  KernelSchedule s = sched(out);
  EXPECT_EQ(s.items.size(), 5u) << schedule_text(s);
  int64_t reused = realize_stats().reused;
  auto got = out.to_doubles();
  EXPECT_GT(realize_stats().reused, reused) << "no buffer was reused";
  Tensor sa = a.contiguous();
  sa.realize();
  Tensor sb = (sa.matmul(w).exp() * 0.1).realize(), sc = (sb.matmul(w).exp() * 0.1).realize(),
         sd = (sc.matmul(w).exp() * 0.1).realize();
  expect_close(got, (sd.matmul(w) + sa.sum({1}, true)).to_doubles(), 1e-6, 1e-6, "chain");
}

TEST(StateDict, RoundTripsThroughSafetensors) {
  StateDict sd;
  sd["layer.weight"] = input({3, 5}, 21);
  sd["layer.bias"] = input({5}, 22).cast(dtypes::bfloat16);
  sd["steps"] = Tensor::arange(0, 7, 1, dtypes::int64);
  sd["mask"] = input({4}, 23).gt(Tensor::zeros({4}));
  sd["empty"] = Tensor::zeros({0, 3}, dtypes::float16);
  sd["computed"] = (input({2, 2}, 24) * 3.0).exp();  // realized on save
  std::string path = testing::TempDir() + "kitten_state_dict.safetensors";
  save_state_dict(path, sd, {{"format", "kitten"}});
  for (std::string dev : {"cpu", "emu"}) {
    StateDict back = load_state_dict(path, dev);
    ASSERT_EQ(back.size(), sd.size());
    for (auto& [name, t] : sd) {
      ASSERT_TRUE(back.count(name)) << name;
      EXPECT_EQ(back[name].dtype(), t.dtype()) << name;
      EXPECT_EQ(back[name].shape(), t.shape()) << name;
      EXPECT_EQ(back[name].device(), dev);
      EXPECT_EQ(back[name].bytes(), t.bytes()) << name;
    }
  }
  EXPECT_EQ(SafeTensorsFile::open(path).metadata().at("format"), "kitten");
  std::filesystem::remove(path);
}

TEST(Creation, FullOnesZerosArange) {
  expect_close(Tensor::full({2, 3}, 2.5).to_doubles(), std::vector<double>(6, 2.5), 0, 0, "full");
  expect_close(Tensor::ones({4}, dtypes::int32).to_doubles(), {1, 1, 1, 1}, 0, 0, "ones");
  expect_close(Tensor::arange(-3, 11, 4).to_doubles(), {-3, 1, 5, 9}, 0, 0, "int arange");
  expect_close(Tensor::arange(1, -1, -0.5, dtypes::float32).to_doubles(), {1, 0.5, 0, -0.5}, 0, 0,
               "float arange");
  EXPECT_EQ(Tensor::arange(5, 5).numel(), 0);
}

}  // namespace
}  // namespace kitten
