#include "backends/c_dialects.h"

namespace kitten {

namespace {

// Exact float16/bfloat16 conversions, written once for both dialects over KT_FN,
// kt_f2u, kt_u2f and kt_rint, which each dialect defines first. GPUs from sm_80 on convert
// float16 and bfloat16 with their own instructions: the software rounding costs about eight
// integer instructions a value, which flash attention's P pays for every score.
constexpr const char* kCPrelude = R"(typedef _Bool bool;
#define KT_FN static inline
KT_FN unsigned int kt_f2u(float f) { unsigned int x; __builtin_memcpy(&x, &f, 4); return x; }
KT_FN float kt_u2f(unsigned int x) { float f; __builtin_memcpy(&f, &x, 4); return f; }
KT_FN float kt_rint(float x) { return __builtin_rintf(x); }
KT_FN float kt_exp2_ftz(float x) {
  float r = __builtin_exp2f(__builtin_fabsf(x) < 1.17549435e-38f ? 0.0f : x);
  return r < 1.17549435e-38f ? 0.0f : r;
}
)";
constexpr const char* kCudaPrelude = R"(#define KT_FN static __device__ __forceinline__
KT_FN unsigned int kt_f2u(float f) { return __float_as_uint(f); }
KT_FN float kt_u2f(unsigned int x) { return __uint_as_float(x); }
KT_FN float kt_rint(float x) { return rintf(x); }
KT_FN float kt_exp2_ftz(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
)";
constexpr const char* kHalfPrelude = R"(typedef unsigned short kt_half;
typedef unsigned short kt_bf16;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
/* The GPU's own conversions: the same rounding in one instruction (a NaN becomes the
   canonical NaN there, where the exact code below keeps its sign and top payload bits). */
KT_FN float kt_h2f(kt_half h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
KT_FN kt_half kt_f2h(float f) {
  kt_half h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}
KT_FN kt_bf16 kt_f2bf(float f) {
  kt_bf16 b;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f));
  return b;
}
#else
KT_FN float kt_h2f(kt_half h) {
  unsigned int sign = (unsigned int)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0) { float v = (float)m * 5.9604644775390625e-08f; return sign ? -v : v; }
  return kt_u2f(sign | (e == 0x1F ? 0x7F800000u | (m << 13) : ((e + 112u) << 23) | (m << 13)));
}
KT_FN kt_half kt_f2h(float f) {
  unsigned int x = kt_f2u(f);
  unsigned int sign = (x >> 16) & 0x8000u, ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return (kt_half)(sign | 0x7E00u);
  if (ax >= 0x477FF000u) return (kt_half)(sign | 0x7C00u);
  if (ax < 0x38800000u) return (kt_half)(sign | (unsigned int)kt_rint(kt_u2f(ax) * 16777216.0f));
  unsigned int m = ax - 0x38000000u;
  m += 0xFFFu + ((m >> 13) & 1u);
  return (kt_half)(sign | (m >> 13));
}
KT_FN kt_bf16 kt_f2bf(float f) {
  unsigned int x = kt_f2u(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (kt_bf16)((x >> 16) | 0x40u);
  x += 0x7FFFu + ((x >> 16) & 1u);
  return (kt_bf16)(x >> 16);
}
#endif
KT_FN float kt_bf2f(kt_bf16 b) { return kt_u2f((unsigned int)b << 16); }
typedef unsigned char kt_e4m3;
typedef unsigned char kt_e5m2;
KT_FN float kt_e4m3_2f(kt_e4m3 v) {
  unsigned int sign = (unsigned int)(v & 0x80u) << 24, e = (v >> 3) & 0xFu, m = v & 0x7u;
  if ((v & 0x7Fu) == 0x7Fu) return kt_u2f(0x7FC00000u);
  if (e == 0) { float x = (float)m * 0.001953125f; return sign ? -x : x; }
  return kt_u2f(sign | ((e + 120u) << 23) | (m << 20));
}
KT_FN kt_e4m3 kt_f2e4m3(float f) {  /* round to nearest even, saturating to +-448 */
  unsigned int x = kt_f2u(f), sign = (x >> 24) & 0x80u;
  float a = kt_u2f(x & 0x7FFFFFFFu);
  if (a != a) return (kt_e4m3)(sign | 0x7Fu);
  if (a >= 464.0f) return (kt_e4m3)(sign | 0x7Eu);
  if (a < 0.015625f) return (kt_e4m3)(sign | (unsigned int)kt_rint(a * 512.0f));
  unsigned int m = kt_f2u(a) - (120u << 23);
  m += 0x7FFFFu + ((m >> 20) & 1u);
  return (kt_e4m3)(sign | (m >> 20));
}
KT_FN float kt_e5m2_2f(kt_e5m2 v) {
  unsigned int sign = (unsigned int)(v & 0x80u) << 24, e = (v >> 2) & 0x1Fu, m = v & 0x3u;
  if (e == 0) { float x = (float)m * 1.52587890625e-05f; return sign ? -x : x; }
  return kt_u2f(sign | (e == 0x1F ? 0x7F800000u | (m << 21) : ((e + 112u) << 23) | (m << 21)));
}
KT_FN kt_e5m2 kt_f2e5m2(float f) {  /* round to nearest even, saturating to +-57344 */
  unsigned int x = kt_f2u(f), sign = (x >> 24) & 0x80u;
  float a = kt_u2f(x & 0x7FFFFFFFu);
  if (a != a) return (kt_e5m2)(sign | 0x7Eu);
  if (a >= 61440.0f) return (kt_e5m2)(sign | 0x7Bu);
  if (a < 6.103515625e-05f) return (kt_e5m2)(sign | (unsigned int)kt_rint(a * 65536.0f));
  unsigned int m = kt_f2u(a) - (112u << 23);
  m += 0xFFFFFu + ((m >> 21) & 1u);
  return (kt_e5m2)(sign | (m >> 21));
}
KT_FN float kt_d2f_odd(double d) {  /* to float, rounding to odd: one later rounding to a */
  float f = (float)d;                /* narrow float is then exact (24 >= 2 + its bits) */
  if ((double)f == d || f != f) return f;
  unsigned int u = kt_f2u(f);
  if (((double)f > d) == (d > 0)) u -= 1u; /* it rounded away from zero: step back */
  return kt_u2f(u | 1u);
}
)";

// ALU ops print with {0} {1} {2} for the operands (floats widened to float or double),
// {fn:NAME} for the dialect's math function NAME (f suffixed for float) and {one} for 1.0
// of the operand type; integer and float forms differ only where C's operators do.
struct AluSyntax {
  const char* any;       // the form for every dtype, or for integers and bool
  const char* floating;  // the form for floats, when it differs
};

AluSyntax syntax(Op op) {
  switch (op) {
    case Op::NEG:
      return {"(-{0})", nullptr};
    case Op::RECIP:
      return {"({one} / {0})", nullptr};
    case Op::SQRT:
      return {"{fn:sqrt}({0})", nullptr};
    case Op::EXP2:
      return {"{fn:exp2}({0})", nullptr};
    case Op::EXP2_FTZ:
      return {"kt_exp2_ftz({0})", nullptr};
    case Op::LOG2:
      return {"{fn:log2}({0})", nullptr};
    case Op::SIN:
      return {"{fn:sin}({0})", nullptr};
    case Op::TRUNC:
      return {"{fn:trunc}({0})", nullptr};
    case Op::ADD:
      return {"({0} + {1})", nullptr};
    case Op::SUB:
      return {"({0} - {1})", nullptr};
    case Op::MUL:
      return {"({0} * {1})", nullptr};
    case Op::FDIV:
    case Op::IDIV:
      return {"({0} / {1})", nullptr};
    case Op::MOD:
      return {"({0} % {1})", nullptr};
    case Op::MAX:
      return {"({0} > {1} ? {0} : {1})", "{fn:fmax}({0}, {1})"};
    case Op::MIN:
      return {"({0} < {1} ? {0} : {1})", "{fn:fmin}({0}, {1})"};
    case Op::CMPLT:
      return {"({0} < {1})", nullptr};
    case Op::CMPEQ:
      return {"({0} == {1})", nullptr};
    case Op::CMPNE:
      return {"({0} != {1})", nullptr};
    case Op::AND:
      return {"({0} & {1})", nullptr};
    case Op::OR:
      return {"({0} | {1})", nullptr};
    case Op::XOR:
      return {"({0} ^ {1})", nullptr};
    case Op::SHL:
      return {"({0} << {1})", nullptr};
    case Op::SHR:
      return {"({0} >> {1})", nullptr};
    case Op::WHERE:
      return {"({0} ? {1} : {2})", nullptr};
    case Op::MULACC:
      return {"({0} * {1} + {2})", nullptr};
      KITTEN_STRUCTURE_OPS(KITTEN_OP_CASE)
      break;
  }
  return {nullptr, nullptr};
}

const CDialect kC{"cpu", kCPrelude, "__builtin_", false};
const CDialect kCuda{"cuda", kCudaPrelude, "", true};

}  // namespace

const CDialect& c_dialect() { return kC; }
const CDialect& cuda_dialect() { return kCuda; }
const char* narrow_float_prelude() { return kHalfPrelude; }

std::optional<std::string> print_alu(const CDialect& d, Op op, DType operand,
                                     std::span<const std::string> args) {
  AluSyntax s = syntax(op);
  if (!s.any) return std::nullopt;
  bool f = operand.is_float() && op != Op::WHERE;
  bool f64 = operand.element() == dtypes::float64;
  std::string_view form = f && s.floating ? s.floating : s.any;
  std::string out;
  for (size_t i = 0; i < form.size(); ++i) {
    if (form[i] != '{') {
      out += form[i];
      continue;
    }
    size_t close = form.find('}', i);
    std::string_view key = form.substr(i + 1, close - i - 1);
    if (key == "one")
      out += f64 ? "1.0" : "1.0f";
    else if (key.substr(0, 3) == "fn:")
      out += std::string(d.math_prefix) + std::string(key.substr(3)) + (f64 ? "" : "f");
    else
      out += args[size_t(key[0] - '0')];
    i = close;
  }
  return out;
}

}  // namespace kitten
