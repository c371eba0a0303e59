// The spec, case by case: a valid node of every core op is accepted, and each malformed
// case the spec forbids is rejected with a message that names the op and the rule and
// prints the node.
#include <gtest/gtest.h>

#include <bit>
#include <functional>
#include <set>

#include "dsl/verify.h"
#include "tools/uops_doc.h"

namespace kitten {
namespace {

using V = std::vector<int64_t>;
const DType f32 = dtypes::float32, i32 = dtypes::int32;

UOp gbuf(int64_t slot = 0, DType t = f32) { return param(slot, t.ptr()); }
UOp i_(int64_t v) { return const_int(i32, v); }
UOp f_(double v) { return const_(f32, v); }
UOp idx() { return index(gbuf(), i_(0)); }
UOp eff() { return store(idx(), f_(1)); }
UOp lbuf(DType t = f32) { return define_local(t, 64, 0); }
UOp v4() { return UOp::make(Op::VECTORIZE, {f_(1), f_(2), f_(3), f_(4)}); }

UOp mk(Op op, DType d, std::initializer_list<UOp> s, Arg a = {}) {
  return UOp::make(op, d, s, std::move(a));
}

UOp mbar() { return index(define_local(dtypes::int64, 4, 1, 8), i_(2)); }

UOp desc(int64_t swizzle = 3) {
  return mk(Op::MATRIX_DESC, dtypes::uint64,
            {index(define_local(dtypes::bfloat16, 4096, 2, 1024, Swizzle::B128), i_(64))},
            V{swizzle, 0, 16, 1024});
}
UOp wgmma() {
  return mk(Op::WGMMA, f32.vec(4), {desc(), desc(), v4()}, std::string("wgmma_m64n8k16_bf16_ss"));
}

UOp tmap(int64_t inner = 64, int64_t swizzle = 3) {
  return mk(Op::TENSOR_MAP, dtypes::bfloat16.ptr(), {}, V{4, swizzle, inner, 8});
}
UOp tile() { return index(define_local(dtypes::bfloat16, 512, 3, 1024, Swizzle::B128), i_(0)); }

// One valid node of every core op.
std::vector<UOp> valid_nodes() {
  UOp x = define_var("x", 0, 63), r = range(16, 0, AxisKind::Loop);
  UOp lidx = index(lbuf(), x), gidx = index(gbuf(1), x);
  UOp cp = mk(Op::ASYNC_COPY, dtypes::token, {lidx, gidx});
  UOp a = UOp::make(Op::VECTORIZE, std::vector<UOp>(8, const_(dtypes::bfloat16, 1.0)));
  UOp b = UOp::make(Op::VECTORIZE, std::vector<UOp>(4, const_(dtypes::bfloat16, 1.0)));
  UOp c = v4();
  UOp cond = x < 10;
  UOp iff = mk(Op::IF, dtypes::void_, {cond});
  UOp f = f_(2);
  return {
      f_(1.5),
      gbuf(),
      x,
      lbuf(),
      define_reg(f32, 4, 0),
      special(SpecialKind::ThreadIdx, 0, 128),
      r,
      end(store(index(gbuf(), r), f), {r}),
      after(lbuf(), {eff()}),
      group({eff(), store(gidx, f)}),
      iff,
      mk(Op::ENDIF, dtypes::void_, {iff, eff()}),
      mk(Op::BARRIER, dtypes::void_, {eff()}),
      sink({eff()}, "k"),
      index(gbuf(), x, cond),
      load(index(gbuf(), x, cond), f),
      eff(),
      cp,
      mk(Op::WAIT, dtypes::void_, {cp}),
      mk(Op::WAIT_GROUP, dtypes::void_, {cp}, int64_t(0)),
      mk(Op::ASYNC_COMMIT, dtypes::token, {cp}),
      UOp::make(Op::SHUFFLE, {f, i_(1)}, ShuffleMode::Xor),
      mk(Op::ATOMIC, dtypes::void_, {gidx, f}, AtomicOp::Add),
      UOp::make(Op::MMA, {a, b, c}, std::string("m16n8k16_bf16_f32")),
      UOp::make(Op::LDMATRIX,
                {mk(Op::INDEX, dtypes::bfloat16.vec(8).ptr(AddrSpace::Local),
                    {define_local(dtypes::bfloat16, 64, 0), x})},
                V{4, 1}),
      mk(Op::STMATRIX, dtypes::void_,
         {mk(Op::INDEX, dtypes::bfloat16.vec(8).ptr(AddrSpace::Local),
             {define_local(dtypes::bfloat16, 64, 0), x}),
          UOp::make(Op::VECTORIZE, {const_(dtypes::bfloat16, 1.0), const_(dtypes::bfloat16, 2.0)})},
         V{1, 0}),
      mk(Op::MBARRIER_INIT, dtypes::void_, {mbar(), i_(32)}),
      mk(Op::MBARRIER_ARRIVE, dtypes::void_, {mbar(), i_(1024), eff()}),
      mk(Op::MBARRIER_WAIT, dtypes::void_, {mbar(), i_(1)}),
      mk(Op::FENCE, dtypes::void_, {eff()}, std::string("proxy_async")),
      mk(Op::NAMED_BARRIER, dtypes::void_, {eff()}, V{1, 256}),
      mk(Op::NAMED_BARRIER, dtypes::void_, {eff()}, V{2, 256, 1}),
      mk(Op::SETMAXNREG, dtypes::void_, {}, V{240, 1}),
      desc(),
      wgmma(),
      mk(Op::WGMMA_COMMIT, dtypes::void_, {wgmma()}),
      mk(Op::WGMMA_WAIT, f32.vec(4), {wgmma()}, int64_t(1)),
      tmap(),
      mk(Op::TMA_LOAD, dtypes::void_, {tmap(), tile(), mbar(), i_(0), i_(-3)}),
      mk(Op::TMA_STORE, dtypes::void_, {tmap(), tile(), i_(64), x}),
      mk(Op::BULK_REDUCE_ADD, dtypes::void_, {gidx, index(lbuf(), x), i_(64)}),
      mk(Op::BULK_COMMIT, dtypes::void_, {eff()}),
      mk(Op::BULK_WAIT, dtypes::void_, {eff()}, int64_t(0)),
      cast(f, dtypes::float16),
      mk(Op::BITCAST, i32, {f}),
      v4(),
      UOp::make(Op::EXTRACT, {v4()}, V{1}),
      UOp::make(Op::NEG, {f}),
      UOp::make(Op::RECIP, {f}),
      UOp::make(Op::SQRT, {f}),
      UOp::make(Op::EXP2, {f}),
      UOp::make(Op::EXP2_FTZ, {f}),
      UOp::make(Op::LOG2, {f}),
      UOp::make(Op::SIN, {f}),
      UOp::make(Op::TRUNC, {f}),
      f + f,
      f - f,
      f * f,
      f / f,
      x / x,
      x % x,
      alu(Op::MAX, f, f),
      alu(Op::MIN, x, x),
      f < f,
      alu(Op::CMPEQ, x, x),
      alu(Op::CMPNE, cond, cond),
      alu(Op::AND, x, x),
      alu(Op::OR, cond, cond),
      alu(Op::XOR, x, x),
      alu(Op::SHL, x, x),
      alu(Op::SHR, x, x),
      UOp::make(Op::WHERE, {cond, f, f}),
      UOp::make(Op::MULACC, {f, f, f}),
  };
}

TEST(Spec, EveryCoreOpHasAValidExampleThatVerifies) {
  std::set<Op> seen;
  for (const UOp& u : valid_nodes()) {
    seen.insert(u.op());
    EXPECT_NO_THROW(verify(u)) << op_name(u.op());
  }
  for (int i = 0; i < kNumCoreOps; ++i) EXPECT_TRUE(seen.count(Op(i))) << op_name(Op(i));
}

struct BadCase {
  std::string name;
  std::function<void()> build;
  std::string op;    // the op the message names
  std::string rule;  // a phrase of the rule the message names
};

std::vector<BadCase> bad_cases() {
  DType bf = dtypes::bfloat16;
  auto reg = [] { return define_reg(f32, 4, 1); };
  return {
      {"ConstNotExactInFloat16",
       [] { mk(Op::CONST, dtypes::float16, {}, const_bits_of_double(0.1)); }, "CONST",
       "exact in the dtype"},
      {"ConstOutOfInt8", [] { mk(Op::CONST, dtypes::int8, {}, const_bits_of_int(300)); }, "CONST",
       "exact in the dtype"},
      {"ConstBoolTwo", [] { mk(Op::CONST, dtypes::bool_, {}, ConstArg{2}); }, "CONST",
       "exact in the dtype"},
      {"ConstVector", [] { mk(Op::CONST, f32.vec(2), {}, const_bits_of_double(1)); }, "CONST",
       "dtype: a scalar"},
      {"ConstWithSource", [] { mk(Op::CONST, i32, {i_(1)}, const_bits_of_int(1)); }, "CONST",
       "takes exactly 0 sources"},
      {"ConstIntArg", [] { mk(Op::CONST, i32, {}, int64_t(1)); }, "CONST", "arg is of kind const"},
      {"ParamLocalPointer", [] { param(0, f32.ptr(AddrSpace::Local, 4)); }, "PARAM",
       "pointer into global memory"},
      {"ParamFloat", [] { param(0, f32); }, "PARAM", "pointer into global memory or an integer"},
      {"ParamNegativeSlot", [] { param(-1, f32.ptr()); }, "PARAM", "slot is not negative"},
      {"VarMinAboveMax", [] { define_var("v", 5, 4); }, "DEFINE_VAR", "min <= max"},
      {"VarOutsideInt8", [] { define_var("v", 0, 300, dtypes::int8); }, "DEFINE_VAR",
       "within the dtype"},
      {"VarBadName", [] { define_var("1v", 0, 3); }, "DEFINE_VAR", "identifier"},
      {"VarFloat",
       [] {
         mk(Op::DEFINE_VAR, f32, {}, VarArg{"v", 0, 1});
       },
       "DEFINE_VAR", "integer scalar"},
      {"LocalGlobalPointer",
       [] {
         mk(Op::DEFINE_LOCAL, f32.ptr(), {}, AllocArg{0, 16});
       },
       "DEFINE_LOCAL", "local memory with a known size"},
      {"RegUnknownSize", [] { mk(Op::DEFINE_REG, f32.ptr(AddrSpace::Reg), {}, int64_t(0)); },
       "DEFINE_REG", "known size"},
      {"SpecialDim3",
       [] {
         mk(Op::SPECIAL, i32, {i_(4)}, SpecialArg{SpecialKind::BlockIdx, 3});
       },
       "SPECIAL", "0, 1 or 2"},
      {"SpecialFloatExtent",
       [] {
         mk(Op::SPECIAL, i32, {f_(4)}, SpecialArg{SpecialKind::BlockIdx, 0});
       },
       "SPECIAL", "integer scalar of the result's dtype"},
      {"RangeFloatEnd",
       [] {
         mk(Op::RANGE, i32, {f_(4)}, AxisArg{0, AxisKind::Loop});
       },
       "RANGE", "integer scalar of the result's dtype"},
      {"RangeEndOtherIntType",
       [] {
         mk(Op::RANGE, i32, {const_int(dtypes::int64, 4)}, AxisArg{0, AxisKind::Loop});
       },
       "RANGE", "of the result's dtype"},
      {"RangeNegativeId", [] { range(4, -1, AxisKind::Loop); }, "RANGE", "axis id is not negative"},
      {"RangeNoEnd",
       [] {
         mk(Op::RANGE, i32, {}, AxisArg{0, AxisKind::Loop});
       },
       "RANGE", "takes exactly 1 sources"},
      {"EndWithoutRange", [] { mk(Op::END, dtypes::void_, {eff()}); }, "END", "at least 2"},
      {"EndOverNonRange", [] { end(eff(), {i_(3)}); }, "END", "a RANGE"},
      {"EndOfAValue",
       [] {
         UOp r = range(4, 0, AxisKind::Loop);
         end(f_(1), {r});
       },
       "END", "an effect"},
      {"EndRangeTwice",
       [] {
         UOp r = range(4, 0, AxisKind::Loop);
         end(eff(), {r, r});
       },
       "END", "closed once"},
      {"EndNotVoid",
       [] {
         UOp r = range(4, 0, AxisKind::Loop);
         mk(Op::END, i32, {eff(), r});
       },
       "END", "dtype: void"},
      {"AfterOfAValue", [] { after(f_(1), {eff()}); }, "AFTER", "a pointer"},
      {"AfterWithoutDeps", [] { UOp::make(Op::AFTER, {gbuf()}); }, "AFTER", "at least 2"},
      {"AfterOtherDtype",
       [] {
         mk(Op::AFTER, dtypes::int16.ptr(), {gbuf(), eff()});
       },
       "AFTER", "dtype of source 0"},
      {"GroupOfOne", [] { UOp::make(Op::GROUP, {eff()}); }, "GROUP", "at least 2"},
      {"GroupOfValue",
       [] {
         group({eff(), f_(1)});
       },
       "GROUP", "an effect"},
      {"IfOnInt", [] { mk(Op::IF, dtypes::void_, {i_(1)}); }, "IF", "a bool scalar"},
      {"EndifOfNonIf",
       [] {
         mk(Op::ENDIF, dtypes::void_, {eff(), eff()});
       },
       "ENDIF", "an IF"},
      {"BarrierOnValue", [] { mk(Op::BARRIER, dtypes::void_, {f_(1)}); }, "BARRIER", "an effect"},
      {"SinkOfValue", [] { sink({f_(1)}); }, "SINK", "an effect"},
      {"SinkIntArg", [] { mk(Op::SINK, dtypes::void_, {eff()}, int64_t(3)); }, "SINK", "kind name"},
      {"IndexIntoValue",
       [] {
         mk(Op::INDEX, f32.ptr(), {f_(1), i_(0)});
       },
       "INDEX", "a pointer"},
      {"IndexByFloat", [] { index(gbuf(), f_(0)); }, "INDEX", "an integer scalar"},
      {"IndexGateNotBool", [] { index(gbuf(), i_(0), i_(1)); }, "INDEX", "a bool scalar"},
      {"IndexOtherSpace",
       [] {
         mk(Op::INDEX, f32.ptr(AddrSpace::Local), {gbuf(), i_(0)});
       },
       "INDEX", "buffer's space"},
      {"IndexOtherElement",
       [] {
         mk(Op::INDEX, dtypes::int32.ptr(), {gbuf(), i_(0)});
       },
       "INDEX", "to its element"},
      {"IndexTooManySources",
       [] {
         UOp t = const_bool(true);
         mk(Op::INDEX, f32.ptr(), {gbuf(), i_(0), t, t});
       },
       "INDEX", "2 to 3"},
      {"LoadOfPointer", [] { load(gbuf()); }, "LOAD", "an INDEX"},
      {"LoadGatedWithoutAlt", [] { load(index(gbuf(), i_(0), const_bool(true))); }, "LOAD",
       "alternative value"},
      {"LoadAltUngated", [] { load(idx(), f_(0)); }, "LOAD", "alternative value"},
      {"LoadAltOtherDtype", [] { load(index(gbuf(), i_(0), const_bool(true)), i_(0)); }, "LOAD",
       "result's dtype"},
      {"LoadWrongDtype", [] { mk(Op::LOAD, i32, {idx()}); }, "LOAD",
       "element the address points to"},
      {"StoreOtherDtype", [] { store(idx(), i_(1)); }, "STORE", "element the address points to"},
      {"StoreToPointer",
       [] {
         mk(Op::STORE, dtypes::void_, {gbuf(), f_(1)});
       },
       "STORE", "an INDEX"},
      {"AsyncCopyIntoGlobal",
       [] {
         mk(Op::ASYNC_COPY, dtypes::token, {idx(), idx()});
       },
       "ASYNC_COPY", "local memory"},
      {"AsyncCopyTwoBytes",
       [] {
         DType h = dtypes::float16;
         mk(Op::ASYNC_COPY, dtypes::token,
            {index(define_local(h, 8, 0), i_(0)), index(gbuf(0, h), i_(0))});
       },
       "ASYNC_COPY", "4, 8 or 16 bytes"},
      {"AsyncCopyMixedTypes",
       [] {
         mk(Op::ASYNC_COPY, dtypes::token, {index(lbuf(dtypes::int32), i_(0)), idx()});
       },
       "ASYNC_COPY", "same type"},
      {"WaitOnEffect", [] { mk(Op::WAIT, dtypes::void_, {eff()}); }, "WAIT", "a token"},
      {"WaitGroupForNothing",
       [] {
         UOp cp = mk(Op::ASYNC_COPY, dtypes::token, {index(lbuf(), i_(0)), idx()});
         mk(Op::WAIT_GROUP, dtypes::void_, {cp}, int64_t(1));
       },
       "WAIT_GROUP", "less than the number of tokens"},
      {"ShuffleNameMode",
       [] {
         UOp::make(Op::SHUFFLE, {f_(1), i_(1)}, std::string("xor"));
       },
       "SHUFFLE", "shuffle mode"},
      {"SharedAlignmentNotAPowerOfTwo", [] { define_local(dtypes::float32, 64, 0, 48); },
       "DEFINE_LOCAL", "alignment 48"},
      {"AtomicOnRegisters",
       [] {
         mk(Op::ATOMIC, dtypes::void_, {index(define_reg(f32, 1, 0), i_(0)), f_(1)}, AtomicOp::Add);
       },
       "ATOMIC", "global or local (shared) memory"},
      {"AtomicMaxFloat",
       [] {
         mk(Op::ATOMIC, dtypes::void_, {idx(), f_(1)}, AtomicOp::Max);
       },
       "ATOMIC", "max of float32"},
      {"AtomicAddHalf",
       [] {
         mk(Op::ATOMIC, dtypes::void_,
            {index(gbuf(0, dtypes::float16), i_(0)), const_(dtypes::float16, 1)}, AtomicOp::Add);
       },
       "ATOMIC", "add of float16"},
      {"AtomicValueMismatch",
       [] {
         mk(Op::ATOMIC, dtypes::void_, {idx(), i_(1)}, AtomicOp::Add);
       },
       "ATOMIC", "value"},
      {"ShuffleHalf",
       [] {
         UOp::make(Op::SHUFFLE, {const_(dtypes::float16, 1), i_(1)}, ShuffleMode::Xor);
       },
       "SHUFFLE", "32- or 64-bit"},
      {"ShuffleInt64Lane",
       [] {
         UOp::make(Op::SHUFFLE, {f_(1), const_int(dtypes::int64, 1)}, ShuffleMode::Xor);
       },
       "SHUFFLE", "int32"},
      {"MmaUnknownLayout",
       [] {
         UOp::make(Op::MMA, {v4(), v4(), v4()}, std::string("m8n8k4"));
       },
       "MMA", "no MMA layout is named"},
      {"MmaWrongFragments",
       [] {
         UOp::make(Op::MMA, {v4(), v4(), v4()}, std::string("m16n8k16_bf16_f32"));
       },
       "MMA", "takes bfloat16x8"},
      {"MbarrierInFloats",
       [] {
         mk(Op::MBARRIER_INIT, dtypes::void_, {index(lbuf(), i_(0)), i_(1)});
       },
       "MBARRIER_INIT", "64-bit integer"},
      {"MbarrierInGlobalMemory",
       [] {
         mk(Op::MBARRIER_WAIT, dtypes::void_, {index(gbuf(3, dtypes::int64), i_(0)), i_(0)});
       },
       "MBARRIER_WAIT", "shared memory"},
      {"MbarrierArriveInt64Bytes",
       [] {
         mk(Op::MBARRIER_ARRIVE, dtypes::void_, {mbar(), const_int(dtypes::int64, 8)});
       },
       "MBARRIER_ARRIVE", "int32"},
      {"FenceUnknownKind", [] { mk(Op::FENCE, dtypes::void_, {}, std::string("all")); }, "FENCE",
       "mbarrier_init, proxy_async or wgmma"},
      {"NamedBarrierZero",
       [] {
         mk(Op::NAMED_BARRIER, dtypes::void_, {}, V{0, 64});
       },
       "NAMED_BARRIER", "id in 1..15"},
      {"NamedBarrierPartWarp",
       [] {
         mk(Op::NAMED_BARRIER, dtypes::void_, {}, V{2, 48});
       },
       "NAMED_BARRIER", "multiple of 32"},
      {"NamedBarrierArriveTwo",
       [] {
         mk(Op::NAMED_BARRIER, dtypes::void_, {}, V{2, 64, 2});
       },
       "NAMED_BARRIER", "arrive 0 or 1"},
      {"SetmaxnregOdd",
       [] {
         mk(Op::SETMAXNREG, dtypes::void_, {}, V{100, 1});
       },
       "SETMAXNREG", "multiple of 8 in 24..256"},
      {"SetmaxnregTooMany",
       [] {
         mk(Op::SETMAXNREG, dtypes::void_, {}, V{264, 1});
       },
       "SETMAXNREG", "multiple of 8 in 24..256"},
      {"DescOfFloats",
       [] {
         mk(Op::MATRIX_DESC, dtypes::uint64, {index(lbuf(), i_(0))}, V{0, 0, 16, 128});
       },
       "MATRIX_DESC", "16-bit element"},
      {"DescOffsetNotMultipleOf16",
       [] {
         mk(Op::MATRIX_DESC, dtypes::uint64, {index(lbuf(dtypes::bfloat16), i_(0))},
            V{0, 0, 8, 128});
       },
       "MATRIX_DESC", "multiples of 16"},
      {"WgmmaOfAWarpLayout",
       [] {
         mk(Op::WGMMA, f32.vec(4), {desc(), desc(), v4()}, std::string("m16n8k16_bf16_f32"));
       },
       "WGMMA", "no warpgroup MMA layout"},
      {"WgmmaWrongAccumulator",
       [] {
         mk(Op::WGMMA, f32.vec(4), {desc(), desc(), v4()}, std::string("wgmma_m64n16k16_bf16_ss"));
       },
       "WGMMA", "takes a MATRIX_DESC, a MATRIX_DESC, float32x8"},
      {"WgmmaDescriptorFromArithmetic",
       [] {
         UOp d = desc();
         mk(Op::WGMMA, f32.vec(4), {d, d + const_int(dtypes::uint64, 2), v4()},
            std::string("wgmma_m64n8k16_bf16_ss"));
       },
       "WGMMA", "descriptors from MATRIX_DESC"},
      {"WgmmaWaitOfAValue", [] { mk(Op::WGMMA_WAIT, f32.vec(4), {v4()}, int64_t(0)); },
       "WGMMA_WAIT", "a WGMMA"},
      {"WgmmaWaitTooDeep", [] { mk(Op::WGMMA_WAIT, f32.vec(4), {wgmma()}, int64_t(8)); },
       "WGMMA_WAIT", "N is 0 to 7"},
      {"ProxyFenceOfAValue",
       [] { mk(Op::FENCE, dtypes::void_, {f_(1)}, std::string("proxy_async")); }, "FENCE",
       "only a wgmma fence takes values"},
      {"SwizzledAllocUnderaligned",
       [] { define_local(dtypes::bfloat16, 64, 0, 256, Swizzle::B128); }, "DEFINE_LOCAL",
       "at least what its swizzle's pattern needs"},
      {"TensorMapBoxNotSwizzleWide", [] { tmap(32, 3); }, "TENSOR_MAP",
       "the swizzle's width when swizzled"},
      {"TensorMapBoxTooLong", [] { tmap(512, 0); }, "TENSOR_MAP", "1 to 5 box extents of 1..256"},
      {"TmaLoadMissingCoordinate",
       [] {
         mk(Op::TMA_LOAD, dtypes::void_, {tmap(), tile(), mbar(), i_(0)});
       },
       "TMA_LOAD", "one int32 coordinate per dimension"},
      {"TmaStoreIntoFloats",
       [] {
         mk(Op::TMA_STORE, dtypes::void_, {tmap(), index(lbuf(), i_(0)), i_(0), i_(0)});
       },
       "TMA_STORE", "shared memory of the map's element"},
      {"BulkReduceOddBytes",
       [] {
         mk(Op::BULK_REDUCE_ADD, dtypes::void_, {idx(), index(lbuf(), i_(0)), i_(12)});
       },
       "BULK_REDUCE_ADD", "a positive multiple of 16"},
      {"TensorMapSharesAParamSlot",
       [] {
         verify(sink({mk(Op::TMA_STORE, dtypes::void_,
                         {mk(Op::TENSOR_MAP, dtypes::bfloat16.ptr(), {}, V{0, 3, 64, 8}), tile(),
                          i_(0), i_(0)}),
                      store(index(param(0, f32.ptr()), i_(0)), f_(1))}));
       },
       "PARAM", "distinct slots"},
      {"CastChangesLanes", [] { cast(v4(), f32); }, "CAST", "lane count is kept"},
      {"CastToPointer", [] { cast(f_(1), f32.ptr()); }, "CAST", "dtype: a value"},
      {"BitcastChangesSize", [] { mk(Op::BITCAST, dtypes::int16, {f_(1)}); }, "BITCAST",
       "size in bytes"},
      {"VectorizeMixed",
       [] {
         UOp::make(Op::VECTORIZE, {f_(1), i_(1)});
       },
       "VECTORIZE", "one dtype shared"},
      {"VectorizeOne", [] { mk(Op::VECTORIZE, f32, {f_(1)}); }, "VECTORIZE", "2 to 256"},
      {"ExtractOutOfRange", [] { UOp::make(Op::EXTRACT, {v4()}, V{4}); }, "EXTRACT",
       "within the vector"},
      {"ExtractFromScalar", [] { mk(Op::EXTRACT, f32, {f_(1)}, V{0}); }, "EXTRACT", "a vector"},
      {"AddMixedDtypes", [] { f_(1) + i_(1); }, "ADD", "of source 0's dtype"},
      {"AddBools",
       [] {
         UOp t = const_bool(true);
         t + t;
       },
       "ADD", "a number (not bool)"},
      {"AddWrongResult",
       [] {
         mk(Op::ADD, dtypes::float64, {f_(1), f_(1)});
       },
       "ADD", "dtype of source 0"},
      {"FdivInts", [] { alu(Op::FDIV, i_(1), i_(2)); }, "FDIV", "a float"},
      {"IdivFloats", [] { alu(Op::IDIV, f_(1), f_(2)); }, "IDIV", "an integer"},
      {"ModFloats", [] { f_(1) % f_(2); }, "MOD", "an integer"},
      {"ShlFloat", [] { alu(Op::SHL, f_(1), f_(2)); }, "SHL", "an integer"},
      {"Exp2OfInt", [] { UOp::make(Op::EXP2, {i_(1)}); }, "EXP2", "a float"},
      {"CmpltNotBool",
       [] {
         mk(Op::CMPLT, i32, {i_(1), i_(2)});
       },
       "CMPLT", "bool, with the lane count"},
      {"WhereCondNotBool",
       [] {
         UOp::make(Op::WHERE, {i_(1), f_(1), f_(2)});
       },
       "WHERE", "bool with the result's lane count"},
      {"WhereBranchesDiffer",
       [] {
         UOp::make(Op::WHERE, {const_bool(true), f_(1), i_(2)});
       },
       "WHERE", "of a's dtype"},
      {"MulaccMixed",
       [] {
         UOp::make(Op::MULACC, {f_(1), f_(1), i_(1)});
       },
       "MULACC", "of source 0's dtype"},
      {"NegBool", [] { UOp::make(Op::NEG, {const_bool(true)}); }, "NEG", "a number (not bool)"},
      {"RegOfBf16Vec",
       [bf] { mk(Op::DEFINE_REG, bf.vec(2).ptr(AddrSpace::Local, 2), {}, int64_t(0)); },
       "DEFINE_REG", "into reg memory"},
      {"AfterUnusedReg",
       [reg] {
         mk(Op::AFTER, i32, {reg(), eff()});
       },
       "AFTER", "dtype of source 0"},
  };
}

// Test names show the case's name, not its bytes.
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class RejectsMalformed : public testing::TestWithParam<BadCase> {};

TEST_P(RejectsMalformed, NamesTheOpAndTheRule) {
  const BadCase& c = GetParam();
  try {
    c.build();
    FAIL() << "accepted: " << c.name;
  } catch (const IrError& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind(c.op + " breaks \"", 0), 0u) << m;
    EXPECT_NE(m.find(c.rule), std::string::npos) << "expected rule '" << c.rule << "' in:\n" << m;
    EXPECT_NE(m.find("<--"), std::string::npos) << m;  // the node, printed and marked
  }
}

INSTANTIATE_TEST_SUITE_P(Spec, RejectsMalformed, testing::ValuesIn(bad_cases()),
                         [](const testing::TestParamInfo<BadCase>& i) { return i.param.name; });

// ---- graph rules: only a whole-graph walk sees these -----------------------------------

void expect_graph_rule(const UOp& root, const std::string& rule_name) {
  try {
    verify(root);
    FAIL() << "verified, expected " << rule_name;
  } catch (const IrError& e) {
    EXPECT_NE(std::string(e.what()).find(rule_name), std::string::npos) << e.what();
  }
}

TEST(GraphRules, SinkIsOnlyARoot) {
  UOp inner = sink({eff()}, "inner");
  expect_graph_rule(sink({end(eff(), {range(2, 0, AxisKind::Loop)}), inner}), "sink-is-root");
}

TEST(GraphRules, TwoRangesShareAnAxisId) {
  UOp a = range(4, 0, AxisKind::Loop), b = range(8, 0, AxisKind::Loop);
  expect_graph_rule(sink({end(store(index(gbuf(), a + b), f_(1)), {a, b})}), "one-range-per-axis");
}

TEST(GraphRules, TwoBuffersShareASlot) {
  expect_graph_rule(sink({store(index(gbuf(0), i_(0)), f_(1)),
                          store(index(gbuf(0, dtypes::int32), i_(0)), i_(1))}),
                    "one-buffer-per-slot");
  UOp l1 = define_local(f32, 8, 0), l2 = define_local(f32, 16, 0);
  expect_graph_rule(sink({store(index(l1, i_(0)), f_(1)), store(index(l2, i_(0)), f_(1))}),
                    "one-buffer-per-slot");
}

TEST(GraphRules, SlotsAreCountedPerOp) {
  UOp l = define_local(f32, 8, 0), r = define_reg(f32, 8, 0);
  EXPECT_NO_THROW(
      verify(sink({store(index(l, i_(0)), f_(1)), store(index(r, i_(0)), f_(1)), eff()})));
}

TEST(GraphRules, TwoVariablesShareAName) {
  UOp a = define_var("n", 0, 4), b = define_var("n", 0, 8);
  expect_graph_rule(sink({store(index(gbuf(), a + b), f_(1))}), "one-var-per-name");
}

TEST(GraphRules, OneLaunchDimensionHasTwoExtents) {
  UOp a = special(SpecialKind::ThreadIdx, 0, 128), b = special(SpecialKind::ThreadIdx, 0, 64);
  expect_graph_rule(sink({store(index(gbuf(), a + b), f_(1))}), "one-extent-per-special");
}

TEST(GraphRules, ErrorPrintsTheWholeGraphWithTheNodeMarked) {
  UOp a = define_var("n", 0, 4), b = define_var("n", 0, 8);
  try {
    verify(sink({store(index(gbuf(), a + b), f_(1))}, "twovars"));
    FAIL();
  } catch (const IrError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("SINK(%"), std::string::npos) << m;
    EXPECT_NE(m.find("DEFINE_VAR [n 0..8] : int32   <--"), std::string::npos) << m;
  }
}

TEST(Registry, ExtensionOpsAreCheckedAndDocumented) {
  OpSpec s;
  s.name = "TEST_TILE_NOP";
  s.meaning = "Takes a float32 and returns it, for the registry test.";
  s.sources = {
      {"x", "a float32", [](const UOp&, const UOp& x) { return x.dtype() == dtypes::float32; }}};
  s.dtype = {"float32", [](std::span<const UOp>, const Arg&) { return dtypes::float32; }, {}};
  Op op = register_op(s);
  EXPECT_GE(int(op), kNumCoreOps);
  EXPECT_EQ(op_by_name("TEST_TILE_NOP"), op);
  EXPECT_EQ(UOp::make(op, {f_(1)}).dtype(), f32);
  EXPECT_THROW(UOp::make(op, {i_(1)}), IrError);
  EXPECT_NE(ops_doc().find("### TEST_TILE_NOP"), std::string::npos);
  EXPECT_THROW(register_op(s), std::invalid_argument);  // the name is taken
  OpSpec incomplete;
  incomplete.name = "TEST_NO_DTYPE_RULE";
  incomplete.meaning = "Has no dtype rule.";
  EXPECT_THROW(register_op(incomplete), std::invalid_argument);
}

}  // namespace
}  // namespace kitten
