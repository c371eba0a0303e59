// Exact conversions between float32/float64 and the narrow float formats kitten uses
// (float16, bfloat16, float8 e4m3 and e5m2): round to nearest even, NaN and Inf kept,
// and the saturation rules of the float8 formats. One generic encoder serves every
// format, so there is one rounding routine to trust.
#pragma once

#include <cstdint>
#include <string_view>

namespace kitten {

// What happens to a finite value beyond the largest finite one after rounding, and to
// Inf in a format without Inf. Finite: clamp to +-max finite (CUDA's __NV_SATFINITE, the
// default of its fp8 types). None: become Inf where the format has it, else NaN.
enum class Saturation { Finite, None };

// A binary floating-point format of 1 sign bit, `exp_bits` exponent bits and `man_bits`
// mantissa bits. `ieee` formats reserve the all-ones exponent for Inf and NaN; the
// others ("finite", e.g. float8 e4m3fn) have no Inf and only S.1111.111 is NaN.
struct FloatFormat {
  std::string_view name;
  int exp_bits;
  int man_bits;
  bool ieee;
  Saturation cast_saturation;  // what a CAST (and a rounded constant) does on overflow

  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  int bits() const { return 1 + exp_bits + man_bits; }
  uint32_t max_finite_code() const;  // the largest finite magnitude, sign bit clear
  uint32_t nan_code() const;         // the canonical quiet NaN, sign bit clear
  double max_finite() const;
};

// float16 and bfloat16 overflow to Inf as IEEE does; float8 saturates, as CUDA's fp8
// types and conversion intrinsics do by default.
inline constexpr FloatFormat kFloat16{"float16", 5, 10, true, Saturation::None};
inline constexpr FloatFormat kBFloat16{"bfloat16", 8, 7, true, Saturation::None};
inline constexpr FloatFormat kFloat8E4M3{"float8_e4m3", 4, 3, false, Saturation::Finite};
inline constexpr FloatFormat kFloat8E5M2{"float8_e5m2", 5, 2, true, Saturation::Finite};

// Encodes x with one rounding (round to nearest, ties to even). Every float32 is exact
// in a double, so this is also the float32 conversion: no double rounding anywhere.
uint32_t encode_float(const FloatFormat& f, double x, Saturation sat);
// The same with the format's own overflow rule (cast_saturation).
inline uint32_t encode_float(const FloatFormat& f, double x) {
  return encode_float(f, x, f.cast_saturation);
}
// Decodes a code exactly (every value of these formats is a float32, hence a double).
double decode_float(const FloatFormat& f, uint32_t code);

inline uint16_t float_to_half(float x) { return uint16_t(encode_float(kFloat16, x)); }
inline float half_to_float(uint16_t h) { return float(decode_float(kFloat16, h)); }
inline uint16_t float_to_bf16(float x) { return uint16_t(encode_float(kBFloat16, x)); }
inline float bf16_to_float(uint16_t b) { return float(decode_float(kBFloat16, b)); }
inline uint8_t float_to_e4m3(float x, Saturation s = Saturation::Finite) {
  return uint8_t(encode_float(kFloat8E4M3, x, s));
}
inline float e4m3_to_float(uint8_t v) { return float(decode_float(kFloat8E4M3, v)); }
inline uint8_t float_to_e5m2(float x, Saturation s = Saturation::Finite) {
  return uint8_t(encode_float(kFloat8E5M2, x, s));
}
inline float e5m2_to_float(uint8_t v) { return float(decode_float(kFloat8E5M2, v)); }

}  // namespace kitten
