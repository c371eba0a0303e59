// The autotuner's search: every action keeps the kernel's results, BEAM finds what a
// greedy search cannot (an injected cost), the validator rejects a wrong winner, the
// report accounts for every candidate, and compile workers that hang or crash cost one
// candidate each, never the search.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include "../backends/test_device.h"
#include "../expect_thrown.h"
#include "autotune/measure.h"
#include "autotune/search.h"
#include "dsl/printer.h"
#include "kernels/examples.h"
#include "kernels/tensor_cores.h"

namespace kitten::autotune {
namespace {

int64_t accounted(const SearchReport& r) {
  return r.duplicate_schedules + r.duplicate_kernels + r.rejected_total() + r.not_measured +
         r.over_budget + r.compile_failed + r.timed_out + r.crashed + r.run_failed + r.measured;
}

// The kernel `k` under another name: a distinct kernel for every schedule of a synthetic
// space (the search drops kernels it has already seen).
UOp named(const UOp& k, const std::string& name) {
  return UOp::make(Op::SINK, k.dtype(), k.src(), name);
}

// Costs from a table by schedule text; validation by a device measure where one is given.
class TableMeasure : public Measure {
 public:
  std::map<std::string, double> cost;
  Measure* validator = nullptr;
  std::set<std::string> wrong;  // schedules the validation rejects
  int measured = 0;
  Measured measure(const Candidate& c, double) override {
    ++measured;
    auto it = cost.find(c.schedule.to_string());
    return {Measured::Status::Ok, it == cost.end() ? 100.0 : it->second, ""};
  }
  std::string validate(const Candidate& c, const Candidate& ref) override {
    if (wrong.count(c.schedule.to_string())) return "wrong";
    return validator ? validator->validate(c, ref) : "";
  }
  bool timed() const override { return false; }
};

// Two knobs A and B of 0..2, each schedule its own kernel.
SearchSpace two_knobs() {
  UOp k = elementwise_add_kernel(3, 5, dtypes::float32, false);
  return knob_space(
      "two", [k](const Schedule& s) { return named(k, "k" + s.to_string()); },
      Schedule().knob("A", 0).knob("B", 0), {{"A", {0, 1, 2}}, {"B", {0, 1, 2}}},
      kernel_buffers(k));
}

TEST(Beam, FindsTheBestBehindAWorseFirstStep) {
  // The first step's best (A=1) leads to 4.8 at most; the worse A=2 leads to 1.
  TableMeasure m;
  m.cost = {{"A=0 B=0", 10},  {"A=1 B=0", 5},   {"A=2 B=0", 6},   {"A=0 B=1", 8}, {"A=0 B=2", 9},
            {"A=1 B=1", 4.8}, {"A=1 B=2", 4.9}, {"A=2 B=1", 5.5}, {"A=2 B=2", 1}};
  SearchSpace space = two_knobs();
  SearchOptions o;
  o.estimate = [](const Candidate&) { return 0.0; };
  o.beam = 1;
  SearchResult greedy = beam_search(space, h100_target(), m, o);
  EXPECT_EQ(greedy.best.to_string(), "A=1 B=1");
  EXPECT_DOUBLE_EQ(greedy.cost, 4.8);
  o.beam = 2;
  SearchResult beam = beam_search(space, h100_target(), m, o);
  EXPECT_EQ(beam.best.to_string(), "A=2 B=2");
  EXPECT_DOUBLE_EQ(beam.cost, 1.0);
  EXPECT_DOUBLE_EQ(beam.start_cost, 10.0);
  EXPECT_EQ(beam.report.generated, accounted(beam.report)) << beam.report.to_string();
  EXPECT_GT(beam.report.duplicate_schedules, 0);  // A=0 B=0 comes back as a neighbour
}

TEST(Beam, TheCostModelDecidesWhatIsMeasured) {
  TableMeasure m;
  m.cost = {{"A=0 B=0", 10}, {"A=2 B=0", 1}};
  SearchOptions o;
  o.measured_per_round = 1;
  o.max_rounds = 1;
  // The model ranks A=2 B=0 first of the four neighbours: only it is measured.
  o.estimate = [](const Candidate& c) { return c.schedule.to_string() == "A=2 B=0" ? 0.0 : 1.0; };
  SearchResult r = beam_search(two_knobs(), h100_target(), m, o);
  EXPECT_EQ(m.measured, 2);
  EXPECT_EQ(r.report.not_measured, 3);
  EXPECT_EQ(r.best.to_string(), "A=2 B=0");
  EXPECT_EQ(r.report.generated, accounted(r.report));
}

// Where every measured winner disagrees with the reference, the reference is the result;
// a budget that runs out after the start keeps the start's best, and says why it stopped.
TEST(Beam, FallsBackToTheReferenceAndKeepsToItsBudget) {
  TableMeasure m;  // every other schedule faster than the reference, and wrong
  double cost = 1;
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 3; ++b) {
      std::string text = "A=" + std::to_string(a) + " B=" + std::to_string(b);
      m.cost[text] = a + b == 0 ? 10 : cost++;
      if (a + b) m.wrong.insert(text);
    }
  SearchOptions o;
  o.min_gain = -1;  // every round goes on
  SearchResult r = beam_search(two_knobs(), h100_target(), m, o);
  EXPECT_EQ(r.best.to_string(), "A=0 B=0");
  EXPECT_EQ(r.cost, 10);
  EXPECT_EQ(r.report.validation.rfind("no winner agreed with the reference", 0), 0u)
      << r.report.validation;
  // Two rejected winners, then the reference: it is the result, the rejections listed.
  m.wrong = {"A=1 B=0", "A=2 B=0"};
  m.cost = {{"A=0 B=0", 3}, {"A=1 B=0", 1}, {"A=2 B=0", 2}};
  o.max_rounds = 1;
  r = beam_search(two_knobs(), h100_target(), m, o);
  EXPECT_EQ(r.best.to_string(), "A=0 B=0");
  EXPECT_NE(r.report.validation.find("rejected 'A=2 B=0': wrong"), std::string::npos);
  TableMeasure timed;
  o.max_rounds = 10;
  o.budget_s = 1e-9;
  SearchResult b = beam_search(two_knobs(), h100_target(), timed, o);
  EXPECT_EQ(b.best.to_string(), "A=0 B=0");
  EXPECT_EQ(b.report.stop, "the time budget");
  EXPECT_EQ(b.report.generated, accounted(b.report)) << b.report.to_string();
}

TEST(Beam, TheValidatorRejectsAWrongWinner) {
  std::string why;
  std::unique_ptr<Device> dev = open_test_device("emu", why);
  UOp right = elementwise_add_kernel(5, 33, dtypes::float32, false);
  UOp wrong = elementwise_add_kernel(5, 33, dtypes::float32, true);  // b read as one row
  SearchSpace space = knob_space(
      "add", [&](const Schedule& s) { return s.knob_or("W", 0) ? wrong : right; },
      Schedule().knob("W", 0), {{"W", {0, 1}}}, kernel_buffers(right));
  DeviceMeasure device(*dev, space);
  TableMeasure m;
  m.cost = {{"W=0", 2}, {"W=1", 1}};
  m.validator = &device;
  SearchResult r = beam_search(space, dev->props().target, m, {});
  EXPECT_EQ(r.best.to_string(), "W=0");
  EXPECT_NE(r.report.validation.find("rejected 'W=1': buffer 0 element"), std::string::npos)
      << r.report.validation;
}

// The host device of that name, or none (its reason printed: the cpu JIT may be absent).
std::unique_ptr<Device> host_device(const std::string& name) {
  std::string why;
  std::unique_ptr<Device> dev = open_test_device(name, why);
  if (!dev) std::printf("skipping %s: %s\n", name.c_str(), why.c_str());
  return dev;
}

// Every action the search takes, one step from the heuristic and from the kernel as
// written, keeps the results of the kernel as written (the validator's check, on fresh
// random inputs) at awkward sizes on the cpu and the emulator.
TEST(Actions, KeepTheUnoptimisedResults) {
  for (std::string device : {"cpu-jit", "emu"}) {
    std::unique_ptr<Device> dev = host_device(device);
    if (!dev) continue;
    bool emu = device == "emu";
    std::vector<UOp> kernels = {
        elementwise_add_kernel(1, 31, dtypes::float32, false),
        elementwise_add_kernel(3, emu ? 100 : 4095, dtypes::bfloat16, false),
        reduce_kernel(emu ? 7 : 31, emu ? 100 : 1023, 1, Op::ADD, dtypes::float32),
        reduce_kernel(emu ? 33 : 1000, 5, 0, Op::ADD, dtypes::float32),
        softmax_kernel(emu ? 3 : 31, emu ? 33 : 1000),
        layernorm_kernel(emu ? 3 : 31, emu ? 33 : 1023),
        matmul_kernel(emu ? 7 : 31, emu ? 9 : 31, emu ? 16 : 31, dtypes::float32),
        matmul_kernel(1, emu ? 33 : 1000, 3, dtypes::float32),
        concat_kernel(emu ? 3 : 31,
                      emu ? std::vector<int64_t>{5, 7, 9} : std::vector<int64_t>{1, 1000, 1023}),
        stencil_kernel(emu ? 100 : 4095)};
    const Target& target = dev->props().target;
    for (const UOp& k : kernels) {
      SearchSpace space = action_space(k, target);
      DeviceMeasure m(*dev, space);
      Candidate ref;
      ref.schedule = space.reference;
      ref.lowered = lower_kernels(k, target, ref.schedule);
      int checked = 0;
      for (const Schedule& from : space.start)
        for (const Schedule& s : space.neighbours(from)) {
          SCOPED_TRACE(device + " " + k.name_arg() + " '" + s.to_string() + "'");
          Candidate c;
          c.schedule = s;
          try {
            c.lowered = lower_kernels(k, target, s);
          } catch (const ScheduleError&) {
            continue;  // refused before anything runs: the search counts it
          } catch (const IrError&) {
            continue;
          }
          EXPECT_EQ(m.validate(c, ref), "");
          ++checked;
        }
      EXPECT_GT(checked, 3) << device << " " << k.name_arg() << " " << print_graph(k);
    }
  }
}

// PADTO, SWAP, GROUPTOP and NOLOCALS, each given explicitly: lowered (not refused), a
// kernel other than without it, and the unoptimised kernel's results on cpu and emu.
TEST(Actions, PadSwapGroupTopAndNoLocalsKeepTheResults) {
  struct Case {
    UOp kernel;
    const char* with;
    const char* without;
    bool blocks;  // needs a target with blocks
  };
  std::vector<Case> cases = {
      {reduce_kernel(31, 1000, 1, Op::ADD, dtypes::float32), "PADTO:1:32 UNROLL:1:8", "UNROLL:1:8",
       false},
      {elementwise_add_kernel(33, 1000, dtypes::float32, false), "PADTO:1:32 UPCAST:1:8",
       "UPCAST:1:8", false},
      {elementwise_add_kernel(33, 100, dtypes::float32, false), "SWAP:0:1 UPCAST:1:4", "UPCAST:1:4",
       false},
      {reduce_kernel(7, 1000, 1, Op::ADD, dtypes::float32), "GROUPTOP:1:32", "GROUP:1:32", true},
      {reduce_kernel(7, 1023, 1, Op::MAX, dtypes::float32), "GROUPTOP:1:64 UNROLL:1:4",
       "GROUP:1:64 UNROLL:1:4", true},
      {softmax_kernel(5, 300), "NOLOCALS=1", "", true},
  };
  for (std::string device : {"cpu-jit", "emu"}) {
    std::unique_ptr<Device> dev = host_device(device);
    if (!dev) continue;
    const Target& target = dev->props().target;
    for (const Case& c : cases) {
      if (c.blocks && !target.has(kFeatureBlocks)) continue;
      SCOPED_TRACE(device + " " + c.kernel.name_arg() + " '" + c.with + "'");
      SearchSpace space = action_space(c.kernel, target);
      DeviceMeasure m(*dev, space);
      Candidate ref, with;
      ref.schedule = space.reference;
      ref.lowered = lower_kernels(c.kernel, target, ref.schedule);
      with.schedule = Schedule::parse(c.with);
      with.lowered = lower_kernels(c.kernel, target, with.schedule);
      LoweredKernels without = lower_kernels(c.kernel, target, Schedule::parse(c.without));
      EXPECT_NE(with.lowered.kernels[0].key(), without.kernels[0].key());
      EXPECT_EQ(m.validate(with, ref), "");
    }
  }
  // NOLOCALS refuses the block's threads; the search steps to it from a heuristic with them.
  try {
    lower_kernels(softmax_kernel(5, 300), h100_target(), Schedule::parse("NOLOCALS=1 GROUP:1:32"));
    ADD_FAILURE() << "NOLOCALS took a GROUP";
  } catch (const ScheduleError& e) {
    EXPECT_NE(std::string(e.what()).find("NOLOCALS=1 leaves out"), std::string::npos) << e.what();
  }
  std::vector<Schedule> steps =
      action_space(softmax_kernel(5, 300), h100_target()).neighbours(Schedule());
  EXPECT_TRUE(std::find(steps.begin(), steps.end(), Schedule().knob("NOLOCALS", 1)) != steps.end());
  for (const char* bad : {"SWAP:0:0", "SWAP:0:1", "PADTO:0:1"})
    EXPECT_THROW(lower_kernels(reduce_kernel(7, 100, 1, Op::ADD, dtypes::float32), h100_target(),
                               Schedule::parse(bad)),
                 ScheduleError)
        << bad;
}

// Global loads of buffer `slot` in lowered kernels (vector loads counted once).
int loads_of(const LoweredKernels& l, int64_t slot) {
  int n = 0;
  for (const UOp& k : l.kernels)
    for (const UOp& u : toposort(k))
      if (u.op() == Op::LOAD && u.src(0).op() == Op::INDEX) {
        UOp b = u.src(0).src(0);
        while (b.op() == Op::AFTER) b = b.src(0);
        n += b.op() == Op::PARAM && b.slot() == slot;
      }
  return n;
}

// A layer norm's three passes over a row, each unrolled whole (the search offers all that
// is left of a short axis; each pass's copies are counted on their own against the
// limit): the row is loaded once, into registers, and the results stay the kernel's.
TEST(Actions, ARowUnrolledWholeIsLoadedOnce) {
  std::vector<Schedule> steps =
      action_space(layernorm_kernel(8, 4096), h100_target())
          .neighbours(Schedule::parse("GROUP:1:256 GROUP:2:256 LOCAL:3:256"));
  EXPECT_TRUE(std::find(steps.begin(), steps.end(),
                        Schedule::parse("GROUP:1:256 GROUP:2:256 LOCAL:3:256 UNROLL:1:16")) !=
              steps.end());
  for (std::string device : {"cpu-jit", "emu"}) {
    std::unique_ptr<Device> dev = host_device(device);
    if (!dev) continue;
    const Target& target = dev->props().target;
    bool blocks = target.has(kFeatureBlocks);
    // 16 copies of each pass over a row of 16 (cpu), or of 32 threads' rows of 512 (emu).
    UOp k = layernorm_kernel(blocks ? 5 : 31, blocks ? 512 : 16);
    const char* whole = blocks
                            ? "GROUP:1:32 GROUP:2:32 LOCAL:3:32 UNROLL:1:16 UNROLL:2:16 UPCAST:3:16"
                            : "UNROLL:1:16 UNROLL:2:16 UPCAST:3:16";
    SCOPED_TRACE(device + " '" + whole + "'");
    SearchSpace space = action_space(k, target);
    DeviceMeasure m(*dev, space);
    Candidate ref, with;
    ref.schedule = space.reference;
    ref.lowered = lower_kernels(k, target, ref.schedule);
    with.schedule = Schedule::parse(whole);
    with.lowered = lower_kernels(k, target, with.schedule);
    EXPECT_EQ(loads_of(ref.lowered, 1), 3);  // x read by three loops
    EXPECT_EQ(loads_of(with.lowered, 1), 16);
    EXPECT_EQ(m.validate(with, ref), "");
  }
}

// The heuristic's schedules keep the kernel's results on the emulator: rows kept in
// registers (vectors, the block's threads and whole unrolls, with a remainder unrolled:
// 2048, or none: 384), and a GEMV with two vectors of each row a thread (3200 columns over
// 16 a block: 1.5 blocks a multiprocessor of the emulator's 132).
TEST(Actions, TheHeuristicsSchedulesKeepTheResults) {
  std::unique_ptr<Device> dev = host_device("emu");
  if (!dev) GTEST_SKIP() << "the emulator cannot be opened";
  const Target& target = dev->props().target;
  std::vector<std::pair<UOp, std::string>> cases = {
      {softmax_kernel(3, 2048), "UNROLL:1:4 "},
      {layernorm_kernel(2, 384), "UNROLL:1:4 "},
      {reduce_kernel(3, 4096, 1, Op::ADD, dtypes::float32), "UNROLL:1:4 "},
      {matmul_kernel(1, 3200, 256, dtypes::bfloat16), "GROUP:2:256 UPCAST:1:8 UPCAST:1:2"}};
  for (const auto& [k, has] : cases) {
    std::string heuristic_text = heuristic_schedule(k, target).to_string();
    SCOPED_TRACE(k.name_arg() + " '" + heuristic_text + "'");
    ASSERT_NE(heuristic_text.find(has), std::string::npos);
    SearchSpace space = action_space(k, target);
    DeviceMeasure m(*dev, space);
    Candidate ref, heuristic;
    ref.schedule = space.reference;
    ref.lowered = lower_kernels(k, target, ref.schedule);
    heuristic.lowered = lower_kernels(k, target, Schedule());
    EXPECT_EQ(m.validate(heuristic, ref), "");
  }
}

// Global loads under a gate (not proven true) in lowered kernels.
int gated_loads(const LoweredKernels& l) {
  int n = 0;
  for (const UOp& k : l.kernels)
    for (const UOp& u : toposort(k))
      if (u.op() == Op::LOAD && u.src(0).op() == Op::INDEX && u.src(0).src().size() == 3 &&
          u.src(0).src(0).dtype().space() == AddrSpace::Global &&
          !(u.src(0).src(2).op() == Op::CONST && u.src(0).src(2).const_int() != 0))
        ++n;
  return n;
}

// A concatenation of three inputs cut at its segments' edges (the step the search
// proposes): one kernel per input, none of them with a gated load.
TEST(Actions, AConcatenationCutAtItsSegmentsHasNoGatedLoads) {
  for (const Target& target : {host_target("x86_64", 2), h100_target()}) {
    UOp k = concat_kernel(7, {64, 96, 32});
    SearchSpace space = action_space(k, target);
    std::optional<Schedule> cut;
    for (const Schedule& s : space.neighbours(Schedule()))
      if (s.to_string().find("CUT:1:64") != std::string::npos &&
          s.to_string().find("CUT:1:160") != std::string::npos)
        cut = s;
    ASSERT_TRUE(cut) << "no step cuts at both edges";
    EXPECT_GT(gated_loads(lower_kernels(k, target)), 0);  // uncut: three gated loads
    LoweredKernels parts = lower_kernels(k, target, *cut);
    EXPECT_EQ(parts.kernels.size(), 3u);
    EXPECT_EQ(gated_loads(parts), 0) << cut->to_string();
    // Awkward widths with the kernel as written (no other actions): still none.
    UOp odd = concat_kernel(3, {1, 1000, 1023});
    LoweredKernels plain =
        lower_kernels(odd, target, Schedule::parse("CUT:1:1 CUT:1:1001 NOOPT=1"));
    EXPECT_EQ(plain.kernels.size(), 3u);
    EXPECT_EQ(gated_loads(plain), 0);
  }
}

// A cut kernel's parts are searched one by one: the steps from a concatenation cut at its
// segments include entries of each part (@P), and each such step keeps the unoptimised
// kernel's results on the cpu and the emulator.
TEST(Actions, ThePartsOfACutAreSearchedOneByOne) {
  for (std::string device : {"cpu-jit", "emu"}) {
    std::unique_ptr<Device> dev = host_device(device);
    if (!dev) continue;
    bool emu = device == "emu";
    UOp k = concat_kernel(
        emu ? 3 : 31, emu ? std::vector<int64_t>{5, 7, 9} : std::vector<int64_t>{1, 1000, 1023});
    const Target& target = dev->props().target;
    SearchSpace space = action_space(k, target);
    DeviceMeasure m(*dev, space);
    Candidate ref;
    ref.schedule = space.reference;
    ref.lowered = lower_kernels(k, target, ref.schedule);
    Schedule cut =
        emu ? Schedule::parse("CUT:1:5 CUT:1:12") : Schedule::parse("CUT:1:1 CUT:1:1001");
    std::map<int64_t, int> checked;  // per part
    for (const Schedule& s : space.neighbours(cut)) {
      std::set<int64_t> parts;
      for (const ScheduleEntry& e : s.entries())
        if (e.part) parts.insert(*e.part);
      if (parts.empty()) continue;
      SCOPED_TRACE(device + " '" + s.to_string() + "'");
      EXPECT_EQ(parts.size(), 1u);  // one part moves a step
      Candidate c;
      c.schedule = s;
      try {
        c.lowered = lower_kernels(k, target, s);
      } catch (const ScheduleError&) {
        continue;
      }
      EXPECT_EQ(c.lowered.kernels.size(), 3u);
      EXPECT_EQ(m.validate(c, ref), "");
      ++checked[*parts.begin()];
    }
    EXPECT_EQ(checked.size(), 3u) << device;
    for (auto [part, n] : checked) EXPECT_GT(n, 1) << device << " part " << part;
  }
  // A part's entries leave the whole kernel's steps as they were (UPCAST:1:4 of the
  // segments' axis still fits its shortest segment), and a step that cuts again drops them
  // (the parts it makes are numbered anew).
  UOp k = concat_kernel(33, {5, 7, 9});
  std::vector<Schedule> steps =
      action_space(k, h100_target()).neighbours(Schedule::parse("CUT:1:5 CUT:1:12 UPCAST:1:4@2"));
  auto has = [&](const std::string& text) {
    return std::any_of(steps.begin(), steps.end(),
                       [&](const Schedule& s) { return s.to_string() == text; });
  };
  EXPECT_TRUE(has("CUT:1:5 CUT:1:12 UPCAST:1:4@2 UPCAST:1:4"));
  EXPECT_TRUE(has("CUT:1:5 CUT:1:12 CUT:0:32"));
  for (const Schedule& s : steps) {
    auto cuts = std::count_if(s.entries().begin(), s.entries().end(),
                              [](const ScheduleEntry& e) { return e.name == "CUT"; });
    if (cuts <= 2) continue;
    for (const ScheduleEntry& e : s.entries()) EXPECT_FALSE(e.part) << s.to_string();
  }
  // A concatenation of nine inputs cut at its segments: more parts than are stepped one by
  // one (every candidate lowers every part), so no step names a part.
  UOp nine = concat_kernel(4, std::vector<int64_t>(9, 3));
  Schedule segments;
  for (int64_t at = 3; at < 27; at += 3) segments.action("CUT", 1, at);
  EXPECT_EQ(lower_kernels(nine, h100_target(), segments).kernels.size(), 9u);
  for (const Schedule& s : action_space(nine, h100_target()).neighbours(segments))
    for (const ScheduleEntry& e : s.entries()) EXPECT_FALSE(e.part) << s.to_string();
}

// BEAM reaches a part's own schedule two steps from the start (the cut at the segments,
// then a step of the last part), with an injected cost that rewards only that.
TEST(Beam, FindsAScheduleOfOnePartOfACut) {
  struct PartCost : Measure {
    Measured measure(const Candidate& c, double) override {
      int cuts = 0;
      bool last = false;
      for (const ScheduleEntry& e : c.schedule.entries()) {
        cuts += e.name == "CUT";
        last = last || (e.part == 2 && e.name == "UPCAST");
      }
      return {Measured::Status::Ok, last ? 1.0 : cuts == 2 ? 50.0 : 100.0 - cuts, ""};
    }
    std::string validate(const Candidate&, const Candidate&) override { return ""; }
    bool timed() const override { return false; }
  } m;
  SearchOptions o;
  o.estimate = [](const Candidate&) { return 0.0; };
  o.measured_per_round = 1000;
  o.max_rounds = 3;
  UOp k = concat_kernel(3, {5, 7, 9});
  SearchResult r = beam_search(action_space(k, h100_target()), h100_target(), m, o);
  EXPECT_DOUBLE_EQ(r.cost, 1.0) << r.best.to_string();
  EXPECT_NE(r.best.to_string().find("@2"), std::string::npos) << r.best.to_string();
  EXPECT_EQ(lower_kernels(k, h100_target(), r.best).kernels.size(), 3u);
}

// A long reduction to one value: the heuristic SPLITs it, and the steps from the heuristic
// refine the split kernel rather than a one-block reduction.
TEST(Actions, StepsFromTheHeuristicKeepItsSplit) {
  SearchSpace space =
      action_space(reduce_kernel(1, 1 << 16, 1, Op::ADD, dtypes::float32), h100_target());
  std::vector<Schedule> steps = space.neighbours(Schedule());
  ASSERT_FALSE(steps.empty());
  for (const Schedule& s : steps) EXPECT_EQ(s.entries().at(0).name, "SPLIT") << s.to_string();
}

TEST(Search, AccountsForEveryCandidateOnTheEmulator) {
  std::unique_ptr<Device> dev = make_emu_device();
  SearchSpace space =
      action_space(reduce_kernel(8, 300, 1, Op::ADD, dtypes::float32), dev->props().target);
  DeviceMeasure m(*dev, space);
  SearchResult r = beam_search(space, dev->props().target, m, {});
  const SearchReport& rep = r.report;
  EXPECT_EQ(rep.generated, accounted(rep)) << rep.to_string();
  EXPECT_GT(rep.measured, 5);
  EXPECT_GT(rep.rejected_total(), 0);  // e.g. GROUP beside a GROUP of another amount
  EXPECT_LE(r.cost, r.start_cost);
  EXPECT_EQ(rep.run_failed, 0) << rep.first_error;
  EXPECT_FALSE(rep.timed);
  EXPECT_EQ(rep.validation.rfind("passed", 0), 0u) << rep.validation;
  // The emulator's cost is deterministic: the same search finds the same winner.
  DeviceMeasure again(*dev, space);
  EXPECT_EQ(beam_search(space, dev->props().target, again, {}).best, r.best);
}

// TC=1 is a first step for a 16-bit product (not for a float32 one), its steps move the
// tile GEMM's knobs, and a search from it on the emulator measures routed kernels and
// validates the winner against the kernel as written.
TEST(Search, TensorCoresForA16BitProduct) {
  register_tensor_core_route();
  std::unique_ptr<Device> dev = make_emu_device();
  const Target& t = dev->props().target;
  auto has_tc = [](const std::vector<Schedule>& steps) {
    return std::any_of(steps.begin(), steps.end(),
                       [](const Schedule& s) { return s.knob_or("TC", 0) != 0; });
  };
  EXPECT_FALSE(has_tc(action_space(matmul_kernel(32, 32, 32, dtypes::float32), t).neighbours({})));
  SearchSpace space = action_space(matmul_kernel(32, 48, 64, dtypes::bfloat16), t);
  ASSERT_TRUE(has_tc(space.neighbours({})));
  std::vector<Schedule> knobs = space.neighbours(Schedule::parse("TC=1"));
  ASSERT_FALSE(knobs.empty());
  for (const Schedule& s : knobs) {
    EXPECT_EQ(s.knob_or("TC", 0), 1) << s.to_string();
    EXPECT_EQ(s.entries().size(), 2u) << s.to_string();
  }
  space.start = {Schedule::parse("TC=1 BM=32 BN=32 BK=32 WM=2 WN=1 STAGES=2 SWIZZLE=64 WGMMA=0")};
  DeviceMeasure m(*dev, space);
  SearchOptions o;
  o.max_rounds = 1;
  o.measured_per_round = 4;
  SearchResult r = beam_search(space, t, m, o);
  EXPECT_EQ(r.report.generated, accounted(r.report)) << r.report.to_string();
  EXPECT_GT(r.report.measured, 1) << r.report.to_string();
  EXPECT_EQ(r.report.run_failed, 0) << r.report.first_error;
  EXPECT_EQ(r.report.validation.rfind("passed", 0), 0u) << r.report.validation;
  EXPECT_EQ(r.best.knob_or("TC", 0), 1) << r.best.to_string();
}

TEST(CostModel, BankConflictsOfSharedAccesses) {
  UOp lane = special(SpecialKind::ThreadIdx, 0, 32), row = special(SpecialKind::ThreadIdx, 1, 4);
  auto at = [&](DType d, const UOp& i) { return index(define_local(d, 4096, 0), i); };
  DType f = dtypes::float32;
  EXPECT_EQ(bank_conflicts(at(f, lane), f), 1);
  EXPECT_EQ(bank_conflicts(at(f, lane * 2), f), 2);
  EXPECT_EQ(bank_conflicts(at(f, lane * 32 + row), f), 32);  // a column of a 32-wide tile
  EXPECT_EQ(bank_conflicts(at(f, lane * 33 + row), f), 1);   // padded by one word
  EXPECT_EQ(bank_conflicts(at(f, lane * 4), f.vec(4)), 1);   // 16-byte vectors, 4 phases
  EXPECT_EQ(bank_conflicts(at(f, lane * 16), f.vec(4)), 4);
  EXPECT_EQ(bank_conflicts(at(dtypes::bfloat16, lane), dtypes::bfloat16), 1);  // shared words
  EXPECT_EQ(bank_conflicts(at(f, row * 32), f), 1);  // the same word for the warp: a broadcast
  EXPECT_EQ(bank_conflicts(at(f, alu(Op::XOR, lane * 32, lane)), f), 1);  // a swizzle: unknown
  UOp eight = special(SpecialKind::ThreadIdx, 0, 8);                      // a block 8 lanes wide
  EXPECT_EQ(bank_conflicts(at(f, eight * 32), f), 8);
  // The estimate: a kernel whose warps read a shared tile down its columns costs more
  // than one reading along its rows.
  auto kernel = [&](int64_t stride) {
    UOp out = param(0, f.ptr()), sm = define_local(f, 32 * 33, 0);
    UOp put = store(index(sm, lane * stride), const_(f, 1.0));
    UOp bar = UOp::make(Op::BARRIER, dtypes::void_, {put});
    UOp v = load(index(after(sm, {bar}), lane * stride));
    return sink({store(index(out, lane), v)}, "columns");
  };
  Target t = h100_target();
  auto estimate = [&](int64_t stride) {
    Candidate c;
    c.lowered = lower_kernels(kernel(stride), t);
    return estimate_seconds(c, t);
  };
  EXPECT_GT(estimate(32), estimate(1));
  EXPECT_EQ(estimate(33), estimate(1));
}

// The estimate of a memory-bound kernel counts the loads each thread has in flight: one
// 2-byte element a thread cannot cover the memory's latency, eight can.
TEST(CostModel, CountsTheLoadsInFlight) {
  DType bf = dtypes::bfloat16;
  UOp out = param(0, bf.ptr()), x = param(1, bf.ptr());
  UOp r = range(4096, 0, AxisKind::Global), c = range(4096, 1, AxisKind::Global);
  UOp copy =
      sink({end(store(index(out, r * 4096 + c), load(index(x, r * 4096 + c))), {r, c})}, "copy");
  Target t = h100_target();
  auto estimate = [&](const std::string& s) {
    Candidate cand;
    cand.lowered = lower_kernels(copy, t, Schedule::parse(s));
    return estimate_seconds(cand, t);
  };
  double one = estimate("LOCAL:1:256"), eight = estimate("LOCAL:1:256 UPCAST:1:8");
  EXPECT_GT(one, 2 * eight);
  // Eight in flight reach the bandwidth: 64 MiB moved at 3 TB/s, and the launch.
  EXPECT_NEAR(eight, 2.0 * 4096 * 4096 * 2 / 3e12 + 3e-6, 1e-6);
}

TEST(Workers, AMeasureAnswerReadsBack) {
  Measured m{Measured::Status::EarlyStop, 1.25e-5, "two\nlines", 0.03};
  std::optional<Measured> back = parse_measure_answer(measure_answer(m));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->status, m.status);
  EXPECT_EQ(back->cost, m.cost);
  EXPECT_EQ(back->noise, m.noise);
  EXPECT_EQ(back->error, "two lines");
  m.cost = std::numeric_limits<double>::infinity();
  EXPECT_EQ(parse_measure_answer(measure_answer(m))->cost, m.cost);
  EXPECT_FALSE(parse_measure_answer("measured"));
  EXPECT_FALSE(parse_measure_answer("measured 9 1 0 "));  // no such status
  EXPECT_FALSE(parse_measure_answer("warning: 0 1 0"));
  EXPECT_FALSE(parse_measure_answer("measured 0 fast 0 "));  // a cost that is no number
}

// Workers: the input decides what the stand-in worker does.
const std::vector<std::string> kStandIn = {
    "sh", "-c",
    "read what; case $what in hang) sleep 30;; crash) kill -SEGV $$;; "
    "fail) echo 'error: no' >&2; exit 1;; *) exit 0;; esac"};

TEST(Workers, EachEndIsReportedAndAHangIsKilledAtItsDeadline) {
  auto t0 = std::chrono::steady_clock::now();
  std::vector<WorkerRun> runs =
      run_workers(kStandIn, {"ok\n", "hang\n", "crash\n", "fail\n", "ok\n"}, 2, 1.0);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(runs.size(), 5u);
  EXPECT_EQ(runs[0].end, WorkerRun::End::Ok);
  EXPECT_EQ(runs[1].end, WorkerRun::End::TimedOut);
  EXPECT_EQ(runs[2].end, WorkerRun::End::Crashed);
  EXPECT_EQ(runs[3].end, WorkerRun::End::Failed);
  EXPECT_NE(runs[3].output.find("error: no"), std::string::npos);
  EXPECT_EQ(runs[4].end, WorkerRun::End::Ok);
  EXPECT_LT(s, 10.0);
  EXPECT_EQ(run_workers({"/nonexistent/worker"}, {"x"}, 1, 1.0)[0].end, WorkerRun::End::NotStarted);
}

// The searches past workers: the cpu JIT with the compile cache the workers share, a
// small matrix product's space, the real compile worker and two runs a candidate.
class SearchWorkers : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string cache = test_cache_dir(), why;
    ASSERT_FALSE(cache.empty());
    setenv("KITTEN_CACHE_DIR", cache.c_str(), 1);  // the workers' cache: the device's
    dev = open_test_device("cpu-jit", why);
    if (!dev) GTEST_SKIP() << "cpu-jit unavailable: " << why;
    space = action_space(matmul_kernel(16, 16, 16, dtypes::float32), dev->props().target);
    mo.reps = 2;
    mo.jobs = 2;
    mo.worker = {KITTEN_BIN, "compile-worker", "--device", "cpu"};
  }
  // `rounds` rounds after the start, `measured` candidates a round, measured by `mo`.
  SearchResult search(int rounds, int measured) {
    DeviceMeasure m(*dev, space, mo);
    SearchOptions o;
    o.max_rounds = rounds;
    o.measured_per_round = measured;
    return beam_search(space, dev->props().target, m, o);
  }
  // A stand-in measure worker: it runs `before`, says ready, then answers each request by
  // `cases` (shell case arms on the schedule) or else with a cost of the schedule's length.
  // Shell builtins only: a loaded machine must not miss a deadline for forking.
  static std::vector<std::string> stand_in(const std::string& cases,
                                           const std::string& before = "") {
    return {"sh", "-c",
            before +
                "echo ready; while read best sched; do case \"$best\" in lower|round) "
                "continue;; esac; case \"$sched\" in " +
                cases + " *) echo \"measured 0 ${#sched}e-6 0 \";; esac; done"};
  }
  std::unique_ptr<Device> dev;
  SearchSpace space;
  MeasureOptions mo;
};

// A search past workers that hang on some candidates and crash on others: every candidate
// accounted for, some timed out, some crashed, the rest measured.
void expect_went_on(const SearchReport& rep) {
  EXPECT_EQ(rep.generated, accounted(rep)) << rep.to_string();
  EXPECT_GT(rep.timed_out, 0) << rep.to_string();
  EXPECT_GT(rep.crashed, 0) << rep.to_string();
  EXPECT_GT(rep.measured, 1) << rep.to_string();
  EXPECT_NE(rep.to_string().find("timed out"), std::string::npos);
}

// A search whose compile worker hangs on some kernels and crashes on others: those
// candidates are counted, the rest are compiled by the real worker and measured.
TEST_F(SearchWorkers, GoOnWhenCompileWorkersHangOrCrash) {
  mo.compile_timeout_s = 1;
  // By the source's checksum: a third hang, a third crash, a third compile.
  mo.worker = {"sh", "-c",
               std::string("src=$(cat); case $(printf %s \"$src\" | cksum | cut -c1-3) in "
                           "*[0-2]) sleep 30;; *[3-5]) kill -SEGV $$;; *) printf %s \"$src\" | "
                           "exec ") +
                   KITTEN_BIN + " compile-worker --device cpu;; esac"};
  expect_went_on(search(2, 8).report);
}

// Measurements in a worker process: a stand-in measure worker hangs on one candidate and
// crashes on another; each costs that candidate alone (a new worker is started for the
// next), the rest are measured and the winner validated here.
TEST_F(SearchWorkers, GoOnWhenAMeasureWorkerHangsOrCrashes) {
  mo.measure_timeout_s = 2;
  mo.measure_worker = stand_in("*UNROLL:2:8*) sleep 30;; *UPCAST:0:4*) kill -SEGV $$;;");
  SearchResult r = search(1, 1000);  // every candidate measured: both cases met
  expect_went_on(r.report);
  EXPECT_NE(r.best.to_string(), "UNROLL:2:8");
  EXPECT_NE(r.best.to_string(), "UPCAST:0:4");
  EXPECT_EQ(r.report.validation, "passed (fresh inputs, against 'NOOPT=1')")
      << r.report.to_string();
}

// A hang that leaves the device unusable: every worker started after it fails before it
// is ready. The candidates measured after it fail one by one (each a crashed worker), and
// the search ends as usual with the best of those measured before.
TEST_F(SearchWorkers, ADeviceLeftUnusableCostsTheRestNotTheSearch) {
  std::string dir = test_cache_dir() + "/unusable-" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  mo.measure_timeout_s = 2;
  mo.measure_worker = stand_in("*UNROLL:2:8*) : > " + dir + "/hung; sleep 30;;",
                               "[ -e " + dir + "/hung ] && { echo no device; exit 1; }; ");
  SearchResult r = search(1, 12);
  const SearchReport& rep = r.report;
  EXPECT_EQ(rep.generated, accounted(rep)) << rep.to_string();
  EXPECT_EQ(rep.timed_out, 1) << rep.to_string();
  EXPECT_GT(rep.crashed, 0) << rep.to_string();
  EXPECT_GT(rep.measured, 1) << rep.to_string();
  EXPECT_NE(rep.first_error.find("took longer than its deadline"), std::string::npos)
      << rep.first_error;
  EXPECT_EQ(rep.validation, "passed (fresh inputs, against 'NOOPT=1')") << rep.to_string();
  std::filesystem::remove_all(dir);
}

// The real measure worker (`kitten measure-worker`) times the search's candidates. A
// worker that cannot start, or ends before it is ready (its device did not open), is no
// candidate's fault: the search ends saying why.
TEST_F(SearchWorkers, MeasureInAWorkerProcess) {
  mo.measure_worker = {KITTEN_BIN, "measure-worker", "matmul", "--shape", "16,16,16", "--device",
                       "cpu",      "--reps",         "2"};
  SearchResult r = search(1, 4);
  EXPECT_EQ(r.report.generated, accounted(r.report)) << r.report.to_string();
  EXPECT_GT(r.report.measured, 2) << r.report.to_string();
  EXPECT_EQ(r.report.run_failed + r.report.crashed + r.report.timed_out, 0) << r.report.to_string();
  EXPECT_GT(r.cost, 0);
  EXPECT_LT(r.cost, 1.0);  // seconds
  mo.measure_worker = {"/nonexistent/measure-worker"};
  expect_thrown<MeasureUnavailable>(
      [&] { search(1, 4); }, "cannot start the measure worker '/nonexistent/measure-worker'");
  mo.measure_worker = {"sh", "-c", "echo no device here; exit 1"};
  expect_thrown<MeasureUnavailable>([&] { search(1, 4); }, "could not get ready: no device here");
}

}  // namespace
}  // namespace kitten::autotune
