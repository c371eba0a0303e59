// Data types of UOps: scalars, vectors (scalar x lanes), pointers into an address space,
// and extension types that later layers register (tiles/ registers tile dtypes). A DType
// is a handle to an interned, immortal description: equality is a pointer compare, and
// every dtype has a canonical name that DType::parse reads back.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "dsl/float_format.h"
#include "dsl/hash.h"

namespace kitten {

enum class ScalarType : uint8_t {
  Bool,
  Int8,
  Int16,
  Int32,
  Int64,
  UInt8,
  UInt16,
  UInt32,
  UInt64,
  Float16,
  BFloat16,
  Float32,
  Float64,
  Float8E4M3,
  Float8E5M2,
};
enum class AddrSpace : uint8_t { Global, Local, Reg };  // Local = a block's shared memory
enum class DTypeKind : uint8_t { Void, Token, Scalar, Vector, Pointer, Extension };

std::string_view addr_space_name(AddrSpace s);

// What an extension dtype carries; its owner (e.g. tiles/) derives from it and casts back.
struct DTypeExtension {
  virtual ~DTypeExtension() = default;
};

struct DTypeInfo {
  DTypeKind kind;
  std::string_view name;
  ScalarType scalar;         // Scalar, Vector: the element type
  int count;                 // Vector: lanes; 1 otherwise
  const DTypeInfo* pointee;  // Pointer: the pointed-to dtype
  AddrSpace space;           // Pointer
  int64_t size;              // Pointer: elements in the buffer, -1 when unknown
  const DTypeExtension* ext;
  uint64_t hash;  // fnv1a(name): stable
  // Scalar, Vector: facts about the element type, kept here so queries are loads.
  int elem_bits = 0;  // bool: 8
  bool elem_float = false;
  bool elem_unsigned = false;  // unsigned integers and bool
  const FloatFormat* narrow = nullptr;
};

class DType {
 public:
  constexpr DType();  // void
  constexpr explicit DType(const DTypeInfo* info) : info_(info) {}

  DTypeKind kind() const { return info_->kind; }
  std::string_view name() const { return info_->name; }
  uint64_t stable_hash() const { return info_->hash; }
  const DTypeInfo* info() const { return info_; }

  bool is_void() const { return kind() == DTypeKind::Void; }
  bool is_token() const { return kind() == DTypeKind::Token; }
  bool is_scalar() const { return kind() == DTypeKind::Scalar; }
  bool is_vector() const { return kind() == DTypeKind::Vector; }
  bool is_pointer() const { return kind() == DTypeKind::Pointer; }
  bool is_extension() const { return kind() == DTypeKind::Extension; }
  // A value a thread computes with: a scalar or a vector.
  bool is_value() const { return is_scalar() || is_vector(); }

  // Properties of the element type of a scalar or vector (false for other kinds).
  bool is_bool() const { return is_value() && info_->scalar == ScalarType::Bool; }
  bool is_int() const { return is_value() && !is_bool() && !info_->elem_float; }  // not bool
  bool is_unsigned() const { return is_int() && info_->elem_unsigned; }
  bool is_float() const { return is_value() && info_->elem_float; }
  ScalarType scalar_type() const { return info_->scalar; }
  DType element() const;  // the scalar of a vector; a scalar itself
  int count() const { return info_->count; }
  int bits() const { return is_value() ? info_->elem_bits : 0; }  // of one element; bool: 8
  int itemsize() const {  // bytes of the whole value (pointers: 8)
    return is_value() ? info_->elem_bits / 8 * info_->count : is_pointer() ? 8 : 0;
  }
  const FloatFormat* narrow_float() const {  // fp16/bf16/fp8, else nullptr
    return is_value() ? info_->narrow : nullptr;
  }
  // Range of an integer or bool type (unsigned 64-bit max does not fit: use umax()).
  int64_t imin() const;
  int64_t imax() const;
  uint64_t umax() const;

  DType pointee() const { return DType(info_->pointee); }
  AddrSpace space() const { return info_->space; }
  int64_t size() const { return info_->size; }
  const DTypeExtension* extension() const { return info_->ext; }

  // Derived types. Throw std::invalid_argument with a message on a type that cannot be
  // formed (a vector of pointers, lanes outside 2..256, a pointer to void ...).
  DType vec(int lanes) const;
  DType ptr(AddrSpace space = AddrSpace::Global, int64_t size = -1) const;

  // Registers (or finds) an extension dtype. The name must be new or an extension
  // already registered under it; the payload of a repeat registration is dropped.
  static DType extension(std::string name, std::unique_ptr<const DTypeExtension> payload);
  // Reads a canonical name ("float32", "float16x8", "ptr<float32,local,256>", an
  // extension's name); nullopt when there is no such dtype.
  static std::optional<DType> parse(std::string_view name);

  friend bool operator==(DType a, DType b) { return a.info_ == b.info_; }

 private:
  const DTypeInfo* info_;
};

namespace detail {
constexpr DTypeInfo scalar_info(std::string_view name, ScalarType s, int bits, bool fp, bool uns,
                                const FloatFormat* narrow = nullptr) {
  return {DTypeKind::Scalar, name, s,  1,   nullptr, AddrSpace::Global, -1, nullptr,
          fnv1a(name),       bits, fp, uns, narrow};
}
inline constexpr DTypeInfo kBuiltinDTypes[] = {
    {DTypeKind::Void, "void", ScalarType::Bool, 1, nullptr, AddrSpace::Global, -1, nullptr,
     fnv1a("void")},
    {DTypeKind::Token, "token", ScalarType::Bool, 1, nullptr, AddrSpace::Global, -1, nullptr,
     fnv1a("token")},
    scalar_info("bool", ScalarType::Bool, 8, false, true),
    scalar_info("int8", ScalarType::Int8, 8, false, false),
    scalar_info("int16", ScalarType::Int16, 16, false, false),
    scalar_info("int32", ScalarType::Int32, 32, false, false),
    scalar_info("int64", ScalarType::Int64, 64, false, false),
    scalar_info("uint8", ScalarType::UInt8, 8, false, true),
    scalar_info("uint16", ScalarType::UInt16, 16, false, true),
    scalar_info("uint32", ScalarType::UInt32, 32, false, true),
    scalar_info("uint64", ScalarType::UInt64, 64, false, true),
    scalar_info("float16", ScalarType::Float16, 16, true, false, &kFloat16),
    scalar_info("bfloat16", ScalarType::BFloat16, 16, true, false, &kBFloat16),
    scalar_info("float32", ScalarType::Float32, 32, true, false),
    scalar_info("float64", ScalarType::Float64, 64, true, false),
    scalar_info("float8_e4m3", ScalarType::Float8E4M3, 8, true, false, &kFloat8E4M3),
    scalar_info("float8_e5m2", ScalarType::Float8E5M2, 8, true, false, &kFloat8E5M2),
};
}  // namespace detail

constexpr DType::DType() : info_(&detail::kBuiltinDTypes[0]) {}

namespace dtypes {
inline constexpr DType void_{&detail::kBuiltinDTypes[0]};
inline constexpr DType token{&detail::kBuiltinDTypes[1]};  // an async copy's completion
inline constexpr DType bool_{&detail::kBuiltinDTypes[2]};
inline constexpr DType int8{&detail::kBuiltinDTypes[3]};
inline constexpr DType int16{&detail::kBuiltinDTypes[4]};
inline constexpr DType int32{&detail::kBuiltinDTypes[5]};
inline constexpr DType int64{&detail::kBuiltinDTypes[6]};
inline constexpr DType uint8{&detail::kBuiltinDTypes[7]};
inline constexpr DType uint16{&detail::kBuiltinDTypes[8]};
inline constexpr DType uint32{&detail::kBuiltinDTypes[9]};
inline constexpr DType uint64{&detail::kBuiltinDTypes[10]};
inline constexpr DType float16{&detail::kBuiltinDTypes[11]};
inline constexpr DType bfloat16{&detail::kBuiltinDTypes[12]};
inline constexpr DType float32{&detail::kBuiltinDTypes[13]};
inline constexpr DType float64{&detail::kBuiltinDTypes[14]};
inline constexpr DType float8_e4m3{&detail::kBuiltinDTypes[15]};
inline constexpr DType float8_e5m2{&detail::kBuiltinDTypes[16]};
// Every scalar type, in declaration order.
inline constexpr DType kScalars[] = {bool_,    int8,    int16,   int32,       int64,
                                     uint8,    uint16,  uint32,  uint64,      float16,
                                     bfloat16, float32, float64, float8_e4m3, float8_e5m2};
}  // namespace dtypes

}  // namespace kitten
