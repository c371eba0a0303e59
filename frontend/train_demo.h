// The training check of the front end: a small GPT-style decoder (pre-layernorm, causal
// attention) memorising a fixed random token sequence with AdamW, optionally with the
// fused optimiser and the step captured by the JIT. `kitten run train-demo` and the tests
// run it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "frontend/tensor.h"

namespace kitten {

struct TinyTransformerConfig {
  int64_t vocab = 32, width = 64, heads = 4, layers = 2, context = 64;
};

class TinyTransformer {
 public:
  TinyTransformerConfig config;
  // Weights drawn from N(0, 0.02) (seeded), layernorms at (1, 0), biases 0.
  TinyTransformer(TinyTransformerConfig c, const std::string& device, uint64_t seed);
  // tokens: int32 [T] with T <= context; the logits [T, vocab].
  Tensor logits(const Tensor& tokens) const;
  std::vector<Tensor> params() const;

 private:
  struct Layer {
    Tensor ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b;
  };
  Tensor tok_, pos_, lnf_w_, lnf_b_, head_;
  std::vector<Layer> layers_;
};

// The mean cross-entropy of logits [T, V] against int32 targets [T].
Tensor cross_entropy(const Tensor& logits, const Tensor& targets);

struct TrainDemoOptions {
  std::string device = "cpu";
  int steps = 500;
  double lr = 3e-3;
  bool fused = true, jit = true;
  uint64_t seed = 1;
  // Called after every step with the step (from 1) and its loss (computed from the
  // parameters before that step's update).
  std::function<void(int, double)> progress;
};

struct TrainDemoResult {
  std::vector<double> losses;  // per step
  double seconds = 0;          // all steps, wall clock
  int64_t kernels_per_step = 0;
};

// Memorises a sequence of context + 1 random tokens (seeded): from each of the first
// `context` tokens, the next one.
TrainDemoResult train_demo(const TrainDemoOptions& o);

}  // namespace kitten
