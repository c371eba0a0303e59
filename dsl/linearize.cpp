#include "dsl/linearize.h"

#include <algorithm>
#include <set>
#include <unordered_map>

#include "dsl/printer.h"
#include "dsl/verify.h"

namespace kitten {

namespace {

using Scope = std::vector<int>;  // sorted indices of the ranges a node sits in

Scope merge(const Scope& a, const Scope& b) {
  Scope out;
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

// Ranges nest: a range sits inside the ranges still open around the END that closes it,
// and ranges closed by one END nest in order of axis kind (global outermost), then id. An
// op sits in the innermost range it depends on, and so inside that range's whole chain.
class Linearizer {
 public:
  explicit Linearizer(const UOp& sink) : sink_(sink), order_(toposort(sink)) {}

  LinearProgram run() {
    index_nodes();
    compute_deps();
    compute_nesting();
    compute_placement();
    add_edges();
    emit_all();
    return {sink_.name_arg(), std::move(program_)};
  }

 private:
  [[noreturn]] void fail(const UOp& u, const std::string& rule, const std::string& detail) {
    throw ir_error(u, "linearize: " + rule, detail, sink_);
  }
  std::string range_names(const Scope& s) const {
    std::string out;
    for (int r : s) out += " r" + std::to_string(ranges_[r].axis().id);
    return "{" + out + " }";
  }

  void index_nodes() {
    for (size_t i = 0; i < order_.size(); ++i) {
      pos_.emplace(order_[i].id(), int(i));
      if (order_[i].op() == Op::RANGE) {
        range_index_.emplace(order_[i].id(), int(ranges_.size()));
        ranges_.push_back(order_[i]);
      }
    }
    closer_.assign(ranges_.size(), -1);
  }

  // deps_[i]: the ranges node i depends on, through sources (an END removes the ranges
  // it closes).
  void compute_deps() {
    deps_.resize(order_.size());
    for (size_t i = 0; i < order_.size(); ++i) {
      const UOp& u = order_[i];
      if (u.op() == Op::IF || u.op() == Op::ENDIF)
        fail(u, "IF and ENDIF are not linearized yet", "gate the loads and stores instead");
      Scope s;
      for (const UOp& src : u.src()) s = merge(s, deps_[pos_.at(src.id())]);
      if (u.op() == Op::RANGE) s = merge(s, {range_index_.at(u.id())});
      if (u.op() == Op::END) {
        for (size_t k = 1; k < u.src().size(); ++k) {
          int r = range_index_.at(u.src(k).id());
          if (closer_[r] >= 0)
            fail(u, "a RANGE is closed by one END",
                 "r" + std::to_string(ranges_[r].axis().id) + " is also closed by another END");
          closer_[r] = int(i);
          std::erase(s, r);
        }
      }
      deps_[i] = std::move(s);
    }
    for (size_t r = 0; r < ranges_.size(); ++r)
      if (closer_[r] < 0) fail(ranges_[r], "every RANGE is closed by an END", "no END closes it");
  }

  // chain_[r]: r and every range it nests in.
  void compute_nesting() {
    outer_.assign(ranges_.size(), {});
    chain_.assign(ranges_.size(), {});
    std::vector<int> state(ranges_.size(), 0);  // 0 new, 1 in progress, 2 done
    for (size_t r = 0; r < ranges_.size(); ++r) chain_of(int(r), state);
  }
  const Scope& chain_of(int r, std::vector<int>& state) {
    if (state[r] == 2) return chain_[r];
    if (state[r] == 1) fail(ranges_[r], "ranges nest", "its nesting is circular");
    state[r] = 1;
    const UOp& e = order_[closer_[r]];
    std::vector<int> closed;
    for (size_t k = 1; k < e.src().size(); ++k) closed.push_back(range_index_.at(e.src(k).id()));
    std::sort(closed.begin(), closed.end(), [&](int a, int b) {
      AxisArg x = ranges_[a].axis(), y = ranges_[b].axis();
      return x.kind != y.kind ? x.kind < y.kind : x.id < y.id;
    });
    Scope outer;
    for (int o : deps_[closer_[r]]) outer = merge(outer, chain_of(o, state));
    for (int c : closed) {
      if (c == r) break;
      outer = merge(outer, chain_of(c, state));
    }
    outer_[r] = outer;
    chain_[r] = merge(outer, {r});
    state[r] = 2;
    return chain_[r];
  }

  // scope_[i]: the ranges open around node i when it runs.
  void compute_placement() {
    scope_.resize(order_.size());
    for (size_t i = 0; i < order_.size(); ++i) {
      const UOp& u = order_[i];
      Scope want = deps_[i];
      if (u.op() == Op::END)
        for (size_t k = 1; k < u.src().size(); ++k)
          want = merge(want, {range_index_.at(u.src(k).id())});
      Scope s;
      int inner = -1;
      for (int r : want)
        if (inner < 0 || chain_[r].size() > chain_[inner].size()) inner = r;
      if (inner >= 0) s = chain_[inner];
      if (!std::includes(s.begin(), s.end(), want.begin(), want.end()))
        fail(u, "the ranges an op depends on nest",
             "it depends on " + range_names(want) + ", which are not all inside one another");
      if (u.op() == Op::RANGE) std::erase(s, range_index_.at(u.id()));
      scope_[i] = std::move(s);
    }
  }

  // Data edges, plus: a value used inside a range it is not in must come before that
  // range opens (it cannot be computed while the loop runs).
  void add_edges() {
    succ_.assign(order_.size(), {});
    preds_.assign(order_.size(), 0);
    auto edge = [&](int from, int to) {
      succ_[from].push_back(to);
      ++preds_[to];
    };
    for (size_t i = 0; i < order_.size(); ++i) {
      std::set<int> seen;
      for (const UOp& src : order_[i].src()) {
        int v = pos_.at(src.id());
        if (!seen.insert(v).second) continue;
        edge(v, int(i));
        Scope inside = scope_[v];
        if (order_[v].op() == Op::RANGE) inside = chain_[range_index_.at(order_[v].id())];
        for (int r : scope_[i])
          if (!std::binary_search(inside.begin(), inside.end(), r)) {
            int open = pos_.at(ranges_[r].id());
            if (open != v) edge(v, open);
          }
      }
    }
  }

  bool emittable(int i) const {
    Scope open_sorted = open_;
    std::sort(open_sorted.begin(), open_sorted.end());
    if (scope_[i] != open_sorted) return false;
    const UOp& u = order_[i];
    if (u.op() != Op::END) return true;
    size_t n = u.src().size() - 1;  // the ranges it closes must be the innermost open ones
    for (size_t k = 0; k < n; ++k) {
      int r = open_[open_.size() - 1 - k];
      bool closes = false;
      for (size_t j = 1; j <= n; ++j) closes |= range_index_.at(u.src(j).id()) == r;
      if (!closes) return false;
    }
    return true;
  }

  void emit_all() {
    std::set<int> ready[3];  // 0: plain ops, 1: END, 2: RANGE; each in graph order
    auto kind = [&](int i) {
      return order_[i].op() == Op::END ? 1 : order_[i].op() == Op::RANGE ? 2 : 0;
    };
    for (size_t i = 0; i < order_.size(); ++i)
      if (preds_[i] == 0) ready[kind(int(i))].insert(int(i));
    for (size_t emitted = 0; emitted < order_.size(); ++emitted) {
      int pick = -1;
      for (auto& set : ready) {
        for (int i : set)
          if (emittable(i)) {
            pick = i;
            break;
          }
        if (pick >= 0) {
          set.erase(pick);
          break;
        }
      }
      if (pick < 0) stuck(ready);
      const UOp& u = order_[pick];
      if (u.op() == Op::RANGE) open_.push_back(range_index_.at(u.id()));
      if (u.op() == Op::END) open_.resize(open_.size() - (u.src().size() - 1));
      program_.push_back(u);
      for (int s : succ_[pick])
        if (--preds_[s] == 0) ready[kind(s)].insert(s);
    }
  }

  [[noreturn]] void stuck(const std::set<int> (&ready)[3]) {
    for (const auto& set : ready)
      for (int i : set)
        fail(order_[i], "every op can be placed inside the ranges it depends on",
             "it needs " + range_names(scope_[i]) + " open, which the ENDs do not allow");
    fail(sink_, "the graph has a schedule", "no op is ready: the ordering is circular");
  }

  UOp sink_;
  std::vector<UOp> order_;
  std::unordered_map<const void*, int> pos_, range_index_;
  std::vector<UOp> ranges_;
  std::vector<int> closer_;
  std::vector<Scope> deps_, outer_, chain_, scope_;
  std::vector<std::vector<int>> succ_;
  std::vector<int> preds_;
  std::vector<int> open_;  // open ranges, outermost first
  std::vector<UOp> program_;
};

}  // namespace

LinearProgram linearize(const UOp& sink) {
  if (!sink || sink.op() != Op::SINK)
    throw IrError("linearize: the root must be a SINK, got " +
                  (sink ? op_name(sink.op()) : std::string("null")));
  verify(sink);
  return Linearizer(sink).run();
}

std::string print_program(const LinearProgram& p) {
  std::unordered_map<const void*, size_t> names;
  std::string out;
  int depth = 0;
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const UOp& u = p.ops[i];
    names.emplace(u.id(), i);
    if (u.op() == Op::END) depth -= int(u.src().size()) - 1;
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
    if (u.op() == Op::RANGE) ++depth;
  }
  return out;
}

}  // namespace kitten
