// The schedule pass, the heuristic and the expander on small graphs: what each action makes
// of a kernel, asserted on the lowered graph's structure, and every way a schedule is
// refused before anything is compiled.
#include <gtest/gtest.h>

#include "dsl/expand.h"
#include "dsl/lower.h"
#include "dsl/opt.h"
#include "dsl/printer.h"
#include "dsl/symbolic.h"
#include "kernels/examples.h"

namespace kitten {
namespace {

struct Counts {
  int ranges = 0, expanded_ranges = 0, stores = 0, gated_stores = 0, vector_loads = 0,
      vector_stores = 0, specials = 0;
  int64_t reg_size = 0;
};

Counts count(const UOp& g) {
  Counts c;
  for (const UOp& u : toposort(g)) {
    if (u.op() == Op::RANGE) {
      ++c.ranges;
      AxisKind k = u.axis().kind;
      c.expanded_ranges += k == AxisKind::Upcast || k == AxisKind::Unroll;
    }
    if (u.op() == Op::STORE) {
      ++c.stores;
      c.gated_stores += u.src(0).src().size() == 3;
      c.vector_stores += u.src(1).dtype().is_vector();
    }
    c.vector_loads += u.op() == Op::LOAD && u.dtype().is_vector();
    c.specials += u.op() == Op::SPECIAL;
    if (u.op() == Op::DEFINE_REG) c.reg_size = u.dtype().size();
  }
  return c;
}

Target cpu() { return host_target("x86_64", 2); }

// UPCAST of both output axes of a matmul: one register per output of the 4 x 8 tile, the
// tile's row of b read as one 8-lane vector (its start proven a multiple of 8), the tile
// written back as 4 vector stores, no upcast range left.
TEST(Expand, UpcastMakesARegisterTileWithVectorAccesses) {
  UOp g = lower(matmul_kernel(64, 64, 64, dtypes::float32), cpu(),
                Schedule::parse("UPCAST:1:8 UPCAST:0:4"));
  Counts c = count(g);
  EXPECT_EQ(c.expanded_ranges, 0);
  EXPECT_EQ(c.specials, 1);  // 16 row tiles: the thread pool's blocks
  EXPECT_EQ(c.ranges, 2);    // 8 column tiles, the reduction
  EXPECT_EQ(c.reg_size, 32);
  EXPECT_EQ(c.vector_loads, 1) << print_graph(g);
  EXPECT_EQ(c.vector_stores, 4) << print_graph(g);
  EXPECT_EQ(c.gated_stores, 0);
}

// UNROLL of the reduction: one loop of a quarter of the extent, four chained updates of the
// one accumulator in it (copy k reads after copy k - 1's store).
TEST(Expand, UnrollChainsTheCopies) {
  UOp g = lower(reduce_kernel(3, 32, 1, Op::ADD, dtypes::float32), cpu(),
                Schedule::parse("UNROLL:1:4"));
  Counts c = count(g);
  EXPECT_EQ(c.reg_size, 1);
  EXPECT_EQ(c.ranges, 1);  // the rows are the thread pool's blocks
  int chained = 0;
  for (const UOp& u : toposort(g))
    if (u.op() == Op::AFTER)
      for (size_t k = 1; k < u.src().size(); ++k)
        chained += u.src(k).op() == Op::STORE && u.src(k).src(1).op() != Op::CONST;
  EXPECT_EQ(chained, 3) << print_graph(g);
}

// An amount that does not divide the extent: the index is clamped and the stores to memory
// gated, so the iterations past the end change nothing. Of 7 columns in 2 x 4 copies, only
// the last copy's gate is not proven true.
TEST(Expand, AnAmountThatDoesNotDivideGatesTheTail) {
  UOp g = lower(elementwise_add_kernel(3, 7, dtypes::float32, false), cpu(),
                Schedule::parse("UPCAST:1:4"));
  Counts c = count(g);
  EXPECT_EQ(c.stores, 4);
  EXPECT_EQ(c.gated_stores, 1) << print_graph(g);
  EXPECT_EQ(c.vector_loads, 0);
  bool clamped = false;
  for (const UOp& u : toposort(g)) clamped |= u.op() == Op::MIN;
  EXPECT_TRUE(clamped);
}

// LOCAL splits become the block's threads on a target with blocks.
TEST(Expand, LocalAxesBecomeThreads) {
  UOp g = lower(matmul_kernel(64, 64, 64, dtypes::float32), h100_target(),
                Schedule::parse("UPCAST:1:4 LOCAL:1:16 LOCAL:0:8"));
  std::map<std::string, int64_t> specials;
  for (const UOp& u : toposort(g))
    if (u.op() == Op::SPECIAL)
      specials[std::string(special_name(std::get<SpecialArg>(u.arg())))] = u.src(0).const_int();
  EXPECT_EQ(specials,
            (std::map<std::string, int64_t>{
                {"blockIdx.x", 1}, {"blockIdx.y", 8}, {"threadIdx.x", 16}, {"threadIdx.y", 8}}));
  EXPECT_EQ(count(g).ranges, 1);  // the reduction
}

// The heuristic: register tiles for matmul-shaped kernels (8 x 8 on cpu, 4 x 4 per thread
// on blocks), an upcast of outputs contiguous across a reduction over rows, 4-lane
// vectors for elementwise kernels on blocks; nothing for a kernel that maps its threads.
TEST(Expand, TheHeuristicScheduleIsDeterministic) {
  UOp mm = matmul_kernel(64, 64, 64, dtypes::float32);
  EXPECT_EQ(heuristic_schedule(mm, cpu()).to_string(), "UPCAST:1:8 UPCAST:0:8");
  EXPECT_EQ(heuristic_schedule(mm, h100_target()).to_string(), "UPCAST:1:4 UPCAST:0:4");
  EXPECT_EQ(heuristic_schedule(matmul_kernel(7, 6, 5, dtypes::float32), cpu()).to_string(),
            "UPCAST:1:2");
  EXPECT_EQ(
      heuristic_schedule(reduce_kernel(64, 64, 0, Op::ADD, dtypes::float32), cpu()).to_string(),
      "UPCAST:0:8");
  EXPECT_EQ(
      heuristic_schedule(reduce_kernel(64, 64, 1, Op::ADD, dtypes::float32), cpu()).to_string(),
      "");
  UOp add = elementwise_add_kernel(8, 64, dtypes::float32, false);
  EXPECT_EQ(heuristic_schedule(add, h100_target()).to_string(), "UPCAST:1:4");
  EXPECT_EQ(heuristic_schedule(add, cpu()).to_string(), "");
  EXPECT_EQ(heuristic_schedule(tiled_matmul_kernel(32, 32, 32, 16), h100_target()).to_string(), "");
  // A GEMV's threads share each column's reduction and read vectors across the row, two of
  // them where the columns leave 1.5 blocks a multiprocessor (132 on the H100).
  DType bf = dtypes::bfloat16;
  EXPECT_EQ(heuristic_schedule(matmul_kernel(1, 4096, 4096, bf), h100_target()).to_string(),
            "GROUP:2:256 UPCAST:1:8 UPCAST:1:2");
  EXPECT_EQ(heuristic_schedule(matmul_kernel(1, 3072, 768, bf), h100_target()).to_string(),
            "GROUP:2:256 UPCAST:1:8");
}

// Passes over rows that split into vectors x threads x at most 4: each thread's part of
// the row in registers, loaded once by vector loads (a layer norm's three passes, one
// read); other widths: the block's threads share the row, each pass its own loop.
TEST(Expand, TheHeuristicKeepsAShortRowInRegisters) {
  Target t = h100_target();
  auto heuristic = [&](const UOp& k) { return heuristic_schedule(k, t).to_string(); };
  EXPECT_EQ(heuristic(layernorm_kernel(8, 4096)),
            "UNROLL:1:4 UNROLL:2:4 UPCAST:3:4 GROUP:1:256 GROUP:2:256 LOCAL:3:256 UNROLL:1:4 "
            "UNROLL:2:4 UPCAST:3:4");
  EXPECT_EQ(heuristic(softmax_kernel(8, 384)),
            "UNROLL:1:4 UNROLL:2:4 UPCAST:3:4 GROUP:1:96 GROUP:2:96 LOCAL:3:96");
  EXPECT_EQ(heuristic(reduce_kernel(8, 4096, 1, Op::ADD, dtypes::float32)),
            "UNROLL:1:4 GROUP:1:256 UNROLL:1:4");
  EXPECT_EQ(heuristic(reduce_kernel(8, 1000, 1, Op::ADD, dtypes::float32)), "GROUP:1:256");
  EXPECT_EQ(heuristic(layernorm_kernel(8, 1001)), "GROUP:1:256 GROUP:2:256 LOCAL:3:256");
  UOp k = lower(layernorm_kernel(8, 4096), t, Schedule());
  int x_loads = 0;
  for (const UOp& u : toposort(k))
    if (u.op() == Op::LOAD && u.src(0).src(0).op() == Op::PARAM && u.src(0).src(0).slot() == 1) {
      EXPECT_EQ(u.dtype().count(), 4);
      ++x_loads;
    }
  EXPECT_EQ(x_loads, 4);
}

// An unrolled reduction's loads from a buffer the copies do not write merge into one
// vector load where they are contiguous and aligned (the unroll innermost), and stay
// scalar where the copies are a block apart (the GROUP innermost).
TEST(Expand, UnrolledLoadsMergeIntoVectors) {
  auto widest = [](const std::string& text) {
    UOp k = lower(reduce_kernel(5, 1024, 1, Op::ADD, dtypes::float32), h100_target(),
                  Schedule::parse(text));
    int lanes = 0;
    for (const UOp& u : toposort(k))
      if (u.op() == Op::LOAD && u.src(0).src(0).dtype().space() == AddrSpace::Global)
        lanes = std::max(lanes, u.dtype().count());
    return lanes;
  };
  EXPECT_EQ(widest("UNROLL:1:4 GROUP:1:32"), 4);
  EXPECT_EQ(widest("UNROLL:1:4"), 4);
  EXPECT_EQ(widest("GROUP:1:32 UNROLL:1:4"), 1);
}

// GROUP: the threads of a block share a reduction; their partials meet in shared memory
// between two barriers, and the output store, the same in every thread, is thread 0's.
TEST(Expand, GroupSharesAReductionThroughSharedMemory) {
  UOp g = lower(reduce_kernel(5, 100, 1, Op::ADD, dtypes::float32), h100_target(),
                Schedule::parse("GROUP:1:32"));
  int barriers = 0, locals = 0, first_thread_gates = 0;
  std::map<std::string, int64_t> specials;
  for (const UOp& u : toposort(g)) {
    barriers += u.op() == Op::BARRIER;
    locals += u.op() == Op::DEFINE_LOCAL;
    if (u.op() == Op::SPECIAL)
      specials[std::string(special_name(std::get<SpecialArg>(u.arg())))] = u.src(0).const_int();
    if (u.op() == Op::STORE && u.src(0).src(0).dtype().space() == AddrSpace::Global)
      first_thread_gates += u.src(0).src().size() == 3;
  }
  EXPECT_EQ(barriers, 2);
  EXPECT_EQ(locals, 1);
  EXPECT_EQ(first_thread_gates, 1);
  EXPECT_EQ(specials, (std::map<std::string, int64_t>{{"blockIdx.x", 5}, {"threadIdx.x", 32}}));
}

void expect_refused(const UOp& k, const Target& t, const char* schedule, const char* why) {
  try {
    lower(k, t, Schedule::parse(schedule));
    ADD_FAILURE() << schedule << " was accepted";
  } catch (const ScheduleError& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
}

TEST(Expand, BadSchedulesAreRefusedWithTheReason) {
  UOp mm = matmul_kernel(64, 64, 64, dtypes::float32);
  expect_refused(mm, cpu(), "TILE:0:2", "is not an action this pass knows");
  expect_refused(mm, cpu(), "UPCAST:2:4", "needs a global axis; axis is reduce");
  expect_refused(mm, cpu(), "UNROLL:1:65", "needs an amount from 1 to the axis's extent 64");
  expect_refused(mm, cpu(), "UPCAST:0:16 UPCAST:1:32", "at most 256 are allowed");
  // The copies of a loop's body multiply with those of the axes around it; sibling loops
  // (a layer norm's passes over its row) count their own.
  UOp ln = layernorm_kernel(4, 256);
  expect_refused(ln, cpu(), "UPCAST:0:4 UNROLL:2:128", "512 copies of a loop's body");
  EXPECT_NO_THROW(
      lower(ln, cpu(), Schedule::parse("UPCAST:0:2 UNROLL:1:128 UNROLL:2:128 UPCAST:3:128")));
  // ... and all innermost loops together make at most 1024: five sibling copies of a row.
  DType f = dtypes::float32;
  UOp o = param(0, f.ptr()), x = param(1, f.ptr());
  auto copy = [&](int s) {
    UOp j = range(256, s, AxisKind::Global);
    return end(store(index(o, j + s * 256), load(index(x, j))), {j});
  };
  UOp five = sink({copy(0), copy(1), copy(2), copy(3), copy(4)}, "five");
  EXPECT_NO_THROW(
      lower(five, cpu(), Schedule::parse("UPCAST:0:256 UPCAST:1:256 UPCAST:2:256 UPCAST:3:256")));
  expect_refused(five, cpu(), "UPCAST:0:256 UPCAST:1:256 UPCAST:2:256 UPCAST:3:256 UPCAST:4:256",
                 "1280 copies of loop bodies in all; at most 1024");
  expect_refused(mm, cpu(), "LOCAL:0:4", "needs threads that form blocks");
  expect_refused(mm, h100_target(), "LOCAL:0:64 LOCAL:1:32", "has at most 1024");
  expect_refused(mm, cpu(), "UPCAST:7:2", "names axis 7");
  expect_refused(mm, cpu(), "GROUP:2:32", "needs threads that form blocks");
  expect_refused(mm, h100_target(), "GROUP:0:32", "needs a reduce axis; axis is global");
  expect_refused(softmax_kernel(4, 100), h100_target(), "GROUP:1:32 GROUP:2:32 LOCAL:3:16",
                 "share the block's threads");
  // The threads that share a row's reduction cannot also take rows of their own (the
  // search found this giving wrong sums).
  expect_refused(mm, h100_target(), "GROUP:2:32 LOCAL:1:32", "holds the reduction of GROUP:2");
  expect_refused(reduce_kernel(5, 4096, 1, Op::ADD, dtypes::float32), h100_target(),
                 "GROUP:1:32 GROUP:1:32", "over the block's threads a second time");
  expect_refused(softmax_kernel(64, 100), h100_target(),
                 "GROUP:1:32 GROUP:2:32 LOCAL:3:32 LOCAL:0:32", "holds the reduction of GROUP:1");
  UOp sq = sum_and_squares_kernel(4, 64);  // two updates in one loop: both combined
  EXPECT_NO_THROW(lower(sq, h100_target(), Schedule::parse("GROUP:1:16")));
  // A reduce loop whose body writes memory is no register update to combine.
  UOp out = param(0, dtypes::float32.ptr());
  UOp r = range(64, 0, AxisKind::Reduce);
  UOp writes = sink({end(store(index(out, r), const_(dtypes::float32, 1.0)), {r})}, "writes");
  expect_refused(writes, h100_target(), "GROUP:0:16", "needs a loop body of register updates");
}

// CUT: two kernels, named for their parts, each lowered with its part's schedule.
TEST(Expand, ACutLowersIntoTwoKernels) {
  UOp mm = matmul_kernel(100, 64, 32, dtypes::float32);
  std::vector<UOp> parts = lower_kernels(mm, cpu(), Schedule::parse("CUT:0:96 UPCAST:0:8")).kernels;
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name_arg(), "matmul_0");
  EXPECT_EQ(parts[1].name_arg(), "matmul_1");
  std::vector<int64_t> blocks;
  for (const UOp& p : parts)
    for (const UOp& u : toposort(p))
      if (u.op() == Op::SPECIAL) blocks.push_back(u.src(0).const_int());
  EXPECT_EQ(blocks, (std::vector<int64_t>{12, 1}));  // 96 rows by 8; 4 rows upcast by the heuristic
  EXPECT_EQ(lower_kernels(mm, cpu()).kernels.size(), 1u);
  expect_refused(mm, cpu(), "CUT:0:50", "lower them with lower_kernels");
  auto refused = [&](const char* text, const char* why) {
    try {
      lower_kernels(mm, cpu(), Schedule::parse(text));
      ADD_FAILURE() << text << " was accepted";
    } catch (const ScheduleError& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  refused("CUT:2:16", "needs a global axis");
  refused("CUT:0:100", "needs distinct cut points between 0 and the extent 100");
  refused("CUT:0:10 CUT:0:10", "needs distinct cut points");
  refused("CUT:0:10 SPLIT:2:4", "a SPLIT stands alone");
  // Two CUTs of one axis: three kernels, the last (the tail) with the heuristic.
  std::vector<UOp> three =
      lower_kernels(mm, cpu(), Schedule::parse("CUT:0:64 CUT:0:32 UPCAST:0:8")).kernels;
  ASSERT_EQ(three.size(), 3u);
  EXPECT_EQ(three[2].name_arg(), "matmul_2");
  // CUTs of two axes: four rectangles; the interior (96 x 56) gets UPCAST:0:8 (12 blocks of
  // rows), the edges the heuristic.
  LoweredKernels rect = lower_kernels(mm, cpu(), Schedule::parse("CUT:0:96 CUT:1:56 UPCAST:0:8"));
  ASSERT_EQ(rect.kernels.size(), 4u);
  std::vector<int64_t> rows;
  for (const UOp& u : toposort(rect.kernels[0]))
    if (u.op() == Op::SPECIAL) rows.push_back(u.src(0).const_int());
  EXPECT_EQ(rows, (std::vector<int64_t>{12}));
  // A triangle (a loop whose extent depends on the cut axis) cannot be cut into rectangles.
  UOp i = range(10, 0, AxisKind::Global);
  UOp j = range(i + 1, 1, AxisKind::Loop);
  DType f = dtypes::float32;
  UOp tri = sink(
      {end(end(store(index(param(0, f.ptr()), i * 10 + j), load(index(param(1, f.ptr()), j))), {j}),
           {i})},
      "triangle");
  try {
    lower_kernels(tri, cpu(), Schedule::parse("CUT:0:5"));
    ADD_FAILURE() << "a triangle was cut";
  } catch (const ScheduleError& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "not a rectangle: the extent of axis 1 depends on the cut axis 0"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(lower_kernels(tri, cpu()).kernels.size(), 1u);
  // A part's own entries (@P) replace the rule it runs by: the tail (part 1, 4 rows) gets
  // UPCAST:0:2 instead of the heuristic (which upcasts all 4), the body (part 0) UPCAST:0:4
  // instead of the schedule's UPCAST:0:8.
  auto blocks_of = [](const LoweredKernels& l) {
    std::vector<int64_t> b;
    for (const UOp& p : l.kernels)
      for (const UOp& u : toposort(p))
        if (u.op() == Op::SPECIAL) b.push_back(u.src(0).const_int());
    return b;
  };
  EXPECT_EQ(
      blocks_of(lower_kernels(mm, cpu(), Schedule::parse("CUT:0:96 UPCAST:0:8 UPCAST:0:2@1"))),
      (std::vector<int64_t>{12, 2}));
  EXPECT_EQ(
      blocks_of(lower_kernels(mm, cpu(), Schedule::parse("CUT:0:96 UPCAST:0:8 UPCAST:0:4@0"))),
      (std::vector<int64_t>{24, 1}));
  // A SPLIT's partial kernel is part 0, its combine part 1: an UPCAST of the 100 output
  // columns (axis 1) of each by its own amount.
  auto columns = [&](const char* text) {
    LoweredKernels l =
        lower_kernels(matmul_kernel(2, 100, 64, dtypes::float32), cpu(), Schedule::parse(text));
    std::vector<int64_t> extents;  // the global ranges left of axis 1, per kernel
    for (const UOp& k : l.kernels)
      for (const UOp& u : toposort(k))
        if (u.op() == Op::RANGE && u.axis().id == 1) extents.push_back(u.src(0).const_int());
    return extents;
  };
  EXPECT_EQ(columns("SPLIT:2:4 UPCAST:1:4@0 UPCAST:1:5@1 NOOPT=1"), (std::vector<int64_t>{25, 20}));
  EXPECT_EQ(columns("SPLIT:2:4 UPCAST:1:5@0 NOOPT=1"), (std::vector<int64_t>{20, 100}));
  refused("UPCAST:0:4@1", "names a part, but the schedule neither CUTs nor SPLITs kernel 'matmul'");
  refused("CUT:0:96 UPCAST:0:4@2",
          "names part 2 of kernel 'matmul', which its CUTs or SPLIT make 2 "
          "parts of (0 to 1)");
  refused("CUT:0:96@1", "a CUT or SPLIT splits the whole kernel, not one of its parts");
  expect_refused(mm, cpu(), "CUT:0:96@1", "splits kernel 'matmul' into several kernels");
  refused("CUT:0:96 TC=1@0", "TC routes the whole kernel onto the tile GEMM, not one part");
  expect_refused(mm, cpu(), "UPCAST:0:4@0",
                 "names a part of kernel 'matmul', which only a CUT or "
                 "SPLIT makes; lower it with lower_kernels");
  refused("SPLIT:0:4", "needs a reduce axis");
  refused("SPLIT:2:33", "needs an amount from 2 to the extent 32");
}

// SPLIT: a partial kernel writing one temporary per accumulator, then the kernel itself
// reducing the partials; the temporaries follow the kernel's own parameters.
TEST(Expand, ASplitLowersIntoPartialsAndTheirCombine) {
  UOp sq = sum_and_squares_kernel(5, 300);
  LoweredKernels l = lower_kernels(sq, cpu(), Schedule::parse("SPLIT:1:4"));
  ASSERT_EQ(l.kernels.size(), 2u);
  EXPECT_EQ(l.kernels[0].name_arg(), "sum_and_squares_partial");
  EXPECT_EQ(l.kernels[1].name_arg(), "sum_and_squares_combine");
  EXPECT_EQ(l.temps, (std::vector<TempBuffer>{{3, dtypes::float32, 20}, {4, dtypes::float32, 20}}));
}

// The heuristic splits one long reduction to one value on targets with blocks (one block
// cannot fill a GPU), into parts of at least 4,096 terms; not on a cpu, not short ones.
TEST(Expand, TheHeuristicSplitsALongReductionToOneValue) {
  UOp sum = reduce_kernel(1, 1 << 20, 1, Op::ADD, dtypes::float32);
  LoweredKernels l = lower_kernels(sum, h100_target());
  ASSERT_EQ(l.kernels.size(), 2u);
  EXPECT_EQ(l.temps, (std::vector<TempBuffer>{{2, dtypes::float32, 256}}));
  EXPECT_EQ(lower_kernels(sum, cpu()).kernels.size(), 1u);
  EXPECT_EQ(lower_kernels(sum, h100_target(), Schedule::parse("NOOPT=1")).kernels.size(), 1u);
  UOp rows = reduce_kernel(2, 1 << 20, 1, Op::ADD, dtypes::float32);
  EXPECT_EQ(lower_kernels(rows, h100_target()).kernels.size(), 1u);
  UOp short_sum = reduce_kernel(1, 1000, 1, Op::ADD, dtypes::float32);
  EXPECT_EQ(lower_kernels(short_sum, h100_target()).kernels.size(), 1u);
}

TEST(Expand, ProvablyMultiple) {
  UOp x = define_var("x", 0, 100);
  EXPECT_TRUE(provably_multiple(x * 8 + 16, 4));
  EXPECT_TRUE(provably_multiple((x * 2) * 4, 8));
  EXPECT_FALSE(provably_multiple(x * 8 + 2, 4));
  EXPECT_FALSE(provably_multiple(x, 2));
  // A swizzled shared-memory address: row*128 + (col ^ row%8)*16 is 16-byte aligned.
  UOp row = range(64, 0, AxisKind::Loop), col = range(8, 1, AxisKind::Loop);
  UOp swizzled = row * 128 + UOp::make(Op::XOR, {col, row % 8}) * 16;
  EXPECT_TRUE(provably_multiple(swizzled, 16));
  EXPECT_TRUE(provably_multiple(simplify(swizzled), 16));
  EXPECT_FALSE(provably_multiple(swizzled, 32));
}

}  // namespace
}  // namespace kitten
