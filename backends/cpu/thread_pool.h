// A fixed pool of worker threads that runs n tasks and waits for them; the calling thread
// takes tasks too. The cpu backend splits a kernel's outermost global range over it.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kitten {

class ThreadPool {
 public:
  explicit ThreadPool(unsigned threads);
  ~ThreadPool();
  unsigned size() const { return unsigned(workers_.size()) + 1; }
  // Runs task(0) .. task(n-1), in any order and in parallel, and returns when all are done.
  // Calls from several threads at once are serialised.
  void run(int64_t n, const std::function<void(int64_t)>& task);

 private:
  void work();
  void drain();
  std::mutex run_mu_;  // one run at a time
  std::mutex mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t next_ = 0, total_ = 0, finished_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace kitten
