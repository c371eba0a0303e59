// Optimisers: each step computes every parameter's new value (and its state's) from the
// gradients in one schedule and writes them into the parameters' own buffers in place
// (assign), so every tensor sharing a parameter sees the update.
//
// Fused (the FUSE_OPTIM idea): the parameters move into one buffer (each parameter's
// storage then lies inside it, at a multiple of 256 bytes from its start), their state
// lives in one buffer per kind, and a step updates all of them in one kernel over the whole
// buffer (after the kernels that store the gradients), with the same arithmetic per element
// as the unfused step (the same bits); Adam adds a 1-element kernel for its beta powers.
#pragma once

#include <vector>

#include "frontend/tensor.h"

namespace kitten {

class Optimizer {
 public:
  // A parameter listed twice (the same tensor node) is one parameter. Fused needs every
  // parameter on one device and of one dtype.
  Optimizer(std::vector<Tensor> params, int state_kinds, bool fused);
  // Clears the gradients: a lazy gradient holds the graph that made it, which holds the
  // parameter (a cycle that zero_grad breaks).
  virtual ~Optimizer() { zero_grad(); }
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) = default;
  void zero_grad();
  // One update of every parameter that has a gradient; throws when none has. `also` are
  // realized in the same schedule, from the values before the update (the loss).
  void step(std::vector<Tensor*> also = {});
  const std::vector<Tensor>& params() const { return params_; }
  bool fused() const { return fused_; }

 protected:
  // The (target, new value) pairs of one step for the parameter (or the fused buffer) w
  // with gradient g and its state tensors; and those of the step's shared state.
  virtual void update(const Tensor& w, const Tensor& g, const std::vector<Tensor>& state,
                      std::vector<std::pair<Tensor, Tensor>>& out) = 0;
  virtual void begin_step(std::vector<std::pair<Tensor, Tensor>>& /*out*/) {}
  std::vector<Tensor> params_;

 private:
  bool fused_;
  // Unfused: each parameter's state; fused: the whole buffer, its state and each
  // parameter's (offset, padded size) in it.
  std::vector<std::vector<Tensor>> state_;
  Tensor flat_;
  std::vector<std::pair<int64_t, int64_t>> segments_;
};

// w -= lr * (g + weight_decay w), with momentum buf = momentum buf + (that) when > 0.
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, double lr, double momentum = 0, double weight_decay = 0,
      bool fused = false);

 private:
  void update(const Tensor& w, const Tensor& g, const std::vector<Tensor>& state,
              std::vector<std::pair<Tensor, Tensor>>& out) override;
  double lr_, momentum_, weight_decay_;
};

// Adam (weight decay added to the gradient) and AdamW (decoupled: w -= lr wd w). The bias
// corrections' powers of beta live in one-element tensors updated on the device, so every
// step runs the same kernels.
class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999,
       double eps = 1e-8, double weight_decay = 0, bool decoupled = false, bool fused = false);

 private:
  void begin_step(std::vector<std::pair<Tensor, Tensor>>& out) override;
  void update(const Tensor& w, const Tensor& g, const std::vector<Tensor>& state,
              std::vector<std::pair<Tensor, Tensor>>& out) override;
  double lr_, b1_, b2_, eps_, wd_;
  bool decoupled_;
  Tensor b1_pow_, b2_pow_;  // beta^t after the last step
  Tensor p1_, p2_;          // beta^t for the step being built
};

inline Adam AdamW(std::vector<Tensor> params, double lr = 1e-3, double weight_decay = 1e-2,
                  bool fused = false) {
  return Adam(std::move(params), lr, 0.9, 0.999, 1e-8, weight_decay, true, fused);
}

}  // namespace kitten
