#include "dsl/uop.h"

#include <cmath>
#include <cstdio>
#include <mutex>
#include <new>
#include <vector>

#include "dsl/verify.h"

namespace kitten {

namespace detail {

struct UOpNode {
  mutable std::atomic<uint32_t> refs{1};
  Op op;
  bool in_table = false;  // set under the shard lock when the node is published
  uint32_t nsrc;
  DType dtype;
  StableKey key;
  Arg arg;
  UOpNode* next = nullptr;  // the intern table's bucket chain, guarded by the shard lock
  // Integer bounds, computed once on demand (dsl/symbolic.h); racing writers store the
  // same values.
  mutable std::atomic<bool> bounds_ready{false};
  mutable std::atomic<int64_t> bounds_lo{0}, bounds_hi{0};

  UOp* srcs() { return reinterpret_cast<UOp*>(this + 1); }
  const UOp* srcs() const { return reinterpret_cast<const UOp*>(this + 1); }
};
static_assert(sizeof(UOpNode) % alignof(UOp) == 0);

}  // namespace detail

using detail::UOpNode;

// Lets the table code take a handle's pointer without touching the count.
struct UOpAccess {
  static const UOpNode* node(const UOp& u) { return u.n_; }
  static const UOpNode* take(UOp& u) {
    const UOpNode* n = u.n_;
    u.n_ = nullptr;
    return n;
  }
  static UOp adopt(const UOpNode* n) { return UOp(n); }
};

namespace {

constexpr int kShardBits = 6;
constexpr size_t kShards = size_t(1) << kShardBits;

struct Shard {
  std::mutex mu;
  std::vector<UOpNode*> buckets = std::vector<UOpNode*>(256);
  size_t count = 0;
  uint64_t lookups = 0, hits = 0;

  UOpNode*& bucket(uint64_t h) { return buckets[h & (buckets.size() - 1)]; }
  void insert(UOpNode* n) {
    if (++count > buckets.size()) grow();
    UOpNode*& head = bucket(n->key.lo);
    n->next = head;
    head = n;
  }
  void grow() {
    std::vector<UOpNode*> old(buckets.size() * 2);
    old.swap(buckets);
    for (UOpNode* chain : old) {
      while (chain) {
        UOpNode* next = chain->next;
        UOpNode*& head = bucket(chain->key.lo);
        chain->next = head;
        head = chain;
        chain = next;
      }
    }
  }
  void unlink(const UOpNode* n) {
    for (UOpNode** p = &bucket(n->key.lo); *p; p = &(*p)->next) {
      if (*p == n) {
        *p = n->next;
        --count;
        return;
      }
    }
  }
};

// Immortal, so that nodes released during static destruction still find their shard.
Shard* const shards = new Shard[kShards];

Shard& shard_for(uint64_t h) { return shards[h >> (64 - kShardBits)]; }

bool try_acquire(const UOpNode* n) {
  uint32_t c = n->refs.load(std::memory_order_relaxed);
  while (c != 0)
    if (n->refs.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) return true;
  return false;  // dying: its destructor will unlink it; the caller makes a fresh node
}

bool same_node(const UOpNode* n, Op op, DType dtype, std::span<const UOp> src, const Arg& arg,
               const StableKey& key) {
  if (n->key != key || n->op != op || n->dtype != dtype || n->nsrc != src.size()) return false;
  for (size_t i = 0; i < src.size(); ++i)
    if (n->srcs()[i] != src[i]) return false;
  return n->arg == arg;
}

UOpNode* find_live(Shard& sh, Op op, DType dtype, std::span<const UOp> src, const Arg& arg,
                   const StableKey& key) {
  for (UOpNode* n = sh.bucket(key.lo); n; n = n->next)
    if (same_node(n, op, dtype, src, arg, key) && try_acquire(n)) return n;
  return nullptr;
}

StableKey compute_key(Op op, DType dtype, std::span<const UOp> src, const Arg& arg) {
  uint64_t op_h = op_name_hash(op), arg_h = arg_stable_hash(arg);
  uint64_t lo = hash_combine(
      hash_combine(hash_combine(0x6b697474656e4c4full, op_h), dtype.stable_hash()), arg_h);
  uint64_t hi = hash_combine(
      hash_combine(hash_combine(0x6b697474656e4849ull, arg_h), dtype.stable_hash()), op_h);
  for (const UOp& s : src) {
    StableKey k = s.key();
    lo = hash_combine(lo, k.lo);
    hi = hash_combine(hi, k.hi);
  }
  return {lo, hi};
}

// Frees a dead node and every source that dies with it, with a worklist: no recursion,
// however deep the graph. A chain of deaths goes through `next` and allocates nothing;
// only a node whose death frees two or more sources pushes onto the vector.
void destroy(const UOpNode* first) {
  std::vector<const UOpNode*> work;
  const UOpNode* next = first;
  while (next) {
    auto* n = const_cast<UOpNode*>(next);
    next = nullptr;
    if (n->in_table) {
      Shard& sh = shard_for(n->key.lo);
      std::lock_guard lock(sh.mu);
      sh.unlink(n);
    }
    for (uint32_t i = 0; i < n->nsrc; ++i) {
      const UOpNode* s = UOpAccess::take(n->srcs()[i]);
      if (s->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) continue;
      if (!next)
        next = s;
      else
        work.push_back(s);
    }
    for (uint32_t i = 0; i < n->nsrc; ++i) n->srcs()[i].~UOp();
    n->~UOpNode();
    ::operator delete(n);
    if (!next && !work.empty()) {
      next = work.back();
      work.pop_back();
    }
  }
}

void release(const UOpNode* n) {
  if (n && n->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy(n);
}

}  // namespace

std::string StableKey::hex() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", (unsigned long long)hi, (unsigned long long)lo);
  return buf;
}

UOp::UOp(const UOp& o) noexcept : n_(o.n_) {
  if (n_) n_->refs.fetch_add(1, std::memory_order_relaxed);
}
UOp& UOp::operator=(const UOp& o) noexcept {
  if (o.n_) o.n_->refs.fetch_add(1, std::memory_order_relaxed);
  release(n_);
  n_ = o.n_;
  return *this;
}
UOp& UOp::operator=(UOp&& o) noexcept {
  if (this != &o) {
    release(n_);
    n_ = o.n_;
    o.n_ = nullptr;
  }
  return *this;
}
UOp::~UOp() { release(n_); }

Op UOp::op() const { return n_->op; }
DType UOp::dtype() const { return n_->dtype; }
const Arg& UOp::arg() const { return n_->arg; }
std::span<const UOp> UOp::src() const { return {n_->srcs(), n_->nsrc}; }
StableKey UOp::key() const { return n_->key; }
bool UOp::cached_bounds(int64_t& lo, int64_t& hi) const {
  if (!n_->bounds_ready.load(std::memory_order_acquire)) return false;
  lo = n_->bounds_lo.load(std::memory_order_relaxed);
  hi = n_->bounds_hi.load(std::memory_order_relaxed);
  return true;
}
void UOp::cache_bounds(int64_t lo, int64_t hi) const {
  n_->bounds_lo.store(lo, std::memory_order_relaxed);
  n_->bounds_hi.store(hi, std::memory_order_relaxed);
  n_->bounds_ready.store(true, std::memory_order_release);
}
uint32_t UOp::use_count() const { return n_->refs.load(std::memory_order_relaxed); }

UOp UOp::make(Op op, DType dtype, std::span<const UOp> src, Arg arg) {
  for (size_t i = 0; i < src.size(); ++i)
    if (!src[i])
      throw IrError("UOp::make(" + op_name(op) + "): source " + std::to_string(i) + " is null");
  StableKey key = compute_key(op, dtype, src, arg);
  Shard& sh = shard_for(key.lo);
  {
    std::lock_guard lock(sh.mu);
    ++sh.lookups;
    if (UOpNode* n = find_live(sh, op, dtype, src, arg, key)) {
      ++sh.hits;
      return UOp(n);
    }
  }
  void* mem = ::operator new(sizeof(UOpNode) + src.size() * sizeof(UOp));
  auto* n = new (mem) UOpNode{};
  n->op = op;
  n->nsrc = uint32_t(src.size());
  n->dtype = dtype;
  n->key = key;
  n->arg = std::move(arg);
  for (size_t i = 0; i < src.size(); ++i) new (&n->srcs()[i]) UOp(src[i]);
  UOp made(n);
  check_node(made);  // throws IrError; `made` then frees the unpublished node
  std::lock_guard lock(sh.mu);
  if (UOpNode* other = find_live(sh, op, dtype, src, n->arg, key)) return UOp(other);
  n->in_table = true;
  sh.insert(n);
  return made;
}

UOp UOp::make(Op op, std::span<const UOp> src, Arg arg) {
  const OpSpec* spec = find_op_spec(op);
  if (!spec) throw IrError("UOp::make: unknown op id " + std::to_string(int(op)));
  if (!spec->dtype.infer)
    throw IrError("UOp::make(" + spec->name + "): the dtype (" + spec->dtype.doc +
                  ") cannot be inferred; pass it");
  for (const UOp& s : src)
    if (!s) throw IrError("UOp::make(" + spec->name + "): a source is null");
  if (auto dtype = spec->dtype.infer(src, arg)) return make(op, *dtype, src, std::move(arg));
  // The sources admit no dtype: build the node as void so that its check names the rule.
  make(op, dtypes::void_, src, arg);
  throw IrError("UOp::make(" + spec->name + "): no dtype fits these sources (" + spec->dtype.doc +
                ")");
}

UOp UOp::make(Op op, std::initializer_list<UOp> src, Arg arg) {
  return make(op, std::span<const UOp>(src.begin(), src.size()), std::move(arg));
}

namespace {
template <class T>
const T& arg_as(const UOp& u, const char* what) {
  if (const T* v = std::get_if<T>(&u.arg())) return *v;
  throw IrError(op_name(u.op()) + " has no " + what + " arg (its arg is " +
                std::string(arg_kind_name(arg_kind(u.arg()))) + ")");
}
}  // namespace

double UOp::const_value() const {
  return const_as_double(arg_as<ConstArg>(*this, "const"), dtype());
}
int64_t UOp::const_int() const { return const_as_int(arg_as<ConstArg>(*this, "const"), dtype()); }
int64_t UOp::int_arg() const { return arg_as<int64_t>(*this, "int"); }
int64_t UOp::slot() const {
  if (const auto* a = std::get_if<AllocArg>(&arg())) return a->slot;
  if (const auto* v = std::get_if<std::vector<int64_t>>(&arg()); v && op() == Op::TENSOR_MAP)
    return v->at(0);
  return arg_as<int64_t>(*this, "slot");
}
const std::string& UOp::name_arg() const { return arg_as<std::string>(*this, "name"); }
AxisArg UOp::axis() const { return arg_as<AxisArg>(*this, "axis"); }

InternStats intern_stats() {
  InternStats s{0, 0, 0};
  for (size_t i = 0; i < kShards; ++i) {
    std::lock_guard lock(shards[i].mu);
    s.live += shards[i].count;
    s.lookups += shards[i].lookups;
    s.hits += shards[i].hits;
  }
  return s;
}

// ---- builders --------------------------------------------------------------------------

UOp const_(DType dtype, double value) {
  if (dtype.is_scalar() && dtype.is_float()) {
    if (const FloatFormat* f = dtype.narrow_float())
      value = decode_float(*f, encode_float(*f, value));
    else if (dtype == dtypes::float32)
      value = double(float(value));
    return UOp::make(Op::CONST, dtype, {}, const_bits_of_double(value));
  }
  if (dtype.is_bool()) return const_bool(value != 0);
  if (value != std::trunc(value) || std::isnan(value))
    throw IrError("const_: " + std::to_string(value) + " is not an integer, so not a " +
                  std::string(dtype.name()));
  if (!(value >= -9223372036854775808.0 && value < 9223372036854775808.0))
    throw IrError("const_: " + std::to_string(value) + " is out of range for " +
                  std::string(dtype.name()));
  return const_int(dtype, int64_t(value));
}

UOp const_int(DType dtype, int64_t value) {
  if (dtype.is_float()) return const_(dtype, double(value));
  return UOp::make(Op::CONST, dtype, {}, const_bits_of_int(value));
}

UOp const_bool(bool value) { return UOp::make(Op::CONST, dtypes::bool_, {}, ConstArg{value}); }
UOp param(int64_t slot, DType dtype) { return UOp::make(Op::PARAM, dtype, {}, slot); }
UOp define_var(std::string name, int64_t min, int64_t max, DType dtype) {
  return UOp::make(Op::DEFINE_VAR, dtype, {}, VarArg{std::move(name), min, max});
}
UOp range(UOp end, int64_t id, AxisKind kind) {
  DType dt = end.dtype();
  return UOp::make(Op::RANGE, dt, {std::move(end)}, AxisArg{id, kind});
}
UOp range(int64_t end, int64_t id, AxisKind kind) {
  return range(const_int(dtypes::int32, end), id, kind);
}
UOp special(SpecialKind kind, int dim, int64_t extent) {
  return UOp::make(Op::SPECIAL, dtypes::int32, {const_int(dtypes::int32, extent)},
                   SpecialArg{kind, dim});
}
UOp define_reg(DType element, int64_t size, int64_t slot) {
  return UOp::make(Op::DEFINE_REG, element.ptr(AddrSpace::Reg, size), {}, slot);
}
UOp define_local(DType element, int64_t size, int64_t slot, int64_t align, Swizzle swizzle) {
  return UOp::make(Op::DEFINE_LOCAL, element.ptr(AddrSpace::Local, size), {},
                   AllocArg{slot, align, swizzle});
}
UOp index(UOp buffer, UOp idx, UOp gate) {
  if (!buffer) throw IrError("index: the buffer is null");
  DType dt = buffer.dtype().is_pointer() ? buffer.dtype().pointee().ptr(buffer.dtype().space())
                                         : buffer.dtype();
  if (gate) return UOp::make(Op::INDEX, dt, {buffer, idx, gate});
  return UOp::make(Op::INDEX, dt, {buffer, idx});
}
UOp load(UOp address, UOp alt) {
  if (alt) return UOp::make(Op::LOAD, {address, alt});
  return UOp::make(Op::LOAD, {address});
}
UOp store(UOp address, UOp value) { return UOp::make(Op::STORE, {address, value}); }
UOp buffer_root(UOp b) {
  while (b.op() == Op::AFTER) b = b.src(0);
  return b;
}

UOp after(UOp buffer, std::initializer_list<UOp> deps) {
  std::vector<UOp> src{buffer};
  src.insert(src.end(), deps);
  return UOp::make(Op::AFTER, std::span<const UOp>(src));
}
UOp end(UOp body, std::initializer_list<UOp> ranges) {
  std::vector<UOp> src{body};
  src.insert(src.end(), ranges);
  return UOp::make(Op::END, std::span<const UOp>(src));
}
UOp group(std::initializer_list<UOp> effects) { return UOp::make(Op::GROUP, effects); }
UOp sink(std::initializer_list<UOp> effects, std::string name) {
  return UOp::make(Op::SINK, effects, std::move(name));
}
UOp cast(UOp x, DType dtype) { return UOp::make(Op::CAST, dtype, {std::move(x)}); }
UOp alu(Op op, UOp a, UOp b) { return UOp::make(op, {std::move(a), std::move(b)}); }

UOp operator+(const UOp& a, const UOp& b) { return alu(Op::ADD, a, b); }
UOp operator-(const UOp& a, const UOp& b) { return alu(Op::SUB, a, b); }
UOp operator*(const UOp& a, const UOp& b) { return alu(Op::MUL, a, b); }
UOp operator/(const UOp& a, const UOp& b) {
  return alu(a.dtype().is_float() ? Op::FDIV : Op::IDIV, a, b);
}
UOp operator%(const UOp& a, const UOp& b) { return alu(Op::MOD, a, b); }
UOp operator+(const UOp& a, int64_t b) { return a + const_int(a.dtype(), b); }
UOp operator*(const UOp& a, int64_t b) { return a * const_int(a.dtype(), b); }
UOp operator/(const UOp& a, int64_t b) { return a / const_int(a.dtype(), b); }
UOp operator%(const UOp& a, int64_t b) { return a % const_int(a.dtype(), b); }
UOp operator<(const UOp& a, const UOp& b) { return alu(Op::CMPLT, a, b); }
UOp operator<(const UOp& a, int64_t b) { return a < const_int(a.dtype(), b); }

}  // namespace kitten
