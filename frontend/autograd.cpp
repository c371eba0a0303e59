// Reverse-mode differentiation on the lazy graph: backward() walks the nodes between a
// tensor and the tensors that require gradients in reverse order and builds each source's
// gradient from its consumer's with one rule per node kind (the primitive nodes; every
// derived op differentiates through its composition). The gradients are lazy tensors too.
#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "frontend/tensor.h"

namespace kitten {

namespace {

thread_local int g_no_grad = 0;

Tensor grad_of_expand(const Tensor& g, const Shape& to) {
  std::vector<int> axes;
  for (size_t i = 0; i < to.size(); ++i)
    if (to[i] == 1 && g.shape()[i] != 1) axes.push_back(int(i));
  return axes.empty() ? g : g.sum(axes, true);
}

// The gradients of node n's sources given the gradient g of n (undefined: none).
std::vector<Tensor> source_grads(const NodePtr& node, const Tensor& g) {
  const LazyNode& n = *node;
  std::vector<Tensor> src;
  for (const NodePtr& s : n.src) src.push_back(Tensor(s));
  std::vector<Tensor> out(n.src.size());
  Tensor self(node);
  switch (n.kind) {
    case NodeKind::Alu: {
      const Tensor& a = src[0];
      switch (n.op) {
        case Op::ADD:
          out = {g, g};
          break;
        case Op::SUB:
          out = {g, -g};
          break;
        case Op::MUL:
          out = {g * src[1], g * a};
          break;
        case Op::FDIV:
          out = {g / src[1], -g * a / (src[1] * src[1])};
          break;
        case Op::NEG:
          out = {-g};
          break;
        case Op::RECIP:
          out = {-g * self * self};
          break;
        case Op::SQRT:
          out = {g * 0.5 / self};
          break;
        case Op::EXP2:
          out = {g * self * M_LN2};
          break;
        case Op::LOG2:
          out = {g / (a * M_LN2)};
          break;
        case Op::SIN:
          out = {g * a.cos()};
          break;
        case Op::MAX:
        case Op::MIN: {  // ties share the gradient, as torch.maximum does
          const Tensor& b = src[1];
          Tensor a_wins = n.op == Op::MAX ? b.lt(a) : a.lt(b);
          Tensor tie = a.eq(b), half = g * 0.5, zero = g.scalar(0);
          out = {a_wins.where(g, tie.where(half, zero)),
                 a_wins.logical_or(tie).where(tie.where(half, zero), g)};
          break;
        }
        case Op::WHERE:
          out = {Tensor(), src[0].where(g, g.scalar(0)), src[0].where(g.scalar(0), g)};
          break;
        default:  // comparisons, logic, integer ops, trunc: no gradient
          break;
      }
      break;
    }
    case NodeKind::Cast:
      if (src[0].dtype().is_float()) out[0] = g.cast(src[0].dtype());
      break;
    case NodeKind::Reduce: {
      const Shape& in = src[0].shape();
      if (n.op == Op::ADD) {
        out[0] = g.expand(in);
      } else {  // max: shared evenly by the elements equal to it
        std::vector<int> axes;
        for (size_t i = 0; i < n.arg.size(); ++i)
          if (n.arg[i]) axes.push_back(int(i));
        Tensor hit = src[0].eq(self.expand(in)).cast(g.dtype());
        out[0] = hit * (g / hit.sum(axes, true)).expand(in);
      }
      break;
    }
    case NodeKind::Reshape:
      out[0] = g.reshape(src[0].shape());
      break;
    case NodeKind::Permute: {
      std::vector<int> inverse(n.arg.size());
      for (size_t i = 0; i < n.arg.size(); ++i) inverse[size_t(n.arg[i])] = int(i);
      out[0] = g.permute(inverse);
      break;
    }
    case NodeKind::Expand:
      out[0] = grad_of_expand(g, src[0].shape());
      break;
    case NodeKind::Pad: {
      std::vector<std::pair<int64_t, int64_t>> be;
      for (size_t i = 0; i < src[0].shape().size(); ++i)
        be.emplace_back(n.arg[2 * i], n.arg[2 * i] + src[0].shape()[i]);
      out[0] = g.shrink(be);
      break;
    }
    case NodeKind::Shrink: {
      std::vector<std::pair<int64_t, int64_t>> ba;
      const Shape& s = src[0].shape();
      for (size_t i = 0; i < s.size(); ++i) ba.emplace_back(n.arg[2 * i], s[i] - n.arg[2 * i + 1]);
      if (n.src.size() == 2) {
        // At a bound position t along `ax`: source element j gets the gradient of slice
        // element k where j == t + k (a one-hot comparison summed over k).
        int ax = int(n.arg.back());
        int64_t len = n.shape[size_t(ax)], size = s[size_t(ax)];
        ba[size_t(ax)] = {0, 0};
        Shape js(s.size() + 1, 1), ks(s.size() + 1, 1);
        js[size_t(ax)] = size;
        ks[size_t(ax) + 1] = len;
        Tensor j = Tensor::arange(0, double(size), 1, dtypes::int32, n.device).reshape(js);
        Tensor k = Tensor::arange(0, double(len), 1, dtypes::int32, n.device).reshape(ks);
        Tensor hit = j.eq(k + src[1]);
        out[0] = hit.where(g.pad(ba).unsqueeze(ax), g.scalar(0)).sum({ax + 1});
        break;
      }
      out[0] = g.pad(ba);
      break;
    }
    case NodeKind::Flip: {
      std::vector<int> axes;
      for (size_t i = 0; i < n.arg.size(); ++i)
        if (n.arg[i]) axes.push_back(int(i));
      out[0] = g.flip(axes);
      break;
    }
    case NodeKind::Cat: {
      int ax = int(n.arg[0]);
      int64_t start = 0;
      for (size_t k = 0; k < src.size(); ++k) {
        int64_t w = src[k].shape()[size_t(ax)];
        out[k] = g.slice(ax, start, start + w);
        start += w;
      }
      break;
    }
    case NodeKind::Gather: {
      // Scatter-add: source position v along the axis gets the gradients of the index
      // positions holding v (a one-hot comparison summed over them), zeros where the index
      // tensor is smaller than the source.
      int ax = int(n.arg[0]);
      const Shape& s = src[0].shape();
      Shape iota_shape(s.size() + 1, 1);
      iota_shape[size_t(ax) + 1] = s[size_t(ax)];
      Tensor iota =
          Tensor::arange(0, double(s[size_t(ax)]), 1, dtypes::int32, n.device).reshape(iota_shape);
      Tensor hit = src[1].cast(dtypes::int32).unsqueeze(ax + 1).eq(iota);
      Tensor scattered = hit.where(g.unsqueeze(ax + 1), g.scalar(0)).sum({ax});
      std::vector<std::pair<int64_t, int64_t>> ba;
      for (size_t i = 0; i < s.size(); ++i) ba.emplace_back(0, s[i] - scattered.shape()[i]);
      out[0] = scattered.pad(ba);
      break;
    }
    case NodeKind::Named:
      out[0] = g;
      break;
    case NodeKind::Buffer:
    case NodeKind::Const:
    case NodeKind::Iota:
    case NodeKind::Rand:
    case NodeKind::Assign:
    case NodeKind::Var:
      break;
  }
  return out;
}

}  // namespace

NoGrad::NoGrad() { ++g_no_grad; }
NoGrad::~NoGrad() { --g_no_grad; }
bool NoGrad::active() { return g_no_grad > 0; }

Tensor& Tensor::requires_grad_(bool on) {
  if (on && !dtype().is_float())
    throw TensorError("requires_grad_: a tensor of " + std::string(dtype().name()) +
                      " has no gradient (floats only)");
  node_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return node_->grad ? Tensor(node_->grad) : Tensor(); }

void Tensor::zero_grad() { node_->grad.reset(); }

void Tensor::backward(const Tensor& grad_output) const {
  if (!grad_output.defined() && numel() != 1)
    throw TensorError("backward: a tensor of shape " + shape_text(shape()) +
                      " needs a gradient of that shape");
  if (grad_output.defined() && grad_output.shape() != shape())
    throw TensorError("backward: gradient of shape " + shape_text(grad_output.shape()) +
                      " for a tensor of shape " + shape_text(shape()));
  NoGrad quiet;  // the gradients' own graphs need no gradient paths
  // The nodes on a path to one requiring a gradient, sources before consumers.
  std::unordered_map<const LazyNode*, bool> needs;
  std::vector<NodePtr> order;
  std::vector<std::pair<NodePtr, size_t>> stack{{node_, 0}};
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (next == 0 && needs.count(n.get())) {
      stack.pop_back();
      continue;
    }
    if (n->no_grad && !n->requires_grad) {
      needs[n.get()] = false;
      stack.pop_back();
      continue;
    }
    if (next < n->src.size()) {
      NodePtr s = n->src[next++];
      if (!needs.count(s.get())) stack.push_back({s, 0});
      continue;
    }
    bool need = n->requires_grad;
    if (!n->no_grad)
      for (const NodePtr& s : n->src) need = need || needs[s.get()];
    needs[n.get()] = need;
    if (need) order.push_back(n);
    stack.pop_back();
  }
  if (!needs[node_.get()])
    throw TensorError("backward: nothing below this tensor requires a gradient");
  for (const NodePtr& n : order)
    for (const NodePtr& v : n->vdims)
      if (v)
        throw TensorError("backward: a gradient through an axis of variable length " + v->name +
                          " (" + node_kind_name(n->kind) + " of shape " + shape_text(n->shape) +
                          ") is not supported");
  std::unordered_map<const LazyNode*, Tensor> grads;
  grads[node_.get()] = grad_output.defined() ? grad_output.cast(dtype())
                                             : Tensor::full(shape(), 1, dtype(), device());
  for (size_t i = order.size(); i-- > 0;) {
    const NodePtr& n = order[i];
    auto it = grads.find(n.get());
    if (it == grads.end()) continue;
    Tensor g = it->second;
    if (n->requires_grad) n->grad = n->grad ? (Tensor(n->grad) + g).node() : g.node();
    if (n->no_grad) continue;
    std::vector<Tensor> gs = source_grads(n, g);
    for (size_t k = 0; k < gs.size(); ++k) {
      const LazyNode* s = n->src[k].get();
      if (!gs[k].defined() || !needs[s]) continue;
      auto [at, fresh] = grads.emplace(s, gs[k]);
      if (!fresh) at->second = at->second + gs[k];
    }
    grads.erase(n.get());
  }
}

}  // namespace kitten
