// Host-memory building blocks shared by the backends that run on the host (cpu, emu):
// an allocator of aligned host memory, signals (a value, a mutex and a condition
// variable), queues that run their commands in order on a worker thread, and graphs that
// replay recorded launches as one queued command.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "backends/hcq.h"

namespace kitten {

class HostAllocator : public Allocator {
 public:
  Buffer alloc(size_t bytes) override {
    size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw BackendError("out of memory allocating " + std::to_string(bytes) + " bytes");
    return {p, bytes};
  }
  void free(Buffer b) override { std::free(b.ptr); }
  void copy_in(Buffer dst, const void* src, size_t bytes) override {
    check(dst, bytes);
    std::memcpy(dst.ptr, src, bytes);
  }
  void copy_out(void* dst, Buffer src, size_t bytes) override {
    check(src, bytes);
    std::memcpy(dst, src.ptr, bytes);
  }

 private:
  static void check(Buffer b, size_t bytes) {
    if (bytes > b.bytes)
      throw BackendError("copy of " + std::to_string(bytes) + " bytes into a buffer of " +
                         std::to_string(b.bytes));
  }
};

class HostSignal : public Signal {
 public:
  explicit HostSignal(uint64_t v) : value_(v) {}
  uint64_t value() const override {
    std::lock_guard lock(mu_);
    return value_;
  }
  void set(uint64_t v) override {
    // Notify under the lock: a waiter that sees the new value may destroy the signal at
    // once, so nothing may touch it after the lock is released.
    std::lock_guard lock(mu_);
    value_ = v;
    cv_.notify_all();
  }
  void wait(uint64_t v) override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return value_ >= v; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t value_;
};

class HostQueue : public Queue {
 public:
  HostQueue() : worker_([this] { work(); }) {}
  ~HostQueue() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  using Queue::exec;
  void exec(Program& p, LaunchDims global, LaunchDims local, std::span<const KernelArg> span,
            size_t shared) override {
    pending_.push_back([&p, global, local, args = std::vector<KernelArg>(span.begin(), span.end()),
                        shared] { p.launch(global, local, args, shared); });
  }
  void copy(Buffer dst, Buffer src, size_t bytes) override {
    if (bytes > dst.bytes || bytes > src.bytes)
      throw BackendError("queue: copy of " + std::to_string(bytes) + " bytes between buffers of " +
                         std::to_string(src.bytes) + " and " + std::to_string(dst.bytes));
    pending_.push_back([=] { std::memcpy(dst.ptr, src.ptr, bytes); });
  }
  void signal(Signal& s, uint64_t v) override {
    pending_.push_back([&s, v] { s.set(v); });
  }
  void wait(Signal& s, uint64_t v) override {
    pending_.push_back([&s, v] { s.wait(v); });
  }
  void timestamp(Timestamp& t) override {
    pending_.push_back([&t] {
      t.ns = uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count());
    });
  }
  void enqueue(std::function<void()> f) { pending_.push_back(std::move(f)); }
  void raise_failure() override {
    std::string failure;
    {
      std::lock_guard lock(mu_);
      failure.swap(failure_);
    }
    if (!failure.empty()) throw BackendError("queue: a command failed: " + failure);
  }
  void submit() override {
    {
      std::lock_guard lock(mu_);
      if (!failure_.empty()) throw BackendError("queue: an earlier command failed: " + failure_);
      for (auto& f : pending_) work_.push_back(std::move(f));
    }
    pending_.clear();
    cv_.notify_all();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !work_.empty(); });
        if (work_.empty()) return;
        f = std::move(work_.front());
        work_.pop_front();
      }
      try {
        f();
      } catch (const std::exception& e) {
        std::lock_guard lock(mu_);
        if (failure_.empty()) failure_ = e.what();
      }
    }
  }
  std::vector<std::function<void()>> pending_;  // recorded since the last submit
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> work_;
  std::string failure_;
  bool stop_ = false;
  std::thread worker_;
};

class HostGraph : public Graph {
 public:
  void record(Program& p, LaunchDims global, LaunchDims local,
              std::vector<KernelArg> args) override {
    launches_.push_back({&p, global, local, std::move(args)});
  }
  void update(size_t i, LaunchDims global, std::vector<KernelArg> args) override {
    if (i >= launches_.size()) throw BackendError("graph: no launch " + std::to_string(i));
    launches_[i].global = global;
    launches_[i].args = std::move(args);
  }
  void replay(Queue& q, std::span<const std::pair<Buffer, Buffer>> rebind) override {
    auto* cq = dynamic_cast<HostQueue*>(&q);
    if (!cq) throw BackendError("graph: replay needs a queue of the same kind of device");
    std::vector<Launch> ls = launches_;
    for (Launch& l : ls)
      for (KernelArg& a : l.args) rebind_arg(a, rebind);
    cq->enqueue([ls = std::move(ls)] {
      for (const Launch& l : ls) l.program->launch(l.global, l.local, l.args);
    });
  }

 private:
  struct Launch {
    Program* program;
    LaunchDims global, local;
    std::vector<KernelArg> args;
  };
  std::vector<Launch> launches_;
};

// A device whose memory is host memory and whose queues are host queues (cpu, emu).
class HostDevice : public Device {
 public:
  Allocator& allocator() override { return alloc_; }
  std::unique_ptr<Queue> new_queue() override { return std::make_unique<HostQueue>(); }
  std::unique_ptr<Signal> new_signal(uint64_t initial) override {
    return std::make_unique<HostSignal>(initial);
  }
  std::unique_ptr<Graph> new_graph() override { return std::make_unique<HostGraph>(); }

 private:
  HostAllocator alloc_;
};

}  // namespace kitten
