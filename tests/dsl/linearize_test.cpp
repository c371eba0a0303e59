#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <span>
#include <sstream>
#include <unordered_map>

#include "dsl/linearize.h"
#include "dsl/printer.h"
#include "dsl/verify.h"
#include "kernels/examples.h"

namespace kitten {
namespace {

// Position of the first op in the program satisfying pred.
template <class P>
size_t find_op(const LinearProgram& p, P pred) {
  auto it = std::find_if(p.ops.begin(), p.ops.end(), pred);
  EXPECT_NE(it, p.ops.end());
  return size_t(it - p.ops.begin());
}
auto is_range(int64_t id) {
  return [id](const UOp& u) { return u.op() == Op::RANGE && u.axis().id == id; };
}
auto is_op(Op op) {
  return [op](const UOp& u) { return u.op() == op; };
}

// Depth of block nesting (loops and IFs) at each op.
std::vector<int> depths(const LinearProgram& p) {
  std::vector<int> d;
  int depth = 0;
  for (const UOp& u : p.ops) {
    if (u.op() == Op::END) depth -= int(u.src().size()) - 1;
    if (u.op() == Op::ENDIF) --depth;
    d.push_back(depth);
    if (u.op() == Op::RANGE || u.op() == Op::IF) ++depth;
  }
  return d;
}

// The linearizer as first written (plus the rule that an END's body effects sit inside its
// ranges): every scope a sorted vector and the open ranges compared at every step against
// every ready op. Slow, but short enough
// to check by eye; the fast linearizer must match it, program and errors alike.
namespace reference {

using Scope = std::vector<int>;

Scope merge(const Scope& a, const Scope& b) {
  Scope out;
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

class Linearizer {
 public:
  explicit Linearizer(const UOp& sink) : sink_(sink), order_(toposort(sink)) {}

  LinearProgram run() {
    for (size_t i = 0; i < order_.size(); ++i) {
      pos_.emplace(order_[i].id(), int(i));
      if (order_[i].op() == Op::RANGE) {
        range_index_.emplace(order_[i].id(), int(ranges_.size()));
        ranges_.push_back(order_[i]);
      }
    }
    closer_.assign(ranges_.size(), -1);
    compute_deps();
    chain_.assign(ranges_.size(), {});
    std::vector<int> state(ranges_.size(), 0);
    for (size_t r = 0; r < ranges_.size(); ++r) chain_of(int(r), state);
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
    for (int r : s) out += " r" + std::to_string(ranges_[size_t(r)].axis().id);
    return "{" + out + " }";
  }
  int range_of(const UOp& u) const { return range_index_.at(u.id()); }

  // The ranges an END's body effects sit in even when they do not depend on them (the
  // body runs once per iteration), passed down through GROUPs and nested ENDs.
  void compute_required() {
    required_.assign(order_.size(), {});
    for (size_t i = order_.size(); i-- > 0;) {
      const UOp& u = order_[i];
      auto require = [&](const UOp& v, const Scope& s) {
        Scope& r = required_[size_t(pos_.at(v.id()))];
        r = merge(r, s);
      };
      if (u.op() == Op::GROUP)
        for (const UOp& v : u.src()) require(v, required_[i]);
      if (u.op() != Op::END) continue;
      Scope own = required_[i];
      for (size_t k = 1; k < u.src().size(); ++k) own = merge(own, {range_of(u.src(k))});
      std::sort(own.begin(), own.end());
      require(u.src(0), own);
    }
  }

  void compute_deps() {
    compute_required();
    deps_.resize(order_.size());
    for (size_t i = 0; i < order_.size(); ++i) {
      const UOp& u = order_[i];
      if (u.op() == Op::IF || u.op() == Op::ENDIF)
        fail(u, "IF and ENDIF are not linearized yet", "gate the loads and stores instead");
      Scope s = required_[i];
      for (const UOp& src : u.src()) s = merge(s, deps_[size_t(pos_.at(src.id()))]);
      if (u.op() == Op::RANGE) s = merge(s, {range_of(u)});
      if (u.op() == Op::END)
        for (size_t k = 1; k < u.src().size(); ++k) {
          int r = range_of(u.src(k));
          if (closer_[size_t(r)] >= 0)
            fail(u, "a RANGE is closed by one END",
                 "r" + std::to_string(ranges_[size_t(r)].axis().id) +
                     " is also closed by another END");
          closer_[size_t(r)] = int(i);
          std::erase(s, r);
        }
      deps_[i] = std::move(s);
    }
    for (size_t r = 0; r < ranges_.size(); ++r)
      if (closer_[r] < 0) fail(ranges_[r], "every RANGE is closed by an END", "no END closes it");
  }

  const Scope& chain_of(int r, std::vector<int>& state) {
    if (state[size_t(r)] == 2) return chain_[size_t(r)];
    if (state[size_t(r)] == 1) fail(ranges_[size_t(r)], "ranges nest", "its nesting is circular");
    state[size_t(r)] = 1;
    const UOp& e = order_[size_t(closer_[size_t(r)])];
    std::vector<int> closed;
    for (size_t k = 1; k < e.src().size(); ++k) closed.push_back(range_of(e.src(k)));
    std::sort(closed.begin(), closed.end(), [&](int a, int b) {
      AxisArg x = ranges_[size_t(a)].axis(), y = ranges_[size_t(b)].axis();
      return x.kind != y.kind ? x.kind < y.kind : x.id < y.id;
    });
    Scope outer;
    for (int o : deps_[size_t(closer_[size_t(r)])]) outer = merge(outer, chain_of(o, state));
    for (int c : closed) {
      if (c == r) break;
      outer = merge(outer, chain_of(c, state));
    }
    chain_[size_t(r)] = merge(outer, {r});
    state[size_t(r)] = 2;
    return chain_[size_t(r)];
  }

  void compute_placement() {
    scope_.resize(order_.size());
    for (size_t i = 0; i < order_.size(); ++i) {
      const UOp& u = order_[i];
      Scope want = deps_[i];
      if (u.op() == Op::END)
        for (size_t k = 1; k < u.src().size(); ++k) want = merge(want, {range_of(u.src(k))});
      Scope s;
      int inner = -1;
      for (int r : want)
        if (inner < 0 || chain_[size_t(r)].size() > chain_[size_t(inner)].size()) inner = r;
      if (inner >= 0) s = chain_[size_t(inner)];
      if (!std::includes(s.begin(), s.end(), want.begin(), want.end()))
        fail(u, "the ranges an op depends on nest",
             "it depends on " + range_names(want) + ", which are not all inside one another");
      if (u.op() == Op::RANGE) std::erase(s, range_of(u));
      scope_[i] = std::move(s);
    }
  }

  void add_edges() {
    succ_.assign(order_.size(), {});
    preds_.assign(order_.size(), 0);
    auto edge = [&](int from, int to) {
      succ_[size_t(from)].push_back(to);
      ++preds_[size_t(to)];
    };
    for (size_t i = 0; i < order_.size(); ++i) {
      std::set<int> seen;
      for (const UOp& src : order_[i].src()) {
        int v = pos_.at(src.id());
        if (!seen.insert(v).second) continue;
        edge(v, int(i));
        Scope inside = scope_[size_t(v)];
        if (src.op() == Op::RANGE) inside = chain_[size_t(range_of(src))];
        for (int r : scope_[i])
          if (!std::binary_search(inside.begin(), inside.end(), r)) {
            int open = pos_.at(ranges_[size_t(r)].id());
            if (open != v) edge(v, open);
          }
      }
    }
  }

  bool emittable(int i) const {
    Scope open_sorted = open_;
    std::sort(open_sorted.begin(), open_sorted.end());
    if (scope_[size_t(i)] != open_sorted) return false;
    const UOp& u = order_[size_t(i)];
    if (u.op() != Op::END) return true;
    size_t n = u.src().size() - 1;
    for (size_t k = 0; k < n; ++k) {
      int r = open_[open_.size() - 1 - k];
      bool closes = false;
      for (size_t j = 1; j <= n; ++j) closes |= range_of(u.src(j)) == r;
      if (!closes) return false;
    }
    return true;
  }

  void emit_all() {
    std::set<int> ready[3];
    auto kind = [&](int i) {
      Op op = order_[size_t(i)].op();
      return op == Op::END ? 1 : op == Op::RANGE ? 2 : 0;
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
      if (pick < 0) {
        for (const auto& set : ready)
          for (int i : set)
            fail(order_[size_t(i)], "every op can be placed inside the ranges it depends on",
                 "it needs " + range_names(scope_[size_t(i)]) +
                     " open, which the ENDs do not allow");
        fail(sink_, "the graph has a schedule", "no op is ready: the ordering is circular");
      }
      const UOp& u = order_[size_t(pick)];
      if (u.op() == Op::RANGE) open_.push_back(range_of(u));
      if (u.op() == Op::END) open_.resize(open_.size() - (u.src().size() - 1));
      program_.push_back(u);
      for (int s : succ_[size_t(pick)])
        if (--preds_[size_t(s)] == 0) ready[kind(s)].insert(s);
    }
  }

  UOp sink_;
  std::vector<UOp> order_;
  std::unordered_map<const void*, int> pos_, range_index_;
  std::vector<UOp> ranges_;
  std::vector<int> closer_;
  std::vector<Scope> required_, deps_, chain_, scope_;
  std::vector<std::vector<int>> succ_;
  std::vector<int> preds_;
  std::vector<int> open_;
  std::vector<UOp> program_;
};

LinearProgram linearize(const UOp& sink) {
  verify(sink);
  return Linearizer(sink).run();
}

}  // namespace reference

// Random kernels of the shapes the lowering produces: loops nested up to three deep and
// side by side, ENDs closing one or two ranges (of random axis kinds), ALU chains, loads,
// stores, register accumulators and buffers ordered by AFTER. A few are malformed on
// purpose (a value used outside its loop, a range no END closes), so that the errors are
// compared too.
class RandomKernel {
 public:
  explicit RandomKernel(unsigned seed) : rng_(seed) {}

  UOp build() {
    std::vector<UOp> effects = region({}, {const_(f_, 1.0)}, {const_int(dtypes::int32, 0)});
    return UOp::make(Op::SINK, std::span<const UOp>(effects), "random");
  }

 private:
  int roll(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  const UOp& pick(const std::vector<UOp>& v) { return v[size_t(roll(int(v.size())))]; }
  UOp effect_of(const std::vector<UOp>& effects) {
    if (effects.size() == 1) return effects[0];
    return UOp::make(Op::GROUP, std::span<const UOp>(effects));
  }

  // The effects of a block in which `open` are open; vals and idx are the float and int
  // values it may use.
  std::vector<UOp> region(const std::vector<UOp>& open, std::vector<UOp> vals,
                          std::vector<UOp> idx) {
    std::vector<UOp> effects;
    for (int n = 2 + roll(7); n > 0; --n) {
      int item = roll(open.size() < 3 ? 10 : 8);  // loops up to three deep
      if (item < 3) {
        vals.push_back(alu(roll(2) ? Op::ADD : Op::MUL, pick(vals), pick(vals)));
      } else if (item < 5) {
        idx.push_back(pick(idx) * (1 + roll(4)) + pick(idx));
        vals.push_back(load(index(x_, idx.back())));
      } else if (item == 5) {
        UOp dep = pick(effects.empty() ? vals : effects);
        vals.push_back(load(index(after(out_, {dep}), pick(idx))));
      } else if (item == 6) {
        vals.push_back(accumulate(open, vals, idx));
      } else if (item == 7) {
        effects.push_back(store(index(out_, pick(idx)), pick(vals)));
      } else {
        effects.push_back(loop(open, vals, idx));
        if (roll(3) == 0) vals.push_back(load(index(after(x_, {effects.back()}), pick(idx))));
      }
    }
    effects.push_back(store(index(out_, pick(idx)), vals.back()));
    malform(effects, vals, idx);
    return effects;
  }
  // Now and then a value of one block stored in a later one (an error where the first
  // block's loop has closed), or a range that no END closes.
  void malform(std::vector<UOp>& effects, const std::vector<UOp>& vals,
               const std::vector<UOp>& idx) {
    if (roll(4) == 0) leaked_.push_back(vals.back());
    if (!leaked_.empty() && roll(6) == 0)
      effects.push_back(store(index(out_, pick(idx)), pick(leaked_)));
    if (roll(100) == 0)
      effects.push_back(store(index(out_, range(4, next_id_++, AxisKind::Loop)), vals.back()));
  }

  UOp new_range() {
    static constexpr AxisKind kinds[] = {AxisKind::Global, AxisKind::Loop, AxisKind::Reduce};
    return range(2 + roll(3), next_id_++, kinds[roll(3)]);
  }

  // One or two new ranges around a block, closed by one END or by two nested ones.
  UOp loop(const std::vector<UOp>& open, const std::vector<UOp>& vals, std::vector<UOp> idx) {
    std::vector<UOp> inner = open, fresh{new_range()};
    if (roll(3) == 0) fresh.push_back(new_range());
    for (const UOp& r : fresh) {
      inner.push_back(r);
      idx.push_back(r);
    }
    UOp body = effect_of(region(inner, vals, idx));
    if (fresh.size() == 1) return end(body, {fresh[0]});
    if (roll(2)) return end(body, {fresh[0], fresh[1]});
    return end(end(body, {fresh[1]}), {fresh[0]});
  }

  // A register accumulator reset in this block, updated in a new loop, read after it.
  UOp accumulate(const std::vector<UOp>& open, const std::vector<UOp>& vals,
                 const std::vector<UOp>& idx) {
    UOp acc = define_reg(f_, 1, next_slot_++), zero = const_int(dtypes::int32, 0);
    std::vector<UOp> reset_after{acc};
    reset_after.insert(reset_after.end(), open.begin(), open.end());
    UOp at = open.empty() ? acc : UOp::make(Op::AFTER, std::span<const UOp>(reset_after));
    UOp init = store(index(at, zero), const_(f_, 0.0));
    UOp r = new_range();
    UOp in_loop = after(acc, {init, r});
    UOp v = load(index(x_, pick(idx) + r));
    UOp update = store(index(in_loop, zero), load(index(in_loop, zero)) + v * pick(vals));
    UOp done = end(update, {r});
    return load(index(after(acc, {done}), zero));
  }

  std::mt19937 rng_;
  DType f_ = dtypes::float32;
  UOp out_ = param(0, f_.ptr()), x_ = param(1, f_.ptr());
  int64_t next_id_ = 0, next_slot_ = 0;
  std::vector<UOp> leaked_;  // values of earlier blocks, for malform() to store later
};

// A program as text, or the error that linearizing threw.
template <class F>
std::string outcome(F linearize_fn, const UOp& sink) {
  try {
    return print_program(linearize_fn(sink));
  } catch (const IrError& e) {
    return std::string("error: ") + e.what();
  }
}

TEST(Linearize, MatchesTheReferenceOnRandomKernels) {
  int valid = 0;
  for (unsigned seed = 0; seed < 600; ++seed) {
    UOp k = RandomKernel(seed).build();
    std::string want = outcome(reference::linearize, k);
    ASSERT_EQ(outcome(linearize, k), want) << "seed " << seed;
    valid += want.rfind("error: ", 0) != 0;
  }
  EXPECT_GT(valid, 300);  // most are well formed
}

TEST(Linearize, MatmulNestsAndPlacesTheAccumulator) {
  LinearProgram p = linearize(matmul_kernel(8, 8, 8, dtypes::float32));
  EXPECT_EQ(p.name, "matmul");
  size_t i = find_op(p, is_range(0)), j = find_op(p, is_range(1)), k = find_op(p, is_range(2));
  EXPECT_LT(i, j);
  EXPECT_LT(j, k);
  std::vector<int> d = depths(p);
  // The accumulator's reset store sits in (i, j), before the reduce loop opens.
  size_t init =
      find_op(p, [](const UOp& u) { return u.op() == Op::STORE && u.src(1).op() == Op::CONST; });
  EXPECT_GT(init, j);
  EXPECT_LT(init, k);
  EXPECT_EQ(d[init], 2);
  // The reduce loop closes, then the result is read and stored at depth 2.
  size_t end_k = find_op(p, [](const UOp& u) { return u.op() == Op::END && u.src().size() == 2; });
  EXPECT_EQ(d[end_k], 2);
  size_t out_store = p.ops.size() - 3;  // STORE, END(i, j), SINK
  EXPECT_EQ(p.ops[out_store].op(), Op::STORE);
  EXPECT_GT(out_store, end_k);
  EXPECT_EQ(d[out_store], 2);
  EXPECT_EQ(p.ops.back().op(), Op::SINK);
  // Loop-invariant: i*8 is computed in loop i, outside loop j.
  size_t row = find_op(p, [&](const UOp& u) { return u.op() == Op::MUL && u.src(0) == p.ops[i]; });
  EXPECT_GT(row, i);
  EXPECT_LT(row, j);
  // Constants and parameters stay outside every loop.
  for (size_t n = 0; n < p.ops.size(); ++n) {
    if (p.ops[n].op() == Op::CONST || p.ops[n].op() == Op::PARAM) {
      EXPECT_EQ(d[n], 0);
    }
  }
}

TEST(Linearize, AfterOrdersTheSecondLoopAfterTheFirst) {
  LinearProgram p = linearize(inplace_update_kernel(5));
  size_t end_first = find_op(p, is_op(Op::END));
  size_t second = find_op(p, is_range(1));
  size_t after = find_op(p, is_op(Op::AFTER));
  EXPECT_LT(end_first, after);
  EXPECT_LT(after, second);
}

TEST(Linearize, IsDeterministic) {
  UOp k = sum_and_squares_kernel(4, 9);
  EXPECT_EQ(print_program(linearize(k)), print_program(linearize(k)));
}

// Each printed line is indented two spaces per open block, and names its sources by the
// lines that define them.
TEST(Linearize, PrintIndentsLoopBodies) {
  LinearProgram p = linearize(stencil_kernel(7));
  std::string s = print_program(p);
  std::vector<int> d = depths(p);
  std::istringstream lines(s);
  std::string line;
  for (size_t i = 0; std::getline(lines, line); ++i) {
    ASSERT_LT(i, p.ops.size());
    size_t indent = line.find_first_not_of(' ');
    EXPECT_EQ(indent, size_t(2 * (d[i] + 1))) << line;
    EXPECT_EQ(line.substr(indent, line.find(' ', indent) - indent), "%" + std::to_string(i))
        << line;
  }
  size_t r = find_op(p, is_range(0)), e = find_op(p, is_op(Op::END));
  EXPECT_NE(s.find("END(%" + std::to_string(e - 1) + ", %" + std::to_string(r) + ")"),
            std::string::npos)
      << s;
}

// An IF is a block: what depends on it sits inside, the condition and the rest outside.
TEST(Linearize, IfIsABlockClosedByItsEndif) {
  DType f = dtypes::float32;
  UOp buf = param(0, f.ptr());
  UOp r = range(4, 0, AxisKind::Loop);
  UOp cond = UOp::make(Op::IF, {r < 2});
  UOp body = store(index(after(buf, {cond}), r), const_(f, 1.0));
  LinearProgram p = linearize(sink({end(UOp::make(Op::ENDIF, {cond, body}), {r})}));
  std::vector<int> d = depths(p);
  size_t loop = find_op(p, is_range(0)), cmp = find_op(p, is_op(Op::CMPLT)),
         open = find_op(p, is_op(Op::IF)), st = find_op(p, is_op(Op::STORE)),
         close = find_op(p, is_op(Op::ENDIF)), done = find_op(p, is_op(Op::END));
  EXPECT_TRUE(loop < cmp && cmp < open && open < st && st < close && close < done)
      << print_program(p);
  EXPECT_EQ(d[cmp], 1);  // the condition in the loop, outside the IF
  EXPECT_EQ(d[st], 2);   // the store inside both
  EXPECT_EQ(d[close], 1);
}

// A body effect runs under its IF and once per iteration of its END's ranges even when it
// reads nothing of the condition or the loop.
TEST(Linearize, BodyEffectsStayInsideTheirBlocks) {
  DType f = dtypes::float32;
  UOp buf = param(0, f.ptr());
  UOp cond = UOp::make(Op::IF, {define_var("n", 0, 9) < 5});
  UOp fixed = store(index(buf, const_int(dtypes::int32, 0)), const_(f, 1.0));
  LinearProgram p = linearize(sink({UOp::make(Op::ENDIF, {cond, fixed})}));
  EXPECT_LT(find_op(p, is_op(Op::IF)), find_op(p, is_op(Op::STORE))) << print_program(p);
  UOp r = range(4, 0, AxisKind::Loop);
  UOp bump = UOp::make(Op::ATOMIC, dtypes::void_,
                       {index(buf, const_int(dtypes::int32, 1)), const_(f, 1.0)}, AtomicOp::Add);
  p = linearize(sink({end(group({bump, store(index(buf, r), const_(f, 2.0))}), {r})}));
  EXPECT_LT(find_op(p, is_op(Op::RANGE)), find_op(p, is_op(Op::ATOMIC))) << print_program(p);
  EXPECT_LT(find_op(p, is_op(Op::ATOMIC)), find_op(p, is_op(Op::END))) << print_program(p);
}

void expect_linearize_error(const UOp& sink, const std::string& needle) {
  try {
    linearize(sink);
    FAIL() << "linearized";
  } catch (const IrError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Linearize, RejectsMalformedStructure) {
  DType f = dtypes::float32;
  UOp buf = param(0, f.ptr());
  UOp r = range(4, 0, AxisKind::Loop);
  UOp st = store(index(buf, r), const_(f, 1.0));
  expect_linearize_error(sink({st}), "every RANGE is closed by an END");
  expect_linearize_error(sink({end(st, {r}), end(store(index(buf, r + 1), const_(f, 2.0)), {r})}),
                         "a RANGE is closed by one END");
  // A value from inside the loop used after it without going through its END.
  UOp v = load(index(buf, r));
  UOp outside = store(index(param(1, f.ptr()), const_int(dtypes::int32, 0)), v);
  expect_linearize_error(sink({end(st, {r}), outside}), "every op can be placed inside the ranges");
  UOp iff = UOp::make(Op::IF, dtypes::void_, {const_bool(true)});
  UOp guarded = store(index(after(buf, {iff}), const_int(dtypes::int32, 0)), const_(f, 3.0));
  expect_linearize_error(sink({guarded}), "every IF is closed by an ENDIF");
  expect_linearize_error(sink({UOp::make(Op::ENDIF, {iff, guarded}),
                               UOp::make(Op::ENDIF, {iff, end(st, {r}), guarded})}),
                         "an IF is closed by one ENDIF");
  EXPECT_THROW(linearize(st), IrError);  // not a SINK
}

TEST(Linearize, ValueUsedOutsideItsLoopIsAnError) {
  DType f = dtypes::float32;
  UOp a = param(0, f.ptr()), b = param(1, f.ptr());
  UOp r = range(4, 0, AxisKind::Loop), s = range(4, 1, AxisKind::Loop);
  UOp inner = load(index(a, r));
  UOp first = end(store(index(a, r), inner), {r});
  UOp second = end(store(index(b, s), inner), {s});  // uses r's value inside s
  expect_linearize_error(sink({first, second}), "linearize");
}

}  // namespace
}  // namespace kitten
