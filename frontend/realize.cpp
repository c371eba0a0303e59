// Running schedules: the devices the front end opens, their buffers (with a cache of freed
// ones), compiled kernels kept by their graph's key, the memory plan of a realize and the
// HCQ queue its kernels go to.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "backends/registry.h"
#include "frontend/schedule.h"
#include "frontend/tensor.h"

namespace kitten {

namespace {

std::recursive_mutex g_mu;  // the front end's devices, caches and counters
thread_local Capture* g_capture = nullptr;

struct DeviceState {
  std::unique_ptr<Device> device;
  std::multimap<size_t, Buffer> free;  // freed buffers by size, for reuse
  size_t free_bytes = 0;
  std::map<std::pair<uint64_t, uint64_t>, std::unique_ptr<CompiledKernel>> kernels;
  // The queue every realize, copy and replay goes to, and the signal each waits on (a
  // new stream and pinned signal per call cost more than a small step's kernels).
  std::unique_ptr<Queue> queue;
  std::unique_ptr<Signal> done;
  uint64_t done_value = 0;
  Queue& q() {
    if (!queue) queue = device->new_queue();
    return *queue;
  }
  // Submits what was queued and waits until it has run.
  void finish() {
    if (!done) done = device->new_signal(0);
    q().signal(*done, ++done_value);
    queue->submit();
    done->wait(done_value);
    queue->raise_failure();  // a failed kernel is this call's error, not a later one's
  }
};

std::map<std::string, DeviceState>& states() {
  static auto* s = new std::map<std::string, DeviceState>();  // lives past static destructors
  return *s;
}

DeviceState& state(const std::string& name) {
  auto& all = states();
  auto it = all.find(name);
  if (it == all.end()) {
    DeviceState st;
    st.device = open_device(name);
    it = all.emplace(name, std::move(st)).first;
  }
  return it->second;
}

constexpr size_t kMaxCachedBytes = size_t(1) << 30;

int debug_level() {
  const char* e = std::getenv("KITTEN_DEBUG");
  return e ? std::atoi(e) : 0;
}

}  // namespace

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_text(const Shape& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

const char* node_kind_name(NodeKind k) {
  switch (k) {
    case NodeKind::Buffer:
      return "buffer";
    case NodeKind::Const:
      return "const";
    case NodeKind::Iota:
      return "iota";
    case NodeKind::Rand:
      return "rand";
    case NodeKind::Alu:
      return "alu";
    case NodeKind::Cast:
      return "cast";
    case NodeKind::Reduce:
      return "reduce";
    case NodeKind::Reshape:
      return "reshape";
    case NodeKind::Permute:
      return "permute";
    case NodeKind::Expand:
      return "expand";
    case NodeKind::Pad:
      return "pad";
    case NodeKind::Shrink:
      return "shrink";
    case NodeKind::Flip:
      return "flip";
    case NodeKind::Cat:
      return "cat";
    case NodeKind::Gather:
      return "gather";
    case NodeKind::Named:
      return "named";
    case NodeKind::Assign:
      return "assign";
    case NodeKind::Var:
      return "var";
  }
  return "?";
}

Device& frontend_device(const std::string& name) {
  std::lock_guard lock(g_mu);
  return *state(name).device;
}

Storage::Storage(Device* d, std::string name, size_t bytes)
    : device(d), device_name(std::move(name)) {
  std::lock_guard lock(g_mu);
  DeviceState& st = state(device_name);
  if (auto it = st.free.find(bytes); it != st.free.end()) {
    buffer = it->second;
    st.free_bytes -= bytes;
    st.free.erase(it);
    return;
  }
  buffer = d->allocator().alloc(bytes);
  buffer.bytes = bytes;
}

void Storage::move_into(std::shared_ptr<Storage> to, size_t offset) {
  if (to->device != device || offset + buffer.bytes > to->buffer.bytes)
    throw TensorError("storage: moving " + std::to_string(buffer.bytes) + " bytes to offset " +
                      std::to_string(offset) + " of a buffer of " +
                      std::to_string(to->buffer.bytes) + " on another device or too small");
  Buffer there{static_cast<char*>(to->buffer.ptr) + offset, buffer.bytes};
  std::lock_guard lock(g_mu);
  DeviceState& st = state(device_name);
  if (buffer.bytes) st.q().copy(there, buffer, buffer.bytes);
  st.finish();
  if (!parent) {  // this storage's own memory goes to the cache
    Storage old(device, device_name, buffer);
  }
  buffer = there;
  parent = std::move(to);
}

Storage::Storage(Device* d, std::string name, Buffer owned)
    : device(d), device_name(std::move(name)), buffer(owned) {}

Storage::~Storage() {
  if (parent) return;  // the memory is the parent's
  std::lock_guard lock(g_mu);
  DeviceState& st = state(device_name);
  if (st.free_bytes + buffer.bytes > kMaxCachedBytes) {
    device->allocator().free(buffer);
    return;
  }
  st.free.emplace(buffer.bytes, buffer);
  st.free_bytes += buffer.bytes;
}

const Storage* memory_root(const Storage* s, size_t* offset) {
  const Storage* r = s;
  while (r->parent) r = r->parent.get();
  if (offset)
    *offset =
        size_t(static_cast<const char*>(s->buffer.ptr) - static_cast<const char*>(r->buffer.ptr));
  return r;
}

bool shares_memory(const LazyNode* a, const LazyNode* b) {
  const Storage *sa = a->data().get(), *sb = b->data().get();
  if (!sa || !sb) return false;
  if (sa == sb) return true;
  size_t oa = 0, ob = 0;
  if (memory_root(sa, &oa) != memory_root(sb, &ob)) return false;
  return oa < ob + sb->buffer.bytes && ob < oa + sa->buffer.bytes;
}

void Capture::keep(const std::shared_ptr<Storage>& s, bool made_here) {
  if (kept.insert(s.get()).second) {
    storages.push_back(s);
    buffers.push_back(s->buffer);
  }
  if (made_here) made.insert(s->buffer.ptr);
}

CaptureScope::CaptureScope(Capture& c) : previous_(g_capture) { g_capture = &c; }
CaptureScope::~CaptureScope() { g_capture = previous_; }

void replay_graph(const std::string& device, Graph& g,
                  std::span<const std::pair<Buffer, Buffer>> rebind, size_t kernels) {
  std::lock_guard lock(g_mu);
  DeviceState& st = state(device);
  g.replay(st.q(), rebind);
  st.finish();
  ++realize_stats().replays;
  realize_stats().kernels += int64_t(kernels);
}

RealizeStats& realize_stats() {
  static RealizeStats s;
  return s;
}

void realize_nodes(const std::vector<NodePtr>& targets) {
  std::vector<NodePtr> todo;
  for (const NodePtr& t : targets)
    if (t && !t->data()) todo.push_back(t);
  if (todo.empty()) return;
  std::lock_guard lock(g_mu);
  KernelSchedule sched = schedule_nodes(todo);
  const std::string& dev_name = todo[0]->device;
  DeviceState& st = state(dev_name);
  Device& dev = *st.device;
  int debug = debug_level();
  Capture* capture = g_capture;
  if (capture && capture->device.empty()) capture->device = dev_name;
  if (capture && capture->device != dev_name)
    throw TensorError("jit: a captured function runs kernels on " + capture->device + " and " +
                      dev_name);
  bool timed = debug || realize_stats().profile;
  if (debug >= 2) std::cerr << schedule_text(sched);

  // The memory plan: targets get buffers of their own; a materialised intermediate takes
  // a buffer freed by one whose last reader has run (same size), else a new one.
  std::map<const LazyNode*, size_t> last_read;
  for (size_t i = 0; i < sched.items.size(); ++i)
    for (const LazyNode* n : sched.items[i].inputs) last_read[n] = i;
  std::map<const LazyNode*, std::shared_ptr<Storage>> live;
  std::multimap<size_t, std::shared_ptr<Storage>> spare;
  std::unordered_set<const LazyNode*> is_target;
  for (const NodePtr& t : todo) is_target.insert(t.get());
  auto storage_for = [&](const LazyNode* n) {
    size_t bytes = size_t(numel(n->shape)) * size_t(n->dtype.itemsize());
    if (!is_target.count(n))
      if (auto it = spare.find(bytes); it != spare.end()) {
        auto s = it->second;
        spare.erase(it);
        ++realize_stats().reused;
        return s;
      }
    return std::make_shared<Storage>(&dev, dev_name, bytes);
  };

  // Every kernel compiles before any runs: a compile failure leaves all buffers as they
  // were (no assignment half done).
  std::vector<CompiledKernel*> kernels;
  std::vector<std::map<std::string, int64_t>> var_values;  // per kernel, by name
  for (const ScheduleItem& item : sched.items) {
    auto& ck = st.kernels[{item.sink.key().lo, item.sink.key().hi}];
    if (!ck) {
      ck = std::make_unique<CompiledKernel>(compile_kernel(dev, item.sink));
      ++realize_stats().compiled;
    }
    kernels.push_back(ck.get());
    auto& values = var_values.emplace_back();  // (a cached schedule was made for other values)
    for (const LazyNode* v : item.vars)
      if (auto [at, fresh] = values.emplace(v->name, int64_t(v->value));
          !fresh && at->second != int64_t(v->value))
        throw TensorError("realize: one kernel reads the variable " + v->name +
                          " bound to two values");
  }
  Queue* q = &st.q();
  std::vector<std::pair<Timestamp, Timestamp>> times(timed ? sched.items.size() : 0);
  try {
    for (size_t i = 0; i < sched.items.size(); ++i) {
      const ScheduleItem& item = sched.items[i];
      std::vector<KernelArg> args;
      for (const LazyNode* o : item.outputs) {
        // An assignment writes the buffer under its view, in place.
        auto s = o->kind == NodeKind::Assign ? written_buffer(o)->data() : storage_for(o);
        live[o] = s;
        args.push_back(s->buffer);
        if (capture) capture->keep(s, o->kind != NodeKind::Assign);
      }
      for (const LazyNode* n : item.inputs) {
        if (const auto& d = n->data()) {
          args.push_back(d->buffer);
          if (capture) capture->keep(d, false);
        } else {
          auto it = live.find(n);
          if (it == live.end())
            throw TensorError("realize: internal error, an input was not computed");
          args.push_back(it->second->buffer);
        }
      }
      CompiledKernel* ck = kernels[i];
      if (!item.vars.empty()) args = bind_args(ck->rendered.info, std::move(args), var_values[i]);
      if (timed) q->timestamp(times[i].first);
      ck->enqueue(*q, args);
      if (capture) capture->launches.emplace_back(ck, args);
      if (timed) q->timestamp(times[i].second);
      ++realize_stats().kernels;
      // Intermediates whose last reader this was can hold later ones' values.
      for (const LazyNode* n : item.inputs)
        if (last_read[n] == i && !is_target.count(n) && live.count(n)) {
          auto s = live[n];
          live.erase(n);
          spare.emplace(s->buffer.bytes, s);
        }
    }
  } catch (...) {
    st.finish();  // what was queued runs while the buffers it writes live
    throw;
  }
  st.finish();
  ++realize_stats().realizes;
  for (size_t i = 0; timed && i < sched.items.size(); ++i) {
    const ScheduleItem& item = sched.items[i];
    double us = double(times[i].second.ns - times[i].first.ns) / 1e3;
    if (realize_stats().profile) realize_stats().times.emplace_back(item.name, us);
    if (!debug) continue;
    std::fprintf(stderr, "kitten: %-4zu %-28s %-18s %10.2f us\n", i, item.name.c_str(),
                 shape_text(item.shape).c_str(), us);
  }
  for (const NodePtr& t : todo) {
    auto it = live.find(t.get());  // a target with no elements ran no kernel
    t->realized = it != live.end() ? it->second : std::make_shared<Storage>(&dev, dev_name, 0);
  }
}

}  // namespace kitten
