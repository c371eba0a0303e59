#include "frontend/optim.h"

namespace kitten {

namespace {

Tensor realized_zeros_like(const Tensor& t) {
  Tensor z = Tensor::zeros(t.shape(), t.dtype(), t.device()).contiguous();
  z.realize();
  return z;
}

}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  for (Tensor& p : params_) {
    if (!p.requires_grad())
      throw TensorError("optimizer: a parameter of shape " + shape_text(p.shape()) +
                        " does not require a gradient");
    p.realize();
  }
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_) p.zero_grad();
}

void Optimizer::step() {
  std::vector<std::pair<Tensor, Tensor>> updates;
  {
    NoGrad off;
    for (size_t i = 0; i < params_.size(); ++i)
      if (Tensor g = params_[i].grad(); g.defined()) update(i, g.cast(params_[i].dtype()), updates);
  }
  if (updates.empty()) throw TensorError("optimizer step: no parameter has a gradient");
  Tensor::assign(updates);
}

SGD::SGD(std::vector<Tensor> params, double lr, double momentum, double weight_decay)
    : Optimizer(std::move(params)), lr_(lr), momentum_(momentum), weight_decay_(weight_decay) {
  if (momentum_ > 0)
    for (const Tensor& p : params_) buf_.push_back(realized_zeros_like(p));
}

void SGD::update(size_t i, const Tensor& g, std::vector<std::pair<Tensor, Tensor>>& out) {
  const Tensor& w = params_[i];
  Tensor d = weight_decay_ != 0 ? g + w * weight_decay_ : g;
  if (momentum_ > 0) {
    d = buf_[i] * momentum_ + d;
    out.emplace_back(buf_[i], d);
  }
  out.emplace_back(w, w - d * lr_);
}

Adam::Adam(std::vector<Tensor> params, double lr, double beta1, double beta2, double eps,
           double weight_decay, bool decoupled)
    : Optimizer(std::move(params)),
      lr_(lr),
      b1_(beta1),
      b2_(beta2),
      eps_(eps),
      wd_(weight_decay),
      decoupled_(decoupled) {
  for (const Tensor& p : params_) {
    m_.push_back(realized_zeros_like(p));
    v_.push_back(realized_zeros_like(p));
  }
  std::string dev = params_.empty() ? "cpu" : params_[0].device();
  b1_pow_ = Tensor::full({1}, 1, dtypes::float32, dev).contiguous();
  b2_pow_ = Tensor::full({1}, 1, dtypes::float32, dev).contiguous();
  Tensor::realize({&b1_pow_, &b2_pow_});
}

void Adam::update(size_t i, const Tensor& g0, std::vector<std::pair<Tensor, Tensor>>& out) {
  const Tensor& w = params_[i];
  Tensor g = !decoupled_ && wd_ != 0 ? g0 + w * wd_ : g0;
  Tensor m = m_[i] * b1_ + g * (1 - b1_), v = v_[i] * b2_ + g * g * (1 - b2_);
  Tensor p1 = b1_pow_ * b1_, p2 = b2_pow_ * b2_;  // beta^t for this step
  if (i == 0) {
    out.emplace_back(b1_pow_, p1);
    out.emplace_back(b2_pow_, p2);
  }
  Tensor mhat = m / (1.0 - p1).cast(w.dtype()), vhat = v / (1.0 - p2).cast(w.dtype());
  Tensor nw = decoupled_ && wd_ != 0 ? w - w * (lr_ * wd_) : w;
  out.emplace_back(m_[i], m);
  out.emplace_back(v_[i], v);
  out.emplace_back(w, nw - mhat / (vhat.sqrt() + eps_) * lr_);
}

}  // namespace kitten
