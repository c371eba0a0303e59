#include "frontend/schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <sstream>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "dsl/printer.h"
#include "dsl/symbolic.h"
#include "frontend/tensor.h"

namespace kitten {

namespace {

// An inlined node computed more often than this many ALU ops' worth per extra evaluation
// is materialised instead (docs/frontend.md, rule 3).
constexpr int64_t kRecomputeCost = 8;

bool is_movement(NodeKind k) {
  return k == NodeKind::Reshape || k == NodeKind::Permute || k == NodeKind::Expand ||
         k == NodeKind::Pad || k == NodeKind::Shrink || k == NodeKind::Flip;
}
// Consumers a reduction's epilogue may grow through: element-wise ops and movement that
// keeps every element once.
bool epilogue_step(const LazyNode* n) {
  return n->kind == NodeKind::Alu || n->kind == NodeKind::Cast || n->kind == NodeKind::Reshape ||
         n->kind == NodeKind::Permute || n->kind == NodeKind::Flip ||
         (n->kind == NodeKind::Named && n->name != "contiguous");
}

UOp i32(int64_t v) { return const_int(dtypes::int32, v); }

// The sources a node's value depends on: an assignment's value, not the view it writes.
std::span<const NodePtr> inputs_of(const LazyNode* n) {
  std::span<const NodePtr> all(n->src);
  return n->kind == NodeKind::Assign ? all.first(1) : all;
}

UOp lowest(DType d) { return d.is_float() ? const_(d, -INFINITY) : const_int(d, d.imin()); }

std::vector<UOp> ranges_in(const UOp& u) {
  std::vector<UOp> out;
  for (const UOp& n : toposort(u))
    if (n.op() == Op::RANGE) out.push_back(n);
  return out;
}

UOp and_gate(const UOp& a, const UOp& b) {
  if (!a) return b;
  if (!b) return a;
  return alu(Op::AND, a, b);
}

struct Scope {
  UOp range;
  int64_t extent;
};

// The whole scheduling problem: the graph, the materialised set, and what each emission
// pass found that breaks the fusion rules.
struct Scheduler {
  std::vector<NodePtr> targets;
  std::unordered_set<const LazyNode*> target_set, materialised;
  std::unordered_map<const LazyNode*, std::vector<const LazyNode*>> consumers;
  std::map<const LazyNode*, std::string> why;  // split nodes and their rule
  // Per emission pass: where each reduction was read (kernel and indices), violations.
  std::map<const LazyNode*, std::set<std::vector<const void*>>> reduce_uses;
  std::vector<std::pair<const LazyNode*, std::string>> violations;
  std::unordered_map<const LazyNode*, int64_t> cost_memo;

  bool reads_buffer(const LazyNode* n) const { return n->data() || materialised.count(n); }

  void collect(const LazyNode* n, std::unordered_set<const LazyNode*>& seen) {
    std::vector<const LazyNode*> stack{n};
    while (!stack.empty()) {
      const LazyNode* x = stack.back();
      stack.pop_back();
      if (!seen.insert(x).second || x->data()) continue;
      for (const NodePtr& s : inputs_of(x)) {
        consumers[s.get()].push_back(x);
        stack.push_back(s.get());
      }
    }
  }

  // ALU work of computing n inline (through movement, up to buffers).
  int64_t inline_cost(const LazyNode* n) {
    if (reads_buffer(n) || n->kind == NodeKind::Const || n->kind == NodeKind::Iota ||
        n->kind == NodeKind::Var)
      return 0;
    if (auto it = cost_memo.find(n); it != cost_memo.end()) return it->second;
    int64_t c = 0;
    if (n->kind == NodeKind::Alu) {
      Op op = n->op;
      c = op == Op::EXP2 || op == Op::LOG2 || op == Op::SIN || op == Op::SQRT || op == Op::RECIP ||
                  op == Op::FDIV
              ? 4
              : 1;
    } else if (n->kind == NodeKind::Rand) {
      c = 12;
    } else if (n->kind == NodeKind::Reduce) {
      c = kRecomputeCost + 1;  // a reduction recomputed is always too much
    }
    for (const NodePtr& s : n->src) c += inline_cost(s.get());
    return cost_memo[n] = std::min<int64_t>(c, 1 << 20);
  }

  // The node to materialise for reduction r: r grown through its element-wise epilogue
  // while all of it flows into one node (a reduction's value and its epilogue are stored
  // once, not the bare reduction).
  const LazyNode* epilogue_top(const LazyNode* r) {
    const LazyNode* t = r;
    while (!target_set.count(t)) {
      std::vector<const LazyNode*> region{t}, exits;
      std::unordered_set<const LazyNode*> in{t};
      bool gave_up = false;
      for (size_t i = 0; i < region.size() && !gave_up; ++i) {
        const LazyNode* n = region[i];
        bool exit = target_set.count(n) || consumers[n].empty() || materialised.count(n);
        if (!exit)
          for (const LazyNode* c : consumers[n]) exit = exit || !epilogue_step(c);
        if (exit) {
          exits.push_back(n);
          continue;
        }
        for (const LazyNode* c : consumers[n])
          if (in.insert(c).second) region.push_back(c);
        gave_up = region.size() > 256;
      }
      if (gave_up || exits.size() != 1 || exits[0] == t) break;
      t = exits[0];
    }
    if (materialised.count(t)) return r;
    while (t != r && t->kind != NodeKind::Alu && t->kind != NodeKind::Cast) t = t->src[0].get();
    return t;  // the value itself, not a view of it
  }

  void violate(const LazyNode* n, std::string rule) { violations.emplace_back(n, std::move(rule)); }
};

// Builds one kernel: the values of its output nodes at the indices of the output ranges.
class Emitter {
 public:
  Emitter(Scheduler& s, int kernel, const std::vector<const LazyNode*>& outputs)
      : s_(s), kernel_(kernel), outputs_(outputs) {}

  // `merged`: where reductions depend on the first `split` output axes only (found by a
  // first build), axes [0, split) become one range and [split, n) another: a row-wise
  // kernel (layernorm, softmax) reaches the lowering as rows and columns whatever the
  // tensor's rank.
  ScheduleItem build(bool merged = false, size_t split = 0) {
    merged_ = merged;  // the decisions are made: no rule is checked again
    const Shape& shape = outputs_[0]->shape;
    const std::vector<NodePtr>& vdims = outputs_[0]->vdims;  // (the outputs share them)
    std::vector<UOp> idx(shape.size());
    std::vector<Scope> ctx;
    std::vector<UOp> ranges;
    std::vector<std::pair<size_t, size_t>> groups;
    if (merged && merges(outputs_[0], split)) {
      groups.emplace_back(0, split);
      groups.emplace_back(split, shape.size());
    } else {
      for (size_t i = 0; i < shape.size(); ++i) groups.emplace_back(i, i + 1);
    }
    for (auto [a, b] : groups) {
      int64_t extent = 1;
      for (size_t i = a; i < b; ++i) extent *= shape[i];
      // A variable axis runs over its bound length (never merged: b == a + 1).
      const LazyNode* var = vdims.empty() ? nullptr : vdims[a].get();
      UOp r = var           ? range(variable(var), next_axis_++, AxisKind::Global)
              : extent == 1 ? i32(0)
                            : range(extent, next_axis_++, AxisKind::Global);
      if (var || extent != 1) {
        ranges.push_back(r);
        ctx.push_back({r, extent});
        depth_axis_.push_back(b);
      }
      int64_t inner = 1;
      for (size_t i = b; i-- > a;) {
        UOp v = inner == 1 ? r : r / inner;
        if (i > a) v = v % shape[i];
        idx[i] = shape[i] == 1 && !var ? i32(0) : simplify(v);
        inner *= shape[i];
      }
    }
    for (const LazyNode* o : outputs_) slot_of(o);
    std::vector<std::pair<UOp, UOp>> stores;              // (index, value)
    std::vector<std::pair<const LazyNode*, UOp>> writes;  // buffers assigned, at
    for (const LazyNode* o : outputs_) {
      const LazyNode* dst = o;
      std::vector<UOp> at = idx;
      UOp v;
      if (o->kind == NodeKind::Assign) {
        v = emit(o->src[0].get(), idx, {}, ctx);
        dst = o->src[1].get();
        while (!dst->data()) {
          at = view_source(dst, at);
          dst = dst->src[0].get();
        }
      } else {
        v = value(o, idx, {}, ctx);
      }
      DType d = dst->dtype;
      if (v.dtype() != d) v = cast(v, d);
      UOp f = flat(dst->shape, at);
      stores.emplace_back(f, v);
      if (o->kind == NodeKind::Assign) writes.emplace_back(dst, f);
    }
    // A kernel that writes a buffer in place may read it only where it writes it; otherwise
    // the value is computed into a buffer of its own first. The loads of the buffers it
    // writes come before its stores (one output's value may read, at the same element,
    // what another output's store writes).
    std::vector<UOp> first;
    for (const auto& [buf, f] : writes)
      for (const auto& [n, g, l] : reads_) {
        if (n != buf && !shares_memory(n, buf)) continue;
        first.push_back(l);
        // Another node over the same memory (a parameter inside a fused optimiser's buffer)
        // is read at indices of its own: not provably the element written.
        if ((n != buf || g != f) && !merged_)
          for (const LazyNode* o : outputs_)
            if (o->kind == NodeKind::Assign && !o->src[0]->data())
              s_.violate(o->src[0].get(), "an assigned value reads its target elsewhere");
      }
    std::vector<UOp> body_stores;
    for (size_t k = 0; k < outputs_.size(); ++k) {
      UOp p = param(int64_t(k), stores[k].second.dtype().ptr());
      if (!first.empty() && outputs_.size() > 1) {
        std::vector<UOp> srcs{p};
        srcs.insert(srcs.end(), first.begin(), first.end());
        p = UOp::make(Op::AFTER, std::span<const UOp>(srcs));
      }
      body_stores.push_back(store(index(p, stores[k].first), stores[k].second));
    }
    UOp body = body_stores.size() == 1 ? body_stores[0]
                                       : UOp::make(Op::GROUP, std::span<const UOp>(body_stores));
    for (size_t i = ranges.size(); i-- > 0;) body = end(body, {ranges[i]});
    ScheduleItem item;
    item.name = name(shape);
    item.sink = UOp::make(Op::SINK, std::span<const UOp>(&body, 1), item.name);
    item.shape = shape;
    item.outputs = outputs_;
    for (size_t i = outputs_.size(); i < params_.size(); ++i) item.inputs.push_back(params_[i]);
    item.vars = vars_;
    return item;
  }

 private:
  Scheduler& s_;
  int kernel_;
  std::vector<const LazyNode*> outputs_, params_;
  std::map<std::vector<const void*>, UOp> memo_;
  std::vector<int64_t> reduce_extents_;
  int64_t next_axis_ = 0, next_reg_ = 0;
  // Per output scope, the output axes it covers end at; the deepest output axis a
  // reduction at the kernel's top level depends on (plus one).
  std::vector<size_t> depth_axis_;
  size_t reduce_axes_ = 0;
  bool merged_ = false;
  std::vector<std::tuple<const LazyNode*, UOp, UOp>> reads_;  // buffers read: at, the load
  std::vector<const LazyNode*> vars_;

 public:
  size_t reduce_axes() const { return reduce_axes_; }
  // Whether a build with `merged` would differ: reductions depend on leading axes only,
  // with an axis larger than 1 after them.
  static bool merges(const LazyNode* out, size_t split) {
    const Shape& shape = out->shape;
    if (!out->vdims.empty()) return false;
    size_t last = 0;  // the last axis larger than 1
    for (size_t i = 0; i < shape.size(); ++i)
      if (shape[i] != 1) last = i;
    return split > 0 && split <= last;
  }

 private:
  // Values above a recomputed node that are each computed once per element, through ops
  // that keep the order of its axes (so that in the kernel of the topmost, the node's
  // axes are outer and it is computed once where it would be stored): split there instead
  // (the layernorm read along a reduction stores its output, not its statistics). Not
  // through a concatenation (its inputs are each read on their own segment only).
  std::vector<const LazyNode*> chain_;
  const LazyNode* reduce_input_ = nullptr;  // the source of the reduction being emitted
  const LazyNode* split_point(const LazyNode* n) const {
    return chain_.empty() ? n : chain_.front();
  }
  static bool keeps_order(const LazyNode* n) {
    switch (n->kind) {
      case NodeKind::Reshape:
      case NodeKind::Pad:
      case NodeKind::Shrink:
      case NodeKind::Flip:
      case NodeKind::Gather:
      case NodeKind::Named:
        return true;
      case NodeKind::Expand: {  // only trailing axes broadcast
        const Shape& in = n->src[0]->shape;
        size_t last_real = 0, first_bcast = in.size();
        for (size_t i = 0; i < in.size(); ++i) {
          if (in[i] != 1) last_real = i;
          if (in[i] == 1 && n->shape[i] != 1) first_bcast = std::min(first_bcast, i);
        }
        return first_bcast > last_real;
      }
      default:
        return false;
    }
  }

  int64_t slot_of(const LazyNode* n) {
    auto it = std::find(params_.begin(), params_.end(), n);
    if (it != params_.end()) return it - params_.begin();
    params_.push_back(n);
    return int64_t(params_.size()) - 1;
  }

  // E (element-wise) or r (reducing), the output's extents (a variable axis by its
  // variable's name), then the reductions' extents.
  std::string name(const Shape& shape) const {
    std::string n = reduce_extents_.empty() ? "E" : "r";
    const std::vector<NodePtr>& vdims = outputs_[0]->vdims;
    for (size_t i = 0; i < shape.size(); ++i)
      n += "_" + (!vdims.empty() && vdims[i] ? vdims[i]->name : std::to_string(shape[i]));
    if (!reduce_extents_.empty()) n += "_";
    for (int64_t d : reduce_extents_) n += "_" + std::to_string(d);
    return n;
  }

  static UOp flat(const Shape& shape, const std::vector<UOp>& idx) {
    UOp f = i32(0);
    int64_t stride = 1;
    for (size_t i = shape.size(); i-- > 0;) {
      if (shape[i] != 1) f = f + idx[i] * stride;
      stride *= shape[i];
    }
    return simplify(f);
  }

  // How often a node at these indices is evaluated: the product of the extents of every
  // enclosing range out to the innermost one the indices depend on.
  static int64_t evaluations(const std::vector<UOp>& idx, const std::vector<Scope>& ctx,
                             size_t* depth = nullptr) {
    size_t deepest = 0;
    for (const UOp& u : idx)
      for (const UOp& r : ranges_in(u))
        for (size_t i = 0; i < ctx.size(); ++i)
          if (ctx[i].range == r) deepest = std::max(deepest, i + 1);
    if (depth) *depth = deepest;
    int64_t n = 1;
    for (size_t i = 0; i < deepest; ++i) n *= std::max<int64_t>(ctx[i].extent, 1);
    return n;
  }

  UOp read(const LazyNode* n, const std::vector<UOp>& idx, const UOp& gate) {
    UOp p = param(slot_of(n), n->dtype.ptr());
    UOp v = gate ? load(index(p, flat(n->shape, idx), gate),
                        n->dtype.is_float() ? const_(n->dtype, 0.0) : const_int(n->dtype, 0))
                 : load(index(p, flat(n->shape, idx)));
    reads_.emplace_back(n, flat(n->shape, idx), v);
    DType c = compute_dtype(n->dtype);
    return v.dtype() == c ? v : cast(v, c);
  }

  UOp emit(const LazyNode* n, const std::vector<UOp>& idx, const UOp& gate,
           const std::vector<Scope>& ctx) {
    if (s_.reads_buffer(n)) return read(n, idx, gate);
    std::vector<const void*> key{n, gate.id()};
    for (const UOp& u : idx) key.push_back(u.id());
    if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    // The outermost node of a recomputed subgraph is split (or the value around it, see
    // split_point). A violation makes this pass's kernels moot: the node reads as the
    // buffer it will be rather than being emitted (which could repeat whole subgraphs);
    // the pass is done again.
    bool once = true;
    if (!is_movement(n->kind) && n->kind != NodeKind::Reduce && n->kind != NodeKind::Const &&
        n->kind != NodeKind::Named && n->kind != NodeKind::Var) {
      int64_t evals = evaluations(idx, ctx), elems = std::max<int64_t>(numel(n->shape), 1);
      once = evals <= elems;
      if (!once && !merged_ && s_.inline_cost(n) > kRecomputeCost) {
        s_.violate(split_point(n), "computed " + std::to_string(evals / elems) +
                                       " times per element where it is read (rule 3)");
        return read(n, idx, gate);
      }
    }
    // The chain of values computed once per element above the nodes below.
    std::vector<const LazyNode*> saved;
    bool pushed = false, broken = false;
    // A reduction's input is never the split point: storing the whole product of a weight
    // gradient (64x256x64) would cost more than the smaller value it recomputes.
    if ((n->kind == NodeKind::Alu || n->kind == NodeKind::Cast) && once && n != reduce_input_) {
      chain_.push_back(n);
      pushed = true;
    } else if (!keeps_order(n)) {
      saved.swap(chain_);
      broken = true;
    }
    UOp v = value(n, idx, gate, ctx);
    if (pushed) chain_.pop_back();
    if (broken) saved.swap(chain_);
    memo_[key] = v;
    return v;
  }

  // The node's own computation at idx (never its buffer).
  UOp value(const LazyNode* n, const std::vector<UOp>& idx, const UOp& gate,
            const std::vector<Scope>& ctx) {
    DType c = compute_dtype(n->dtype);
    auto src = [&](size_t i, const std::vector<UOp>& at, const UOp& g = {}) {
      return emit(n->src[i].get(), at, g ? g : gate, ctx);
    };
    switch (n->kind) {
      case NodeKind::Buffer:
        return read(n, idx, gate);
      case NodeKind::Const:
        return c.is_float()         ? const_(c, n->value)
               : c == dtypes::bool_ ? const_bool(n->value != 0)
                                    : const_int(c, int64_t(n->value));
      case NodeKind::Iota: {
        UOp v = idx[size_t(n->arg[0])];
        return v.dtype() == c ? v : cast(v, c);
      }
      case NodeKind::Rand:
        return rand_value(n, idx);
      case NodeKind::Alu: {
        std::vector<UOp> in;
        for (size_t i = 0; i < n->src.size(); ++i) in.push_back(src(i, idx));
        if (n->op == Op::WHERE) {
          DType d = compute_dtype(n->dtype);
          for (size_t i = 1; i < 3; ++i)
            if (in[i].dtype() != d) in[i] = cast(in[i], d);
        }
        return UOp::make(n->op, std::span<const UOp>(in));
      }
      case NodeKind::Cast: {
        UOp v = src(0, idx);
        if (n->dtype == dtypes::bool_ && v.dtype() != dtypes::bool_)
          return alu(Op::CMPNE, v,
                     v.dtype().is_float() ? const_(v.dtype(), 0.0) : const_int(v.dtype(), 0));
        if (n->dtype.narrow_float()) v = cast(v, n->dtype);  // rounded as stored
        return v.dtype() == c ? v : cast(v, c);
      }
      case NodeKind::Reduce:
        return reduce_value(n, idx, gate, ctx);
      case NodeKind::Named:
        return src(0, idx);
      case NodeKind::Reshape:
      case NodeKind::Permute:
      case NodeKind::Expand:
      case NodeKind::Shrink:
      case NodeKind::Flip:
        return src(0, view_source(n, idx));
      case NodeKind::Pad: {
        std::vector<UOp> at(idx);
        UOp valid;
        for (size_t i = 0; i < idx.size(); ++i) {
          int64_t lo = n->arg[2 * i], hi = n->arg[2 * i + 1];
          if (!lo && !hi) continue;
          at[i] = simplify(idx[i] - i32(lo));
          int64_t size = n->src[0]->shape[i];
          UOp in = and_gate(lo ? alu(Op::CMPLT, i32(lo - 1), idx[i]) : UOp{},
                            hi ? idx[i] < i32(lo + size) : UOp{});
          valid = and_gate(valid, in);
        }
        valid = simplify(valid);
        UOp v = src(0, at, and_gate(gate, valid));
        return UOp::make(Op::WHERE, {valid, v, zero(v.dtype())});
      }
      case NodeKind::Cat: {
        size_t ax = size_t(n->arg[0]);
        int64_t start = 0;
        std::vector<std::pair<UOp, UOp>> parts;  // (in segment, value)
        for (size_t k = 0; k < n->src.size(); ++k) {
          int64_t w = n->src[k]->shape[ax];
          if (w == 0) continue;
          std::vector<UOp> at(idx);
          at[ax] = simplify(idx[ax] - i32(start));
          UOp in =
              simplify(and_gate(alu(Op::CMPLT, i32(start - 1), idx[ax]), idx[ax] < i32(start + w)));
          parts.emplace_back(in, src(k, at, and_gate(gate, in)));
          start += w;
        }
        UOp v = parts.back().second;
        for (size_t k = parts.size() - 1; k-- > 0;)
          v = UOp::make(Op::WHERE, {parts[k].first, parts[k].second, v});
        return v;
      }
      case NodeKind::Gather: {
        size_t ax = size_t(n->arg[0]);
        UOp at_i = emit(n->src[1].get(), idx, gate, ctx);
        if (at_i.dtype() != dtypes::int32) at_i = cast(at_i, dtypes::int32);
        int64_t size = n->src[0]->shape[ax];
        UOp valid = and_gate(alu(Op::CMPLT, i32(-1), at_i), at_i < i32(size));
        std::vector<UOp> at(idx);
        at[ax] = at_i;
        UOp v = emit(n->src[0].get(), at, and_gate(gate, valid), ctx);
        return UOp::make(Op::WHERE, {valid, v, zero(v.dtype())});
      }
      case NodeKind::Var:
        return variable(n);
      case NodeKind::Assign:
        break;
    }
    throw TensorError("schedule: unknown node kind");
  }

  // A bound variable: an argument of the kernel (two values under one name are refused).
  UOp variable(const LazyNode* v) {
    for (const LazyNode* w : vars_)
      if (w->name == v->name && w->value != v->value)
        throw TensorError("schedule: one kernel reads the variable " + v->name +
                          " bound to two values (" + std::to_string(int64_t(w->value)) + " and " +
                          std::to_string(int64_t(v->value)) + ")");
    if (std::find(vars_.begin(), vars_.end(), v) == vars_.end()) vars_.push_back(v);
    return define_var(v->name, v->arg[0], v->arg[1]);
  }

  // The indices in the source of a movement op (not Pad) that idx reads.
  std::vector<UOp> view_source(const LazyNode* n, const std::vector<UOp>& idx) {
    std::vector<UOp> at(idx);
    switch (n->kind) {
      case NodeKind::Reshape: {
        UOp f = flat(n->shape, idx);
        const Shape& in = n->src[0]->shape;
        at.assign(in.size(), UOp{});
        int64_t stride = 1;
        for (size_t i = in.size(); i-- > 0;) {
          UOp v = stride == 1 ? f : f / stride;
          if (i > 0) v = v % in[i];
          at[i] = in[i] == 1 ? i32(0) : simplify(v);
          stride *= in[i];
        }
        break;
      }
      case NodeKind::Permute:
        for (size_t i = 0; i < idx.size(); ++i) at[size_t(n->arg[i])] = idx[i];
        break;
      case NodeKind::Expand:
        for (size_t i = 0; i < idx.size(); ++i)
          if (n->src[0]->shape[i] == 1) at[i] = i32(0);
        break;
      case NodeKind::Shrink:
        for (size_t i = 0; i < idx.size(); ++i)
          if (n->arg[2 * i]) at[i] = simplify(idx[i] + n->arg[2 * i]);
        if (n->src.size() == 2) {  // at a bound position
          size_t ax = size_t(n->arg.back());
          at[ax] = simplify(at[ax] + variable(n->src[1].get()));
        }
        break;
      case NodeKind::Flip:
        for (size_t i = 0; i < idx.size(); ++i)
          if (n->arg[i]) at[i] = simplify(i32(n->shape[i] - 1) - idx[i]);
        break;
      case NodeKind::Named:  // detach, an anchor: the source's elements
        break;
      default:
        throw TensorError(std::string("schedule: ") + node_kind_name(n->kind) + " is not a view");
    }
    return at;
  }

  static UOp zero(DType d) {
    if (d.is_float()) return const_(d, 0.0);
    if (d == dtypes::bool_) return const_bool(false);
    return const_int(d, 0);
  }

  UOp reduce_value(const LazyNode* n, const std::vector<UOp>& idx, const UOp& gate,
                   const std::vector<Scope>& ctx) {
    size_t depth = 0;
    int64_t evals = evaluations(idx, ctx, &depth);
    std::vector<const void*> key{reinterpret_cast<const void*>(intptr_t(kernel_))};
    for (const UOp& u : idx) key.push_back(u.id());
    auto& sites = s_.reduce_uses[n];
    sites.insert(key);
    int64_t elems = std::max<int64_t>(numel(n->shape), 1);
    if (evals > elems && !merged_) {
      s_.violate(chain_.empty() ? s_.epilogue_top(n) : chain_.front(),
                 "a reduction computed " + std::to_string(evals / elems) +
                     " times per element where it is read (rule 2)");
      return read(n, idx, gate);
    }
    if (sites.size() > 1 && !merged_) {
      s_.violate(s_.epilogue_top(n), "a reduction read at several places (rule 1)");
      return read(n, idx, gate);
    }
    if (ctx.size() <= depth_axis_.size() && depth > 0)  // at the top level
      reduce_axes_ = std::max(reduce_axes_, depth_axis_[depth - 1]);
    const LazyNode* in = n->src[0].get();
    std::vector<Scope> inner(ctx.begin(), ctx.begin() + std::ptrdiff_t(depth));
    std::vector<UOp> at(idx), red;
    for (size_t i = 0; i < idx.size(); ++i) {
      if (!n->arg[i]) continue;
      int64_t extent = in->shape[i];
      const LazyNode* var = in->vdims.empty() ? nullptr : in->vdims[i].get();
      reduce_extents_.push_back(extent);
      if (extent == 1 && !var) {
        at[i] = i32(0);
        continue;
      }
      // Over a variable axis: its bound length.
      UOp r = var ? range(variable(var), next_axis_++, AxisKind::Reduce)
                  : range(extent, next_axis_++, AxisKind::Reduce);
      at[i] = r;
      red.push_back(r);
      inner.push_back({r, extent});
    }
    DType c = compute_dtype(n->dtype);
    DType acc_dt = c.is_float() ? (c == dtypes::float64 ? c : dtypes::float32) : c;
    UOp init = n->op == Op::MAX ? lowest(acc_dt) : zero(acc_dt);
    bool empty = false;
    for (size_t i = 0; i < idx.size(); ++i) empty = empty || (n->arg[i] && in->shape[i] == 0);
    if (empty) return init.dtype() == c ? init : cast(init, c);
    auto combine = [&](UOp a, UOp b) { return n->op == Op::MAX ? alu(Op::MAX, a, b) : a + b; };
    if (red.empty()) {
      const LazyNode* outer_input = std::exchange(reduce_input_, in);
      UOp v = emit(in, at, gate, inner);
      reduce_input_ = outer_input;
      return v.dtype() == c ? v : cast(v, c);
    }
    // A register accumulator, reset inside the output ranges the indices depend on.
    std::vector<UOp> outer;
    for (const UOp& u : idx)
      for (const UOp& r : ranges_in(u))
        if (std::find(outer.begin(), outer.end(), r) == outer.end()) outer.push_back(r);
    UOp buf = define_reg(acc_dt, 1, next_reg_++), at_init = buf;
    if (!outer.empty()) {
      std::vector<UOp> srcs{buf};
      srcs.insert(srcs.end(), outer.begin(), outer.end());
      at_init = UOp::make(Op::AFTER, std::span<const UOp>(srcs));
    }
    UOp init_store = store(index(at_init, i32(0)), init);
    std::vector<UOp> deps{buf, init_store};
    deps.insert(deps.end(), red.begin(), red.end());
    UOp in_loop = UOp::make(Op::AFTER, std::span<const UOp>(deps));
    const LazyNode* outer_input = std::exchange(reduce_input_, in);
    UOp v = emit(in, at, gate, inner);
    reduce_input_ = outer_input;
    if (v.dtype() != acc_dt) v = cast(v, acc_dt);
    UOp upd = store(index(in_loop, i32(0)), combine(load(index(in_loop, i32(0))), v));
    std::vector<UOp> end_src{upd};
    end_src.insert(end_src.end(), red.begin(), red.end());
    UOp loop = UOp::make(Op::END, std::span<const UOp>(end_src));
    UOp result = load(index(after(buf, {loop}), i32(0)));
    return result.dtype() == c ? result : cast(result, c);
  }

  // Counter-based uniform floats: two rounds of a 32-bit integer hash of the flat index
  // and the seed; the top 24 bits scaled to [0, 1). Integer arithmetic only, so every
  // device gives the same bits.
  UOp rand_value(const LazyNode* n, const std::vector<UOp>& idx) {
    DType u = dtypes::uint32;
    auto k = [&](int64_t v) { return const_int(u, v & 0xFFFFFFFF); };
    auto hash = [&](UOp x) {
      x = alu(Op::XOR, x, alu(Op::SHR, x, k(16)));
      x = x * k(0x7feb352d);
      x = alu(Op::XOR, x, alu(Op::SHR, x, k(15)));
      x = x * k(0x846ca68b);
      return alu(Op::XOR, x, alu(Op::SHR, x, k(16)));
    };
    UOp x = cast(flat(n->shape, idx), u);
    x = hash(hash(alu(Op::XOR, x, k(n->arg[0]))) + k(n->arg[1]));
    return cast(alu(Op::SHR, x, k(8)), dtypes::float32) * const_(dtypes::float32, 1.0 / 16777216);
  }
};

// The order the kernels run in: those that assign nothing first (in dependency order, as
// built), then the assigning ones, each after every kernel that reads what it writes.
// Kernels that read each other's targets (a cycle) have their values computed into
// buffers of their own first (a violation; Tensor::assign copies a value that is a buffer
// over a target's memory first).
std::vector<size_t> assign_order(Scheduler& s, const std::vector<ScheduleItem>& items) {
  std::vector<size_t> order, pending;
  for (size_t i = 0; i < items.size(); ++i)
    (items[i].outputs[0]->kind == NodeKind::Assign ? pending : order).push_back(i);
  auto writes = [&](size_t k, const LazyNode* b) {
    for (const LazyNode* o : items[k].outputs)
      if (written_buffer(o) == b || shares_memory(written_buffer(o), b)) return true;
    return false;
  };
  // k must wait while a pending kernel other than k reads what k writes.
  auto waits = [&](size_t k) {
    for (size_t j : pending)
      if (j != k)
        for (const LazyNode* n : items[j].inputs)
          if (writes(k, n)) return true;
    return false;
  };
  while (!pending.empty()) {
    auto it = std::find_if(pending.begin(), pending.end(), [&](size_t k) { return !waits(k); });
    if (it == pending.end()) {
      for (size_t k : pending)
        for (const LazyNode* o : items[k].outputs)
          if (!o->src[0]->data())
            s.violate(o->src[0].get(), "assigned values that read each other's targets");
      order.insert(order.end(), pending.begin(), pending.end());
      break;
    }
    order.push_back(*it);
    pending.erase(it);
  }
  return order;
}

}  // namespace

const LazyNode* written_buffer(const LazyNode* n) {
  if (n->kind != NodeKind::Assign) return n;
  const LazyNode* b = n->src[1].get();
  while (!b->data()) b = b->src[0].get();
  return b;
}

namespace {

// A schedule by positions in the canonical walk of its graph (below), so that a graph of
// the same structure (other buffers, other values of bound variables) reuses it.
struct CachedSchedule {
  struct Item {
    UOp sink;
    std::string name;
    Shape shape;
    std::vector<size_t> outputs, inputs, vars;
  };
  std::vector<Item> items;
  std::vector<std::pair<size_t, std::string>> splits;
};

// The canonical walk: the nodes below the targets in post-order (sources in order; a
// realized node is a leaf). Returns a text that determines the schedule: per node what it
// computes and its sources' positions, then the targets' positions.
std::string structure(const std::vector<NodePtr>& targets, std::vector<const LazyNode*>& order,
                      std::unordered_map<const LazyNode*, size_t>& pos) {
  std::ostringstream text;
  const char* fusion = std::getenv("KITTEN_FUSION");
  text << "fusion " << (fusion && std::string(fusion) == "0" ? 0 : 1) << "\n";
  std::unordered_map<const Storage*, size_t> roots;  // memory owner -> first leaf on it
  auto variables = [&](const LazyNode* n) {
    for (const NodePtr& v : n->vdims)
      text << (v ? "v" + std::to_string(pos.at(v.get())) : "") << " ";
  };
  auto describe = [&](const LazyNode* n) {
    text << node_kind_name(n->kind) << " " << n->dtype.name() << shape_text(n->shape);
    if (n->data()) {
      variables(n);
      // Leaves over one memory (which the in-place rules look at): which, and where.
      size_t offset = 0;
      const Storage* root = memory_root(n->data().get(), &offset);
      auto [it, first] = roots.emplace(root, pos.at(n));
      if (!first || root != n->data().get())
        text << " memory of " << it->second << " +" << offset << " " << n->data()->buffer.bytes;
      text << "\n";
      return;
    }
    text << " " << op_name(n->op) << " " << shape_text(n->arg) << " " << n->name;
    if (n->kind == NodeKind::Const) text << " " << std::hexfloat << n->value << std::defaultfloat;
    text << " <";
    for (const NodePtr& x : n->src) text << pos.at(x.get()) << " ";
    variables(n);
    text << ">\n";
  };
  // A node's sources (none for a realized one), then the variables of its variable axes
  // (null for fixed ones).
  auto sources = [](const LazyNode* n) { return n->data() ? 0 : n->src.size(); };
  auto child = [&](const LazyNode* n, size_t k) {
    return k < sources(n) ? n->src[k].get() : n->vdims[k - sources(n)].get();
  };
  std::vector<std::pair<const LazyNode*, size_t>> stack;
  for (const NodePtr& t : targets) {
    if (pos.count(t.get())) continue;
    stack.emplace_back(t.get(), 0);
    while (!stack.empty()) {
      auto& [n, next] = stack.back();
      if (next < sources(n) + n->vdims.size()) {
        const LazyNode* x = child(n, next++);
        if (x && !pos.count(x)) stack.emplace_back(x, 0);
        continue;
      }
      const LazyNode* done = n;
      stack.pop_back();
      pos[done] = order.size();
      order.push_back(done);
      describe(done);
    }
  }
  text << "targets";
  for (const NodePtr& t : targets)
    if (!t->data()) text << " " << pos.at(t.get());
  return text.str();
}

KernelSchedule schedule_uncached(const std::vector<NodePtr>& targets);

}  // namespace

KernelSchedule schedule_nodes(const std::vector<NodePtr>& targets) {
  for (const NodePtr& t : targets) {
    if (!t) throw TensorError("realize: an undefined tensor");
    if (t->device != targets[0]->device)
      throw TensorError("realize: tensors on " + targets[0]->device + " and " + t->device +
                        " in one schedule");
  }
  std::vector<const LazyNode*> order;
  std::unordered_map<const LazyNode*, size_t> pos;
  std::string key = structure(targets, order, pos);
  static std::mutex mu;
  static std::unordered_map<std::string, CachedSchedule> cache;
  KernelSchedule out;
  std::unordered_set<const LazyNode*> kept;
  for (const NodePtr& t : targets)
    if (!t->data() && kept.insert(t.get()).second) out.keep.push_back(t);
  {
    std::lock_guard lock(mu);
    if (auto it = cache.find(key); it != cache.end()) {
      ++schedule_cache_stats().hits;  // under the lock
      for (const CachedSchedule::Item& c : it->second.items) {
        ScheduleItem item{c.sink, c.name, c.shape, {}, {}, {}};
        for (size_t i : c.outputs) item.outputs.push_back(order[i]);
        for (size_t i : c.inputs) item.inputs.push_back(order[i]);
        for (size_t i : c.vars) item.vars.push_back(order[i]);
        out.items.push_back(std::move(item));
      }
      for (const auto& [i, rule] : it->second.splits) out.splits.emplace_back(order[i], rule);
      return out;
    }
  }
  KernelSchedule fresh = schedule_uncached(targets);
  CachedSchedule c;
  auto at = [&](const std::vector<const LazyNode*>& nodes) {
    std::vector<size_t> v;
    for (const LazyNode* n : nodes) v.push_back(pos.at(n));
    return v;
  };
  for (const ScheduleItem& item : fresh.items)
    c.items.push_back(
        {item.sink, item.name, item.shape, at(item.outputs), at(item.inputs), at(item.vars)});
  for (const auto& [n, rule] : fresh.splits) c.splits.emplace_back(pos.at(n), rule);
  std::lock_guard lock(mu);
  ++schedule_cache_stats().misses;
  if (cache.size() >= 256) cache.clear();  // graphs that never repeat
  cache.emplace(std::move(key), std::move(c));
  return fresh;
}

namespace {

KernelSchedule schedule_uncached(const std::vector<NodePtr>& targets) {
  Scheduler s;
  KernelSchedule out;
  std::unordered_set<const LazyNode*> seen;
  for (const NodePtr& t : targets) {
    if (t->data() || !s.target_set.insert(t.get()).second) continue;
    s.targets.push_back(t);
    s.collect(t.get(), seen);
  }
  s.materialised = s.target_set;
  // KITTEN_FUSION=0: every computed node is a kernel of its own (movement stays index
  // arithmetic), the baseline the fusion is measured against.
  const char* fusion = std::getenv("KITTEN_FUSION");
  bool unfused = fusion && std::string(fusion) == "0";
  for (const LazyNode* n : seen)
    if ((n->kind == NodeKind::Named && n->name == "contiguous") ||
        (unfused && !n->data() && !is_movement(n->kind) && n->kind != NodeKind::Const &&
         n->kind != NodeKind::Named && n->kind != NodeKind::Var))
      s.materialised.insert(n);
  for (int pass = 0;; ++pass) {
    if (pass > 200) throw TensorError("schedule: the fusion rules did not settle");
    s.reduce_uses.clear();
    s.violations.clear();
    s.cost_memo.clear();
    // Kernel roots in dependency order: a post-order walk from the targets.
    std::vector<const LazyNode*> order;
    std::unordered_set<const LazyNode*> visited;
    std::function<void(const LazyNode*)> walk = [&](const LazyNode* n) {
      if (n->data() || !visited.insert(n).second) return;
      for (const NodePtr& x : inputs_of(n)) walk(x.get());
      if (s.materialised.count(n)) order.push_back(n);
    };
    for (const NodePtr& t : s.targets) walk(t.get());
    // Targets of one shape that do not read each other share a kernel (one store each).
    std::vector<std::vector<const LazyNode*>> kernels;
    for (const LazyNode* n : order) {
      bool placed = false;
      // Only the last kernel so far: everything n reads is computed before it (or in it,
      // which `related` refuses).
      if (s.target_set.count(n) && numel(n->shape) > 0 && !kernels.empty())
        for (auto& k : std::span(kernels).last(1)) {
          if (!s.target_set.count(k[0]) || k[0]->shape != n->shape ||
              k[0]->vdims != n->vdims ||  // (the same Var nodes: the cache's key names nodes)
              (k[0]->kind == NodeKind::Assign) != (n->kind == NodeKind::Assign))
            continue;
          bool related = false;
          std::unordered_set<const LazyNode*> below;
          std::function<void(const LazyNode*)> mark = [&](const LazyNode* x) {
            if (x->data() || !below.insert(x).second) return;
            for (const NodePtr& y : inputs_of(x)) mark(y.get());
          };
          mark(n);
          for (const LazyNode* o : k) related = related || below.count(o);
          if (!related) {
            k.push_back(n);
            placed = true;
            break;
          }
        }
      if (!placed) kernels.push_back({n});
    }
    out.items.clear();
    std::vector<size_t> splits;
    for (size_t i = 0; i < kernels.size(); ++i) {
      if (numel(kernels[i][0]->shape) == 0) continue;
      Emitter e(s, int(i), kernels[i]);
      out.items.push_back(e.build());
      splits.push_back(e.reduce_axes());
    }
    std::vector<size_t> order_of_items = assign_order(s, out.items);
    // Rule 1 waits until rules 2 and 3 hold: a split they make often removes the second
    // place a reduction is read (the value around it is stored instead).
    bool others = false;
    for (auto& [n, rule] : s.violations)
      others = others || rule.find("rule 1") == std::string::npos;
    if (others)
      std::erase_if(s.violations,
                    [](auto& v) { return v.second.find("rule 1") != std::string::npos; });
    bool changed = false;
    if (std::getenv("KITTEN_SCHEDULE_TRACE"))
      for (auto& [n, rule] : s.violations)
        std::fprintf(stderr, "pass %d: %s%s %s\n", pass, node_kind_name(n->kind),
                     shape_text(n->shape).c_str(), rule.c_str());
    for (auto& [n, rule] : s.violations)
      if (s.materialised.insert(n).second) {
        s.why[n] = rule;
        changed = true;
      }
    if (!changed) {
      // The kernels as the lowering gets them: the output axes merged into rows and
      // columns (the fusion decisions stand; only the loop nest is simpler).
      // Only kernels whose loop nest changes are built again.
      size_t k = 0;
      for (size_t i = 0; i < kernels.size(); ++i) {
        if (numel(kernels[i][0]->shape) == 0) continue;
        if (Emitter::merges(kernels[i][0], splits[k]))
          out.items[k] = Emitter(s, int(i), kernels[i]).build(true, splits[k]);
        ++k;
      }
      std::vector<ScheduleItem> ordered;
      for (size_t i : order_of_items) ordered.push_back(std::move(out.items[i]));
      out.items = std::move(ordered);
      break;
    }
  }
  for (auto& [n, rule] : s.why) out.splits.emplace_back(n, rule);
  out.keep = s.targets;
  return out;
}

}  // namespace

ScheduleCacheStats& schedule_cache_stats() {
  static ScheduleCacheStats s;
  return s;
}

std::string schedule_text(const KernelSchedule& s) {
  std::ostringstream o;
  std::map<const LazyNode*, std::string> names;
  auto name = [&](const LazyNode* n) {
    auto [it, fresh] = names.emplace(n, "b" + std::to_string(names.size()));
    return it->second + ":" + node_kind_name(n->kind) + shape_text(n->shape);
  };
  for (size_t i = 0; i < s.items.size(); ++i) {
    const ScheduleItem& k = s.items[i];
    o << i << " " << k.name << " writes";
    for (const LazyNode* n : k.outputs) o << " " << name(n);
    o << " reads";
    for (const LazyNode* n : k.inputs) o << " " << name(n);
    o << "\n";
  }
  for (auto& [n, rule] : s.splits) o << "split " << name(n) << ": " << rule << "\n";
  return o.str();
}

}  // namespace kitten
