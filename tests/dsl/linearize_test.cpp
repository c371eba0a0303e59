#include <gtest/gtest.h>

#include <algorithm>

#include "dsl/builtin_kernels.h"
#include "dsl/linearize.h"

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

// Depth of loop nesting at each op.
std::vector<int> depths(const LinearProgram& p) {
  std::vector<int> d;
  int depth = 0;
  for (const UOp& u : p.ops) {
    if (u.op() == Op::END) depth -= int(u.src().size()) - 1;
    d.push_back(depth);
    if (u.op() == Op::RANGE) ++depth;
  }
  return d;
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

TEST(Linearize, PrintIndentsLoopBodies) {
  std::string s = print_program(linearize(stencil_kernel(7)));
  EXPECT_NE(s.find("\n  %7 = RANGE(%1) [r0 global] : int32\n    %8 = INDEX"), std::string::npos)
      << s;
  EXPECT_NE(s.find("\n  %22 = END(%21, %7) : void\n"), std::string::npos) << s;
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
  expect_linearize_error(sink({UOp::make(Op::ENDIF, dtypes::void_, {iff, end(st, {r})})}),
                         "IF and ENDIF are not linearized yet");
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
