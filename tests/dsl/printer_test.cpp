#include <gtest/gtest.h>

#include "dsl/printer.h"

namespace kitten {
namespace {

TEST(Printer, SharedNodesAreNamedOnceAndReferredToByName) {
  UOp x = define_var("x", 0, 15);
  UOp y = x * 4;
  UOp root = y + y;
  EXPECT_EQ(print_graph(root),
            "  %0 = DEFINE_VAR [x 0..15] : int32\n"
            "  %1 = CONST [4] : int32\n"
            "  %2 = MUL(%0, %1) : int32\n"
            "  %3 = ADD(%2, %2) : int32\n");
}

TEST(Printer, ShowsArgsOfEveryKindAndMarksANode) {
  UOp buf = param(0, dtypes::float16.ptr());
  UOp r = range(7, 2, AxisKind::Reduce);
  UOp v = load(index(buf, r)) * const_(dtypes::float16, 0.1);
  std::string s = print_graph(v, r);
  EXPECT_NE(s.find("PARAM [0] : ptr<float16,global>"), std::string::npos) << s;
  EXPECT_NE(s.find("RANGE(%1) [r2 reduce] : int32   <--"), std::string::npos) << s;
  EXPECT_NE(s.find("CONST [0.1] : float16"), std::string::npos) << s;  // shortest that reads back
  EXPECT_NE(s.find("INDEX(%0, %2) : ptr<float16,global>"), std::string::npos) << s;
}

TEST(Printer, ConstantsPrintAsValuesOfTheirDtype) {
  auto text = [](const UOp& u) { return print_graph(u); };
  EXPECT_EQ(text(const_(dtypes::float32, -0.0)), "  %0 = CONST [-0] : float32\n");
  EXPECT_EQ(text(const_(dtypes::float32, 0.1)), "  %0 = CONST [0.1] : float32\n");
  EXPECT_EQ(text(const_(dtypes::float64, 0.1)), "  %0 = CONST [0.1] : float64\n");
  EXPECT_EQ(text(const_(dtypes::float32, 1.0 / 3)), "  %0 = CONST [0.33333334] : float32\n");
  EXPECT_EQ(text(const_bool(true)), "  %0 = CONST [true] : bool\n");
  EXPECT_EQ(text(const_int(dtypes::uint64, -1)), "  %0 = CONST [18446744073709551615] : uint64\n");
  EXPECT_EQ(text(special(SpecialKind::BlockIdx, 1, 4)),
            "  %0 = CONST [4] : int32\n  %1 = SPECIAL(%0) [blockIdx.y] : int32\n");
}

TEST(Printer, ToposortPutsSourcesFirstAndVisitsEachNodeOnce) {
  UOp x = define_var("x", 0, 15);
  UOp a = x + 1, b = x * 2;
  auto order = toposort(a + b);
  ASSERT_EQ(order.size(), 6u);
  EXPECT_EQ(order.back(), a + b);
  EXPECT_EQ(order.front(), x);
  EXPECT_TRUE(toposort(UOp()).empty());
}

TEST(Printer, DescribeIsOneLineWithShortKeys) {
  std::string d = describe(define_var("x", 0, 3) + 1);
  EXPECT_EQ(d.find('\n'), std::string::npos);
  EXPECT_EQ(d.rfind("ADD(DEFINE_VAR@", 0), 0u) << d;
}

}  // namespace
}  // namespace kitten
