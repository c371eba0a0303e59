// The tile-DSL GEMM against a float64 reference computed from the inputs as the kernel
// reads them (rounded to bf16/f16), at awkward sizes, both B layouts, a transposed A,
// several schedules; refused schedules and shape mismatches.
#include "kernels/gemm.h"
#include "../backends/test_device.h"
#include "backends/emu/emu_device.h"
#include "backends/emu/emulator.h"
#include "dsl/lower.h"
#include "dsl/printer.h"
#include "tiles/lower_tiles.h"
#include "tiles/tile.h"

namespace kitten {
namespace {

class Gemm : public DeviceTest {};

// C, A and B as the kernel takes them: A and B as tensor maps where it loads them by TMA.
std::vector<KernelArg> gemm_args(const CompiledKernel& k, const GemmProblem& p,
                                 const DeviceBuffer& c, const DeviceBuffer& a,
                                 const DeviceBuffer& b) {
  tiles::TensorLayout la = gemm_operand_layout(p, 1), lb = gemm_operand_layout(p, 2);
  return {tensor_arg(k, 0, c.buf, {p.n, p.m}, {p.n * p.out.itemsize()}),
          tensor_arg(k, 1, a.buf, la.dims, la.strides),
          tensor_arg(k, 2, b.buf, lb.dims, lb.strides)};
}

// C = A*B with A element (i, r) and B element (r, j) wherever the problem stores them.
void check_gemm(Device& dev, const GemmProblem& p, const Schedule& s, uint64_t seed) {
  SCOPED_TRACE(p.to_string() + " schedule '" + s.to_string() + "'");
  HostData a = HostData::random(p.in, size_t(p.m * p.k), seed),
           b = HostData::random(p.in, size_t(p.k * p.n), seed + 1);
  auto at = [&](int64_t i, int64_t r) { return p.a_transposed ? r * p.m + i : i * p.k + r; };
  auto bt = [&](int64_t r, int64_t j) { return p.b_transposed ? j * p.k + r : r * p.n + j; };
  std::vector<double> want(size_t(p.m * p.n), 0.0), scale(want.size(), 0.0);
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = 0; j < p.n; ++j)
      for (int64_t r = 0; r < p.k; ++r) {
        double t = a.values[size_t(at(i, r))] * b.values[size_t(bt(r, j))];
        want[size_t(i * p.n + j)] += t;
        scale[size_t(i * p.n + j)] += std::fabs(t);
      }
  HostData c = HostData::poisoned(p.out, want.size());
  DeviceBuffer da(dev, a), db(dev, b), dc(dev, c);
  try {
    CompiledKernel k = compile_lowered(dev, gemm_kernels(p, s, dev.props().target));
    k.run(gemm_args(k, p, dc, da, db));
  } catch (const std::exception& e) {
    FAIL() << e.what();
  }
  dc.read(c);
  expect_accumulated(c, want, scale, p.k);
}

const Schedule kSmall = Schedule::parse("BM=32 BN=32 BK=32 WM=2 WN=1 STAGES=3 SWIZZLE=64 WGMMA=0");

TEST_P(Gemm, AwkwardSizesAgainstTheReference) {
  uint64_t seed = 100;
  for (auto [m, n, k] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {17, 33, 65}, {64, 32, 48}})
    check_gemm(*dev, {m, n, k}, kSmall, seed += 2);
}

TEST_P(Gemm, EveryLayoutAndDtype) {
  uint64_t seed = 200;
  for (bool at : {false, true})
    for (bool bt : {false, true}) {
      GemmProblem p{48, 40, 72};
      p.a_transposed = at, p.b_transposed = bt;
      check_gemm(*dev, p, kSmall, seed += 2);
    }
  GemmProblem h{33, 47, 80, dtypes::float16, dtypes::float16};
  check_gemm(*dev, h, kSmall, seed += 2);
  GemmProblem b{70, 20, 33, dtypes::bfloat16, dtypes::bfloat16};
  b.b_transposed = true;
  check_gemm(*dev, b, kSmall, seed += 2);
}

TEST_P(Gemm, SeveralSchedulesAtLargerSizes) {
  uint64_t seed = 300;
  check_gemm(*dev, {128, 96, 200},
             Schedule::parse("BM=64 BN=32 BK=16 WM=2 WN=2 STAGES=2 SWIZZLE=32 WGMMA=0"), seed += 2);
  check_gemm(*dev, {257, 129, 511}, {}, seed += 2);  // the default schedule
  GemmProblem t{130, 190, 96};
  t.b_transposed = true;
  check_gemm(*dev, t, Schedule::parse("BM=64 BN=64 BK=32 WM=1 WN=2 STAGES=4 SWIZZLE=0 WGMMA=0"),
             seed += 2);
}

// Rows of an odd length cannot be copied 4 bytes at a time: the copies of A and B go the
// synchronous way (ld.global + st.shared), still correct.
TEST_P(Gemm, UnalignedRowsTakeTheSynchronousCopies) {
  check_gemm(*dev, {20, 24, 1023}, kSmall, 400);
  GemmProblem p{37, 41, 255};
  p.b_transposed = true;
  check_gemm(*dev, p, kSmall, 402);
}

// The Hopper schedule: a producer warpgroup fills a ring by TMA (zeros past the edges),
// consumer warpgroups multiply with wgmma, a persistent loop visits several tiles per
// block, stage phases wrapping many times.
TEST_P(Gemm, HopperScheduleTmaRingWgmmaPersistent) {
  const Target& t = dev->props().target;
  if (!t.has(kFeatureWgmma) || !t.has(kFeatureTma))
    GTEST_SKIP() << dev->props().name << " has no wgmma and TMA (" << t.arch << ")";
  uint64_t seed = 500;
  Schedule one = Schedule::parse("BM=64 BN=64 BK=64 WM=1 WN=1 STAGES=2 WGMMA=1 BLOCKS=1");
  check_gemm(*dev, {100, 120, 200}, one, seed += 2);
  check_gemm(*dev, {200, 296, 136}, Schedule::parse("WGMMA=1 BLOCKS=2"), seed += 2);
  GemmProblem bt{72, 136, 256, dtypes::bfloat16, dtypes::bfloat16};
  bt.b_transposed = true;
  check_gemm(*dev, bt, Schedule::parse("BM=128 BN=128 WM=2 WN=1 STAGES=3 WGMMA=1 BLOCKS=1"),
             seed += 2);
  // C through shared memory and TMA stores (bf16 C; the edge rows and columns not written).
  check_gemm(*dev, {200, 136, 128, dtypes::bfloat16, dtypes::bfloat16},
             Schedule::parse("BM=64 BN=64 WM=1 STAGES=2 WGMMA=1 EPILOGUE=1 BLOCKS=3"), seed += 2);
  GemmProblem at{128, 64, 64, dtypes::float16, dtypes::float32};
  at.a_transposed = true;
  check_gemm(*dev, at, Schedule::parse("BM=128 BN=64 WM=2 WN=1 STAGES=2 WGMMA=1"), seed += 2);
}

// REPACK=1: operands whose rows are not whole 16-byte units are copied into padded rows
// (temporaries the GEMM reads by TMA where it takes the Hopper schedule), the copies part
// of the kernel: A alone, B alone (transposed), both with a bf16 C through the epilogue,
// and the synchronous path on padded rows.
TEST_P(Gemm, RepackedOperandsTakeTheAlignedPaths) {
  uint64_t seed = 600;
  bool hopper = dev->props().target.has(kFeatureWgmma) && dev->props().target.has(kFeatureTma);
  Schedule repack = Schedule::parse(hopper ? "REPACK=1 BLOCKS=2" : "REPACK=1");
  check_gemm(*dev, {70, 64, 99}, repack, seed += 2);  // A's rows of 99
  check_gemm(*dev, {64, 37, 64}, repack, seed += 2);  // B's rows of 37
  GemmProblem both{131, 64, 45, dtypes::bfloat16, dtypes::bfloat16};
  both.b_transposed = true;  // A and B rows of 45
  check_gemm(*dev, both, repack, seed += 2);
  check_gemm(*dev, {33, 40, 77}, Schedule::parse("REPACK=1 WGMMA=0 BM=32 BN=32 BK=32 WM=2 WN=1"),
             seed += 2);
  // C's rows of 37 too: written padded (bf16 through the epilogue), then copied out; and a
  // float32 C of rows of 45.
  GemmProblem c37{70, 37, 64, dtypes::bfloat16, dtypes::bfloat16};
  Schedule repack_c = Schedule::parse(hopper ? "REPACK=2 BLOCKS=2" : "REPACK=2");
  check_gemm(*dev, c37, repack, seed += 2);
  check_gemm(*dev, c37, repack_c, seed += 2);
  check_gemm(*dev, {33, 45, 40}, repack_c, seed += 2);
  // The copies searched as parts, each with a schedule of its own: B's copy in (part 0),
  // the GEMM (part 1), C's copy out (part 2) several rows a thread.
  GemmProblem all{33, 45, 40, dtypes::bfloat16, dtypes::bfloat16};  // A's rows of 40 aligned
  Schedule parts = Schedule::parse(std::string(hopper ? "REPACK=2 BLOCKS=2" : "REPACK=2") +
                                   " UPCAST:1:8@0 UPCAST:0:2@0 UPCAST:0:3@2 UPCAST:1:2@2");
  check_gemm(*dev, all, parts, seed += 2);
  std::vector<GemmPart> copies = gemm_repack_copies(all, parts);
  ASSERT_EQ(copies.size(), 2u);  // B's rows in, C's rows out; the GEMM is part 1
  EXPECT_EQ(copies[0].part, 0);
  EXPECT_EQ(copies[1].part, 2);
  EXPECT_EQ(copies[1].schedule.to_string(), "UPCAST:0:3 UPCAST:1:2");
  // The default copy out: eight elements a thread, 256 apart, fewer in narrow rows.
  EXPECT_EQ(gemm_repack_copies(all, Schedule::parse("REPACK=2"))[1].schedule.to_string(),
            "LOCAL:1:48");
  GemmProblem wide{17, 1001, 64, dtypes::bfloat16, dtypes::bfloat16};  // C's pitch 1008
  EXPECT_EQ(gemm_repack_copies(wide, Schedule::parse("REPACK=2")).back().schedule.to_string(),
            "LOCAL:1:256 UPCAST:1:4");  // the last thread's fourth element past the row
  check_gemm(*dev, wide, repack_c, seed += 2);
  EXPECT_NE(gemm_full_schedule(all, parts, dev->props().target).to_string().find("UPCAST:0:3@2"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              gemm_kernels(all, Schedule::parse("REPACK=2 UPCAST:0:2@1"), dev->props().target);
            }).find("UPCAST:0:2@1 names the GEMM itself (part 1), which takes knobs"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              gemm_kernels(all, Schedule::parse("REPACK=2 UPCAST:0:2@3"), dev->props().target);
            }).find("names no copy of REPACK=2"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              gemm_kernels(all, Schedule::parse("REPACK=2 CUT:0:8@0"), dev->props().target);
            }).find("a copy of REPACK is one kernel, not cut, split or routed"),
            std::string::npos);
  // Nothing to repack: refused, naming why.
  std::string e = error_of([&] {
    gemm_kernels({64, 64, 64}, Schedule::parse("REPACK=1"), dev->props().target);
  });
  EXPECT_NE(e.find("REPACK=1 pads rows that are not whole 16-byte units"), std::string::npos) << e;
  if (hopper) {
    LoweredKernels l = gemm_kernels(both, Schedule::parse("REPACK=1"), dev->props().target);
    EXPECT_EQ(l.kernels.size(), 3u);
    ASSERT_EQ(l.temps.size(), 2u);
    EXPECT_EQ(l.temps[0].strides, (std::vector<int64_t>{48 * 2}));  // 45 padded to 48
    EXPECT_EQ(gemm_full_schedule(both, Schedule::parse("REPACK=1"), dev->props().target)
                  .knob_or("WGMMA", 0),
              1);
    LoweredKernels lc = gemm_kernels(c37, Schedule::parse("REPACK=2"), dev->props().target);
    ASSERT_EQ(lc.kernels.size(), 3u);  // B padded, the GEMM, C copied out
    EXPECT_EQ(lc.kernels[2].name_arg(), "gemm_repack4_0");
    EXPECT_EQ(gemm_full_schedule(c37, Schedule::parse("REPACK=2"), dev->props().target)
                  .knob_or("EPILOGUE", 0),
              1);
    EXPECT_EQ(gemm_kernels(c37, Schedule::parse("REPACK=1"), dev->props().target).kernels.size(),
              2u);  // B padded, the GEMM storing C from registers
  }
}

}  // namespace

INSTANTIATE_TEST_SUITE_P(Devices, Gemm, testing::ValuesIn(block_devices()), test_name);

}  // namespace kitten

namespace kitten {
namespace {

using namespace tiles;

TEST(TileDsl, TileDtypesNameTheirShapeLayoutAndSplit) {
  Owner o{Unit::Warp, 2, 4};
  EXPECT_EQ(register_tile(dtypes::float32, 128, 256, Layout::Row, o).name(),
            "rt<float32,128,256,row,w2x4>");
  o.col_split = Split::None;
  EXPECT_EQ(register_tile(dtypes::bfloat16, 128, 32, Layout::Row, o).name(),
            "rt<bfloat16,128,32,row,w2x4:r->");
  EXPECT_EQ(shared_tile(dtypes::bfloat16, 128, 64, Layout::Row, Swizzle::B128, 3).name(),
            "st<bfloat16,128,64,row,128B,x3>");
  // A warp's part must be whole 16x16 tiles; a swizzled row whole lines.
  EXPECT_NE(error_of([] {
              register_tile(dtypes::float32, 48, 64, Layout::Row, {Unit::Warp, 2, 2});
            }).find("whole 16x16 tiles"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              shared_tile(dtypes::bfloat16, 64, 16, Layout::Row, Swizzle::B64);
            }).find("whole 64-byte lines"),
            std::string::npos);
}

TEST(TileDsl, ShapeMismatchesNameTheOpAndBothShapes) {
  Kernel k("t", 2, 2);
  Tile acc = fill(k.reg(dtypes::float32, 64, 64), 0.0);
  Owner oa{Unit::Warp, 2, 2, Split::GridRows, Split::None};
  Owner ob{Unit::Warp, 2, 2, Split::None, Split::GridCols};
  Tile a = fill(register_tile(dtypes::bfloat16, 64, 32, Layout::Row, oa), 1.0);
  Tile b = fill(register_tile(dtypes::bfloat16, 16, 64, Layout::Col, ob), 1.0);
  std::string e = error_of([&] { mma_AB(acc, a, b); });
  EXPECT_NE(e.find("mma_AB: the shapes do not match: acc 64x64, a 64x32, b 16x64"),
            std::string::npos)
      << e;
  Tile bt = fill(register_tile(dtypes::bfloat16, 32, 64, Layout::Row, ob), 1.0);
  e = error_of([&] { mma_AB(acc, a, bt); });
  EXPECT_NE(e.find("b col-layout"), std::string::npos) << e;
  e = error_of([&] { map(Op::ADD, acc, a); });
  EXPECT_NE(e.find("map ADD"), std::string::npos) << e;
  // The verifier checks the same rule on a node made directly.
  e = error_of([&] {
    UOp::make(tile_ops().mma, acc.node.dtype(), {acc.node, a.node, b.node}, std::string("AB"));
  });
  EXPECT_NE(e.find("the shapes do not match"), std::string::npos) << e;
}

TEST(TileDsl, RefusedSchedulesNameTheConstraintBeforeCompiling) {
  Target t = h100_target();
  auto refused = [&](const char* s) {
    return error_of([&] { gemm_kernel({256, 256, 256}, Schedule::parse(s), t); });
  };
  EXPECT_NE(refused("BM=48 WM=2 WGMMA=0").find("multiple of 16*WM"), std::string::npos);
  EXPECT_NE(refused("BM=512 BN=512 WGMMA=0")
                .find("bytes of shared memory, more than the target's 232448"),
            std::string::npos);
  EXPECT_NE(refused("BM=256 BN=256 WM=1 WN=1 WGMMA=0").find("accumulators per thread"),
            std::string::npos);
  EXPECT_NE(refused("BX=1").find("not a knob of the GEMM"), std::string::npos);
  EXPECT_NE(refused("STAGES=1").find("STAGES must be at least 2"), std::string::npos);
  EXPECT_NE(refused("WM=8 WN=8 WGMMA=0").find("threads, more than the target's 1024"),
            std::string::npos);
  // The Hopper schedule: a warpgroup's 64 rows, TMA's 16-byte rows, the target's features.
  EXPECT_NE(refused("WGMMA=1 BM=192 WM=2").find("BM is 64*WM"), std::string::npos);
  EXPECT_NE(refused("WGMMA=1 STAGES=6").find("bytes of shared memory"), std::string::npos);
  std::string odd = error_of([&] {
    gemm_kernel({4096, 4096, 4095}, Schedule::parse("WGMMA=1"), t);
  });
  EXPECT_NE(odd.find("rows of whole 16-byte units"), std::string::npos) << odd;
  Target old = t;
  old.features &= ~kFeatureWgmma;
  std::string no = error_of([&] { gemm_kernel({256, 256, 256}, Schedule::parse("WGMMA=1"), old); });
  EXPECT_NE(no.find("WGMMA=1 needs wgmma"), std::string::npos) << no;
}

// The lowering leaves no tile op; aligned copies are cp.async, fragment loads ldmatrix.
TEST(TileDsl, LoweringLeavesPerThreadOpsOnly) {
  Target t = h100_target();
  UOp lowered = lower(gemm_kernel({256, 256, 256}, Schedule::parse("WGMMA=0"), t), t);
  std::map<std::string, int> count;
  for (const UOp& u : toposort(lowered)) {
    ++count[op_name(u.op())];
    EXPECT_FALSE(u.dtype().is_extension()) << describe(u);
  }
  EXPECT_EQ(count["TILE_MMA"] + count["TILE_LOAD"] + count["TILE_COPY"], 0);
  EXPECT_GT(count["LDMATRIX"], 0);
  EXPECT_GT(count["ASYNC_COPY"], 0);
  EXPECT_GT(count["MMA"], 0);
  EXPECT_EQ(count["WAIT_GROUP"], 1);
  // A's rows of 1023 elements: no 4-byte copy of A is provably aligned (B's rows of 64 are).
  UOp odd = lower(gemm_kernel({64, 64, 1023}, {}, t), t);  // the default: mma.sync here
  int of_a = 0, of_b = 0;
  for (const UOp& u : toposort(odd))
    if (u.op() == Op::ASYNC_COPY) ++(u.src(1).src(0).slot() == 1 ? of_a : of_b);
  EXPECT_EQ(of_a, 0);
  EXPECT_GT(of_b, 0);
  // On Hopper the default: TMA loads on mbarriers, wgmma reading shared memory in place (no
  // fragment loads), a producer and consumers with their register budgets.
  std::map<std::string, int> hopper;
  for (const UOp& u : toposort(lower(gemm_kernel({256, 256, 256}, {}, t), t)))
    ++hopper[op_name(u.op())];
  EXPECT_EQ(hopper["LDMATRIX"] + hopper["ASYNC_COPY"] + hopper["MMA"], 0);
  EXPECT_EQ(hopper["WGMMA"], 4);     // m64n256k16 over BK = 64
  EXPECT_EQ(hopper["TMA_LOAD"], 5);  // A in one 128-byte panel, B (256 wide) in four
  EXPECT_EQ(hopper["MBARRIER_WAIT"], 2);
  EXPECT_EQ(hopper["SETMAXNREG"], 2);
}

// tile_warps leaves only warps' tiles (a grid of one warp, the warp's part) whose loads
// and stores carry the warp's origin; lower_tiles then leaves no tile at all.
TEST(TileDsl, EachLoweringLevelPrintsAndVerifies) {
  Target t = h100_target();
  LowerOptions o;
  o.print_after = {"tile_warps", "lower_tiles"};
  std::map<std::string, UOp> seen;
  o.dump = [&](const std::string& pass, const UOp& g) { seen[pass] = g; };
  lower(gemm_kernel({256, 256, 256}, Schedule::parse("BM=128 BN=64 WM=2 WN=2"), t), t, {}, o);
  ASSERT_EQ(seen.size(), 2u);
  int loads = 0;
  for (const UOp& u : toposort(seen["tile_warps"])) {
    const TileType* tt = tile_type(u.dtype());
    if (!tt || tt->memory != Memory::Register) continue;
    EXPECT_EQ(tt->owner.rows * tt->owner.cols, 1) << u.dtype().name();
    if (u.op() == tile_ops().load) {
      ++loads;
      EXPECT_EQ(u.src().size(), 3u) << describe(u);  // the slot and the warp's origin
    }
  }
  EXPECT_EQ(loads, 2);
  for (const UOp& u : toposort(seen["lower_tiles"])) EXPECT_FALSE(u.dtype().is_extension());
  // A block's tile handed to lower_tiles directly is refused, naming the pass before it.
  std::string e;
  try {
    lower_tiles(gemm_kernel({64, 64, 64}, {}, t), t);
  } catch (const IrError& err) {
    e = err.what();
  }
  EXPECT_NE(e.find("tile_warps makes it the warps' tiles first"), std::string::npos) << e;
}

// The GEMM's swizzled shared stores (cp.async) and ldmatrix fragment loads are free of
// bank conflicts, as the emulator counts them.
// Runs the GEMM once on the emulator and returns its statistics (bank conflicts).
EmuStats gemm_emu_stats(Device& dev, const GemmProblem& p, const Schedule& s) {
  CompiledKernel k = compile_kernel(dev, gemm_kernel(p, s, dev.props().target));
  HostData a = HostData::random(p.in, size_t(p.m * p.k), 7),
           b = HostData::random(p.in, size_t(p.k * p.n), 8),
           c = HostData::poisoned(p.out, size_t(p.m * p.n));
  DeviceBuffer da(dev, a), db(dev, b), dc(dev, c);
  auto ek = emu_compile(k.linear, dev.props().target);
  LaunchDims grid, block;
  emu_launch_dims(*ek, grid, block);
  EmuStats stats;
  std::vector<KernelArg> kargs = args({&dc, &da, &db});
  emu_run(*ek, grid, block, kargs, &stats);
  return stats;
}

TEST(TileDsl, GemmSharedAccessesAreConflictFree) {
  auto dev = make_emu_device();
  for (const char* s : {"WGMMA=0", "BM=64 BN=64 BK=64 WM=2 WN=2 STAGES=3 SWIZZLE=128 WGMMA=0",
                        "BM=32 BN=32 BK=32 WM=2 WN=1 STAGES=3 SWIZZLE=64 WGMMA=0"}) {
    SCOPED_TRACE(s);
    EmuStats stats = gemm_emu_stats(*dev, {128, 128, 128}, Schedule::parse(s));
    EXPECT_GT(stats.shared_accesses, 0u);
    EXPECT_EQ(stats.bank_conflicts, 0u);
  }
  // Without a swizzle the same fragment loads conflict.
  EmuStats plain =
      gemm_emu_stats(*dev, {64, 64, 64},
                     Schedule::parse("BM=64 BN=64 BK=64 WM=2 WN=2 STAGES=2 SWIZZLE=0 WGMMA=0"));
  EXPECT_GT(plain.bank_conflicts, 0u);
}

}  // namespace
}  // namespace kitten

namespace kitten {
namespace {

using namespace tiles;

// A DSL-built Hopper kernel: the producer loads two 64x64 bf16 tiles by TMA onto a
// semaphore, one consumer warpgroup multiplies them with wgmma and stores C (f32). With
// `wait` false the consumer skips its wait, with parity 1 it waits on the wrong phase:
// either way wgmma reads shared memory the TMA has not yet filled (the emulator lands a
// TMA load only when a wait sees its phase complete).
UOp hopper_product_kernel(bool wait, int parity) {
  DType bf = dtypes::bfloat16;
  auto i32 = [](int64_t v) { return const_int(dtypes::int32, v); };
  Kernel k("hopper_product", Unit::Warpgroup, 1, 1, 1);
  DType st = shared_tile(bf, 64, 64, Layout::Row, Swizzle::B128);
  TmaMap A = k.tensor_map(1, st), B = k.tensor_map(2, st);
  Ring sa = k.ring(bf, 64, 64, Swizzle::B128, 2), sb = k.ring(bf, 64, 64, Swizzle::B128, 2);
  View C = k.view(0, dtypes::float32, i32(64), i32(64), i32(64), i32(1));
  Semaphores full = k.semaphores(1, 1);
  k.specialise(
      40, 232,
      [&] {
        k.arrive(full, i32(0), 2 * 64 * 64 * 2);
        k.tma_load(sa[i32(0)], A, i32(0), i32(0), full, i32(0));
        k.tma_load(sb[i32(0)], B, i32(0), i32(0), full, i32(0));
      },
      [&] {
        Tile acc = fill(k.reg(dtypes::float32, 64, 64), 0.0);
        if (wait) k.wait(full, i32(0), i32(parity));
        Tile a = load(sa[i32(0)], operand_tile(acc, sa[i32(0)], 'a', "ABt"));
        Tile b = load(sb[i32(0)], operand_tile(acc, sb[i32(0)], 'b', "ABt"));
        k.store(C, i32(0), i32(0), mma_ABt(acc, a, b));
      });
  return k.finish();
}

// The Hopper verbs refuse what cannot work, naming it: a map for another tile, a TILE_TMA
// made directly with a map of another box, register budgets beyond the register file.
TEST(HopperTiles, VerbsAndSpecsRefuseWhatCannotWork) {
  DType bf = dtypes::bfloat16;
  auto i32 = [](int64_t v) { return const_int(dtypes::int32, v); };
  Kernel k("refusals", Unit::Warpgroup, 1, 1, 1);
  Ring sa = k.ring(bf, 64, 64, Swizzle::B128, 2);
  TmaMap wide = k.tensor_map(1, shared_tile(bf, 64, 128, Layout::Row, Swizzle::B128));
  Semaphores full = k.semaphores(2, 1);
  std::string e = error_of([&] { k.tma_load(sa[i32(0)], wide, i32(0), i32(0), full, i32(0)); });
  EXPECT_NE(e.find("a map for st<bfloat16,64,128,row,128B> fills st<bfloat16,64,64,row,128B>"),
            std::string::npos)
      << e;
  UOp other = UOp::make(Op::TENSOR_MAP, bf.ptr(), {}, std::vector<int64_t>{2, 3, 64, 32});
  e = error_of([&] {
    UOp::make(tile_ops().tma, dtypes::void_,
              {sa[i32(0)].node, other, index(full.buf, i32(0)), i32(0), i32(0)});
  });
  EXPECT_NE(e.find("the map's element, swizzle and box are the tile's panel"), std::string::npos)
      << e;
  Kernel big("budgets", Unit::Warpgroup, 3, 1, 1);
  e = error_of([&] {
    big.specialise(
        40, 232, [] {}, [] {});
  });
  EXPECT_NE(e.find("need more than the block's 128 registers per thread at launch"),
            std::string::npos)
      << e;
  // Four consumers of 112 beside a producer of 40 hung an H100: the block launches with 96
  // registers a thread, and the producer's 56 x 128 pay for 14 more per consumer thread.
  Kernel four("four", Unit::Warpgroup, 4, 1, 1);
  e = error_of([&] {
    four.specialise(
        40, 112, [] {}, [] {});
  });
  EXPECT_NE(e.find("need more than the block's 96 registers"), std::string::npos) << e;
  four.specialise(
      40, 0, [] {}, [] {});
  std::vector<int64_t> budgets;
  for (const UOp& u : toposort(four.finish()))
    if (u.op() == Op::SETMAXNREG) budgets.push_back(std::get<std::vector<int64_t>>(u.arg())[0]);
  std::sort(budgets.begin(), budgets.end());
  EXPECT_EQ(budgets, (std::vector<int64_t>{40, 104}));
}

TEST(HopperTiles, TheEmulatorCatchesAMissingOrWrongWaitInADslKernel) {
  auto dev = make_emu_device();
  HostData a = HostData::random(dtypes::bfloat16, 64 * 64, 31),
           b = HostData::random(dtypes::bfloat16, 64 * 64, 32);
  auto run = [&](bool wait, int parity) {
    HostData c = HostData::poisoned(dtypes::float32, 64 * 64);
    DeviceBuffer da(*dev, a), db(*dev, b), dc(*dev, c);
    std::string e = error_of([&] {
      CompiledKernel k = compile_kernel(*dev, hopper_product_kernel(wait, parity));
      const KernelInfo& info = k.rendered.info;
      k.run(std::vector<KernelArg>{dc.buf, tensor_arg(info, 1, da.buf, {64, 64}, {128}),
                                   tensor_arg(info, 2, db.buf, {64, 64}, {128})});
    });
    if (e.empty()) {  // C = A * B^T against float64
      dc.read(c);
      std::vector<double> want(64 * 64, 0.0), scale(want.size(), 0.0);
      for (int i = 0; i < 64; ++i)
        for (int j = 0; j < 64; ++j)
          for (int r = 0; r < 64; ++r) {
            double t = a.values[size_t(i * 64 + r)] * b.values[size_t(j * 64 + r)];
            want[size_t(i * 64 + j)] += t, scale[size_t(i * 64 + j)] += std::fabs(t);
          }
      expect_accumulated(c, want, scale, 64);
    }
    return e;
  };
  EXPECT_EQ(run(true, 0), "");
  for (auto [wait, parity] : {std::pair{false, 0}, std::pair{true, 1}}) {
    std::string e = run(wait, parity);
    SCOPED_TRACE(e);
    EXPECT_NE(e.find("read of shared memory never written"), std::string::npos);
  }
}

}  // namespace
}  // namespace kitten
