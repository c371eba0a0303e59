#include "dsl/opt.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include "dsl/printer.h"
#include "dsl/rewrite.h"
#include "dsl/symbolic.h"

namespace kitten {

namespace {

struct Split {
  int64_t amount;
  AxisKind kind;
  int64_t id;  // the inner range's new id
};

bool is_action(const ScheduleEntry& e) { return e.axis.has_value(); }

std::string entry_text(const ScheduleEntry& e) { return Schedule({e}).to_string(); }

}  // namespace

std::optional<int64_t> axis_stride(const UOp& idx, const UOp& r) {
  UOp next = substitute(idx, {{r, r + 1}});
  UOp d = simplify(next - idx);
  if (d.op() != Op::CONST) return std::nullopt;
  return d.const_int();
}

UOp apply_schedule(const UOp& sink, const Target& target, const Schedule& given) {
  bool any_action = std::any_of(given.entries().begin(), given.entries().end(), is_action);
  Schedule schedule = given;
  if (!any_action && given.knob_or("NOOPT", 0) == 0) schedule = heuristic_schedule(sink, target);
  schedule.check_axes(sink);

  std::map<int64_t, UOp> ranges;
  for (const UOp& u : toposort(sink))
    if (u.op() == Op::RANGE) ranges.emplace(u.axis().id, u);
  // New axes get ids above every existing one, grouped by the axis they split, so that
  // ranges of one kind nest in the order of the axes they came from (the split of the
  // innermost axis innermost: threadIdx.x where it is LOCAL).
  int64_t first_new = ranges.empty() ? 0 : ranges.rbegin()->first + 1;
  std::map<int64_t, int64_t> splits_of;
  std::map<int64_t, std::vector<Split>> plan;
  std::map<int64_t, int64_t> left;  // each split axis's remaining (outer) extent
  int64_t copies = 1, threads = 1;
  for (const ScheduleEntry& e : schedule.entries()) {
    if (!is_action(e)) continue;
    const UOp& r = ranges.at(*e.axis);
    AxisKind kind = r.axis().kind;
    auto refuse = [&](const std::string& why) {
      throw ScheduleError("schedule: " + entry_text(e) + " " + why + " (kernel '" +
                          sink.name_arg() + "')");
    };
    AxisKind inner;
    if (e.name == "UPCAST") {
      if (kind != AxisKind::Global)
        refuse("needs a global axis; axis is " + std::string(axis_kind_name(kind)));
      inner = AxisKind::Upcast;
    } else if (e.name == "UNROLL") {
      if (kind != AxisKind::Global && kind != AxisKind::Loop && kind != AxisKind::Reduce)
        refuse("needs a global, loop or reduce axis; axis is " + std::string(axis_kind_name(kind)));
      inner = AxisKind::Unroll;
    } else if (e.name == "LOCAL") {
      if (!target.has(kFeatureBlocks))
        refuse("needs threads that form blocks, which " + target.arch + " does not have");
      if (kind != AxisKind::Global)
        refuse("needs a global axis; axis is " + std::string(axis_kind_name(kind)));
      inner = AxisKind::Local;
    } else {
      refuse("is not an action this pass knows (UPCAST, UNROLL, LOCAL)");
    }
    if (r.src(0).op() != Op::CONST) refuse("needs an axis of constant extent");
    int64_t& rest = left.try_emplace(*e.axis, r.src(0).const_int()).first->second;
    if (e.amount < 1 || e.amount > rest)
      refuse("needs an amount from 1 to the axis's extent " + std::to_string(rest));
    rest = (rest + e.amount - 1) / e.amount;
    if (inner == AxisKind::Local) {
      threads *= e.amount;
      if (threads > target.max_threads_per_block)
        refuse("makes blocks of " + std::to_string(threads) + " threads; " + target.arch +
               " has at most " + std::to_string(target.max_threads_per_block));
    } else {
      copies *= e.amount;
      if (copies > kMaxCopies)
        refuse("makes " + std::to_string(copies) + " copies of the body; at most " +
               std::to_string(kMaxCopies) + " are allowed");
    }
    constexpr int64_t kMaxSplits = 64;  // per axis
    int64_t nth = splits_of[*e.axis]++;
    if (nth == kMaxSplits)
      refuse("splits the axis more than " + std::to_string(kMaxSplits) + " times");
    plan[*e.axis].push_back({e.amount, inner, first_new + *e.axis * kMaxSplits + nth});
  }
  if (plan.empty()) return sink;

  // Each split range's value as an index, and the ranges that replace it in END and AFTER.
  // Where the amounts do not divide the extent, the last iterations run past it: their
  // index is clamped to the last one (so they read only what exists) and their effects do
  // nothing: their stores and atomics are gated off, except stores to registers, which
  // are the iteration's own unless an UNROLL split the range.
  std::unordered_map<const void*, UOp> value, valid;
  std::unordered_map<const void*, std::vector<UOp>> parts;
  std::set<const void*> sequential;  // clamped ranges split by UNROLL
  for (const auto& [id, splits] : plan) {
    const UOp& r = ranges.at(id);
    DType d = r.dtype();
    UOp outer = range(const_int(d, left.at(id)), id, r.axis().kind);
    UOp v = outer;
    std::vector<UOp> list{outer};
    int64_t covered = left.at(id);
    for (auto s = splits.rbegin(); s != splits.rend(); ++s) {  // the first split is innermost
      UOp in = range(const_int(d, s->amount), s->id, s->kind);
      v = v * const_int(d, s->amount) + in;
      list.push_back(in);
      covered *= s->amount;
    }
    int64_t n = r.src(0).const_int();
    if (covered != n) {
      valid.emplace(r.id(), v < const_int(d, n));
      if (std::any_of(splits.begin(), splits.end(),
                      [](const Split& x) { return x.kind == AxisKind::Unroll; }))
        sequential.insert(r.id());
      v = UOp::make(Op::MIN, {v, const_int(d, n - 1)});
    }
    value.emplace(r.id(), v);
    parts.emplace(r.id(), std::move(list));
  }
  // The gates of the clamped ranges each node depends on (an END drops those it closes).
  std::unordered_map<const void*, std::vector<const void*>> gated_by;
  std::unordered_map<const void*, UOp> image;
  for (const UOp& u : toposort(sink)) {
    std::vector<const void*> g;
    if (valid.count(u.id())) g.push_back(u.id());
    for (const UOp& s : u.src())
      for (const void* r : gated_by[s.id()])
        if (std::find(g.begin(), g.end(), r) == g.end()) g.push_back(r);
    if (u.op() == Op::END)
      for (size_t k = 1; k < u.src().size(); ++k) std::erase(g, u.src(k).id());
    if (auto it = value.find(u.id()); it != value.end()) {
      image.emplace(u.id(), it->second);
      gated_by[u.id()] = std::move(g);
      continue;
    }
    bool names_ranges = u.op() == Op::END || u.op() == Op::AFTER;
    std::vector<UOp> src;
    bool changed = false;
    for (size_t k = 0; k < u.src().size(); ++k) {
      const UOp& s = u.src(k);
      if (auto p = parts.find(s.id()); names_ranges && k > 0 && p != parts.end()) {
        src.insert(src.end(), p->second.begin(), p->second.end());
        changed = true;
        continue;
      }
      const UOp& t = image.at(s.id());
      changed |= t != s;
      src.push_back(t);
    }
    UOp out = changed ? UOp::make(u.op(), u.dtype(), src, u.arg()) : u;
    // A register is the iteration's own where the split is parallel (upcast copies and
    // threads each have theirs): only unrolled iterations, which share it, gate its stores.
    std::vector<const void*> gate_by = g;
    if (u.op() == Op::STORE && u.src(0).src(0).dtype().space() == AddrSpace::Reg)
      std::erase_if(gate_by, [&](const void* r) { return !sequential.count(r); });
    if ((u.op() == Op::STORE || u.op() == Op::ATOMIC) && !gate_by.empty()) {
      UOp ok;
      for (const void* r : gate_by) ok = ok ? UOp::make(Op::AND, {ok, valid.at(r)}) : valid.at(r);
      const UOp& ix = out.src(0);
      UOp gate = ix.src().size() == 3 ? UOp::make(Op::AND, {ix.src(2), ok}) : ok;
      UOp gix = UOp::make(Op::INDEX, ix.dtype(), {ix.src(0), ix.src(1), gate}, ix.arg());
      std::vector<UOp> osrc(out.src().begin(), out.src().end());
      osrc[0] = gix;
      out = UOp::make(u.op(), u.dtype(), osrc, u.arg());
    }
    image.emplace(u.id(), out);
    gated_by[u.id()] = std::move(g);
  }
  return image.at(sink.id());
}

Schedule heuristic_schedule(const UOp& sink, const Target& target) {
  std::vector<UOp> global, reduce, accesses;
  for (const UOp& u : toposort(sink)) {
    if (u.op() == Op::SPECIAL) return {};  // a kernel that maps its own threads
    if (u.op() == Op::RANGE && u.src(0).op() == Op::CONST) {
      if (u.axis().kind == AxisKind::Global) global.push_back(u);
      if (u.axis().kind == AxisKind::Reduce) reduce.push_back(u);
    }
    if (u.op() == Op::INDEX && u.src(0).dtype().space() == AddrSpace::Global)
      accesses.push_back(u.src(1));
  }
  auto by_id = [](const UOp& a, const UOp& b) { return a.axis().id < b.axis().id; };
  std::sort(global.begin(), global.end(), by_id);
  auto contiguous = [&](const UOp& r) {
    return std::any_of(accesses.begin(), accesses.end(),
                       [&](const UOp& i) { return axis_stride(i, r) == 1; });
  };
  auto largest_dividing = [](const UOp& r, const std::vector<int64_t>& amounts) -> int64_t {
    for (int64_t a : amounts)
      if (r.src(0).const_int() % a == 0 && r.src(0).const_int() >= a) return a;
    return 0;
  };
  Schedule s;
  bool blocks = target.has(kFeatureBlocks);
  // Register tiles: 8 x 8 on cpu (eight 8-lane accumulators), 4 x 4 per thread on blocks.
  std::vector<int64_t> tile = blocks ? std::vector<int64_t>{4, 2} : std::vector<int64_t>{8, 4, 2};
  if (!reduce.empty() && global.size() >= 2) {  // matmul-shaped
    const UOp& rows = global[global.size() - 2];
    const UOp& cols = global.back();
    if (int64_t a = largest_dividing(cols, tile)) s.action("UPCAST", cols.axis().id, a);
    if (int64_t a = largest_dividing(rows, tile)) s.action("UPCAST", rows.axis().id, a);
    return s;
  }
  if (!reduce.empty() && global.size() == 1) {  // contiguous across outputs, not along the reduce
    bool along_reduce = std::any_of(reduce.begin(), reduce.end(), contiguous);
    if (!along_reduce && contiguous(global[0]))
      if (int64_t a = largest_dividing(global[0], {8, 4, 2}))
        s.action("UPCAST", global[0].axis().id, blocks ? std::min<int64_t>(a, 4) : a);
    return s;
  }
  if (reduce.empty() && blocks && !global.empty() && contiguous(global.back()))
    if (int64_t a = largest_dividing(global.back(), {4}))
      s.action("UPCAST", global.back().axis().id, a);
  return s;
}

}  // namespace kitten
