#include "frontend/train_demo.h"

#include <chrono>
#include <random>

#include "frontend/jit.h"
#include "frontend/optim.h"
#include "frontend/schedule.h"

namespace kitten {

namespace {

Tensor normal(Shape s, const std::string& dev, uint64_t seed) {
  return (Tensor::randn(std::move(s), dtypes::float32, dev, seed) * 0.02)
      .contiguous()
      .realize()
      .requires_grad_();
}

Tensor filled(Shape s, double v, const std::string& dev) {
  return Tensor::full(std::move(s), v, dtypes::float32, dev)
      .contiguous()
      .realize()
      .requires_grad_();
}

}  // namespace

TinyTransformer::TinyTransformer(TinyTransformerConfig c, const std::string& dev, uint64_t seed)
    : config(c) {
  uint64_t k = seed * 1000;
  int64_t w = c.width;
  tok_ = normal({c.vocab, w}, dev, ++k);
  pos_ = normal({c.context, w}, dev, ++k);
  for (int64_t l = 0; l < c.layers; ++l) {
    Layer y;
    y.ln1_w = filled({w}, 1, dev);
    y.ln1_b = filled({w}, 0, dev);
    y.qkv_w = normal({w, 3 * w}, dev, ++k);
    y.qkv_b = filled({3 * w}, 0, dev);
    y.proj_w = normal({w, w}, dev, ++k);
    y.proj_b = filled({w}, 0, dev);
    y.ln2_w = filled({w}, 1, dev);
    y.ln2_b = filled({w}, 0, dev);
    y.fc_w = normal({w, 4 * w}, dev, ++k);
    y.fc_b = filled({4 * w}, 0, dev);
    y.out_w = normal({4 * w, w}, dev, ++k);
    y.out_b = filled({w}, 0, dev);
    layers_.push_back(y);
  }
  lnf_w_ = filled({w}, 1, dev);
  lnf_b_ = filled({w}, 0, dev);
  head_ = normal({w, c.vocab}, dev, ++k);
}

std::vector<Tensor> TinyTransformer::params() const {
  std::vector<Tensor> p{tok_, pos_};
  for (const Layer& y : layers_)
    for (const Tensor& t : {y.ln1_w, y.ln1_b, y.qkv_w, y.qkv_b, y.proj_w, y.proj_b, y.ln2_w,
                            y.ln2_b, y.fc_w, y.fc_b, y.out_w, y.out_b})
      p.push_back(t);
  for (const Tensor& t : {lnf_w_, lnf_b_, head_}) p.push_back(t);
  return p;
}

Tensor TinyTransformer::logits(const Tensor& tokens) const {
  int64_t t = tokens.dim(0), w = config.width, h = config.heads;
  Tensor x = tok_.embedding(tokens) + pos_.slice(0, 0, t);
  for (const Layer& y : layers_) {
    Tensor qkv = x.layernorm(y.ln1_w, y.ln1_b).matmul(y.qkv_w) + y.qkv_b;  // [T, 3W]
    auto heads = [&](int64_t i) {
      return qkv.slice(1, i * w, (i + 1) * w).reshape({t, h, w / h}).permute({1, 0, 2});
    };
    Tensor a = Tensor::scaled_dot_product_attention(heads(0), heads(1), heads(2), {}, true);
    x = x + a.permute({1, 0, 2}).reshape({t, w}).matmul(y.proj_w) + y.proj_b;
    Tensor f = (x.layernorm(y.ln2_w, y.ln2_b).matmul(y.fc_w) + y.fc_b).gelu(true);
    x = x + f.matmul(y.out_w) + y.out_b;
  }
  return x.layernorm(lnf_w_, lnf_b_).matmul(head_);
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets) {
  Tensor picked = logits.log_softmax(-1).gather(1, targets.reshape({targets.dim(0), 1}));
  return -picked.mean();
}

TrainDemoResult train_demo(const TrainDemoOptions& o) {
  TinyTransformerConfig c;
  std::mt19937_64 rng(o.seed);
  std::vector<double> seq;
  for (int64_t i = 0; i <= c.context; ++i) seq.push_back(double(rng() % uint64_t(c.vocab)));
  std::vector<double> in(seq.begin(), seq.end() - 1), out(seq.begin() + 1, seq.end());
  Tensor tokens = Tensor::from_doubles(in, {c.context}, dtypes::int32, o.device);
  Tensor targets = Tensor::from_doubles(out, {c.context}, dtypes::int32, o.device);
  TinyTransformer model(c, o.device, o.seed);
  Adam opt = AdamW(model.params(), o.lr, 1e-2, o.fused);
  auto step = [&](const std::vector<Tensor>& io) -> std::vector<Tensor> {
    opt.zero_grad();
    Tensor loss = cross_entropy(model.logits(io[0]), io[1]);
    loss.backward();
    opt.step({&loss});
    return {loss};
  };
  Jit jit(step);
  TrainDemoResult r;
  auto start = std::chrono::steady_clock::now();
  for (int s = 1; s <= o.steps; ++s) {
    int64_t kernels = realize_stats().kernels;
    Tensor loss = o.jit ? jit({tokens, targets})[0] : step({tokens, targets})[0];
    r.kernels_per_step = realize_stats().kernels - kernels;
    r.losses.push_back(loss.to_doubles()[0]);
    if (o.progress) o.progress(s, r.losses.back());
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace kitten
