#include "autotune/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <numeric>
#include <set>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "dsl/linearize.h"
#include "dsl/mma.h"
#include "dsl/opt.h"
#include "dsl/printer.h"
#include "dsl/rewrite.h"
#include "dsl/symbolic.h"

namespace kitten::autotune {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A refusal's rule without the entry, the kernel and the numbers that differ between
// candidates ("UPCAST:1:512 makes 512 copies ..." -> "makes N copies ..."), so that the
// report counts candidates per rule.
std::string rule_of(const std::string& message) {
  std::string m = message.substr(0, message.find('\n'));
  if (m.rfind("schedule: ", 0) == 0) {
    m = m.substr(10);
    if (size_t sp = m.find(' '); sp != std::string::npos) m = m.substr(sp + 1);
  }
  if (size_t k = m.find(" (kernel '"); k != std::string::npos) m.erase(k);
  if (size_t k = m.find(" (  %"); k != std::string::npos) m.erase(k);  // a printed graph
  std::string out;
  for (size_t i = 0; i < m.size(); ++i) {
    if (m[i] == '\'' && m.find('\'', i + 1) != std::string::npos) {  // a quoted schedule
      i = m.find('\'', i + 1);
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(m[i]))) {
      out += 'N';
      while (i + 1 < m.size() && std::isdigit(static_cast<unsigned char>(m[i + 1]))) ++i;
    } else {
      out += m[i];
    }
  }
  return out.size() > 120 ? out.substr(0, 117) + "..." : out;
}

StableKey key_of(const LoweredKernels& l) {
  StableKey k{0x6b657973, 0};
  for (const UOp& u : l.kernels) {
    StableKey x = u.key();
    k.lo = (k.lo ^ x.lo) * 0x100000001b3ull + 0x9e3779b97f4a7c15ull;
    k.hi = (k.hi ^ x.hi) * 0x100000001b3ull + (k.lo >> 17);
  }
  for (const TempBuffer& t : l.temps) k.lo ^= uint64_t(t.count) * 0x9e3779b97f4a7c15ull;
  return k;
}

struct KeyLess {
  bool operator()(const StableKey& a, const StableKey& b) const {
    return a.lo != b.lo ? a.lo < b.lo : a.hi < b.hi;
  }
};

// Spearman's rank correlation of two equally long series (ties get their mean rank).
std::optional<double> spearman(const std::vector<double>& x, const std::vector<double>& y) {
  size_t n = x.size();
  if (n < 3) return std::nullopt;
  auto ranks = [n](const std::vector<double>& v) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
    std::vector<double> r(n);
    for (size_t i = 0; i < n;) {
      size_t j = i;
      while (j + 1 < n && v[order[j + 1]] == v[order[i]]) ++j;
      for (size_t k = i; k <= j; ++k) r[order[k]] = double(i + j) / 2;
      i = j + 1;
    }
    return r;
  };
  std::vector<double> rx = ranks(x), ry = ranks(y);
  double mx = std::accumulate(rx.begin(), rx.end(), 0.0) / double(n);
  double my = std::accumulate(ry.begin(), ry.end(), 0.0) / double(n);
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  if (sxx == 0 || syy == 0) return std::nullopt;
  return sxy / std::sqrt(sxx * syy);
}

std::string seconds_text(double s, bool timed) {
  char b[64];
  if (!timed)
    std::snprintf(b, sizeof b, "%.6g", s);
  else if (s < 1e-3)
    std::snprintf(b, sizeof b, "%.2f us", s * 1e6);
  else
    std::snprintf(b, sizeof b, "%.3f ms", s * 1e3);
  return b;
}

}  // namespace

std::vector<BufferSpec> kernel_buffers(const UOp& kernel) {
  std::map<int64_t, BufferSpec> out;
  for (const UOp& u : toposort(kernel)) {  // an INDEX comes before the accesses through it
    if (u.op() == Op::PARAM && !u.dtype().is_pointer())
      throw std::invalid_argument("kernel '" + kernel.name_arg() + "' takes an integer at slot " +
                                  std::to_string(u.slot()) + ": its buffers must be given");
    bool access = u.op() == Op::LOAD || u.op() == Op::STORE || u.op() == Op::ATOMIC;
    if (access && u.src(0).op() == Op::INDEX) {
      if (UOp buf = buffer_root(u.src(0).src(0)); buf.op() == Op::PARAM) {
        BufferSpec& b = out.at(buf.slot());
        b.read |= u.op() != Op::STORE;
        b.written |= u.op() != Op::LOAD;
      }
    }
    if (u.op() != Op::INDEX) continue;
    UOp buf = buffer_root(u.src(0));
    if (buf.op() != Op::PARAM) continue;
    auto [lo, hi] = bounds(u.src(1));
    bool gated = u.src().size() == 3;  // a gated access may name indices it never touches
    if (hi >= (int64_t(1) << 40) || (lo < 0 && !gated))
      throw std::invalid_argument("kernel '" + kernel.name_arg() + "' indexes buffer " +
                                  std::to_string(buf.slot()) + " from " + std::to_string(lo) +
                                  " to " + std::to_string(hi) + ": its buffers must be given");
    DType element = buf.dtype().pointee();
    int64_t lanes = u.dtype().is_pointer() ? u.dtype().pointee().count() : 1;
    BufferSpec& b =
        out.try_emplace(buf.slot(), BufferSpec{buf.slot(), element, 0, false, false}).first->second;
    b.count = std::max(b.count, hi + lanes);
  }
  std::vector<BufferSpec> specs;
  for (auto& [slot, b] : out) specs.push_back(b);
  return specs;
}

// ---- the spaces ---------------------------------------------------------------------------

std::vector<Schedule> knob_neighbours(const Schedule& from, const std::vector<Knob>& knobs) {
  std::vector<Schedule> out;
  for (const Knob& k : knobs) {
    int64_t now = from.knob_or(k.name, std::numeric_limits<int64_t>::min());
    for (int64_t v : k.values) {
      if (v == now) continue;
      std::vector<ScheduleEntry> entries;
      bool set = false;
      for (ScheduleEntry e : from.entries()) {
        if (!e.axis && !e.part && e.name == k.name) e.amount = v, set = true;
        entries.push_back(e);
      }
      if (!set) entries.push_back({k.name, std::nullopt, v});
      out.emplace_back(std::move(entries));
    }
  }
  return out;
}

namespace {
constexpr size_t kMaxSteppedParts = 8;

// TC=1's knobs: the tile GEMM's (kernels/gemm.h), which refuses the combinations it cannot
// run (each such candidate counted with its reason).
const std::vector<Knob> kTensorCoreKnobs = {
    {"BM", {64, 128, 256}}, {"BN", {64, 128, 256}}, {"BK", {32, 64}},         {"WM", {1, 2, 4}},
    {"WN", {1, 2, 4}},      {"STAGES", {2, 3, 4}},  {"GROUP", {1, 4, 8, 16}}, {"WGMMA", {0, 1}},
    {"EPILOGUE", {0, 1}},   {"REPACK", {1, 2}}};
}  // namespace

SearchSpace action_space(const UOp& kernel, const Target& target) {
  struct Axis {
    int64_t id, extent;
    AxisKind kind;
  };
  std::vector<Axis> axes;
  // Where the kernel compares a global axis with constants (a concatenation's segments,
  // a padding's edges): the points between, inside the axis, for a cut at every one.
  std::map<int64_t, std::set<int64_t>> segments;
  for (const UOp& u : toposort(kernel)) {
    if (u.op() == Op::RANGE && u.src(0).op() == Op::CONST)
      axes.push_back({u.axis().id, u.src(0).const_int(), u.axis().kind});
    if (u.op() != Op::CMPLT) continue;
    for (int side = 0; side < 2; ++side) {
      const UOp &r = u.src(side), &c = u.src(1 - side);
      if (r.op() != Op::RANGE || r.axis().kind != AxisKind::Global || c.op() != Op::CONST ||
          r.src(0).op() != Op::CONST)
        continue;
      int64_t at = c.const_int() + side;  // r < c: c; c < r: c + 1
      if (at > 0 && at < r.src(0).const_int()) segments[r.axis().id].insert(at);
    }
  }
  bool blocks = target.has(kFeatureBlocks);
  SearchSpace s;
  s.name = kernel.name_arg();
  s.id = {s.name, kernel.key(), {}, {}};
  s.build = [kernel](const Schedule&) { return kernel; };
  s.reference = Schedule().knob("NOOPT", 1);
  s.start = {Schedule(), s.reference};
  s.buffers = kernel_buffers(kernel);
  // TC=1 (a matrix product on the tile GEMM) where the target has mma.sync and the kernel
  // one reduction over loads of 16-bit floats; the tensor_cores pass refuses a kernel that
  // is not a product.
  int narrow_loads = 0;
  for (const UOp& u : toposort(kernel))
    narrow_loads +=
        u.op() == Op::LOAD && (u.dtype() == dtypes::bfloat16 || u.dtype() == dtypes::float16);
  bool tensor_cores = target.has(kFeatureMmaSync) && narrow_loads >= 2 &&
                      std::count_if(axes.begin(), axes.end(),
                                    [](const Axis& a) { return a.kind == AxisKind::Reduce; }) == 1;
  s.neighbours = [kernel, target, axes, blocks, segments, tensor_cores](const Schedule& from) {
    if (from.knob_or("TC", 0)) return knob_neighbours(from, kTensorCoreKnobs);
    // The heuristic's actions, made explicit, are the first steps' base.
    bool any = std::any_of(from.entries().begin(), from.entries().end(),
                           [](const ScheduleEntry& e) { return e.axis.has_value(); });
    Schedule base;
    bool nolocals = from.knob_or("NOLOCALS", 0) != 0;
    std::vector<Schedule> out;
    if (tensor_cores && !any && !nolocals) out.push_back(Schedule().knob("TC", 1));
    if (any) {
      base = from;
    } else if (from.knob_or("NOOPT", 0) == 0) {
      base = heuristic_schedule(kernel, target);
      // A long reduction to one value: the heuristic SPLITs it first (its partial kernel
      // then gets the heuristic), and a step refines the split kernel.
      if (std::optional<ScheduleEntry> h = heuristic_split(kernel, target)) base = Schedule({*h});
      if (nolocals)  // the heuristic without its threads
        base = without_threads(base).knob("NOLOCALS", 1);
      else if (without_threads(base) != base)
        out.push_back(Schedule().knob("NOLOCALS", 1));
    }
    // A step that cuts or splits the kernel again starts from the whole kernel's entries:
    // the parts' own entries would fall on other parts.
    std::vector<ScheduleEntry> whole_entries;
    for (const ScheduleEntry& e : base.entries())
      if (!e.part) whole_entries.push_back(e);
    const Schedule whole(whole_entries);
    std::map<int64_t, int64_t> left;
    for (const Axis& a : axes) left[a.id] = a.extent;
    // CUTs first: what is left of a cut axis is its shortest segment but the tail (the
    // segments the other actions apply to).
    for (const Axis& a : axes) {
      std::vector<int64_t> at = {0};
      for (const ScheduleEntry& e : whole.entries())
        if (e.axis == a.id && e.name == "CUT") at.push_back(e.amount);
      std::sort(at.begin(), at.end());
      for (size_t k = 1; k < at.size(); ++k)
        left[a.id] = std::min(k == 1 ? a.extent : left[a.id], at[k] - at[k - 1]);
    }
    bool has_split = false;  // a SPLIT stands alone: no CUT beside it
    bool swapped = false;
    std::set<int64_t> cut;
    for (const ScheduleEntry& e : whole.entries())
      if (e.axis && left.count(*e.axis)) {
        if (e.name == "SPLIT") has_split = true;
        if (e.name == "CUT") cut.insert(*e.axis);
        if (e.name == "PADTO") left[*e.axis] = (left[*e.axis] + e.amount - 1) / e.amount * e.amount;
        if (e.name == "SWAP") swapped = true;
        if (e.name != "CUT" && e.name != "PADTO" && e.name != "SWAP")
          left[*e.axis] = (left[*e.axis] + e.amount - 1) / e.amount;
      }
    auto add = [&](const char* name, const Axis& a, std::vector<int64_t> amounts) {
      // UPCAST and UNROLL also take all that is left of a short axis: a loop gone, its
      // loads are the same values as another fully unrolled loop's over the same row and
      // are loaded once (a layer norm's three passes over a row read it once, into
      // registers).
      if ((std::string_view(name) == "UPCAST" || std::string_view(name) == "UNROLL") &&
          left[a.id] <= 32 &&
          std::find(amounts.begin(), amounts.end(), left[a.id]) == amounts.end())
        amounts.push_back(left[a.id]);
      for (int64_t n : amounts)
        if (n <= left[a.id]) {
          Schedule next = std::string_view(name) == "SPLIT" ? whole : base;
          out.push_back(next.action(name, a.id, n));
          // An UNROLL of a GROUP's axis also goes first, innermost: each thread's copies
          // then read consecutive elements, one vector load.
          std::vector<ScheduleEntry> e = base.entries();
          auto group = std::find_if(e.begin(), e.end(), [&](const ScheduleEntry& x) {
            return x.name == "GROUP" && x.axis == a.id && !x.part;
          });
          if (std::string_view(name) == "UNROLL" && group != e.end()) {
            e.insert(group, {name, a.id, n});
            out.emplace_back(std::move(e));
          }
        }
    };
    bool split = has_split || !cut.empty();  // no second SPLIT, and none beside a CUT
    bool threads = blocks && !nolocals;
    bool grouped = std::any_of(
        whole.entries().begin(), whole.entries().end(),
        [&](const ScheduleEntry& e) { return e.name == "GROUP" || e.name == "GROUPTOP"; });
    // SWAP: two global axes exchange their places in the nesting (which one the threads
    // run along), once per schedule.
    if (!swapped)
      for (size_t i = 0; i < axes.size(); ++i)
        for (size_t j = i + 1; j < axes.size(); ++j)
          if (axes[i].kind == AxisKind::Global && axes[j].kind == AxisKind::Global &&
              axes[i].extent > 1 && axes[j].extent > 1) {
            Schedule next = base;
            out.push_back(next.action("SWAP", axes[i].id, axes[j].id));
          }
    for (const Axis& a : axes) {
      if (left[a.id] < 2) continue;
      if (a.kind == AxisKind::Global) add("UPCAST", a, {2, 3, 4, 8});
      if (a.kind == AxisKind::Global || a.kind == AxisKind::Reduce || a.kind == AxisKind::Loop)
        add("UNROLL", a, {2, 4, 8});
      if (threads && a.kind == AxisKind::Global) add("LOCAL", a, {2, 4, 8, 16, 32, 64, 128, 256});
      if (threads && a.kind == AxisKind::Reduce && !grouped) {
        add("GROUP", a, {16, 32, 64, 128, 256});
        add("GROUPTOP", a, {16, 32, 64, 128, 256});
      }
      if (blocks && a.kind == AxisKind::Reduce && !split && left[a.id] == a.extent)
        add("SPLIT", a, {8, 32, 128});
      // An additive cut: the body a multiple of m (its splits need no gates), the tail
      // its own kernel with the heuristic schedule; beside another axis's cut, a
      // rectangular one (an interior and its edges).
      if (a.kind != AxisKind::Global || has_split || cut.count(a.id)) continue;
      if (left[a.id] == a.extent)
        for (int64_t m : {8, 64})
          if (int64_t at = a.extent - a.extent % m; at > 0 && at < a.extent) {
            Schedule next = whole;
            out.push_back(next.action("CUT", a.id, at));
          }
      // A cut at every segment's edge: each segment's kernel loads its own input alone
      // (the gates and wheres of the others simplify away); the actions on the axis apply
      // to every segment but the last.
      if (auto it = segments.find(a.id); it != segments.end()) {
        Schedule next = whole;
        for (int64_t at : it->second) next.action("CUT", a.id, at);
        out.push_back(next);
      }
    }
    // A cut or split kernel's parts are searched one by one: a step of part p's own space
    // (from the schedule it runs now) becomes that part's entries (@p), which replace
    // the rule it ran by (the schedule's other actions, or the heuristic). Every candidate
    // lowers every part, so kernels of more than kMaxSteppedParts parts (a concatenation of
    // many inputs) are left to the rule.
    if (split) {
      try {
        KernelParts parts = split_kernels(kernel, target, base);
        for (size_t p = 0; p < parts.kernels.size() && parts.kernels.size() <= kMaxSteppedParts;
             ++p)
          for (Schedule& step : part_steps(base, int64_t(p), parts.kernels[p].first,
                                           parts.kernels[p].second, target))
            out.push_back(std::move(step));
      } catch (const ScheduleError&) {  // the lowering refuses it and counts it
      } catch (const IrError&) {
      } catch (const std::invalid_argument&) {
      }
    }
    return out;
  };
  return s;
}

std::vector<Schedule> part_steps(const Schedule& from, int64_t part, const UOp& kernel,
                                 const Schedule& now, const Target& target) {
  std::vector<Schedule> out;
  for (const Schedule& step : action_space(kernel, target).neighbours(now)) {
    std::vector<ScheduleEntry> entries;
    for (const ScheduleEntry& e : from.entries())
      if (e.part != part) entries.push_back(e);
    bool whole = false;
    for (ScheduleEntry e : step.entries()) {
      whole = whole || (e.axis && (e.name == "CUT" || e.name == "SPLIT")) ||
              (!e.axis && e.name == "TC");
      e.part = part;
      entries.push_back(e);
    }
    if (!whole) out.emplace_back(std::move(entries));
  }
  return out;
}

SearchSpace knob_space(std::string name, std::function<UOp(const Schedule&)> build, Schedule start,
                       std::vector<Knob> knobs, std::vector<BufferSpec> buffers) {
  SearchSpace s;
  s.name = std::move(name);
  s.build = std::move(build);
  s.start = {start};
  s.reference = start;
  s.buffers = std::move(buffers);
  s.neighbours = [knobs](const Schedule& from) { return knob_neighbours(from, knobs); };
  return s;
}

// ---- the cost model -------------------------------------------------------------------------

double bank_conflicts(const UOp& index, DType access) {
  UOp idx = index.src(1), lane;
  for (const UOp& u : toposort(idx))
    if (u.op() == Op::SPECIAL &&
        std::get<SpecialArg>(u.arg()) == SpecialArg{SpecialKind::ThreadIdx, 0})
      lane = u;
  if (!lane) return 1;
  UOp d = simplify(substitute(idx, {{lane, lane + 1}}) - idx);
  if (d.op() != Op::CONST) return 1;
  int64_t stride = std::abs(d.const_int()) * index.dtype().pointee().itemsize();
  if (stride < 4 || stride % 4) return 1;
  int64_t width = std::max<int64_t>(4, access.itemsize());
  int64_t lanes =
      lane.src(0).op() == Op::CONST ? std::min<int64_t>(32, lane.src(0).const_int()) : 32;
  double degree = double(std::gcd(stride / 4, int64_t(32))) / double(width / 4);
  return std::clamp(degree, 1.0, double(std::max<int64_t>(lanes, 1)));
}

LoweredKernels lower_schedule(const SearchSpace& space, const Target& target, const Schedule& s) {
  return space.lower ? space.lower(s) : lower_kernels(space.build(s), target, s);
}

std::shared_future<LoweredKernels> lower_schedule_async(const SearchSpace& space,
                                                        const Target& target, Schedule s) {
  auto lower = [&space, &target, s = std::move(s)] { return lower_schedule(space, target, s); };
  LowerOptions lowering = default_lower_options();
  bool dumps = !lowering.print_after.empty() || !lowering.dump_json.empty() ||
               default_rewrite_options().trace;
  if (!dumps) try {
      return std::async(std::launch::async, lower).share();
    } catch (const std::system_error&) {  // no thread to be had: lowered when asked
    }
  return std::async(std::launch::deferred, lower).share();
}

LoweringAhead::LoweringAhead(const SearchSpace& space, const Target& target)
    : space_(space), target_(target), cores_(std::max(1u, std::thread::hardware_concurrency())) {}

std::shared_future<LoweredKernels> LoweringAhead::start(Schedule s) {
  while (running_.size() >= cores_) running_.front().wait(), running_.pop_front();
  return running_.emplace_back(lower_schedule_async(space_, target_, std::move(s)));
}

void LoweringAhead::wait() {
  for (const auto& f : running_) f.wait();
  running_.clear();
}

void LoweringAhead::drop() { running_.clear(); }

double estimate_seconds(const Candidate& c, const Target& target) {
  // The model's machine: issue slots and bytes per second. GPUs: 4 warp schedulers per
  // multiprocessor at 1.7 GHz, 3 TB/s, tensor cores at 989 TFLOP/s by wgmma and two thirds
  // of that by mma.sync; cpus: one operation per cycle per core at 3 GHz, 20 GB/s.
  // Requested bytes stand for moved bytes (caches are not modelled); a shared access
  // counts once per replay its bank conflicts cause.
  bool gpu = target.has(kFeatureBlocks);
  double total = 0;
  for (const UOp& k : c.lowered.kernels) {
    LinearProgram p = linearize(k);
    std::vector<double> mult{1.0};
    // Per thread: operations, global bytes, shared accesses, tensor-core seconds; per
    // block: the bytes its TMA copies move (one thread issues each).
    double ops = 0, bytes = 0, shared = 0, tensor_s = 0, block_bytes = 0, blocks = 1, threads = 1;
    std::map<int64_t, double> map_bytes;  // a tensor map's box, by slot
    // The global bytes a thread loads before it needs them: those of one pass through the
    // innermost loop around them (nvcc unrolls a loop of constant extent up to 4 times),
    // or of the kernel's body outside loops; the most of any loop.
    std::vector<double> pass_bytes{0}, unrolled{1};
    double in_flight = 0;
    for (const UOp& u : p.ops) {
      double m = mult.back();
      switch (u.op()) {
        case Op::RANGE: {
          // A loop of run-time extent: the largest its bounds allow (16 where unbounded).
          double n = 16;
          if (u.src(0).op() == Op::CONST) {
            n = double(u.src(0).const_int());
          } else if (int64_t hi = bounds(u.src(0)).second; hi > 0 && hi < (int64_t(1) << 24)) {
            n = double(hi);
          }
          mult.push_back(m * n);
          pass_bytes.push_back(0);
          unrolled.push_back(u.src(0).op() == Op::CONST ? std::min(n, 4.0) : 1);
          continue;
        }
        case Op::TENSOR_MAP:
          if (const auto* a = std::get_if<std::vector<int64_t>>(&u.arg()); a && a->size() > 2) {
            double box = double(u.dtype().pointee().itemsize());
            for (size_t i = 2; i < a->size(); ++i) box *= double((*a)[i]);
            map_bytes[(*a)[0]] = box;
          }
          continue;
        case Op::TMA_LOAD:
        case Op::TMA_STORE:
          if (u.src(0).op() == Op::TENSOR_MAP)
            if (auto it = map_bytes.find(u.src(0).slot()); it != map_bytes.end())
              block_bytes += m * it->second;
          ops += m;
          continue;
        case Op::MMA:
        case Op::WGMMA:
          if (const auto* name = std::get_if<std::string>(&u.arg()))
            if (const MmaLayout* l = find_mma_layout(*name)) {
              double flops = 2.0 * l->m * l->n * l->k / l->group_threads;
              tensor_s += m * flops / (u.op() == Op::WGMMA ? 989e12 : 660e12);
            }
          ops += m;
          continue;
        case Op::END:
          if (mult.size() > 1) {
            mult.pop_back();
            in_flight = std::max(in_flight, pass_bytes.back() * unrolled.back());
            pass_bytes.pop_back();
            unrolled.pop_back();
          }
          continue;
        case Op::SPECIAL:
          (std::get<SpecialArg>(u.arg()).kind == SpecialKind::BlockIdx ? blocks : threads) *=
              double(u.src(0).op() == Op::CONST ? u.src(0).const_int() : 1);
          continue;
        default:
          break;
      }
      if (u.op() == Op::LOAD || u.op() == Op::STORE || u.op() == Op::ATOMIC) {
        UOp buf = buffer_root(u.src(0).op() == Op::INDEX ? u.src(0).src(0) : u.src(0));
        DType v = u.op() == Op::LOAD ? u.dtype() : u.src(1).dtype();
        if (buf.op() == Op::PARAM) {
          bytes += m * v.itemsize();
          if (u.op() == Op::LOAD) pass_bytes.back() += v.itemsize();
        } else if (buf.op() == Op::DEFINE_LOCAL)
          shared += m * (u.src(0).op() == Op::INDEX ? bank_conflicts(u.src(0), v) : 1.0);
        ops += m;
      } else if (is_alu(u.op())) {
        ops += m;
      }
    }
    double seconds;
    if (gpu) {
      double warps = blocks * std::ceil(threads / std::max(1, target.warp_size));
      double slots = double(target.multiprocessors) * 4 * 1.7e9;
      double issue = (ops + 2 * shared) * warps / slots;
      // Memory: 3 TB/s, or less where the loads in flight cannot cover its latency
      // (Little's law, 500 ns): the threads resident at once (2048 and 32 blocks a
      // multiprocessor) times the bytes each has in flight.
      in_flight = std::max(in_flight, pass_bytes[0]);
      double resident = std::min(blocks, double(target.multiprocessors) *
                                             std::min(32.0, std::floor(2048 / threads))) *
                        threads;
      double rate = in_flight > 0 ? std::min(3e12, resident * in_flight / 500e-9) : 3e12;
      double memory = bytes * threads * blocks / rate + block_bytes * blocks / 3e12;
      // Tensor cores: the machine's rate where the grid covers every multiprocessor, a
      // multiprocessor's share per block otherwise.
      double tensor = tensor_s * threads * blocks *
                      std::max(1.0, double(target.multiprocessors) / std::max(1.0, blocks));
      double fill = std::min(1.0, warps / (double(target.multiprocessors) * 16));
      seconds = std::max({issue, memory, tensor}) / fill + 3e-6;
    } else {
      double cores = std::min(blocks, double(std::max(1, target.multiprocessors)));
      seconds = std::max(ops * blocks / (cores * 3e9), bytes * blocks / 2e10) + 2e-6;
    }
    total += seconds;
  }
  return total;
}

// ---- the report ---------------------------------------------------------------------------

int64_t SearchReport::rejected_total() const {
  int64_t n = 0;
  for (const auto& [rule, count] : rejected) n += count;
  return n;
}

std::string SearchReport::to_string() const {
  std::string s;
  auto line = [&s](const std::string& l) { s += l + "\n"; };
  auto num = [](int64_t n) { return std::to_string(n); };
  line("candidates: " + num(generated) + " generated, " + num(duplicate_schedules) +
       " repeated schedules, " + num(duplicate_kernels) + " lowered to a kernel already seen, " +
       num(rejected_total()) + " refused, " + num(not_measured) + " left by the cost model, " +
       num(over_budget) + " left at the time budget, " + num(compile_failed) +
       " failed to compile, " + num(timed_out) + " timed out, " + num(crashed) +
       " crashed a worker, " + num(run_failed) + " failed to run, " + num(measured) +
       " measured (" + num(early_stopped) + " stopped early at 2x the best)");
  for (const auto& [rule, count] : rejected) line("  refused " + num(count) + ": " + rule);
  if (!first_error.empty()) line("  first failure: " + first_error.substr(0, 400));
  std::string rounds;
  for (size_t i = 0; i < best_per_round.size(); ++i)
    rounds += (i ? ", " : "") + seconds_text(best_per_round[i], timed);
  line(std::string("best per round") + (timed ? "" : " (deterministic cost)") + ": " + rounds);
  char b[256];
  std::snprintf(b, sizeof b,
                "time: %.2f s searching (%.2f s compiling, %.2f s measuring, %.2f s validating)",
                search_s, compile_s, measure_s, validate_s);
  line(b);
  if (rank_correlation) {
    std::snprintf(b, sizeof b, "cost model: rank correlation %.2f with the measured costs",
                  *rank_correlation);
    line(b);
  }
  line("stopped: " + stop);
  line("validation: " + validation);
  return s;
}

// ---- the search ---------------------------------------------------------------------------

SearchResult beam_search(const SearchSpace& space, const Target& target, Measure& measure,
                         const SearchOptions& opts) {
  Clock::time_point t0 = Clock::now();
  SearchResult result;
  SearchReport& r = result.report;
  r.timed = measure.timed();
  auto estimate = opts.estimate ? opts.estimate : [&target](const Candidate& c) {
    return estimate_seconds(c, target);
  };
  auto say = [&](const std::string& l) {
    if (opts.progress) opts.progress(l);
  };
  auto over_budget = [&] { return opts.budget_s > 0 && since(t0) > opts.budget_s; };

  std::set<std::string> seen;
  std::set<StableKey, KeyLess> seen_kernels;
  std::vector<std::pair<double, Candidate>> done;  // every measured candidate, with its cost
  std::vector<double> estimates, costs;
  // Lowers the schedules into new candidates; counts what it drops.
  auto lower_all = [&](const std::vector<Schedule>& schedules, int round) {
    std::vector<Schedule> fresh;
    for (const Schedule& s : schedules) {
      ++r.generated;
      if (seen.insert(s.to_string()).second)
        fresh.push_back(s);
      else
        ++r.duplicate_schedules;
    }
    // Lowered on threads (a tile GEMM's lowering takes about a quarter of a second), then
    // taken in order.
    LoweringAhead ahead(space, target);
    std::vector<std::shared_future<LoweredKernels>> lowering;
    for (const Schedule& s : fresh) lowering.push_back(ahead.start(s));
    std::vector<Candidate> out;
    for (size_t i = 0; i < fresh.size(); ++i) {
      const Schedule& s = fresh[i];
      Candidate c;
      c.schedule = s;
      c.round = round;
      try {
        c.lowered = lowering[i].get();
      } catch (const ScheduleError& e) {
        ++r.rejected[rule_of(e.what())];
        continue;
      } catch (const IrError& e) {
        ++r.rejected["lowering: " + rule_of(e.what())];
        continue;
      } catch (const std::invalid_argument& e) {
        ++r.rejected[rule_of(e.what())];
        continue;
      }
      c.key = key_of(c.lowered);
      if (!seen_kernels.insert(c.key).second) {
        ++r.duplicate_kernels;
        continue;
      }
      c.estimate = estimate(c);
      out.push_back(std::move(c));
    }
    return out;
  };
  // Measures the most promising of a round's candidates; returns those measured.
  auto measure_round = [&](std::vector<Candidate> cands) {
    std::stable_sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
      return a.estimate < b.estimate;
    });
    if (over_budget() && !done.empty()) {  // the start is always measured
      r.over_budget += int64_t(cands.size());
      return std::vector<std::pair<double, Candidate>>{};
    }
    if (cands.size() > size_t(opts.measured_per_round)) {
      r.not_measured += int64_t(cands.size()) - opts.measured_per_round;
      cands.resize(size_t(opts.measured_per_round));
    }
    std::vector<const Candidate*> ptrs;
    for (const Candidate& c : cands) ptrs.push_back(&c);
    Clock::time_point tc = Clock::now();
    std::vector<Measured> prepared = measure.prepare(ptrs);
    r.compile_s += since(tc);
    std::vector<std::pair<double, Candidate>> out;
    double best = done.empty() ? std::numeric_limits<double>::infinity() : done.front().first;
    for (const auto& d : done) best = std::min(best, d.first);
    for (size_t i = 0; i < cands.size(); ++i) {
      Measured m = prepared[i];
      if (m.status == Measured::Status::Ok) {
        if (over_budget() && !(done.empty() && out.empty())) {
          ++r.over_budget;
          continue;
        }
        Clock::time_point tm = Clock::now();
        if (opts.verbose) say("measuring '" + cands[i].schedule.to_string() + "'");
        try {
          m = measure.measure(cands[i], best);
        } catch (const MeasureUnavailable&) {
          throw;
        } catch (const std::exception& e) {
          m.status = Measured::Status::RunFailed;
          m.error = e.what();
        }
        r.measure_s += since(tm);
      }
      if (opts.verbose)
        say("  '" + cands[i].schedule.to_string() + "': " +
            (m.status == Measured::Status::Ok || m.status == Measured::Status::EarlyStop
                 ? seconds_text(m.cost, r.timed)
                 : m.error.substr(0, 200)));
      switch (m.status) {
        case Measured::Status::CompileFailed:
          ++r.compile_failed;
          break;
        case Measured::Status::TimedOut:
          ++r.timed_out;
          break;
        case Measured::Status::Crashed:
          ++r.crashed;
          break;
        case Measured::Status::RunFailed:
          ++r.run_failed;
          break;
        case Measured::Status::EarlyStop:
          ++r.early_stopped;
          [[fallthrough]];
        case Measured::Status::Ok:
          ++r.measured;
          best = std::min(best, m.cost);
          estimates.push_back(cands[i].estimate);
          costs.push_back(m.cost);
          cands[i].noise = m.noise;
          out.emplace_back(m.cost, std::move(cands[i]));
          continue;
      }
      if (r.first_error.empty())
        r.first_error = "'" + cands[i].schedule.to_string() + "': " + m.error;
    }
    return out;
  };

  auto by_cost = [](const auto& a, const auto& b) { return a.first < b.first; };
  std::vector<std::pair<double, Candidate>> fresh = measure_round(lower_all(space.start, 0));
  if (fresh.empty())
    throw std::runtime_error("autotune: no start schedule of '" + space.name +
                             "' could be measured\n" + r.to_string());
  done = fresh;
  double best = std::min_element(done.begin(), done.end(), by_cost)->first;
  result.start_cost = best;
  r.best_per_round.push_back(best);
  say("start: " + std::to_string(fresh.size()) + " measured, best " + seconds_text(best, r.timed));
  r.stop = "after " + std::to_string(opts.max_rounds) + " rounds";
  for (int round = 1; round <= opts.max_rounds; ++round) {
    if (over_budget()) {
      r.stop = "the time budget";
      break;
    }
    // The beam: the best `beam` measured so far; the new ones among them are expanded.
    std::vector<std::pair<double, Candidate>> ranked = done;
    std::stable_sort(ranked.begin(), ranked.end(), by_cost);
    if (ranked.size() > size_t(opts.beam)) ranked.resize(size_t(opts.beam));
    std::vector<Schedule> next;
    for (const auto& [cost, c] : ranked)
      if (c.round == round - 1)
        for (Schedule& s : space.neighbours(c.schedule)) next.push_back(std::move(s));
    if (next.empty()) {
      r.stop = "no new schedules";
      break;
    }
    fresh = measure_round(lower_all(next, round));
    for (auto& f : fresh) done.push_back(std::move(f));
    double now = std::min_element(done.begin(), done.end(), by_cost)->first;
    r.best_per_round.push_back(now);
    say("round " + std::to_string(round) + ": " + std::to_string(fresh.size()) + " measured (" +
        std::to_string(r.generated) + " candidates so far, " + std::to_string(r.measured) +
        " measured), best " + seconds_text(now, r.timed));
    bool gained = now < best * (1 - opts.min_gain);
    best = std::min(best, now);
    if (over_budget()) {
      r.stop = "the time budget";
      break;
    }
    if (!gained) {
      r.stop = "a round gained less than " + std::to_string(int(opts.min_gain * 100 + 0.5)) + "%";
      break;
    }
  }
  r.rank_correlation = spearman(estimates, costs);

  // The winner: the best measured candidate that agrees with the reference.
  std::stable_sort(done.begin(), done.end(), by_cost);
  Clock::time_point tv = Clock::now();
  if (!opts.validate) {
    r.validation = "off (the winner was not checked against the reference)";
  } else {
    std::vector<Candidate> ref = [&] {
      Candidate c;
      c.schedule = space.reference;
      c.lowered = lower_schedule(space, target, space.reference);
      return std::vector<Candidate>{std::move(c)};
    }();
    std::string rejected;
    size_t i = 0;
    for (; i < done.size() && i < 5; ++i) {
      if (done[i].second.schedule == space.reference) break;  // the truth itself
      std::string why;
      try {
        why = measure.validate(done[i].second, ref[0]);
      } catch (const std::exception& e) {
        why = std::string("the check failed: ") + e.what();
      }
      if (why.empty()) break;
      rejected += "; rejected '" + done[i].second.schedule.to_string() + "': " + why;
    }
    r.validation =
        "passed (fresh inputs, against '" + space.reference.to_string() + "')" + rejected;
    if (i == done.size() || i == 5) {  // none agreed: the reference is the result
      r.validation = "no winner agreed with the reference, which is the result" + rejected;
      auto it = std::find_if(done.begin(), done.end(),
                             [&](const auto& d) { return d.second.schedule == space.reference; });
      if (it == done.end()) {
        r.validate_s = since(tv);
        result.best = space.reference;
        result.cost = std::numeric_limits<double>::quiet_NaN();  // not measured
        r.search_s = since(t0);
        return result;
      }
      i = size_t(it - done.begin());
    }
    r.validate_s = since(tv);
    done.erase(done.begin(), done.begin() + std::ptrdiff_t(i));
  }
  result.best = done.front().second.schedule;
  result.cost = done.front().first;
  result.noise = done.front().second.noise;
  r.search_s = since(t0);
  return result;
}

}  // namespace kitten::autotune
