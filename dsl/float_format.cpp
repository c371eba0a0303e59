#include "dsl/float_format.h"

#include <algorithm>
#include <cmath>

namespace kitten {

uint32_t FloatFormat::max_finite_code() const {
  uint32_t all_ones_exp = (1u << exp_bits) - 1;
  uint32_t man_mask = (1u << man_bits) - 1;
  if (ieee) return ((all_ones_exp - 1) << man_bits) | man_mask;
  return (all_ones_exp << man_bits) | (man_mask - 1);  // S.1111.111 is NaN
}

uint32_t FloatFormat::nan_code() const {
  uint32_t all_ones_exp = (1u << exp_bits) - 1;
  if (ieee) return (all_ones_exp << man_bits) | (1u << (man_bits - 1));
  return (all_ones_exp << man_bits) | ((1u << man_bits) - 1);
}

double FloatFormat::max_finite() const { return decode_float(*this, max_finite_code()); }

double decode_float(const FloatFormat& f, uint32_t code) {
  uint32_t sign = (code >> (f.bits() - 1)) & 1;
  uint32_t exp = (code >> f.man_bits) & ((1u << f.exp_bits) - 1);
  uint32_t man = code & ((1u << f.man_bits) - 1);
  uint32_t magnitude = code & ((1u << (f.bits() - 1)) - 1);
  double v;
  if (f.ieee && exp == (1u << f.exp_bits) - 1) {
    v = man ? std::nan("") : INFINITY;
  } else if (!f.ieee && magnitude == f.nan_code()) {
    v = std::nan("");
  } else if (exp == 0) {
    v = std::ldexp(double(man), 1 - f.bias() - f.man_bits);
  } else {
    v = std::ldexp(double(man | (1u << f.man_bits)), int(exp) - f.bias() - f.man_bits);
  }
  return sign ? -v : v;
}

uint32_t encode_float(const FloatFormat& f, double x, Saturation sat) {
  uint32_t sign = std::signbit(x) ? 1u << (f.bits() - 1) : 0u;
  uint32_t inf_or_nan = f.ieee ? ((1u << f.exp_bits) - 1) << f.man_bits : f.nan_code();
  if (std::isnan(x)) return sign | f.nan_code();
  double ax = std::fabs(x);
  if (std::isinf(ax)) return sign | (sat == Saturation::Finite ? f.max_finite_code() : inf_or_nan);
  if (ax == 0.0) return sign;

  // Express ax = m * 2^q with q the spacing of the format at ax's binade (subnormal
  // spacing below the smallest normal), then round m to an integer, ties to even.
  const int emin = 1 - f.bias();
  int e = std::max(std::ilogb(ax), emin);
  int q = e - f.man_bits;
  double m = std::ldexp(ax, -q);  // exact: a power-of-two scaling of a double
  double fl = std::floor(m);
  double frac = m - fl;
  uint64_t r = uint64_t(fl);
  if (frac > 0.5 || (frac == 0.5 && (r & 1))) ++r;

  // r < 2^(man+1). For a subnormal binade (e == emin, no implicit bit) r is the code
  // itself, and r == 2^man rolls over into the smallest normal. For a normal binade r
  // has the implicit bit; r == 2^(man+1) rolls over into the next binade.
  uint64_t code;
  if (r < (uint64_t(1) << f.man_bits)) {
    code = r;
  } else {
    if (r == (uint64_t(2) << f.man_bits)) {
      r >>= 1;
      ++e;
    }
    code = (uint64_t(e + f.bias()) << f.man_bits) | (r & ((uint64_t(1) << f.man_bits) - 1));
  }
  if (code > f.max_finite_code())
    return sign | (sat == Saturation::Finite ? f.max_finite_code() : inf_or_nan);
  return sign | uint32_t(code);
}

}  // namespace kitten
