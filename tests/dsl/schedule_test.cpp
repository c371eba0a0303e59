// The Schedule: one line of text that round-trips, knobs read back, malformed text refused
// with the column, and actions naming an axis the kernel lacks refused before compiling.
#include <gtest/gtest.h>

#include "dsl/schedule.h"
#include "kernels/examples.h"

namespace kitten {
namespace {

TEST(Schedule, PrintsAndParsesAsOneLine) {
  Schedule s;
  s.action("UPCAST", 1, 4).action("UNROLL", 2, 8).knob("BM", 128).knob("STAGES", 3);
  EXPECT_EQ(s.to_string(), "UPCAST:1:4 UNROLL:2:8 BM=128 STAGES=3");
  EXPECT_EQ(Schedule::parse(s.to_string()), s);
  EXPECT_EQ(Schedule::parse("  BM=64   UPCAST:0:2 ").to_string(), "BM=64 UPCAST:0:2");
  EXPECT_TRUE(Schedule::parse("").empty());
  EXPECT_EQ(s.knob_or("BM", 64), 128);
  EXPECT_EQ(s.knob_or("BN", 64), 64);
  EXPECT_EQ(Schedule::parse("BM=64 BM=32").knob_or("BM", 0), 32);  // the last setting wins
}

// An entry of one part of a CUT or SPLIT (`@P`) round-trips; a knob of a part is not the
// whole kernel's.
TEST(Schedule, EntriesOfOnePartRoundTrip) {
  Schedule s = Schedule::parse("CUT:1:64 UPCAST:1:4@2 NOLOCALS=1@0 BM=3");
  EXPECT_EQ(s.to_string(), "CUT:1:64 UPCAST:1:4@2 NOLOCALS=1@0 BM=3");
  EXPECT_EQ(s.entries()[1], ScheduleEntry("UPCAST", 1, 4, 2));
  EXPECT_EQ(s.knob_or("NOLOCALS", 7), 7);
  EXPECT_EQ(s.knob_or("BM", 0), 3);
  EXPECT_NE(Schedule::parse("UPCAST:1:4@1"), Schedule::parse("UPCAST:1:4"));
}

TEST(Schedule, MalformedTextNamesTheColumn) {
  auto error = [](const char* text) {
    try {
      Schedule::parse(text);
    } catch (const ScheduleError& e) {
      return std::string(e.what());
    }
    return std::string("parsed");
  };
  EXPECT_NE(error("BM=x").find("column 4: expected a value, got 'x'"), std::string::npos);
  EXPECT_NE(error("UPCAST:1").find("column 1: 'UPCAST:1' is not an entry"), std::string::npos);
  EXPECT_NE(error("BM=1 upcast:1:4").find("column 6: 'upcast' is not an upper-case name"),
            std::string::npos);
  EXPECT_NE(error("UPCAST:-1:4").find("an axis id is not negative"), std::string::npos);
  EXPECT_NE(error("UPCAST:1:4x").find("expected an amount, got '4x'"), std::string::npos);
  EXPECT_NE(error("UPCAST:1:4@").find("column 12: expected a part number, got ''"),
            std::string::npos);
  EXPECT_NE(error("BM=2@-1").find("a part number is not negative"), std::string::npos);
  EXPECT_NE(error("UPCAST:1:4@x").find("expected a part number, got 'x'"), std::string::npos);
}

TEST(Schedule, AnActionOnAnAxisTheKernelLacksIsRefused) {
  UOp k = matmul_kernel(8, 8, 8, dtypes::float32);  // axes 0, 1 (global) and 2 (reduce)
  EXPECT_NO_THROW(Schedule::parse("UPCAST:1:4 UNROLL:2:8 BM=4").check_axes(k));
  try {
    Schedule::parse("UPCAST:5:4").check_axes(k);
    FAIL() << "accepted";
  } catch (const ScheduleError& e) {
    EXPECT_NE(std::string(e.what()).find("UPCAST:5:4 names axis 5, which kernel 'matmul' does "
                                         "not have (its axes: 0, 1, 2)"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace kitten
