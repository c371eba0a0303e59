// Optimisers: each step computes every parameter's new value (and its state's) from the
// gradients in one schedule, then writes them into the parameters' own buffers (assign),
// so every tensor sharing a parameter sees the update.
#pragma once

#include <vector>

#include "frontend/tensor.h"

namespace kitten {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params);
  virtual ~Optimizer() = default;
  void zero_grad();
  // One update of every parameter that has a gradient; throws when none has.
  void step();
  const std::vector<Tensor>& params() const { return params_; }

 protected:
  // The (target, new value) pairs of one step for parameter i with gradient g; targets are
  // the parameter and its state tensors (all realized buffers).
  virtual void update(size_t i, const Tensor& g, std::vector<std::pair<Tensor, Tensor>>& out) = 0;
  std::vector<Tensor> params_;
};

// w -= lr * (g + weight_decay w), with momentum buf = momentum buf + (that) when > 0.
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, double lr, double momentum = 0, double weight_decay = 0);

 private:
  void update(size_t i, const Tensor& g, std::vector<std::pair<Tensor, Tensor>>& out) override;
  double lr_, momentum_, weight_decay_;
  std::vector<Tensor> buf_;
};

// Adam (weight decay added to the gradient) and AdamW (decoupled: w -= lr wd w). The bias
// corrections' powers of beta live in one-element tensors updated on the device, so every
// step runs the same kernels.
class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
       double eps = 1e-8, double weight_decay = 0, bool decoupled = false);

 private:
  void update(size_t i, const Tensor& g, std::vector<std::pair<Tensor, Tensor>>& out) override;
  double lr_, b1_, b2_, eps_, wd_;
  bool decoupled_;
  std::vector<Tensor> m_, v_;
  Tensor b1_pow_, b2_pow_;  // beta^t after the step being computed
};

inline Adam AdamW(std::vector<Tensor> params, double lr = 1e-3, double weight_decay = 1e-2) {
  return Adam(std::move(params), lr, 0.9, 0.999, 1e-8, weight_decay, true);
}

}  // namespace kitten
