#include "tools/symbolic_fuzz.h"

#include <map>
#include <random>
#include <vector>

#include "dsl/eval.h"
#include "dsl/symbolic.h"
#include "tools/int_expr.h"

namespace kitten {

namespace {

// Draws one expression: int32 or int64; in "edge" cases the variables' ranges touch the
// type's ends and the constants come from the whole range and near its ends, so that
// intermediate values overflow (those assignments are undefined and skipped).
class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {
    type_ = pick(0, 1) ? dtypes::int32 : dtypes::int64;
    edge_ = pick(0, 9) < 3;
  }

  int64_t pick(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  DType type() const { return type_; }

  // A literal the grammar reads back in this type (its minimum as an expression).
  std::string lit(int64_t v) const {
    if (v == type_.imin()) return "(-" + std::to_string(type_.imax()) + "-1)";
    return v < 0 ? "(" + std::to_string(v) + ")" : std::to_string(v);
  }
  int64_t constant() {
    if (!edge_ || pick(0, 2) == 0) return pick(-20, 20);
    int64_t mn = type_.imin(), mx = type_.imax();
    switch (pick(0, 3)) {
      case 0:
        return mn + pick(0, 2);
      case 1:
        return mx - pick(0, 2);
      case 2:
        return pick(mn, mx);
      default:
        return pick(0, 1) ? mx / pick(2, 5) : mn / pick(2, 5);
    }
  }
  ExprVar var(std::string name) {
    int64_t mn = type_.imin(), mx = type_.imax();
    if (!edge_) {
      int64_t lo = pick(-20, 20);
      return {std::move(name), lo, lo + pick(0, 40)};
    }
    switch (pick(0, 3)) {
      case 0:
        return {std::move(name), mn, mn + pick(0, 40)};
      case 1:
        return {std::move(name), mx - pick(0, 40), mx};
      case 2:
        return {std::move(name), mn, mx};
      default: {
        int64_t lo = pick(-20, 20);
        return {std::move(name), lo, lo + pick(0, 40)};
      }
    }
  }

  std::string int_expr(int depth) {
    if (depth == 0 || pick(0, 9) < 3) return leaf();
    auto sub = [&] { return int_expr(depth - 1); };
    switch (pick(0, 15)) {
      case 0:
        return "(" + sub() + " + " + sub() + ")";
      case 1:
        return "(" + sub() + " - " + sub() + ")";
      case 2:
        return "(" + sub() + " * " + sub() + ")";
      case 3:
        return "(" + sub() + " / " + divisor(depth - 1) + ")";
      case 4:
        return "(" + sub() + " % " + divisor(depth - 1) + ")";
      case 5:
        return std::string(pick(0, 1) ? "min(" : "max(") + sub() + ", " + sub() + ")";
      case 6:
        return "where(" + bool_expr(depth - 1) + ", " + sub() + ", " + sub() + ")";
      case 7:
        return "(" + sub() + " * " + lit(pick(-8, 8)) + " + " + sub() + ")";
      case 8:
        return "(" + sub() + " + " + lit(constant()) + ")";
      case 9: {
        static const char* bit[] = {" & ", " | ", " ^ "};
        return "(" + sub() + bit[pick(0, 2)] + (pick(0, 1) ? sub() : lit(mask())) + ")";
      }
      case 10:
        return "(" + sub() + (pick(0, 1) ? " << " : " >> ") + shift_count() + ")";
      case 11:
        return "~" + sub();
      case 12:  // a nested where / min / max on one condition
        return "where(" + bool_expr(depth - 1) + ", " + (pick(0, 1) ? "min(" : "max(") + sub() +
               ", " + sub() + "), " + sub() + ")";
      case 13:  // a sum of two wheres on one condition
      {
        std::string c = bool_expr(depth - 1);
        return "(where(" + c + ", " + sub() + ", 0) + where(" + c + ", 0, " + sub() + "))";
      }
      case 14:  // a div/mod chain of one variable
      {
        int64_t a = pick(2, 6), b = pick(2, 6);
        std::string x = leaf();
        return "((" + x + " / " + std::to_string(a) + ") % " + std::to_string(b) + " * " +
               std::to_string(a) + " + " + x + " % " + std::to_string(a) + ")";
      }
      default:
        return "(" + sub() + " + " + lit(pick(-20, 20)) + ")";
    }
  }

  std::string bool_expr(int depth) {
    static const char* rel[] = {"<", "<=", ">", ">=", "==", "!="};
    switch (depth == 0 ? 0 : pick(0, 5)) {
      case 3:
        return "(" + bool_expr(depth - 1) + " && " + bool_expr(depth - 1) + ")";
      case 4:
        return "(" + bool_expr(depth - 1) + " || " + bool_expr(depth - 1) + ")";
      case 5:
        return "!" + bool_expr(depth - 1);
      default:
        return "(" + int_expr(depth) + " " + rel[pick(0, 5)] + " " + int_expr(depth) + ")";
    }
  }

  std::string top(int depth) { return pick(0, 4) == 0 ? bool_expr(depth) : int_expr(depth); }

 private:
  std::string leaf() {
    switch (pick(0, 5)) {
      case 0:
        return lit(constant());
      case 1:
        return "w";
      case 2:
        return "y";
      default:
        return "x";
    }
  }
  int64_t mask() {
    switch (pick(0, 2)) {
      case 0:
        return (int64_t(1) << pick(0, 12)) - 1;  // 2^k - 1
      case 1:
        return -(int64_t(1) << pick(0, 12));  // clears the low bits
      default:
        return pick(-64, 64);
    }
  }
  std::string shift_count() {
    switch (pick(0, 3)) {
      case 0:
        return "w";  // [1, 9]
      case 1:
        return std::to_string(pick(0, type_.bits() - 1));
      default:
        return std::to_string(pick(0, 6));
    }
  }
  std::string divisor(int depth) {
    switch (pick(0, 6)) {
      case 0:
        return "w";
      case 1:
        return "(w * " + std::to_string(pick(1, 5)) + " + " + std::to_string(pick(0, 3)) + ")";
      case 2:
        return int_expr(depth);  // often rejected: its bounds contain 0
      case 3:
        return "max(" + int_expr(depth) + ", " + std::to_string(pick(1, 4)) + ")";
      default: {
        int64_t d = pick(1, 12);
        return lit(pick(0, 3) == 0 ? -d : d);
      }
    }
  }
  std::mt19937_64 rng_;
  DType type_ = dtypes::int64;
  bool edge_ = false;
};

std::string var_flags(const std::vector<ExprVar>& vars, DType type) {
  std::string v;
  for (const ExprVar& e : vars)
    v += " --var " + e.name + "=" + std::to_string(e.lo) + ".." + std::to_string(e.hi);
  if (type == dtypes::int32) v += " --dtype int32";
  return v;
}

}  // namespace

FuzzResult fuzz_simplify(uint64_t seed, int64_t count) {
  FuzzResult res;
  for (int64_t i = 0; i < count && res.failure.empty(); ++i) {
    Generator g(seed * 0x9e3779b97f4a7c15ull + uint64_t(i));
    std::vector<ExprVar> vars = {g.var("x"), g.var("y"), {"w", 1, g.pick(1, 9)}};
    DType type = g.type();
    std::string text = g.top(int(g.pick(1, 4)));
    UOp orig;
    try {
      orig = parse_int_expr(text, vars, type);
    } catch (const ExprError&) {
      ++res.rejected;
      continue;
    }
    auto where = [&](const std::string& what) {
      return "seed " + std::to_string(seed) + " case " + std::to_string(i) + ": kitten simplify '" +
             text + "'" + var_flags(vars, type) + ": " + what;
    };
    UOp simple;
    std::string rendered;
    UOp reparsed;
    try {
      simple = simplify(orig);
      rendered = render_int_expr(simple);
      reparsed = parse_int_expr(rendered, vars, type);
    } catch (const std::exception& e) {
      res.failure = where(std::string("threw: ") + e.what());
      break;
    }
    auto [lo, hi] = bounds(simple);
    int64_t divisor = known_divisor(simple);
    bool any_defined = false;
    for (int a = 0; a < 24 && res.failure.empty(); ++a) {
      std::map<std::string, int64_t> env;
      for (const ExprVar& e : vars)  // the first 8 assignments are the corners
        env[e.name] = a < 8 ? ((a >> (&e - vars.data())) & 1 ? e.hi : e.lo) : g.pick(e.lo, e.hi);
      std::optional<int64_t> want = eval_int(orig, env);
      if (!want) continue;  // undefined in C (overflow): nothing to compare
      any_defined = true;
      std::optional<int64_t> got = eval_int(simple, env), again = eval_int(reparsed, env);
      std::string at = " at x=" + std::to_string(env["x"]) + " y=" + std::to_string(env["y"]) +
                       " w=" + std::to_string(env["w"]);
      if (got != want)
        res.failure = where("simplified to '" + rendered +
                            "' = " + (got ? std::to_string(*got) : "undefined") +
                            ", original = " + std::to_string(*want) + at);
      else if (again != want)
        res.failure =
            where("the rendered '" + rendered + "' reads back as another expression" + at);
      else if (*got < lo || *got > hi)
        res.failure =
            where("value " + std::to_string(*got) + " outside the bounds [" + std::to_string(lo) +
                  ", " + std::to_string(hi) + "] of '" + rendered + "'" + at);
      else if (divisor == 0 ? *got != 0 : *got % divisor != 0)
        res.failure =
            where("value " + std::to_string(*got) + " is not a multiple of " +
                  std::to_string(divisor) + ", the known divisor of '" + rendered + "'" + at);
    }
    if (any_defined)
      ++res.checked;
    else
      ++res.undefined;
  }
  return res;
}

}  // namespace kitten
