// The lazy Tensor: every op builds a node of the lazy graph (lazy.h) and checks shapes and
// dtypes at once; nothing runs until realize() (or reading the data), when the scheduler
// fuses the graph into kernels and runs them on the tensor's device (docs/frontend.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "frontend/lazy.h"

namespace kitten {

// A shape or dtype error, raised when the op is built: names the op and both shapes.
struct TensorError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// A DLPack-compatible view of a realized tensor (the fields of DLTensor): data on the
// device named by device_type (1 cpu, 2 cuda), strides in elements, dtype as DLPack's
// (code 0 int, 1 uint, 2 float, 4 bfloat, 6 bool; bits; lanes 1). Valid while the tensor
// that made it lives.
struct DLView {
  void* data = nullptr;
  int32_t device_type = 1, device_id = 0;
  int32_t ndim = 0;
  uint8_t code = 2, bits = 32;
  uint16_t lanes = 1;
  std::vector<int64_t> shape, strides;
  uint64_t byte_offset = 0;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(NodePtr n) : node_(std::move(n)) {}

  // ---- creation -----------------------------------------------------------------------
  // From host bytes holding numel(shape) elements of dtype, row-major.
  static Tensor from_bytes(std::span<const std::byte> bytes, Shape shape, DType dtype,
                           const std::string& device = "cpu");
  // From doubles, each rounded to dtype.
  static Tensor from_doubles(std::span<const double> values, Shape shape,
                             DType dtype = dtypes::float32, const std::string& device = "cpu");
  static Tensor full(Shape shape, double value, DType dtype = dtypes::float32,
                     const std::string& device = "cpu");
  static Tensor zeros(Shape s, DType d = dtypes::float32, const std::string& dev = "cpu") {
    return full(std::move(s), 0, d, dev);
  }
  static Tensor ones(Shape s, DType d = dtypes::float32, const std::string& dev = "cpu") {
    return full(std::move(s), 1, d, dev);
  }
  // start, start + step, ... below stop (above it for a negative step).
  static Tensor arange(double start, double stop, double step = 1, DType dtype = dtypes::int32,
                       const std::string& device = "cpu");
  // Uniform in [0, 1) and standard normal (Box-Muller over two uniforms), from a
  // counter-based hash of (seed, index): a seed gives the same bits for rand on every
  // device. Without a seed, the global one (manual_seed) and a counter per call.
  static Tensor rand(Shape shape, DType dtype = dtypes::float32, const std::string& device = "cpu",
                     std::optional<uint64_t> seed = {});
  static Tensor randn(Shape shape, DType dtype = dtypes::float32, const std::string& device = "cpu",
                      std::optional<uint64_t> seed = {});
  static void manual_seed(uint64_t seed);
  // A bound integer (int32, shape []) in [min, max]: kernels take its value as an argument
  // rather than compiling it in, so graphs built with other values run the same compiled
  // kernels, and a JIT capture given it as an input replays with the value rebound (a
  // KV-cache position). Names a kernel reads must be distinct.
  static Tensor variable(const std::string& name, int64_t value, int64_t min, int64_t max,
                         const std::string& device = "cpu");
  static Tensor from_dlpack(const DLView& v, const std::string& device = "cpu");
  // A tensor reading `storage`, which holds numel(shape) elements of dtype, row-major.
  static Tensor from_storage(std::shared_ptr<Storage> storage, Shape shape, DType dtype);

  // ---- what it is ---------------------------------------------------------------------
  const Shape& shape() const { return node_->shape; }
  int64_t dim(int axis) const;  // negative counts from the end
  int ndim() const { return int(node_->shape.size()); }
  int64_t numel() const { return kitten::numel(node_->shape); }
  DType dtype() const { return node_->dtype; }
  const std::string& device() const { return node_->device; }
  const NodePtr& node() const { return node_; }
  bool defined() const { return bool(node_); }

  // ---- running ------------------------------------------------------------------------
  Tensor& realize();
  // Realizes several tensors in one schedule (shared work computed once).
  static void realize(std::vector<Tensor*> tensors);
  // Realizes and copies to the host the elements of live_shape(), row-major.
  std::vector<std::byte> bytes() const;
  std::vector<double> to_doubles() const;      // every element as a double
  Tensor to(const std::string& device) const;  // an explicit copy (of live_shape())
  DLView dlpack();            // realizes; the view of its buffer (live_shape(), strides of shape())
  Tensor contiguous() const;  // materialised by the next realize

  // ---- element-wise -------------------------------------------------------------------
  Tensor cast(DType d) const;
  Tensor operator-() const;
  Tensor recip() const;
  Tensor sqrt() const;
  Tensor rsqrt() const;
  Tensor exp() const;
  Tensor exp2() const;
  Tensor log() const;
  Tensor log2() const;
  Tensor sin() const;
  Tensor cos() const;
  Tensor tanh() const;
  Tensor erf() const;
  Tensor sigmoid() const;
  Tensor relu() const;
  Tensor gelu(bool tanh_approximation = false) const;
  Tensor silu() const;
  Tensor abs() const;
  Tensor square() const { return *this * *this; }
  Tensor pow(const Tensor& e) const;
  Tensor pow(double e) const;
  Tensor maximum(const Tensor& o) const;
  Tensor minimum(const Tensor& o) const;
  Tensor where(const Tensor& a, const Tensor& b) const;  // this is the condition
  Tensor lt(const Tensor& o) const;
  Tensor le(const Tensor& o) const;
  Tensor gt(const Tensor& o) const;
  Tensor ge(const Tensor& o) const;
  Tensor eq(const Tensor& o) const;
  Tensor ne(const Tensor& o) const;
  Tensor logical_not() const;
  Tensor logical_and(const Tensor& o) const;
  Tensor logical_or(const Tensor& o) const;
  // A scalar of this tensor's dtype (or float32 for an integer tensor and a fractional v).
  Tensor scalar(double v) const;

  // ---- reductions (axes may be negative; empty: all axes) -------------------------------
  Tensor sum(std::vector<int> axes = {}, bool keepdim = false) const;
  Tensor max(std::vector<int> axes = {}, bool keepdim = false) const;
  Tensor min(std::vector<int> axes = {}, bool keepdim = false) const;
  Tensor mean(std::vector<int> axes = {}, bool keepdim = false) const;
  Tensor var(std::vector<int> axes = {}, int64_t correction = 1, bool keepdim = false) const;
  Tensor argmax(int axis, bool keepdim = false) const;  // int32; the first of equal maxima
  Tensor cumsum(int axis) const;
  // The k largest along axis, largest first (ties: the lower index first); indices int32.
  std::pair<Tensor, Tensor> topk(int64_t k, int axis = -1) const;
  Tensor softmax(int axis = -1) const;
  Tensor log_softmax(int axis = -1) const;
  // Over the last weight.ndim() axes (weight and bias optional: undefined tensors).
  Tensor layernorm(const Tensor& weight, const Tensor& bias, double eps = 1e-5) const;
  Tensor rmsnorm(const Tensor& weight, double eps = 1e-6) const;

  // ---- movement: index arithmetic, never a copy ----------------------------------------
  Tensor reshape(Shape s) const;  // one entry may be -1
  Tensor permute(std::vector<int> order) const;
  Tensor transpose(int a = -2, int b = -1) const;
  Tensor expand(Shape s) const;  // -1 keeps an axis
  Tensor pad(std::vector<std::pair<int64_t, int64_t>> before_after) const;
  Tensor shrink(std::vector<std::pair<int64_t, int64_t>> begin_end) const;
  Tensor slice(int axis, int64_t begin, int64_t end) const;
  // `length` elements of `axis` from a bound position (a variable): every value the
  // variable may take must leave the slice inside the axis.
  Tensor slice(int axis, const Tensor& begin, int64_t length) const;
  // The elements [begin, begin + length) of `axis`, where `length` is a bound variable:
  // an axis of variable length (shape() holds the variable's largest value; kernels run
  // over its bound value, which later calls and JIT replays may change without
  // compiling again). Element-wise ops, reductions (over it too), permutes, expands of
  // other axes and reshapes that keep the axis whole carry it; pad, flip, cat, shrink or
  // slice along it are refused, and so are gradients through it (docs/frontend.md).
  Tensor narrow(int axis, int64_t begin, const Tensor& length) const;
  // The length of an axis as an int32 scalar: the variable of a variable axis, else a
  // constant.
  Tensor length(int axis) const;
  // The shape at the bound values of its variable axes (shape() without any).
  Shape live_shape() const;
  Tensor flip(std::vector<int> axes) const;
  Tensor unsqueeze(int axis) const;
  Tensor squeeze(int axis) const;
  Tensor flatten(int start = 0, int end = -1) const;
  static Tensor cat(const std::vector<Tensor>& ts, int axis = 0);
  static Tensor stack(const std::vector<Tensor>& ts, int axis = 0);

  // ---- products and lookups -----------------------------------------------------------
  // (..., m, k) @ (..., k, n) with the batch axes broadcast; 1-D operands as in torch.
  Tensor matmul(const Tensor& o) const;
  // torch.gather: out[..i..] = this[.. index[..i..] along axis ..]; index of this ndim.
  Tensor gather(int axis, const Tensor& index) const;
  // Rows of this (a table) at integer ids: out shape ids.shape + [this.dim(-1)].
  Tensor embedding(const Tensor& ids) const;
  // softmax(q k^T * scale + mask) v over (..., n, d); causal masks above the diagonal
  // aligned at the bottom right; mask: bool (true keeps) or additive float.
  static Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const Tensor& mask = {}, bool causal = false,
                                             std::optional<double> scale = {});

  // ---- autograd (autograd.cpp) --------------------------------------------------------
  // Marks this tensor's node as one whose gradient backward() accumulates.
  Tensor& requires_grad_(bool on = true);
  bool requires_grad() const { return node_->requires_grad; }
  Tensor grad() const;  // undefined until a backward() reached it
  void zero_grad();
  // Accumulates d(this)/d(t) * grad_output into t.grad() for every tensor t below this
  // that requires a gradient; a tensor of one element needs no grad_output (1).
  void backward(const Tensor& grad_output = {}) const;
  Tensor detach() const;  // the same values, with no gradient flowing through

  // ---- in-place writes ----------------------------------------------------------------
  // Writes v (cast to this dtype, of this shape) into this tensor's own buffer (realizing
  // it first if needed): every tensor sharing this node reads the new values. Lazy
  // tensors built from the old values and not realized yet will read the new ones.
  Tensor& assign(const Tensor& v);
  // Several at once: every value is computed (one schedule) before any buffer is written,
  // so values may read the old contents of any target; `also` are realized in the same
  // schedule from the old contents. A target may be a view (slice, reshape, permute, flip)
  // of a tensor: the write lands in that tensor's buffer. Two targets of one call may not
  // lie in the same tensor.
  static void assign(const std::vector<std::pair<Tensor, Tensor>>& target_value,
                     const std::vector<Tensor*>& also = {});

  friend Tensor operator+(const Tensor& a, const Tensor& b);
  friend Tensor operator-(const Tensor& a, const Tensor& b);
  friend Tensor operator*(const Tensor& a, const Tensor& b);
  friend Tensor operator/(const Tensor& a, const Tensor& b);
  friend Tensor operator+(const Tensor& a, double b) { return a + a.scalar(b); }
  friend Tensor operator-(const Tensor& a, double b) { return a - a.scalar(b); }
  friend Tensor operator*(const Tensor& a, double b) { return a * a.scalar(b); }
  friend Tensor operator/(const Tensor& a, double b) { return a / a.scalar(b); }
  friend Tensor operator+(double a, const Tensor& b) { return b.scalar(a) + b; }
  friend Tensor operator-(double a, const Tensor& b) { return b.scalar(a) - b; }
  friend Tensor operator*(double a, const Tensor& b) { return b.scalar(a) * b; }
  friend Tensor operator/(double a, const Tensor& b) { return b.scalar(a) / b; }

 private:
  Tensor alu(Op op, const Tensor& o, const char* what) const;
  Tensor unary(Op op) const;
  Tensor reduce(Op op, std::vector<int> axes, bool keepdim, const char* what) const;
  int axis_of(int axis, const char* what) const;
  NodePtr node_;
};

// While one lives (per thread), the ops built record no gradient path.
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;
  static bool active();
};

// The dtype two operands compute in: floats over integers over bool; the wider float;
// float16 with bfloat16 gives float32.
DType promote(DType a, DType b);
// The dtype an op on `d` computes in on the device: narrow floats in float32.
DType compute_dtype(DType d);

}  // namespace kitten
