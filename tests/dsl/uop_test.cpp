#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>

#include "dsl/printer.h"
#include "dsl/uop.h"
#include "dsl/verify.h"

namespace kitten {
namespace {

TEST(UOp, StructurallyEqualNodesAreOneObject) {
  UOp a = const_int(dtypes::int32, 3), b = const_int(dtypes::int32, 3);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.id(), b.id());
  UOp x = define_var("x", 0, 15);
  EXPECT_EQ(x + a, x + b);
  EXPECT_NE(x + a, a + x);  // sources in order are part of identity
  EXPECT_NE(const_int(dtypes::int32, 3), const_int(dtypes::int64, 3));
  EXPECT_NE(range(8, 0, AxisKind::Loop), range(8, 0, AxisKind::Reduce));
  EXPECT_NE(range(8, 0, AxisKind::Loop), range(8, 1, AxisKind::Loop));
}

TEST(UOp, ConstantsCompareByBitPattern) {
  UOp pz = const_(dtypes::float32, 0.0), nz = const_(dtypes::float32, -0.0);
  EXPECT_NE(pz, nz);
  EXPECT_TRUE(std::signbit(nz.const_value()));
  EXPECT_EQ(const_(dtypes::float32, NAN), const_(dtypes::float32, NAN));
  EXPECT_EQ(const_(dtypes::float64, 1.0).const_value(), 1.0);
}

TEST(UOp, ConstantsAreRoundedToTheirDtype) {
  EXPECT_EQ(const_(dtypes::float16, 0.1).const_value(),
            decode_float(kFloat16, float_to_half(0.1f)));
  EXPECT_EQ(const_(dtypes::float32, 0.1).const_value(), double(0.1f));
  EXPECT_EQ(const_(dtypes::float8_e4m3, 1000.0).const_value(), 448.0);
  EXPECT_EQ(const_(dtypes::float64, 0.1).const_value(), 0.1);
  EXPECT_EQ(const_int(dtypes::float32, 16777217).const_value(), 16777216.0);
  EXPECT_EQ(const_(dtypes::int8, -128.0).const_int(), -128);
  EXPECT_EQ(const_int(dtypes::uint64, -1).const_int(), -1);  // the bits of UINT64_MAX
  EXPECT_EQ(const_bool(true).const_int(), 1);
  EXPECT_THROW(const_(dtypes::int32, 1.5), IrError);
  EXPECT_THROW(const_(dtypes::int32, 1e30), IrError);
  EXPECT_THROW(const_int(dtypes::int8, 128), IrError);
  EXPECT_THROW(const_int(dtypes::uint32, -1), IrError);
}

TEST(UOp, BuildersInferDtypes) {
  UOp x = define_var("x", 0, 15);
  EXPECT_EQ((x + 1).dtype(), dtypes::int32);
  EXPECT_EQ((x < 4).dtype(), dtypes::bool_);
  UOp f = const_(dtypes::float32, 2.0);
  EXPECT_EQ((f / f).op(), Op::FDIV);
  EXPECT_EQ((x / x).op(), Op::IDIV);
  UOp v = UOp::make(Op::VECTORIZE, {f, f, f, f});
  EXPECT_EQ(v.dtype(), dtypes::float32.vec(4));
  EXPECT_EQ(UOp::make(Op::CMPLT, {v, v}).dtype(), dtypes::bool_.vec(4));
  EXPECT_EQ(UOp::make(Op::EXTRACT, {v}, std::vector<int64_t>{3}).dtype(), dtypes::float32);
  EXPECT_EQ(UOp::make(Op::EXTRACT, {v}, std::vector<int64_t>{0, 2}).dtype(),
            dtypes::float32.vec(2));
  UOp buf = param(0, dtypes::float32.ptr());
  EXPECT_EQ(load(index(buf, x)).dtype(), dtypes::float32);
  EXPECT_THROW(UOp::make(Op::CAST, {f}), IrError);  // a CAST's dtype is the caller's choice
}

TEST(UOp, NullSourcesAndUnknownOpsAreErrors) {
  UOp x = define_var("x", 0, 15);
  EXPECT_THROW(UOp::make(Op::ADD, dtypes::int32, {x, UOp()}), IrError);
  try {
    UOp::make(Op(999), dtypes::int32, {x});
    FAIL() << "no error";
  } catch (const IrError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown op id 999"), std::string::npos) << e.what();
  }
  EXPECT_EQ(op_name(Op(999)), "OP#999");
}

TEST(UOp, NodesAreFreedWithTheirLastReference) {
  uint64_t before = intern_stats().live;
  {
    UOp x = define_var("freed_x", 0, 7);
    UOp y = x * 3 + 5;
    EXPECT_EQ(intern_stats().live, before + 5);  // x, 3, x*3, 5, x*3+5
    EXPECT_EQ(x.use_count(), 2u);                // the handle and x*3's source
  }
  EXPECT_EQ(intern_stats().live, before);
}

TEST(UOp, AMillionDeepChainIsBuiltWalkedAndFreedWithoutRecursion) {
  uint64_t before = intern_stats().live;
  {
    UOp one = const_int(dtypes::int64, 1);
    UOp chain = define_var("deep", 0, 10, dtypes::int64);
    for (int i = 0; i < 1000000; ++i) chain = chain + one;
    EXPECT_EQ(toposort(chain).size(), 1000002u);
    verify(chain);
    std::string tail = print_graph(chain, {}, 2);
    EXPECT_NE(tail.find("1000000 earlier nodes"), std::string::npos) << tail;
  }
  EXPECT_EQ(intern_stats().live, before);
}

UOp example_kernel() {
  UOp out = param(0, dtypes::float32.ptr()), in = param(1, dtypes::float32.ptr());
  UOp i = range(1000, 0, AxisKind::Global);
  UOp v = load(index(in, i)) * const_(dtypes::float32, 2.0);
  return sink({end(store(index(out, i), v), {i})}, "scale");
}

TEST(UOp, StableKeyIsStructural) {
  StableKey k = example_kernel().key();
  EXPECT_EQ(k, example_kernel().key());
  EXPECT_EQ(k.hex().size(), 32u);
  UOp other_name = sink({example_kernel().src(0)}, "other");
  EXPECT_NE(k, other_name.key());
  EXPECT_NE(const_(dtypes::float32, 0.0).key(), const_(dtypes::float32, -0.0).key());
  EXPECT_EQ(example_kernel().hash(), k.lo);
}

// Another process, with other ops registered first (so other op ids) and the graph built
// after unrelated allocations, gets the same key: keys hash names and values only.
TEST(UOp, StableKeyIsTheSameInAnotherProcessWithOtherOpIds) {
  int fd[2];
  ASSERT_EQ(pipe(fd), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fd[0]);
    OpSpec filler;
    filler.name = "KEY_TEST_FILLER";
    filler.meaning = "Takes an op id so that KEY_TEST_OP gets another one.";
    filler.dtype.doc = "void";
    filler.dtype.check = [](DType d) { return d.is_void(); };
    register_op(filler);
    std::vector<UOp> noise;
    for (int i = 0; i < 1000; ++i) noise.push_back(const_int(dtypes::int32, 5000 + i));
    OpSpec s;
    s.name = "KEY_TEST_OP";
    s.meaning = "An op registered by the key test.";
    s.dtype.doc = "void";
    s.dtype.check = [](DType d) { return d.is_void(); };
    Op op = register_op(s);
    std::string hex = example_kernel().key().hex() + UOp::make(op, dtypes::void_).key().hex();
    _exit(write(fd[1], hex.data(), hex.size()) == ssize_t(hex.size()) ? 0 : 1);
  }
  close(fd[1]);
  char buf[64];
  size_t got = 0;
  while (got < sizeof buf) {
    ssize_t r = read(fd[0], buf + got, sizeof buf - got);
    if (r <= 0) break;
    got += size_t(r);
  }
  close(fd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_EQ(got, 64u);
  OpSpec s;
  s.name = "KEY_TEST_OP";
  s.meaning = "An op registered by the key test.";
  s.dtype.doc = "void";
  s.dtype.check = [](DType d) { return d.is_void(); };
  Op op = op_by_name("KEY_TEST_OP").value_or(Op::CONST);
  if (op == Op::CONST) op = register_op(s);
  EXPECT_EQ(std::string(buf, 32), example_kernel().key().hex());
  EXPECT_EQ(std::string(buf + 32, 32), UOp::make(op, dtypes::void_).key().hex());
}

TEST(UOp, InternStatsCountHits) {
  InternStats a = intern_stats();
  UOp x = const_int(dtypes::int16, 77);
  UOp y = const_int(dtypes::int16, 77);
  InternStats b = intern_stats();
  EXPECT_EQ(b.lookups - a.lookups, 2u);
  EXPECT_EQ(b.hits - a.hits, 1u);
}

TEST(UOp, ArgAccessorsCheckTheKind) {
  UOp r = range(8, 3, AxisKind::Reduce);
  EXPECT_EQ(r.axis().id, 3);
  EXPECT_EQ(r.axis().kind, AxisKind::Reduce);
  EXPECT_THROW(r.int_arg(), IrError);
  EXPECT_THROW(r.const_value(), IrError);
  EXPECT_EQ(param(4, dtypes::int32).int_arg(), 4);
  EXPECT_EQ(example_kernel().name_arg(), "scale");
}

}  // namespace
}  // namespace kitten
