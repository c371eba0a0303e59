#include "dsl/arg.h"

#include <bit>
#include <cstdio>
#include <cstdlib>

namespace kitten {

std::string_view arg_kind_name(ArgKind k) {
  static constexpr std::string_view names[] = {"none",         "int",       "const", "name",
                                               "axis",         "special",   "var",   "ints",
                                               "shuffle mode", "atomic op", "alloc", "extension"};
  return names[int(k)];
}

std::string_view axis_kind_name(AxisKind k) {
  static constexpr std::string_view names[] = {"global", "local",  "loop",
                                               "reduce", "upcast", "unroll"};
  return names[int(k)];
}

std::string_view special_name(SpecialArg s) {
  static constexpr std::string_view names[2][3] = {{"blockIdx.x", "blockIdx.y", "blockIdx.z"},
                                                   {"threadIdx.x", "threadIdx.y", "threadIdx.z"}};
  if (s.dim < 0 || s.dim > 2) return "?";
  return names[int(s.kind)][s.dim];
}

std::string_view shuffle_mode_name(ShuffleMode m) {
  static constexpr std::string_view names[] = {"idx", "xor", "up", "down"};
  return names[int(m)];
}

std::string_view atomic_op_name(AtomicOp a) {
  static constexpr std::string_view names[] = {"add", "max", "min"};
  return names[int(a)];
}

namespace {
uint64_t hash_int(uint64_t h, int64_t v) { return hash_combine(h, uint64_t(v)); }

bool same_in(DType dtype, double a, double b) {
  if (const FloatFormat* f = dtype.narrow_float())
    return encode_float(*f, a) == encode_float(*f, b);
  if (dtype.element() == dtypes::float32) return float(a) == float(b);
  return a == b || (a != a && b != b);
}
}  // namespace

uint64_t arg_stable_hash(const Arg& a) {
  uint64_t h = fnv1a(arg_kind_name(arg_kind(a)));
  struct Visitor {
    uint64_t h;
    uint64_t operator()(std::monostate) const { return h; }
    uint64_t operator()(int64_t v) const { return hash_int(h, v); }
    uint64_t operator()(ConstArg c) const { return hash_combine(h, c.bits); }
    uint64_t operator()(const std::string& s) const { return hash_combine(h, fnv1a(s)); }
    uint64_t operator()(AxisArg x) const {
      return hash_combine(hash_int(h, x.id), fnv1a(axis_kind_name(x.kind)));
    }
    uint64_t operator()(SpecialArg s) const { return hash_combine(h, fnv1a(special_name(s))); }
    uint64_t operator()(const VarArg& v) const {
      return hash_int(hash_int(hash_combine(h, fnv1a(v.name)), v.min), v.max);
    }
    uint64_t operator()(const std::vector<int64_t>& xs) const {
      uint64_t r = hash_int(h, int64_t(xs.size()));
      for (int64_t x : xs) r = hash_int(r, x);
      return r;
    }
    uint64_t operator()(ShuffleMode m) const {
      return hash_combine(h, fnv1a(shuffle_mode_name(m)));
    }
    uint64_t operator()(AtomicOp o) const { return hash_combine(h, fnv1a(atomic_op_name(o))); }
    uint64_t operator()(AllocArg a) const {
      uint64_t out = hash_int(hash_int(h, a.slot), a.align);
      return a.swizzle == Swizzle::None ? out : hash_int(out, int64_t(a.swizzle));
    }
    uint64_t operator()(const ExtArg& e) const {
      return hash_combine(hash_combine(h, fnv1a(e.value->kind())), e.value->stable_hash());
    }
  };
  return std::visit(Visitor{h}, a);
}

ConstArg const_bits_of_double(double v) { return {std::bit_cast<uint64_t>(v)}; }
ConstArg const_bits_of_int(int64_t v) { return {uint64_t(v)}; }

double const_as_double(ConstArg c, DType dtype) {
  if (dtype.is_float()) return std::bit_cast<double>(c.bits);
  if (dtype.is_unsigned()) return double(c.bits);
  return double(int64_t(c.bits));
}

int64_t const_as_int(ConstArg c, DType dtype) {
  if (dtype.is_float()) return int64_t(std::bit_cast<double>(c.bits));
  return int64_t(c.bits);
}

std::string arg_to_string(const Arg& a, DType dtype) {
  struct Visitor {
    DType dtype;
    std::string operator()(std::monostate) const { return ""; }
    std::string operator()(int64_t v) const { return std::to_string(v); }
    std::string operator()(ConstArg c) const {
      if (dtype.is_bool()) return c.bits ? "true" : "false";
      if (dtype.is_unsigned()) return std::to_string(c.bits);
      if (!dtype.is_float()) return std::to_string(int64_t(c.bits));
      // The shortest text that reads back as the same value of this dtype.
      double v = std::bit_cast<double>(c.bits);
      char buf[40];
      for (int precision = 1; precision <= 17; ++precision) {
        std::snprintf(buf, sizeof buf, "%.*g", precision, v);
        if (same_in(dtype, std::strtod(buf, nullptr), v)) break;
      }
      return buf;
    }
    std::string operator()(const std::string& s) const { return "\"" + s + "\""; }
    std::string operator()(AxisArg x) const {
      return "r" + std::to_string(x.id) + " " + std::string(axis_kind_name(x.kind));
    }
    std::string operator()(SpecialArg s) const { return std::string(special_name(s)); }
    std::string operator()(const VarArg& v) const {
      return v.name + " " + std::to_string(v.min) + ".." + std::to_string(v.max);
    }
    std::string operator()(const std::vector<int64_t>& xs) const {
      std::string r = "(";
      for (size_t i = 0; i < xs.size(); ++i) r += (i ? ", " : "") + std::to_string(xs[i]);
      return r + ")";
    }
    std::string operator()(ShuffleMode m) const { return std::string(shuffle_mode_name(m)); }
    std::string operator()(AtomicOp o) const { return std::string(atomic_op_name(o)); }
    std::string operator()(AllocArg a) const {
      static constexpr const char* modes[] = {"none", "32B", "64B", "128B"};
      return "slot " + std::to_string(a.slot) + ", align " + std::to_string(a.align) +
             (a.swizzle == Swizzle::None ? "" : ", swizzle " + std::string(modes[int(a.swizzle)]));
    }
    std::string operator()(const ExtArg& e) const { return e.value->to_string(); }
  };
  return std::visit(Visitor{dtype}, a);
}

}  // namespace kitten
