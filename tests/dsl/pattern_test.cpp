#include <gtest/gtest.h>

#include "dsl/printer.h"
#include "dsl/rewrite.h"

namespace kitten {
namespace {

UOp var(const char* n) { return define_var(n, 0, 15); }
UOp c(int64_t v) { return const_int(dtypes::int32, v); }

TEST(Pattern, CapturesAndRepeatedNamesMustBeTheSameNode) {
  Match m;
  Pat twice = pat(Op::ADD, {any("x"), any("x")});
  EXPECT_TRUE(match_pattern(twice, var("a") + var("a"), m));
  EXPECT_EQ(m["x"], var("a"));
  EXPECT_FALSE(match_pattern(twice, var("a") + var("b"), m));
  EXPECT_FALSE(m.has("x"));  // a failed match leaves no captures behind
  EXPECT_THROW(m["nothing"], std::out_of_range);
}

TEST(Pattern, OpsDtypeArgAndPredicateConstrainAMatch) {
  Match m;
  EXPECT_TRUE(match_pattern(Pat::op({Op::ADD, Op::MUL}), var("a") * 3, m));
  EXPECT_FALSE(match_pattern(Pat::op({Op::ADD}), var("a") * 3, m));
  EXPECT_TRUE(match_pattern(any().dtype(dtypes::int32), var("a"), m));
  EXPECT_FALSE(match_pattern(any().dtype(dtypes::int64), var("a"), m));
  EXPECT_TRUE(match_pattern(Pat::op({Op::CONST}).arg(const_bits_of_int(3)), c(3), m));
  EXPECT_FALSE(match_pattern(Pat::op({Op::CONST}).arg(const_bits_of_int(3)), c(4), m));
  EXPECT_TRUE(match_pattern(cint(7), c(7), m));
  EXPECT_FALSE(match_pattern(cint(7), var("a"), m));
  Pat even = cvar("k").where([](const UOp& u) { return u.const_int() % 2 == 0; });
  EXPECT_TRUE(match_pattern(even, c(4), m));
  EXPECT_EQ(m["k"], c(4));
  EXPECT_FALSE(match_pattern(even, c(5), m));
  EXPECT_FALSE(match_pattern(pat(Op::ADD, {any()}), var("a") + 1, m));  // source count differs
}

TEST(Pattern, CommutativeMatchesEitherOrderAndBacktracks) {
  Match m;
  Pat p = pat(Op::ADD, {any("x"), cvar("c")}).commutative();
  EXPECT_TRUE(match_pattern(p, var("a") + 1, m));
  EXPECT_TRUE(match_pattern(p, c(1) + var("a"), m));
  EXPECT_EQ(m["x"], var("a"));
  EXPECT_FALSE(match_pattern(pat(Op::ADD, {any("x"), cvar("c")}), c(1) + var("a"), m));
  // The first order binds x = b in the inner product, then fails on the outer source; only
  // trying the inner product's other order finds x = a.
  Pat nested = pat(Op::ADD, {pat(Op::MUL, {any("x"), any("y")}).commutative(), any("x")});
  UOp a = var("a"), b = var("b");
  EXPECT_TRUE(match_pattern(nested, b * a + a, m));
  EXPECT_EQ(m["x"], a);
  EXPECT_EQ(m["y"], b);
}

TEST(RuleSet, DispatchesByRootOpAndNamesTheRuleThatFired) {
  int tried = 0;
  auto counting = [&tried](const UOp&) { return ++tried, true; };
  RuleSet rules("test", {{"mul-rule", Pat::op({Op::MUL}).where(counting),
                          [](const Match&) -> std::optional<UOp> { return std::nullopt; }},
                         {"add-zero", pat(Op::ADD, {any("x"), cint(0)}),
                          [](const Match& m) -> std::optional<UOp> { return m["x"]; }}});
  const std::string* fired = nullptr;
  EXPECT_EQ(rules.rewrite(var("a") + 0, nullptr, &fired), var("a"));
  EXPECT_EQ(*fired, "add-zero");
  EXPECT_EQ(tried, 0);  // the MUL rule was never tried on an ADD
  EXPECT_FALSE(rules.rewrite(var("a") * 2).has_value());
  EXPECT_EQ(tried, 1);
  RuleSet both = rules + RuleSet("more", {});
  EXPECT_EQ(both.name(), "test+more");
  EXPECT_EQ(both.rules().size(), 2u);
}

RuleSet add_zero() {
  return RuleSet("add-zero", {{"x+0", pat(Op::ADD, {any("x"), cint(0)}).commutative(),
                               [](const Match& m) -> std::optional<UOp> { return m["x"]; }}});
}

TEST(GraphRewrite, ReachesAFixedPoint) {
  UOp a = var("a");
  EXPECT_EQ(graph_rewrite(((a + 0) + 0) * ((a + 0) + 0), add_zero()), a * a);
  // A rule whose result lets another rule fire on it: x*2 -> x+x, then x+x -> x*2 would
  // loop; here x*2 -> x+x and (x+x)+0 -> x+x.
  RuleSet rules =
      add_zero() +
      RuleSet("dbl", {{"x*2", pat(Op::MUL, {any("x"), cint(2)}),
                       [](const Match& m) -> std::optional<UOp> { return m["x"] + m["x"]; }}});
  EXPECT_EQ(graph_rewrite((a + 0) * 2 + 0, rules), a + a);
}

TEST(GraphRewrite, BottomUpVisitsSourcesFirstTopDownTheNodeFirst) {
  std::vector<std::string> seen;
  RuleSet record("record", {{"record", Pat::any(), [](const Match& m) -> std::optional<UOp> {
                               m.ctx<std::vector<std::string>>().push_back(
                                   m.root().op() == Op::CONST ? std::to_string(m.root().const_int())
                                                              : op_name(m.root().op()));
                               return std::nullopt;
                             }}});
  UOp g = c(1) + c(2);
  graph_rewrite(g, record, &seen);
  EXPECT_EQ(seen, (std::vector<std::string>{"1", "2", "ADD"}));
  seen.clear();
  RewriteOptions td;
  td.order = RewriteOrder::TopDown;
  graph_rewrite(g, record, &seen, td);
  EXPECT_EQ(seen, (std::vector<std::string>{"ADD", "1", "2"}));
}

TEST(GraphRewrite, TopDownRewritesTheResultAndTheRebuiltNodeAgain) {
  RewriteOptions td;
  td.order = RewriteOrder::TopDown;
  UOp a = var("a");
  EXPECT_EQ(graph_rewrite(((a + 0) + 0) * (a + 0), add_zero(), nullptr, td), a * a);
}

TEST(GraphRewrite, ALoopingRuleIsAnErrorNamingIt) {
  RuleSet swap("swap", {{"swap-add", pat(Op::ADD, {any("x"), any("y")}),
                         [](const Match& m) -> std::optional<UOp> { return m["y"] + m["x"]; }}});
  for (RewriteOrder order : {RewriteOrder::BottomUp, RewriteOrder::TopDown}) {
    RewriteOptions o;
    o.order = order;
    o.max_rewrites_per_node = 50;
    try {
      graph_rewrite(var("a") + var("b"), swap, nullptr, o);
      FAIL() << "no error";
    } catch (const IrError& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("no fixed point after 50 rewrites"), std::string::npos) << m;
      EXPECT_NE(m.find("swap-add"), std::string::npos) << m;
    }
  }
}

TEST(GraphRewrite, AMillionDeepChainWithoutRecursion) {
  UOp a = define_var("chain", 0, 9, dtypes::int64), zero = const_int(dtypes::int64, 0);
  UOp chain = a;
  for (int i = 0; i < 1000000; ++i) chain = chain + zero;
  EXPECT_EQ(graph_rewrite(chain, add_zero()), a);
  RuleSet none("none", {});
  EXPECT_EQ(graph_rewrite(chain, none), chain);
}

TEST(GraphRewrite, TraceNamesEachRuleAndNode) {
  RewriteOptions o;
  o.trace = true;
  testing::internal::CaptureStderr();
  graph_rewrite(var("a") + 0, add_zero(), nullptr, o);
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("rewrite x+0: ADD(DEFINE_VAR@"), std::string::npos) << err;
}

}  // namespace
}  // namespace kitten
