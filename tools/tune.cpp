// `kitten tune`: tunes the kernels a list names into the tuning database, re-times what
// it holds (--check) and lists it (--show). See the help text in kitten.cpp and
// docs/autotune.md.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "autotune/database.h"
#include "autotune/measure.h"
#include "tools/cli.h"
#include "tools/spaces.h"

namespace kitten {
namespace {

using namespace autotune;
using Clock = std::chrono::steady_clock;

std::string seconds(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f s", s);
  return b;
}

// A kernel kitten knows by name ("" dtype: its default); throws std::invalid_argument for
// a dtype it does not know.
KernelSpec spec_of(const std::string& kernel, const std::vector<int64_t>& shape,
                   const std::string& dtype) {
  KernelSpec spec{kernel, shape, std::nullopt};
  if (!dtype.empty() && !(spec.dtype = DType::parse(dtype)))
    throw std::invalid_argument("unknown dtype '" + dtype + "'");
  return spec;
}

int show(const TuneDatabase& db) {
  std::printf("%s: %s (%s), %zu entries\n", db.path().c_str(), db.device().model.c_str(),
              db.device().arch.c_str(), db.entries().size());
  for (const TuneEntry& e : db.entries()) {
    std::printf("\n%s\n  schedule: '%s'%s\n  %s (the heuristic %s, %.2fx), noise %.1f%%\n",
                e.id.to_string().c_str(), e.schedule.c_str(),
                e.schedule_format == kScheduleFormat ? "" : " (another schedule format: unused)",
                cost_text(e.cost, e.timed).c_str(), cost_text(e.start_cost, e.timed).c_str(),
                e.start_cost / e.cost, e.noise * 100);
    std::printf("  tuned %s in %s under %s, %s\n", e.date.c_str(), seconds(e.search_s).c_str(),
                e.driver.empty() ? "no driver" : e.driver.c_str(), e.compiler.c_str());
  }
  return 0;
}

// Re-times every entry of this device's database; 1 where one regressed beyond its noise.
int check(Device& dev, TuneDatabase& db, const MeasureOptions& mopts) {
  const Target& target = dev.props().target;
  int regressed = 0, skipped = 0;
  std::printf("%-48s %14s %14s %8s  %s\n", "kernel", "stored", "now", "ratio", "verdict");
  for (const TuneEntry& e : db.entries()) {
    std::string name = e.id.to_string();
    if (e.schedule_format != kScheduleFormat) {
      std::printf("%-48s skipped: schedule format %d, this kitten reads %d\n", name.c_str(),
                  e.schedule_format, kScheduleFormat);
      ++skipped;
      continue;
    }
    SearchSpace space;
    Candidate c;
    Measured now;
    std::string why;
    try {
      space =
          spec_of(e.id.kernel, e.id.shape, e.id.dtypes.empty() ? "" : e.id.dtypes[0]).space(target);
      if (space.id != e.id)
        throw std::runtime_error("the kernel's graph changed since it was tuned");
      c.schedule = Schedule::parse(e.schedule);
      c.lowered = lower_schedule(space, target, c.schedule);
      DeviceMeasure m(dev, space, mopts);
      now = m.measure(c, std::numeric_limits<double>::infinity());
    } catch (const std::exception& err) {
      why = err.what();
    }
    if (!why.empty()) {
      std::printf("%-48s skipped: %s\n", name.c_str(), why.c_str());
      ++skipped;
      continue;
    }
    double ratio = now.cost / e.cost;
    // Beyond the noise: three times the larger of the two runs' spreads, and at least 3%
    // (a run's spread misses the drift between sessions: up to 1.6% on the H100); the
    // emulator's costs are exact.
    double allowed = e.timed ? std::max(0.03, 3 * std::max(e.noise, now.noise)) : 0;
    bool worse = !(ratio <= 1 + allowed);  // a stored cost that is not a number fails too
    regressed += worse;
    bool other_versions = e.driver != db.device().driver || e.compiler != db.device().compiler;
    std::printf(
        "%-48s %14s %14s %7.3fx  %s%s\n", name.c_str(), cost_text(e.cost, e.timed).c_str(),
        cost_text(now.cost, e.timed).c_str(), ratio, worse ? "REGRESSED beyond the noise" : "ok",
        other_versions
            ? ("; made under other versions (" + e.driver + ", " + e.compiler + "): re-tune it")
                  .c_str()
            : "");
  }
  std::printf("%zu entries: %d regressed, %d skipped\n", db.entries().size(), regressed, skipped);
  return regressed ? 1 : 0;
}

}  // namespace

int cmd_tune(const std::vector<std::string>& args) {
  std::string list_path, device = "cpu", db_path;
  bool do_check = false, do_show = false, force = false, workers = true;
  SearchOptions opts;
  opts.budget_s = 60;
  MeasureOptions mopts;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool more = i + 1 < args.size();
    if (std::optional<int> status = search_option("tune", args, i, opts, mopts, workers)) {
      if (*status >= 0) return *status;
    } else if (a == "--device" && more) {
      device = args[++i];
    } else if (a == "--db" && more) {
      db_path = args[++i];
    } else if (a == "--check") {
      do_check = true;
    } else if (a == "--show") {
      do_show = true;
    } else if (a == "--force") {
      force = true;
    } else if (list_path.empty() && a.rfind("--", 0) != 0) {
      list_path = a;
    } else {
      return usage_error("tune: unexpected argument '" + a + "'");
    }
  }
  if (do_check + do_show + !list_path.empty() != 1)
    return usage_error("tune: expected a list of kernels (LIST.yaml), --check or --show");
  if (do_show && !db_path.empty()) return show(TuneDatabase::load_any(db_path));

  std::unique_ptr<Device> dev;
  if (int status = open_named_device("tune", device, dev); status >= 0) return status;
  DeviceId id = DeviceId::of(*dev);
  if (db_path.empty()) db_path = default_database_path(id);
  if (db_path.empty())
    return usage_error("tune: no database: give --db PATH or KITTEN_TUNE_DB (the cache is off)");
  TuneDatabase db = TuneDatabase::load(db_path, id);  // refuses a corrupt or foreign file
  if (do_show) return show(db);
  if (do_check) return check(*dev, db, mopts);

  std::ifstream in(list_path);
  if (!in) return work_failed("tune", "cannot read " + list_path);
  std::stringstream text;
  text << in.rdbuf();
  std::vector<TuneRequest> list = parse_tune_list(text.str(), list_path);
  if (workers) mopts.worker = {self_path(), "compile-worker", "--device", device};
  const Target& target = dev->props().target;
  std::printf("tuning %zu kernels on %s (%s) into %s\n", list.size(), id.model.c_str(),
              id.arch.c_str(), db_path.c_str());
  struct Row {
    std::string name, before, after, speedup, time;
  };
  std::vector<Row> rows;
  int failed = 0;
  double searched_s = 0;
  int searched = 0;
  for (size_t n = 0; n < list.size(); ++n) {
    const TuneRequest& r = list[n];
    std::string tag = "[" + std::to_string(n + 1) + "/" + std::to_string(list.size()) + "] ";
    KernelSpec spec;
    SearchSpace space;
    try {
      spec = spec_of(r.kernel, r.shape, r.dtype);
      space = spec.space(target);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tune: %s%s line %d: %s\n", tag.c_str(), list_path.c_str(), r.line,
                   e.what());
      rows.push_back({r.kernel, "-", "-", "-", "not tuned: bad entry"});
      ++failed;
      continue;
    }
    std::string name = space.id.to_string();
    // The estimate of what is left: this kernel and the rest at the mean search time so
    // far (the budget before any search finished).
    double per_kernel = searched ? searched_s / searched : opts.budget_s;
    Clock::time_point t0 = Clock::now();
    size_t left = list.size() - n;
    opts.progress = [&](const std::string& line) {
      double spent = std::chrono::duration<double>(Clock::now() - t0).count();
      double eta = std::max(0.0, per_kernel - spent) + double(left - 1) * per_kernel;
      std::fprintf(stderr, "tune: %s%s: %s (%s, ETA ~%s)\n", tag.c_str(), name.c_str(),
                   line.c_str(), seconds(spent).c_str(), seconds(eta).c_str());
    };
    try {
      if (workers) mopts.measure_worker = measure_worker_argv(spec, device, mopts.reps);
      DeviceMeasure measure(*dev, space, mopts);
      TuneResult t = tune_kernel(space, target, measure, db, opts, force);
      if (!t.skipped.empty())
        std::fprintf(stderr, "tune: %s%s: %s\n", tag.c_str(), name.c_str(), t.skipped.c_str());
      const TuneEntry& e = t.entry;
      char speed[32];
      std::snprintf(speed, sizeof speed, "%.2fx", e.start_cost / e.cost);
      rows.push_back({name, cost_text(e.start_cost, e.timed), cost_text(e.cost, e.timed), speed,
                      t.hit ? "stored: no search" : seconds(e.search_s)});
      if (!t.hit) searched_s += e.search_s, ++searched;
      std::fprintf(stderr, "tune: %s%s: %s '%s' %s\n", tag.c_str(), name.c_str(),
                   t.hit ? "stored" : "saved", e.schedule.c_str(),
                   cost_text(e.cost, e.timed).c_str());
    } catch (const DatabaseError&) {
      throw;  // the file itself is refused: nothing more can be saved
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tune: %s%s: not tuned: %s\n", tag.c_str(), name.c_str(), e.what());
      rows.push_back({name, "-", "-", "-", "not tuned: failed"});
      ++failed;
    }
  }
  std::printf("%-52s %14s %14s %9s  %s\n", "kernel", "before", "after", "speed-up", "tuning");
  for (const Row& r : rows)
    std::printf("%-52s %14s %14s %9s  %s\n", r.name.c_str(), r.before.c_str(), r.after.c_str(),
                r.speedup.c_str(), r.time.c_str());
  if (failed) return work_failed("tune", std::to_string(failed) + " kernels not tuned (above)");
  return 0;
}

}  // namespace kitten
