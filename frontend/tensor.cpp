#include "frontend/tensor.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>
#include <tuple>

#include "dsl/float_format.h"
#include "frontend/schedule.h"

namespace kitten {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& why) {
  throw TensorError(what + ": " + why);
}

// The variable axes of node n from its sources' (lazy.h): an op that would read a variable
// axis past its bound length (pad, flip, an offset, a merge with other axes) is refused.
std::vector<NodePtr> variable_axes(const LazyNode& n) {
  bool any = false;
  for (const NodePtr& s : n.src) any = any || !s->vdims.empty();
  if (!any) return {};
  std::vector<NodePtr> out(n.shape.size());
  const char* what = node_kind_name(n.kind);
  auto refuse = [&](const LazyNode& v, const std::string& why) {
    fail(what, "the axis of variable length " + v.name + " " + why);
  };
  auto bound = [](const LazyNode& v) { return v.name + " = " + std::to_string(int64_t(v.value)); };
  auto merge = [&](size_t i, const NodePtr& v) {
    if (!v) return;
    if (out[i] && (out[i]->name != v->name || out[i]->value != v->value || out[i]->arg != v->arg))
      fail(what, "axis " + std::to_string(i) + " has the variable lengths " + bound(*out[i]) +
                     " and " + bound(*v));
    if (!out[i]) out[i] = v;
  };
  const LazyNode& in = *n.src[0];
  auto each = [&](const LazyNode& s, auto f) {
    for (size_t i = 0; i < s.vdims.size(); ++i)
      if (s.vdims[i]) f(i, s.vdims[i]);
  };
  switch (n.kind) {
    case NodeKind::Alu:
    case NodeKind::Cast:
    case NodeKind::Named:
    case NodeKind::Cat:
      for (const NodePtr& s : n.src)
        each(*s, [&](size_t i, const NodePtr& v) {
          if (n.kind == NodeKind::Cat && int64_t(i) == n.arg[0]) refuse(*v, "cannot be joined");
          merge(i, v);
        });
      break;
    case NodeKind::Assign:  // the target view's; a value's must be the same
      each(*n.src[1], [&](size_t i, const NodePtr& v) { merge(i, v); });
      each(in, [&](size_t i, const NodePtr& v) {
        if (!out[i]) refuse(*v, "cannot be written to a fixed axis");
        merge(i, v);
      });
      break;
    case NodeKind::Reduce:
      each(in, [&](size_t i, const NodePtr& v) { out[i] = n.arg[i] ? NodePtr{} : v; });
      break;
    case NodeKind::Permute:
      for (size_t i = 0; i < out.size(); ++i) merge(i, in.vdims[size_t(n.arg[i])]);
      break;
    case NodeKind::Expand:
      each(in, [&](size_t i, const NodePtr& v) {
        if (in.shape[i] != n.shape[i]) refuse(*v, "cannot be expanded");
        out[i] = v;
      });
      break;
    case NodeKind::Reshape:  // kept whole: as many elements before it, and the same size
      each(in, [&](size_t i, const NodePtr& v) {
        int64_t before = 1, at = 1;
        for (size_t k = 0; k < i; ++k) before *= in.shape[k];
        for (size_t j = 0; j < n.shape.size(); at *= n.shape[j++])
          if (at == before && n.shape[j] == in.shape[i]) {
            out[j] = v;
            return;
          }
        refuse(*v, "cannot be merged or split by a reshape to " + shape_text(n.shape));
      });
      break;
    case NodeKind::Pad:
    case NodeKind::Shrink:
    case NodeKind::Flip:
      each(in, [&](size_t i, const NodePtr& v) {
        bool moved = n.kind == NodeKind::Flip ? n.arg[i] != 0
                     : n.kind == NodeKind::Pad
                         ? n.arg[2 * i] || n.arg[2 * i + 1]
                         : n.arg[2 * i] || n.arg[2 * i + 1] != in.shape[i] ||
                               (n.src.size() == 2 && size_t(n.arg.back()) == i);
        if (moved) refuse(*v, std::string("cannot be moved by ") + what);
        out[i] = v;
      });
      break;
    case NodeKind::Gather:
      each(*n.src[1], [&](size_t i, const NodePtr& v) { merge(i, v); });
      each(in, [&](size_t i, const NodePtr& v) {
        if (int64_t(i) == n.arg[0] || n.shape[i] != in.shape[i])
          refuse(*v, "cannot be read by a gather");
        merge(i, v);
      });
      break;
    default:
      break;
  }
  if (std::all_of(out.begin(), out.end(), [](const NodePtr& v) { return !v; })) return {};
  return out;
}

std::shared_ptr<LazyNode> make(NodeKind kind, DType dtype, Shape shape, std::string device,
                               std::vector<NodePtr> src, Op op = Op::ADD,
                               std::vector<int64_t> arg = {}) {
  auto n = std::make_shared<LazyNode>();
  n->kind = kind;
  n->dtype = dtype;
  n->shape = std::move(shape);
  n->device = std::move(device);
  n->src = std::move(src);
  n->op = op;
  n->arg = std::move(arg);
  n->no_grad = NoGrad::active();
  n->vdims = variable_axes(*n);
  return n;
}

NodePtr const_node(double v, DType d, Shape shape, std::string device) {
  auto n = make(NodeKind::Const, d, std::move(shape), device, {});
  n->value = d.is_float() ? v : d == dtypes::bool_ ? double(v != 0) : std::trunc(v);
  return n;
}

void check_dtype(DType d, const char* what) {
  if (!d.is_value() || d.is_vector() || d == dtypes::void_)
    fail(what, "no tensors of dtype " + std::string(d.name()));
}

// The value of element i of host bytes of dtype d, and its encoding.
double read_value(const std::byte* p, DType d) {
  if (const FloatFormat* f = d.narrow_float()) {
    uint32_t code = 0;
    std::memcpy(&code, p, size_t(d.itemsize()));
    return decode_float(*f, code);
  }
  auto get = [&]<class T>(T) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return double(v);
  };
  if (d == dtypes::float32) return get(float{});
  if (d == dtypes::float64) return get(double{});
  if (d == dtypes::bool_) return double(std::to_integer<int>(*p) != 0);
  if (d == dtypes::int8) return get(int8_t{});
  if (d == dtypes::int16) return get(int16_t{});
  if (d == dtypes::int32) return get(int32_t{});
  if (d == dtypes::int64) return get(int64_t{});
  if (d == dtypes::uint8) return get(uint8_t{});
  if (d == dtypes::uint16) return get(uint16_t{});
  if (d == dtypes::uint32) return get(uint32_t{});
  if (d == dtypes::uint64) return get(uint64_t{});
  throw TensorError("no host values of dtype " + std::string(d.name()));
}

void write_value(std::byte* p, DType d, double x) {
  if (const FloatFormat* f = d.narrow_float()) {
    uint32_t code = encode_float(*f, x);
    std::memcpy(p, &code, size_t(d.itemsize()));
    return;
  }
  auto put = [&]<class T>(T v) { std::memcpy(p, &v, sizeof(T)); };
  if (d == dtypes::float32) return put(float(x));
  if (d == dtypes::float64) return put(x);
  if (d == dtypes::bool_) return put(uint8_t(x != 0));
  if (d == dtypes::int8) return put(int8_t(x));
  if (d == dtypes::int16) return put(int16_t(x));
  if (d == dtypes::int32) return put(int32_t(x));
  if (d == dtypes::int64) return put(int64_t(x));
  if (d == dtypes::uint8) return put(uint8_t(x));
  if (d == dtypes::uint16) return put(uint16_t(x));
  if (d == dtypes::uint32) return put(uint32_t(x));
  if (d == dtypes::uint64) return put(uint64_t(x));
  throw TensorError("no host values of dtype " + std::string(d.name()));
}

// Shapes a and b broadcast (aligned at the right): the result, or a TensorError naming both.
Shape broadcast_shape(const Shape& a, const Shape& b, const char* what) {
  Shape out(std::max(a.size(), b.size()));
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t x = i < a.size() ? a[a.size() - 1 - i] : 1, y = i < b.size() ? b[b.size() - 1 - i] : 1;
    if (x != y && x != 1 && y != 1)
      fail(what, "shapes " + shape_text(a) + " and " + shape_text(b) + " do not broadcast");
    out[out.size() - 1 - i] = x == 1 ? y : x;
  }
  return out;
}

Tensor broadcast_to(const Tensor& t, const Shape& s) {
  if (t.shape() == s) return t;
  Shape padded(s.size() - t.shape().size(), 1);
  padded.insert(padded.end(), t.shape().begin(), t.shape().end());
  return t.reshape(padded).expand(s);
}

uint64_t g_seed = 0, g_counter = 0;

uint64_t next_seed(std::optional<uint64_t> seed) {
  if (seed) return *seed;
  uint64_t s = g_seed ^ (0x9E3779B97F4A7C15ull * ++g_counter);
  return s ^ (s >> 29);
}

// `src` under a name: the value itself (contiguous, detach, attention's anchor).
Tensor named(const NodePtr& src, std::string name) {
  auto n = make(NodeKind::Named, src->dtype, src->shape, src->device, {src});
  n->name = std::move(name);
  return Tensor(n);
}

// DLPack's (type code, bits) of a dtype: 0 int, 1 uint, 2 float, 4 bfloat, 6 bool.
std::pair<uint8_t, uint8_t> dlpack_code(DType d) {
  uint8_t code = d == dtypes::bool_      ? 6
                 : d == dtypes::bfloat16 ? 4
                 : d.is_float()          ? 2
                 : d.is_unsigned()       ? 1
                                         : 0;
  return {code, uint8_t(d.bits())};
}

}  // namespace

DType promote(DType a, DType b) {
  if (a == b) return a;
  if (a.is_float() != b.is_float()) return a.is_float() ? a : b;
  if (a.is_float()) {
    if (a.bits() != b.bits()) return a.bits() > b.bits() ? a : b;
    return dtypes::float32;  // float16 with bfloat16, or two float8s
  }
  if (a == dtypes::bool_) return b;
  if (b == dtypes::bool_) return a;
  if (a.bits() != b.bits()) return a.bits() > b.bits() ? a : b;
  return a.is_unsigned() ? b : a;
}

DType compute_dtype(DType d) { return d.narrow_float() ? dtypes::float32 : d; }

// ---- creation ---------------------------------------------------------------------------

Tensor Tensor::from_bytes(std::span<const std::byte> bytes, Shape shape, DType dtype,
                          const std::string& device) {
  check_dtype(dtype, "from_bytes");
  for (int64_t d : shape)
    if (d < 0) fail("from_bytes", "negative size in shape " + shape_text(shape));
  size_t want = size_t(kitten::numel(shape)) * size_t(dtype.itemsize());
  if (bytes.size() != want)
    fail("from_bytes", std::to_string(bytes.size()) + " bytes for shape " + shape_text(shape) +
                           " of " + std::string(dtype.name()) + ", which takes " +
                           std::to_string(want));
  Device& dev = frontend_device(device);
  auto st = std::make_shared<Storage>(&dev, device, want);
  if (want) dev.allocator().copy_in(st->buffer, bytes.data(), want);
  auto n = make(NodeKind::Buffer, dtype, shape, device, {});
  n->storage = std::move(st);
  return Tensor(n);
}

Tensor Tensor::variable(const std::string& name, int64_t value, int64_t min, int64_t max,
                        const std::string& device) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_') ||
      !std::all_of(name.begin(), name.end(),
                   [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }))
    fail("variable", "the name '" + name + "' is not an identifier");
  if (min > max || value < min || value > max || min < INT32_MIN || max > INT32_MAX)
    fail("variable", name + " = " + std::to_string(value) + " outside [" + std::to_string(min) +
                         ", " + std::to_string(max) + "] (an int32 range)");
  frontend_device(device);  // a clear error for a device that does not open
  auto n = make(NodeKind::Var, dtypes::int32, {}, device, {}, Op::ADD, {min, max});
  n->name = name;
  n->value = double(value);
  return Tensor(n);
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, Shape shape, DType dtype) {
  size_t want = size_t(kitten::numel(shape)) * size_t(dtype.itemsize());
  if (!storage || storage->buffer.bytes < want)
    fail("from_storage", "a buffer of " + std::to_string(storage ? storage->buffer.bytes : 0) +
                             " bytes for shape " + shape_text(shape) + " of " +
                             std::string(dtype.name()));
  std::string device = storage->device_name;
  auto n = make(NodeKind::Buffer, dtype, std::move(shape), device, {});
  n->storage = std::move(storage);
  return Tensor(n);
}

Tensor Tensor::from_doubles(std::span<const double> values, Shape shape, DType dtype,
                            const std::string& device) {
  check_dtype(dtype, "from_doubles");
  if (int64_t(values.size()) != kitten::numel(shape))
    fail("from_doubles", std::to_string(values.size()) + " values for shape " + shape_text(shape));
  std::vector<std::byte> bytes(values.size() * size_t(dtype.itemsize()));
  for (size_t i = 0; i < values.size(); ++i)
    write_value(bytes.data() + i * size_t(dtype.itemsize()), dtype, values[i]);
  return from_bytes(bytes, std::move(shape), dtype, device);
}

Tensor Tensor::full(Shape shape, double value, DType dtype, const std::string& device) {
  check_dtype(dtype, "full");
  for (int64_t d : shape)
    if (d < 0) fail("full", "negative size in shape " + shape_text(shape));
  frontend_device(device);
  return Tensor(const_node(value, dtype, std::move(shape), device));
}

Tensor Tensor::arange(double start, double stop, double step, DType dtype,
                      const std::string& device) {
  if (step == 0) fail("arange", "step is 0");
  int64_t n = std::max<int64_t>(0, int64_t(std::ceil((stop - start) / step)));
  frontend_device(device);
  Tensor i(make(NodeKind::Iota, dtypes::int32, {n}, device, {}, Op::ADD, {0}));
  if (!dtype.is_float()) return (i * int64_t(step) + int64_t(start)).cast(dtype);
  return i.cast(dtype) * step + start;
}

void Tensor::manual_seed(uint64_t seed) {
  g_seed = seed;
  g_counter = 0;
}

Tensor Tensor::rand(Shape shape, DType dtype, const std::string& device,
                    std::optional<uint64_t> seed) {
  check_dtype(dtype, "rand");
  if (!dtype.is_float()) fail("rand", "dtype " + std::string(dtype.name()) + " is not a float");
  frontend_device(device);
  uint64_t s = next_seed(seed);
  Tensor u(make(NodeKind::Rand, dtypes::float32, std::move(shape), device, {}, Op::ADD,
                {int64_t(s & 0xFFFFFFFF), int64_t(s >> 32)}));
  return u.cast(dtype);
}

Tensor Tensor::randn(Shape shape, DType dtype, const std::string& device,
                     std::optional<uint64_t> seed) {
  uint64_t s = next_seed(seed);
  Tensor u1 = rand(shape, dtypes::float32, device, s);
  Tensor u2 = rand(shape, dtypes::float32, device, s ^ 0xA5A5A5A55A5A5A5Aull);
  Tensor r = ((1.0 - u1).log() * -2.0).sqrt();
  return (r * (u2 * (2 * M_PI)).cos()).cast(dtype);
}

Tensor Tensor::from_dlpack(const DLView& v, const std::string& device) {
  if (v.device_type != 1) fail("from_dlpack", "only host (cpu) memory can be read");
  if (v.lanes != 1) fail("from_dlpack", "vector lanes are not supported");
  DType d;
  for (DType c : dtypes::kScalars)  // float8 has no code of its own here
    if (!(c.is_float() && c.bits() == 8) && dlpack_code(c) == std::pair{v.code, v.bits}) d = c;
  if (d == dtypes::void_)
    fail("from_dlpack",
         "unsupported dtype code " + std::to_string(v.code) + " bits " + std::to_string(v.bits));
  Shape shape(v.shape.begin(), v.shape.end());
  int64_t n = kitten::numel(shape), item = d.itemsize();
  std::vector<std::byte> out(size_t(n * item));
  const auto* base = static_cast<const std::byte*>(v.data) + v.byte_offset;
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i, off = 0;
    for (int a = int(shape.size()) - 1; a >= 0; --a) {
      int64_t stride = v.strides.empty() ? 0 : v.strides[size_t(a)];
      if (v.strides.empty()) {  // compact row-major
        stride = 1;
        for (size_t b = size_t(a) + 1; b < shape.size(); ++b) stride *= shape[b];
      }
      off += (rest % shape[size_t(a)]) * stride;
      rest /= shape[size_t(a)];
    }
    std::memcpy(out.data() + i * item, base + off * item, size_t(item));
  }
  return from_bytes(out, shape, d, device);
}

// ---- what it is and running -----------------------------------------------------------

int64_t Tensor::dim(int axis) const { return shape()[size_t(axis_of(axis, "dim"))]; }

int Tensor::axis_of(int axis, const char* what) const {
  int n = ndim();
  if (axis < -n || axis >= std::max(n, 1))
    fail(what,
         "axis " + std::to_string(axis) + " is out of range for shape " + shape_text(shape()));
  return axis < 0 ? axis + n : axis;
}

Tensor& Tensor::realize() {
  realize_nodes({node_});
  return *this;
}

void Tensor::realize(std::vector<Tensor*> tensors) {
  std::vector<NodePtr> nodes;
  for (Tensor* t : tensors) nodes.push_back(t->node_);
  realize_nodes(nodes);
}

Shape Tensor::live_shape() const {
  Shape s = shape();
  for (size_t i = 0; i < node_->vdims.size(); ++i)
    if (node_->vdims[i]) s[i] = int64_t(node_->vdims[i]->value);
  return s;
}

std::vector<std::byte> Tensor::bytes() const {
  realize_nodes({node_});
  size_t item = size_t(dtype().itemsize());
  std::vector<std::byte> all(size_t(numel()) * item);
  const auto& st = node_->data();
  if (!all.empty()) st->device->allocator().copy_out(all.data(), st->buffer, all.size());
  Shape live = live_shape();
  if (live == shape()) return all;
  // The bound elements of the buffer's (largest) extents, row-major.
  std::vector<std::byte> out(size_t(kitten::numel(live)) * item);
  for (int64_t i = 0; i < kitten::numel(live); ++i) {
    int64_t rest = i, at = 0, stride = 1;
    for (size_t a = live.size(); a-- > 0;) {
      at += rest % live[a] * stride;
      rest /= live[a];
      stride *= shape()[a];
    }
    std::memcpy(out.data() + size_t(i) * item, all.data() + size_t(at) * item, item);
  }
  return out;
}

std::vector<double> Tensor::to_doubles() const {
  std::vector<std::byte> b = bytes();
  std::vector<double> out(b.size() / size_t(dtype().itemsize()));
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = read_value(b.data() + i * size_t(dtype().itemsize()), dtype());
  return out;
}

Tensor Tensor::to(const std::string& device) const {
  if (device == this->device()) return *this;
  return from_bytes(bytes(), live_shape(), dtype(), device);
}

DLView Tensor::dlpack() {
  realize();
  DLView v;
  v.data = node_->data()->buffer.ptr;
  v.device_type = device() == "cuda" ? 2 : 1;
  v.ndim = ndim();
  v.shape = live_shape();
  v.strides.resize(shape().size());
  int64_t stride = 1;
  for (int a = ndim() - 1; a >= 0; --a) {
    v.strides[size_t(a)] = stride;
    stride *= shape()[size_t(a)];
  }
  std::tie(v.code, v.bits) = dlpack_code(dtype());
  return v;
}

Tensor& Tensor::assign(const Tensor& v) {
  assign({{*this, v}});
  return *this;
}

void Tensor::assign(const std::vector<std::pair<Tensor, Tensor>>& pairs,
                    const std::vector<Tensor*>& also) {
  std::vector<NodePtr> writes, bases;
  for (const auto& [t, v] : pairs) {
    if (!t.defined() || !v.defined()) throw TensorError("assign: an undefined tensor");
    if (t.shape() != v.shape())
      fail("assign", "a value of shape " + shape_text(v.shape()) + " into a tensor of shape " +
                         shape_text(t.shape()));
    if (t.device() != v.device())
      fail("assign", "a value on " + v.device() + " into a tensor on " + t.device());
    // The tensor whose memory the view lies in (realized first when it is lazy).
    NodePtr base = t.node_;
    while (!base->data() && (base->kind == NodeKind::Reshape || base->kind == NodeKind::Permute ||
                             base->kind == NodeKind::Shrink || base->kind == NodeKind::Flip ||
                             (base->kind == NodeKind::Named && base->name != "contiguous")))
      base = base->src[0];  // (detach() reads its source: a write to it writes the source)
    if (base->kind == NodeKind::Expand || base->kind == NodeKind::Pad)
      fail("assign", std::string("cannot write through a view made by ") +
                         node_kind_name(base->kind) + " (of shape " + shape_text(base->shape) +
                         "): its elements are not each one element of a buffer");
    for (const NodePtr& b : bases)
      if (b == base)
        fail("assign",
             "two targets in one call write the same tensor of shape " + shape_text(base->shape));
    bases.push_back(base);
  }
  realize_nodes(bases);
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& [t, v] = pairs[i];
    Tensor value = v.cast(t.dtype());
    if (value.node_ == t.node_) continue;
    // A value that is a buffer over a target's memory (a.flip().assign(a)) cannot be
    // computed first by the scheduler: it is copied first.
    if (value.node_->data())
      for (const NodePtr& b : bases)
        if (shares_memory(value.node_.get(), b.get())) {
          value = value.contiguous();
          break;
        }
    auto w = make(NodeKind::Assign, t.dtype(), t.shape(), t.device(), {value.node_, t.node_});
    w->no_grad = true;
    writes.push_back(w);
  }
  for (Tensor* t : also) writes.push_back(t->node_);
  realize_nodes(writes);
}

Tensor Tensor::contiguous() const { return named(node_, "contiguous"); }

Tensor Tensor::detach() const {
  Tensor t = named(node_, "detach");
  std::const_pointer_cast<LazyNode>(t.node_)->no_grad = true;
  return t;
}

// ---- element-wise -----------------------------------------------------------------------

Tensor Tensor::scalar(double v) const {
  DType d = dtype();
  if (!d.is_float() && v != std::trunc(v)) d = dtypes::float32;
  if (d == dtypes::bool_ && v != 0 && v != 1) d = dtypes::float32;
  return Tensor(const_node(v, d, {}, device()));
}

Tensor Tensor::alu(Op op, const Tensor& o, const char* what) const {
  if (!defined() || !o.defined()) fail(what, "an operand is an undefined tensor");
  if (device() != o.device())
    fail(what, "operands on " + device() + " and " + o.device() + " (copy one with .to())");
  Shape s = broadcast_shape(shape(), o.shape(), what);
  DType d = promote(dtype(), o.dtype());
  bool compare = op == Op::CMPLT || op == Op::CMPEQ || op == Op::CMPNE;
  Tensor a = broadcast_to(cast(d), s), b = broadcast_to(o.cast(d), s);
  if ((op == Op::AND || op == Op::OR || op == Op::XOR) && d.is_float())
    fail(what, "bit operations need integer or bool operands, not " + std::string(d.name()));
  return Tensor(
      make(NodeKind::Alu, compare ? dtypes::bool_ : d, s, device(), {a.node_, b.node_}, op));
}

Tensor Tensor::unary(Op op) const {
  DType d = dtype().is_float() ? dtype() : dtypes::float32;
  Tensor x = cast(d);
  return Tensor(make(NodeKind::Alu, d, shape(), device(), {x.node_}, op));
}

Tensor operator+(const Tensor& a, const Tensor& b) { return a.alu(Op::ADD, b, "add"); }
Tensor operator-(const Tensor& a, const Tensor& b) { return a.alu(Op::SUB, b, "sub"); }
Tensor operator*(const Tensor& a, const Tensor& b) { return a.alu(Op::MUL, b, "mul"); }
Tensor operator/(const Tensor& a, const Tensor& b) {
  DType d = promote(a.dtype(), b.dtype());
  if (!d.is_float()) return a.cast(dtypes::float32) / b.cast(dtypes::float32);
  return a.alu(Op::FDIV, b, "div");
}

Tensor Tensor::cast(DType d) const {
  check_dtype(d, "cast");
  if (d == dtype()) return *this;
  return Tensor(make(NodeKind::Cast, d, shape(), device(), {node_}));
}

Tensor Tensor::operator-() const {
  if (dtype() == dtypes::bool_) fail("neg", "negation of a bool tensor (use logical_not)");
  return Tensor(make(NodeKind::Alu, dtype(), shape(), device(), {node_}, Op::NEG));
}
Tensor Tensor::recip() const { return unary(Op::RECIP); }
Tensor Tensor::sqrt() const { return unary(Op::SQRT); }
Tensor Tensor::rsqrt() const { return sqrt().recip(); }
Tensor Tensor::exp2() const { return unary(Op::EXP2); }
Tensor Tensor::log2() const { return unary(Op::LOG2); }
Tensor Tensor::exp() const {
  return (cast(dtype().is_float() ? dtype() : dtypes::float32) * M_LOG2E).exp2();
}
Tensor Tensor::log() const { return log2() * M_LN2; }
Tensor Tensor::sin() const { return unary(Op::SIN); }
Tensor Tensor::cos() const {
  return (cast(dtype().is_float() ? dtype() : dtypes::float32) + M_PI_2).sin();
}
Tensor Tensor::sigmoid() const { return (1.0 + (-*this).exp()).recip(); }
Tensor Tensor::relu() const { return maximum(scalar(0)); }
Tensor Tensor::silu() const { return *this * sigmoid(); }
Tensor Tensor::abs() const { return lt(scalar(0)).where(-*this, *this); }

Tensor Tensor::tanh() const {
  // Small |x|: Lambert's continued fraction (no cancellation); else (1 - e)/(1 + e) with
  // e = exp(-2|x|), the sign restored.
  Tensor x = cast(dtype().is_float() ? dtype() : dtypes::float32), x2 = x * x;
  Tensor cf = x.scalar(17);
  for (int k = 15; k >= 1; k -= 2) cf = x2 / cf + double(k);
  Tensor small = x / cf;
  Tensor e = (x.abs() * -2.0).exp(), big = (1.0 - e) / (1.0 + e);
  return x.abs().lt(x.scalar(0.625)).where(small, x.lt(x.scalar(0)).where(-big, big));
}

Tensor Tensor::erf() const {
  // |x| < 0.5: the Taylor series; else 1 - erfc with Numerical Recipes' erfc (fractional
  // error below 1.2e-7), the sign restored.
  Tensor x = cast(dtype().is_float() ? dtype() : dtypes::float32), x2 = x * x;
  static const double taylor[] = {1,         -1.0 / 3,    1.0 / 10,  -1.0 / 42,
                                  1.0 / 216, -1.0 / 1320, 1.0 / 9360};
  Tensor series = x.scalar(taylor[6]);
  for (int i = 5; i >= 0; --i) series = series * x2 + taylor[i];
  series = series * x * M_2_SQRTPI;
  Tensor z = x.abs(), t = (1.0 + z * 0.5).recip();
  static const double c[] = {-1.26551223, 1.00002368,  0.37409196, 0.09678418,  -0.18628806,
                             0.27886807,  -1.13520398, 1.48851587, -0.82215223, 0.17087277};
  Tensor poly = x.scalar(c[9]);
  for (int i = 8; i >= 0; --i) poly = poly * t + c[i];
  Tensor erfc = t * (poly - z * z).exp(), big = 1.0 - erfc;
  return z.lt(x.scalar(0.5)).where(series, x.lt(x.scalar(0)).where(-big, big));
}

Tensor Tensor::gelu(bool tanh_approximation) const {
  if (tanh_approximation)
    return *this * 0.5 *
           (1.0 + ((*this + *this * *this * *this * 0.044715) * std::sqrt(2 / M_PI)).tanh());
  return *this * 0.5 * (1.0 + (*this * M_SQRT1_2).erf());
}

Tensor Tensor::pow(const Tensor& e) const {
  Tensor x =
      cast(promote(dtype(), e.dtype()).is_float() ? promote(dtype(), e.dtype()) : dtypes::float32);
  Tensor ex = e.cast(x.dtype());
  Tensor base = (ex * x.abs().log2()).exp2();
  Tensor is_int = ex.unary(Op::TRUNC).eq(ex), odd = ((ex * 0.5).unary(Op::TRUNC) * 2.0).ne(ex);
  Tensor neg = is_int.where(odd.where(-base, base), x.scalar(NAN));
  return ex.eq(x.scalar(0)).where(x.scalar(1), x.lt(x.scalar(0)).where(neg, base));
}

Tensor Tensor::pow(double e) const {
  if (e == 1) return *this;
  if (e == 2) return *this * *this;
  if (e == 3) return *this * *this * *this;
  if (e == 0.5) return sqrt();
  if (e == -1) return recip();
  return pow(scalar(e));
}

Tensor Tensor::maximum(const Tensor& o) const { return alu(Op::MAX, o, "maximum"); }
Tensor Tensor::minimum(const Tensor& o) const { return alu(Op::MIN, o, "minimum"); }
Tensor Tensor::lt(const Tensor& o) const { return alu(Op::CMPLT, o, "lt"); }
Tensor Tensor::gt(const Tensor& o) const { return o.alu(Op::CMPLT, *this, "gt"); }
Tensor Tensor::le(const Tensor& o) const { return lt(o).logical_or(eq(o)); }
Tensor Tensor::ge(const Tensor& o) const { return gt(o).logical_or(eq(o)); }
Tensor Tensor::eq(const Tensor& o) const { return alu(Op::CMPEQ, o, "eq"); }
Tensor Tensor::ne(const Tensor& o) const { return alu(Op::CMPNE, o, "ne"); }
Tensor Tensor::logical_not() const {
  return cast(dtypes::bool_).eq(Tensor::full({}, 0, dtypes::bool_, device()));
}
Tensor Tensor::logical_and(const Tensor& o) const {
  return cast(dtypes::bool_).alu(Op::AND, o.cast(dtypes::bool_), "logical_and");
}
Tensor Tensor::logical_or(const Tensor& o) const {
  return cast(dtypes::bool_).alu(Op::OR, o.cast(dtypes::bool_), "logical_or");
}

Tensor Tensor::where(const Tensor& a, const Tensor& b) const {
  if (device() != a.device() || device() != b.device())
    fail("where", "operands on different devices (copy with .to())");
  Shape s = broadcast_shape(broadcast_shape(shape(), a.shape(), "where"), b.shape(), "where");
  DType d = promote(a.dtype(), b.dtype());
  Tensor c = broadcast_to(cast(dtypes::bool_), s);
  return Tensor(make(NodeKind::Alu, d, s, device(),
                     {c.node_, broadcast_to(a.cast(d), s).node_, broadcast_to(b.cast(d), s).node_},
                     Op::WHERE));
}

// ---- reductions -------------------------------------------------------------------------

Tensor Tensor::reduce(Op op, std::vector<int> axes, bool keepdim, const char* what) const {
  std::vector<int64_t> mask(shape().size(), 0);
  if (axes.empty()) std::fill(mask.begin(), mask.end(), 1);
  for (int a : axes) {
    int ax = axis_of(a, what);
    if (mask[size_t(ax)]) fail(what, "axis " + std::to_string(a) + " named twice");
    mask[size_t(ax)] = 1;
  }
  Shape kept = shape();
  for (size_t i = 0; i < kept.size(); ++i)
    if (mask[i]) kept[i] = 1;
  for (size_t i = 0; i < mask.size(); ++i)
    if (mask[i] && shape()[i] == 0 && op == Op::MAX)
      fail(what, "reduction of an empty axis " + std::to_string(i) + " of shape " +
                     shape_text(shape()) + " has no identity");
  DType d = dtype() == dtypes::bool_ && op == Op::ADD ? dtypes::int32 : dtype();
  Tensor r(make(NodeKind::Reduce, d, kept, device(), {cast(d).node_}, op, mask));
  if (keepdim) return r;
  Shape out;
  for (size_t i = 0; i < kept.size(); ++i)
    if (!mask[i]) out.push_back(kept[i]);
  return r.reshape(out);
}

Tensor Tensor::sum(std::vector<int> axes, bool keepdim) const {
  return reduce(Op::ADD, std::move(axes), keepdim, "sum");
}
Tensor Tensor::max(std::vector<int> axes, bool keepdim) const {
  return reduce(Op::MAX, std::move(axes), keepdim, "max");
}
Tensor Tensor::min(std::vector<int> axes, bool keepdim) const {
  if (dtype() == dtypes::bool_) return cast(dtypes::int32).min(axes, keepdim).cast(dtypes::bool_);
  return -(-*this).max(std::move(axes), keepdim);
}

namespace {
// The number of elements a reduction of t over `axes` (all when empty) takes, as a scalar
// of dtype d, when a variable axis is among them (undefined otherwise).
Tensor variable_count(const Tensor& t, std::vector<int> axes, DType d) {
  if (t.node()->vdims.empty()) return {};
  if (axes.empty())
    for (int i = 0; i < t.ndim(); ++i) axes.push_back(i);
  Tensor n;
  double fixed = 1;
  for (int a : axes) {
    Tensor l = t.length(a);
    if (l.node()->kind == NodeKind::Var)
      n = n.defined() ? n * l : l;
    else
      fixed *= double(t.dim(a));
  }
  return n.defined() ? n.cast(d) * fixed : n;
}
}  // namespace

Tensor Tensor::mean(std::vector<int> axes, bool keepdim) const {
  Tensor x = dtype().is_float() ? *this : cast(dtypes::float32);
  Tensor s = x.sum(axes, keepdim);
  if (Tensor n = variable_count(x, axes, s.dtype()); n.defined()) return s / n;
  int64_t n = s.numel() ? numel() / s.numel() : 0;
  return s * (n ? 1.0 / double(n) : NAN);
}

Tensor Tensor::var(std::vector<int> axes, int64_t correction, bool keepdim) const {
  Tensor x = dtype().is_float() ? *this : cast(dtypes::float32);
  Tensor d = x - x.mean(axes, true);
  Tensor s = (d * d).sum(axes, keepdim);
  if (Tensor n = variable_count(x, axes, s.dtype()); n.defined())
    return s / (n - double(correction)).maximum(n.scalar(0));
  int64_t n = s.numel() ? numel() / s.numel() : 0;
  return s * (1.0 / double(std::max<int64_t>(n - correction, 0)));
}

Tensor Tensor::argmax(int axis, bool keepdim) const {
  int ax = axis_of(axis, "argmax");
  int64_t n = shape()[size_t(ax)];
  if (n == 0) fail("argmax", "argmax of an empty axis of shape " + shape_text(shape()));
  if (NodePtr l = length(ax).node(); l->kind == NodeKind::Var && l->arg[0] < 1)
    fail("argmax", "argmax over the variable length " + l->name + ", which may be 0");
  Tensor m = max({ax}, true);
  Shape is(size_t(ndim()), 1);
  is[size_t(ax)] = n;
  Tensor iota = arange(0, double(n), 1, dtypes::int32, device()).reshape(is);
  // The first maximum: the largest of n - i over the maxima, taken back to i.
  Tensor rev = eq(m).where(Tensor::full({}, double(n), dtypes::int32, device()) - iota,
                           Tensor::full({}, 0, dtypes::int32, device()));
  Tensor first = Tensor::full({}, double(n), dtypes::int32, device()) - rev.max({ax}, true);
  return keepdim ? first : first.squeeze(ax);
}

Tensor Tensor::cumsum(int axis) const {
  int ax = axis_of(axis, "cumsum");
  int64_t n = shape()[size_t(ax)];
  Tensor x = transpose(ax, -1);
  Tensor i = arange(0, double(n), 1, dtypes::int32, device());
  Tensor keep = i.reshape({1, n}).le(i.reshape({n, 1}));  // [out i, in j]: j <= i
  Shape es = x.shape();
  es.insert(es.end() - 1, n);
  Tensor terms = keep.where(x.unsqueeze(-2).expand(es), x.scalar(0));
  Tensor sums = terms.sum({-1}).transpose(ax, -1);
  // Over an axis of variable length: the bound part's sums, of that length.
  Tensor l = length(ax);
  return l.node()->kind == NodeKind::Var ? sums.narrow(ax, 0, l) : sums;
}

std::pair<Tensor, Tensor> Tensor::topk(int64_t k, int axis) const {
  int ax = axis_of(axis, "topk");
  int64_t n = shape()[size_t(ax)];
  if (length(ax).node()->kind == NodeKind::Var)
    fail("topk", "axis " + std::to_string(ax) + " has the variable length " +
                     length(ax).node()->name + " (k could exceed it)");
  if (k < 0 || k > n)
    fail("topk", "k = " + std::to_string(k) + " for an axis of " + std::to_string(n));
  Shape is(size_t(ndim()), 1);
  is[size_t(ax)] = n;
  Tensor iota = arange(0, double(n), 1, dtypes::int32, device()).reshape(is);
  Tensor lowest = scalar(dtype().is_float() ? -INFINITY : double(dtype().imin()));
  std::vector<Tensor> values, indices;
  Tensor cur = *this;
  for (int64_t t = 0; t < k; ++t) {
    Tensor i = cur.argmax(ax, true);
    values.push_back(cur.max({ax}, true));
    indices.push_back(i);
    cur = iota.eq(i).where(lowest, cur).contiguous();
  }
  if (k == 0) {
    Shape s = shape();
    s[size_t(ax)] = 0;
    return {full(s, 0, dtype(), device()), full(s, 0, dtypes::int32, device())};
  }
  return {cat(values, ax), cat(indices, ax)};
}

Tensor Tensor::softmax(int axis) const {
  Tensor x = dtype().is_float() ? *this : cast(dtypes::float32);
  Tensor e = (x - x.max({axis}, true)).exp();
  return e / e.sum({axis}, true);
}

Tensor Tensor::log_softmax(int axis) const {
  Tensor x = dtype().is_float() ? *this : cast(dtypes::float32);
  Tensor s = x - x.max({axis}, true);
  return s - s.exp().sum({axis}, true).log();
}

Tensor Tensor::layernorm(const Tensor& weight, const Tensor& bias, double eps) const {
  int n = weight.defined() ? weight.ndim() : 1;
  if (weight.defined()) {
    Shape tail(shape().end() - std::min(n, ndim()), shape().end());
    if (n > ndim() || tail != weight.shape())
      fail("layernorm", "weight of shape " + shape_text(weight.shape()) +
                            " does not match the last axes of " + shape_text(shape()));
  }
  std::vector<int> axes;
  for (int i = ndim() - n; i < ndim(); ++i) axes.push_back(i);
  Tensor d = *this - mean(axes, true);
  Tensor y = d * ((d * d).mean(axes, true) + eps).rsqrt();
  if (weight.defined()) y = y * weight;
  if (bias.defined()) y = y + bias;
  return y;
}

Tensor Tensor::rmsnorm(const Tensor& weight, double eps) const {
  Tensor y = *this * ((*this * *this).mean({-1}, true) + eps).rsqrt();
  return weight.defined() ? y * weight : y;
}

// ---- movement ---------------------------------------------------------------------------

Tensor Tensor::reshape(Shape s) const {
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) fail("reshape", "two -1 entries in " + shape_text(s));
      infer = int64_t(i);
    } else if (s[i] < 0) {
      fail("reshape", "negative size in " + shape_text(s));
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel() % known)
      fail("reshape", "cannot reshape " + shape_text(shape()) + " to " + shape_text(s));
    s[size_t(infer)] = numel() / known;
  }
  if (kitten::numel(s) != numel())
    fail("reshape", "cannot reshape " + shape_text(shape()) + " (" + std::to_string(numel()) +
                        " elements) to " + shape_text(s));
  if (s == shape()) return *this;
  return Tensor(make(NodeKind::Reshape, dtype(), s, device(), {node_}));
}

Tensor Tensor::permute(std::vector<int> order) const {
  if (int(order.size()) != ndim())
    fail("permute",
         "order of " + std::to_string(order.size()) + " axes for shape " + shape_text(shape()));
  std::vector<int64_t> arg;
  std::vector<bool> seen(size_t(ndim()), false);
  Shape s;
  for (int a : order) {
    int ax = axis_of(a, "permute");
    if (seen[size_t(ax)]) fail("permute", "axis " + std::to_string(a) + " named twice");
    seen[size_t(ax)] = true;
    arg.push_back(ax);
    s.push_back(shape()[size_t(ax)]);
  }
  bool identity = true;
  for (size_t i = 0; i < arg.size(); ++i) identity = identity && arg[i] == int64_t(i);
  if (identity) return *this;
  return Tensor(make(NodeKind::Permute, dtype(), s, device(), {node_}, Op::ADD, arg));
}

Tensor Tensor::transpose(int a, int b) const {
  std::vector<int> order(static_cast<size_t>(ndim()));
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[size_t(axis_of(a, "transpose"))], order[size_t(axis_of(b, "transpose"))]);
  return permute(order);
}

Tensor Tensor::expand(Shape s) const {
  if (s.size() < shape().size())
    fail("expand", "cannot expand " + shape_text(shape()) + " to fewer axes " + shape_text(s));
  Tensor t = *this;
  if (s.size() > shape().size()) {
    Shape padded(s.size() - shape().size(), 1);
    padded.insert(padded.end(), shape().begin(), shape().end());
    t = reshape(padded);
  }
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) s[i] = t.shape()[i];
    if (t.shape()[i] != s[i] && t.shape()[i] != 1)
      fail("expand", "cannot expand " + shape_text(shape()) + " to " + shape_text(s));
  }
  if (s == t.shape()) return t;
  return Tensor(make(NodeKind::Expand, dtype(), s, device(), {t.node_}));
}

Tensor Tensor::pad(std::vector<std::pair<int64_t, int64_t>> ba) const {
  if (int(ba.size()) != ndim())
    fail("pad", std::to_string(ba.size()) + " pairs for shape " + shape_text(shape()));
  Shape s = shape();
  std::vector<int64_t> arg;
  bool any = false;
  for (size_t i = 0; i < ba.size(); ++i) {
    if (ba[i].first < 0 || ba[i].second < 0) fail("pad", "negative padding (use shrink)");
    s[i] += ba[i].first + ba[i].second;
    arg.push_back(ba[i].first);
    arg.push_back(ba[i].second);
    any = any || ba[i].first || ba[i].second;
  }
  if (!any) return *this;
  return Tensor(make(NodeKind::Pad, dtype(), s, device(), {node_}, Op::ADD, arg));
}

Tensor Tensor::shrink(std::vector<std::pair<int64_t, int64_t>> be) const {
  if (int(be.size()) != ndim())
    fail("shrink", std::to_string(be.size()) + " pairs for shape " + shape_text(shape()));
  Shape s;
  std::vector<int64_t> arg;
  for (size_t i = 0; i < be.size(); ++i) {
    auto [b, e] = be[i];
    if (b < 0 || e < b || e > shape()[i])
      fail("shrink", "range [" + std::to_string(b) + ", " + std::to_string(e) + ") of axis " +
                         std::to_string(i) + " of shape " + shape_text(shape()));
    s.push_back(e - b);
    arg.push_back(b);
    arg.push_back(e);
  }
  if (s == shape()) return *this;
  return Tensor(make(NodeKind::Shrink, dtype(), s, device(), {node_}, Op::ADD, arg));
}

Tensor Tensor::slice(int axis, int64_t begin, int64_t end) const {
  int ax = axis_of(axis, "slice");
  int64_t n = shape()[size_t(ax)];
  if (begin < 0) begin += n;
  if (end < 0) end += n;
  std::vector<std::pair<int64_t, int64_t>> be;
  for (int i = 0; i < ndim(); ++i)
    be.push_back(i == ax
                     ? std::pair{std::clamp<int64_t>(begin, 0, n), std::clamp<int64_t>(end, 0, n)}
                     : std::pair<int64_t, int64_t>{0, shape()[size_t(i)]});
  if (be[size_t(ax)].second < be[size_t(ax)].first) be[size_t(ax)].second = be[size_t(ax)].first;
  return shrink(be);
}

namespace {
// The bound variable `v` that op `what` takes as its `role` for a tensor on `device`.
const LazyNode& bound_variable(const Tensor& v, const std::string& device, const char* what,
                               const char* role) {
  if (!v.defined() || v.node()->kind != NodeKind::Var)
    fail(what, std::string("a ") + role + " that is not a bound variable (Tensor::variable)");
  if (v.device() != device)
    fail(what, "a variable on " + v.device() + " for a tensor on " + device);
  return *v.node();
}
}  // namespace

Tensor Tensor::slice(int axis, const Tensor& begin, int64_t length) const {
  int ax = axis_of(axis, "slice");
  const LazyNode& v = bound_variable(begin, device(), "slice", "begin");
  int64_t n = shape()[size_t(ax)];
  if (length < 0 || v.arg[0] < 0 || v.arg[1] + length > n)
    fail("slice", "length " + std::to_string(length) + " from " + v.name + " in [" +
                      std::to_string(v.arg[0]) + ", " + std::to_string(v.arg[1]) +
                      "] leaves axis " + std::to_string(ax) + " of shape " + shape_text(shape()));
  Shape s = shape();
  s[size_t(ax)] = length;
  std::vector<int64_t> arg;
  for (int i = 0; i < ndim(); ++i) {
    arg.push_back(0);
    arg.push_back(i == ax ? length : shape()[size_t(i)]);
  }
  arg.push_back(ax);
  return Tensor(make(NodeKind::Shrink, dtype(), s, device(), {node_, begin.node_}, Op::ADD, arg));
}

Tensor Tensor::narrow(int axis, int64_t begin, const Tensor& length) const {
  int ax = axis_of(axis, "narrow");
  const LazyNode& v = bound_variable(length, device(), "narrow", "length");
  int64_t n = shape()[size_t(ax)];
  if (begin < 0 || v.arg[0] < 0 || begin + v.arg[1] > n)
    fail("narrow", v.name + " in [" + std::to_string(v.arg[0]) + ", " + std::to_string(v.arg[1]) +
                       "] elements from " + std::to_string(begin) + " leave axis " +
                       std::to_string(ax) + " of shape " + shape_text(shape()));
  if (!node_->vdims.empty() && node_->vdims[size_t(ax)])
    fail("narrow", "axis " + std::to_string(ax) + " already has the variable length " +
                       node_->vdims[size_t(ax)]->name);
  std::shared_ptr<LazyNode> out;
  if (begin == 0 && v.arg[1] == n && node_->kind == NodeKind::Buffer && !node_->requires_grad) {
    // The buffer itself, read in part (a parameter takes the shrink: its gradient path).
    out = make(NodeKind::Buffer, dtype(), shape(), device(), {});
    out->storage = node_->data();
    out->vdims = node_->vdims;
  } else {
    std::vector<int64_t> arg;
    for (int i = 0; i < ndim(); ++i) {
      arg.push_back(i == ax ? begin : 0);
      arg.push_back(i == ax ? begin + v.arg[1] : shape()[size_t(i)]);
    }
    Shape s = shape();
    s[size_t(ax)] = v.arg[1];
    out = make(NodeKind::Shrink, dtype(), s, device(), {node_}, Op::ADD, arg);
  }
  out->vdims.resize(shape().size());
  out->vdims[size_t(ax)] = length.node_;
  return Tensor(out);
}

Tensor Tensor::length(int axis) const {
  int ax = axis_of(axis, "length");
  if (!node_->vdims.empty() && node_->vdims[size_t(ax)]) return Tensor(node_->vdims[size_t(ax)]);
  return full({}, double(shape()[size_t(ax)]), dtypes::int32, device());
}

Tensor Tensor::flip(std::vector<int> axes) const {
  std::vector<int64_t> arg(size_t(ndim()), 0);
  for (int a : axes) arg[size_t(axis_of(a, "flip"))] = 1;
  if (std::count(arg.begin(), arg.end(), 1) == 0) return *this;
  return Tensor(make(NodeKind::Flip, dtype(), shape(), device(), {node_}, Op::ADD, arg));
}

Tensor Tensor::unsqueeze(int axis) const {
  int n = ndim() + 1;
  if (axis < -n || axis >= n)
    fail("unsqueeze", "axis " + std::to_string(axis) + " for shape " + shape_text(shape()));
  int ax = axis < 0 ? axis + n : axis;
  Shape s = shape();
  s.insert(s.begin() + ax, 1);
  return reshape(s);
}

Tensor Tensor::squeeze(int axis) const {
  int ax = axis_of(axis, "squeeze");
  if (shape()[size_t(ax)] != 1) return *this;
  Shape s = shape();
  s.erase(s.begin() + ax);
  return reshape(s);
}

Tensor Tensor::flatten(int start, int end) const {
  if (ndim() == 0) return reshape({1});
  int a = axis_of(start, "flatten"), b = axis_of(end, "flatten");
  Shape s(shape().begin(), shape().begin() + a);
  int64_t m = 1;
  for (int i = a; i <= b; ++i) m *= shape()[size_t(i)];
  s.push_back(m);
  s.insert(s.end(), shape().begin() + b + 1, shape().end());
  return reshape(s);
}

Tensor Tensor::cat(const std::vector<Tensor>& ts, int axis) {
  if (ts.empty()) throw TensorError("cat: no tensors");
  int ax = ts[0].axis_of(axis, "cat");
  Shape s = ts[0].shape();
  DType d = ts[0].dtype();
  for (size_t i = 1; i < ts.size(); ++i) {
    const Shape& o = ts[i].shape();
    bool ok = o.size() == s.size() && ts[i].device() == ts[0].device();
    for (size_t j = 0; ok && j < s.size(); ++j) ok = j == size_t(ax) || o[j] == s[j];
    if (!ok)
      fail("cat", "shapes " + shape_text(ts[0].shape()) + " and " + shape_text(o) +
                      " differ outside axis " + std::to_string(ax));
    s[size_t(ax)] += o[size_t(ax)];
    d = promote(d, ts[i].dtype());
  }
  if (ts.size() == 1) return ts[0];
  std::vector<NodePtr> src;
  for (const Tensor& t : ts) src.push_back(t.cast(d).node_);
  return Tensor(make(NodeKind::Cat, d, s, ts[0].device(), src, Op::ADD, {ax}));
}

Tensor Tensor::stack(const std::vector<Tensor>& ts, int axis) {
  if (ts.empty()) throw TensorError("stack: no tensors");
  std::vector<Tensor> u;
  for (const Tensor& t : ts) {
    if (t.shape() != ts[0].shape())
      fail("stack",
           "shapes " + shape_text(ts[0].shape()) + " and " + shape_text(t.shape()) + " differ");
    u.push_back(t.unsqueeze(axis));
  }
  return cat(u, axis);
}

// ---- products and lookups ---------------------------------------------------------------

Tensor Tensor::matmul(const Tensor& o) const {
  if (ndim() == 0 || o.ndim() == 0)
    fail("matmul",
         "a scalar operand: shapes " + shape_text(shape()) + " and " + shape_text(o.shape()));
  if (ndim() == 1) return unsqueeze(0).matmul(o).squeeze(-2);
  if (o.ndim() == 1) return matmul(o.unsqueeze(-1)).squeeze(-1);
  int64_t m = dim(-2), k = dim(-1), k2 = o.dim(-2), n = o.dim(-1);
  if (k != k2)
    fail("matmul", "shapes " + shape_text(shape()) + " and " + shape_text(o.shape()) +
                       ": inner sizes " + std::to_string(k) + " and " + std::to_string(k2) +
                       " differ");
  Shape ba(shape().begin(), shape().end() - 2), bb(o.shape().begin(), o.shape().end() - 2);
  Shape batch = broadcast_shape(ba, bb, "matmul");
  Shape sa = batch, sb = batch;
  sa.insert(sa.end(), {m, n, k});
  sb.insert(sb.end(), {m, n, k});
  Tensor a = unsqueeze(-2), b = o.transpose(-2, -1).unsqueeze(-3);
  DType d = promote(dtype(), o.dtype());
  return (a.cast(d).expand(sa) * b.cast(d).expand(sb)).sum({-1});
}

Tensor Tensor::gather(int axis, const Tensor& index) const {
  int ax = axis_of(axis, "gather");
  if (index.dtype().is_float() || index.dtype() == dtypes::bool_)
    fail("gather", "index of dtype " + std::string(index.dtype().name()) + " (integers needed)");
  if (index.ndim() != ndim())
    fail("gather", "index of shape " + shape_text(index.shape()) + " for a tensor of shape " +
                       shape_text(shape()) + " (the ranks must agree)");
  for (int i = 0; i < ndim(); ++i)
    if (i != ax && index.shape()[size_t(i)] > shape()[size_t(i)])
      fail("gather", "index of shape " + shape_text(index.shape()) + " exceeds " +
                         shape_text(shape()) + " outside axis " + std::to_string(ax));
  if (device() != index.device()) fail("gather", "index on another device");
  return Tensor(make(NodeKind::Gather, dtype(), index.shape(), device(), {node_, index.node_},
                     Op::ADD, {ax}));
}

Tensor Tensor::embedding(const Tensor& ids) const {
  if (ndim() != 2) fail("embedding", "table of shape " + shape_text(shape()) + " (2 axes needed)");
  Shape s = ids.shape(), table_view(s.size(), 1), idx_view = s;
  int64_t h = dim(1);
  table_view.insert(table_view.end(), {dim(0), h});
  idx_view.insert(idx_view.end(), {1, h});
  Shape expanded = s;
  expanded.insert(expanded.end(), {dim(0), h});
  Shape is = s;
  is.insert(is.end(), {1, 1});
  Tensor t = reshape(table_view).expand(expanded);
  Tensor out = t.gather(int(s.size()), ids.reshape(is).expand(idx_view));
  Shape os = s;
  os.push_back(h);
  return out.reshape(os);
}

Tensor Tensor::scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& mask, bool causal,
                                            std::optional<double> scale) {
  if (q.ndim() < 2 || k.ndim() != q.ndim() || v.ndim() != q.ndim() || q.dim(-1) != k.dim(-1) ||
      k.dim(-2) != v.dim(-2))
    fail("scaled_dot_product_attention", "shapes q " + shape_text(q.shape()) + ", k " +
                                             shape_text(k.shape()) + ", v " +
                                             shape_text(v.shape()));
  double sc = scale.value_or(1.0 / std::sqrt(double(q.dim(-1))));
  Tensor s = q.matmul(k.transpose(-2, -1)) * sc;
  if (causal) {  // key j is seen by query i where j - i <= (keys) - (queries)
    int64_t nq = q.dim(-2), nk = k.dim(-2);
    Tensor i = arange(0, double(nq), 1, dtypes::int32, q.device()).reshape({nq, 1});
    Tensor j = arange(0, double(nk), 1, dtypes::int32, q.device()).reshape({1, nk});
    s = (j - i).le(k.length(-2) - q.length(-2)).where(s, s.scalar(-INFINITY));
  }
  if (mask.defined())
    s = mask.dtype() == dtypes::bool_ ? mask.where(s, s.scalar(-INFINITY)) : s + mask;
  Tensor o = s.softmax(-1).matmul(v);
  return named(o.node_, "scaled_dot_product_attention");
}

}  // namespace kitten
