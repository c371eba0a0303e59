#include "tools/int_expr.h"

#include <cctype>
#include <charconv>
#include <unordered_map>

#include "dsl/printer.h"
#include "dsl/symbolic.h"

namespace kitten {

namespace {

constexpr DType kInt = dtypes::int64;

class Parser {
 public:
  Parser(std::string_view text, const std::vector<ExprVar>& vars) : s_(text), vars_(vars) {}

  UOp parse() {
    UOp e = or_expr();
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
  bool eat(std::string_view tok) {
    skip();
    if (s_.substr(pos_, tok.size()) != tok) return false;
    // "<" must not eat the "<" of "<=", "!" not the "!" of "!=" ...
    if ((tok == "<" || tok == ">" || tok == "!" || tok == "=") && pos_ + 1 < s_.size() &&
        s_[pos_ + 1] == '=')
      return false;
    pos_ += tok.size();
    return true;
  }
  void expect(std::string_view tok) {
    if (!eat(tok)) fail("expected '" + std::string(tok) + "'");
  }

  // C conversions: a bool used as a number is 0 or 1, a number used as a truth value is != 0.
  static UOp as_int(const UOp& u) { return u.dtype() == kInt ? u : cast(u, kInt); }
  static UOp as_bool(const UOp& u) {
    return u.dtype().is_bool() ? u : alu(Op::CMPNE, u, const_int(kInt, 0));
  }
  static UOp not_(const UOp& u) { return alu(Op::XOR, as_bool(u), const_bool(true)); }

  UOp or_expr() {
    UOp l = and_expr();
    while (eat("||")) l = alu(Op::OR, as_bool(l), as_bool(and_expr()));
    return l;
  }
  UOp and_expr() {
    UOp l = eq_expr();
    while (eat("&&")) l = alu(Op::AND, as_bool(l), as_bool(eq_expr()));
    return l;
  }
  UOp eq_expr() {
    UOp l = rel_expr();
    for (;;) {
      if (eat("=="))
        l = alu(Op::CMPEQ, as_int(l), as_int(rel_expr()));
      else if (eat("!="))
        l = alu(Op::CMPNE, as_int(l), as_int(rel_expr()));
      else
        return l;
    }
  }
  UOp rel_expr() {
    UOp l = add_expr();
    for (;;) {
      if (eat("<="))
        l = not_(alu(Op::CMPLT, as_int(add_expr()), as_int(l)));
      else if (eat(">="))
        l = not_(alu(Op::CMPLT, as_int(l), as_int(add_expr())));
      else if (eat("<"))
        l = alu(Op::CMPLT, as_int(l), as_int(add_expr()));
      else if (eat(">"))
        l = alu(Op::CMPLT, as_int(add_expr()), as_int(l));
      else
        return l;
    }
  }
  UOp add_expr() {
    UOp l = mul_expr();
    for (;;) {
      if (eat("+"))
        l = alu(Op::ADD, as_int(l), as_int(mul_expr()));
      else if (eat("-"))
        l = alu(Op::SUB, as_int(l), as_int(mul_expr()));
      else
        return l;
    }
  }
  UOp mul_expr() {
    UOp l = unary();
    for (;;) {
      if (eat("*")) {
        l = alu(Op::MUL, as_int(l), as_int(unary()));
        continue;
      }
      Op op;
      if (eat("/"))
        op = Op::IDIV;
      else if (eat("%"))
        op = Op::MOD;
      else
        return l;
      skip();
      size_t at = pos_;
      UOp r = as_int(unary());
      auto [lo, hi] = bounds(r);
      if (lo <= 0 && hi >= 0)
        fail("the divisor can be 0 (its bounds are [" + std::to_string(lo) + ", " +
                 std::to_string(hi) + "])",
             at);
      l = alu(op, as_int(l), r);
    }
  }
  UOp unary() {
    if (++depth_ > 200) fail("the expression is nested too deeply");
    UOp r;
    if (eat("-"))
      r = UOp::make(Op::NEG, {as_int(unary())});
    else if (eat("!"))
      r = not_(unary());
    else if (eat("+"))
      r = as_int(unary());
    else
      r = primary();
    --depth_;
    return r;
  }
  UOp call_args(int n, std::vector<UOp>& args) {
    expect("(");
    for (int i = 0; i < n; ++i) {
      if (i) expect(",");
      args.push_back(or_expr());
    }
    expect(")");
    return {};
  }
  UOp primary() {
    skip();
    if (pos_ >= s_.size()) fail("expected an operand, found the end");
    char c = s_[pos_];
    if (c == '(') {
      ++pos_;
      UOp e = or_expr();
      expect(")");
      return e;
    }
    if (std::isdigit(uint8_t(c))) {
      int64_t v;
      size_t start = pos_;
      auto [p, ec] = std::from_chars(s_.data() + pos_, s_.data() + s_.size(), v);
      if (ec != std::errc()) fail("the literal does not fit in int64", start);
      pos_ = size_t(p - s_.data());
      return const_int(kInt, v);
    }
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
      for (const ExprVar& v : vars_)
        if (v.name == name) return define_var(v.name, v.lo, v.hi, kInt);
      fail("the variable '" + name + "' has no bounds: pass --var " + name + "=LO..HI", start);
    }
    fail("expected an operand, found '" + std::string(1, c) + "'");
  }

  std::string_view s_;
  const std::vector<ExprVar>& vars_;
  size_t pos_ = 0;
  int depth_ = 0;
};

// ---- rendering -------------------------------------------------------------------------

enum Prec { kOr = 1, kAnd, kEq, kRel, kAdd, kMul, kUnary, kAtom };

struct Text {
  std::string s;
  int prec;
};

class Renderer {
 public:
  Text render(const UOp& u) {
    if (auto it = memo_.find(u.id()); it != memo_.end()) return it->second;
    Text t = compute(u);
    memo_.emplace(u.id(), t);
    return t;
  }

 private:
  std::string at_least(const UOp& u, int prec) {
    Text t = render(u);
    return t.prec >= prec ? t.s : "(" + t.s + ")";
  }
  Text binary(const UOp& a, const char* op, const UOp& b, int prec) {
    return {at_least(a, prec) + " " + op + " " + at_least(b, prec + 1), prec};
  }
  static bool negative_const(const UOp& u) { return u.op() == Op::CONST && u.const_int() < 0; }

  // The infix operators of the grammar: symbol and precedence.
  struct Infix {
    Op op;
    const char* symbol;
    int prec;
  };
  static constexpr Infix kInfix[] = {
      {Op::ADD, "+", kAdd},  {Op::SUB, "-", kAdd},   {Op::MUL, "*", kMul},   {Op::IDIV, "/", kMul},
      {Op::MOD, "%", kMul},  {Op::CMPLT, "<", kRel}, {Op::CMPEQ, "==", kEq}, {Op::CMPNE, "!=", kEq},
      {Op::AND, "&&", kAnd}, {Op::OR, "||", kOr},    {Op::XOR, "!=", kEq},
  };

  Text compute(const UOp& u) {
    Op op = u.op();
    if (op == Op::CONST) {
      int64_t v = u.const_int();
      // INT64_MIN has no literal: -9223372036854775808 is the negation of a literal that
      // does not fit (as in C), so it prints as an expression that parses back.
      if (v == INT64_MIN) return {"(-9223372036854775807-1)", kAtom};
      return {std::to_string(v), v < 0 ? int(kUnary) : int(kAtom)};
    }
    if (op == Op::DEFINE_VAR) return {std::get<VarArg>(u.arg()).name, kAtom};
    if (op == Op::CAST) return render(u.src(0));  // bool to int, implicit as in C
    if (op == Op::NEG) return {"-" + at_least(u.src(0), kUnary), kUnary};
    if (op == Op::MAX || op == Op::MIN)
      return {std::string(op == Op::MAX ? "max(" : "min(") + render(u.src(0)).s + ", " +
                  render(u.src(1)).s + ")",
              kAtom};
    if (op == Op::WHERE)
      return {"where(" + render(u.src(0)).s + ", " + render(u.src(1)).s + ", " +
                  render(u.src(2)).s + ")",
              kAtom};
    if (op == Op::ADD) {  // a + -k and a + b*-k read as subtractions
      const UOp &a = u.src(0), &b = u.src(1);
      if (negative_const(b) && b.const_int() != INT64_MIN)
        return {at_least(a, kAdd) + " - " + std::to_string(-b.const_int()), kAdd};
      if (b.op() == Op::MUL && negative_const(b.src(1)) && b.src(1).const_int() != INT64_MIN) {
        int64_t k = -b.src(1).const_int();
        std::string rhs = k == 1 ? at_least(b.src(0), kAdd + 1)
                                 : at_least(b.src(0), kMul) + "*" + std::to_string(k);
        return {at_least(a, kAdd) + " - " + rhs, kAdd};
      }
    }
    if (op == Op::MUL && u.src(1).op() == Op::CONST && u.src(1).const_int() == -1)
      return {"-" + at_least(u.src(0), kUnary), kUnary};
    if (op == Op::XOR && u.src(1).op() == Op::CONST && u.src(1).const_int() == 1)
      return {"!" + at_least(u.src(0), kUnary), kUnary};
    for (const Infix& i : kInfix) {
      if (i.op != op) continue;
      if (i.prec == kMul)  // no spaces around * / %
        return {at_least(u.src(0), kMul) + i.symbol + at_least(u.src(1), kMul + 1), kMul};
      return binary(u.src(0), i.symbol, u.src(1), i.prec);
    }
    throw IrError("render_int_expr: " + op_name(op) + " is not in the grammar");
  }

  std::unordered_map<const void*, Text> memo_;
};

}  // namespace

UOp parse_int_expr(std::string_view text, const std::vector<ExprVar>& vars) {
  return Parser(text, vars).parse();
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

std::string render_int_expr(const UOp& u) { return Renderer().render(u).s; }

}  // namespace kitten
