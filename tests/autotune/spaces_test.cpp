// The library kernels' search spaces (tools/spaces.h): the GEMM's steps from a repacked
// schedule also move each copy of the repack on its own, and each such step keeps the
// GEMM's results on the emulator.
#include <gtest/gtest.h>

#include <set>

#include "../backends/test_device.h"
#include "autotune/measure.h"
#include "tools/spaces.h"

namespace kitten::autotune {
namespace {

TEST(Spaces, TheGemmsStepsMoveTheRepacksCopies) {
  std::unique_ptr<Device> dev = make_emu_device();
  const Target& target = dev->props().target;
  // 33 x 45 x 40: B's and C's rows of 45 are repacked (parts 0 and 2), the GEMM part 1.
  SearchSpace space = named_space("gemm", {33, 45, 40}, dtypes::bfloat16, target);
  Schedule from = Schedule::parse("REPACK=2 BLOCKS=2");
  std::set<int64_t> moved;
  DeviceMeasure m(*dev, space);
  Candidate ref;
  ref.schedule = from;
  ref.lowered = space.lower(from);
  int checked = 0;
  for (const Schedule& s : space.neighbours(from)) {
    std::set<int64_t> parts;
    for (const ScheduleEntry& e : s.entries())
      if (e.part) parts.insert(*e.part);
    if (parts.empty()) continue;
    SCOPED_TRACE(s.to_string());
    ASSERT_EQ(parts.size(), 1u);
    EXPECT_NE(*parts.begin(), 1);  // the GEMM's own part moves by its knobs
    moved.insert(*parts.begin());
    if (checked++ % 8) continue;  // every eighth against the repack's defaults
    Candidate c;
    c.schedule = s;
    try {
      c.lowered = space.lower(s);
    } catch (const ScheduleError&) {
      continue;
    }
    EXPECT_EQ(c.lowered.kernels.size(), ref.lowered.kernels.size());
    EXPECT_EQ(m.validate(c, ref), "");
  }
  EXPECT_EQ(moved, (std::set<int64_t>{0, 2}));
  // Without REPACK there are no copies to move.
  for (const Schedule& s : space.neighbours(Schedule::parse("BLOCKS=2")))
    for (const ScheduleEntry& e : s.entries()) EXPECT_FALSE(e.part) << s.to_string();
}

// Attention's step to the mma.sync schedule (WGMMA=0) from the Hopper default at D128
// (PV=1) leaves PV and PINGPONG, so it is a schedule the kernel takes.
TEST(Spaces, AttentionStepsToMmaSyncLeaveTheHopperKnobs) {
  Target t = h100_target();
  SearchSpace space = named_space("attention", {1, 2, 2, 128, 128, 128}, dtypes::bfloat16, t);
  AttentionProblem p;
  int mma_sync = 0;
  for (const Schedule& s : space.neighbours(space.start.at(0))) {
    if (s.knob_or("WGMMA", 1)) continue;
    ++mma_sync;
    EXPECT_NO_THROW(flash_attention_fwd_kernel(p, s, t)) << s.to_string();
  }
  EXPECT_EQ(mma_sync, 1);
  // BQ and WARPS move together on the Hopper schedule (BQ = 16*WARPS): three consumer
  // warpgroups of 64 rows is a step, and a schedule the kernel takes.
  AttentionProblem d64;
  d64.d = 64;
  SearchSpace s64 = named_space("attention", {1, 2, 2, 128, 128, 64}, dtypes::bfloat16, t);
  bool three = false;
  for (const Schedule& s : s64.neighbours(s64.start.at(0)))
    if (s.knob_or("WARPS", 0) == 12 && s.knob_or("BQ", 0) == 192) {
      three = true;
      EXPECT_NO_THROW(flash_attention_fwd_kernel(d64, s, t)) << s.to_string();
    }
  EXPECT_TRUE(three);
}

}  // namespace
}  // namespace kitten::autotune
