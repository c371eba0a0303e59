#include "dsl/opt.h"

#include <algorithm>
#include <climits>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "dsl/printer.h"
#include "dsl/rewrite.h"
#include "dsl/symbolic.h"

namespace kitten {

namespace {

struct Split {
  int64_t amount;
  AxisKind kind;
  int64_t id;           // the inner range's new id
  bool thread = false;  // GROUP, and LOCAL beside a GROUP: the block's threads, no range
  bool top = false;     // GROUPTOP: the threads take the index's top (contiguous chunks)
};

bool is_group(const std::string& name) { return name == "GROUP" || name == "GROUPTOP"; }

bool is_action(const ScheduleEntry& e) { return e.axis.has_value(); }

std::string entry_text(const ScheduleEntry& e) { return Schedule({e}).to_string(); }

// Rebuilds the graph below `root`: `replace` gives a node's new value (or nothing),
// `ranges` what an END or AFTER names instead of a RANGE, `fix` a last say on each
// rebuilt node (old node, new node).
UOp rebuild(const UOp& root, const std::function<UOp(const UOp&)>& replace,
            const std::function<std::vector<UOp>(const UOp&)>& ranges,
            const std::function<UOp(const UOp&, UOp)>& fix) {
  std::unordered_map<const void*, UOp> image;
  for (const UOp& u : toposort(root)) {
    if (UOp r = replace(u)) {
      image.emplace(u.id(), r);
      continue;
    }
    bool names_ranges = u.op() == Op::END || u.op() == Op::AFTER;
    std::vector<UOp> src;
    bool changed = false;
    for (size_t k = 0; k < u.src().size(); ++k) {
      const UOp& s = u.src(k);
      if (names_ranges && k > 0 && s.op() == Op::RANGE) {
        std::vector<UOp> rs = ranges(s);
        if (!(rs.size() == 1 && rs[0] == s)) {
          src.insert(src.end(), rs.begin(), rs.end());
          changed = true;
          continue;
        }
      }
      src.push_back(image.at(s.id()));
      changed |= src.back() != s;
    }
    UOp out = changed ? UOp::make(u.op(), u.dtype(), src, u.arg()) : u;
    image.emplace(u.id(), fix(u, out));
  }
  return image.at(root.id());
}

// An accumulator update in a reduction's loop body: store(reg[k], OP(load(reg[k]), x)).
struct Update {
  UOp store, reg, k;
  Op op;
  UOp x;  // the operand that is not the accumulator
};

// The body's register updates (a STORE or a GROUP of them); anything else is refused.
std::vector<Update> register_updates(const UOp& body_root,
                                     const std::function<void(const std::string&)>& refuse) {
  std::vector<Update> updates;
  std::vector<UOp> body{body_root};
  const char* shape =
      "needs a loop body of register updates acc = acc OP x (OP one of ADD, MUL, MAX, MIN)";
  while (!body.empty()) {
    UOp e = body.back();
    body.pop_back();
    if (e.op() == Op::GROUP) {
      body.insert(body.end(), e.src().begin(), e.src().end());
      continue;
    }
    if (e.op() != Op::STORE) refuse(shape);
    const UOp& ix = e.src(0);
    UOp reg = buffer_root(ix.src(0));
    const UOp& v = e.src(1);
    Op op = v.op();
    if (reg.op() != Op::DEFINE_REG || ix.src(1).op() != Op::CONST ||
        (op != Op::ADD && op != Op::MUL && op != Op::MAX && op != Op::MIN))
      refuse(shape);
    UOp x;
    for (size_t i = 0; i < 2; ++i) {
      const UOp& a = v.src(i);
      if (a.op() == Op::LOAD && buffer_root(a.src(0).src(0)) == reg && a.src(0).src(1) == ix.src(1))
        x = v.src(1 - i);
    }
    if (!x) refuse(shape);
    updates.push_back({e, reg, ix.src(1), op, x});
  }
  return updates;
}

// GROUP: each thread of the block reduced a strided part of the range into its registers.
// After the loop the partials meet in shared memory (one slot per thread, or per warp),
// a barrier, and
// every thread folds them in thread order into its registers, so whatever reads the
// registers after the loop sees the whole reduction, the same in every thread; a second
// barrier frees the shared memory. The loop body must be register updates acc = acc OP x.
UOp combine_group(const UOp& sink, const UOp& outer, const UOp& tid, const Target& target) {
  UOp end_r;
  int64_t slot = 0, range_id = 0;
  for (const UOp& u : toposort(sink)) {
    if (u.op() == Op::END && std::find(u.src().begin() + 1, u.src().end(), outer) != u.src().end())
      end_r = u;
    if (u.op() == Op::DEFINE_LOCAL) slot = std::max(slot, u.slot() + 1);
    if (u.op() == Op::RANGE) range_id = std::max(range_id, u.axis().id + 1);
  }
  auto refuse = [&](const std::string& why) {
    throw ScheduleError("schedule: GROUP of axis " + std::to_string(outer.axis().id) + " " + why +
                        " (kernel '" + sink.name_arg() + "')");
  };
  if (!end_r) refuse("needs a reduce range closed by an END");
  std::vector<Update> updates = register_updates(end_r.src(0), refuse);
  // Where the target has warp shuffles and whole warps, each warp first folds its lanes
  // (a butterfly of xor shuffles leaves the warp's total in every lane) and only one
  // partial per warp goes through shared memory.
  int64_t a = tid.src(0).const_int(), warp = target.warp_size;
  bool shuffle =
      target.has(kFeatureShuffle) && warp > 1 && (warp & (warp - 1)) == 0 && a % warp == 0;
  int64_t slots = shuffle ? a / warp : a;
  DType it = tid.dtype();
  // Each copy of an UPCAST or UNROLL range around the reduction (the expander makes them)
  // stages its partials in its own part of the shared memory: copies that shared one
  // would overwrite partials that another copy's threads are still folding.
  std::set<const void*> closed;
  std::vector<UOp> inner = toposort(end_r);
  for (const UOp& u : inner)
    if (u.op() == Op::END)
      for (size_t k = 1; k < u.src().size(); ++k) closed.insert(u.src(k).id());
  UOp copy = const_int(it, 0);
  int64_t copies = 1;
  for (const UOp& u : inner)
    if (u.op() == Op::RANGE && !closed.count(u.id()) &&
        (u.axis().kind == AxisKind::Upcast || u.axis().kind == AxisKind::Unroll)) {
      copy = copy + (u.dtype() == it ? u : cast(u, it)) * const_int(it, copies);
      copies *= u.src(0).const_int();
    }
  UOp base = copy * const_int(it, slots);
  std::vector<UOp> stage, smem;
  for (const Update& u : updates) {
    smem.push_back(define_local(u.reg.dtype().pointee(), slots * copies, slot++));
    UOp part = load(index(after(u.reg, {end_r}), u.k));
    if (!shuffle) {
      stage.push_back(store(index(smem.back(), base + tid), part));
      continue;
    }
    for (int64_t m = warp / 2; m >= 1; m /= 2)
      part = alu(u.op, part, UOp::make(Op::SHUFFLE, {part, const_int(it, m)}, ShuffleMode::Xor));
    UOp lane0 = UOp::make(Op::CMPEQ, {tid % const_int(it, warp), const_int(it, 0)});
    stage.push_back(store(index(smem.back(), base + tid / const_int(it, warp), lane0), part));
  }
  UOp staged = UOp::make(Op::BARRIER, dtypes::void_, stage);
  std::vector<UOp> init, fold;
  for (size_t i = 0; i < updates.size(); ++i)
    init.push_back(store(index(after(updates[i].reg, {staged}), updates[i].k),
                         load(index(after(smem[i], {staged}), base))));
  UOp inited = init.size() == 1 ? init[0] : UOp::make(Op::GROUP, dtypes::void_, init);
  UOp folded = inited;
  if (slots > 1) {
    UOp c = range(slots - 1, range_id, AxisKind::Reduce);
    for (size_t i = 0; i < updates.size(); ++i) {
      const Update& u = updates[i];
      UOp acc = UOp::make(Op::AFTER, {u.reg, inited, c});
      UOp other = load(index(after(smem[i], {staged}), base + c + 1));
      fold.push_back(store(index(acc, u.k), alu(u.op, load(index(acc, u.k)), other)));
    }
    folded = end(fold.size() == 1 ? fold[0] : UOp::make(Op::GROUP, dtypes::void_, fold), {c});
  }
  UOp freed = UOp::make(Op::BARRIER, dtypes::void_, {folded});
  return substitute(sink, {{end_r, freed}});
}

// Beside a GROUP every thread of the block runs what is not split over the threads: a
// store or atomic to memory whose address and value do not depend on the thread (through
// data: registers after a GROUP hold the same value in every thread) is done by thread 0.
UOp gate_to_first_thread(const UOp& sink, const UOp& tid) {
  std::unordered_set<const void*> on_thread;
  for (const UOp& u : toposort(sink)) {
    bool t = u == tid;
    Op op = u.op();
    if (op == Op::AFTER) {
      t = on_thread.count(u.src(0).id());
    } else if (op != Op::BARRIER && op != Op::END && op != Op::ENDIF && op != Op::GROUP &&
               op != Op::SINK) {
      for (const UOp& x : u.src()) t = t || on_thread.count(x.id());
    }
    if (t) on_thread.insert(u.id());
  }
  UOp first = UOp::make(Op::CMPEQ, {tid, const_int(tid.dtype(), 0)});
  return rebuild(
      sink, [](const UOp&) { return UOp(); }, [](const UOp& r) { return std::vector<UOp>{r}; },
      [&](const UOp& old, UOp x) {
        bool memory = (old.op() == Op::STORE || old.op() == Op::ATOMIC) &&
                      old.src(0).src(0).dtype().space() != AddrSpace::Reg;
        return memory && !on_thread.count(old.id()) ? with_gate(x, first) : x;
      });
}

}  // namespace

UOp with_gate(const UOp& access, const UOp& cond) {
  const UOp& ix = access.src(0);
  UOp gate = ix.src().size() == 3 ? UOp::make(Op::AND, {ix.src(2), cond}) : cond;
  std::vector<UOp> src(access.src().begin(), access.src().end());
  src[0] = UOp::make(Op::INDEX, ix.dtype(), {ix.src(0), ix.src(1), gate}, ix.arg());
  return UOp::make(access.op(), access.dtype(), src, access.arg());
}

std::optional<int64_t> axis_stride(const UOp& idx, const UOp& r) {
  UOp next = substitute(idx, {{r, r + 1}});
  UOp d = simplify(next - idx);
  if (d.op() != Op::CONST) return std::nullopt;
  return d.const_int();
}

static bool closes(const UOp& end, const UOp& r) {
  return end.op() == Op::END &&
         std::find(end.src().begin() + 1, end.src().end(), r) != end.src().end();
}

// Whether `outer` runs around the loop of range `inner`: the END that closes `inner` is
// inside `outer` (it depends on it and closes it nowhere below); with `or_together`, also
// where that END closes both.
static bool encloses(const UOp& sink, const UOp& outer, const UOp& inner,
                     bool or_together = false) {
  for (const UOp& u : toposort(sink)) {
    if (!closes(u, inner)) continue;
    if (or_together && closes(u, outer)) return true;
    bool uses = false, closed = false;
    for (const UOp& v : toposort(u)) {
      uses = uses || v == outer;
      closed = closed || closes(v, outer);
    }
    return uses && !closed;
  }
  return false;
}

Schedule without_threads(const Schedule& s) {
  std::vector<ScheduleEntry> kept;
  for (const ScheduleEntry& e : s.entries())
    if (e.name != "LOCAL" && !is_group(e.name)) kept.push_back(e);
  return Schedule(kept);
}

UOp apply_schedule(const UOp& sink, const Target& target, const Schedule& given) {
  // TC=1 is taken by the "tensor_cores" kernel route before lower_kernels splits or lowers
  // (kernels/tensor_cores.h): reaching here, no route took it.
  if (given.knob_or("TC", 0))
    throw ScheduleError(
        "schedule: TC=1 needs the tensor_cores kernel route, which this program has not "
        "registered (register_tensor_core_route), taken by lower_kernels (kernel '" +
        sink.name_arg() + "')");
  for (const ScheduleEntry& e : given.entries())
    if (e.part)
      throw ScheduleError("schedule: " + entry_text(e) + " names a part of kernel '" +
                          sink.name_arg() + "': split_kernels gives each part its schedule");
  bool any_action = std::any_of(given.entries().begin(), given.entries().end(), is_action);
  bool nolocals = given.knob_or("NOLOCALS", 0) != 0;
  Schedule schedule = given;
  if (!any_action && given.knob_or("NOOPT", 0) == 0) {
    schedule = heuristic_schedule(sink, target);
    if (nolocals) schedule = without_threads(schedule);
  }
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
  int64_t threads = 1, group_threads = 0;
  std::map<int64_t, int64_t> copies_of;  // each axis's UPCAST and UNROLL amounts, multiplied
  std::map<int64_t, std::set<int64_t>> around_of;  // of those axes: the others around each
  for (const ScheduleEntry& e : schedule.entries())
    if (is_action(e) && (e.name == "UPCAST" || e.name == "UNROLL") && ranges.count(*e.axis))
      around_of[*e.axis];
  for (auto& [axis, out] : around_of)
    for (const auto& [other, unused] : around_of)
      if (other != axis && encloses(sink, ranges.at(other), ranges.at(axis), true))
        out.insert(other);
  std::set<int64_t> thread_axes;       // beside a GROUP: the axes split over the threads
  std::set<int64_t> padded;            // PADTO's axes
  std::map<int64_t, int64_t> swapped;  // SWAP: an axis -> the id its outer range takes
  bool grouped = std::any_of(schedule.entries().begin(), schedule.entries().end(),
                             [](const ScheduleEntry& e) { return e.axis && is_group(e.name); });
  for (const ScheduleEntry& e : schedule.entries()) {
    if (!is_action(e)) continue;
    const UOp& r = ranges.at(*e.axis);
    AxisKind kind = r.axis().kind;
    auto refuse = [&](const std::string& why) {
      throw ScheduleError("schedule: " + entry_text(e) + " " + why + " (kernel '" +
                          sink.name_arg() + "')");
    };
    if (nolocals && (e.name == "LOCAL" || is_group(e.name)))
      refuse("uses the block's threads, which NOLOCALS=1 leaves out");
    if (e.name == "PADTO") {  // the axis runs to a multiple of the amount
      if (r.src(0).op() != Op::CONST) refuse("needs an axis of constant extent");
      if (e.amount < 2 || e.amount > 4096) refuse("needs an amount from 2 to 4096");
      int64_t& rest = left.try_emplace(*e.axis, r.src(0).const_int()).first->second;
      rest = (rest + e.amount - 1) / e.amount * e.amount;
      plan[*e.axis];
      padded.insert(*e.axis);
      continue;
    }
    if (e.name == "SWAP") {  // two global axes exchange their places in the nesting
      auto other = ranges.find(e.amount);
      if (kind != AxisKind::Global || other == ranges.end() ||
          other->second.axis().kind != AxisKind::Global || e.amount == *e.axis)
        refuse("needs two different global axes");
      if (r.src(0).op() != Op::CONST || other->second.src(0).op() != Op::CONST)
        refuse("needs axes of constant extent");
      if (swapped.count(*e.axis) || swapped.count(e.amount)) refuse("swaps an axis a second time");
      swapped[*e.axis] = e.amount, swapped[e.amount] = *e.axis;
      for (int64_t a : {*e.axis, e.amount}) {
        left.try_emplace(a, ranges.at(a).src(0).const_int());
        plan[a];
      }
      continue;
    }
    AxisKind inner;
    if (e.name == "UPCAST") {
      if (kind != AxisKind::Global)
        refuse("needs a global axis; axis is " + std::string(axis_kind_name(kind)));
      inner = AxisKind::Upcast;
    } else if (e.name == "UNROLL") {
      if (kind != AxisKind::Global && kind != AxisKind::Loop && kind != AxisKind::Reduce)
        refuse("needs a global, loop or reduce axis; axis is " + std::string(axis_kind_name(kind)));
      inner = AxisKind::Unroll;
    } else if (e.name == "LOCAL" || is_group(e.name)) {
      if (!target.has(kFeatureBlocks))
        refuse("needs threads that form blocks, which " + target.arch + " does not have");
      AxisKind need = e.name == "LOCAL" ? AxisKind::Global : AxisKind::Reduce;
      if (kind != need)
        refuse("needs a " + std::string(axis_kind_name(need)) + " axis; axis is " +
               std::string(axis_kind_name(kind)));
      inner = e.name == "LOCAL" ? AxisKind::Local : AxisKind::Reduce;
    } else {
      refuse(
          "is not an action this pass knows (UPCAST, UNROLL, LOCAL, GROUP, GROUPTOP, PADTO, "
          "SWAP)");
    }
    if (r.src(0).op() != Op::CONST) refuse("needs an axis of constant extent");
    int64_t& rest = left.try_emplace(*e.axis, r.src(0).const_int()).first->second;
    if (e.amount < 1 || e.amount > rest)
      refuse("needs an amount from 1 to the axis's extent " + std::to_string(rest));
    rest = (rest + e.amount - 1) / e.amount;
    bool thread = grouped && (is_group(e.name) || e.name == "LOCAL");
    if (thread && e.name == "LOCAL")
      for (const ScheduleEntry& g : schedule.entries())
        if (g.axis && is_group(g.name) && encloses(sink, r, ranges.at(*g.axis)))
          refuse("splits a range that holds the reduction of GROUP:" + std::to_string(*g.axis) +
                 " over the threads that share that reduction: beside a GROUP, LOCAL splits "
                 "loops inside the reduced row");
    if (thread) {
      if (!thread_axes.insert(*e.axis).second)
        refuse(
            "splits the axis over the block's threads a second time: beside a GROUP the "
            "threads are the block's, one split per axis");
      if (group_threads && e.amount != group_threads)
        refuse("needs the amount of the schedule's other GROUP and LOCAL entries (" +
               std::to_string(group_threads) + "): beside a GROUP they share the block's threads");
      if (e.amount < 2) refuse("needs at least 2 threads");
      group_threads = e.amount;
      if (group_threads > target.max_threads_per_block)
        refuse("makes blocks of " + std::to_string(group_threads) + " threads; " + target.arch +
               " has at most " + std::to_string(target.max_threads_per_block));
    } else if (inner == AxisKind::Local) {
      threads *= e.amount;
      if (threads > target.max_threads_per_block)
        refuse("makes blocks of " + std::to_string(threads) + " threads; " + target.arch +
               " has at most " + std::to_string(target.max_threads_per_block));
    } else {
      // A loop body is copied once for every combination of the amounts of the axes
      // around it: sibling loops (a layer norm's reductions) each count their own, and
      // the innermost loops' copies (one END's axes once) are bounded together.
      copies_of.try_emplace(*e.axis, 1).first->second *= e.amount;
      int64_t total = 0;
      for (const auto& [axis, n] : copies_of) {
        const std::set<int64_t>& out = around_of[axis];
        int64_t copies = n;
        bool counted = true;
        for (const auto& [other, m] : copies_of) {
          bool mutual = out.count(other) && around_of[other].count(axis);
          if (out.count(other)) copies *= m;
          if (around_of[other].count(axis) && (!mutual || other < axis)) counted = false;
        }
        if (copies > kMaxCopies)
          refuse("makes " + std::to_string(copies) + " copies of a loop's body; at most " +
                 std::to_string(kMaxCopies) + " are allowed");
        if (counted) total += copies;
      }
      if (total > kMaxTotalCopies)
        refuse("makes " + std::to_string(total) + " copies of loop bodies in all; at most " +
               std::to_string(kMaxTotalCopies) + " are allowed");
    }
    constexpr int64_t kMaxSplits = 64;  // per axis
    int64_t nth = splits_of[*e.axis]++;
    if (nth == kMaxSplits)
      refuse("splits the axis more than " + std::to_string(kMaxSplits) + " times");
    plan[*e.axis].push_back(
        {e.amount, inner, first_new + *e.axis * kMaxSplits + nth, thread, e.name == "GROUPTOP"});
  }
  if (plan.empty()) return sink;

  // Each split range's value as an index, and the ranges that replace it in END and AFTER.
  // Where the amounts do not divide the extent, the last iterations run past it: their
  // index is clamped to the last one (so they read only what exists) and their effects do
  // nothing: their stores and atomics are gated off, except stores to registers, which
  // are the iteration's own unless an UNROLL split the range.
  std::unordered_map<const void*, UOp> value, valid;
  std::unordered_map<const void*, std::vector<UOp>> parts;
  std::set<const void*> sequential;  // clamped ranges split by UNROLL or GROUP
  UOp tid;                           // the block's threads, where a GROUP made them
  if (group_threads) tid = special(SpecialKind::ThreadIdx, 0, group_threads);
  std::vector<std::pair<UOp, UOp>> groups;  // each GROUP's reduce range: old, new outer
  for (const auto& [id, splits] : plan) {
    const UOp& r = ranges.at(id);
    DType d = r.dtype();
    auto sw = swapped.find(id);
    UOp outer =
        range(const_int(d, left.at(id)), sw == swapped.end() ? id : sw->second, r.axis().kind);
    UOp v = outer;
    std::vector<UOp> list{outer};
    int64_t covered = left.at(id);
    for (auto s = splits.rbegin(); s != splits.rend(); ++s) {  // the first split is innermost
      UOp in = s->thread ? (d == tid.dtype() ? tid : cast(tid, d))
                         : range(const_int(d, s->amount), s->id, s->kind);
      if (!s->top) v = v * const_int(d, s->amount) + in;
      if (!s->thread) list.push_back(in);
      covered *= s->amount;
    }
    // GROUPTOP: the thread's index on top, each thread a contiguous chunk.
    for (const Split& s : splits)
      if (s.top) v = (d == tid.dtype() ? tid : cast(tid, d)) * const_int(d, covered / s.amount) + v;
    if (r.axis().kind == AxisKind::Reduce &&
        std::any_of(splits.begin(), splits.end(), [](const Split& x) { return x.thread; }))
      groups.emplace_back(r, outer);
    int64_t n = r.src(0).const_int();
    if (covered != n) {
      valid.emplace(r.id(), v < const_int(d, n));
      if (std::any_of(splits.begin(), splits.end(),
                      [](const Split& x) {
                        return x.kind == AxisKind::Unroll ||
                               (x.thread && x.kind == AxisKind::Reduce);
                      }) ||
          (padded.count(id) && r.axis().kind != AxisKind::Global))
        sequential.insert(r.id());
      v = UOp::make(Op::MIN, {v, const_int(d, n - 1)});
    }
    value.emplace(r.id(), v);
    parts.emplace(r.id(), std::move(list));
  }
  // The gates of the clamped ranges each node depends on (an END drops those it closes).
  std::unordered_map<const void*, std::vector<const void*>> gated_by;
  for (const UOp& u : toposort(sink)) {
    std::vector<const void*> g;
    if (valid.count(u.id())) g.push_back(u.id());
    for (const UOp& s : u.src())
      for (const void* r : gated_by[s.id()])
        if (std::find(g.begin(), g.end(), r) == g.end()) g.push_back(r);
    if (u.op() == Op::END)
      for (size_t k = 1; k < u.src().size(); ++k) std::erase(g, u.src(k).id());
    gated_by[u.id()] = std::move(g);
  }
  UOp out = rebuild(
      sink,
      [&](const UOp& u) {
        auto it = value.find(u.id());
        return it == value.end() ? UOp() : it->second;
      },
      [&](const UOp& r) {
        auto it = parts.find(r.id());
        return it == parts.end() ? std::vector<UOp>{r} : it->second;
      },
      [&](const UOp& old, UOp x) {
        if (old.op() != Op::STORE && old.op() != Op::ATOMIC) return x;
        // A register is the iteration's own where the split is parallel (upcast copies and
        // threads each have theirs): only unrolled iterations, which share it, gate its
        // stores.
        std::vector<const void*> by = gated_by.at(old.id());
        if (old.op() == Op::STORE && old.src(0).src(0).dtype().space() == AddrSpace::Reg)
          std::erase_if(by, [&](const void* r) { return !sequential.count(r); });
        UOp ok;
        for (const void* r : by) ok = ok ? UOp::make(Op::AND, {ok, valid.at(r)}) : valid.at(r);
        return ok ? with_gate(x, ok) : x;
      });
  if (!tid) return out;
  for (const auto& [old_range, outer] : groups) out = combine_group(out, outer, tid, target);
  return gate_to_first_thread(out, tid);
}

namespace {

UOp renamed(const UOp& sink, const std::string& suffix) {
  std::vector<UOp> src(sink.src().begin(), sink.src().end());
  return UOp::make(Op::SINK, dtypes::void_, src, sink.name_arg() + suffix);
}

// The schedule of the parts that get the heuristic: none under NOOPT=1, and without the
// block's threads under NOLOCALS=1.
Schedule heuristic_or_none(const Schedule& given) {
  Schedule s;
  if (given.knob_or("NOOPT", 0)) s.knob("NOOPT", 1);
  if (given.knob_or("NOLOCALS", 0)) s.knob("NOLOCALS", 1);
  return s;
}

// The parts of global axes each cut at its points (sorted, distinct, inside the extent):
// one kernel per combination of segments (a rectangle of the iteration space), each axis's
// range running over its segment and its value offset by the segment's start. The
// interior (no axis at its last segment, the tail) gets the schedule's other actions,
// the edges the heuristic. A cut axis that bounds another range's extent would leave
// parts that are not rectangles (a triangular loop): refused.
KernelParts cut_kernel(const UOp& sink,
                       const std::vector<std::pair<UOp, std::vector<int64_t>>>& cuts,
                       const Schedule& rest, const Schedule& given,
                       const std::function<void(int64_t axis, const std::string&)>& refuse_axis) {
  std::vector<std::vector<int64_t>> edges;  // per axis: 0, the points, the extent
  std::vector<UOp> order = toposort(sink);
  for (const auto& [r, points] : cuts) {
    auto refuse = [&](const std::string& why) { refuse_axis(r.axis().id, why); };
    if (r.axis().kind != AxisKind::Global || r.src(0).op() != Op::CONST)
      refuse("needs a global axis of constant extent");
    int64_t n = r.src(0).const_int();
    std::vector<int64_t> at = {0};
    for (int64_t p : points) {
      if (p <= at.back() || p >= n)
        refuse("needs distinct cut points between 0 and the extent " + std::to_string(n));
      at.push_back(p);
    }
    at.push_back(n);
    edges.push_back(std::move(at));
    for (const UOp& u : order)
      if (u.op() == Op::RANGE && u != r) {
        std::vector<UOp> extent = toposort(u.src(0));
        if (std::find(extent.begin(), extent.end(), r) != extent.end())
          refuse("would leave a loop that is not a rectangle: the extent of axis " +
                 std::to_string(u.axis().id) + " depends on the cut axis " +
                 std::to_string(r.axis().id) + " (a triangular iteration space)");
      }
  }
  KernelParts parts;
  std::vector<size_t> seg(cuts.size(), 0);  // the segment of each axis, the last fastest
  for (int part = 0;; ++part) {
    std::map<const void*, std::pair<UOp, UOp>> swap;  // old range -> (value, new range)
    bool interior = true;
    for (size_t a = 0; a < cuts.size(); ++a) {
      const UOp& r = cuts[a].first;
      int64_t start = edges[a][seg[a]], extent = edges[a][seg[a] + 1] - start;
      UOp nr = range(const_int(r.dtype(), extent), r.axis().id, r.axis().kind);
      swap[r.id()] = {start ? nr + const_int(r.dtype(), start) : nr, nr};
      interior = interior && seg[a] + 2 < edges[a].size();
    }
    UOp k = rebuild(
        sink,
        [&](const UOp& u) {
          auto it = swap.find(u.id());
          return it == swap.end() ? UOp() : it->second.first;
        },
        [&](const UOp& u) {
          auto it = swap.find(u.id());
          return std::vector<UOp>{it == swap.end() ? u : it->second.second};
        },
        [](const UOp&, UOp x) { return x; });
    parts.kernels.emplace_back(renamed(k, "_" + std::to_string(part)),
                               interior ? rest : heuristic_or_none(given));
    size_t a = cuts.size();
    while (a > 0 && ++seg[a - 1] + 1 == edges[a - 1].size()) seg[--a] = 0;
    if (a == 0) break;
  }
  return parts;
}

KernelParts split_reduction(const UOp& sink, const UOp& r, const ScheduleEntry& c,
                            const Schedule& rest, const Schedule& given,
                            const std::function<void(const std::string&)>& refuse) {
  if (r.axis().kind != AxisKind::Reduce || r.src(0).op() != Op::CONST)
    refuse("needs a reduce axis of constant extent");
  int64_t total = r.src(0).const_int(), n = c.amount;
  if (n < 2 || n > total) refuse("needs an amount from 2 to the extent " + std::to_string(total));
  std::vector<UOp> order = toposort(sink);
  UOp end_r;
  int64_t slot = 0, id = 0;
  for (const UOp& u : order) {
    if (u.op() == Op::END && std::find(u.src().begin() + 1, u.src().end(), r) != u.src().end()) {
      if (end_r || u.src().size() != 2) refuse("needs a reduce range closed alone by one END");
      end_r = u;
    }
    if (u.op() == Op::PARAM || u.op() == Op::TENSOR_MAP) slot = std::max(slot, u.slot() + 1);
    if (u.op() == Op::RANGE) id = std::max(id, u.axis().id + 1);
  }
  if (!end_r) refuse("needs a reduce range closed by an END");
  std::vector<Update> updates = register_updates(end_r.src(0), refuse);
  // The ranges around the reduction: global ones of constant extent, flattened row-major
  // (by id) into one index of the partials.
  std::vector<UOp> outer;
  for (const UOp& u : toposort(end_r.src(0)))
    if (u.op() == Op::RANGE && u != r) {
      if (u.axis().kind != AxisKind::Global || u.src(0).op() != Op::CONST)
        refuse("needs a reduction inside global axes of constant extent only");
      outer.push_back(u);
    }
  std::sort(outer.begin(), outer.end(),
            [](const UOp& a, const UOp& b) { return a.axis().id < b.axis().id; });
  DType it = r.dtype();
  int64_t m = 1;
  UOp flat = const_int(it, 0);
  for (const UOp& g : outer) {
    int64_t e = g.src(0).const_int();
    flat = flat * const_int(it, e) + (g.dtype() == it ? g : cast(g, it));
    m *= e;
  }
  KernelParts parts;
  std::vector<UOp> temps;
  for (size_t i = 0; i < updates.size(); ++i) {
    DType d = updates[i].reg.dtype().pointee();
    parts.temps.push_back({slot + int64_t(i), d, n * m});
    temps.push_back(param(slot + int64_t(i), d.ptr()));
  }
  // The partials: block s reduces [s*chunk, (s+1)*chunk), clamped to the extent, its
  // accumulator reset for every s, and stores its result at temp[s*m + flat].
  int64_t chunk = (total + n - 1) / n;
  UOp s = range(const_int(it, n), id, AxisKind::Global);
  UOp rp = range(const_int(it, chunk), r.axis().id, AxisKind::Reduce);
  UOp at = s * const_int(it, chunk) + rp;
  UOp valid = n * chunk == total ? UOp() : at < const_int(it, total);
  if (valid) at = UOp::make(Op::MIN, {at, const_int(it, total - 1)});
  auto is_acc = [&](const UOp& b) {
    for (const Update& u : updates)
      if (buffer_root(b) == u.reg) return true;
    return false;
  };
  UOp reduced = rebuild(
      end_r, [&](const UOp& u) { return u == r ? at : UOp(); },
      [&](const UOp& u) { return std::vector<UOp>{u == r ? rp : u}; },
      [&](const UOp& old, UOp x) {
        if (x.op() == Op::AFTER && is_acc(x.src(0)) && old.src().size() > 1 &&
            std::any_of(old.src().begin() + 1, old.src().end(), [&](const UOp& d) {
              return std::find(outer.begin(), outer.end(), d) != outer.end();
            })) {
          std::vector<UOp> src(x.src().begin(), x.src().end());
          src.push_back(s);  // reset for every part
          return UOp::make(Op::AFTER, src, x.arg());
        }
        bool update = std::any_of(updates.begin(), updates.end(),
                                  [&](const Update& u) { return u.store == old; });
        if (update && valid) return with_gate(x, valid);
        return x;
      });
  std::vector<UOp> stores;
  for (size_t i = 0; i < updates.size(); ++i) {
    UOp partial = load(index(after(updates[i].reg, {reduced}), updates[i].k));
    stores.push_back(store(index(temps[i], s * const_int(it, m) + flat), partial));
  }
  std::vector<UOp> closes{
      stores.size() == 1 ? stores[0] : UOp::make(Op::GROUP, dtypes::void_, stores), s};
  closes.insert(closes.end(), outer.begin(), outer.end());
  UOp partial_kernel = UOp::make(Op::SINK, dtypes::void_, {UOp::make(Op::END, closes)},
                                 sink.name_arg() + "_partial");
  // The combine: the kernel itself, its reduction running over the n partials.
  UOp over = range(const_int(it, n), r.axis().id, AxisKind::Reduce);
  UOp combine = rebuild(
      sink,
      [&](const UOp& u) {
        if (u == r) return over;
        for (size_t i = 0; i < updates.size(); ++i)
          if (u == updates[i].x) return load(index(temps[i], over * const_int(it, m) + flat));
        return UOp();
      },
      [&](const UOp& u) { return std::vector<UOp>{u == r ? over : u}; },
      [](const UOp&, UOp x) { return x; });
  parts.kernels.emplace_back(partial_kernel, rest);
  parts.kernels.emplace_back(renamed(combine, "_combine"), heuristic_or_none(given));
  return parts;
}

}  // namespace

std::optional<ScheduleEntry> heuristic_split(const UOp& sink, const Target& target) {
  if (!target.has(kFeatureBlocks)) return std::nullopt;
  UOp r;
  int64_t outputs = 1;
  for (const UOp& u : toposort(sink)) {
    if (u.op() == Op::SPECIAL) return std::nullopt;
    if (u.op() != Op::RANGE) continue;
    if (u.src(0).op() != Op::CONST) return std::nullopt;
    if (u.axis().kind == AxisKind::Reduce) {
      if (r) return std::nullopt;
      r = u;
    } else {
      outputs *= u.src(0).const_int();
    }
  }
  if (!r || outputs != 1 || r.src(0).const_int() < (int64_t(1) << 15)) return std::nullopt;
  int64_t n = 1024;
  while (n > 2 && r.src(0).const_int() / n < 4096) n /= 2;
  return ScheduleEntry{"SPLIT", r.axis().id, n};
}

namespace {

// The parts' own entries (`@P`): a part with any runs those alone, instead of the rule
// for its kind of part (the schedule's other actions or the heuristic).
KernelParts with_part_schedules(KernelParts parts, const std::vector<ScheduleEntry>& own,
                                const std::string& kernel) {
  std::map<int64_t, std::vector<ScheduleEntry>> by_part;
  for (ScheduleEntry e : own) {
    if (*e.part >= int64_t(parts.kernels.size()))
      throw ScheduleError("schedule: " + entry_text(e) + " names part " + std::to_string(*e.part) +
                          " of kernel '" + kernel + "', which its CUTs or SPLIT make " +
                          std::to_string(parts.kernels.size()) + " parts of (0 to " +
                          std::to_string(parts.kernels.size() - 1) + ")");
    if (!e.axis && e.name == "TC")
      throw ScheduleError("schedule: " + entry_text(e) +
                          ": TC routes the whole kernel onto the tile GEMM, not one part");
    int64_t p = *e.part;
    e.part.reset();
    by_part[p].push_back(e);
  }
  for (auto& [p, entries] : by_part) parts.kernels[size_t(p)].second = Schedule(entries);
  return parts;
}

}  // namespace

KernelParts split_kernels(const UOp& sink, const Target& target, const Schedule& schedule) {
  std::vector<ScheduleEntry> rest, splits, own;
  for (const ScheduleEntry& e : schedule.entries()) {
    bool split = e.axis && (e.name == "CUT" || e.name == "SPLIT");
    if (split && e.part)
      throw ScheduleError("schedule: " + entry_text(e) +
                          ": a CUT or SPLIT splits the whole kernel, not one of its parts");
    (split ? splits : e.part ? own : rest).push_back(e);
  }
  if (!own.empty() && splits.empty())
    throw ScheduleError("schedule: " + entry_text(own[0]) + " names a part, but the schedule " +
                        "neither CUTs nor SPLITs kernel '" + sink.name_arg() + "'");
  if (!own.empty()) {
    std::vector<ScheduleEntry> whole = rest;
    whole.insert(whole.end(), splits.begin(), splits.end());
    return with_part_schedules(split_kernels(sink, target, Schedule(whole)), own, sink.name_arg());
  }
  bool any_action = std::any_of(schedule.entries().begin(), schedule.entries().end(), is_action);
  if (splits.empty() && !any_action && !schedule.knob_or("NOOPT", 0))
    if (std::optional<ScheduleEntry> h = heuristic_split(sink, target)) {
      try {
        std::vector<ScheduleEntry> with = schedule.entries();
        with.push_back(*h);
        return split_kernels(sink, target, Schedule(with));
      } catch (const ScheduleError&) {  // not a reduction SPLIT can take: one kernel
      }
    }
  if (splits.empty()) return {{{sink, schedule}}, {}};
  schedule.check_axes(sink);
  const ScheduleEntry& c = splits[0];
  auto refuse = [&](const std::string& why) {
    throw ScheduleError("schedule: " + entry_text(c) + " " + why + " (kernel '" + sink.name_arg() +
                        "')");
  };
  // CUTs cut their axes at each point (of several axes: rectangles); a SPLIT stands alone.
  std::map<int64_t, UOp> ranges;
  for (const UOp& u : toposort(sink))
    if (u.op() == Op::RANGE) ranges.emplace(u.axis().id, u);
  if (c.name == "SPLIT") {
    if (splits.size() > 1) refuse("is one of several CUTs and SPLITs; a SPLIT stands alone");
    return split_reduction(sink, ranges.at(*c.axis), c, Schedule(rest), schedule, refuse);
  }
  std::map<int64_t, std::vector<int64_t>> points;
  for (const ScheduleEntry& e : splits) {
    if (e.name != "CUT") refuse("is one of several CUTs and SPLITs; a SPLIT stands alone");
    points[*e.axis].push_back(e.amount);
  }
  std::vector<std::pair<UOp, std::vector<int64_t>>> cuts;
  for (auto& [axis, at] : points) {
    std::sort(at.begin(), at.end());
    cuts.emplace_back(ranges.at(axis), at);
  }
  // A refusal names the axis's CUTs.
  auto refuse_axis = [&](int64_t axis, const std::string& why) {
    std::vector<ScheduleEntry> of;
    for (const ScheduleEntry& e : splits)
      if (e.axis == axis) of.push_back(e);
    throw ScheduleError("schedule: " + Schedule(of).to_string() + " " + why + " (kernel '" +
                        sink.name_arg() + "')");
  };
  return cut_kernel(sink, cuts, Schedule(rest), schedule, refuse_axis);
}

Schedule heuristic_schedule(const UOp& sink, const Target& target) {
  std::vector<UOp> global, reduce, accesses;
  for (const UOp& u : toposort(sink)) {
    if (u.op() == Op::SPECIAL) return {};  // a kernel that maps its own threads
    if (u.op() == Op::RANGE && u.src(0).op() == Op::CONST) {
      // A global axis of one iteration schedules nothing.
      if (u.axis().kind == AxisKind::Global && u.src(0).const_int() > 1) global.push_back(u);
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
  // The global axes around every reduction (those its loop body depends on).
  std::vector<UOp> outer, ends;  // and the ENDs that close the reductions
  if (!reduce.empty()) {
    std::vector<std::vector<UOp>> bodies;
    for (const UOp& u : toposort(sink))
      if (u.op() == Op::END)
        for (const UOp& r : reduce)
          if (std::find(u.src().begin() + 1, u.src().end(), r) != u.src().end()) {
            bodies.push_back(toposort(u.src(0)));
            ends.push_back(u);
          }
    for (const UOp& g : global)
      if (std::all_of(bodies.begin(), bodies.end(), [&](const std::vector<UOp>& b) {
            return std::find(b.begin(), b.end(), g) != b.end();
          }))
        outer.push_back(g);
  }
  Schedule s;
  bool blocks = target.has(kFeatureBlocks);
  // Register tiles: 8 x 8 on cpu (eight 8-lane accumulators), 4 x 4 per thread on blocks.
  std::vector<int64_t> tile = blocks ? std::vector<int64_t>{4, 2} : std::vector<int64_t>{8, 4, 2};
  if (!reduce.empty() && outer.size() >= 2) {  // matmul-shaped
    const UOp& rows = outer[outer.size() - 2];
    const UOp& cols = outer.back();
    if (int64_t a = largest_dividing(cols, tile)) s.action("UPCAST", cols.axis().id, a);
    if (int64_t a = largest_dividing(rows, tile)) s.action("UPCAST", rows.axis().id, a);
    return s;
  }
  if (!reduce.empty() && outer.size() == 1) {
    bool along_reduce = std::any_of(reduce.begin(), reduce.end(), contiguous);
    // A matrix read along the reduction and contiguous across the outputs (W of x * W, a
    // column sum), with too few outputs to fill the machine one per thread: the block's
    // threads share each reduction (GROUP) and each reads a vector of outputs (UPCAST), so
    // that a warp's loads of a row are contiguous.
    bool matrix = std::any_of(accesses.begin(), accesses.end(), [&](const UOp& i) {
      if (axis_stride(i, outer[0]) != 1) return false;
      for (const UOp& r : reduce)
        if (std::optional<int64_t> st = axis_stride(i, r); !st || *st != 0) return true;
      return false;
    });
    int64_t outputs = outer[0].src(0).const_int();
    if (blocks && matrix && reduce.size() == 1 &&
        outputs < int64_t(target.multiprocessors) * 2048 && reduce[0].src(0).const_int() >= 256) {
      auto refuse = [](const std::string& why) { throw ScheduleError(why); };
      try {
        for (const UOp& e : ends) register_updates(e.src(0), refuse);
        s.action("GROUP", reduce[0].axis().id, 256);
        if (int64_t a = largest_dividing(outer[0], {8, 4, 2})) {
          s.action("UPCAST", outer[0].axis().id, a);
          // Wide enough to leave 1.5 blocks a multiprocessor: two vectors of each row a
          // thread, twice the loads in flight.
          if (outputs / a % 2 == 0 && outputs / a >= 3 * int64_t(target.multiprocessors))
            s.action("UPCAST", outer[0].axis().id, 2);
        }
        return s;
      } catch (const ScheduleError&) {  // not register updates: the rules below
      }
    }
    if (blocks && along_reduce) {
      // Rows read along the reduction: the block's threads share each reduction (GROUP)
      // and split the other global loops inside the row (LOCAL), where the reductions are
      // register updates the GROUP can combine.
      int64_t shortest = INT64_MAX;
      for (const UOp& r : reduce) shortest = std::min(shortest, r.src(0).const_int());
      int64_t a = 256;
      while (a > 32 && a > shortest) a /= 2;
      if (a > shortest) return s;
      // Only where every reduction is register updates the GROUP can combine.
      auto refuse = [](const std::string& why) { throw ScheduleError(why); };
      try {
        for (const UOp& e : ends) register_updates(e.src(0), refuse);
      } catch (const ScheduleError&) {
        return {};
      }
      // Passes over rows of one width e (the reductions and the loops inside the row):
      // where e = v * t * w (t threads, a multiple of 32 up to 256; w at most 4), each
      // thread keeps its part of the row in registers, read v consecutive elements at a
      // time (a vector load) w times over, every pass unrolled whole; the passes' loads
      // are then the same loads, and the row is read once.
      std::vector<UOp> row(reduce);
      for (const UOp& g : global)
        if (g != outer[0]) row.push_back(g);
      int64_t e = reduce[0].src(0).const_int();
      bool one_width = std::all_of(row.begin(), row.end(),
                                   [&](const UOp& r) { return r.src(0).const_int() == e; });
      for (int64_t v : {4, 2, 1})
        for (int64_t t = 256; one_width && t >= 32; t -= 32) {
          if (e % (v * t) || e / (v * t) > 4) continue;
          auto each = [&](int64_t amount, const char* on_reduce, const char* on_global) {
            if (amount > 1)
              for (const UOp& r : row)
                s.action(r.axis().kind == AxisKind::Reduce ? on_reduce : on_global, r.axis().id,
                         amount);
          };
          each(v, "UNROLL", "UPCAST");
          each(t, "GROUP", "LOCAL");
          each(e / (v * t), "UNROLL", "UPCAST");
          return s;
        }
      for (const UOp& r : reduce) s.action("GROUP", r.axis().id, a);
      for (const UOp& g : global)
        if (g != outer[0] && g.src(0).const_int() >= a) s.action("LOCAL", g.axis().id, a);
      return s;
    }
    if (!along_reduce && contiguous(outer[0]))  // contiguous across outputs instead
      if (int64_t a = largest_dividing(outer[0], {8, 4, 2}))
        s.action("UPCAST", outer[0].axis().id, blocks ? std::min<int64_t>(a, 4) : a);
    return s;
  }
  if (reduce.empty() && blocks && !global.empty() && contiguous(global.back()))
    if (int64_t a = largest_dividing(global.back(), {4}))
      s.action("UPCAST", global.back().axis().id, a);
  return s;
}

}  // namespace kitten
