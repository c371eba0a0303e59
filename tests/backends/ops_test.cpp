// Every ALU op over every dtype it takes, on every device, against a reference written
// here with the host's own arithmetic (never the evaluation table the emulator runs on):
// exact for the correctly rounded ops, within the ulps of docs/testing.md for exp2, log2
// and sin; float32 -> float16/bfloat16/float8 conversions and bitcasts of random bit
// patterns.
#include <cfloat>
#include <cstring>

#include "test_device.h"

namespace kitten {
namespace {

// Raw values of one dtype, read and written as doubles (floats) or int64s (integers, bool).
struct Raw {
  DType dtype;
  std::vector<unsigned char> bytes;
  Raw(DType d, size_t n) : dtype(d), bytes(n * size_t(d.itemsize())) {}
  size_t size() const { return bytes.size() / size_t(dtype.itemsize()); }
  unsigned char* at(size_t i) { return bytes.data() + i * size_t(dtype.itemsize()); }
  const unsigned char* at(size_t i) const { return bytes.data() + i * size_t(dtype.itemsize()); }
  double f(size_t i) const {
    if (const FloatFormat* fmt = dtype.narrow_float()) {
      uint32_t code = 0;
      std::memcpy(&code, at(i), size_t(dtype.itemsize()));
      return decode_float(*fmt, code);
    }
    if (dtype == dtypes::float32) {
      float x;
      std::memcpy(&x, at(i), 4);
      return x;
    }
    double x;
    std::memcpy(&x, at(i), 8);
    return x;
  }
  void set_f(size_t i, double v) {
    if (const FloatFormat* fmt = dtype.narrow_float()) {
      uint32_t code = encode_float(*fmt, v);
      std::memcpy(at(i), &code, size_t(dtype.itemsize()));
    } else if (dtype == dtypes::float32) {
      float x = float(v);
      std::memcpy(at(i), &x, 4);
    } else {
      std::memcpy(at(i), &v, 8);
    }
  }
  int64_t n(size_t i) const {
    int64_t v = 0;
    std::memcpy(&v, at(i), size_t(dtype.itemsize()));
    if (dtype.itemsize() == 4) v = int32_t(v);
    return v;
  }
  void set_n(size_t i, int64_t v) { std::memcpy(at(i), &v, size_t(dtype.itemsize())); }
};

// Inputs that reach the corners: signed zeros, infinities, NaN, subnormals, huge and tiny
// values, and normal random ones; for integers values of both signs below 2^15 (so that
// sums and products stay defined in C) and, with `extremes`, the type's limits as well.
Raw inputs(DType d, size_t n, uint64_t stream, bool extremes, bool nonzero = false) {
  Raw r(d, n);
  std::seed_seq seq{test_seed(), stream, uint64_t(n)};
  std::mt19937_64 rng(seq);
  std::normal_distribution<double> normal(0.0, 1.0);
  for (size_t i = 0; i < n; ++i) {
    if (d.is_float()) {
      static const double corners[] = {0.0,    -0.0,    INFINITY, -INFINITY, NAN,  1e-40,
                                       -3e-45, 65504.0, 3e38,     0.5,       -2.0, 1e-7};
      double v = i < std::size(corners) ? corners[i] : normal(rng) * (rng() % 4 == 0 ? 1e3 : 1);
      if (nonzero && v == 0) v = 1.5;
      r.set_f(i, v);
      continue;
    }
    if (d.is_bool()) {
      r.set_n(i, int64_t(rng() % 2));
      continue;
    }
    int64_t v = extremes && i == 0   ? d.imin()
                : extremes && i == 1 ? d.imax()
                : rng() % 3 == 0     ? int64_t(rng() % 65536) - 32768
                                     : int64_t(rng() % 200) - 100;
    if (nonzero && (v == 0 || v == -1)) v = 7;  // no division by zero, no INT_MIN / -1
    r.set_n(i, v);
  }
  return r;
}

// Runs `k` with `params` as its parameters in slot order (each copied to the device) and
// reads the first, the output, back.
void run_on(Device& dev, const UOp& k, std::vector<Raw*> params) {
  std::vector<Buffer> bufs;
  std::vector<KernelArg> kargs;
  for (Raw* r : params) {
    bufs.push_back(dev.allocator().alloc(r->bytes.size()));
    dev.allocator().copy_in(bufs.back(), r->bytes.data(), r->bytes.size());
    kargs.push_back(bufs.back());
  }
  compile_kernel(dev, k).run(kargs);
  dev.allocator().copy_out(params[0]->bytes.data(), bufs[0], params[0]->bytes.size());
  for (Buffer b : bufs) dev.allocator().free(b);
}

bool is_float_op(Op op) {
  return op == Op::RECIP || op == Op::SQRT || op == Op::EXP2 || op == Op::EXP2_FTZ ||
         op == Op::LOG2 || op == Op::SIN || op == Op::TRUNC || op == Op::FDIV;
}
bool takes(Op op, DType d) {
  if (op == Op::EXP2_FTZ) return d == dtypes::float32;
  if (d.is_bool())
    return op == Op::AND || op == Op::OR || op == Op::XOR || op == Op::CMPEQ || op == Op::CMPNE ||
           op == Op::CMPLT || op == Op::WHERE;
  if (d.is_float())
    return !(op == Op::IDIV || op == Op::MOD || op == Op::AND || op == Op::OR || op == Op::XOR ||
             op == Op::SHL || op == Op::SHR);
  return !is_float_op(op);
}

// The reference for floats: the op in the host's double (float64) or float (float32 and
// the narrow formats, then rounded once to them), as C computes it.
double float_ref(Op op, DType d, double a, double b, double c) {
  bool f64 = d == dtypes::float64;
  auto r = [&](double x) { return f64 ? x : double(float(x)); };
  float fa = float(a), fb = float(b), fc = float(c);
  switch (op) {
    case Op::NEG:
      return -a;
    case Op::RECIP:
      return f64 ? 1.0 / a : double(1.0f / fa);
    case Op::SQRT:
      return f64 ? std::sqrt(a) : double(std::sqrt(fa));
    case Op::EXP2:
      return f64 ? std::exp2(a) : double(std::exp2(fa));
    case Op::EXP2_FTZ: {  // float32: subnormal inputs and results are 0
      float r = std::exp2(std::abs(fa) < FLT_MIN ? 0.0f : fa);
      return r < FLT_MIN ? 0.0 : double(r);
    }
    case Op::LOG2:
      return f64 ? std::log2(a) : double(std::log2(fa));
    case Op::SIN:
      return f64 ? std::sin(a) : double(std::sin(fa));
    case Op::TRUNC:
      return std::trunc(a);
    case Op::ADD:
      return f64 ? a + b : double(fa + fb);
    case Op::SUB:
      return f64 ? a - b : double(fa - fb);
    case Op::MUL:
      return f64 ? a * b : double(fa * fb);
    case Op::FDIV:
      return f64 ? a / b : double(fa / fb);
    case Op::MAX:
      return std::fmax(a, b);
    case Op::MIN:
      return std::fmin(a, b);
    case Op::CMPLT:
      return a < b;
    case Op::CMPEQ:
      return a == b;
    case Op::CMPNE:
      return a != b;
    case Op::MULACC:
      return f64 ? a * b + c : r(double(fa * fb) + fc);
    default:
      return NAN;
  }
}

// The reference for integers: two's complement that wraps (through uint64), C division.
int64_t int_ref(Op op, DType d, int64_t a, int64_t b, int64_t c) {
  auto wrap = [&](uint64_t v) {
    return d.bits() == 32 ? int64_t(int32_t(uint32_t(v))) : int64_t(v);
  };
  uint64_t ua = uint64_t(a), ub = uint64_t(b);
  switch (op) {
    case Op::NEG:
      return wrap(0 - ua);
    case Op::ADD:
      return wrap(ua + ub);
    case Op::SUB:
      return wrap(ua - ub);
    case Op::MUL:
      return wrap(ua * ub);
    case Op::IDIV:
      return a / b;
    case Op::MOD:
      return a % b;
    case Op::MAX:
      return std::max(a, b);
    case Op::MIN:
      return std::min(a, b);
    case Op::CMPLT:
      return a < b;
    case Op::CMPEQ:
      return a == b;
    case Op::CMPNE:
      return a != b;
    case Op::AND:
      return a & b;
    case Op::OR:
      return a | b;
    case Op::XOR:
      return a ^ b;
    case Op::SHL:
      return wrap(ua << b);
    case Op::SHR:
      return a >> b;
    case Op::MULACC:
      return wrap(ua * ub + uint64_t(c));
    default:
      return 0;
  }
}

// Ulps allowed: 0 for correctly rounded ops; exp2, log2 and sin 2 in float32 and float64
// (CUDA's documented bounds; libm is within 1), 1 in the narrow formats (the float32
// result may sit on the other side of a narrow rounding boundary).
int ulps(Op op, DType d) {
  if (op != Op::EXP2 && op != Op::EXP2_FTZ && op != Op::LOG2 && op != Op::SIN) return 0;
  return d.narrow_float() ? 1 : 2;
}

class Ops : public DeviceTest {};

TEST_P(Ops, EveryAluOpOnEveryDtypeAgainstTheHost) {
  const size_t n = 257;
  for (DType d : {dtypes::float64, dtypes::float32, dtypes::float16, dtypes::bfloat16,
                  dtypes::float8_e4m3, dtypes::int32, dtypes::int64, dtypes::bool_}) {
    for (int id = 0; id < kNumCoreOps; ++id) {
      Op op = Op(id);
      if (!is_alu(op) || !takes(op, d)) continue;
      SCOPED_TRACE(op_name(op) + " " + std::string(d.name()));
      int arity = find_op_spec(op)->arity;
      bool divides = op == Op::IDIV || op == Op::MOD;
      bool extremes = !(op == Op::ADD || op == Op::SUB || op == Op::MUL || op == Op::NEG ||
                        op == Op::MULACC || op == Op::SHL);
      Raw a = inputs(d, n, 1, extremes), b = inputs(d, n, 2, extremes, divides),
          c = inputs(d, n, 3, extremes);
      if (op == Op::SHL || op == Op::SHR)  // counts within the type; SHL of what stays defined
        for (size_t i = 0; i < n; ++i) {
          b.set_n(i, int64_t(i % size_t(op == Op::SHL ? d.bits() - 16 : d.bits())));
          if (op == Op::SHL) a.set_n(i, std::abs(a.n(i)) % 1000);
        }
      DType in = d,
            out = (op == Op::CMPLT || op == Op::CMPEQ || op == Op::CMPNE) ? dtypes::bool_ : d;
      UOp pa = param(1, in.ptr()), pb = param(2, in.ptr()), pc = param(3, in.ptr()),
          po = param(0, out.ptr());
      UOp i = range(int64_t(n), 0, AxisKind::Global);
      UOp x = load(index(pa, i)), y = load(index(pb, i)), z = load(index(pc, i));
      UOp v = op == Op::WHERE ? UOp::make(op, {UOp::make(Op::CMPLT, {x, y}), y, z})
              : arity == 1    ? UOp::make(op, {x})
              : arity == 2    ? UOp::make(op, {x, y})
                              : UOp::make(op, {x, y, z});
      UOp k = sink({end(store(index(po, i), v), {i})}, "op");
      Raw got(out, n);
      std::fill(got.bytes.begin(), got.bytes.end(), 0xFF);
      std::vector<Raw*> used = {&got, &a, &b, &c};
      used.resize(size_t(1 + (op == Op::WHERE ? 3 : arity)));  // the parameters the kernel has
      run_on(*dev, k, used);
      int bad = 0;
      for (size_t e = 0; e < n && bad < 3; ++e) {
        if (d.is_float()) {
          double w = op == Op::WHERE ? (a.f(e) < b.f(e) ? b.f(e) : c.f(e))
                                     : float_ref(op, d, a.f(e), b.f(e), c.f(e));
          if (out.is_bool()) {
            bad += got.n(e) != int64_t(w);
            EXPECT_EQ(got.n(e), int64_t(w)) << "element " << e;
            continue;
          }
          w = rounded(d, w);
          double g = got.f(e);
          bool ok = (std::isnan(g) && std::isnan(w)) || g == w ||
                    (std::isfinite(w) && std::abs(g - w) <= ulps(op, d) * ulp(d, w));
          if (op == Op::MULACC && !ok) {
            // Fused where the target has it: one rounding of the exact a*b + c into d (the
            // emulator's table), or, for the narrow types, a float32 fma then the narrowing
            // (CUDA's float32 arithmetic); the two differ only where float32 lands on a tie.
            double fused = std::fma(a.f(e), b.f(e), c.f(e));
            ok = g == rounded(d, fused) || g == rounded(d, double(float(fused))) ||
                 (std::isnan(g) && std::isnan(fused));
          }
          bad += !ok;
          EXPECT_TRUE(ok) << "element " << e << ": " << op_name(op) << "(" << a.f(e) << ", "
                          << b.f(e) << ", " << c.f(e) << ") = " << g << ", want " << w;
        } else {
          int64_t w = op == Op::WHERE ? (a.n(e) < b.n(e) ? b.n(e) : c.n(e))
                                      : int_ref(op, d, a.n(e), b.n(e), c.n(e));
          if (d.is_bool() && !out.is_bool() && op != Op::WHERE) w &= 1;
          int64_t g = out.is_bool() ? int64_t(got.bytes[e] != 0) : got.n(e);
          if (out.is_bool() && got.bytes[e] > 1) g = -1;  // a bool must be 0 or 1
          bad += g != w;
          EXPECT_EQ(g, w) << "element " << e << ": " << op_name(op) << "(" << a.n(e) << ", "
                          << b.n(e) << ", " << c.n(e) << ")";
        }
      }
    }
  }
}

// float32 bit patterns (random, the ties between neighbouring codes, the overflow
// thresholds, subnormals) converted to each narrow format: one rounding to nearest even,
// bit for bit as the exhaustively tested dsl/float_format.h encodes them.
TEST_P(Ops, Float32ToNarrowConversionsOfBitPatterns) {
  const size_t n = 4096;
  Raw x(dtypes::float32, n);
  std::seed_seq seq{test_seed(), uint64_t(77)};
  std::mt19937_64 rng(seq);
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits = uint32_t(rng());
    if (i % 4 == 1) bits = (bits & 0xFFFF0000u) | 0x8000u;  // a bfloat16 tie
    if (i % 4 == 2) bits = (bits & 0xFFFFE000u) | 0x1000u;  // a float16 tie (normal range)
    if (i % 16 == 3) bits &= 0x807FFFFFu;                   // a float32 subnormal
    float f;
    std::memcpy(&f, &bits, 4);
    x.set_f(i, f);
  }
  static const double edges[] = {65504.0,
                                 65519.99,
                                 65520.0,
                                 448.0,
                                 464.0,
                                 57344.0,
                                 61440.0,
                                 3.3895313892515355e38,
                                 5.960464477539063e-08,
                                 2.98e-08};
  for (size_t e = 0; e < std::size(edges); ++e) x.set_f(4000 + e, edges[e]);
  for (DType to : {dtypes::float16, dtypes::bfloat16, dtypes::float8_e4m3, dtypes::float8_e5m2}) {
    SCOPED_TRACE(to.name());
    UOp po = param(0, to.ptr()), px = param(1, dtypes::float32.ptr());
    UOp i = range(int64_t(n), 0, AxisKind::Global);
    UOp k = sink({end(store(index(po, i), cast(load(index(px, i)), to)), {i})}, "convert");
    Raw got(to, n);
    run_on(*dev, k, {&got, &x});
    const FloatFormat& f = *to.narrow_float();
    int bad = 0;
    for (size_t e = 0; e < n && bad < 3; ++e) {
      uint32_t code = 0;
      std::memcpy(&code, got.at(e), size_t(to.itemsize()));
      uint32_t want = encode_float(f, x.f(e));
      bool nan = std::isnan(x.f(e)) && std::isnan(decode_float(f, code));
      bad += !(nan || code == want);
      EXPECT_TRUE(nan || code == want) << "element " << e << ": " << x.f(e) << " gave 0x"
                                       << std::hex << code << ", want 0x" << want;
    }
  }
}

// BITCAST keeps every bit: float32 <-> int32 and bfloat16 -> uint16 -> float16 on random
// patterns (NaNs with payloads and subnormals included) give back exactly the input bits.
TEST_P(Ops, BitcastKeepsEveryBit) {
  const size_t n = 1024;
  std::seed_seq seq{test_seed(), uint64_t(78)};
  std::mt19937_64 rng(seq);
  std::vector<uint32_t> words(n);
  for (uint32_t& w : words) w = uint32_t(rng());
  for (auto [from, to] :
       {std::pair{dtypes::float32, dtypes::int32}, std::pair{dtypes::int32, dtypes::float32},
        std::pair{dtypes::bfloat16, dtypes::uint16}, std::pair{dtypes::uint16, dtypes::float16}}) {
    SCOPED_TRACE(std::string(from.name()) + " -> " + std::string(to.name()));
    UOp po = param(0, to.ptr()), px = param(1, from.ptr());
    UOp i = range(int64_t(n), 0, AxisKind::Global);
    UOp k = sink({end(store(index(po, i), UOp::make(Op::BITCAST, to, {load(index(px, i))})), {i})},
                 "bitcast");
    Raw in(from, n), out(to, n);
    std::memcpy(in.bytes.data(), words.data(), in.bytes.size());
    std::fill(out.bytes.begin(), out.bytes.end(), 0xFF);
    run_on(*dev, k, {&out, &in});
    EXPECT_TRUE(in.bytes == out.bytes) << "the bits changed";
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, Ops, testing::ValuesIn(test_devices()), test_name);

}  // namespace
}  // namespace kitten
