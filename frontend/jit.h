// JIT capture: a function of tensors, called again with inputs of the same shapes, dtypes
// and device, is captured on its second call (every kernel its realizes queue, with the
// buffers they touch) and from the third on replayed as one HCQ graph: one submission per
// call, the inputs' buffers rebound, fresh buffers for its outputs, the function itself
// not run. Buffers it creates inside are planned once (kept by the capture); buffers it
// writes in place (parameters, optimiser state) are written again by every replay.
//
// What a replay does not redo: host work inside the function (reading a tensor's data,
// creating a tensor from host values: such tensors keep their captured contents) and
// random draws (a replay repeats the captured draw). KITTEN_JIT=0 runs the function every
// call (docs/frontend.md).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "frontend/schedule.h"
#include "frontend/tensor.h"

namespace kitten {

class Jit {
 public:
  using Fn = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;
  explicit Jit(Fn f);
  ~Jit();
  Jit(const Jit&) = delete;
  Jit& operator=(const Jit&) = delete;

  // Runs (or replays) the function; the outputs are realized.
  std::vector<Tensor> operator()(const std::vector<Tensor>& inputs);

  // Whether the last call was a replay, and the kernels its graph launches.
  bool replayed() const { return replayed_; }
  size_t graph_kernels() const;
  // What the last call replayed or captured (null otherwise): its launches and buffers.
  const Capture* capture() const;

 private:
  struct Captured;
  Fn f_;
  bool enabled_ = true, replayed_ = false;
  // Per signature of the inputs (device, dtypes, shapes): calls so far and the capture.
  std::map<std::string, int> calls_;
  std::map<std::string, std::unique_ptr<Captured>> captured_;
  const Captured* last_ = nullptr;
};

}  // namespace kitten
