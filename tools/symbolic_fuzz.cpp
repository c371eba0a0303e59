#include "tools/symbolic_fuzz.h"

#include <random>
#include <vector>

#include "dsl/eval.h"
#include "dsl/symbolic.h"
#include "tools/int_expr.h"

namespace kitten {

namespace {

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  int64_t pick(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }

  std::string int_expr(int depth) {
    if (depth == 0 || pick(0, 9) < 3) return leaf();
    switch (pick(0, 9)) {
      case 0:
        return "(" + int_expr(depth - 1) + " + " + int_expr(depth - 1) + ")";
      case 1:
        return "(" + int_expr(depth - 1) + " - " + int_expr(depth - 1) + ")";
      case 2:
        return "(" + int_expr(depth - 1) + " * " + int_expr(depth - 1) + ")";
      case 3:
        return "(" + int_expr(depth - 1) + " / " + divisor(depth - 1) + ")";
      case 4:
        return "(" + int_expr(depth - 1) + " % " + divisor(depth - 1) + ")";
      case 5:
        return std::string(pick(0, 1) ? "min(" : "max(") + int_expr(depth - 1) + ", " +
               int_expr(depth - 1) + ")";
      case 6:
        return "where(" + bool_expr(depth - 1) + ", " + int_expr(depth - 1) + ", " +
               int_expr(depth - 1) + ")";
      case 7:
        return "(" + int_expr(depth - 1) + " * " + std::to_string(pick(-8, 8)) + " + " +
               int_expr(depth - 1) + ")";
      default:
        return "(" + int_expr(depth - 1) + " + " + std::to_string(pick(-20, 20)) + ")";
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
        return std::to_string(pick(-12, 12));
      case 1:
        return "w";
      case 2:
        return "y";
      default:
        return "x";
    }
  }
  std::string divisor(int depth) {
    switch (pick(0, 4)) {
      case 0:
        return "w";
      case 1:
        return "(w * " + std::to_string(pick(1, 5)) + " + " + std::to_string(pick(0, 3)) + ")";
      case 2:
        return int_expr(depth);  // often rejected: its bounds contain 0
      default: {
        int64_t d = pick(1, 12);
        return std::to_string(pick(0, 3) == 0 ? -d : d);
      }
    }
  }
  std::mt19937_64 rng_;
};

}  // namespace

FuzzResult fuzz_simplify(uint64_t seed, int64_t count) {
  FuzzResult res;
  for (int64_t i = 0; i < count && res.failure.empty(); ++i) {
    Generator g(seed * 0x9e3779b97f4a7c15ull + uint64_t(i));
    int64_t xlo = g.pick(-20, 20), ylo = g.pick(-20, 20);
    std::vector<ExprVar> vars = {
        {"x", xlo, xlo + g.pick(0, 40)}, {"y", ylo, ylo + g.pick(0, 40)}, {"w", 1, g.pick(1, 9)}};
    std::string text = g.top(int(g.pick(1, 4)));
    UOp orig;
    try {
      orig = parse_int_expr(text, vars);
    } catch (const ExprError&) {
      ++res.rejected;
      continue;
    }
    auto where = [&](const std::string& what) {
      std::string v;
      for (const ExprVar& e : vars)
        v += " --var " + e.name + "=" + std::to_string(e.lo) + ".." + std::to_string(e.hi);
      return "seed " + std::to_string(seed) + " case " + std::to_string(i) + ": kitten simplify '" +
             text + "'" + v + ": " + what;
    };
    UOp simple;
    std::string rendered;
    UOp reparsed;
    try {
      simple = simplify(orig);
      rendered = render_int_expr(simple);
      reparsed = parse_int_expr(rendered, vars);
    } catch (const std::exception& e) {
      res.failure = where(std::string("threw: ") + e.what());
      break;
    }
    auto [lo, hi] = bounds(simple);
    for (int a = 0; a < 24 && res.failure.empty(); ++a) {
      std::map<std::string, int64_t> env;
      for (const ExprVar& e : vars)  // the first 8 assignments are the corners
        env[e.name] = a < 8 ? ((a >> (&e - vars.data())) & 1 ? e.hi : e.lo) : g.pick(e.lo, e.hi);
      std::optional<int64_t> want = eval_int(orig, env);
      if (!want) continue;  // undefined in C (overflow): nothing to compare
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
    }
    ++res.checked;
  }
  return res;
}

}  // namespace kitten
