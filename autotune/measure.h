// Measuring candidates on a device: compiled in parallel worker processes (each with a
// deadline: a compiler stuck or crashed costs one candidate, never the search), then timed
// on the device (median of several runs, the L2 flushed before each, stopped early at 2x
// the best) in a measure worker process (a kernel that hangs or crashes the device costs
// one candidate: the worker is killed and a new one started), or counted on the emulator
// (a deterministic cost, never a time). The winner's validation runs it and the reference
// on the same fresh random inputs.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autotune/search.h"
#include "backends/hcq.h"

namespace kitten::autotune {

// How one compile worker process ended.
struct WorkerRun {
  enum class End { Ok, Failed, TimedOut, Crashed, NotStarted } end = End::Ok;
  std::string output;  // what it wrote to stdout and stderr
};

// Runs `argv` once per input (fed on its standard input), at most `jobs` at a time, each
// killed after `timeout_s`; the results in input order. Never through a shell.
std::vector<WorkerRun> run_workers(const std::vector<std::string>& argv,
                                   const std::vector<std::string>& inputs, int jobs,
                                   double timeout_s);

struct MeasureOptions {
  int reps = 10;  // timed runs; the median counts
  // Before each timed run: on GPUs a 256 MiB read (flush_kernel), on cpus a 64 MiB copy.
  bool flush_l2 = true;
  int jobs = 0;  // compile workers at once (0: the machine's cores)
  double compile_timeout_s = 120;
  // A compile worker: a program that reads one kernel source on its standard input and
  // compiles it for the device into the compile cache (`kitten compile-worker --device D`),
  // exiting 0, or non-zero with the error on stderr. Empty, or with the compile cache off,
  // candidates compile in this process (no deadline).
  std::vector<std::string> worker;
  // A measure worker: a program that times this space's candidates in a process of its own
  // (`kitten measure-worker`, with the search's kernel, device and --reps). It says "ready"
  // once its device is open; each request is a line on its standard input, "<best
  // seconds> <schedule>", each answer a line, measure_answer(); "round" and then
  // "lower <schedule>" lines (no answer) have it lower a round's candidates ahead, while
  // they compile. A run past its deadline (measure_timeout_s beyond twice the best's time
  // per run, or beyond reps times measure_timeout_s before any best; once more for a worker
  // not ready yet) or one that ends the worker costs that candidate (TimedOut, Crashed)
  // and the next request starts a new worker; so does a run that fails (the device may be
  // left unusable). A worker that cannot start, or ends before any worker was ever ready,
  // throws MeasureUnavailable. Used with the compile workers only (they fill the cache the
  // measure worker loads from); empty: timed in this process.
  std::vector<std::string> measure_worker;
  double measure_timeout_s = 30;
  uint64_t seed = 1;  // the inputs' random values
};

// A measure worker's answer line for `m` ("measured STATUS COST NOISE ERROR"), and the
// Measured read back from one (nullopt where the line is no answer).
std::string measure_answer(const Measured& m);
std::optional<Measured> parse_measure_answer(const std::string& line);

class DeviceMeasure : public Measure {
 public:
  DeviceMeasure(Device& dev, const SearchSpace& space, MeasureOptions options = {});
  ~DeviceMeasure() override;
  std::vector<Measured> prepare(const std::vector<const Candidate*>& round) override;
  Measured measure(const Candidate& c, double best) override;
  std::string validate(const Candidate& c, const Candidate& reference) override;
  bool timed() const override;

 private:
  struct Inputs;
  class Worker;
  std::vector<KernelArg> args_for(const CompiledKernel& k, const std::vector<Buffer>& bufs) const;
  CompiledKernel compiled(const Candidate& c);
  // Whether candidates compile in worker processes (a worker given, the cache on: they
  // compile into it).
  bool compile_workers() const;
  Measured measure_in_worker(const Candidate& c, double best);
  Device& dev_;
  const SearchSpace& space_;
  MeasureOptions opts_;
  std::unique_ptr<Inputs> inputs_;
  std::unique_ptr<Worker> worker_;  // where measurements go to a measure worker
  std::map<std::pair<uint64_t, uint64_t>, CompiledKernel> in_process_;
  // The reference's outputs on the validation inputs (the same for every candidate).
  std::optional<std::pair<std::vector<StableKey>, std::vector<std::vector<unsigned char>>>>
      reference_out_;
};

// The emulator's deterministic cost of one run: issue slots (warp instructions and shared
// wavefronts) spread over the warp schedulers the grid can occupy (4 per multiprocessor).
double emu_cost(const CompiledKernel& k, std::span<const KernelArg> args, const Target& target);

}  // namespace kitten::autotune
