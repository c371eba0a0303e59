// `kitten search <kernel>`: the autotuner's BEAM search over a kernel's schedules on a
// device, with its report; `kitten compile-worker`: the process that compiles one
// candidate for it; `kitten measure-worker`: the process that times its candidates. See the help
// text in kitten.cpp and docs/autotune.md.
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <future>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>

#include "autotune/measure.h"
#include "autotune/search.h"
#include "tools/cli.h"
#include "tools/spaces.h"

namespace kitten {
int cmd_compile_worker(const std::vector<std::string>& args) {
  if (args.size() != 2 || args[0] != "--device")
    return usage_error("compile-worker: expected --device D (the source comes on stdin)");
  std::unique_ptr<Device> dev;
  if (int status = open_named_device("compile-worker", args[1], dev); status >= 0) return status;
  std::string source((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (source.empty()) return work_failed("compile-worker", "no source on stdin");
  dev->compiler().compile(source);  // into the compile cache; errors reach run_command
  return 0;
}

namespace {

// Opens `device` and builds `spec`'s space on its target: -1, or the exit status after
// the error is printed.
int open_space(const std::string& cmd, const KernelSpec& spec, const std::string& device,
               std::unique_ptr<Device>& dev, autotune::SearchSpace& space) {
  if (int status = open_named_device(cmd, device, dev); status >= 0) return status;
  try {
    space = spec.space(dev->props().target);
  } catch (const std::invalid_argument& e) {
    return usage_error(cmd + ": " + e.what());
  }
  return -1;
}

}  // namespace

// `kitten measure-worker <kernel> --device D [--shape S] [--dtype T] [--reps N]`: times
// the candidates of that kernel's space for a search in another process (its
// MeasureOptions::measure_worker): for each line "<best seconds> <schedule>" on stdin, an
// answer line (autotune::measure_answer) on stdout, after a line "ready" once its device is
// open; "lower <schedule>" lowers one ahead, on a thread of its own; a candidate that
// cannot be lowered answers CompileFailed; after a run that failed it exits (its device may
// be unusable).
int cmd_measure_worker(const std::vector<std::string>& args) {
  using namespace autotune;
  KernelSpec spec;
  std::string device;
  SearchOptions unused;
  MeasureOptions mopts;  // no workers: compiled here, hits in the cache they filled
  bool workers = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::optional<int> status = kernel_spec_option("measure-worker", args, i, spec);
    if (!status && args[i] == "--reps")
      status = search_option("measure-worker", args, i, unused, mopts, workers);
    if (!status && args[i] == "--device" && i + 1 < args.size()) device = args[++i], status = -1;
    if (!status) return usage_error("measure-worker: unexpected argument '" + args[i] + "'");
    if (*status >= 0) return *status;
  }
  if (spec.kernel.empty() || device.empty())
    return usage_error("measure-worker: expected a kernel and --device D");
  // Ends with the search that started it, even one killed while a kernel here hangs (one
  // that ended before this line closed the socket: reading it ends the loop below).
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::unique_ptr<Device> dev;
  SearchSpace space;
  if (int status = open_space("measure-worker", spec, device, dev, space); status >= 0)
    return status;
  const Target& target = dev->props().target;
  DeviceMeasure measure(*dev, space, mopts);
  std::printf("ready\n");  // the device open, the inputs made
  std::fflush(stdout);
  // Candidates announced by "lower <schedule>", lowered meanwhile on threads of their own;
  // "round" drops the last round's that were never measured.
  std::map<std::string, std::shared_future<LoweredKernels>> ahead;
  LoweringAhead lowering(space, target);
  for (std::string line; std::getline(std::cin, line);) {
    if (line == "round") {
      lowering.drop();
      ahead.clear();
      continue;
    }
    if (line.rfind("lower ", 0) == 0) {
      std::string text = line.substr(6);
      if (ahead.count(text)) continue;
      try {
        ahead.emplace(text, lowering.start(Schedule::parse(text)));
      } catch (const ScheduleError&) {  // its measurement says so
      }
      continue;
    }
    lowering.wait();  // nothing lowers beside a timed run
    char* rest = nullptr;
    double best = std::strtod(line.c_str(), &rest);
    std::string text = rest;
    text.erase(0, text.find_first_not_of(' '));
    Measured m;
    Candidate c;
    try {  // the candidate's own failure: the device is untouched
      c.schedule = Schedule::parse(text);
      auto it = ahead.find(text);
      c.lowered = it != ahead.end() ? it->second.get() : lower_schedule(space, target, c.schedule);
    } catch (const std::exception& e) {
      m.status = Measured::Status::CompileFailed;
      m.error = e.what();
    }
    if (m.status == Measured::Status::Ok) try {
        m = measure.measure(c, best);
      } catch (const std::exception& e) {
        m.status = Measured::Status::RunFailed;
        m.error = e.what();
      }
    ahead.erase(text);
    std::printf("%s\n", measure_answer(m).c_str());
    std::fflush(stdout);
    if (m.status == Measured::Status::RunFailed) return 1;  // the device may be unusable
  }
  return 0;
}

int cmd_search(const std::vector<std::string>& args) {
  using namespace autotune;
  KernelSpec spec;
  std::string device = "cpu";
  SearchOptions opts;
  MeasureOptions mopts;
  bool workers = true;
  std::vector<Schedule> starts;  // more schedules to start from
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool more = i + 1 < args.size();
    std::optional<int> status = search_option("search", args, i, opts, mopts, workers);
    if (!status) status = kernel_spec_option("search", args, i, spec);
    if (status) {
      if (*status >= 0) return *status;
    } else if (a == "--device" && more) {
      device = args[++i];
    } else if (a == "--start" && more) {
      try {
        starts.push_back(Schedule::parse(args[++i]));
      } catch (const ScheduleError& e) {
        return usage_error(std::string("search: --start: ") + e.what());
      }
    } else if (a == "--verbose") {
      opts.verbose = true;
    } else {
      return usage_error("search: unexpected argument '" + a + "'");
    }
  }
  if (spec.kernel.empty())
    return usage_error(std::string("search: expected a kernel (") + kSpaceNames + ")");
  std::unique_ptr<Device> dev;
  SearchSpace space;
  if (int status = open_space("search", spec, device, dev, space); status >= 0) return status;
  const Target& target = dev->props().target;
  for (const Schedule& st : starts) space.start.push_back(st);
  if (workers) {
    mopts.worker = {self_path(), "compile-worker", "--device", device};
    mopts.measure_worker = measure_worker_argv(spec, device, mopts.reps);
  }
  opts.progress = [](const std::string& l) { std::fprintf(stderr, "search: %s\n", l.c_str()); };
  DeviceMeasure measure(*dev, space, mopts);
  SearchResult r = beam_search(space, target, measure, opts);
  bool timed = r.report.timed;
  auto cost = [timed](double c) { return cost_text(c, timed); };
  std::printf("kernel: %s on %s (%s)\n", space.name.c_str(), device.c_str(), target.arch.c_str());
  std::printf("best: '%s' %s; start %s (%.2fx)\n", r.best.to_string().c_str(), cost(r.cost).c_str(),
              cost(r.start_cost).c_str(), r.start_cost / r.cost);
  std::fputs(r.report.to_string().c_str(), stdout);
  return 0;
}

}  // namespace kitten
