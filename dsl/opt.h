// The schedule pass: a Schedule's actions applied to the ranges of a kernel, and the
// heuristic that gives a kernel a schedule when none is given. An action splits one axis:
// its range of extent N becomes an outer range of N / a (keeping the axis id, so a later
// action on the same id splits the remainder) and an inner range of extent a with a new id
// and the action's kind; every use of the old index becomes outer * a + inner, and an END
// or AFTER that named the old range names both. The expander then turns UPCAST and UNROLL
// ranges into copies; grid mapping turns LOCAL ranges into threads.
#pragma once

#include <optional>
#include <utility>
#include <vector>

#include "dsl/schedule.h"
#include "dsl/target.h"
#include "dsl/uop.h"

namespace kitten {

// The actions this pass knows, with the axis kinds they apply to:
//   UPCAST:axis:a  a global axis; a copies computed side by side (registers, vectors)
//   UNROLL:axis:a  a loop, reduce or global axis; a copies run one after another
//   LOCAL:axis:a   a global axis on targets with blocks; a threads of a block
// A schedule that names an unknown action, an axis of the wrong kind, an amount that does
// not divide the extent, or that breaks a limit is refused with ScheduleError naming the
// entry. The limits: more than kMaxCopies copies of a loop's body (the product of the
// UPCAST and UNROLL amounts of its axis and of the axes around it; sibling loops count
// their own), more than kMaxTotalCopies over the innermost loops together, more threads
// than the target's block. Knobs (entries without an axis) are for DSL kernels' builders;
// the knob NOOPT=1 turns the heuristic off.
inline constexpr int64_t kMaxCopies = 256;
inline constexpr int64_t kMaxTotalCopies = 1024;
UOp apply_schedule(const UOp& sink, const Target& target, const Schedule& schedule);

// A buffer the kernels of one lowering share that no caller passes: the runner allocates
// it (`count` elements of `dtype`, `align` bytes) and gives it as parameter `slot`. Where
// `dims` is set (innermost first, with the byte `strides` of the outer dimensions), the
// buffer holds that tensor, and a kernel that takes a tensor map at the slot gets one.
struct TempBuffer {
  int64_t slot;
  DType dtype;
  int64_t count;
  int64_t align = 256;
  std::vector<int64_t> dims = {}, strides = {};
  friend bool operator==(const TempBuffer&, const TempBuffer&) = default;
};

// A caller's buffer that the kernels take as a tensor map at `slot`: the tensor it holds
// (`dims` innermost first, the byte `strides` of the outer dimensions), so that a launch
// given the buffer passes the map where a kernel takes one (a generated product routed onto
// the tile GEMM's Hopper schedule).
struct MapParam {
  int64_t slot;
  std::vector<int64_t> dims, strides;
  friend bool operator==(const MapParam&, const MapParam&) = default;
};

// The kernels a schedule makes of one kernel, to be launched in order with the caller's
// arguments followed by the temporary buffers, each with the schedule its passes apply.
struct KernelParts {
  std::vector<std::pair<UOp, Schedule>> kernels;
  std::vector<TempBuffer> temps;
};

// Without CUT or SPLIT: the kernel and its schedule.
// CUT:axis:at splits a global axis of constant extent N (0 < at < N) into two kernels
// launched one after the other: the first runs indices [0, at) with the schedule's other
// actions, the second [at, N) with the heuristic schedule (or none under NOOPT=1). Each
// part is named <kernel>_0, <kernel>_1. Several CUTs of one axis cut it at each point
// (a concatenation's segments): one kernel per segment, named _0, _1, ..., every one but
// the last with the schedule's other actions. CUTs of several axes cut the iteration space
// into rectangles, one kernel each (the last axis's segments fastest): the interior (no
// axis at its last segment) with the schedule's other actions, the edges with the
// heuristic. A cut of an axis that another range's extent depends on (a triangular loop)
// is refused with that reason.
// SPLIT:axis:n splits a reduction of constant extent N across n blocks: the first kernel
// (<kernel>_partial, with the schedule's other actions) reduces each of the n parts
// [s*ceil(N/n), (s+1)*ceil(N/n)) into a temporary buffer per accumulator; the second
// (<kernel>_combine, heuristic schedule) is the kernel itself with the reduction running
// over those n partials instead. The reduction's loop body must be register updates
// acc = acc OP x (OP one of ADD, MUL, MAX, MIN) and the kernel's only reduction.
// A SPLIT stands alone (no CUT or second SPLIT beside it); a CUT or SPLIT of another kind
// of axis is a ScheduleError.
// Entries of one part (`UPCAST:1:4@2`, ScheduleEntry::part; a SPLIT's partial is part 0,
// its combine part 1): a part with any runs them alone instead of the rule above. Refused:
// a part past the last, parts without a CUT or SPLIT, a CUT, SPLIT or TC of one part.
// A kernel given no actions on a target with blocks whose one reduction makes one value
// of 32,768 terms or more is SPLIT by the heuristic into up to 1,024 parts of at least
// 4,096 terms (one block cannot fill a GPU).
KernelParts split_kernels(const UOp& sink, const Target& target, const Schedule& schedule);

// The SPLIT that split_kernels gives a kernel with no actions on a target with blocks
// whose one reduction makes one value of 32,768 terms or more, or none.
std::optional<ScheduleEntry> heuristic_split(const UOp& sink, const Target& target);

// `s` without the entries that use the block's threads (LOCAL, GROUP, GROUPTOP): what
// NOLOCALS=1 leaves of the heuristic.
Schedule without_threads(const Schedule& s);

// The deterministic schedule a kernel gets when it is given none (see docs/lowering.md):
// a matmul-shaped kernel (a reduce inside two global axes) upcasts its two innermost
// global axes into a register tile; a kernel whose loads are contiguous along a global
// axis but not along its reduce axis upcasts that global axis; on targets with blocks an
// elementwise kernel upcasts its innermost contiguous axis by 4 for vector accesses.
Schedule heuristic_schedule(const UOp& sink, const Target& target);

// `access` (a LOAD, STORE or ATOMIC) with `cond` ANDed into its address's gate.
UOp with_gate(const UOp& access, const UOp& cond);

// The step of `idx` along `r`: idx(r + 1) - idx(r) when the symbolic rules prove it a
// constant, else none.
std::optional<int64_t> axis_stride(const UOp& idx, const UOp& r);

}  // namespace kitten
