// The scheduler: turns the lazy graph below some tensors into kernels (UOp graphs the
// lowering pipeline takes), deciding which nodes are materialised in buffers and which are
// computed inline where they are read; and realize, which runs those kernels on the
// tensors' device through an HCQ queue. The fusion rules are in docs/frontend.md.
#pragma once

#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "frontend/lazy.h"

namespace kitten {

// One kernel of a schedule: its graph, and what each parameter slot holds (the nodes it
// writes, in slots 0..outputs-1, then the nodes it reads).
struct ScheduleItem {
  UOp sink;
  std::string name;
  Shape shape;  // of the outputs
  std::vector<const LazyNode*> outputs, inputs;
  std::vector<const LazyNode*> vars;  // the bound variables it reads (arguments by name)
};

struct KernelSchedule {
  std::vector<ScheduleItem> items;
  std::vector<NodePtr> keep;  // keeps the nodes the items name alive
  // Nodes materialised in buffers by the fusion rules (not targets), with the rule.
  std::vector<std::pair<const LazyNode*, std::string>> splits;
};

// The buffer a target's kernel writes: the realized buffer under an assignment's view,
// else the target itself.
const LazyNode* written_buffer(const LazyNode* target);

// The kernels that compute `targets` (nodes of one device), in order; runs nothing.
// Schedules are kept by the structure of their graph (every node's op, dtype, shape,
// arguments and constants, which nodes are realized, the targets; not the buffers nor the
// values of bound variables): a graph built again, as every training step or forward
// builds one, is not scheduled again.
KernelSchedule schedule_nodes(const std::vector<NodePtr>& targets);
struct ScheduleCacheStats {
  int64_t hits = 0, misses = 0;
};
ScheduleCacheStats& schedule_cache_stats();
// The schedule as text: one line per kernel (name, shape, buffers), then why each split.
std::string schedule_text(const KernelSchedule& s);

// Schedules and runs the kernels of `targets` (those not realized yet) on their device;
// each target then reads as its buffer. KITTEN_DEBUG=1 prints each kernel with its shape
// and time; 2 also prints the schedule.
void realize_nodes(const std::vector<NodePtr>& targets);

// What realize queued while a capture was set on this thread (jit.h): every launch with
// its arguments, every storage they touch (kept alive) with the buffer it had then (a
// storage moved since, by a fused optimiser, is rebound at replay) and which of those the
// captured realizes allocated.
struct Capture {
  std::string device;
  std::vector<std::pair<const CompiledKernel*, std::vector<KernelArg>>> launches;
  std::vector<std::shared_ptr<Storage>> storages;
  std::vector<Buffer> buffers;
  std::unordered_set<const Storage*> kept;
  std::unordered_set<const void*> made;  // buffer addresses
  void keep(const std::shared_ptr<Storage>& s, bool made_here);
};
// Sets the capture of this thread while it lives.
class CaptureScope {
 public:
  explicit CaptureScope(Capture& c);
  ~CaptureScope();
  CaptureScope(const CaptureScope&) = delete;
  CaptureScope& operator=(const CaptureScope&) = delete;

 private:
  Capture* previous_;
};

// Queues `g` (recorded from a capture's launches on `device`) with buffers rebound, as one
// submission, and waits for it; counted as `kernels` launches in realize_stats.
void replay_graph(const std::string& device, Graph& g,
                  std::span<const std::pair<Buffer, Buffer>> rebind, size_t kernels);

// Counters of the kernels realize ran (for tests and `kitten run`).
struct RealizeStats {
  // When `profile` is set, each kernel run appends its name and time (microseconds),
  // synchronising after every kernel.
  bool profile = false;
  std::vector<std::pair<std::string, double>> times;
  int64_t kernels = 0, realizes = 0, compiled = 0, replays = 0;
  int64_t reused = 0;  // intermediates placed in a buffer an earlier one freed
};
RealizeStats& realize_stats();

}  // namespace kitten
