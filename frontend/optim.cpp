#include "frontend/optim.h"

#include <algorithm>

namespace kitten {

namespace {

Tensor realized_zeros(const Shape& s, DType d, const std::string& device) {
  Tensor z = Tensor::zeros(s, d, device).contiguous();
  z.realize();
  return z;
}

}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params, int state_kinds, bool fused) : fused_(fused) {
  for (Tensor& p : params) {
    if (!p.requires_grad())
      throw TensorError("optimizer: a parameter of shape " + shape_text(p.shape()) +
                        " does not require a gradient");
    bool seen = false;
    for (const Tensor& q : params_) seen = seen || q.node() == p.node();
    if (!seen) params_.push_back(p.realize());
  }
  if (!fused_) {
    for (const Tensor& p : params_) {
      state_.emplace_back();
      for (int k = 0; k < state_kinds; ++k)
        state_.back().push_back(realized_zeros(p.shape(), p.dtype(), p.device()));
    }
    return;
  }
  if (params_.empty()) throw TensorError("optimizer: fused with no parameters");
  DType d = params_[0].dtype();
  std::string dev = params_[0].device();
  int64_t align = std::max<int64_t>(1, 256 / d.itemsize()), total = 0;
  for (const Tensor& p : params_) {
    if (p.dtype() != d || p.device() != dev)
      throw TensorError("optimizer: fused needs one dtype and device; a parameter of " +
                        std::string(p.dtype().name()) + " on " + p.device() + " beside " +
                        std::string(d.name()) + " on " + dev);
    int64_t padded = (p.numel() + align - 1) / align * align;
    segments_.emplace_back(total, padded);
    total += padded;
  }
  flat_ = realized_zeros({total}, d, dev);
  for (size_t i = 0; i < params_.size(); ++i)
    params_[i].node()->data()->move_into(flat_.node()->data(),
                                         size_t(segments_[i].first) * size_t(d.itemsize()));
  state_.emplace_back();
  for (int k = 0; k < state_kinds; ++k) state_[0].push_back(realized_zeros({total}, d, dev));
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

void Optimizer::step(std::vector<Tensor*> also) {
  std::vector<std::pair<Tensor, Tensor>> updates;
  {
    NoGrad off;
    std::vector<Tensor> grads;
    bool any = false, all = true;
    for (const Tensor& p : params_) {
      Tensor g = p.grad();
      grads.push_back(g.defined() ? g.cast(p.dtype()) : g);
      any = any || g.defined();
      all = all && g.defined();
    }
    if (!any) throw TensorError("optimizer step: no parameter has a gradient");
    begin_step(updates);
    if (!fused_) {
      for (size_t i = 0; i < params_.size(); ++i)
        if (grads[i].defined()) update(params_[i], grads[i], state_[i], updates);
    } else {
      // The gradients side by side as the parameters lie in the buffer (zeros in the gaps
      // and for parameters without one, whose segments keep their values).
      std::vector<Tensor> parts, keep;
      for (size_t i = 0; i < params_.size(); ++i) {
        auto [offset, padded] = segments_[i];
        int64_t n = params_[i].numel();
        // Each gradient is stored first: computed inline, it would read parameters inside
        // the buffer this kernel writes.
        Tensor g =
            !grads[i].defined() || grads[i].node()->data() ? grads[i] : grads[i].contiguous();
        parts.push_back(g.defined() ? g.reshape({n}).pad({{0, padded - n}})
                                    : Tensor::zeros({padded}, flat_.dtype(), flat_.device()));
        keep.push_back(
            Tensor::full({padded}, grads[i].defined() ? 0 : 1, dtypes::bool_, flat_.device()));
      }
      size_t first = updates.size();
      update(flat_, Tensor::cat(parts), state_[0], updates);
      if (!all) {
        Tensor unchanged = Tensor::cat(keep);
        for (size_t k = first; k < updates.size(); ++k)
          updates[k].second = unchanged.where(updates[k].first, updates[k].second);
      }
    }
  }
  Tensor::assign(updates, also);
}

SGD::SGD(std::vector<Tensor> params, double lr, double momentum, double weight_decay, bool fused)
    : Optimizer(std::move(params), momentum > 0 ? 1 : 0, fused),
      lr_(lr),
      momentum_(momentum),
      weight_decay_(weight_decay) {}

void SGD::update(const Tensor& w, const Tensor& g, const std::vector<Tensor>& state,
                 std::vector<std::pair<Tensor, Tensor>>& out) {
  Tensor d = weight_decay_ != 0 ? g + w * weight_decay_ : g;
  if (momentum_ > 0) {
    d = state[0] * momentum_ + d;
    out.emplace_back(state[0], d);
  }
  out.emplace_back(w, w - d * lr_);
}

Adam::Adam(std::vector<Tensor> params, double lr, double beta1, double beta2, double eps,
           double weight_decay, bool decoupled, bool fused)
    : Optimizer(std::move(params), 2, fused),
      lr_(lr),
      b1_(beta1),
      b2_(beta2),
      eps_(eps),
      wd_(weight_decay),
      decoupled_(decoupled) {
  std::string dev = params_.empty() ? "cpu" : params_[0].device();
  b1_pow_ = Tensor::full({1}, 1, dtypes::float32, dev).contiguous();
  b2_pow_ = Tensor::full({1}, 1, dtypes::float32, dev).contiguous();
  Tensor::realize({&b1_pow_, &b2_pow_});
}

void Adam::begin_step(std::vector<std::pair<Tensor, Tensor>>& out) {
  p1_ = b1_pow_ * b1_;  // beta^t for this step
  p2_ = b2_pow_ * b2_;
  out.emplace_back(b1_pow_, p1_);
  out.emplace_back(b2_pow_, p2_);
}

void Adam::update(const Tensor& w, const Tensor& g0, const std::vector<Tensor>& state,
                  std::vector<std::pair<Tensor, Tensor>>& out) {
  Tensor g = !decoupled_ && wd_ != 0 ? g0 + w * wd_ : g0;
  Tensor m = state[0] * b1_ + g * (1 - b1_), v = state[1] * b2_ + g * g * (1 - b2_);
  Tensor mhat = m / (1.0 - p1_).cast(w.dtype()), vhat = v / (1.0 - p2_).cast(w.dtype());
  Tensor nw = decoupled_ && wd_ != 0 ? w - w * (lr_ * wd_) : w;
  out.emplace_back(state[0], m);
  out.emplace_back(state[1], v);
  out.emplace_back(w, nw - mhat / (vhat.sqrt() + eps_) * lr_);
}

}  // namespace kitten
