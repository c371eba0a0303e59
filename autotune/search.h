// The autotuner's search: a BEAM search over the schedules of one kernel. A SearchSpace
// says what is tuned (the kernel a schedule builds, where to start, the schedules one step
// from a schedule); each round lowers the new schedules, drops those whose lowered kernels
// are already known (the structural key), ranks the rest with a cost model, measures the
// most promising (a Measure: the device, or an injected cost), keeps the best `beam`, and
// stops when a round gains too little, the rounds or the time budget run out. The winner
// is checked against the unoptimised kernel before it is accepted. The report accounts for
// every candidate generated (docs/autotune.md).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "backends/hcq.h"
#include "dsl/lower.h"
#include "dsl/schedule.h"
#include "dsl/target.h"
#include "dsl/uop.h"

namespace kitten::autotune {

// One buffer a kernel takes at a parameter slot: `count` elements of `dtype`; `written`
// where the kernel stores into it (an output, compared by the validator), `read` where it
// loads from it (a buffer only written starts at zero in the validator's runs).
struct BufferSpec {
  int64_t slot;
  DType dtype;
  int64_t count;
  bool written = false, read = true;
  friend bool operator==(const BufferSpec&, const BufferSpec&) = default;
};

// The buffers a kernel graph reads and writes, by slot, each as large as its furthest
// access (the symbolic bounds of its indices). Throws std::invalid_argument for a kernel
// whose extent is not bounded (an index that depends on a run-time variable without
// bounds) or that takes integer parameters: such kernels give their buffers themselves.
std::vector<BufferSpec> kernel_buffers(const UOp& kernel);

// What a schedule was tuned for: the kernel's readable name, the structural key of its
// unscheduled graph (a DSL kernel: of its problem), its shape and dtypes.
struct KernelId {
  std::string kernel;
  StableKey structure{};
  std::vector<int64_t> shape;
  std::vector<std::string> dtypes;
  friend bool operator==(const KernelId&, const KernelId&) = default;
  std::string to_string() const;  // "gemm 4096x4096x4096 bfloat16,bfloat16"
};

// What a search tunes.
struct SearchSpace {
  std::string name;
  KernelId id;                                // what the tuning database keys its result by
  std::function<UOp(const Schedule&)> build;  // the kernel graph for a schedule
  std::vector<Schedule> start;                // the first round's schedules
  // The schedules one step from `s` (those that break a rule are refused when lowered).
  std::function<std::vector<Schedule>(const Schedule& s)> neighbours;
  Schedule reference;               // the unoptimised kernel's schedule: the validator's truth
  std::vector<BufferSpec> buffers;  // what a run of the kernel takes
  // The launch's argument for a buffer at `slot` (default: the buffer itself); a DSL
  // kernel that takes a tensor map there makes it (tensor_arg).
  std::function<KernelArg(const CompiledKernel& k, int64_t slot, Buffer b)> arg;
  // The kernel's variables (run-time sizes) by name, bound after the buffers.
  std::map<std::string, int64_t> vars;
  // Where set, what lowering makes of a schedule (several kernels and temporaries: a DSL
  // kernel whose operands are first repacked); else lower_kernels(build(s), target, s).
  std::function<LoweredKernels(const Schedule& s)> lower;
};

// What lowering makes of `s` in `space`: space.lower(s) where set, else
// lower_kernels(space.build(s), target, s).
LoweredKernels lower_schedule(const SearchSpace& space, const Target& target, const Schedule& s);
// The same on a thread of its own (space and target must outlive it), or deferred to the
// first get() or wait() where lowering prints or writes its dumps (KITTEN_DUMP,
// KITTEN_DUMP_JSON, KITTEN_TRACE_REWRITE: their lines and files would interleave) or no
// thread can be started.
std::shared_future<LoweredKernels> lower_schedule_async(const SearchSpace& space,
                                                        const Target& target, Schedule s);

// Schedules lowered ahead (lower_schedule_async), at most as many at once as the machine
// has cores: starting one more first waits for the oldest still running.
class LoweringAhead {
 public:
  LoweringAhead(const SearchSpace& space, const Target& target);
  LoweringAhead(const LoweringAhead&) = delete;
  LoweringAhead& operator=(const LoweringAhead&) = delete;
  std::shared_future<LoweredKernels> start(Schedule s);
  void wait();  // until none is running
  void drop();  // forgets them (those on threads still end; deferred ones never run)
 private:
  const SearchSpace& space_;
  const Target& target_;
  size_t cores_;
  std::deque<std::shared_future<LoweredKernels>> running_;
};

// A generated kernel: it starts at the pipeline's heuristic schedule (and at the kernel
// as written, NOOPT=1, the reference), and a step adds one action of docs/autotune.md
// (UPCAST, UNROLL, LOCAL, GROUP, SPLIT, CUT) on one of the kernel's axes with an amount
// that fits what is left of it. Where the target has mma.sync and the kernel one
// reduction, TC=1 (routing a matrix product onto the tile GEMM: kernels/tensor_cores.h) is
// a first step too, and a TC schedule's steps move one of the GEMM's knobs.
SearchSpace action_space(const UOp& kernel, const Target& target);

// The steps of one part of a schedule's kernels (`kernel`, which runs `now`): each step of
// the part's own action space (no CUT, SPLIT or TC: those take whole kernels), written into
// `from` as that part's entries (`@part`, dsl/schedule.h), replacing those it had.
std::vector<Schedule> part_steps(const Schedule& from, int64_t part, const UOp& kernel,
                                 const Schedule& now, const Target& target);

// A DSL kernel with declared knobs: it starts at `start`, a step moves one knob to another
// of its values. The reference is `start`.
struct Knob {
  std::string name;
  std::vector<int64_t> values;
};
SearchSpace knob_space(std::string name, std::function<UOp(const Schedule&)> build, Schedule start,
                       std::vector<Knob> knobs, std::vector<BufferSpec> buffers);
// Each schedule that sets one knob of `knobs` (of the whole kernel) to another of its values.
std::vector<Schedule> knob_neighbours(const Schedule& from, const std::vector<Knob>& knobs);

// A candidate: a schedule and what lowering made of it.
struct Candidate {
  Schedule schedule;
  LoweredKernels lowered;
  StableKey key{};      // of the lowered kernels
  double estimate = 0;  // the cost model's seconds
  int round = 0;
  double noise = 0;  // its measurement's relative spread, once measured
};

// How one candidate's measurement ended.
struct Measured {
  enum class Status { Ok, EarlyStop, CompileFailed, TimedOut, Crashed, RunFailed };
  Status status = Status::Ok;
  double cost = std::numeric_limits<double>::infinity();  // seconds, or a deterministic cost
  std::string error;                                      // what failed
  double noise = 0;  // the runs' relative spread (median absolute deviation over the median)
};

// Thrown by a Measure that cannot measure at all (no candidate's fault): it ends the
// search with its reason.
struct MeasureUnavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Measures candidates: compiles and times them on a device (measure.h), or an injected
// cost in tests.
class Measure {
 public:
  virtual ~Measure() = default;
  // Compiles a round's candidates before they are timed (in parallel, where the measure
  // can); returns, per candidate, a failure (CompileFailed, TimedOut, Crashed) or Ok.
  virtual std::vector<Measured> prepare(const std::vector<const Candidate*>& round) {
    return std::vector<Measured>(round.size());
  }
  // The candidate's cost; `best` is the best so far, which allows stopping early
  // (EarlyStop, with the cost measured so far).
  virtual Measured measure(const Candidate& c, double best) = 0;
  // Runs the candidate's kernel and the reference on the same fresh inputs: "" where
  // every written buffer agrees within the dtype's tolerance, else what differs.
  virtual std::string validate(const Candidate& c, const Candidate& reference) = 0;
  // Whether costs are seconds on a device (else deterministic counts, never recorded
  // as performance).
  virtual bool timed() const = 0;
};

struct SearchOptions {
  int beam = 4;                 // schedules kept per round
  int max_rounds = 10;          // rounds of search after the start
  int measured_per_round = 16;  // the most candidates the cost model lets through per round
  double min_gain = 0.01;       // a round whose best improves by less ends the search
  double budget_s = 0;          // wall-clock limit (0: none): the best so far is kept
  bool validate = true;         // check the winner against the reference
  // The cost model's estimate; default `estimate_seconds`.
  std::function<double(const Candidate&)> estimate;
  // Progress lines ("round 2: 14 measured, best 1.234 ms"); default: none. With
  // `verbose`, also a line before and after each candidate's measurement.
  std::function<void(const std::string&)> progress;
  bool verbose = false;
};

// Everything that happened to the candidates: generated = duplicate_schedules +
// duplicate_kernels + rejected (by rule) + not_measured + over_budget + compile_failed +
// timed_out + crashed + run_failed + measured.
struct SearchReport {
  int64_t generated = 0, duplicate_schedules = 0, duplicate_kernels = 0;
  std::map<std::string, int64_t> rejected;  // by the rule that refused them
  int64_t not_measured = 0;                 // left by the cost model's cut
  int64_t over_budget = 0;                  // lowered but left when the time budget ran out
  int64_t compile_failed = 0, timed_out = 0, crashed = 0, run_failed = 0;
  int64_t measured = 0, early_stopped = 0;  // early stops are among the measured
  std::string first_error;                  // the first compile or run failure
  std::vector<double> best_per_round;       // the best cost after each round
  double search_s = 0, compile_s = 0, measure_s = 0, validate_s = 0;
  std::optional<double> rank_correlation;  // Spearman's, estimate vs measured cost
  std::string stop;                        // why the search ended
  std::string validation;                  // "passed", "off", or the rejected winners and why
  bool timed = false;                      // costs are seconds (else deterministic counts)
  int64_t rejected_total() const;
  std::string to_string() const;
};

struct SearchResult {
  Schedule best;
  double cost = 0;        // seconds, or the deterministic cost (report.timed)
  double noise = 0;       // the best's measured relative spread
  double start_cost = 0;  // the best of the start schedules
  SearchReport report;
};

// The BEAM search. Throws std::runtime_error when no start schedule could be measured
// (the report's reasons in the message). Where no measured winner agrees with the
// reference (the best five tried), the reference itself is the result, and the report
// lists the rejected.
SearchResult beam_search(const SearchSpace& space, const Target& target, Measure& measure,
                         const SearchOptions& options = {});

// The cost model: the seconds a candidate's kernels need on the target, from their linear
// programs (operations and global bytes per thread, times the threads, over the target's
// throughput, scaled down where the grid cannot fill the machine; shared accesses times
// their bank conflicts; memory throughput at most what the loads in flight sustain).
double estimate_seconds(const Candidate& c, const Target& target);
// The replays a warp's shared-memory access through INDEX `index` costs for bank
// conflicts (1: none): lanes along threadIdx.x at a constant stride of w 4-byte words meet
// in gcd(w, 32) banks, divided by the width/4 phases a vector of `access` splits into, at
// most the lanes along x (blocks narrower than a warp); 1 where the stride is not constant
// (a swizzle), under a word, or zero. Lanes that differ in threadIdx.y are not counted.
double bank_conflicts(const UOp& index, DType access);

}  // namespace kitten::autotune
