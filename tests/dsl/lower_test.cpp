// The lowering pipeline: its passes in order and open to later layers, each output
// verified (a pass that breaks the graph is named), the graph printed after a named pass,
// and what simplify_indices does to a kernel's addresses.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "dsl/lower.h"
#include "dsl/printer.h"

namespace kitten {
namespace {

std::vector<std::string> pass_names() {
  std::vector<std::string> names;
  for (const Pass* p : passes()) names.push_back(p->name);
  return names;
}

// A pass that breaks only kernels named "broken": a second RANGE with the axis id of one
// that exists (the verifier's one-range-per-axis rule).
UOp break_ranges(const UOp& sink, const LowerContext&) {
  if (sink.name_arg() != "broken") return sink;
  std::vector<UOp> effects(sink.src().begin(), sink.src().end());
  UOp out = param(5, dtypes::float32.ptr()), r = range(3, 0, AxisKind::Loop);
  effects.push_back(end(store(index(out, r), const_(dtypes::float32, 0.0)), {r}));
  return UOp::make(Op::SINK, dtypes::void_, effects, sink.arg());
}

TEST(Lower, PassesAreOrderedAndOpenToLaterLayers) {
  static const bool once = [] {
    register_pass({"test_last", "A test pass at the end.",
                   [](const UOp& s, const LowerContext&) { return s; }});
    register_pass({"test_first", "A test pass before the simplifier.",
                   [](const UOp& s, const LowerContext&) { return s; }},
                  PassPosition::Before, "simplify_indices");
    register_pass({"test_breaks", "Breaks kernels named broken.", break_ranges},
                  PassPosition::After, "simplify_indices");
    return true;
  }();
  (void)once;
  std::vector<std::string> names = pass_names();
  auto at = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) - names.begin();
  };
  EXPECT_LT(at("test_first"), at("simplify_indices"));
  EXPECT_EQ(at("test_breaks"), at("simplify_indices") + 1);
  EXPECT_EQ(names.back(), "test_last");
  EXPECT_THROW(
      register_pass({"test_last", "again", [](const UOp& s, const LowerContext&) { return s; }}),
      std::invalid_argument);
  EXPECT_THROW(
      register_pass({"test_x", "nowhere", [](const UOp& s, const LowerContext&) { return s; }},
                    PassPosition::After, "no_such_pass"),
      std::invalid_argument);
  // A pass whose output fails verification is named in the error.
  UOp buf = param(0, dtypes::float32.ptr());
  UOp r = range(4, 0, AxisKind::Loop);
  UOp k = sink({end(store(index(buf, r), const_(dtypes::float32, 1.0)), {r})}, "broken");
  try {
    lower(k, h100_target());
    FAIL() << "lowered";
  } catch (const IrError& e) {
    EXPECT_NE(std::string(e.what()).find("pass 'test_breaks' produced an invalid graph"),
              std::string::npos)
        << e.what();
  }
}

// Index arithmetic folds; a gate proven true by the range's bounds goes with the load's
// alternative value, and a vector address stays a vector address.
TEST(Lower, SimplifyIndicesFoldsAddressesAndTrueGates) {
  DType f = dtypes::float32, v4 = f.vec(4);
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i = range(16, 0, AxisKind::Loop);
  UOp scalar = load(index(x, (i * 4 + 3) / 4, i < 16), const_(f, 0.0));
  UOp vec = load(UOp::make(Op::INDEX, v4.ptr(), {x, i * 4, i < 16}),
                 UOp::make(Op::VECTORIZE, {scalar, scalar, scalar, scalar}));
  UOp sum = UOp::make(Op::EXTRACT, {vec}, std::vector<int64_t>{0}) + scalar;
  UOp k = sink({end(store(index(out, i), sum), {i})}, "fold");
  std::vector<std::string> dumped;
  LowerOptions opts;
  opts.print_after = {"simplify_indices"};
  opts.dump = [&](const std::string& pass, const UOp&) { dumped.push_back(pass); };
  // A loop axis: no grid, the range stays.
  UOp g = lower(k, host_target("x86_64", 2), Schedule::parse("NOOPT=1"), opts);
  EXPECT_EQ(dumped, std::vector<std::string>{"simplify_indices"});
  for (const UOp& u : toposort(g)) {
    if (u.op() == Op::INDEX) {
      EXPECT_EQ(u.src().size(), 2u) << "a gate proven true is left: " << describe(u);
      if (u.src(0) == x && u.dtype() == f.ptr()) {
        EXPECT_EQ(u.src(1), i) << describe(u);
      }
    }
    if (u.op() == Op::LOAD) {
      EXPECT_EQ(u.src().size(), 1u) << describe(u);
    }
  }
  bool vector_load = false;
  for (const UOp& u : toposort(g)) vector_load |= u.op() == Op::LOAD && u.dtype() == v4;
  EXPECT_TRUE(vector_load);
}

// A schedule is checked against the kernel before any pass runs.
TEST(Lower, AScheduleNamingAMissingAxisIsRefusedFirst) {
  UOp buf = param(0, dtypes::float32.ptr());
  UOp r = range(4, 3, AxisKind::Loop);
  UOp k = sink({end(store(index(buf, r), const_(dtypes::float32, 1.0)), {r})}, "one_axis");
  EXPECT_NO_THROW(lower(k, h100_target(), Schedule::parse("UNROLL:3:4")));
  EXPECT_THROW(lower(k, h100_target(), Schedule::parse("UPCAST:0:4")), ScheduleError);
}

// On a target with blocks the outermost global range becomes the grid: blocks of 256
// threads, the index clamped for the threads past the end and their stores gated; a
// kernel with an effect outside its loop keeps the loop (one thread runs it).
TEST(Lower, MapGridTurnsTheOuterGlobalRangeIntoTheGrid) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i = range(300, 0, AxisKind::Global);
  UOp k = sink({end(store(index(out, i), load(index(x, i)) * const_(f, 2.0)), {i})}, "grid");
  UOp g = lower(k, h100_target(), Schedule::parse("NOOPT=1"));
  std::map<std::string, int64_t> specials;
  int ranges = 0, gated_stores = 0;
  for (const UOp& u : toposort(g)) {
    if (u.op() == Op::SPECIAL)
      specials[std::string(special_name(std::get<SpecialArg>(u.arg())))] = u.src(0).const_int();
    ranges += u.op() == Op::RANGE;
    gated_stores += u.op() == Op::STORE && u.src(0).src().size() == 3;
  }
  EXPECT_EQ(specials, (std::map<std::string, int64_t>{{"blockIdx.x", 2}, {"threadIdx.x", 256}}));
  EXPECT_EQ(ranges, 0);
  EXPECT_EQ(gated_stores, 1);
  UOp outside = store(index(out, const_int(dtypes::int32, 0)), const_(f, 1.0));
  UOp two = sink({outside, end(store(index(out, i), load(index(x, i))), {i})}, "two");
  int kept = 0;
  for (const UOp& u : toposort(lower(two, h100_target(), Schedule::parse("NOOPT=1"))))
    kept += u.op() == Op::RANGE;
  EXPECT_EQ(kept, 1);
}

// On a cpu the outer global range becomes the thread pool's blocks (blockIdx.x, one
// thread each); under an outer loop axis nothing does: one thread runs the kernel.
TEST(Lower, OnACpuTheOuterGlobalRangeBecomesTheThreadPoolsBlocks) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  for (AxisKind kind : {AxisKind::Global, AxisKind::Loop}) {
    UOp i = range(300, 0, kind), j = range(7, 1, AxisKind::Global);
    UOp at = i * 7 + j;
    UOp k = sink({end(end(store(index(out, at), load(index(x, at))), {j}), {i})}, "cpu_grid");
    UOp g = lower(k, host_target("x86_64", 2), Schedule::parse("NOOPT=1"));
    std::vector<int64_t> blocks;
    int ranges = 0;
    for (const UOp& u : toposort(g)) {
      if (u.op() == Op::SPECIAL) blocks.push_back(u.src(0).const_int());
      ranges += u.op() == Op::RANGE;
    }
    if (kind == AxisKind::Global) {
      EXPECT_EQ(blocks, std::vector<int64_t>{300});
      EXPECT_EQ(ranges, 1);
    } else {
      EXPECT_TRUE(blocks.empty());
      EXPECT_EQ(ranges, 2);
    }
  }
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// KITTEN_DUMP_JSON: one file per pass (and the input), the graph by stable node ids and
// the rules that fired; the same kernel lowered twice writes the same files.
TEST(Lower, DumpJsonWritesEveryPassWithItsRules) {
  std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / "kitten_dump_json";
  std::filesystem::remove_all(dir);
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i = range(16, 0, AxisKind::Loop);
  UOp k = sink({end(store(index(out, i), load(index(x, (i * 4 + 3) / 4))), {i})}, "dumped");
  LowerOptions opts;
  opts.dump_json = dir.string();
  lower(k, host_target("x86_64", 2), {}, opts);
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  ASSERT_EQ(names.size(), passes().size() + 1);
  EXPECT_EQ(names[0], "dumped.00.input.json");
  std::vector<std::string> order = pass_names();
  size_t at = std::find(order.begin(), order.end(), "simplify_indices") - order.begin();
  char name[64];
  std::snprintf(name, sizeof name, "dumped.%02d.simplify_indices.json", int(at) + 1);
  std::string simplified = read_file(dir / name);
  EXPECT_NE(simplified.find("\"pass\": \"simplify_indices\""), std::string::npos) << simplified;
  EXPECT_NE(simplified.find("\"rule\": "), std::string::npos) << "no rule fired:\n" << simplified;
  EXPECT_NE(read_file(dir / "dumped.00.input.json").find("\"id\": \"" + k.key().hex() + "\""),
            std::string::npos);
  char last[64];
  std::snprintf(last, sizeof last, "dumped.%02d.%s.json", int(order.size()), order.back().c_str());
  std::string first = read_file(dir / last);
  EXPECT_NE(first.find("\"nodes\": ["), std::string::npos) << last;
  lower(k, host_target("x86_64", 2), {}, opts);
  EXPECT_EQ(read_file(dir / last), first);
  std::filesystem::remove_all(dir);
}

// check_access: an ungated register access proven to leave the buffer fails lowering
// with the buffer and the indices; the same access under a gate is left to the gate.
TEST(Lower, AnAccessProvenOutOfRangeIsRefused) {
  DType f = dtypes::float32;
  UOp reg = define_reg(f, 4, 0);
  UOp r = range(5, 0, AxisKind::Loop);
  UOp out = param(0, f.ptr());
  UOp k = sink({end(store(index(reg, r), const_(f, 1.0)), {r})}, "oob");
  try {
    lower(k, host_target("x86_64", 2));
    ADD_FAILURE() << "lowered";
  } catch (const IrError& e) {
    EXPECT_NE(std::string(e.what()).find("accesses DEFINE_REG 0 of 4 elements at indices 0 to 4"),
              std::string::npos)
        << e.what();
  }
  UOp gated = sink({end(store(index(reg, r, r < 4), const_(f, 1.0)), {r})}, "gated");
  EXPECT_NO_THROW(lower(gated, host_target("x86_64", 2)));
  (void)out;
}

}  // namespace
}  // namespace kitten

namespace kitten {
namespace {

// On a GPU a register array indexed at run time would live in local memory: refused after
// lowering, naming the registers; a cpu takes it (C arrays).
TEST(Lower, RegistersIndexedAtRunTimeAreRefusedOnAGpu) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), reg = define_reg(f, 4, 0), zero = const_int(dtypes::int32, 0);
  UOp r = range(4, 0, AxisKind::Loop);
  UOp set = end(store(index(reg, r), const_(f, 1.0)), {r});
  UOp k =
      sink({store(index(out, zero), load(index(after(reg, {set}), const_int(dtypes::int32, 2))))},
           "dynamic_reg");
  try {
    lower(k, h100_target());
    ADD_FAILURE() << "lowered";
  } catch (const IrError& e) {
    EXPECT_NE(std::string(e.what()).find("indexes registers 0 at run time"), std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(lower(k, host_target("x86_64", 2)));
}

}  // namespace
}  // namespace kitten
