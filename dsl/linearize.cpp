#include "dsl/linearize.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <map>
#include <numeric>
#include <queue>
#include <span>
#include <unordered_map>
#include <utility>

#include "dsl/printer.h"
#include "dsl/verify.h"

namespace kitten {

namespace {

using Scope = std::vector<int>;  // sorted indices of the ranges a node sits in

// Scopes interned as small ids (0: no range). A kernel has few distinct scopes but many
// nodes, so comparing two scopes is an int compare, and each union or difference the
// linearizer takes is computed once per distinct pair of scopes.
class ScopeTable {
 public:
  ScopeTable() { intern({}); }
  const Scope& operator[](int id) const { return *scopes_[size_t(id)]; }
  size_t size() const { return scopes_.size(); }

  int intern(Scope s) {
    auto [it, fresh] = ids_.emplace(std::move(s), int(scopes_.size()));
    if (fresh) scopes_.push_back(&it->first);
    return it->second;
  }
  int single(int r) { return intern({r}); }

  int merge(int a, int b) {
    if (a == b || b == 0) return a;
    if (a == 0) return b;
    return memo(merged_, std::min(a, b), std::max(a, b), [](const Scope& x, const Scope& y) {
      Scope out;
      std::set_union(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(out));
      return out;
    });
  }
  int minus(int a, int b) {
    if (a == b || a == 0) return 0;
    if (b == 0) return a;
    return memo(minus_, a, b, [](const Scope& x, const Scope& y) {
      Scope out;
      std::set_difference(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(out));
      return out;
    });
  }

 private:
  template <class F>
  int memo(std::unordered_map<uint64_t, int>& cache, int a, int b, F op) {
    uint64_t key = uint64_t(uint32_t(a)) << 32 | uint32_t(b);
    if (auto it = cache.find(key); it != cache.end()) return it->second;
    int id = intern(op((*this)[a], (*this)[b]));
    cache.emplace(key, id);
    return id;
  }

  std::map<Scope, int> ids_;
  std::vector<const Scope*> scopes_;  // by id, pointing into ids_ (its nodes do not move)
  std::unordered_map<uint64_t, int> merged_, minus_;
};

// Node -> position in graph order: an open-addressing table, as the linearizer looks up
// every edge of graphs of 100,000 nodes and more.
class NodePositions {
 public:
  explicit NodePositions(size_t n)
      : slots_(std::bit_ceil(2 * n + 2)), shift_(64 - std::countr_zero(slots_.size())) {}
  void add(const void* id, int pos) { slots_[find(id)] = {id, pos}; }
  int at(const void* id) const { return slots_[find(id)].second; }

 private:
  size_t find(const void* id) const {
    // Fibonacci hashing: the high bits of the product mix all bits of the address.
    uint64_t h = uint64_t(reinterpret_cast<uintptr_t>(id)) * 0x9E3779B97F4A7C15ull;
    for (size_t i = size_t(h >> shift_);; i = (i + 1) & (slots_.size() - 1))
      if (slots_[i].first == id || slots_[i].first == nullptr) return i;
  }
  // At most half full, so that a probe soon ends at the node or at a hole.
  std::vector<std::pair<const void*, int>> slots_;
  int shift_;
};

// Ranges nest: a range sits inside the ranges still open around the END that closes it,
// and ranges closed by one END nest in order of axis kind (global outermost), then id. An
// op sits in the innermost range it depends on, and so inside that range's whole chain.
//
// Emission is a list schedule: of the ready ops whose scope is the open one, a plain op
// first, then an END, then a RANGE, each the first in graph order. Ready plain ops and
// RANGEs wait in heaps keyed by their scope, so picking one is a lookup; an END can only
// close the innermost open range, so the one END to try is that range's closer.
class Linearizer {
 public:
  Linearizer(const UOp& sink, std::vector<UOp> order) : sink_(sink), order_(std::move(order)) {}

  LinearProgram run() {
    index_nodes();
    compute_required();
    compute_deps();
    compute_nesting();
    compute_placement();
    add_edges();
    emit_all();
    return {sink_.name_arg(), std::move(program_)};
  }

 private:
  using MinHeap = std::priority_queue<int, std::vector<int>, std::greater<>>;

  [[noreturn]] void fail(const UOp& u, const std::string& rule, const std::string& detail) {
    throw ir_error(u, "linearize: " + rule, detail, sink_);
  }
  std::string range_names(int scope) const {
    std::string out;
    for (int r : scopes_[scope]) out += " " + block_name(r);
    return "{" + out + " }";
  }
  // A block is a RANGE (named by its axis) or an IF (named by its place in graph order).
  std::string block_name(int r) const {
    const UOp& u = range(r);
    return u.op() == Op::RANGE ? "r" + std::to_string(u.axis().id)
                               : "IF@" + std::to_string(ranges_[size_t(r)]);
  }
  static bool opens(Op op) { return op == Op::RANGE || op == Op::IF; }
  static bool closes(Op op) { return op == Op::END || op == Op::ENDIF; }
  const UOp& range(int r) const { return order_[size_t(ranges_[size_t(r)])]; }
  std::span<const int> srcs(int i) const {
    return {srcs_.begin() + src_begin_[size_t(i)], srcs_.begin() + src_begin_[size_t(i) + 1]};
  }
  // The blocks an END (its ranges) or an ENDIF (its IF) closes.
  std::span<const int> closed(int i) const {
    return op_[size_t(i)] == Op::END ? srcs(i).subspan(1) : srcs(i).subspan(0, 1);
  }

  // Ops, sources as positions in order_, and range indices, looked up once per node.
  void index_nodes() {
    NodePositions pos(order_.size());
    range_of_.assign(order_.size(), -1);
    for (size_t i = 0; i < order_.size(); ++i) {
      const UOp& u = order_[i];
      pos.add(u.id(), int(i));
      op_.push_back(u.op());
      src_begin_.push_back(srcs_.size());
      for (const UOp& s : u.src()) srcs_.push_back(pos.at(s.id()));
      if (opens(op_[i])) {
        range_of_[i] = int(ranges_.size());
        ranges_.push_back(int(i));
      }
    }
    src_begin_.push_back(srcs_.size());
    closer_.assign(ranges_.size(), -1);
  }

  // required_[i]: blocks node i sits in whether or not it depends on them. An END runs its
  // body once for every iteration of its ranges and an ENDIF under its IF, so their body
  // effects (through GROUPs, and nested ENDs and ENDIFs with their IFs) are inside what
  // those close, even an effect that reads nothing of the loop or the condition.
  void compute_required() {
    required_.assign(order_.size(), 0);
    for (int i = int(order_.size()) - 1; i >= 0; --i) {
      Op op = op_[size_t(i)];
      int inherited = required_[size_t(i)];
      auto require = [&](int v, int blocks) {
        required_[size_t(v)] = scopes_.merge(required_[size_t(v)], blocks);
      };
      if (op == Op::GROUP)
        for (int v : srcs(i)) require(v, inherited);
      if (!closes(op)) continue;
      int own = inherited;
      for (int v : closed(i)) own = scopes_.merge(own, scopes_.single(range_of_[size_t(v)]));
      std::span<const int> body = op == Op::END ? srcs(i).subspan(0, 1) : srcs(i).subspan(1);
      for (int v : body) require(v, own);
      if (op == Op::ENDIF) require(srcs(i)[0], inherited);
    }
  }

  // deps_[i]: the ranges node i depends on, through sources (an END removes the ranges
  // it closes), and those it is required to sit in.
  void compute_deps() {
    deps_.resize(order_.size());
    for (int i = 0; i < int(order_.size()); ++i) {
      Op op = op_[size_t(i)];
      int s = required_[size_t(i)];
      for (int v : srcs(i)) s = scopes_.merge(s, deps_[size_t(v)]);
      if (opens(op)) s = scopes_.merge(s, scopes_.single(range_of_[size_t(i)]));
      if (closes(op))
        for (int v : closed(i)) {
          int r = range_of_[size_t(v)];
          if (closer_[size_t(r)] >= 0)
            fail(order_[size_t(i)],
                 op == Op::END ? "a RANGE is closed by one END" : "an IF is closed by one ENDIF",
                 block_name(r) + " is also closed by another " + op_name(op));
          closer_[size_t(r)] = i;
          s = scopes_.minus(s, scopes_.single(r));
        }
      deps_[size_t(i)] = s;
    }
    for (size_t r = 0; r < ranges_.size(); ++r)
      if (closer_[r] < 0) {
        bool loop = range(int(r)).op() == Op::RANGE;
        fail(range(int(r)),
             loop ? "every RANGE is closed by an END" : "every IF is closed by an ENDIF",
             loop ? "no END closes it" : "no ENDIF closes it");
      }
  }

  // chain_[r]: r and every range it nests in.
  void compute_nesting() {
    chain_.assign(ranges_.size(), 0);
    std::vector<int> state(ranges_.size(), 0);  // 0 new, 1 in progress, 2 done
    for (size_t r = 0; r < ranges_.size(); ++r) chain_of(int(r), state);
  }
  int chain_of(int r, std::vector<int>& state) {
    if (state[size_t(r)] == 2) return chain_[size_t(r)];
    if (state[size_t(r)] == 1) fail(range(r), "ranges nest", "its nesting is circular");
    state[size_t(r)] = 1;
    int e = closer_[size_t(r)];
    std::vector<int> together;
    for (int v : closed(e)) together.push_back(range_of_[size_t(v)]);
    if (together.size() > 1)  // ranges of one END
      std::sort(together.begin(), together.end(), [&](int a, int b) {
        AxisArg x = range(a).axis(), y = range(b).axis();
        return x.kind != y.kind ? x.kind < y.kind : x.id < y.id;
      });
    int outer = 0;
    for (int o : scopes_[deps_[size_t(e)]]) outer = scopes_.merge(outer, chain_of(o, state));
    for (int c : together) {
      if (c == r) break;
      outer = scopes_.merge(outer, chain_of(c, state));
    }
    chain_[size_t(r)] = scopes_.merge(outer, scopes_.single(r));
    state[size_t(r)] = 2;
    return chain_[size_t(r)];
  }

  // scope_[i]: the ranges open around node i when it runs.
  void compute_placement() {
    scope_.resize(order_.size());
    std::unordered_map<int, int> placed;  // the ranges an op needs -> its scope
    for (int i = 0; i < int(order_.size()); ++i) {
      int want = deps_[size_t(i)];
      if (closes(op_[size_t(i)]))
        for (int v : closed(i)) want = scopes_.merge(want, scopes_.single(range_of_[size_t(v)]));
      auto [it, fresh] = placed.emplace(want, 0);
      if (fresh) it->second = innermost_chain(i, want);
      int s = it->second;
      if (opens(op_[size_t(i)])) s = scopes_.minus(s, scopes_.single(range_of_[size_t(i)]));
      scope_[size_t(i)] = s;
    }
  }
  // The chain of the innermost range in `want`, which must hold all of `want`.
  int innermost_chain(int i, int want) {
    const Scope& w = scopes_[want];
    int inner = -1;
    for (int r : w)
      if (inner < 0 || chain_size(r) > chain_size(inner)) inner = r;
    int s = inner < 0 ? 0 : chain_[size_t(inner)];
    if (!std::includes(scopes_[s].begin(), scopes_[s].end(), w.begin(), w.end()))
      fail(order_[size_t(i)], "the ranges an op depends on nest",
           "it depends on " + range_names(want) + ", which are not all inside one another");
    return s;
  }
  size_t chain_size(int r) const { return scopes_[chain_[size_t(r)]].size(); }

  // Data edges, plus: a value used inside a range it is not in must come before that
  // range opens (it cannot be computed while the loop runs). Successors are stored flat,
  // node by node.
  void add_edges() {
    std::vector<std::pair<int, int>> edges;
    std::vector<int> seen_by(order_.size(), -1);  // dedups a node's repeated sources
    for (int i = 0; i < int(order_.size()); ++i)
      for (int v : srcs(i)) {
        if (std::exchange(seen_by[size_t(v)], i) == i) continue;
        edges.emplace_back(v, i);
        int inside =
            opens(op_[size_t(v)]) ? chain_[size_t(range_of_[size_t(v)])] : scope_[size_t(v)];
        for (int r : scopes_[scopes_.minus(scope_[size_t(i)], inside)])
          if (ranges_[size_t(r)] != v) edges.emplace_back(v, ranges_[size_t(r)]);
      }
    succ_begin_.assign(order_.size() + 1, 0);
    preds_.assign(order_.size(), 0);
    for (auto [from, to] : edges) {
      ++succ_begin_[size_t(from) + 1];
      ++preds_[size_t(to)];
    }
    std::partial_sum(succ_begin_.begin(), succ_begin_.end(), succ_begin_.begin());
    succ_.resize(edges.size());
    std::vector<size_t> fill(succ_begin_.begin(), succ_begin_.end() - 1);
    for (auto [from, to] : edges) succ_[fill[size_t(from)]++] = to;
  }

  void emit_all() {
    program_.reserve(order_.size());
    ready_.assign(order_.size(), false);
    plain_.resize(scopes_.size());
    ranges_ready_.resize(scopes_.size());
    open_scope_ = {0};
    for (int i = 0; i < int(order_.size()); ++i)
      if (preds_[size_t(i)] == 0) make_ready(i);
    for (size_t emitted = 0; emitted < order_.size(); ++emitted) {
      int pick = next();
      if (pick < 0) stuck();
      emit(pick);
    }
  }
  void make_ready(int i) {
    ready_[size_t(i)] = true;
    Op op = op_[size_t(i)];
    if (!closes(op)) (opens(op) ? ranges_ready_ : plain_)[size_t(scope_[size_t(i)])].push(i);
  }
  // The op to emit next, or -1 when none is emittable.
  int next() {
    int open = open_scope_.back();
    // A scope first seen as the open one has no ops waiting for it.
    bool known = size_t(open) < plain_.size();
    if (known && !plain_[size_t(open)].empty()) return pop(plain_[size_t(open)]);
    if (!open_.empty()) {
      int e = closer_[size_t(open_.back())];
      if (ready_[size_t(e)] && scope_[size_t(e)] == open && closes_innermost(e)) return e;
    }
    if (known && !ranges_ready_[size_t(open)].empty()) return pop(ranges_ready_[size_t(open)]);
    return -1;
  }
  static int pop(MinHeap& heap) {
    int i = heap.top();
    heap.pop();
    return i;
  }
  // Whether the innermost open ranges are those END e closes (its scope, the open one,
  // holds them all, so there are at least as many open).
  bool closes_innermost(int e) const {
    size_t n = closed(e).size();
    for (size_t k = 0; k < n; ++k)
      if (closer_[size_t(open_[open_.size() - 1 - k])] != e) return false;
    return true;
  }
  void emit(int i) {
    ready_[size_t(i)] = false;
    if (opens(op_[size_t(i)])) {
      int r = range_of_[size_t(i)];
      open_.push_back(r);
      open_scope_.push_back(scopes_.merge(open_scope_.back(), scopes_.single(r)));
    }
    if (closes(op_[size_t(i)])) {
      open_.resize(open_.size() - closed(i).size());
      open_scope_.resize(open_.size() + 1);
    }
    program_.push_back(order_[size_t(i)]);
    for (size_t k = succ_begin_[size_t(i)]; k < succ_begin_[size_t(i) + 1]; ++k)
      if (--preds_[size_t(succ_[k])] == 0) make_ready(succ_[k]);
  }

  // Reports the first ready op in graph order, plain ops before ENDs before RANGEs (the
  // order in which next() tries them).
  [[noreturn]] void stuck() {
    for (int cls = 0; cls < 3; ++cls)
      for (size_t i = 0; i < order_.size(); ++i)
        if (ready_[i] && op_class(op_[i]) == cls)
          fail(order_[i], "every op can be placed inside the ranges it depends on",
               "it needs " + range_names(scope_[i]) + " open, which the ENDs do not allow");
    fail(sink_, "the graph has a schedule", "no op is ready: the ordering is circular");
  }
  static int op_class(Op op) { return closes(op) ? 1 : opens(op) ? 2 : 0; }

  UOp sink_;
  std::vector<UOp> order_;
  std::vector<Op> op_;
  std::vector<size_t> src_begin_;  // node i's sources are srcs_[src_begin_[i], src_begin_[i+1])
  std::vector<int> srcs_;
  std::vector<int> range_of_;  // a RANGE node's index in ranges_, else -1
  std::vector<int> ranges_;    // the RANGE nodes, in graph order
  std::vector<int> closer_;    // the END closing each range
  ScopeTable scopes_;
  std::vector<int> required_, deps_, chain_, scope_;  // scope ids
  std::vector<size_t> succ_begin_;  // node i's successors are succ_[succ_begin_[i], ...[i+1])
  std::vector<int> succ_, preds_;
  std::vector<bool> ready_;                    // ready and not yet emitted
  std::vector<MinHeap> plain_, ranges_ready_;  // ready ops by scope, but ENDs
  std::vector<int> open_;                      // open ranges, outermost first
  std::vector<int> open_scope_;                // scope ids of open_'s prefixes
  std::vector<UOp> program_;
};

}  // namespace

LinearProgram linearize(const UOp& sink) {
  if (!sink || sink.op() != Op::SINK)
    throw IrError("linearize: the root must be a SINK, got " +
                  (sink ? op_name(sink.op()) : std::string("null")));
  std::vector<UOp> order = toposort(sink);
  verify(sink, order);
  return Linearizer(sink, std::move(order)).run();
}

std::string print_program(const LinearProgram& p) {
  std::unordered_map<const void*, size_t> names;
  std::string out;
  int depth = 0;
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const UOp& u = p.ops[i];
    names.emplace(u.id(), i);
    if (u.op() == Op::END) depth -= int(u.src().size()) - 1;
    if (u.op() == Op::ENDIF) --depth;
    std::string line =
        std::string(2 * size_t(depth + 1), ' ') + "%" + std::to_string(i) + " = " + op_name(u.op());
    if (!u.src().empty()) {
      line += "(";
      for (size_t k = 0; k < u.src().size(); ++k)
        line += (k ? ", %" : "%") + std::to_string(names.at(u.src(k).id()));
      line += ")";
    }
    std::string arg = arg_to_string(u.arg(), u.dtype());
    if (!arg.empty()) line += " [" + arg + "]";
    out += line + " : " + std::string(u.dtype().name()) + "\n";
    if (u.op() == Op::RANGE || u.op() == Op::IF) ++depth;
  }
  return out;
}

}  // namespace kitten
