// Exhaustive tests of the narrow float conversions against references that share no code
// with them: a brute-force nearest-value search, bfloat16's bit layout, the compiler's
// _Float16 where it has one, and hand-checked anchor values.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "dsl/float_format.h"

namespace kitten {
namespace {

const FloatFormat* kFormats[] = {&kFloat16, &kBFloat16, &kFloat8E4M3, &kFloat8E5M2};

uint32_t sign_bit(const FloatFormat& f) { return 1u << (f.bits() - 1); }
uint32_t num_codes(const FloatFormat& f) { return 1u << f.bits(); }

// The value of a code by the textbook formula, with multiplications, not ldexp.
double textbook_value(const FloatFormat& f, uint32_t code) {
  uint32_t e = (code >> f.man_bits) & ((1u << f.exp_bits) - 1), m = code & ((1u << f.man_bits) - 1);
  double scale = 1.0;
  int p = e == 0 ? 1 - f.bias() : int(e) - f.bias();
  for (int i = 0; i < std::abs(p); ++i) scale = p > 0 ? scale * 2 : scale / 2;
  double frac = double(m) / double(1u << f.man_bits);
  double v = (e == 0 ? frac : 1.0 + frac) * scale;
  return (code & sign_bit(f)) ? -v : v;
}

bool is_nan_code(const FloatFormat& f, uint32_t code) {
  uint32_t mag = code & (sign_bit(f) - 1);
  if (!f.ieee) return mag == f.nan_code();
  return (mag >> f.man_bits) == (1u << f.exp_bits) - 1 && (mag & ((1u << f.man_bits) - 1));
}
bool is_inf_code(const FloatFormat& f, uint32_t code) {
  uint32_t mag = code & (sign_bit(f) - 1);
  return f.ieee && mag == ((1u << f.exp_bits) - 1) << f.man_bits;
}

// Brute force: the finite code nearest to x, ties to the even code, beyond the largest
// finite value per the saturation rule.
uint32_t nearest_reference(const FloatFormat& f, double x, Saturation sat) {
  uint32_t sign = std::signbit(x) ? sign_bit(f) : 0;
  double ax = std::fabs(x);
  // Past the largest finite value by half a step or more (a tie goes to the even code),
  // the value has overflowed.
  uint32_t mx = f.max_finite_code();
  double max_value = textbook_value(f, mx);
  double limit = max_value + (max_value - textbook_value(f, mx - 1)) / 2;
  bool overflow = ax > limit || (ax == limit && (mx & 1));
  if (overflow && sat == Saturation::None)
    return sign | (f.ieee ? ((1u << f.exp_bits) - 1) << f.man_bits : f.nan_code());
  if (ax >= max_value) return sign | mx;
  uint32_t best = 0;
  double best_err = INFINITY;
  for (uint32_t c = 0; c <= mx; ++c) {
    double err = std::fabs(textbook_value(f, c) - ax);
    if (err < best_err || (err == best_err && (c & 1) == 0)) best = c, best_err = err;
  }
  return sign | best;
}

TEST(FloatFormat, AnchorValues) {
  EXPECT_EQ(decode_float(kFloat8E4M3, 0x7E), 448.0);
  EXPECT_EQ(decode_float(kFloat8E4M3, 0x38), 1.0);
  EXPECT_EQ(decode_float(kFloat8E4M3, 0x08), std::ldexp(1.0, -6));
  EXPECT_EQ(decode_float(kFloat8E4M3, 0x01), std::ldexp(1.0, -9));
  EXPECT_EQ(decode_float(kFloat8E4M3, 0x78), 256.0);  // all-ones exponent is finite in e4m3
  EXPECT_TRUE(std::isnan(decode_float(kFloat8E4M3, 0x7F)));
  EXPECT_TRUE(std::isnan(decode_float(kFloat8E4M3, 0xFF)));
  EXPECT_EQ(decode_float(kFloat8E5M2, 0x7B), 57344.0);
  EXPECT_EQ(decode_float(kFloat8E5M2, 0x3C), 1.0);
  EXPECT_EQ(decode_float(kFloat8E5M2, 0x01), std::ldexp(1.0, -16));
  EXPECT_EQ(decode_float(kFloat8E5M2, 0x7C), INFINITY);
  EXPECT_EQ(decode_float(kFloat8E5M2, 0xFC), -INFINITY);
  EXPECT_TRUE(std::isnan(decode_float(kFloat8E5M2, 0x7D)));
  EXPECT_EQ(decode_float(kFloat16, 0x7BFF), 65504.0);
  EXPECT_EQ(decode_float(kFloat16, 0x0001), std::ldexp(1.0, -24));
  EXPECT_EQ(decode_float(kFloat16, 0x3C00), 1.0);
  EXPECT_EQ(decode_float(kFloat16, 0xC000), -2.0);
  EXPECT_EQ(decode_float(kBFloat16, 0x3F80), 1.0);
  EXPECT_TRUE(std::signbit(decode_float(kFloat16, 0x8000)));
  EXPECT_EQ(kFloat8E4M3.max_finite(), 448.0);
  EXPECT_EQ(kFloat8E5M2.max_finite(), 57344.0);
  EXPECT_EQ(kBFloat16.max_finite(), double(std::bit_cast<float>(0x7F7F0000u)));
}

// Every code decodes to the textbook value (or NaN/Inf), and encodes back to itself.
TEST(FloatFormat, EveryCodeDecodesAndRoundTrips) {
  for (const FloatFormat* f : kFormats) {
    SCOPED_TRACE(f->name);
    for (uint32_t c = 0; c < num_codes(*f); ++c) {
      double v = decode_float(*f, c);
      if (is_nan_code(*f, c)) {
        ASSERT_TRUE(std::isnan(v)) << c;
        ASSERT_TRUE(is_nan_code(*f, encode_float(*f, v))) << c;
        continue;
      }
      if (is_inf_code(*f, c)) {
        ASSERT_TRUE(std::isinf(v)) << c;
      } else {
        ASSERT_EQ(v, textbook_value(*f, c)) << c;
      }
      ASSERT_EQ(encode_float(*f, v, Saturation::None), c) << c;
      ASSERT_EQ(encode_float(*f, float(v), Saturation::None), c) << c;  // float32: exact too
      ASSERT_EQ(encode_float(*f, v, Saturation::Finite),
                is_inf_code(*f, c) ? (c & sign_bit(*f)) | f->max_finite_code() : c);
    }
  }
}

TEST(FloatFormat, PositiveCodesIncreaseStrictly) {
  for (const FloatFormat* f : kFormats) {
    for (uint32_t c = 1; c <= f->max_finite_code(); ++c)
      ASSERT_LT(decode_float(*f, c - 1), decode_float(*f, c)) << f->name << " " << c;
  }
}

// Between every two neighbouring values: the midpoint goes to the even code, and the
// doubles (and floats) just either side of it go to the nearer neighbour.
TEST(FloatFormat, TiesToEvenAndNeighboursOfEveryMidpoint) {
  for (const FloatFormat* f : kFormats) {
    SCOPED_TRACE(f->name);
    for (uint32_t a = 0; a < f->max_finite_code(); ++a) {
      double va = decode_float(*f, a), vb = decode_float(*f, a + 1);
      double mid = (va + vb) / 2;  // exact: one more bit than the format has
      uint32_t even = (a & 1) ? a + 1 : a;
      for (uint32_t s : {0u, sign_bit(*f)}) {
        double m = s ? -mid : mid;
        ASSERT_EQ(encode_float(*f, m), s | even) << a;
        ASSERT_EQ(encode_float(*f, std::nextafter(m, s ? -INFINITY : INFINITY)), s | (a + 1)) << a;
        ASSERT_EQ(encode_float(*f, std::nextafter(m, 0.0)), s | a) << a;
        float mf = float(m);
        ASSERT_EQ(double(mf), m);
        ASSERT_EQ(encode_float(*f, std::nextafterf(mf, s ? -INFINITY : INFINITY)), s | (a + 1));
        ASSERT_EQ(encode_float(*f, std::nextafterf(mf, 0.0f)), s | a) << a;
      }
    }
  }
}

TEST(FloatFormat, OverflowSaturationAndSpecials) {
  // float16: 65520 is the tie between 65504 and 65536, which is odd -> rounds up -> Inf.
  EXPECT_EQ(float_to_half(65520.0f), 0x7C00);
  EXPECT_EQ(float_to_half(std::nextafterf(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(float_to_half(-1e30f), 0xFC00);
  EXPECT_EQ(encode_float(kFloat16, 1e30, Saturation::Finite), 0x7BFFu);
  EXPECT_EQ(float_to_bf16(INFINITY), 0x7F80);
  // e4m3: 464 is the tie between 448 and (the NaN slot) 480: to even = 448.
  EXPECT_EQ(float_to_e4m3(464.0f, Saturation::None), 0x7E);
  EXPECT_EQ(float_to_e4m3(std::nextafterf(464.0f, 1e9f), Saturation::None), 0x7F);
  EXPECT_EQ(float_to_e4m3(1e9f), 0x7E);
  EXPECT_EQ(float_to_e4m3(-1e9f), 0xFE);
  EXPECT_EQ(float_to_e4m3(INFINITY), 0x7E);
  EXPECT_EQ(float_to_e4m3(-INFINITY, Saturation::None), 0xFF);
  EXPECT_EQ(float_to_e4m3(NAN) & 0x7F, 0x7F);
  // e5m2: 61440 is the tie between 57344 (odd mantissa) and 65536: overflows.
  EXPECT_EQ(float_to_e5m2(61440.0f, Saturation::None), 0x7C);
  EXPECT_EQ(float_to_e5m2(61440.0f), 0x7B);
  EXPECT_EQ(float_to_e5m2(-INFINITY, Saturation::None), 0xFC);
  EXPECT_EQ(float_to_e5m2(-INFINITY), 0xFB);
  // Signed zero and underflow to zero keep the sign.
  EXPECT_EQ(float_to_half(-0.0f), 0x8000);
  EXPECT_EQ(float_to_e4m3(-1e-30f), 0x80);
  EXPECT_EQ(float_to_bf16(1e-45f), 0x0000);  // float32's smallest subnormal: below half of bf16's
  for (const FloatFormat* f : kFormats) {
    EXPECT_TRUE(std::isnan(decode_float(*f, encode_float(*f, NAN))));
    EXPECT_TRUE(std::isnan(decode_float(*f, encode_float(*f, -NAN))));
  }
}

// Every float16 and bfloat16 value converted to float8 equals the brute-force nearest,
// with both saturation rules: the narrow-to-narrow conversions, exhaustively.
TEST(FloatFormat, EveryHalfAndBf16ToFloat8MatchesBruteForce) {
  for (const FloatFormat* from : {&kFloat16, &kBFloat16}) {
    for (const FloatFormat* to : {&kFloat8E4M3, &kFloat8E5M2}) {
      SCOPED_TRACE(std::string(from->name) + " -> " + std::string(to->name));
      for (uint32_t c = 0; c < 65536; ++c) {
        double v = decode_float(*from, c);
        if (std::isnan(v) || std::isinf(v)) continue;
        for (Saturation sat : {Saturation::Finite, Saturation::None})
          ASSERT_EQ(encode_float(*to, v, sat), nearest_reference(*to, v, sat)) << c;
      }
    }
  }
}

TEST(FloatFormat, EveryBf16ToHalfMatchesBinarySearchReference) {
  std::vector<double> values;  // every non-negative finite float16, ascending
  for (uint32_t c = 0; c <= kFloat16.max_finite_code(); ++c)
    values.push_back(textbook_value(kFloat16, c));
  for (uint32_t c = 0; c < 65536; ++c) {
    double v = decode_float(kBFloat16, c), av = std::fabs(v);
    if (std::isnan(v)) continue;
    uint16_t got = float_to_half(float(v));
    if (av >= 65520.0) {
      ASSERT_EQ(got, (std::signbit(v) ? 0xFC00 : 0x7C00)) << c;
      continue;
    }
    auto hi = std::lower_bound(values.begin(), values.end(), av);
    uint32_t h = uint32_t(hi - values.begin());
    uint32_t want = h;
    if (*hi != av) {
      double dlo = av - values[h - 1], dhi = *hi - av;
      want = dlo < dhi || (dlo == dhi && ((h - 1) & 1) == 0) ? h - 1 : h;
    }
    ASSERT_EQ(got, want | (std::signbit(v) ? 0x8000u : 0u)) << c;
  }
}

// bfloat16 is the top half of a float32: round to nearest even on the low 16 bits.
TEST(FloatFormat, Bf16MatchesBitLayoutOnRandomFloats) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 1000000; ++i) {
    uint32_t bits = rng();
    float x = std::bit_cast<float>(bits);
    if (std::isnan(x)) continue;
    uint32_t rounded = bits + 0x7FFF + ((bits >> 16) & 1);
    uint16_t want = uint16_t(rounded >> 16);
    ASSERT_EQ(float_to_bf16(x), want) << std::hex << bits;
    ASSERT_EQ(std::bit_cast<uint32_t>(bf16_to_float(want)), uint32_t(want) << 16);
  }
}

#if defined(__FLT16_MAX__)
TEST(FloatFormat, HalfMatchesCompilerFloat16OnRandomFloats) {
  std::mt19937 rng(99);
  for (int i = 0; i < 1000000; ++i) {
    float x = std::bit_cast<float>(uint32_t(rng()));
    if (std::isnan(x)) continue;
    _Float16 h = _Float16(x);
    ASSERT_EQ(float_to_half(x), std::bit_cast<uint16_t>(h)) << x;
  }
  for (uint32_t c = 0; c < 65536; ++c) {
    float ref = float(std::bit_cast<_Float16>(uint16_t(c)));
    float got = half_to_float(uint16_t(c));
    ASSERT_TRUE(got == ref || (std::isnan(got) && std::isnan(ref))) << c;
  }
}
#else
TEST(FloatFormat, HalfMatchesCompilerFloat16OnRandomFloats) {
  GTEST_SKIP() << "this compiler has no _Float16 to compare with";
}
#endif

TEST(FloatFormat, RandomDoublesMatchBruteForce) {
  std::mt19937_64 rng(7);
  for (const FloatFormat* f : {&kFloat8E4M3, &kFloat8E5M2}) {
    std::uniform_real_distribution<double> log_mag(-20, 18);
    for (int i = 0; i < 20000; ++i) {
      double x = std::exp2(log_mag(rng)) * (rng() & 1 ? -1 : 1);
      for (Saturation sat : {Saturation::Finite, Saturation::None})
        ASSERT_EQ(encode_float(*f, x, sat), nearest_reference(*f, x, sat)) << f->name << " " << x;
    }
  }
}

}  // namespace
}  // namespace kitten
