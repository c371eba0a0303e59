#include "dsl/pattern.h"

#include <algorithm>

namespace kitten {

struct Pat::Node {
  std::vector<Op> ops;  // empty: any
  bool match_src = false;
  std::vector<Pat> src;
  std::string name;
  std::optional<DType> dtype;
  std::optional<Arg> arg;
  std::function<bool(const UOp&)> pred;
  bool commutative = false;
};

Pat Pat::any(std::string name) {
  Pat p;
  p.node_ = std::make_shared<Node>();
  p.node_->name = std::move(name);
  return p;
}
Pat Pat::op(std::vector<Op> ops, std::vector<Pat> src) {
  Pat p = op(std::move(ops));
  p.node_->match_src = true;
  p.node_->src = std::move(src);
  return p;
}
Pat Pat::op(std::vector<Op> ops) {
  Pat p = any();
  p.node_->ops = std::move(ops);
  return p;
}

Pat::Node& Pat::mut() {
  if (node_.use_count() > 1) node_ = std::make_shared<Node>(*node_);  // copy on write
  return *node_;
}
Pat& Pat::name(std::string n) {
  mut().name = std::move(n);
  return *this;
}
Pat& Pat::dtype(DType d) {
  mut().dtype = d;
  return *this;
}
Pat& Pat::where(std::function<bool(const UOp&)> pred) {
  Node& n = mut();
  if (!n.pred) {
    n.pred = std::move(pred);
  } else {
    n.pred = [a = n.pred, b = std::move(pred)](const UOp& u) { return a(u) && b(u); };
  }
  return *this;
}
Pat& Pat::arg(Arg a) {
  mut().arg = std::move(a);
  return *this;
}
Pat& Pat::commutative() {
  mut().commutative = true;
  return *this;
}
const std::vector<Op>& Pat::root_ops() const { return node_->ops; }

Pat cvar(std::string name) { return Pat::op({Op::CONST}).name(std::move(name)); }
Pat cint(int64_t value) {
  return Pat::op({Op::CONST}).where([value](const UOp& u) {
    return (u.dtype().is_int() || u.dtype().is_bool()) && u.const_int() == value;
  });
}
Pat ivar(std::string name) {
  return any(std::move(name)).where([](const UOp& u) { return u.dtype().is_int(); });
}

const UOp& Match::operator[](const std::string& name) const {
  for (const auto& [n, u] : caps_)
    if (n == name) return u;
  throw std::out_of_range("pattern match: nothing was captured as '" + name + "'");
}
bool Match::has(const std::string& name) const {
  return std::any_of(caps_.begin(), caps_.end(), [&](const auto& c) { return c.first == name; });
}

namespace {

// Matching in continuation-passing style: `k` is called for every way the pattern
// matches (commutative sources give two), so a failure later on can try the other order.
template <class F>
class FnRef;
template <class R>
class FnRef<R()> {
 public:
  template <class C>
  FnRef(C& c) : obj_(&c), call_([](void* o) -> R { return (*static_cast<C*>(o))(); }) {}
  R operator()() const { return call_(obj_); }

 private:
  void* obj_;
  R (*call_)(void*);
};

using Caps = std::vector<std::pair<std::string, UOp>>;

bool match_node(const Pat::Node& p, const UOp& u, Caps& caps, FnRef<bool()> k);

bool match_srcs(const std::vector<Pat>& pats, std::span<const UOp> src, const size_t* order,
                size_t i, Caps& caps, FnRef<bool()> k) {
  if (i == pats.size()) return k();
  auto next = [&] { return match_srcs(pats, src, order, i + 1, caps, k); };
  return match_node(*pats[i].node(), src[order[i]], caps, FnRef<bool()>(next));
}

bool match_node(const Pat::Node& p, const UOp& u, Caps& caps, FnRef<bool()> k) {
  if (!p.ops.empty() && std::find(p.ops.begin(), p.ops.end(), u.op()) == p.ops.end()) return false;
  if (p.dtype && u.dtype() != *p.dtype) return false;
  if (p.arg && u.arg() != *p.arg) return false;
  if (p.match_src && p.src.size() != u.src().size()) return false;
  if (p.pred && !p.pred(u)) return false;
  size_t mark = caps.size();
  if (!p.name.empty()) {
    auto it =
        std::find_if(caps.begin(), caps.end(), [&](const auto& c) { return c.first == p.name; });
    if (it != caps.end()) {
      if (it->second != u) return false;
    } else {
      caps.emplace_back(p.name, u);
    }
  }
  bool ok;
  if (!p.match_src) {
    ok = k();
  } else {
    static constexpr size_t in_order[] = {0, 1, 2, 3, 4, 5, 6, 7}, swapped[] = {1, 0};
    if (p.src.size() > 8) throw std::invalid_argument("pattern: at most 8 sources");
    ok = match_srcs(p.src, u.src(), in_order, 0, caps, k) ||
         (p.commutative && p.src.size() == 2 && match_srcs(p.src, u.src(), swapped, 0, caps, k));
  }
  if (!ok) caps.resize(mark);
  return ok;
}

}  // namespace

bool match_pattern(const Pat& p, const UOp& u, Match& m) {
  m.caps_.clear();
  m.root_ = u;
  auto done = [] { return true; };
  return match_node(*p.node(), u, m.caps_, FnRef<bool()>(done));
}

RuleSet::RuleSet(std::string name, std::vector<Rule> rules)
    : name_(std::move(name)), rules_(std::move(rules)) {
  index();
}

void RuleSet::index() {
  size_t n = size_t(num_ops());
  for (const Rule& r : rules_)
    for (Op op : r.pattern.root_ops()) n = std::max(n, size_t(op) + 1);
  by_op_.assign(n, {});
  wildcard_.clear();
  for (size_t i = 0; i < rules_.size(); ++i) {
    const auto& ops = rules_[i].pattern.root_ops();
    if (ops.empty()) {
      wildcard_.push_back(i);
      for (auto& list : by_op_) list.push_back(i);
    }
    for (Op op : ops)
      if (size_t(op) < by_op_.size()) by_op_[size_t(op)].push_back(i);
  }
}

RuleSet RuleSet::operator+(const RuleSet& other) const {
  std::vector<Rule> all = rules_;
  all.insert(all.end(), other.rules_.begin(), other.rules_.end());
  return RuleSet(name_ + "+" + other.name_, std::move(all));
}

std::optional<UOp> RuleSet::rewrite(const UOp& u, void* ctx, const std::string** fired) const {
  const std::vector<size_t>& candidates =
      size_t(u.op()) < by_op_.size() ? by_op_[size_t(u.op())] : wildcard_;
  Match m;
  m.ctx_ = ctx;
  for (size_t i : candidates) {
    const Rule& r = rules_[i];
    if (!match_pattern(r.pattern, u, m)) continue;
    std::optional<UOp> out = r.body(m);
    if (out && *out && *out != u) {
      if (fired) *fired = &r.name;
      return out;
    }
  }
  return std::nullopt;
}

}  // namespace kitten
