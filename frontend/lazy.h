// The lazy graph behind a Tensor: each node is an operation on whole tensors (an ALU op,
// a reduction, a movement op, a source of data), immutable once built and shared by
// every tensor made from it. Movement ops are index arithmetic: they are never copies,
// and the scheduler (schedule.h) turns a graph into kernels that read the realized
// buffers through the composed indices.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/hcq.h"
#include "dsl/ops.h"

namespace kitten {

using Shape = std::vector<int64_t>;

int64_t numel(const Shape& s);
std::string shape_text(const Shape& s);  // "[2, 3]"

// Memory on a device holding one tensor, contiguous and row-major. Freed (to the
// device's cache of free buffers) when the last owner lets go, unless it lies inside a
// `parent` storage (move_into), which then owns the memory.
struct Storage {
  Device* device = nullptr;
  std::string device_name;
  Buffer buffer;
  std::shared_ptr<Storage> parent;
  Storage(Device* d, std::string name, size_t bytes);
  Storage(Device* d, std::string name, Buffer owned);  // takes `owned` (freed with it)
  // Copies the contents to `parent`'s bytes from `offset` and from then on lives there
  // (frees its own memory): every node holding this storage reads the new place.
  void move_into(std::shared_ptr<Storage> parent, size_t offset);
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

enum class NodeKind {
  Buffer,   // data already on the device (storage)
  Const,    // `value` at every index
  Iota,     // the index along axis arg[0]
  Rand,     // uniform [0, 1) from a counter-based hash of (seed arg[0], flat index)
  Alu,      // `op` element-wise over sources of one shape
  Cast,     // to `dtype`, value-converting
  Reduce,   // `op` (ADD or MAX) over the axes set in arg (0/1 per axis), kept as size 1
  Reshape,  // same elements, row-major order
  Permute,  // output axis i is source axis arg[i]
  Expand,   // size-1 axes repeated to `shape`
  Pad,      // arg = (before, after) per axis; zeros outside the source
  Shrink,   // arg = (begin, end) per axis; with src[1] (a Var), begins on axis arg.back()
            // are offset by its value (a slice at a bound position)
  Flip,     // axes with arg[i] != 0 reversed
  Cat,      // sources side by side along axis arg[0]
  Gather,   // src[0] indexed along axis arg[0] by the integer tensor src[1] (its shape)
  Named,    // src[0], under a name (an anchor for kernel substitution)
  Assign,   // writes src[0] into the view src[1] of a realized buffer (a schedule target)
  Var,      // a bound integer `name` (int32, shape []) in [arg[0], arg[1]] of value `value`:
            // kernels read it as an argument, so any value runs the same kernels
};
const char* node_kind_name(NodeKind k);

struct LazyNode;
using NodePtr = std::shared_ptr<const LazyNode>;

struct LazyNode {
  NodeKind kind;
  DType dtype;
  Shape shape;
  std::string device;
  std::vector<NodePtr> src;
  Op op = Op::ADD;                   // Alu, Reduce
  std::vector<int64_t> arg;          // per kind, above
  double value = 0;                  // Const
  std::string name;                  // Named, Var
  std::shared_ptr<Storage> storage;  // Buffer
  // Variable axes: empty, or one entry per axis, a Var node where the axis's length is
  // that bound variable (shape holds its largest value, the buffer's extent; kernels run
  // over the bound value's elements only), null where the length is fixed.
  std::vector<NodePtr> vdims;
  // Set when this node is realized: from then on it reads as a buffer.
  mutable std::shared_ptr<Storage> realized;
  // Autograd (autograd.cpp): gradients flow to nodes that require them, never through a
  // node built under no_grad (or detached); `grad` accumulates over backward() calls.
  bool no_grad = false;
  mutable bool requires_grad = false;
  mutable std::shared_ptr<const LazyNode> grad;
  const std::shared_ptr<Storage>& data() const { return storage ? storage : realized; }
};

// Whether two realized nodes' memory overlaps (the same storage, or parts of one parent's).
bool shares_memory(const LazyNode* a, const LazyNode* b);
// The storage owning a storage's memory (itself unless it lies in a parent) and the byte
// offset of its memory there.
const Storage* memory_root(const Storage* s, size_t* offset = nullptr);

// The device a tensor's kernels run on, opened on first use and kept for the process.
Device& frontend_device(const std::string& name);

}  // namespace kitten
