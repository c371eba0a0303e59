#include "dsl/symbolic.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <numeric>
#include <unordered_map>
#include <vector>

#include "dsl/eval.h"
#include "dsl/rewrite.h"

namespace kitten {

namespace {

using i128 = __int128;

bool is_sint(DType d) { return d.is_scalar() && d.is_int() && !d.is_unsigned(); }
bool is_index(const UOp& u) { return is_sint(u.dtype()); }
// a*b, a+b and a-b into out where the result is a value of d (rules make constants of
// the node's own type: an int32 kernel never gets an int64-only constant).
bool fits(DType d, int64_t v) { return v >= d.imin() && v <= d.imax(); }
bool mul_ok(DType d, int64_t a, int64_t b, int64_t& out) {
  return !__builtin_mul_overflow(a, b, &out) && fits(d, out);
}
bool add_ok(DType d, int64_t a, int64_t b, int64_t& out) {
  return !__builtin_add_overflow(a, b, &out) && fits(d, out);
}
bool sub_ok(DType d, int64_t a, int64_t b, int64_t& out) {
  return !__builtin_sub_overflow(a, b, &out) && fits(d, out);
}

std::pair<int64_t, int64_t> dtype_range(DType d) {
  if (d.is_bool()) return {0, 1};
  if (d.is_scalar() && d.is_int()) return {d.imin(), d.imax()};
  return {INT64_MIN, INT64_MAX};
}

// An ALU node whose integer sources each have one value has the value the evaluation
// table gives (none where C leaves it undefined or it divides by zero).
std::optional<std::pair<int64_t, int64_t>> evaluate_singletons(const UOp& u) {
  Scalar args[3];
  size_t n = u.src().size();
  for (size_t i = 0; i < n && i < 3; ++i) {
    DType sd = u.src(i).dtype();
    int64_t lo = 0, hi = 0;
    u.src(i).cached_bounds(lo, hi);
    if (!(sd.is_scalar() && (sd.is_int() || sd.is_bool())) || lo != hi) return std::nullopt;
    if (sd.is_unsigned() && sd.bits() == 64 && lo < 0) return std::nullopt;
    args[i].i = lo;
  }
  DType in = u.op() == Op::WHERE ? u.src(1).dtype() : u.src(0).dtype();
  EvalResult r = eval_alu(u.op(), in, u.dtype(), std::span<const Scalar>(args, n));
  if (r.fault != EvalFault::None) return dtype_range(u.dtype());
  // A uint64 of 2^63 or more has no int64 bounds (its bits read as negative).
  if (u.dtype().is_unsigned() && u.dtype().bits() == 64 && r.value.i < 0)
    return dtype_range(u.dtype());
  return std::pair{r.value.i, r.value.i};
}

// Bounds of a node from the (cached) bounds of its sources.
std::pair<int64_t, int64_t> compute_bounds(const UOp& u) {
  DType d = u.dtype();
  auto full = dtype_range(d);
  if (!(d.is_scalar() && (d.is_int() || d.is_bool()))) return full;
  auto src = [&](size_t i) {
    int64_t lo = 0, hi = 0;
    u.src(i).cached_bounds(lo, hi);
    return std::pair<i128, i128>{lo, hi};
  };
  auto fit = [&](i128 lo, i128 hi) -> std::pair<int64_t, int64_t> {
    if (lo < full.first || hi > full.second) return full;  // may overflow: know nothing
    return {int64_t(lo), int64_t(hi)};
  };
  auto corners = [&](i128 (*f)(i128, i128)) {
    auto [alo, ahi] = src(0);
    auto [blo, bhi] = src(1);
    i128 c[4] = {f(alo, blo), f(alo, bhi), f(ahi, blo), f(ahi, bhi)};
    return fit(*std::min_element(c, c + 4), *std::max_element(c, c + 4));
  };
  if (is_alu(u.op()) && int(u.op()) < kNumCoreOps)  // later layers' ALU ops: no table entry
    if (auto v = evaluate_singletons(u)) return *v;
  switch (u.op()) {
    case Op::CONST: {
      if (d.is_unsigned() && d.bits() == 64 && int64_t(u.const_int()) < 0) return full;
      return {u.const_int(), u.const_int()};
    }
    case Op::DEFINE_VAR: {
      const auto& v = std::get<VarArg>(u.arg());
      return {v.min, v.max};
    }
    case Op::RANGE:
    case Op::SPECIAL:
      return {0, std::max<int64_t>(0, int64_t(src(0).second) - 1)};
    case Op::ADD:
      return fit(src(0).first + src(1).first, src(0).second + src(1).second);
    case Op::SUB:
      return fit(src(0).first - src(1).second, src(0).second - src(1).first);
    case Op::NEG:
      return fit(-src(0).second, -src(0).first);
    case Op::MUL:
      return corners([](i128 a, i128 b) { return a * b; });
    case Op::MULACC: {
      auto [alo, ahi] = src(0);
      auto [blo, bhi] = src(1);
      i128 c[4] = {alo * blo, alo * bhi, ahi * blo, ahi * bhi};
      return fit(*std::min_element(c, c + 4) + src(2).first,
                 *std::max_element(c, c + 4) + src(2).second);
    }
    case Op::IDIV: {
      auto [blo, bhi] = src(1);
      if (blo > 0 || bhi < 0) return corners([](i128 a, i128 b) { return a / b; });
      return full;  // the divisor may be 0
    }
    case Op::MOD: {
      auto [alo, ahi] = src(0);
      auto [blo, bhi] = src(1);
      if (blo == bhi && blo != 0 && alo / blo == ahi / blo)
        return fit(alo - alo / blo * blo, ahi - ahi / blo * blo);
      i128 mb = std::max(blo < 0 ? -blo : blo, bhi < 0 ? -bhi : bhi);
      if (mb == 0) return full;
      i128 lo = alo >= 0 ? 0 : std::max(alo, -(mb - 1));
      i128 hi = ahi <= 0 ? 0 : std::min(ahi, mb - 1);
      return fit(lo, hi);
    }
    case Op::MAX:
      return fit(std::max(src(0).first, src(1).first), std::max(src(0).second, src(1).second));
    case Op::MIN:
      return fit(std::min(src(0).first, src(1).first), std::min(src(0).second, src(1).second));
    case Op::CMPLT: {
      auto [alo, ahi] = src(0);
      auto [blo, bhi] = src(1);
      if (ahi < blo) return {1, 1};
      if (alo >= bhi) return {0, 0};
      return {0, 1};
    }
    case Op::CMPEQ:
    case Op::CMPNE: {
      auto [alo, ahi] = src(0);
      auto [blo, bhi] = src(1);
      bool eq = u.op() == Op::CMPEQ;
      if (ahi < blo || bhi < alo)
        return eq ? std::pair<int64_t, int64_t>{0, 0} : std::pair<int64_t, int64_t>{1, 1};
      if (alo == ahi && blo == bhi && alo == blo)
        return eq ? std::pair<int64_t, int64_t>{1, 1} : std::pair<int64_t, int64_t>{0, 0};
      return {0, 1};
    }
    case Op::AND:
    case Op::OR:
    case Op::XOR: {
      auto [alo, ahi] = src(0);
      auto [blo, bhi] = src(1);
      if (d.is_bool()) {
        if (u.op() == Op::AND) return {alo & blo, ahi & bhi};
        if (u.op() == Op::OR) return {alo | blo, ahi | bhi};
        if (alo == ahi && blo == bhi) return {alo ^ blo, alo ^ blo};
        return {0, 1};
      }
      if (u.op() == Op::AND && (alo >= 0 || blo >= 0))  // a non-negative operand caps it
        return {0, int64_t(alo >= 0 && blo >= 0 ? std::min(ahi, bhi) : alo >= 0 ? ahi : bhi)};
      if (alo < 0 || blo < 0) return full;
      i128 m = std::max(ahi, bhi), p = 1;
      while (p <= m) p <<= 1;
      return fit(0, p - 1);
    }
    case Op::SHL:
    case Op::SHR: {
      auto [alo, ahi] = src(0);
      auto [blo, bhi] = src(1);
      if (blo < 0 || bhi >= d.bits()) return full;  // undefined counts
      if (u.op() == Op::SHR)  // monotone in each operand: the corners bound it
        return corners([](i128 a, i128 b) { return a >> int(b); });
      if (alo < 0 || bhi >= d.bits() - 1) return full;
      return fit(alo << int(blo), ahi << int(bhi));
    }
    case Op::WHERE: {
      auto [clo, chi] = src(0);
      if (clo == 1) return fit(src(1).first, src(1).second);
      if (chi == 0) return fit(src(2).first, src(2).second);
      return fit(std::min(src(1).first, src(2).first), std::max(src(1).second, src(2).second));
    }
    case Op::CAST: {
      DType s = u.src(0).dtype();
      if (!(s.is_scalar() && (s.is_int() || s.is_bool()))) return full;
      auto [lo, hi] = src(0);
      if (lo < full.first || hi > full.second) return full;
      return {int64_t(lo), int64_t(hi)};
    }
    case Op::PARAM:
    case Op::DEFINE_LOCAL:
    case Op::DEFINE_REG:
    case Op::END:
    case Op::AFTER:
    case Op::GROUP:
    case Op::IF:
    case Op::ENDIF:
    case Op::BARRIER:
    case Op::SINK:
    case Op::INDEX:
    case Op::LOAD:
    case Op::STORE:
    case Op::ATOMIC:
    case Op::ASYNC_COPY:
    case Op::WAIT:
    case Op::WAIT_GROUP:
    case Op::ASYNC_COMMIT:
    case Op::SHUFFLE:
    case Op::MMA:
    case Op::LDMATRIX:
    case Op::STMATRIX:
    case Op::MBARRIER_INIT:
    case Op::MBARRIER_ARRIVE:
    case Op::MBARRIER_WAIT:
    case Op::FENCE:
    case Op::NAMED_BARRIER:
    case Op::SETMAXNREG:
    case Op::MATRIX_DESC:
    case Op::WGMMA:
    case Op::WGMMA_COMMIT:
    case Op::WGMMA_WAIT:
    case Op::TENSOR_MAP:
    case Op::TMA_LOAD:
    case Op::TMA_STORE:
    case Op::BULK_REDUCE_ADD:
    case Op::BULK_COMMIT:
    case Op::BULK_WAIT:
    case Op::BITCAST:
    case Op::VECTORIZE:
    case Op::EXTRACT:
    case Op::RECIP:
    case Op::SQRT:
    case Op::EXP2:
    case Op::EXP2_FTZ:
    case Op::LOG2:
    case Op::SIN:
    case Op::TRUNC:
    case Op::FDIV:
      break;
  }
  return full;  // a run-time value, a float op, or an op registered by a later layer
}

}  // namespace

std::pair<int64_t, int64_t> bounds(const UOp& u) {
  int64_t lo, hi;
  if (u.cached_bounds(lo, hi)) return {lo, hi};
  std::vector<std::pair<const UOp*, size_t>> stack{{&u, 0}};
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (next < n->src().size()) {
      const UOp& s = n->src(next++);
      if (!s.cached_bounds(lo, hi)) stack.emplace_back(&s, 0);
      continue;
    }
    auto b = compute_bounds(*n);
    n->cache_bounds(b.first, b.second);
    stack.pop_back();
  }
  u.cached_bounds(lo, hi);
  return {lo, hi};
}

namespace {

int trailing_zeros(int64_t g) { return g == 0 ? 64 : __builtin_ctzll(uint64_t(g)); }
int64_t pow2(int k) { return k >= 63 ? int64_t(1) << 62 : int64_t(1) << k; }
int64_t gcd0(int64_t a, int64_t b) { return std::gcd(a, b); }  // gcd(0, b) = b: 0 is "any"

// The divisor of one node from its sources' (0: the node is always 0).
int64_t node_divisor(const UOp& u, const std::unordered_map<const void*, int64_t>& memo) {
  DType d = u.dtype();
  if (!(d.is_scalar() && d.is_int())) return 1;
  auto [lo, hi] = bounds(u);
  if (lo == hi) return lo == INT64_MIN ? pow2(62) : std::abs(lo);
  auto g = [&](size_t i) { return memo.at(u.src(i).id()); };
  auto is_const = [&](size_t i) { return u.src(i).op() == Op::CONST; };
  int64_t out;
  switch (u.op()) {
    case Op::ADD:
    case Op::SUB:
    case Op::MOD:  // x % y = x - (x/y)*y
    case Op::MAX:
    case Op::MIN:
      return gcd0(g(0), g(1));
    case Op::WHERE:
      return gcd0(g(1), g(2));
    case Op::NEG:
      return g(0);
    case Op::MUL:
      return mul_ok(dtypes::int64, g(0), g(1), out) ? out : std::max(g(0), g(1));
    case Op::MULACC:
      return gcd0(mul_ok(dtypes::int64, g(0), g(1), out) ? out : std::max(g(0), g(1)), g(2));
    case Op::SHL:
      if (!is_const(1)) return g(0);
      return mul_ok(dtypes::int64, g(0), pow2(int(u.src(1).const_int())), out) ? out : g(0);
    case Op::SHR: {  // exact where the shifted-out bits are known zeros
      if (!is_const(1)) return 1;
      int k = int(u.src(1).const_int());
      return trailing_zeros(g(0)) >= k && g(0) != 0 ? g(0) >> k : 1;
    }
    case Op::IDIV: {  // exact only
      if (!is_const(1) || u.src(1).const_int() == 0) return 1;
      if (u.src(1).const_int() == INT64_MIN) return 1;
      int64_t c = std::abs(u.src(1).const_int());
      return g(0) != 0 && g(0) % c == 0 ? g(0) / c : 1;
    }
    case Op::AND:  // a bit is 0 where either operand's is
      return pow2(std::max(trailing_zeros(g(0)), trailing_zeros(g(1))));
    case Op::OR:
    case Op::XOR:
      return pow2(std::min(trailing_zeros(g(0)), trailing_zeros(g(1))));
    case Op::CAST: {
      DType s = u.src(0).dtype();
      return s.is_scalar() && s.is_int() && s.bits() <= d.bits() ? g(0) : 1;
    }
    default:
      return 1;
  }
}

}  // namespace

int64_t known_divisor(const UOp& u) {
  std::unordered_map<const void*, int64_t> memo;
  std::vector<std::pair<const UOp*, size_t>> stack{{&u, 0}};
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (memo.count(n->id())) {
      stack.pop_back();
      continue;
    }
    if (next < n->src().size()) {
      const UOp& s = n->src(next++);
      if (!memo.count(s.id())) stack.emplace_back(&s, 0);
      continue;
    }
    memo[n->id()] = node_divisor(*n, memo);
    stack.pop_back();
  }
  return memo.at(u.id());
}

bool provably_multiple(const UOp& x, int64_t m) {
  int64_t g = known_divisor(x);
  return m != 0 && g % m == 0;
}

namespace {

// ---- sums as terms ---------------------------------------------------------------------

struct Term {
  UOp base;
  int64_t coeff;
};

// x = sum of coeff*base + k, looking through ADDs and MULs by constants. False when a
// coefficient overflows.
bool flatten(const UOp& x, std::vector<Term>& terms, int64_t& k) {
  terms.clear();
  k = 0;
  thread_local std::vector<std::pair<UOp, int64_t>> work;  // reused: no allocation per call
  work.assign(1, {x, 1});
  while (!work.empty()) {
    auto [u, c] = work.back();
    work.pop_back();
    if (u.op() == Op::ADD) {
      work.emplace_back(u.src(1), c);
      work.emplace_back(u.src(0), c);
    } else if (u.op() == Op::CONST) {
      int64_t v;
      if (!mul_ok(dtypes::int64, u.const_int(), c, v) || !add_ok(dtypes::int64, k, v, k))
        return false;
    } else if (u.op() == Op::MUL && u.src(1).op() == Op::CONST) {
      int64_t cc;
      if (!mul_ok(dtypes::int64, c, u.src(1).const_int(), cc)) return false;
      work.emplace_back(u.src(0), cc);
    } else {
      terms.push_back({u, c});
    }
  }
  // Every coefficient and the constant are values of x's type (sub-sums may leave it).
  DType d = x.dtype();
  return fits(d, k) &&
         std::all_of(terms.begin(), terms.end(), [&](const Term& t) { return fits(d, t.coeff); });
}

// An op's name without the registry's lock for the core ops (later layers' ops by number).
std::string_view name_of(Op op) { return int(op) < kNumCoreOps ? core_op_name(op) : "~op"; }

// The first variable-like leaf reached through first sources: what sorts a term.
std::string leading_name(const UOp& u) {
  UOp n = u;
  for (int i = 0; i < 64 && !n.src().empty() && n.op() != Op::RANGE && n.op() != Op::SPECIAL; ++i)
    n = n.src(0);
  if (n.op() == Op::DEFINE_VAR) return std::get<VarArg>(n.arg()).name;
  if (n.op() == Op::RANGE) return "ridx" + std::to_string(n.axis().id);
  if (n.op() == Op::SPECIAL) return std::string(special_name(std::get<SpecialArg>(n.arg())));
  if (n.op() == Op::CONST) return "~";
  return std::string(name_of(n.op()));
}

// Names compare with their runs of digits as numbers (v2 before v10).
int natural_compare(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(uint8_t(a[i])) && std::isdigit(uint8_t(b[j]))) {
      size_t ei = i, ej = j;
      while (ei < a.size() && std::isdigit(uint8_t(a[ei]))) ++ei;
      while (ej < b.size() && std::isdigit(uint8_t(b[ej]))) ++ej;
      std::string_view da(a.data() + i, ei - i), db(b.data() + j, ej - j);
      while (da.size() > 1 && da[0] == '0') da.remove_prefix(1);
      while (db.size() > 1 && db[0] == '0') db.remove_prefix(1);
      if (da.size() != db.size()) return da.size() < db.size() ? -1 : 1;
      if (int c = da.compare(db)) return c;
      i = ei, j = ej;
    } else {
      if (a[i] != b[j]) return a[i] < b[j] ? -1 : 1;
      ++i, ++j;
    }
  }
  return (i < a.size()) - (j < b.size());
}

// A total order on single sources: constants by value, then variables by name, then
// everything else by structural key.
bool source_before(const UOp& x, const UOp& y) {
  auto rank = [](const UOp& u) {
    return u.op() == Op::CONST ? 0 : u.op() == Op::DEFINE_VAR ? 1 : 2;
  };
  if (rank(x) != rank(y)) return rank(x) < rank(y);
  if (rank(x) == 0 && x.dtype() == y.dtype() && x.const_int() != y.const_int())
    return x.const_int() < y.const_int();
  if (rank(x) == 1)
    if (int c = natural_compare(std::get<VarArg>(x.arg()).name, std::get<VarArg>(y.arg()).name))
      return c < 0;
  StableKey kx = x.key(), ky = y.key();
  return kx.hi != ky.hi ? kx.hi < ky.hi : kx.lo < ky.lo;
}

// What orders the terms of a sum: the leading variable's name, the op, the number of
// sources, then source by source constants by value and variables by name, and last the
// structural key (x/2 + x/3 + ... and v1 + v2 + ... stay in the order they are written).
struct TermOrder {
  std::string lead;
  std::string_view op;
  UOp u;
  explicit TermOrder(const UOp& x) : lead(leading_name(x)), op(name_of(x.op())), u(x) {}
  bool operator<(const TermOrder& o) const {
    if (int c = natural_compare(lead, o.lead)) return c < 0;
    if (op != o.op) return op < o.op;
    if (u.op() != o.u.op()) return u.op() < o.u.op();  // two later-layer ops
    const UOp &a = u, &b = o.u;
    if (a.src().size() != b.src().size()) return a.src().size() < b.src().size();
    for (size_t i = 0; i < a.src().size(); ++i)  // lexicographic over the sources
      if (a.src(i) != b.src(i)) return source_before(a.src(i), b.src(i));
    return a != b && source_before(a, b);  // same sources, another arg: by key
  }
};

bool term_before(const UOp& a, const UOp& b) { return TermOrder(a) < TermOrder(b); }

// A term read as the digits of y0 between lo and hi (hi = 0: unbounded) times scale:
// y0 % hi is the window [1, hi), y0 / lo times lo the window [lo, unbounded), and
// (y0 / lo) % (hi/lo) times lo the window [lo, hi). Two windows of one y0 and one scale
// that meet add into one: y0%a + ((y0/a)%b)*a is y0%(a*b), and y0%a + (y0/a)*a is y0.
// Exact for every y0 in C: for y0 >= 0 these are the digit identities, and each window is
// an odd function of y0 under truncation, so they hold for -y0 too.
struct Window {
  UOp y0;
  int64_t lo, hi, scale;
};

std::optional<Window> window_of(const Term& t) {
  const UOp& b = t.base;
  auto const_pos = [](const UOp& u) { return u.op() == Op::CONST && u.const_int() > 0; };
  if (b.op() == Op::IDIV && const_pos(b.src(1))) {
    int64_t a = b.src(1).const_int();
    if (a < 2 || t.coeff % a != 0) return std::nullopt;
    return Window{b.src(0), a, 0, t.coeff / a};
  }
  if (b.op() != Op::MOD || !const_pos(b.src(1))) return std::nullopt;
  int64_t c = b.src(1).const_int(), a, hi;
  const UOp& y = b.src(0);
  if (y.op() == Op::IDIV && const_pos(y.src(1)) && (a = y.src(1).const_int()) > 1 &&
      t.coeff % a == 0 && mul_ok(b.dtype(), a, c, hi))
    return Window{y.src(0), a, hi, t.coeff / a};
  return Window{y, 1, c, t.coeff};
}

std::optional<Term> window_term(const Window& w) {
  DType d = w.y0.dtype();
  int64_t coeff;
  if (!mul_ok(d, w.scale, w.lo, coeff)) return std::nullopt;
  if (w.lo == 1 && w.hi == 0) return Term{w.y0, w.scale};
  if (w.lo == 1) return Term{UOp::make(Op::MOD, {w.y0, const_int(d, w.hi)}), w.scale};
  UOp q = UOp::make(Op::IDIV, {w.y0, const_int(d, w.lo)});
  if (w.hi == 0) return Term{q, coeff};
  return Term{UOp::make(Op::MOD, {q, const_int(d, w.hi / w.lo)}), coeff};
}

// Adds up terms of equal bases and dropping zeros; true when something merged.
bool merge_equal_bases(std::vector<Term>& terms, bool& ok) {
  std::unordered_map<const void*, size_t> at;  // only for long sums: short ones scan
  std::vector<Term> merged;
  merged.reserve(terms.size());
  bool scan = terms.size() <= 16;
  for (const Term& t : terms) {
    size_t i = merged.size();
    if (scan) {
      for (size_t j = 0; j < merged.size(); ++j)
        if (merged[j].base == t.base) i = j;
    } else {
      i = at.emplace(t.base.id(), merged.size()).first->second;
    }
    if (i == merged.size())
      merged.push_back(t);
    else if (!add_ok(t.base.dtype(), merged[i].coeff, t.coeff, merged[i].coeff))
      return ok = false;
  }
  bool changed = merged.size() != terms.size();
  std::erase_if(merged, [](const Term& t) { return t.coeff == 0; });
  terms = std::move(merged);
  return changed;
}

// terms without the ones marked gone, with the added ones; true when something was added.
bool replace_terms(std::vector<Term>& terms, const std::vector<bool>& gone,
                   const std::vector<Term>& added) {
  if (added.empty()) return false;
  std::vector<Term> out;
  for (size_t i = 0; i < terms.size(); ++i)
    if (!gone[i]) out.push_back(terms[i]);
  out.insert(out.end(), added.begin(), added.end());
  terms = std::move(out);
  return true;
}

// Joins the windows that meet (see Window); true when something joined.
bool merge_windows(std::vector<Term>& terms) {
  auto divmod = [](const Term& t) { return t.base.op() == Op::IDIV || t.base.op() == Op::MOD; };
  if (std::count_if(terms.begin(), terms.end(), divmod) < 2) return false;
  std::unordered_map<const void*, std::vector<std::pair<Window, size_t>>> by_y0;
  for (size_t i = 0; i < terms.size(); ++i)
    if (auto w = window_of(terms[i])) by_y0[w->y0.id()].push_back({*w, i});
  std::vector<bool> gone(terms.size());
  std::vector<Term> added;
  for (auto& [id, ws] : by_y0) {
    if (ws.size() < 2) continue;
    std::sort(ws.begin(), ws.end(), [](const auto& a, const auto& b) {
      return a.first.scale != b.first.scale ? a.first.scale < b.first.scale
                                            : a.first.lo < b.first.lo;
    });
    for (size_t i = 0; i < ws.size();) {
      Window w = ws[i].first;
      size_t j = i + 1;
      while (j < ws.size() && ws[j].first.scale == w.scale && w.hi != 0 && ws[j].first.lo == w.hi)
        w.hi = ws[j++].first.hi;
      if (j > i + 1)
        if (auto t = window_term(w)) {
          for (size_t k = i; k < j; ++k) gone[ws[k].second] = true;
          added.push_back(*t);
        }
      i = j;
    }
  }
  return replace_terms(terms, gone, added);
}

UOp build_sum(DType d, const std::vector<Term>& terms, int64_t k);

// Terms that are wheres on one condition add into one where: k1*where(c, a1, b1) +
// k2*where(c, a2, b2) is where(c, k1*a1 + k2*a2, k1*b1 + k2*b2) (where(c,a,0) +
// where(c,0,a) is a); not where a branch's sum can leave the type. True when merged.
bool merge_wheres(std::vector<Term>& terms) {
  auto is_where = [](const Term& t) { return t.base.op() == Op::WHERE; };
  if (std::count_if(terms.begin(), terms.end(), is_where) < 2) return false;
  std::unordered_map<const void*, std::vector<size_t>> by_cond;
  for (size_t i = 0; i < terms.size(); ++i)
    if (terms[i].base.op() == Op::WHERE) by_cond[terms[i].base.src(0).id()].push_back(i);
  std::vector<bool> gone(terms.size());
  std::vector<Term> added;
  for (auto& [id, is] : by_cond) {
    if (is.size() < 2) continue;
    std::vector<Term> yes, no;
    for (size_t i : is) {
      yes.push_back({terms[i].base.src(1), terms[i].coeff});
      no.push_back({terms[i].base.src(2), terms[i].coeff});
    }
    DType d = terms[is[0]].base.dtype();
    UOp a = build_sum(d, yes, 0), b = build_sum(d, no, 0);
    if (!a || !b) continue;
    for (size_t i : is) gone[i] = true;
    added.push_back({UOp::make(Op::WHERE, {terms[is[0]].base.src(0), a, b}), 1});
  }
  return replace_terms(terms, gone, added);
}

// Merges equal bases, joins digit windows and wheres on one condition, drops zero terms,
// sorts (TermOrder).
bool normalize(std::vector<Term>& terms) {
  bool ok = true;
  merge_equal_bases(terms, ok);
  while (ok) {
    bool windows = merge_windows(terms), wheres = merge_wheres(terms);
    if (!windows && !wheres) break;
    merge_equal_bases(terms, ok);
  }
  if (!ok) return false;
  bool sorted = true;  // mostly already in order: then nothing is built
  for (size_t i = 1; i < terms.size() && sorted; ++i)
    sorted = !term_before(terms[i].base, terms[i - 1].base);
  if (sorted) return true;
  std::vector<std::pair<TermOrder, Term>> keyed;
  keyed.reserve(terms.size());
  for (const Term& t : terms) keyed.push_back({TermOrder(t.base), t});
  std::stable_sort(keyed.begin(), keyed.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 0; i < terms.size(); ++i) terms[i] = keyed[i].second;
  return true;
}

// The sum as it is built, ((t1 + t2) + ...) + k, or nothing where a product or a partial
// sum can leave d's range for some values of the terms: a rewrite never introduces an
// overflow (the exact intervals are computed in 128 bits).
UOp build_sum(DType d, const std::vector<Term>& terms, int64_t k) {
  __int128 lo = 0, hi = 0, dmin = d.imin(), dmax = d.imax();
  bool first = true;
  auto inside = [&](__int128 a, __int128 b) { return a >= dmin && b <= dmax; };
  for (const Term& t : terms) {
    auto [blo, bhi] = bounds(t.base);
    __int128 a = __int128(blo) * t.coeff, b = __int128(bhi) * t.coeff;
    if (a > b) std::swap(a, b);
    if (!inside(a, b)) return {};
    lo = first ? a : lo + a;
    hi = first ? b : hi + b;
    first = false;
    if (!inside(lo, hi)) return {};
  }
  if (!first && k != 0 && !inside(lo + k, hi + k)) return {};
  if (!fits(d, k) ||
      std::any_of(terms.begin(), terms.end(), [&](const Term& t) { return !fits(d, t.coeff); }))
    return {};
  UOp acc;
  for (const Term& t : terms) {
    UOp term = t.coeff == 1 ? t.base : UOp::make(Op::MUL, {t.base, const_int(d, t.coeff)});
    acc = acc ? UOp::make(Op::ADD, {acc, term}) : term;
  }
  if (!acc) return const_int(d, k);
  return k == 0 ? acc : UOp::make(Op::ADD, {acc, const_int(d, k)});
}

// The greatest common divisor of |start| and every |coefficient|, in unsigned arithmetic
// (|INT64_MIN| is 2^63); 1 where that does not fit an int64, so nothing divides through
// the type's minimum.
int64_t gcd_of(const std::vector<Term>& terms, int64_t start) {
  auto mag = [](int64_t v) { return v < 0 ? 0 - uint64_t(v) : uint64_t(v); };
  uint64_t g = mag(start);
  for (const Term& t : terms) g = std::gcd(g, mag(t.coeff));
  return g > uint64_t(INT64_MAX) ? 1 : int64_t(g);
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }
int64_t ceil_div(int64_t a, int64_t b) { return a / b + ((a % b != 0) && ((a < 0) == (b < 0))); }

std::optional<UOp> changed(const UOp& before, const UOp& after) {
  if (!after || after == before) return std::nullopt;
  return after;
}

// ---- rule bodies -----------------------------------------------------------------------

// A side-effect-free integer or bool node whose bounds are one value is that value. This
// folds constants too: the bounds of an all-constant node are its value, computed with C
// semantics (an overflow or a division by zero has no single value and is left alone).
std::optional<UOp> fold_by_bounds(const Match& m) {
  const UOp& u = m.root();
  if (!is_alu(u.op()) && u.op() != Op::CAST) return std::nullopt;
  if (!(is_sint(u.dtype()) || u.dtype() == dtypes::bool_)) return std::nullopt;
  auto [lo, hi] = bounds(u);
  if (lo != hi) return std::nullopt;
  return u.dtype().is_bool() ? const_bool(lo != 0) : const_int(u.dtype(), lo);
}

Term term_of(const UOp& x) {
  if (x.op() == Op::MUL && x.src(1).op() == Op::CONST) return Term{x.src(0), x.src(1).const_int()};
  return Term{x, 1};
}

// Whether a term of the sum a has a digit window of t's y0, or is a where on t's
// condition: then t may combine with it (normalize).
bool may_combine(const UOp& a, const Term& t) {
  auto w = window_of(t);
  bool conditional = t.base.op() == Op::WHERE;
  if (!w && !conditional) return false;
  for (const UOp* n = &a;;) {
    Term xt = term_of(n->op() == Op::ADD ? n->src(1) : *n);
    if (w)
      if (auto xw = window_of(xt); xw && xw->y0 == w->y0) return true;
    if (conditional && xt.base.op() == Op::WHERE && xt.base.src(0) == t.base.src(0)) return true;
    if (n->op() != Op::ADD) return false;
    n = &n->src(0);
  }
}

// a + t where a is a canonical sum (the rewriter rewrites sources first) and t one term
// that cannot combine with a's: t goes in its place by a binary search, and where that is
// the end, the sum is already canonical. Long sums stay near linear this way (the full
// path flattens and sorts every prefix of the chain again).
std::optional<std::optional<UOp>> insert_term(const UOp& u) {
  const UOp &a = u.src(0), &b = u.src(1);
  const UOp& last = a.op() == Op::ADD ? a.src(1) : a;
  if (b.op() == Op::CONST && b.const_int() != 0 && last.op() != Op::CONST) {
    // a canonical sum without a constant, plus one: canonical where it stays in range
    auto [alo, ahi] = bounds(a);
    if (__int128(alo) + b.const_int() >= u.dtype().imin() &&
        __int128(ahi) + b.const_int() <= u.dtype().imax())
      return std::optional<UOp>{};
    return std::nullopt;
  }
  if (b.op() == Op::ADD || b.op() == Op::CONST || a.op() == Op::CONST) return std::nullopt;
  Term t = term_of(b);
  if (t.base.op() == Op::ADD || t.base.op() == Op::CONST || t.coeff == 0 || may_combine(a, t))
    return std::nullopt;
  if (last.op() != Op::CONST && term_before(term_of(last).base, t.base)) {
    auto [alo, ahi] = bounds(a);
    auto [blo, bhi] = bounds(b);
    if (__int128(alo) + blo >= u.dtype().imin() && __int128(ahi) + bhi <= u.dtype().imax())
      return std::optional<UOp>{};  // appended in order: canonical
  }
  std::vector<Term> terms;
  int64_t k;
  if (!flatten(a, terms, k)) return std::nullopt;
  TermOrder key(t.base);
  auto pos =
      std::upper_bound(terms.begin(), terms.end(), key,
                       [](const TermOrder& x, const Term& y) { return x < TermOrder(y.base); });
  if (pos != terms.begin() && pos[-1].base == t.base) return std::nullopt;
  terms.insert(pos, t);
  return changed(u, build_sum(u.dtype(), terms, k));
}

std::optional<UOp> canonical_sum(const Match& m) {
  const UOp& u = m.root();
  if (auto inserted = insert_term(u)) return *inserted;
  std::vector<Term> terms;
  int64_t k;
  if (!flatten(u, terms, k) || !normalize(terms)) return std::nullopt;
  return changed(u, build_sum(u.dtype(), terms, k));
}

// u as coeff times a product of non-constant factors (through MULs); false where the
// constants' product leaves u's dtype.
bool factors_of(const UOp& u, int64_t& coeff, std::vector<UOp>& fs) {
  coeff = 1;
  std::vector<UOp> work{u};
  while (!work.empty()) {
    UOp f = work.back();
    work.pop_back();
    if (f.op() == Op::MUL) {
      work.push_back(f.src(1));
      work.push_back(f.src(0));
    } else if (f.op() == Op::CONST) {
      if (!mul_ok(u.dtype(), coeff, f.const_int(), coeff)) return false;
    } else {
      fs.push_back(f);
    }
  }
  return true;
}

// A product of non-constant factors sorted (TermOrder), left-deep, its constant last;
// nothing where a partial product can leave d's range (the reordering would introduce an
// overflow the input did not have).
UOp build_product(DType d, std::vector<UOp> factors, int64_t k) {
  std::stable_sort(factors.begin(), factors.end(), term_before);
  UOp acc;
  i128 lo = 1, hi = 1;
  for (const UOp& f : factors) {
    auto [flo, fhi] = bounds(f);
    i128 c[4] = {lo * flo, lo * fhi, hi * flo, hi * fhi};
    lo = *std::min_element(c, c + 4), hi = *std::max_element(c, c + 4);
    if (lo < d.imin() || hi > d.imax()) return {};
    acc = acc ? UOp::make(Op::MUL, {acc, f}) : f;
  }
  if (!acc) return const_int(d, k);
  return k == 1 ? acc : UOp::make(Op::MUL, {acc, const_int(d, k)});
}

std::optional<UOp> canonical_product(const Match& m) {
  const UOp& u = m.root();
  const UOp &a = u.src(0), &b = u.src(1);
  DType d = u.dtype();
  if (a.op() == Op::CONST && b.op() != Op::CONST) return UOp::make(Op::MUL, {b, a});
  if (b.op() == Op::CONST) {
    int64_t c = b.const_int(), cc;
    if (a.op() == Op::MUL && a.src(1).op() == Op::CONST && mul_ok(d, a.src(1).const_int(), c, cc))
      return UOp::make(Op::MUL, {a.src(0), const_int(d, cc)});
    if (a.op() == Op::ADD) {  // distribute: (x + y)*c -> x*c + y*c
      std::vector<Term> terms;
      int64_t k;
      if (!flatten(u, terms, k) || !normalize(terms)) return std::nullopt;
      return changed(u, build_sum(d, terms, k));
    }
    return std::nullopt;
  }
  // a*f with a canonical (sources are rewritten first) and f a factor that sorts at or
  // after a's last: canonical already (x*x*...*x stays left-deep, in linear time).
  if (b.op() != Op::MUL) {
    const UOp& last = a.op() == Op::MUL ? a.src(1) : a;
    if (last.op() != Op::CONST && !term_before(b, last)) return std::nullopt;
  }
  std::vector<UOp> factors;
  int64_t k;
  if (!factors_of(u, k, factors)) return std::nullopt;
  return changed(u, build_product(d, std::move(factors), k));
}

// x / c and x % c for a constant c > 0 (negative divisors are made positive first).
std::optional<UOp> fold_div_mod(const Match& m) {
  const UOp& u = m.root();
  DType d = u.dtype();
  bool is_div = u.op() == Op::IDIV;
  const UOp& x = m["x"];
  int64_t c = m["c"].const_int();
  if (c < 0 && c != d.imin()) {
    UOp pos = const_int(d, -c);
    if (is_div) return UOp::make(Op::MUL, {UOp::make(Op::IDIV, {x, pos}), const_int(d, -1)});
    return UOp::make(Op::MOD, {x, pos});
  }
  if (c <= 1) return std::nullopt;  // x/1, x%1 and x/0 are other rules' business
  // Nested: (y / a) / c -> y / (a*c); (y % a) % c -> y % c when c divides a.
  if (x.op() == u.op() && x.src(1).op() == Op::CONST && x.src(1).const_int() > 0) {
    int64_t a = x.src(1).const_int(), ac;
    if (is_div && mul_ok(d, a, c, ac)) return UOp::make(Op::IDIV, {x.src(0), const_int(d, ac)});
    if (!is_div && a % c == 0) return UOp::make(Op::MOD, {x.src(0), m["c"]});
  }
  std::vector<Term> terms;
  int64_t k;
  if (!flatten(x, terms, k)) return std::nullopt;
  // A common factor g of the divisor and every coefficient: exact for truncation too.
  if (int64_t g = std::gcd(c, gcd_of(terms, k)); g > 1) {
    for (Term& t : terms) t.coeff /= g;
    UOp inner = build_sum(d, terms, k / g), small = const_int(d, c / g);
    if (!inner) return std::nullopt;
    if (is_div) return c / g == 1 ? inner : UOp::make(Op::IDIV, {inner, small});
    if (c / g == 1) return const_int(d, 0);
    return UOp::make(Op::MUL, {UOp::make(Op::MOD, {inner, small}), const_int(d, g)});
  }
  // Nested division with an added constant: (y/a + k)/c is (y + k*a)/(a*c) where y, y/a + k
  // and y + k*a are all non-negative (truncation is then floor, and floor(floor(q)/c) is
  // floor(q/c) for a whole c > 0).
  if (is_div && terms.size() == 1 && terms[0].coeff == 1 && terms[0].base.op() == Op::IDIV &&
      terms[0].base.src(1).op() == Op::CONST && terms[0].base.src(1).const_int() > 0 && k != 0) {
    const UOp& y = terms[0].base.src(0);
    int64_t a = terms[0].base.src(1).const_int(), ka, ac;
    if (vmin(y) >= 0 && vmin(x) >= 0 && mul_ok(d, k, a, ka) && mul_ok(d, a, c, ac))
      if (UOp num = build_sum(d, {{y, 1}}, ka); num && vmin(num) >= 0)
        return UOp::make(Op::IDIV, {num, const_int(d, ac)});
  }
  // Coefficient reduction under a modulus: (a*7)%6 is a%6, (11 + 9*a)%10 is (1 - a)%10.
  // Each coefficient becomes its residue of least magnitude, the constant its residue in
  // [0, c); exact in C
  // when the numerator before and after is non-negative (a truncating remainder follows
  // the numerator's sign).
  if (!is_div && vmin(x) >= 0) {
    auto least = [c](int64_t v) {
      int64_t r = v % c;
      if (r < 0) r += c;
      return r > c / 2 ? r - c : r;
    };
    std::vector<Term> reduced;
    bool any = false;
    for (const Term& t : terms) {
      int64_t r = least(t.coeff);
      any |= r != t.coeff;
      if (r) reduced.push_back({t.base, r});
    }
    int64_t rk = k % c;  // the constant in [0, c), as the split below leaves it
    if (rk < 0) rk += c;
    any |= rk != k;
    if (any && normalize(reduced))
      if (UOp y = build_sum(d, reduced, rk); y && vmin(y) >= 0)
        return UOp::make(Op::MOD, {y, m["c"]});
  }
  // The range of x within one period: x%c = x - q*c, x/c = q.
  auto [lo, hi] = bounds(x);
  if (lo / c == hi / c) {
    int64_t q = lo / c, qc;
    if (is_div) return const_int(d, q);
    if (!mul_ok(d, q, c, qc) || qc == d.imin()) return std::nullopt;
    return q == 0 ? x : UOp::make(Op::ADD, {x, const_int(d, -qc)});
  }
  if (lo < 0) return std::nullopt;
  // x >= 0: split x = g*Q + R for a g that divides c, Q the terms whose coefficients g
  // divides (and the multiple of g in the constant), R the rest, R >= 0. For g = c:
  // x/c = Q + R/c and x%c = R%c (R/c = 0 and R%c = R when R < c). For a smaller g with
  // R < g: x/c is floor((Q + R/g)/(c/g)) = Q/(c/g) and x%c = (Q%(c/g))*g + R, with Q >= 0
  // because x >= 0 ((a*8 + b*8 + 13)/32 is (a + b + 1)/4; (4*a + b)/8 with b in [0,3] is
  // a/2). A negative x is left alone: truncation is not floor there.
  std::vector<int64_t> steps = {c};
  for (const Term& t : terms)
    if (int64_t g = t.coeff == INT64_MIN ? 1 : std::gcd(c, std::abs(t.coeff)); g > 1 && g < c)
      steps.push_back(g);
  std::sort(steps.begin() + 1, steps.end(), std::greater<>());
  steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
  for (int64_t g : steps) {
    std::vector<Term> q_terms, r_terms;
    for (const Term& t : terms) (t.coeff % g == 0 ? q_terms : r_terms).push_back(t);
    // In 128 bits: qk*g may lie below the dtype's minimum when k is near it (rk does not).
    int64_t qk = floor_div(k, g), rk = int64_t(i128(k) - i128(qk) * g);
    if (q_terms.empty() && qk == 0) continue;
    for (Term& t : q_terms) t.coeff /= g;
    i128 rlo = rk, rhi = rk;  // R's interval before any node is made
    for (const Term& t : r_terms) {
      auto [blo, bhi] = bounds(t.base);
      i128 a = i128(blo) * t.coeff, b = i128(bhi) * t.coeff;
      rlo += std::min(a, b), rhi += std::max(a, b);
    }
    if (rlo < 0 || (g < c && rhi >= g)) continue;
    UOp r = build_sum(d, r_terms, rk), q = build_sum(d, q_terms, qk);
    if (!r || !q) continue;
    if (g == c) {
      if (!is_div) return rhi < c ? r : UOp::make(Op::MOD, {r, m["c"]});
      return rhi < c ? q : UOp::make(Op::ADD, {q, UOp::make(Op::IDIV, {r, m["c"]})});
    }
    UOp step = const_int(d, c / g);
    if (is_div) return UOp::make(Op::IDIV, {q, step});
    return UOp::make(Op::ADD,
                     {UOp::make(Op::MUL, {UOp::make(Op::MOD, {q, step}), const_int(d, g)}), r});
  }
  return std::nullopt;
}

// x / y and x % y for a y that is not a constant: x = Q*y + R with Q the terms that are
// multiples of y (y's factors among theirs, y's constant dividing theirs) and R the rest.
// With y > 0, x >= 0 and R >= 0, x/y = Q + R/y and x%y = R%y (truncation is floor
// there). Not for a negative x: (d*a + b)/d with a = -1, b = 1, d = 4 is -3/4 = 0 in C,
// while a + b/d is -1 (a truncating quotient does not split across a sign change).
std::optional<UOp> symbolic_div_mod(const Match& m) {
  const UOp& u = m.root();
  const UOp &x = m["x"], &y = m["y"];
  DType d = u.dtype();
  if (y.op() == Op::CONST || vmin(y) <= 0 || vmin(x) < 0) return std::nullopt;
  int64_t cy;
  std::vector<UOp> fy;
  if (!factors_of(y, cy, fy) || cy <= 0) return std::nullopt;
  std::vector<Term> terms, q_terms, r_terms;
  int64_t k;
  if (!flatten(x, terms, k)) return std::nullopt;
  for (const Term& t : terms) {
    int64_t ct;
    std::vector<UOp> ft;
    bool multiple = factors_of(t.base, ct, ft) && mul_ok(d, ct, t.coeff, ct) && ct % cy == 0;
    for (const UOp& f : fy) {  // y's factors, each taken once from t's
      auto it = multiple ? std::find(ft.begin(), ft.end(), f) : ft.end();
      if (it == ft.end()) {
        multiple = false;
        break;
      }
      ft.erase(it);
    }
    if (!multiple) {
      r_terms.push_back(t);
      continue;
    }
    UOp rest;
    for (const UOp& f : ft) rest = rest ? UOp::make(Op::MUL, {rest, f}) : f;
    q_terms.push_back({rest ? rest : const_int(d, 1), ct / cy});
  }
  if (q_terms.empty()) return std::nullopt;
  UOp q = build_sum(d, q_terms, 0), r = build_sum(d, r_terms, k);
  if (!q || !r || vmin(r) < 0) return std::nullopt;
  if (u.op() == Op::MOD) return UOp::make(Op::MOD, {r, y});
  return UOp::make(Op::ADD, {q, UOp::make(Op::IDIV, {r, y})});
}

// sum < c: constants move right and common factors divide through.
std::optional<UOp> linear_compare(const Match& m) {
  const UOp& u = m.root();
  DType d = m["x"].dtype();
  std::vector<Term> terms;
  int64_t k, c = m["c"].const_int(), rhs;
  if (!flatten(m["x"], terms, k) || !normalize(terms) || terms.empty()) return std::nullopt;
  if (!sub_ok(d, c, k, rhs)) return std::nullopt;
  int64_t g = gcd_of(terms, 0);
  if (u.op() == Op::CMPLT) {
    if (g > 1 || k != 0) {
      for (Term& t : terms) t.coeff /= g;
      UOp lhs = build_sum(d, terms, 0);
      if (!lhs) return std::nullopt;
      return changed(u, UOp::make(Op::CMPLT, {lhs, const_int(d, ceil_div(rhs, g))}));
    }
    // Terms with coefficient multiples of g2 > 1 (g2*B) plus a remainder R in [rlo, rhi]
    // within [0, g2): g2*B + R < rhs is B < ceil((rhs - R)/g2), which R cannot change when
    // that ceiling is the same at rlo and rhi (u + 8*a < 101 with u in [0,3] is a < 13).
    std::vector<Term> big, rest;
    for (const Term& t : terms) (t.coeff > 1 || t.coeff < -1 ? big : rest).push_back(t);
    int64_t g2 = gcd_of(big, 0);
    if (big.empty() || rest.empty() || g2 <= 1) return std::nullopt;
    UOp small = build_sum(d, rest, 0);
    if (!small) return std::nullopt;
    auto [rlo, rhi] = bounds(small);
    int64_t top, bottom;
    if (rlo < 0 || rhi >= g2 || !sub_ok(d, rhs, rhi, bottom) || !sub_ok(d, rhs, rlo, top) ||
        ceil_div(bottom, g2) != ceil_div(top, g2))
      return std::nullopt;
    for (Term& t : big) t.coeff /= g2;
    UOp lhs = build_sum(d, big, 0);
    if (!lhs) return std::nullopt;
    return UOp::make(Op::CMPLT, {lhs, const_int(d, ceil_div(top, g2))});
  }
  bool eq = u.op() == Op::CMPEQ;
  if (rhs % g != 0) return const_bool(!eq);  // no integer solution
  if (g == 1 && k == 0) return std::nullopt;
  for (Term& t : terms) t.coeff /= g;
  UOp lhs = build_sum(d, terms, 0);
  if (!lhs) return std::nullopt;
  return changed(u, UOp::make(u.op(), {lhs, const_int(d, rhs / g)}));
}

// ---- where: what a branch knows -------------------------------------------------------

// A fact: a bool node known to have a value. A comparison of an integer x with a constant
// is an interval of x, so x < 5 being true also decides x < 7 (true) and 6 < x (false).
struct Fact {
  UOp node;
  bool value;
};

// The interval of x that `x < k` or `k < x` having `value` means; nothing for other nodes.
std::optional<std::pair<UOp, std::pair<i128, i128>>> interval_of(const UOp& c, bool value) {
  if (c.op() != Op::CMPLT || !is_index(c.src(0))) return std::nullopt;
  const UOp &a = c.src(0), &b = c.src(1);
  i128 lo = INT64_MIN, hi = INT64_MAX;
  if (b.op() == Op::CONST && a.op() != Op::CONST) {  // a < k
    i128 k = b.const_int();
    if (value)
      hi = k - 1;
    else
      lo = k;
    return std::pair{a, std::pair{lo, hi}};
  }
  if (a.op() == Op::CONST && b.op() != Op::CONST) {  // k < b
    i128 k = a.const_int();
    if (value)
      lo = k + 1;
    else
      hi = k;
    return std::pair{b, std::pair{lo, hi}};
  }
  return std::nullopt;
}

// Whether the facts decide node: the node itself, or a comparison of the same x with a
// constant whose answer is the same everywhere in the fact's interval.
std::optional<bool> decided(const UOp& node, const std::vector<Fact>& facts) {
  for (const Fact& f : facts) {
    if (f.node == node) return f.value;
    auto fi = interval_of(f.node, f.value);
    if (!fi || node.op() != Op::CMPLT) continue;
    auto yes = interval_of(node, true), no = interval_of(node, false);
    if (!yes || yes->first != fi->first) continue;
    auto inside = [&](std::pair<i128, i128> outer) {
      return fi->second.first >= outer.first && fi->second.second <= outer.second;
    };
    if (inside(yes->second)) return true;
    if (inside(no->second)) return false;
  }
  return std::nullopt;
}

// What holds inside the branch of where(c, ...) taken when c has `value`: c itself, and
// the parts of an AND that is true (or an OR that is false); at most 64 facts, collected
// with a worklist (a chain of 100,000 ANDs must not recurse).
void facts_of(const UOp& c, bool value, std::vector<Fact>& out) {
  std::vector<const UOp*> work{&c};
  while (!work.empty() && out.size() < 64) {
    const UOp& n = *work.back();
    work.pop_back();
    out.push_back({n, value});
    if ((n.op() == Op::AND && value) || (n.op() == Op::OR && !value))
      for (const UOp& s : n.src()) work.push_back(&s);
  }
}

// u with every bool node the facts decide replaced by its value, through ALU ops and
// casts only; null when nothing is (or the branch is too large to walk: 256 nodes).
UOp with_facts(const UOp& u, const std::vector<Fact>& facts) {
  if (u.src().empty()) return {};  // a leaf: nothing to decide
  // Only through value arithmetic: a load's gate keeps the memory safe, and a where's
  // branches may both be computed, so nothing below an INDEX or LOAD changes.
  auto pure = [](const UOp& n) { return is_alu(n.op()) || n.op() == Op::CAST; };
  // First a walk that only looks (most branches decide nothing): a flat list of the nodes
  // seen is cheaper than a hash map for the small branches of index arithmetic.
  thread_local std::vector<const void*> seen;  // reused: no allocation per where
  thread_local std::vector<const UOp*> stack;
  seen.clear();
  stack.assign(1, &u);
  bool found = false;
  while (!stack.empty() && !found) {
    const UOp& n = *stack.back();
    stack.pop_back();
    if (std::find(seen.begin(), seen.end(), n.id()) != seen.end()) continue;
    if (seen.size() >= 256) return {};  // too large to walk
    seen.push_back(n.id());
    if (!pure(n)) continue;
    if (n.dtype() == dtypes::bool_ && decided(n, facts)) found = true;
    for (const UOp& s : n.src())  // integer leaves (constants, variables, ranges) decide nothing
      if (!s.src().empty() || (s.dtype() == dtypes::bool_ && s.op() != Op::CONST))
        stack.push_back(&s);
  }
  if (!found) return {};
  std::unordered_map<const void*, UOp> done;
  std::vector<std::pair<UOp, size_t>> work{{u, 0}};
  while (!work.empty()) {
    auto& [n, next] = work.back();
    if (done.count(n.id())) {
      work.pop_back();
      continue;
    }
    if (pure(n) && next < n.src().size()) {
      const UOp& s = n.src(next++);
      if (!done.count(s.id())) work.push_back({s, 0});
      continue;
    }
    UOp r = n;
    if (pure(n) && n.dtype() == dtypes::bool_ && n.op() != Op::CONST)
      if (auto v = decided(n, facts)) r = const_bool(*v);
    if (r == n && pure(n)) {
      std::vector<UOp> src;
      bool changed = false;
      for (const UOp& s : n.src()) {
        src.push_back(done.at(s.id()));
        changed |= src.back() != s;
      }
      if (changed) r = UOp::make(n.op(), n.dtype(), src, n.arg());
    }
    done.emplace(n.id(), r);
    work.pop_back();
  }
  return done.at(u.id());
}

Pat is_true() { return Pat::op({Op::CONST}).dtype(dtypes::bool_).arg(ConstArg{1}); }
Pat is_false() { return Pat::op({Op::CONST}).dtype(dtypes::bool_).arg(ConstArg{0}); }
Pat not_(Pat x) { return Pat::op({Op::XOR}, {std::move(x), is_true()}); }
// The same address without its gate (a vector address stays a vector address).
UOp ungated(const UOp& ix) {
  return UOp::make(Op::INDEX, ix.dtype(), {ix.src(0), ix.src(1)}, ix.arg());
}

Pat sint(std::string name) { return any(std::move(name)).where(is_index); }
Pat bvar(std::string name) { return any(std::move(name)).dtype(dtypes::bool_); }
Pat nonzero_const(std::string name) {
  return cvar(std::move(name)).where([](const UOp& u) {
    return is_index(u) && u.const_int() != 0;
  });
}

std::vector<Rule> make_rules() {
  auto cap = [](const char* n) {
    return [n](const Match& m) -> std::optional<UOp> { return m[n]; };
  };
  auto zero_like = [](const char* n) {
    return [n](const Match& m) -> std::optional<UOp> { return const_int(m[n].dtype(), 0); };
  };
  auto fixed = [](bool v) {
    return [v](const Match&) -> std::optional<UOp> { return const_bool(v); };
  };
  std::vector<Op> commutative_ops = {Op::AND, Op::OR,    Op::XOR,  Op::MAX,
                                     Op::MIN, Op::CMPEQ, Op::CMPNE};
  return {
      {"fold-by-bounds", Pat::any(), fold_by_bounds},
      // identities
      {"x+0", pat(Op::ADD, {sint("x"), cint(0)}).commutative(), cap("x")},
      {"x*1", pat(Op::MUL, {sint("x"), cint(1)}).commutative(), cap("x")},
      {"x*0", pat(Op::MUL, {sint("x"), cint(0)}).commutative(), zero_like("x")},
      {"x/1", pat(Op::IDIV, {sint("x"), cint(1)}), cap("x")},
      {"x%1", pat(Op::MOD, {sint("x"), cint(1)}), zero_like("x")},
      {"x-y", pat(Op::SUB, {sint("x"), any("y")}),
       [](const Match& m) -> std::optional<UOp> {  // not where y*-1 would overflow: y = min
         if (vmin(m["y"]) == m["y"].dtype().imin()) return std::nullopt;
         return m["x"] + UOp::make(Op::MUL, {m["y"], const_int(m["y"].dtype(), -1)});
       }},
      {"-x", pat(Op::NEG, {sint("x")}),
       [](const Match& m) -> std::optional<UOp> { return m["x"] * -1; }},
      {"max(x,x)", Pat::op({Op::MAX, Op::MIN}, {any("x"), any("x")}), cap("x")},
      {"max-by-bounds", Pat::op({Op::MAX, Op::MIN}, {sint("a"), sint("b")}),
       [](const Match& m) -> std::optional<UOp> {
         bool is_max = m.root().op() == Op::MAX;
         const UOp &a = m["a"], &b = m["b"];
         if (vmin(a) >= vmax(b)) return is_max ? a : b;
         if (vmin(b) >= vmax(a)) return is_max ? b : a;
         return std::nullopt;
       }},
      {"const-right", Pat::op(commutative_ops, {cvar("c"), any("x")}),
       [](const Match& m) -> std::optional<UOp> {
         if (m["x"].op() == Op::CONST) return std::nullopt;
         return UOp::make(m.root().op(), {m["x"], m["c"]});
       }},
      // canonical sums and products
      {"canonical-sum", pat(Op::ADD, {sint("a"), any("b")}), canonical_sum},
      {"canonical-product", pat(Op::MUL, {sint("a"), any("b")}), canonical_product},
      // division and modulo
      {"fold-div-mod", Pat::op({Op::IDIV, Op::MOD}, {sint("x"), nonzero_const("c")}), fold_div_mod},
      // bit operators on signed integers. x << k is x * 2^k wherever the shift is defined
      // (a negative x or an overflow is undefined, as for the product); x >> k is x / 2^k
      // and x & (2^k - 1) is x % 2^k only for x >= 0 (-9 >> 3 is -2, -9/8 is -1; -9 & 7 is
      // 7, -9 % 8 is -1); ~x is -x - 1 where -x does not overflow.
      {"x<<k", pat(Op::SHL, {sint("x"), cvar("k")}),
       [](const Match& m) -> std::optional<UOp> {
         int64_t k = m["k"].const_int();
         if (k < 0 || k >= m["x"].dtype().bits() - 1) return std::nullopt;
         return UOp::make(Op::MUL, {m["x"], const_int(m["x"].dtype(), int64_t(1) << k)});
       }},
      {"x>>k", pat(Op::SHR, {sint("x"), cvar("k")}),
       [](const Match& m) -> std::optional<UOp> {
         int64_t k = m["k"].const_int();
         if (k < 0 || k >= m["x"].dtype().bits() - 1 || vmin(m["x"]) < 0) return std::nullopt;
         return UOp::make(Op::IDIV, {m["x"], const_int(m["x"].dtype(), int64_t(1) << k)});
       }},
      {"x&(2^k-1)", pat(Op::AND, {sint("x"), cvar("c")}).commutative(),
       [](const Match& m) -> std::optional<UOp> {
         int64_t c = m["c"].const_int();
         DType d = m["x"].dtype();
         if (c == 0) return const_int(d, 0);
         if (c == -1) return m["x"];
         if (c < 0 || c == d.imax() || (c & (c + 1)) != 0 || vmin(m["x"]) < 0) return std::nullopt;
         return UOp::make(Op::MOD, {m["x"], const_int(d, c + 1)});
       }},
      {"x|0", Pat::op({Op::OR, Op::XOR}, {sint("x"), cint(0)}).commutative(), cap("x")},
      {"x|-1", pat(Op::OR, {sint("x"), cint(-1)}).commutative(),
       [](const Match& m) -> std::optional<UOp> { return const_int(m["x"].dtype(), -1); }},
      {"x&x", Pat::op({Op::AND, Op::OR}, {sint("x"), any("x")}), cap("x")},
      {"x^x", pat(Op::XOR, {sint("x"), any("x")}), zero_like("x")},
      {"~x", pat(Op::XOR, {sint("x"), cint(-1)}).commutative(),
       [](const Match& m) -> std::optional<UOp> {
         const UOp& x = m["x"];
         if (vmin(x) == x.dtype().imin()) return std::nullopt;
         return UOp::make(Op::ADD, {UOp::make(Op::MUL, {x, const_int(x.dtype(), -1)}),
                                    const_int(x.dtype(), -1)});
       }},
      {"symbolic-div-mod", Pat::op({Op::IDIV, Op::MOD}, {sint("x"), sint("y")}), symbolic_div_mod},
      // comparisons
      {"x<x", pat(Op::CMPLT, {any("x"), any("x")}), fixed(false)},
      {"x==x", pat(Op::CMPEQ, {sint("x"), any("x")}), fixed(true)},
      {"x!=x", pat(Op::CMPNE, {sint("x"), any("x")}), fixed(false)},
      // x < y with every coefficient of both sides negative: -y < -x (-a < -b is b < a),
      // where the negated sides stay in range.
      {"-x<-y", pat(Op::CMPLT, {sint("x"), sint("y")}),
       [](const Match& m) -> std::optional<UOp> {
         const UOp &x = m["x"], &y = m["y"];
         std::vector<Term> tx, ty;
         int64_t kx, ky;
         auto scaled = [](const UOp& u) { return u.op() == Op::MUL || u.op() == Op::ADD; };
         if (!scaled(x) || !scaled(y) || !flatten(x, tx, kx) || !flatten(y, ty, ky) || tx.empty() ||
             ty.empty())
           return std::nullopt;
         // Negative and negatable in the dtype (its minimum has no positive twin).
         int64_t lowest = x.dtype().imin();
         auto negative = [&](const Term& t) { return t.coeff < 0 && t.coeff != lowest; };
         if (!std::all_of(tx.begin(), tx.end(), negative) ||
             !std::all_of(ty.begin(), ty.end(), negative) || kx == INT64_MIN || ky == INT64_MIN)
           return std::nullopt;
         for (Term& t : tx) t.coeff = -t.coeff;
         for (Term& t : ty) t.coeff = -t.coeff;
         UOp nx = build_sum(x.dtype(), tx, -kx), ny = build_sum(y.dtype(), ty, -ky);
         if (!nx || !ny) return std::nullopt;
         return UOp::make(Op::CMPLT, {ny, nx});
       }},
      {"linear-compare", Pat::op({Op::CMPLT, Op::CMPEQ, Op::CMPNE}, {sint("x"), cvar("c")}),
       linear_compare},
      // x/d < c with d > 0, truncating: for c > 0, x/d <= c-1 exactly when x < c*d (a
      // negative x has a quotient <= 0 < c); for c <= 0, x/d <= c-1 exactly when
      // x <= (c-1)*d - (d-1), i.e. x < c*d - d + 1 (x/8 < -5 is x < -47, not x < -40).
      {"x/d<c", pat(Op::CMPLT, {pat(Op::IDIV, {sint("x"), cvar("d")}), cvar("c")}),
       [](const Match& m) -> std::optional<UOp> {
         int64_t d = m["d"].const_int(), c = m["c"].const_int(), cd, bound;
         DType t = m["x"].dtype();
         if (d <= 0 || !mul_ok(t, c, d, cd)) return std::nullopt;
         if (c > 0)
           bound = cd;
         else if (!add_ok(t, cd, 1 - d, bound))
           return std::nullopt;
         if (bound < t.imin() || bound > t.imax()) return std::nullopt;
         return UOp::make(Op::CMPLT, {m["x"], const_int(t, bound)});
       }},
      // booleans
      // A bool made an int and compared with 0 or 1 is the bool or its negation.
      {"int(b)!=0", pat(Op::CMPNE, {pat(Op::CAST, {bvar("b")}), cint(0)}), cap("b")},
      {"int(b)==1", pat(Op::CMPEQ, {pat(Op::CAST, {bvar("b")}), cint(1)}), cap("b")},
      {"int(b)==0", Pat::op({Op::CMPEQ}, {pat(Op::CAST, {bvar("b")}), cint(0)}),
       [](const Match& m) -> std::optional<UOp> {
         return UOp::make(Op::XOR, {m["b"], const_bool(true)});
       }},
      {"int(b)!=1", Pat::op({Op::CMPNE}, {pat(Op::CAST, {bvar("b")}), cint(1)}),
       [](const Match& m) -> std::optional<UOp> {
         return UOp::make(Op::XOR, {m["b"], const_bool(true)});
       }},
      // x < c1 together with c2 < x: no integer lies in (c2, c1) when c2 + 1 >= c1, and
      // every integer does when c2 < c1 (the negation of x < c is c-1 < x, so c && !c
      // folds after ! became a comparison).
      {"x<c1 && c2<x",
       pat(Op::AND,
           {pat(Op::CMPLT, {sint("x"), cvar("c1")}), pat(Op::CMPLT, {cvar("c2"), any("x")})})
           .commutative(),
       [](const Match& m) -> std::optional<UOp> {
         if (m["c2"].const_int() >= m["c1"].const_int() - 1) return const_bool(false);
         return std::nullopt;
       }},
      {"x<c1 || c2<x",
       pat(Op::OR,
           {pat(Op::CMPLT, {sint("x"), cvar("c1")}), pat(Op::CMPLT, {cvar("c2"), any("x")})})
           .commutative(),
       [](const Match& m) -> std::optional<UOp> {
         if (m["c2"].const_int() < m["c1"].const_int()) return const_bool(true);
         return std::nullopt;
       }},
      {"x&&true", pat(Op::AND, {bvar("x"), is_true()}).commutative(), cap("x")},
      {"x&&false", pat(Op::AND, {bvar("x"), is_false()}).commutative(), fixed(false)},
      {"x||true", pat(Op::OR, {bvar("x"), is_true()}).commutative(), fixed(true)},
      {"x||false", pat(Op::OR, {bvar("x"), is_false()}).commutative(), cap("x")},
      {"x^false", pat(Op::XOR, {bvar("x"), is_false()}).commutative(), cap("x")},
      {"x&&x", Pat::op({Op::AND, Op::OR}, {bvar("x"), any("x")}), cap("x")},
      {"!!x", not_(not_(any("x"))), cap("x")},
      {"x&&!x", pat(Op::AND, {any("x"), not_(any("x"))}).commutative(), fixed(false)},
      {"x||!x", pat(Op::OR, {any("x"), not_(any("x"))}).commutative(), fixed(true)},
      {"!(a<b)", not_(pat(Op::CMPLT, {sint("a"), any("b")})),
       [](const Match& m) -> std::optional<UOp> {  // b <= a, i.e. b < a+1 when a+1 fits
         const UOp& b = m["b"];                    // a constant: b-1 < a (!(x < 4) is 3 < x)
         if (b.op() == Op::CONST && b.const_int() > b.dtype().imin())
           return UOp::make(Op::CMPLT, {const_int(b.dtype(), b.const_int() - 1), m["a"]});
         if (vmax(m["a"]) >= m["a"].dtype().imax()) return std::nullopt;
         return UOp::make(Op::CMPLT, {m["b"], m["a"] + 1});
       }},
      {"!(a==b)", not_(pat(Op::CMPEQ, {any("a"), any("b")})),
       [](const Match& m) -> std::optional<UOp> { return alu(Op::CMPNE, m["a"], m["b"]); }},
      {"!(a!=b)", not_(pat(Op::CMPNE, {any("a"), any("b")})),
       [](const Match& m) -> std::optional<UOp> { return alu(Op::CMPEQ, m["a"], m["b"]); }},
      {"where(c,a,a)", pat(Op::WHERE, {any(), any("a"), any("a")}), cap("a")},
      // where(a < b, b, a) is max(a, b) and where(a < b, a, b) is min(a, b): exact.
      {"where(a<b,b,a)",
       pat(Op::WHERE, {pat(Op::CMPLT, {sint("a"), any("b")}), any("b"), any("a")}),
       [](const Match& m) -> std::optional<UOp> {
         return UOp::make(Op::MAX, {m["a"], m["b"]});
       }},
      {"where(a<b,a,b)",
       pat(Op::WHERE, {pat(Op::CMPLT, {sint("a"), any("b")}), any("a"), any("b")}),
       [](const Match& m) -> std::optional<UOp> {
         return UOp::make(Op::MIN, {m["a"], m["b"]});
       }},
      // min(min(a, c1), c2) is min(a, min(c1, c2)); likewise max: the constants meet.
      {"min(min(a,c1),c2)",
       Pat::op({Op::MIN, Op::MAX},
               {Pat::op({Op::MIN, Op::MAX}, {any("a"), cvar("c1")}).name("in"), cvar("c2")}),
       [](const Match& m) -> std::optional<UOp> {
         Op op = m.root().op();
         if (m["in"].op() != op) return std::nullopt;
         return UOp::make(op, {m["a"], UOp::make(op, {m["c1"], m["c2"]})});
       }},
      // Inside the branch taken when c holds, c is true (false in the other), at any depth,
      // and so is every comparison of the same x with a constant that c decides.
      {"where-branch-facts", pat(Op::WHERE, {bvar("c"), any("a"), any("b")}),
       [](const Match& m) -> std::optional<UOp> {
         thread_local std::vector<Fact> yes, no;  // reused: no allocation per where
         yes.clear(), no.clear();
         UOp a, b;
         if (!m["a"].src().empty()) facts_of(m["c"], true, yes), a = with_facts(m["a"], yes);
         if (!m["b"].src().empty()) facts_of(m["c"], false, no), b = with_facts(m["b"], no);
         if (!a && !b) return std::nullopt;
         return UOp::make(Op::WHERE, {m["c"], a ? a : m["a"], b ? b : m["b"]});
       }},
      // where(c, where(c2, a, b), b) is where(c, a, b) when c implies c2.
      {"where(c,where(c2,a,b),b)",
       pat(Op::WHERE, {bvar("c"), pat(Op::WHERE, {any("c2"), any("a"), any("b")}), any("b")}),
       [](const Match& m) -> std::optional<UOp> {
         std::vector<Fact> yes;
         facts_of(m["c"], true, yes);
         if (decided(m["c2"], yes) != true) return std::nullopt;
         return UOp::make(Op::WHERE, {m["c"], m["a"], m["b"]});
       }},
      // where(c, 1, 0) is c as an integer (so where(where(c,1,0), 1, 0) never grows).
      {"where(c,1,0)", pat(Op::WHERE, {bvar("c"), cint(1), cint(0)}),
       [](const Match& m) -> std::optional<UOp> { return cast(m["c"], m.root().dtype()); }},
      // max and min of wheres on one condition are a where of maxes (mins).
      {"max(where,where)",
       Pat::op({Op::MAX, Op::MIN}, {pat(Op::WHERE, {any("c"), any("a"), any("b")}),
                                    pat(Op::WHERE, {any("c"), any("d"), any("e")})}),
       [](const Match& m) -> std::optional<UOp> {
         Op op = m.root().op();
         return UOp::make(
             Op::WHERE, {m["c"], UOp::make(op, {m["a"], m["d"]}), UOp::make(op, {m["b"], m["e"]})});
       }},
      {"where(true,a,b)", pat(Op::WHERE, {is_true(), any("a"), any()}), cap("a")},
      {"where(false,a,b)", pat(Op::WHERE, {is_false(), any(), any("b")}), cap("b")},
      {"where(!c,a,b)", pat(Op::WHERE, {not_(any("c")), any("a"), any("b")}),
       [](const Match& m) -> std::optional<UOp> {
         return UOp::make(Op::WHERE, {m["c"], m["b"], m["a"]});
       }},
      // validity gates
      {"load-gate-true",
       pat(Op::LOAD, {pat(Op::INDEX, {any("buf"), any("i"), is_true()}).name("ix"), any()}),
       [](const Match& m) -> std::optional<UOp> { return load(ungated(m["ix"])); }},
      {"load-gate-false", pat(Op::LOAD, {pat(Op::INDEX, {any(), any(), is_false()}), any("alt")}),
       cap("alt")},
      {"store-gate-true",
       pat(Op::STORE, {pat(Op::INDEX, {any("buf"), any("i"), is_true()}).name("ix"), any("v")}),
       [](const Match& m) -> std::optional<UOp> { return store(ungated(m["ix"]), m["v"]); }},
  };
}

}  // namespace

const RuleSet& symbolic_rules() {
  static const RuleSet rules("symbolic", make_rules());
  return rules;
}

UOp simplify(const UOp& u) { return graph_rewrite(u, symbolic_rules()); }

}  // namespace kitten
