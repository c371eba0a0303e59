// The UOp: an immutable (op, dtype, sources, arg) node, hash-consed so that structurally
// equal nodes are one object and equality is a pointer compare. Nodes are created through
// a sharded intern table from any thread and reference-counted atomically; freeing a
// graph never recurses, however deep. Every node is checked against its op's spec when it
// is first created, so a malformed node cannot exist (IrError says what and where).
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <stdexcept>
#include <string>

#include "dsl/arg.h"
#include "dsl/dtype.h"
#include "dsl/ops.h"

namespace kitten {

// A malformed graph: the message names the rule and prints the node in its graph.
struct IrError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// 128 bits of stable structural hash: the same graph has the same key in every run and
// build (it hashes op names, dtype names and arg values, never addresses or enum numbers).
struct StableKey {
  uint64_t lo, hi;
  std::string hex() const;
  friend bool operator==(const StableKey&, const StableKey&) = default;
};

namespace detail {
struct UOpNode;
}

class UOp {
 public:
  UOp() = default;
  UOp(const UOp& o) noexcept;
  UOp(UOp&& o) noexcept : n_(o.n_) { o.n_ = nullptr; }
  UOp& operator=(const UOp& o) noexcept;
  UOp& operator=(UOp&& o) noexcept;
  ~UOp();

  // Finds or creates the node. A new node is checked against its op's spec (IrError).
  static UOp make(Op op, DType dtype, std::span<const UOp> src = {}, Arg arg = {});
  static UOp make(Op op, DType dtype, std::initializer_list<UOp> src, Arg arg = {}) {
    return make(op, dtype, std::span<const UOp>(src.begin(), src.size()), std::move(arg));
  }
  // Like make, with the dtype the op's rule infers from the sources and arg.
  static UOp make(Op op, std::initializer_list<UOp> src, Arg arg = {});
  static UOp make(Op op, std::span<const UOp> src, Arg arg = {});

  Op op() const;
  DType dtype() const;
  const Arg& arg() const;
  std::span<const UOp> src() const;
  const UOp& src(size_t i) const { return src()[i]; }
  StableKey key() const;  // stable structural hash of the whole graph below
  uint64_t hash() const { return key().lo; }
  uint32_t use_count() const;  // references held to this node (for tests)
  // A per-node cache for the integer bounds that dsl/symbolic.h computes.
  bool cached_bounds(int64_t& lo, int64_t& hi) const;
  void cache_bounds(int64_t lo, int64_t hi) const;

  // Typed views of the arg; each throws IrError when the arg is of another kind.
  double const_value() const;  // a CONST as a double
  int64_t const_int() const;   // an integer or bool CONST
  int64_t int_arg() const;
  // PARAM, DEFINE_REG (an int arg), DEFINE_LOCAL (an alloc arg), TENSOR_MAP (its first int)
  int64_t slot() const;
  const std::string& name_arg() const;
  AxisArg axis() const;

  explicit operator bool() const { return n_ != nullptr; }
  const void* id() const { return n_; }
  friend bool operator==(const UOp& a, const UOp& b) { return a.n_ == b.n_; }

 private:
  friend struct detail::UOpNode;
  friend struct UOpAccess;
  explicit UOp(const detail::UOpNode* n) : n_(n) {}  // adopts a reference
  const detail::UOpNode* n_ = nullptr;
};

struct UOpHash {
  size_t operator()(const UOp& u) const { return size_t(u.hash()); }
};

// The intern table's counters, summed over shards.
struct InternStats {
  uint64_t live;     // nodes alive now
  uint64_t lookups;  // make() calls
  uint64_t hits;     // make() calls answered by an existing node
};
InternStats intern_stats();

// ---- builders: short names for the common nodes -------------------------------------
// A constant of `dtype`, rounded to it (floats: nearest even; ints must be in range).
UOp const_(DType dtype, double value);
UOp const_int(DType dtype, int64_t value);
UOp const_bool(bool value);
UOp param(int64_t slot, DType dtype);
UOp define_var(std::string name, int64_t min, int64_t max, DType dtype = dtypes::int32);
UOp range(UOp end, int64_t id, AxisKind kind);
UOp range(int64_t end, int64_t id, AxisKind kind);
UOp special(SpecialKind kind, int dim, int64_t extent);
UOp define_reg(DType element, int64_t size, int64_t slot);
// `align`: bytes the start is aligned to (a power of two up to 1024; swizzle_alignment()).
// `swizzle`: the layout its contents follow, which tensor maps and descriptors must name.
UOp define_local(DType element, int64_t size, int64_t slot, int64_t align = 16,
                 Swizzle swizzle = Swizzle::None);
UOp index(UOp buffer, UOp idx, UOp gate = {});
UOp load(UOp address, UOp alt = {});
UOp store(UOp address, UOp value);
UOp after(UOp buffer, std::initializer_list<UOp> deps);
// The buffer an access goes to: `b` through the AFTERs that order it.
UOp buffer_root(UOp b);
UOp end(UOp body, std::initializer_list<UOp> ranges);
UOp group(std::initializer_list<UOp> effects);
UOp sink(std::initializer_list<UOp> effects, std::string name = "");
UOp cast(UOp x, DType dtype);
UOp alu(Op op, UOp a, UOp b);
// Arithmetic with integer constants promoted to the other operand's dtype.
UOp operator+(const UOp& a, const UOp& b);
UOp operator-(const UOp& a, const UOp& b);
UOp operator*(const UOp& a, const UOp& b);
UOp operator/(const UOp& a, const UOp& b);  // IDIV for integers, FDIV for floats
UOp operator%(const UOp& a, const UOp& b);
UOp operator+(const UOp& a, int64_t b);
UOp operator*(const UOp& a, int64_t b);
UOp operator/(const UOp& a, int64_t b);
UOp operator%(const UOp& a, int64_t b);
UOp operator<(const UOp& a, const UOp& b);  // CMPLT
UOp operator<(const UOp& a, int64_t b);

}  // namespace kitten
