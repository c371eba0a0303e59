// The evaluation table against C's semantics (written out here case by case), the
// swizzles against the bit formula the hardware documents, the Target, and args of an
// extension kind.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "dsl/eval.h"
#include "dsl/ops.h"
#include "dsl/swizzle.h"
#include "dsl/target.h"
#include "dsl/uop.h"

namespace kitten {
namespace {

int64_t eval_i(Op op, DType d, std::vector<int64_t> xs, EvalFault want = EvalFault::None) {
  std::vector<Scalar> a;
  for (int64_t x : xs) a.push_back(Scalar{x});
  EvalResult r = eval_alu(op, d, op == Op::CMPLT ? dtypes::bool_ : d, a);
  EXPECT_EQ(int(r.fault), int(want)) << op_name(op);
  return r.value.i;
}

double eval_f(Op op, DType d, std::vector<double> xs) {
  std::vector<Scalar> a;
  for (double x : xs) {
    Scalar s;
    s.f = x;
    a.push_back(s);
  }
  EvalResult r = eval_alu(op, d, d, a);
  EXPECT_EQ(int(r.fault), int(EvalFault::None));
  return r.value.f;
}

TEST(Eval, IntegersFollowC) {
  DType i32 = dtypes::int32, u32 = dtypes::uint32, i8 = dtypes::int8;
  EXPECT_EQ(eval_i(Op::IDIV, i32, {-7, 2}), -3);  // truncates toward zero
  EXPECT_EQ(eval_i(Op::MOD, i32, {-7, 2}), -1);   // the sign of the numerator
  EXPECT_EQ(eval_i(Op::MOD, i32, {7, -2}), 1);
  EXPECT_EQ(eval_i(Op::IDIV, i32, {1, 0}, EvalFault::DivByZero), 0);
  EXPECT_EQ(eval_i(Op::IDIV, i32, {INT32_MIN, -1}, EvalFault::Undefined), INT32_MIN);
  EXPECT_EQ(eval_i(Op::ADD, i32, {INT32_MAX, 1}, EvalFault::Undefined), INT32_MIN);  // wraps
  EXPECT_EQ(eval_i(Op::ADD, u32, {int64_t(UINT32_MAX), 1}), 0);  // defined for unsigned
  EXPECT_EQ(eval_i(Op::MUL, i8, {16, 8}), -128);  // computed in int, narrowed by wrapping
  EXPECT_EQ(eval_i(Op::MOD, i32, {INT32_MIN, -1}, EvalFault::Undefined), 0);
  EXPECT_EQ(eval_i(Op::MUL, dtypes::uint64, {-1, -1}), 1);  // (2^64-1)^2 wraps to 1
  EXPECT_EQ(eval_i(Op::SHR, i32, {-16, 2}), -4);            // arithmetic for signed
  EXPECT_EQ(eval_i(Op::SHR, u32, {int64_t(0x80000000u), 31}), 1);
  EXPECT_EQ(eval_i(Op::SHL, u32, {3, 31}), int64_t(0x80000000u));
  eval_i(Op::SHL, i32, {1, 32}, EvalFault::Undefined);
  eval_i(Op::SHL, i32, {-1, 1}, EvalFault::Undefined);
  EXPECT_EQ(eval_i(Op::CMPLT, u32, {int64_t(UINT32_MAX), 1}), 0);  // unsigned compare
  EXPECT_EQ(eval_i(Op::MAX, u32, {int64_t(UINT32_MAX), 1}), int64_t(UINT32_MAX));
  EXPECT_EQ(eval_i(Op::XOR, dtypes::bool_, {1, 1}), 0);
}

TEST(Eval, FloatsRoundOnceToTheirDtype) {
  // 1 + 2^-8 is not a bfloat16: it rounds to even (1); 1 + 3*2^-8 rounds up.
  EXPECT_EQ(eval_f(Op::ADD, dtypes::bfloat16, {1.0, 0.00390625}), 1.0);
  EXPECT_EQ(eval_f(Op::ADD, dtypes::bfloat16, {1.0, 3 * 0.00390625}), 1.015625);
  EXPECT_EQ(eval_f(Op::MUL, dtypes::float32, {double(float(1.0 / 3)), 3.0}),
            double(float(1.0 / 3) * 3.0f));
  EXPECT_EQ(eval_f(Op::MAX, dtypes::float32, {std::nan(""), 2.0}), 2.0);  // fmax
  EXPECT_EQ(eval_f(Op::TRUNC, dtypes::float64, {-2.5}), -2.0);
  EXPECT_EQ(eval_f(Op::FDIV, dtypes::float16, {1.0, 3.0}), decode_float(kFloat16, 0x3555));
}

TEST(Eval, CastsConvertAsCDoes) {
  Scalar x;
  x.f = -2.75;
  EXPECT_EQ(eval_cast(dtypes::float32, dtypes::int32, x).value.i, -2);
  x.f = 3e9;
  EXPECT_EQ(int(eval_cast(dtypes::float32, dtypes::int32, x).fault), int(EvalFault::Undefined));
  EXPECT_EQ(eval_cast(dtypes::float32, dtypes::uint32, x).value.i, 3000000000);
  EXPECT_EQ(eval_cast(dtypes::int32, dtypes::int8, Scalar{300}).value.i, 44);
  EXPECT_EQ(eval_cast(dtypes::int32, dtypes::bool_, Scalar{-5}).value.i, 1);
  EXPECT_EQ(eval_cast(dtypes::uint64, dtypes::float64, Scalar{-1}).value.f, 18446744073709551616.0);
  // 2^60 + 2^36 + 1 rounds up to 2^60 + 2^37 in one rounding (through double: down).
  int64_t big = (int64_t(1) << 60) + (int64_t(1) << 36) + 1;
  EXPECT_EQ(eval_cast(dtypes::int64, dtypes::float32, Scalar{big}).value.f,
            double((int64_t(1) << 60) + (int64_t(1) << 37)));
}

TEST(Eval, EveryCoreAluOpHasAnEntry) {
  for (int id = 0; id < kNumCoreOps; ++id) {
    Op op = Op(id);
    if (!is_alu(op)) {
      EXPECT_THROW(eval_alu(op, dtypes::int32, dtypes::int32, {}), std::invalid_argument);
      continue;
    }
    DType d = find_op_spec(op)->sources[0].doc.find("float") != std::string::npos ? dtypes::float32
                                                                                  : dtypes::int32;
    std::vector<Scalar> args(size_t(find_op_spec(op)->arity), Scalar{1});
    if (d.is_float())
      for (Scalar& s : args) s.f = 1.0;
    EXPECT_NO_THROW(eval_alu(op, d, d, args)) << op_name(op);
  }
}

TEST(Eval, IntegerGraphs) {
  UOp x = define_var("x", -10, 10);
  UOp e = (x * 3 + 1) % 4;
  EXPECT_EQ(eval_int(e, {{"x", -3}}), -0);
  EXPECT_EQ(eval_int(e, {{"x", 5}}), 0);
  EXPECT_EQ(eval_int(e, {{"x", 2}}), 3);
  EXPECT_EQ(eval_int(x / (x + -2), {{"x", 2}}), std::nullopt);  // division by zero
}

// The swizzles are the CUTLASS/PTX XOR patterns on the byte address: bits [4, 4+B) take
// the XOR of bits [7, 7+B), B = 3, 2, 1 for 128, 64, 32 bytes.
TEST(Swizzle, MatchesTheBitFormulaAndPermutesEachAtom) {
  UOp row = define_var("row", 0, 63), byte = define_var("byte", 0, 127);
  for (auto [mode, bits] :
       {std::pair{Swizzle::B128, 3}, std::pair{Swizzle::B64, 2}, std::pair{Swizzle::B32, 1}}) {
    SCOPED_TRACE(swizzle_name(mode));
    int64_t width = swizzle_width(mode);
    UOp off = swizzled_offset(mode, row, byte);
    std::set<int64_t> atom;
    for (int64_t r = 0; r < 64; ++r)
      for (int64_t b = 0; b < width; ++b) {
        int64_t a = r * width + b, mask = (1 << bits) - 1;
        int64_t want = a ^ (((a >> 7) & mask) << 4);
        ASSERT_EQ(eval_int(off, {{"row", r}, {"byte", b}}), want) << r << " " << b;
        ASSERT_EQ(swizzle_address(mode, a), want) << r << " " << b;  // the hardware's form
        if (a < swizzle_alignment(mode)) atom.insert(want);
      }
    EXPECT_EQ(int64_t(atom.size()), swizzle_alignment(mode));  // a permutation of the atom
    EXPECT_EQ(*atom.rbegin(), swizzle_alignment(mode) - 1);
  }
  // Literal values: in 128B mode, row 1's first chunk moves to chunk 1 (byte 16 of the row).
  EXPECT_EQ(eval_int(swizzled_offset(Swizzle::B128, row, byte), {{"row", 1}, {"byte", 0}}), 144);
  EXPECT_EQ(eval_int(swizzled_offset(Swizzle::B128, row, byte), {{"row", 7}, {"byte", 112}}), 896);
  EXPECT_EQ(swizzle_address(Swizzle::None, 4100), 4100);
  // Descriptor codes (PTX: 0 none, 1 128B, 2 64B, 3 32B) and the offsets in 16-byte units.
  EXPECT_EQ(descriptor_fields(Swizzle::B128, 16, 1024),
            (1ull << 16) | (64ull << 32) | (1ull << 62));
  for (Swizzle m : {Swizzle::None, Swizzle::B32, Swizzle::B64, Swizzle::B128})
    EXPECT_EQ(descriptor_swizzle(descriptor_fields(m, 0, 0) | 0x1234), m);
  EXPECT_EQ(swizzle_alignment(Swizzle::B32), 256);
  EXPECT_EQ(swizzle_alignment(Swizzle::B64), 512);
  EXPECT_EQ(swizzle_alignment(Swizzle::B128), 1024);
  EXPECT_THROW(swizzled_offset(Swizzle::None, row, byte), std::invalid_argument);
}

TEST(Target, H100ProfileAndAtomics) {
  Target t = h100_target();
  EXPECT_EQ(t.shared_per_block_optin, 227 * 1024);
  EXPECT_TRUE(t.has(kFeatureWgmma));
  EXPECT_TRUE(t.has_atomic(AtomicOp::Add, dtypes::bfloat16.vec(2)));
  EXPECT_FALSE(t.has_atomic(AtomicOp::Max, dtypes::float32));
  EXPECT_EQ(t.feature_names(),
            "blocks, shuffle, mma.sync, cp.async, ldmatrix, wgmma, tma, stmatrix, mbarrier, "
            "setmaxnreg");
  EXPECT_EQ(host_target("x86_64", 2).feature_names(), "none");
}

// An arg kind a later layer defines.
struct TileShapeArg : ArgExtension {
  int rows, cols;
  TileShapeArg(int r, int c) : rows(r), cols(c) {}
  std::string_view kind() const override { return "tile_shape"; }
  uint64_t stable_hash() const override { return uint64_t(rows) * 1000003u + uint64_t(cols); }
  bool equals(const ArgExtension& o) const override {
    auto& t = static_cast<const TileShapeArg&>(o);
    return t.rows == rows && t.cols == cols;
  }
  std::string to_string() const override {
    return std::to_string(rows) + "x" + std::to_string(cols);
  }
};

TEST(Arg, ExtensionKindsHashCompareAndVerify) {
  static const Op tile = [] {
    OpSpec s;
    s.name = "TEST_TILE_SHAPE";
    s.meaning = "A test op whose arg is an extension.";
    s.dtype = {"int32", [](std::span<const UOp>, const Arg&) { return dtypes::int32; }, {}};
    s.arg = ArgKind::Ext;
    s.ext_arg = "tile_shape";
    return register_op(std::move(s));
  }();
  auto shape = [](int r, int c) { return ExtArg{std::make_shared<TileShapeArg>(r, c)}; };
  UOp a = UOp::make(tile, {}, shape(16, 8)), b = UOp::make(tile, {}, shape(16, 8));
  EXPECT_EQ(a, b);  // hash-consed through the extension's hash and equality
  EXPECT_NE(a, UOp::make(tile, {}, shape(8, 16)));
  EXPECT_EQ(arg_to_string(a.arg(), a.dtype()), "16x8");
  struct Other : TileShapeArg {
    Other() : TileShapeArg(1, 1) {}
    std::string_view kind() const override { return "other"; }
  };
  EXPECT_THROW(UOp::make(tile, {}, ExtArg{std::make_shared<Other>()}), IrError);
}

}  // namespace
}  // namespace kitten
