// `kitten bench <kernel>`: a library kernel on fresh random data, checked against a float64
// reference, then timed (cuda) or counted (emu). See the help text in kitten.cpp.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>

#include "backends/cuda/cuda_device.h"
#include "backends/emu/emulator.h"
#include "dsl/float_format.h"
#include "kernels/flash_attention_fwd.h"
#include "kernels/gemm.h"
#include "tools/cli.h"

namespace kitten {
namespace {

// What every kernel's bench takes, and the device it runs on.
struct Bench {
  std::string device = "cuda";
  Schedule schedule;
  int reps = 20;
  uint64_t seed = std::random_device{}();
  std::string source_path;
  std::unique_ptr<Device> dev;
  std::mt19937_64 rng;
  std::vector<Buffer> buffers;

  ~Bench() {
    for (Buffer b : buffers) dev->allocator().free(b);
  }

  // Reads an option every bench takes at args[i] (advancing i past its value): nullopt
  // when it is not one, else the exit status (-1: go on).
  std::optional<int> common_option(const std::vector<std::string>& args, size_t& i) {
    const std::string& a = args[i];
    bool more = i + 1 < args.size();
    if (a == "--device" && more) {
      device = args[++i];
    } else if (a == "--schedule" && more) {
      try {
        schedule = Schedule::parse(args[++i]);
      } catch (const ScheduleError& e) {
        return usage_error(std::string("bench: ") + e.what());
      }
    } else if (a == "--reps" && more) {
      reps = std::atoi(args[++i].c_str());
      if (reps < 1) return usage_error("bench: --reps takes a positive number");
    } else if (a == "--seed" && more) {
      seed = std::strtoull(args[++i].c_str(), nullptr, 0);
    } else if (a == "--source" && more) {
      source_path = args[++i];
    } else {
      return std::nullopt;
    }
    return -1;
  }

  // Opens the device (a tile kernel needs blocks and mma.sync): -1 when all is well.
  int open(const std::string& kernel) {
    rng.seed(seed);
    if (int status = open_named_device("bench", device, dev); status >= 0) return status;
    const Target& t = dev->props().target;
    if (!t.has(kFeatureBlocks) || !t.has(kFeatureMmaSync))
      return work_failed("bench", kernel +
                                      " is a tile kernel: it needs a device with blocks and "
                                      "mma.sync, which " +
                                      device + " (" + t.arch + ") lacks; use emu or cuda");
    return -1;
  }

  // Compiles the kernel and writes its source where --source asks.
  std::optional<CompiledKernel> compile(const UOp& kernel, int& status) {
    CompiledKernel k = compile_kernel(*dev, kernel);
    if (!source_path.empty()) {
      std::FILE* f = std::fopen(source_path.c_str(), "w");
      bool ok = f && std::fputs(k.rendered.source.c_str(), f) >= 0;
      if (f) ok = std::fclose(f) == 0 && ok;
      if (!ok) {
        status = work_failed("bench", "cannot write the source to " + source_path);
        return std::nullopt;
      }
    }
    return k;
  }

  // `count` random normal values of a 16-bit float dtype on the device; v gets them as
  // the kernel reads them.
  Buffer random(DType dtype, int64_t count, std::vector<double>& v) {
    const FloatFormat& f = *dtype.narrow_float();
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<uint16_t> bits(static_cast<size_t>(count));
    v.resize(size_t(count));
    for (size_t i = 0; i < bits.size(); ++i) {
      bits[i] = uint16_t(encode_float(f, normal(rng)));
      v[i] = decode_float(f, bits[i]);
    }
    return upload(bits.data(), bits.size() * 2);
  }
  Buffer upload(const void* data, size_t bytes) {
    Buffer b = alloc(bytes);
    dev->allocator().copy_in(b, data, bytes);
    return b;
  }
  Buffer alloc(size_t bytes) {
    buffers.push_back(dev->allocator().alloc(bytes));
    return buffers.back();
  }
  std::vector<unsigned char> download(Buffer b) {
    std::vector<unsigned char> out(b.bytes);
    dev->allocator().copy_out(out.data(), b, b.bytes);
    return out;
  }

  // One run: on emu with its counts, else on the device's stream.
  void run(CompiledKernel& k, const std::vector<KernelArg>& args) {
    if (device == "emu") {
      auto ek = emu_compile(k.linear, dev->props().target);
      emu_run(*ek, launch_grid(k.rendered.info, args), k.rendered.info.local, args, &stats);
    } else {
      k.run(args);
    }
  }
  EmuStats stats;

  // The emulator's counts, or the median time of `reps` runs after 5 warm-up runs, the
  // rate of `flops`, and the registers and spills.
  void report_speed(CompiledKernel& k, const std::vector<KernelArg>& args, double flops) {
    if (device == "emu") {
      std::printf(
          "emu: %llu warp instructions, %llu shared accesses in %llu wavefronts, %llu bank "
          "conflicts\n",
          (unsigned long long)stats.warp_instructions, (unsigned long long)stats.shared_accesses,
          (unsigned long long)stats.shared_wavefronts, (unsigned long long)stats.bank_conflicts);
      return;
    }
    auto q = dev->new_queue();
    std::vector<double> ms;
    for (int r = 0; r < reps + 5; ++r) {
      double x = cuda_elapsed_ms(*q, [&] { k.enqueue(*q, args); });
      if (r >= 5) ms.push_back(x);
    }
    std::sort(ms.begin(), ms.end());
    double med = ms[ms.size() / 2];
    std::printf("time: %.4f ms (median of %d), %.1f TFLOP/s\n", med, reps, flops / (med * 1e9));
    std::string res = k.program->resources();
    if (!res.empty()) std::printf("resources: %s\n", res.c_str());
  }
};

// The value of element i of a downloaded buffer of float32 or a 16-bit float dtype.
double element(const std::vector<unsigned char>& bytes, DType dtype, int64_t i) {
  if (dtype == dtypes::float32) {
    float x;
    std::memcpy(&x, &bytes[size_t(i) * 4], 4);
    return double(x);
  }
  uint16_t h;
  std::memcpy(&h, &bytes[size_t(i) * 2], 2);
  return decode_float(*dtype.narrow_float(), h);
}

double ulp_of(DType dtype, double x) {
  int mantissa = dtype == dtypes::float32 ? 23 : dtype.narrow_float()->man_bits;
  return std::ldexp(1.0, std::max(std::ilogb(std::max(std::abs(x), 1e-30)), -126) - mantissa);
}

bool dtype_arg(const std::string& v, DType& out) {
  std::optional<DType> d = DType::parse(v);
  if (!d) return false;
  out = *d;
  return true;
}

int bench_gemm(const std::vector<std::string>& args) {
  GemmProblem p;
  Bench bench;
  bool have_shape = false;
  for (size_t i = 1; i < args.size(); ++i) {
    if (std::optional<int> s = bench.common_option(args, i)) {
      if (*s >= 0) return *s;
      continue;
    }
    const std::string& a = args[i];
    bool more = i + 1 < args.size();
    if (a == "--shape" && more) {
      long long m, n, k;
      char tail;
      if (std::sscanf(args[++i].c_str(), "%lld,%lld,%lld%c", &m, &n, &k, &tail) != 3 || m < 1 ||
          n < 1 || k < 1)
        return usage_error("bench: --shape takes M,N,K (positive), got '" + args[i] + "'");
      p.m = m, p.n = n, p.k = k, have_shape = true;
    } else if (a == "--b-transposed") {
      p.b_transposed = true;
    } else if (a == "--a-transposed") {
      p.a_transposed = true;
    } else if (a == "--dtype" && more) {
      if (!dtype_arg(args[++i], p.in)) return usage_error("bench: unknown dtype '" + args[i] + "'");
    } else if (a == "--out" && more) {
      if (!dtype_arg(args[++i], p.out))
        return usage_error("bench: unknown dtype '" + args[i] + "'");
    } else {
      return usage_error("bench: unexpected argument '" + a + "'");
    }
  }
  if (!have_shape) return usage_error("bench: expected --shape M,N,K");
  if (int status = bench.open("gemm"); status >= 0) return status;
  const Target& t = bench.dev->props().target;
  UOp kernel = gemm_kernel(p, bench.schedule, t);  // ScheduleError names the broken constraint
  Schedule used = gemm_full_schedule(p, bench.schedule, t);
  int status = 0;
  std::optional<CompiledKernel> k = bench.compile(kernel, status);
  if (!k) return status;
  // Fresh random inputs (normal, rounded to the input dtype) and the float64 reference.
  std::vector<double> a, b;
  Buffer da = bench.random(p.in, p.m * p.k, a), db = bench.random(p.in, p.k * p.n, b);
  Buffer dc = bench.alloc(size_t(p.m * p.n * p.out.itemsize()));
  std::vector<KernelArg> kargs = {dc, da, db};
  bench.run(*k, kargs);
  // Check: every element for small problems, else 512 sampled ones.
  std::vector<unsigned char> out = bench.download(dc);
  auto at = [&](int64_t i, int64_t r) { return p.a_transposed ? r * p.m + i : i * p.k + r; };
  auto bt = [&](int64_t r, int64_t j) { return p.b_transposed ? j * p.k + r : r * p.n + j; };
  bool all = p.m * p.n * p.k <= (int64_t(1) << 26);
  int64_t checked = all ? p.m * p.n : 512, bad = 0;
  std::string first_bad;
  for (int64_t s = 0; s < checked; ++s) {
    int64_t i = all ? s / p.n : int64_t(bench.rng() % uint64_t(p.m));
    int64_t j = all ? s % p.n : int64_t(bench.rng() % uint64_t(p.n));
    double want = 0, scale = 0;
    for (int64_t r = 0; r < p.k; ++r) {
      double term = a[size_t(at(i, r))] * b[size_t(bt(r, j))];
      want += term, scale += std::abs(term);
    }
    double g = element(out, p.out, i * p.n + j);
    if (!(std::abs(g - want) <=
          ulp_of(p.out, want) + double(p.k + 1) * std::ldexp(1.0, -24) * scale)) {
      if (bad++ == 0)
        first_bad = "C[" + std::to_string(i) + "," + std::to_string(j) +
                    "] = " + std::to_string(g) + ", want " + std::to_string(want);
    }
  }
  std::printf("gemm %s on %s\nschedule: %s\ncheck: %s (%lld elements%s against float64)\n",
              p.to_string().c_str(), bench.dev->props().name.c_str(), used.to_string().c_str(),
              bad ? "FAILED" : "passed", (long long)checked, all ? "" : " sampled");
  if (bad) std::printf("  %lld wrong, first %s\n", (long long)bad, first_bad.c_str());
  bench.report_speed(*k, kargs, 2.0 * double(p.m) * double(p.n) * double(p.k));
  return bad ? 1 : 0;
}

int bench_flash_attention_fwd(const std::vector<std::string>& args) {
  AttentionProblem p;
  Bench bench;
  AttentionShape s;
  bool have_shape = false;
  for (size_t i = 1; i < args.size(); ++i) {
    if (std::optional<int> st = bench.common_option(args, i)) {
      if (*st >= 0) return *st;
      continue;
    }
    const std::string& a = args[i];
    bool more = i + 1 < args.size();
    if (a == "--shape" && more) {
      long long b, h, hkv, nq, nkv, d;
      char tail;
      if (std::sscanf(args[++i].c_str(), "%lld,%lld,%lld,%lld,%lld,%lld%c", &b, &h, &hkv, &nq, &nkv,
                      &d, &tail) != 6 ||
          std::min({b, h, hkv, nq, nkv, d}) < 1 || d > 1024)
        return usage_error("bench: --shape takes B,H,Hkv,Nq,Nkv,D (positive), got '" + args[i] +
                           "'");
      s = AttentionShape::contiguous(b, h, hkv, nq, nkv, int(d));
      p.d = int(d), have_shape = true;
    } else if (a == "--causal") {
      p.mask = AttentionMask::Causal;
    } else if (a == "--dtype" && more) {
      if (!dtype_arg(args[++i], p.in)) return usage_error("bench: unknown dtype '" + args[i] + "'");
      p.out = p.in;
    } else if (a == "--out" && more) {
      if (!dtype_arg(args[++i], p.out))
        return usage_error("bench: unknown dtype '" + args[i] + "'");
    } else {
      return usage_error("bench: unexpected argument '" + a + "'");
    }
  }
  if (!have_shape) return usage_error("bench: expected --shape B,H,Hkv,Nq,Nkv,D");
  std::map<std::string, int64_t> vars;
  UOp kernel;
  try {
    vars = flash_attention_fwd_vars(p, s);
  } catch (const std::invalid_argument& e) {
    return usage_error(std::string("bench: ") + e.what());
  }
  if (int status = bench.open("flash_attention_fwd"); status >= 0) return status;
  const Target& t = bench.dev->props().target;
  try {
    kernel = flash_attention_fwd_kernel(p, bench.schedule, t);
  } catch (const std::invalid_argument& e) {
    return usage_error(std::string("bench: ") + e.what());
  }
  Schedule used = flash_attention_fwd_full_schedule(p, bench.schedule, t);
  int status = 0;
  std::optional<CompiledKernel> k = bench.compile(kernel, status);
  if (!k) return status;
  std::vector<double> q, kk, v;
  Buffer dq = bench.random(p.in, s.b * s.h * s.nq * p.d, q);
  Buffer dk = bench.random(p.in, s.b * s.hkv * s.nkv * p.d, kk);
  Buffer dv = bench.random(p.in, s.b * s.hkv * s.nkv * p.d, v);
  Buffer dout = bench.alloc(size_t(s.b * s.h * s.nq * p.d * p.out.itemsize()));
  Buffer dlse = bench.alloc(size_t(s.b * s.h * s.nq * 4));
  std::vector<KernelArg> kargs = bind_args(k->rendered.info, {dout, dlse, dq, dk, dv}, vars);
  bench.run(*k, kargs);
  // Check whole rows of O and their LSE: every row of small problems, else 64 sampled.
  std::vector<unsigned char> out = bench.download(dout), lse = bench.download(dlse);
  int64_t rows = s.b * s.h * s.nq;
  bool all = rows * s.nkv * p.d <= (int64_t(1) << 24);
  int64_t checked = all ? rows : 64, bad = 0;
  std::string first_bad;
  double scale = p.softmax_scale(), u_in = std::ldexp(1.0, -(p.in.narrow_float()->man_bits + 1));
  for (int64_t n = 0; n < checked; ++n) {
    int64_t r = all ? n : int64_t(bench.rng() % uint64_t(rows));
    int64_t b = r / (s.h * s.nq), h = r / s.nq % s.h, i = r % s.nq, hk = h / (s.h / s.hkv);
    const double* qi = &q[size_t(r * p.d)];
    std::vector<double> sc(size_t(s.nkv), -INFINITY);
    double m = -INFINITY, worst = 0;
    for (int64_t j = 0; j < s.nkv; ++j) {
      if (p.mask == AttentionMask::Causal && j > i + s.nkv - s.nq) continue;
      const double* kj = &kk[size_t(((b * s.hkv + hk) * s.nkv + j) * p.d)];
      double dot = 0, mag = 0;
      for (int c = 0; c < p.d; ++c) dot += qi[c] * kj[c], mag += std::abs(qi[c] * kj[c]);
      sc[size_t(j)] = dot * scale, m = std::max(m, dot * scale),
      worst = std::max(worst, mag * scale);
    }
    double l = 0;
    for (double x : sc) l += std::isinf(x) ? 0 : std::exp(x - m);
    double e = (p.d + 4) * std::ldexp(1.0, -24) * worst + (s.nkv + 8) * std::ldexp(1.0, -24);
    auto fail = [&](const std::string& what) {
      if (bad++ == 0) first_bad = what;
    };
    for (int c = 0; c < p.d; ++c) {
      double want = 0, mag = 0;
      for (int64_t j = 0; j < s.nkv; ++j) {
        if (std::isinf(sc[size_t(j)])) continue;
        double pj = std::exp(sc[size_t(j)] - m) / l,
               vj = v[size_t(((b * s.hkv + hk) * s.nkv + j) * p.d + c)];
        want += pj * vj, mag += pj * std::abs(vj);
      }
      double g = element(out, p.out, r * p.d + c);
      if (!(std::abs(g - want) <= ulp_of(p.out, want) + (u_in + 2 * e) * mag))
        fail("O[" + std::to_string(r) + "," + std::to_string(c) + "] = " + std::to_string(g) +
             ", want " + std::to_string(want));
    }
    double want = l > 0 ? m + std::log(l) : INFINITY, g = element(lse, dtypes::float32, r);
    if (!(g == want || std::abs(g - want) <= 4 * ulp_of(dtypes::float32, want) + 2 * e))
      fail("LSE[" + std::to_string(r) + "] = " + std::to_string(g) + ", want " +
           std::to_string(want));
  }
  std::printf(
      "flash_attention_fwd %s B,H,Hkv,Nq,Nkv = %s on %s\nschedule: %s\ncheck: %s (%lld rows of "
      "O and LSE%s against float64)\n",
      p.to_string().c_str(), s.to_string().c_str(), bench.dev->props().name.c_str(),
      used.to_string().c_str(), bad ? "FAILED" : "passed", (long long)checked,
      all ? "" : " sampled");
  if (bad) std::printf("  %lld wrong, first %s\n", (long long)bad, first_bad.c_str());
  // 4 * Nq * Nkv * D per head (QK^T and PV), the visible half where causal and Nq = Nkv.
  double pairs = double(s.nq) * double(s.nkv);
  if (p.mask == AttentionMask::Causal) {
    double shift = double(s.nkv - s.nq), visible = 0;
    for (int64_t i = 0; i < s.nq; ++i)
      visible += std::clamp(double(i) + shift + 1, 0.0, double(s.nkv));
    pairs = visible;
  }
  bench.report_speed(*k, kargs, 4.0 * double(s.b * s.h) * pairs * p.d);
  return bad ? 1 : 0;
}

}  // namespace

int cmd_bench(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "gemm") return bench_gemm(args);
  if (!args.empty() && args[0] == "flash_attention_fwd") return bench_flash_attention_fwd(args);
  return usage_error("bench: expected a library kernel: gemm or flash_attention_fwd");
}

}  // namespace kitten
