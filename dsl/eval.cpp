#include "dsl/eval.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "dsl/float_format.h"
#include "dsl/printer.h"
#include "dsl/uop.h"

namespace kitten {

namespace {

using i128 = __int128;

bool is_signed_int(DType d) { return d.is_int() && !d.is_unsigned(); }

// An exact integer result wrapped to `out`. Undefined where int or a wider signed type
// cannot hold it; narrower ones compute in int (C's promotion) and wrap on the way back.
EvalResult integer(i128 exact, DType out) {
  EvalResult r;
  r.value.i = wrap_to(int64_t(uint64_t(exact)), out);
  bool promoted = out.bits() < 32 && exact >= INT32_MIN && exact <= INT32_MAX;
  if (is_signed_int(out) && i128(r.value.i) != exact && !promoted) r.fault = EvalFault::Undefined;
  return r;
}

EvalResult floating(double x, DType out) {
  EvalResult r;
  r.value.f = round_to(x, out);
  return r;
}

EvalResult boolean(bool b) {
  EvalResult r;
  r.value.i = b;
  return r;
}

// An operand as the exact integer it stands for (unsigned types by their bits).
i128 exact(Scalar s, DType d) {
  if (d.is_unsigned()) return i128(uint64_t(s.i));
  return i128(s.i);
}

EvalResult shift(Op op, Scalar a, Scalar b, DType in, DType out) {
  int count = int(b.i & 63);
  i128 x = exact(a, in);
  EvalResult r = op == Op::SHR      ? integer(x >> count, out)
                 : in.is_unsigned() ? integer(i128(uint64_t(x) << count), out)
                                    : integer(x << count, out);
  int width = std::max(32, in.bits());  // narrower types shift as int (C's promotion)
  if (b.i < 0 || b.i >= width || (op == Op::SHL && x < 0)) r.fault = EvalFault::Undefined;
  return r;
}

EvalResult divide(Op op, Scalar a, Scalar b, DType in, DType out) {
  i128 x = exact(a, in), y = exact(b, in);
  if (y == 0) return {Scalar{0}, EvalFault::DivByZero};
  EvalResult r = integer(op == Op::IDIV ? x / y : x % y, out);  // C truncates toward zero
  // C leaves a % b undefined where a / b is (INT_MIN % -1 traps on x86 like the division).
  if (integer(x / y, out).fault != EvalFault::None) r.fault = EvalFault::Undefined;
  return r;
}

// a * b (+ c): unsigned operands wrap in uint64 (their product may not fit even __int128).
EvalResult multiply(Scalar a, Scalar b, const Scalar* c, DType in, DType out) {
  if (in.is_unsigned())
    return integer(i128(uint64_t(a.i) * uint64_t(b.i) + (c ? uint64_t(c->i) : 0)), out);
  return integer(exact(a, in) * exact(b, in) + (c ? exact(*c, in) : 0), out);
}

}  // namespace

double round_to(double x, DType d) {
  DType e = d.element();
  if (const FloatFormat* f = e.narrow_float()) return decode_float(*f, encode_float(*f, x));
  if (e == dtypes::float32) return double(float(x));
  return x;
}

int64_t wrap_to(int64_t v, DType d) {
  DType e = d.element();
  if (e.is_bool()) return v != 0;
  int bits = e.bits();
  if (bits >= 64) return v;
  uint64_t u = uint64_t(v) & ((uint64_t(1) << bits) - 1);
  if (!e.is_unsigned() && (u >> (bits - 1))) u |= ~((uint64_t(1) << bits) - 1);
  return int64_t(u);
}

// The table: one case per ALU op, none for the others (-Wswitch names a forgotten one).
EvalResult eval_alu(Op op, DType in, DType out, std::span<const Scalar> args) {
  in = in.element();
  out = out.element();
  Scalar a = args.size() > 0 ? args[0] : Scalar{0};
  Scalar b = args.size() > 1 ? args[1] : Scalar{0};
  Scalar c = args.size() > 2 ? args[2] : Scalar{0};
  bool f = in.is_float();
  switch (op) {
    case Op::NEG:
      return f ? floating(-a.f, out) : integer(-exact(a, in), out);
    case Op::RECIP:
      return floating(1.0 / a.f, out);
    case Op::SQRT:
      return floating(std::sqrt(a.f), out);
    case Op::EXP2:
      return floating(std::exp2(a.f), out);
    case Op::EXP2_FTZ: {  // float32 only: flush subnormal inputs and results
      double x = std::abs(a.f) < double(FLT_MIN) ? 0.0 : a.f;
      float r = float(std::exp2(x));
      return floating(r < FLT_MIN ? 0.0 : double(r), out);
    }
    case Op::LOG2:
      return floating(std::log2(a.f), out);
    case Op::SIN:
      return floating(std::sin(a.f), out);
    case Op::TRUNC:
      return floating(std::trunc(a.f), out);
    case Op::ADD:
      return f ? floating(a.f + b.f, out) : integer(exact(a, in) + exact(b, in), out);
    case Op::SUB:
      return f ? floating(a.f - b.f, out) : integer(exact(a, in) - exact(b, in), out);
    case Op::MUL:
      return f ? floating(a.f * b.f, out) : multiply(a, b, nullptr, in, out);
    case Op::FDIV:
      return floating(a.f / b.f, out);
    case Op::IDIV:
    case Op::MOD:
      return divide(op, a, b, in, out);
    case Op::MAX:
      return f ? floating(std::fmax(a.f, b.f), out)
               : integer(std::max(exact(a, in), exact(b, in)), out);
    case Op::MIN:
      return f ? floating(std::fmin(a.f, b.f), out)
               : integer(std::min(exact(a, in), exact(b, in)), out);
    case Op::CMPLT:
      return boolean(f ? a.f < b.f : exact(a, in) < exact(b, in));
    case Op::CMPEQ:
      return boolean(f ? a.f == b.f : a.i == b.i);
    case Op::CMPNE:
      return boolean(f ? a.f != b.f : a.i != b.i);
    case Op::AND:
      return integer(exact(a, in) & exact(b, in), out);
    case Op::OR:
      return integer(exact(a, in) | exact(b, in), out);
    case Op::XOR:
      return integer(exact(a, in) ^ exact(b, in), out);
    case Op::SHL:
    case Op::SHR:
      return shift(op, a, b, in, out);
    case Op::WHERE:
      return {a.i ? b : c, EvalFault::None};
    case Op::MULACC:  // one rounding where the product is exact in double (float32 and below)
      return f ? floating(a.f * b.f + c.f, out) : multiply(a, b, &c, in, out);
      KITTEN_STRUCTURE_OPS(KITTEN_OP_CASE)
      break;
  }
  throw std::invalid_argument("eval_alu: " + op_name(op) + " is not an ALU op");
}

EvalResult eval_cast(DType from, DType to, Scalar x) {
  from = from.element();
  to = to.element();
  if (to.is_float() && !from.is_float() && to == dtypes::float32)  // one rounding, as C does
    return floating(from.is_unsigned() ? double(float(uint64_t(x.i))) : double(float(x.i)), to);
  if (to.is_float())  // exact in double below 2^53, so one rounding for every narrower int
    return floating(from.is_float()      ? x.f
                    : from.is_unsigned() ? double(uint64_t(x.i))
                                         : double(x.i),
                    to);
  if (to.is_bool()) return boolean(from.is_float() ? x.f != 0 : x.i != 0);
  if (!from.is_float()) return {Scalar{wrap_to(x.i, to)}, EvalFault::None};
  double t = std::trunc(x.f);
  // In range of the target (as an exact double comparison), else C leaves it undefined.
  double lo = to.is_unsigned() ? 0.0 : -std::ldexp(1.0, to.bits() - 1);
  double hi = std::ldexp(1.0, to.is_unsigned() ? to.bits() : to.bits() - 1);
  if (!(t >= lo && t < hi)) {
    EvalResult r;
    r.value.i = wrap_to(std::isnan(t) ? 0 : int64_t(std::clamp(t, -9.2e18, 9.2e18)), to);
    r.fault = EvalFault::Undefined;
    return r;
  }
  if (to.is_unsigned() && t >= 9.2e18) return {Scalar{int64_t(uint64_t(t))}, EvalFault::None};
  return {Scalar{wrap_to(int64_t(t), to)}, EvalFault::None};
}

std::optional<int64_t> eval_int(const UOp& u, const std::map<std::string, int64_t>& vars) {
  std::unordered_map<const void*, int64_t> val;
  std::unordered_set<const void*> undefined;  // an overflow or a division by 0 below
  auto bad = [&](const UOp& s) { return undefined.count(s.id()) != 0; };
  for (const UOp& n : toposort(u)) {
    Op op = n.op();
    int64_t r = 0;
    if (op == Op::WHERE) {  // C's ?: only the branch taken counts
      const UOp& taken = val.at(n.src(0).id()) ? n.src(1) : n.src(2);
      if (bad(n.src(0)) || bad(taken)) undefined.insert(n.id());
      val[n.id()] = val.at(taken.id());
      continue;
    }
    bool any_bad = std::any_of(n.src().begin(), n.src().end(), bad);
    if (op == Op::CONST) {
      r = n.const_int();
    } else if (op == Op::DEFINE_VAR) {
      r = vars.at(std::get<VarArg>(n.arg()).name);
    } else if ((op == Op::CAST || (is_alu(op) && int(op) < kNumCoreOps)) && !n.dtype().is_float() &&
               !n.src(0).dtype().is_float()) {
      std::vector<Scalar> args;
      for (const UOp& s : n.src()) args.push_back(Scalar{val.at(s.id())});
      DType in = op == Op::WHERE ? n.src(1).dtype() : n.src(0).dtype();
      EvalResult e =
          op == Op::CAST ? eval_cast(in, n.dtype(), args[0]) : eval_alu(op, in, n.dtype(), args);
      if (e.fault != EvalFault::None || any_bad) undefined.insert(n.id());
      r = e.value.i;
    } else {
      throw IrError("eval_int: " + op_name(op) + " : " + std::string(n.dtype().name()) +
                    " is not an integer op");
    }
    val[n.id()] = r;
  }
  if (bad(u)) return std::nullopt;
  return val.at(u.id());
}

}  // namespace kitten
