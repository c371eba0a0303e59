#include "tools/int_expr.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "dsl/symbolic.h"

namespace kitten {

namespace {

// The operators of the grammar, longest first so that "<<" is never read as "<".
constexpr std::string_view kOperators[] = {"||", "&&", "==", "!=", "<=", ">=", "<<", ">>",
                                           "<",  ">",  "|",  "&",  "^",  "+",  "-",  "*",
                                           "/",  "%",  "!",  "~",  "(",  ")",  ","};

// Binary operators by precedence level, lowest first (C's table).
constexpr int kLevels = 10;
const std::vector<std::string_view> kLevelOps[kLevels] = {
    {"||"},       {"&&"},     {"|"},          {"^"}, {"&"}, {"==", "!="}, {"<", "<=", ">", ">="},
    {"<<", ">>"}, {"+", "-"}, {"*", "/", "%"}};

class Parser {
 public:
  Parser(std::string_view text, const std::vector<ExprVar>& vars, DType type)
      : s_(text), vars_(vars), t_(type) {}

  UOp parse() {
    UOp e = binary(0);
    skip();
    if (pos_ < s_.size()) fail("unexpected '" + std::string(1, s_[pos_]) + "'");
    return e;
  }

 private:
  [[noreturn]] void fail(const std::string& what, size_t at = SIZE_MAX) const {
    size_t col = (at == SIZE_MAX ? pos_ : at) + 1;
    throw ExprError("column " + std::to_string(col) + ": " + what);
  }
  void skip() {
    while (pos_ < s_.size() && std::isspace(uint8_t(s_[pos_]))) ++pos_;
  }
  // The operator at the cursor (the longest that matches), or "".
  std::string_view peek_operator() {
    skip();
    for (std::string_view op : kOperators)
      if (s_.substr(pos_, op.size()) == op) return op;
    return {};
  }
  bool eat(std::string_view tok) {
    if (peek_operator() != tok) return false;
    pos_ += tok.size();
    return true;
  }
  void expect(std::string_view tok) {
    if (!eat(tok)) fail("expected '" + std::string(tok) + "'");
  }

  // C conversions: a bool used as a number is 0 or 1, a number used as a truth value is != 0.
  UOp as_int(const UOp& u) const { return u.dtype() == t_ ? u : cast(u, t_); }
  UOp as_bool(const UOp& u) const {
    return u.dtype().is_bool() ? u : alu(Op::CMPNE, u, const_int(t_, 0));
  }
  UOp not_(const UOp& u) const { return alu(Op::XOR, as_bool(u), const_bool(true)); }
  void check_nonzero(const UOp& r, size_t at) const {
    auto [lo, hi] = bounds(r);
    if (lo <= 0 && hi >= 0)
      fail("the divisor can be 0 (its bounds are [" + std::to_string(lo) + ", " +
               std::to_string(hi) + "])",
           at);
  }
  void check_shift_count(const UOp& r, size_t at) const {
    auto [lo, hi] = bounds(r);
    if (lo < 0 || hi > t_.bits() - 1)
      fail("the shift count can fall outside [0, " + std::to_string(t_.bits() - 1) +
               "] (its bounds are [" + std::to_string(lo) + ", " + std::to_string(hi) + "])",
           at);
  }

  UOp combine(std::string_view op, const UOp& l, const UOp& r, size_t at) const {
    if (op == "||") return alu(Op::OR, as_bool(l), as_bool(r));
    if (op == "&&") return alu(Op::AND, as_bool(l), as_bool(r));
    if (op == "|" || op == "^" || op == "&") {
      Op o = op == "|" ? Op::OR : op == "^" ? Op::XOR : Op::AND;
      if (l.dtype().is_bool() && r.dtype().is_bool()) return alu(o, l, r);  // logical
      return alu(o, as_int(l), as_int(r));
    }
    if (op == "==") return alu(Op::CMPEQ, as_int(l), as_int(r));
    if (op == "!=") return alu(Op::CMPNE, as_int(l), as_int(r));
    if (op == "<") return alu(Op::CMPLT, as_int(l), as_int(r));
    if (op == ">") return alu(Op::CMPLT, as_int(r), as_int(l));
    if (op == "<=") return not_(alu(Op::CMPLT, as_int(r), as_int(l)));
    if (op == ">=") return not_(alu(Op::CMPLT, as_int(l), as_int(r)));
    if (op == "<<" || op == ">>") {
      check_shift_count(as_int(r), at);
      return alu(op == "<<" ? Op::SHL : Op::SHR, as_int(l), as_int(r));
    }
    if (op == "+") return alu(Op::ADD, as_int(l), as_int(r));
    if (op == "-") return alu(Op::SUB, as_int(l), as_int(r));
    if (op == "*") return alu(Op::MUL, as_int(l), as_int(r));
    check_nonzero(as_int(r), at);
    return alu(op == "/" ? Op::IDIV : Op::MOD, as_int(l), as_int(r));
  }

  // A left-associative chain of the operators of `level`: a loop, whatever its length.
  UOp binary(int level) {
    if (level == kLevels) return unary();
    UOp l = binary(level + 1);
    for (;;) {
      std::string_view op = peek_operator();
      const auto& ops = kLevelOps[level];
      if (op.empty() || std::find(ops.begin(), ops.end(), op) == ops.end()) return l;
      pos_ += op.size();
      skip();
      size_t at = pos_;
      l = combine(op, l, binary(level + 1), at);
    }
  }
  UOp unary() {
    if (++depth_ > 200) fail("the expression is nested too deeply (more than 200 levels)");
    UOp r;
    if (eat("-"))
      r = UOp::make(Op::NEG, {as_int(unary())});
    else if (eat("!"))
      r = not_(unary());
    else if (eat("~"))
      r = alu(Op::XOR, as_int(unary()), const_int(t_, -1));
    else if (eat("+"))
      r = as_int(unary());
    else
      r = primary();
    --depth_;
    return r;
  }
  void call_args(int n, std::vector<UOp>& args) {
    expect("(");
    for (int i = 0; i < n; ++i) {
      if (i) expect(",");
      args.push_back(binary(0));
    }
    expect(")");
  }
  UOp literal() {
    size_t start = pos_;
    bool hex = s_.substr(pos_, 2) == "0x" || s_.substr(pos_, 2) == "0X";
    if (!hex && s_[pos_] == '0' && pos_ + 1 < s_.size() && std::isdigit(uint8_t(s_[pos_ + 1])))
      fail("a literal with a leading 0 is octal in C: write it in decimal (or 0x hex)", start);
    if (hex) pos_ += 2;
    uint64_t v;
    auto [p, ec] = std::from_chars(s_.data() + pos_, s_.data() + s_.size(), v, hex ? 16 : 10);
    if (ec == std::errc::invalid_argument) fail("expected hex digits after 0x", start);
    std::string tname(t_.name());
    if (ec != std::errc() || v > uint64_t(t_.imax()))
      fail("the literal does not fit in " + tname, start);
    pos_ = size_t(p - s_.data());
    if (pos_ < s_.size() && (std::isalnum(uint8_t(s_[pos_])) || s_[pos_] == '_'))
      fail("unexpected '" + std::string(1, s_[pos_]) + "' after a literal");
    return const_int(t_, int64_t(v));
  }
  UOp primary() {
    skip();
    if (pos_ >= s_.size()) fail("expected an operand, found the end");
    char c = s_[pos_];
    if (c == '(') {
      ++pos_;
      UOp e = binary(0);
      expect(")");
      return e;
    }
    if (std::isdigit(uint8_t(c))) return literal();
    if (std::isalpha(uint8_t(c)) || c == '_') {
      size_t start = pos_;
      while (pos_ < s_.size() && (std::isalnum(uint8_t(s_[pos_])) || s_[pos_] == '_')) ++pos_;
      std::string name(s_.substr(start, pos_ - start));
      std::vector<UOp> a;
      if (name == "min" || name == "max") {
        call_args(2, a);
        return alu(name == "min" ? Op::MIN : Op::MAX, as_int(a[0]), as_int(a[1]));
      }
      if (name == "where") {
        call_args(3, a);
        bool ints = !a[1].dtype().is_bool() || !a[2].dtype().is_bool();
        return UOp::make(Op::WHERE,
                         {as_bool(a[0]), ints ? as_int(a[1]) : a[1], ints ? as_int(a[2]) : a[2]});
      }
      for (const ExprVar& v : vars_) {
        if (v.name != name) continue;
        if (v.lo < t_.imin() || v.hi > t_.imax())
          fail("the bounds of '" + name + "' do not fit in " + std::string(t_.name()), start);
        return define_var(v.name, v.lo, v.hi, t_);
      }
      fail("the variable '" + name + "' has no bounds: pass --var " + name + "=LO..HI", start);
    }
    fail("expected an operand, found '" + std::string(1, c) + "'");
  }

  std::string_view s_;
  const std::vector<ExprVar>& vars_;
  DType t_;
  size_t pos_ = 0;
  int depth_ = 0;
};

// ---- rendering -------------------------------------------------------------------------

enum Prec { kOr = 1, kAnd, kBitOr, kBitXor, kBitAnd, kEq, kRel, kShift, kAdd, kMul, kUnary, kAtom };

// How a node prints: its precedence and its pieces, text and sources each printed at a
// least precedence (parenthesised below it). Rendering walks the pieces with an explicit
// stack, so a chain of any length prints without recursion.
struct Piece {
  std::string text;
  const UOp* node = nullptr;
  int min_prec = 0;
};
struct Layout {
  int prec;
  std::vector<Piece> pieces;
};

bool negative_const(const UOp& u) {
  return u.op() == Op::CONST && u.const_int() < 0 && u.const_int() > u.dtype().imin();
}
bool is_true_const(const UOp& u) {
  return u.op() == Op::CONST && u.dtype().is_bool() && u.const_int() == 1;
}

Layout infix(const UOp& u, const char* symbol, int prec, bool spaced = true) {
  std::string s = spaced ? std::string(" ") + symbol + " " : symbol;
  return {prec, {{"", &u.src(0), prec}, {s}, {"", &u.src(1), prec + 1}}};
}

Layout call(const char* name, const UOp& u) {
  Layout l{kAtom, {{std::string(name) + "("}}};
  for (size_t i = 0; i < u.src().size(); ++i) {
    if (i) l.pieces.push_back({", "});
    l.pieces.push_back({"", &u.src(i), 0});
  }
  l.pieces.push_back({")"});
  return l;
}

Layout layout(const UOp& n) {
  const UOp* p = &n;
  while (p->op() == Op::CAST) p = &p->src(0);  // bool to int, implicit as in C
  const UOp& u = *p;
  Op op = u.op();
  bool b = u.dtype().is_bool();
  switch (op) {
    case Op::CONST: {
      int64_t v = u.const_int();
      // The type's minimum has no literal: -9223372036854775808 is the negation of a literal
      // that does not fit (as in C), so it prints as an expression that parses back.
      if (v == u.dtype().imin() && v < 0)
        return {kAtom, {{"(-" + std::to_string(u.dtype().imax()) + "-1)"}}};
      return {v < 0 ? int(kUnary) : int(kAtom), {{std::to_string(v)}}};
    }
    case Op::DEFINE_VAR:
      return {kAtom, {{std::get<VarArg>(u.arg()).name}}};
    case Op::NEG:
      return {kUnary, {{"-"}, {"", &u.src(0), kUnary}}};
    case Op::MAX:
      return call("max", u);
    case Op::MIN:
      return call("min", u);
    case Op::WHERE:
      return call("where", u);
    case Op::ADD: {  // a + -k and a + b*-k read as subtractions
      const UOp &a = u.src(0), &c = u.src(1);
      if (negative_const(c))
        return {kAdd, {{"", &a, kAdd}, {" - " + std::to_string(-c.const_int())}}};
      // (b*k must not overflow where b*-k does not: -2^31 fits an int32, 2^31 does not)
      if (c.op() == Op::MUL && negative_const(c.src(1)) && vmin(c) > c.dtype().imin()) {
        int64_t k = -c.src(1).const_int();
        if (k == 1) return {kAdd, {{"", &a, kAdd}, {" - "}, {"", &c.src(0), kAdd + 1}}};
        return {kAdd, {{"", &a, kAdd}, {" - "}, {"", &c.src(0), kMul}, {"*" + std::to_string(k)}}};
      }
      return infix(u, "+", kAdd);
    }
    case Op::SUB:
      return infix(u, "-", kAdd);
    case Op::MUL:
      if (u.src(1).op() == Op::CONST && u.src(1).const_int() == -1)
        return {kUnary, {{"-"}, {"", &u.src(0), kUnary}}};
      return infix(u, "*", kMul, false);
    case Op::IDIV:
      return infix(u, "/", kMul, false);
    case Op::MOD:
      return infix(u, "%", kMul, false);
    case Op::SHL:
      return infix(u, "<<", kShift);
    case Op::SHR:
      return infix(u, ">>", kShift);
    case Op::CMPLT: {
      // k < a reads as a >= k+1 (so !(a < 10), which becomes 9 < a, prints a >= 10).
      const UOp& k = u.src(0);
      if (k.op() == Op::CONST && k.const_int() < k.dtype().imax() && u.src(1).op() != Op::CONST)
        return {kRel, {{"", &u.src(1), kRel}, {" >= " + std::to_string(k.const_int() + 1)}}};
      return infix(u, "<", kRel);
    }
    case Op::CMPEQ:
      return infix(u, "==", kEq);
    case Op::CMPNE:
      return infix(u, "!=", kEq);
    case Op::AND:
      return b ? infix(u, "&&", kAnd) : infix(u, "&", kBitAnd);
    case Op::OR:
      return b ? infix(u, "||", kOr) : infix(u, "|", kBitOr);
    case Op::XOR: {
      const UOp &a = u.src(0), &c = u.src(1);
      if (b && is_true_const(c)) {
        if (a.op() == Op::CMPLT)  // !(x < y) is x >= y
          return {kRel, {{"", &a.src(0), kRel}, {" >= "}, {"", &a.src(1), kRel + 1}}};
        return {kUnary, {{"!"}, {"", &a, kUnary}}};
      }
      if (!b && c.op() == Op::CONST && c.const_int() == -1)
        return {kUnary, {{"~"}, {"", &a, kUnary}}};
      return b ? infix(u, "!=", kEq) : infix(u, "^", kBitXor);
    }
    default:
      throw IrError("render_int_expr: " + op_name(op) + " is not in the grammar");
  }
}

}  // namespace

UOp parse_int_expr(std::string_view text, const std::vector<ExprVar>& vars, DType type) {
  if (!(type == dtypes::int32 || type == dtypes::int64))
    throw ExprError("expressions are int32 or int64, not " + std::string(type.name()));
  return Parser(text, vars, type).parse();
}

ExprVar parse_var_bounds(std::string_view spec) {
  size_t eq = spec.find('='), dots = spec.find("..");
  auto bad = [&](const std::string& why) {
    return ExprError("--var " + std::string(spec) + ": " + why +
                     " (expected NAME=LO..HI, e.g. x=0..15)");
  };
  if (eq == std::string_view::npos || dots == std::string_view::npos || dots < eq)
    throw bad("malformed");
  ExprVar v{std::string(spec.substr(0, eq)), 0, 0};
  if (v.name.empty() || std::isdigit(uint8_t(v.name[0])) ||
      !std::all_of(v.name.begin(), v.name.end(),
                   [](char c) { return std::isalnum(uint8_t(c)) || c == '_'; }))
    throw bad("the name is not an identifier");
  auto num = [&](std::string_view t, int64_t& out) {
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
    if (t.empty() || ec != std::errc() || p != t.data() + t.size())
      throw bad("'" + std::string(t) + "' is not an integer");
  };
  num(spec.substr(eq + 1, dots - eq - 1), v.lo);
  num(spec.substr(dots + 2), v.hi);
  if (v.lo > v.hi) throw bad("the range is empty (lo > hi)");
  return v;
}

std::string render_int_expr(const UOp& u) {
  std::string out;
  std::vector<Piece> stack{{"", &u, 0}};
  while (!stack.empty()) {
    Piece it = std::move(stack.back());
    stack.pop_back();
    if (!it.node) {
      out += it.text;
      continue;
    }
    Layout l = layout(*it.node);
    bool paren = l.prec < it.min_prec;
    if (paren) stack.push_back({")"});
    for (size_t i = l.pieces.size(); i-- > 0;) stack.push_back(std::move(l.pieces[i]));
    if (paren) stack.push_back({"("});
  }
  return out;
}

}  // namespace kitten
