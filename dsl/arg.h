// The argument of a UOp: the one non-UOp payload of a node (a constant's bits, a range's
// axis, a kernel parameter's slot ...). Part of the node's identity, so it is compared,
// hashed stably and printed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "dsl/dtype.h"

namespace kitten {

// How a RANGE is executed: across the grid (global), across a block's threads (local),
// as a sequential loop, as a reduction loop, or expanded into lanes (upcast) or repeated
// code (unroll).
enum class AxisKind : uint8_t { Global, Local, Loop, Reduce, Upcast, Unroll };
enum class SpecialKind : uint8_t { BlockIdx, ThreadIdx };

struct ConstArg {  // the bits of a constant: a double for float dtypes, else an integer
  uint64_t bits;
  friend bool operator==(const ConstArg&, const ConstArg&) = default;
};
struct AxisArg {
  int64_t id;
  AxisKind kind;
  friend bool operator==(const AxisArg&, const AxisArg&) = default;
};
struct SpecialArg {
  SpecialKind kind;
  int dim;  // 0, 1, 2 = x, y, z
  friend bool operator==(const SpecialArg&, const SpecialArg&) = default;
};
struct VarArg {  // a bounded run-time integer: name and inclusive bounds
  std::string name;
  int64_t min, max;
  friend bool operator==(const VarArg&, const VarArg&) = default;
};

// The XOR swizzle a shared allocation is laid out with (dsl/swizzle.h): none, or the 32-,
// 64- and 128-byte modes that tensor maps and wgmma descriptors name.
enum class Swizzle : uint8_t { None, B32, B64, B128 };

// A shared-memory allocation: its slot, the alignment of its start in bytes (what a
// swizzle needs: dsl/swizzle.h) and the swizzle its contents are laid out with, which the
// tensor maps and matrix descriptors that point into it must name.
struct AllocArg {
  int64_t slot;
  int64_t align;
  Swizzle swizzle = Swizzle::None;
  friend bool operator==(const AllocArg&, const AllocArg&) = default;
};

// How SHUFFLE picks the lane it reads: lane `b`, lane ^ b, lane - b, lane + b.
enum class ShuffleMode : uint8_t { Idx, Xor, Up, Down };
// How ATOMIC combines its value into memory.
enum class AtomicOp : uint8_t { Add, Max, Min };

// An arg of a kind registered by a later layer (tiles/ ...), as dtypes have extension
// dtypes: it names its kind, hashes stably, compares and prints itself.
class ArgExtension {
 public:
  virtual ~ArgExtension() = default;
  virtual std::string_view kind() const = 0;                 // e.g. "tile_layout"
  virtual uint64_t stable_hash() const = 0;                  // never addresses or enum numbers
  virtual bool equals(const ArgExtension& other) const = 0;  // other is of the same kind
  virtual std::string to_string() const = 0;
};
struct ExtArg {
  std::shared_ptr<const ArgExtension> value;
  friend bool operator==(const ExtArg& a, const ExtArg& b) {
    return a.value->kind() == b.value->kind() && a.value->equals(*b.value);
  }
};

using Arg = std::variant<std::monostate, int64_t, ConstArg, std::string, AxisArg, SpecialArg,
                         VarArg, std::vector<int64_t>, ShuffleMode, AtomicOp, AllocArg, ExtArg>;
// The kind of each alternative of Arg, in the same order.
enum class ArgKind : uint8_t {
  None,
  Int,
  Const,
  Name,
  Axis,
  Special,
  Var,
  Ints,
  Shuffle,
  Atomic,
  Alloc,
  Ext
};

inline ArgKind arg_kind(const Arg& a) { return ArgKind(a.index()); }
std::string_view arg_kind_name(ArgKind k);
std::string_view axis_kind_name(AxisKind k);
std::string_view special_name(SpecialArg s);        // "blockIdx.x" ...
std::string_view shuffle_mode_name(ShuffleMode m);  // "idx", "xor", "up", "down"
std::string_view atomic_op_name(AtomicOp a);        // "add", "max", "min"

// The stable hash of an arg: kind name and value bytes, never enum numbers.
uint64_t arg_stable_hash(const Arg& a);
// Prints an arg; a constant's bits are shown as a value of `dtype`.
std::string arg_to_string(const Arg& a, DType dtype);

// Constant bits for a value of `dtype`: a float dtype stores the double, others the
// integer. The value must be exact in dtype (UOp::const_ rounds first).
ConstArg const_bits_of_double(double v);
ConstArg const_bits_of_int(int64_t v);
double const_as_double(ConstArg c, DType dtype);
int64_t const_as_int(ConstArg c, DType dtype);

}  // namespace kitten
