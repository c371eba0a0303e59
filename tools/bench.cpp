// `kitten bench <kernel>`: a library kernel on fresh random data, checked against a float64
// reference, then timed (cuda) or counted (emu). See the help text in kitten.cpp.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>

#include "autotune/database.h"
#include "autotune/measure.h"
#include "backends/cuda/cuda_device.h"
#include "backends/emu/emulator.h"
#include "dsl/float_format.h"
#include "kernels/examples.h"
#include "kernels/flash_attention_fwd.h"
#include "kernels/gemm.h"
#include "tools/cli.h"
#include "tools/spaces.h"

namespace kitten {
namespace {

// What every kernel's bench takes, and the device it runs on.
struct Bench {
  std::string device = "cuda";
  Schedule schedule;
  bool schedule_given = false, untuned = false;
  double tune_budget = 0;  // --tune: search (this long) where nothing is stored
  std::string db_path;     // the tuning database (default_database_path where empty)
  std::string tuned;       // where the schedule came from, for the report
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
        schedule_given = true;
      } catch (const ScheduleError& e) {
        return usage_error(std::string("bench: ") + e.what());
      }
    } else if (a == "--untuned") {
      untuned = true;
    } else if (a == "--tune" && more) {
      tune_budget = std::strtod(args[++i].c_str(), nullptr);
      if (!(tune_budget > 0)) return usage_error("bench: --tune takes seconds (> 0)");
    } else if (a == "--db" && more) {
      db_path = args[++i];
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

  // Takes the tuned schedule for `id` (the tuning database, then the library shipped with
  // kitten) unless --schedule or --untuned says otherwise; `build` makes the kernel of a
  // schedule, throwing where a stored one no longer fits.
  // With --tune, where nothing is stored, a BEAM search over `space` (the named space of
  // this problem, if there is one) runs and its winner is saved in the user's database.
  void use_tuned(const autotune::KernelId& id, const std::function<void(const Schedule&)>& build,
                 const std::function<autotune::SearchSpace()>& space) {
    auto applies = [&](const Schedule& s) -> std::string {
      try {
        build(s);
        return "";
      } catch (const std::exception& e) {
        return e.what();
      }
    };
    if (schedule_given || untuned) {
      tuned = schedule_given ? "given" : "the default (--untuned)";
      return;
    }
    using Clock = std::chrono::steady_clock;
    Clock::time_point t0 = Clock::now();
    autotune::Tuned db(*dev, db_path);
    // The lookup's cost: the mean of many (one alone is below the clock's resolution).
    Clock::time_point t1 = Clock::now();
    constexpr int kLookups = 1000;
    for (int i = 0; i < kLookups; ++i) db.find(id);
    double load_us = std::chrono::duration<double, std::micro>(t1 - t0).count(),
           find_us =
               std::chrono::duration<double, std::micro>(Clock::now() - t1).count() / kLookups;
    autotune::TunedSchedule t = db.lookup(id, applies);
    for (const std::string& m : db.messages)
      std::fprintf(stderr, "kitten bench: %s\n", escape_controls(m, true).c_str());
    char timing[96];
    std::snprintf(timing, sizeof timing, " (databases opened in %.0f us, lookup %.2f us)", load_us,
                  find_us);
    if (t.source.empty() && tune_budget > 0) {
      autotune::SearchSpace sp = space();
      if (!(sp.id == id)) {
        tuned = "the default: --tune searches " + sp.id.to_string() + ", not " + id.to_string();
        return;
      }
      autotune::DeviceId dev_id = autotune::DeviceId::of(*dev);
      std::string path = db_path.empty() ? autotune::default_database_path(dev_id) : db_path;
      if (path.empty()) throw std::runtime_error("--tune: no database (give --db PATH)");
      autotune::TuneDatabase tdb = autotune::TuneDatabase::load(path, dev_id);
      autotune::MeasureOptions mo;
      mo.worker = {self_path(), "compile-worker", "--device", device};
      autotune::SearchOptions so;
      so.budget_s = tune_budget;
      so.progress = [](const std::string& l) { std::fprintf(stderr, "bench: %s\n", l.c_str()); };
      autotune::DeviceMeasure m(*dev, sp, mo);
      autotune::TuneResult r = autotune::tune_kernel(sp, dev->props().target, m, tdb, so);
      schedule = Schedule::parse(r.entry.schedule);
      char took[64];
      std::snprintf(took, sizeof took, "%.1f s", r.entry.search_s);
      tuned = "tuned now by a BEAM search of " + std::string(took) + ", saved in " + path;
      return;
    }
    if (t.source.empty()) {
      tuned = std::string("the default: no tuned entry for ") + id.to_string() + timing;
      return;
    }
    schedule = t.schedule;
    tuned = "tuned, from " + t.source + timing;
  }

  // Compiles the kernels and writes the last one's source (the library kernel, after any
  // repack) where --source asks.
  std::optional<CompiledKernel> compile(const LoweredKernels& kernels, int& status) {
    CompiledKernel k = compile_lowered(*dev, kernels);
    if (!source_path.empty()) {
      std::FILE* f = std::fopen(source_path.c_str(), "w");
      const std::string& src = k.then.empty() ? k.rendered.source : k.then.back().rendered.source;
      bool ok = f && std::fputs(src.c_str(), f) >= 0;
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
      auto part = [&](const KernelLaunch& l) {
        std::vector<KernelArg> all = k.part_args(l, args);
        auto ek = emu_compile(l.linear, dev->props().target);
        emu_run(*ek, launch_grid(l.rendered.info, all), l.rendered.info.local, all, &stats);
      };
      part(k);
      for (const KernelLaunch& l : k.then) part(l);
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
  bench.use_tuned(
      gemm_id(p), [&](const Schedule& sch) { gemm_kernels(p, sch, t); },
      [&] {
        return named_space("gemm", {p.m, p.n, p.k}, p.in, t);
      });
  // ScheduleError names the broken constraint
  LoweredKernels kernels = gemm_kernels(p, bench.schedule, t);
  Schedule used = gemm_full_schedule(p, bench.schedule, t);
  int status = 0;
  std::optional<CompiledKernel> k = bench.compile(kernels, status);
  if (!k) return status;
  // Fresh random inputs (normal, rounded to the input dtype) and the float64 reference.
  std::vector<double> a, b;
  Buffer da = bench.random(p.in, p.m * p.k, a), db = bench.random(p.in, p.k * p.n, b);
  Buffer dc = bench.alloc(size_t(p.m * p.n * p.out.itemsize()));
  tiles::TensorLayout la = gemm_operand_layout(p, 1), lb = gemm_operand_layout(p, 2);
  std::vector<KernelArg> kargs = {tensor_arg(*k, 0, dc, {p.n, p.m}, {p.n * p.out.itemsize()}),
                                  tensor_arg(*k, 1, da, la.dims, la.strides),
                                  tensor_arg(*k, 2, db, lb.dims, lb.strides)};
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
  std::printf("gemm %s on %s\nschedule: %s (%s)\ncheck: %s (%lld elements%s against float64)\n",
              p.to_string().c_str(), bench.dev->props().name.c_str(), used.to_string().c_str(),
              bench.tuned.c_str(), bad ? "FAILED" : "passed", (long long)checked,
              all ? "" : " sampled");
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
  bench.use_tuned(
      attention_id(p, s), [&](const Schedule& sch) { flash_attention_fwd_kernel(p, sch, t); },
      [&] {
        return named_space(p.mask == AttentionMask::Causal ? "attention-causal" : "attention",
                           {s.b, s.h, s.hkv, s.nq, s.nkv, p.d}, p.in, t);
      });
  try {
    kernel = flash_attention_fwd_kernel(p, bench.schedule, t);
  } catch (const std::invalid_argument& e) {
    return usage_error(std::string("bench: ") + e.what());
  }
  Schedule used = flash_attention_fwd_full_schedule(p, bench.schedule, t);
  int status = 0;
  std::optional<CompiledKernel> k = bench.compile(lower_kernels(kernel, t), status);
  if (!k) return status;
  std::vector<double> q, kk, v;
  Buffer dq = bench.random(p.in, s.b * s.h * s.nq * p.d, q);
  Buffer dk = bench.random(p.in, s.b * s.hkv * s.nkv * p.d, kk);
  Buffer dv = bench.random(p.in, s.b * s.hkv * s.nkv * p.d, v);
  Buffer dout = bench.alloc(size_t(s.b * s.h * s.nq * p.d * p.out.itemsize()));
  Buffer dlse = bench.alloc(size_t(s.b * s.h * s.nq * 4));
  std::vector<KernelArg> params = {dout, dlse};
  for (auto [slot, buf] : {std::pair{2, dq}, std::pair{3, dk}, std::pair{4, dv}}) {
    tiles::TensorLayout l = flash_attention_operand_layout(p, s, slot);  // maps for TMA
    params.push_back(tensor_arg(k->rendered.info, slot, buf, l.dims, l.strides));
  }
  std::vector<KernelArg> kargs = bind_args(k->rendered.info, params, vars);
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
      "flash_attention_fwd %s B,H,Hkv,Nq,Nkv = %s on %s\nschedule: %s (%s)\ncheck: %s (%lld rows "
      "of "
      "O and LSE%s against float64)\n",
      p.to_string().c_str(), s.to_string().c_str(), bench.dev->props().name.c_str(),
      used.to_string().c_str(), bench.tuned.c_str(), bad ? "FAILED" : "passed", (long long)checked,
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

// The Hopper ceilings (sm_90): wgmma and mma.sync peaks, TMA and cp.async streams from HBM,
// mbarrier and block-barrier round trips; each result checked, each time the median of
// --reps runs after 5 warm-up runs.
int bench_ceilings(const std::vector<std::string>& args) {
  Bench b;
  for (size_t i = 1; i < args.size(); ++i)
    if (std::optional<int> s = b.common_option(args, i); !s || *s >= 0)
      return s ? *s : usage_error("bench: unknown option " + escape_controls(args[i], false));
  if (int status = b.open("ceilings"); status >= 0) return status;
  const Target& t = b.dev->props().target;
  if (b.device != "cuda" || !t.has(kFeatureWgmma) || !t.has(kFeatureTma))
    return work_failed("bench", "ceilings measures a Hopper GPU (sm_90: wgmma, TMA); " + b.device +
                                    " (" + t.arch + ") is not one");
  int64_t sms = t.multiprocessors;
  auto q = b.dev->new_queue();
  auto time = [&](CompiledKernel& k, const std::vector<KernelArg>& a) {
    std::vector<double> ms;
    for (int r = 0; r < b.reps + 5; ++r) {
      double x = cuda_elapsed_ms(*q, [&] { k.enqueue(*q, a); });
      if (r >= 5) ms.push_back(x);
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  auto floats = [&](Buffer buf) {
    std::vector<unsigned char> bytes = b.download(buf);
    std::vector<float> v(bytes.size() / 4);
    std::memcpy(v.data(), bytes.data(), v.size() * 4);
    return v;
  };
  int bad = 0;
  auto expect = [&](bool ok, const char* what) {
    if (!ok) std::printf("CHECK FAILED: %s\n", what), ++bad;
  };
  std::printf("ceilings on %s (%s, %lld SMs), median of %d runs\n", b.device.c_str(),
              t.arch.c_str(), (long long)sms, b.reps);
  {  // wgmma: every thread keeps an element of its last chain; both warpgroups alike
    int64_t iters = 2000;
    CompiledKernel k = compile_kernel(*b.dev, wgmma_peak_kernel(sms, iters));
    Buffer out = b.alloc(size_t(sms * 256 * 4));
    double ms = time(k, {out});
    std::vector<float> v = floats(out);
    bool same = true;
    for (size_t i = 0; i < 128; ++i) same &= v[i] == v[i + 128] && std::isfinite(v[i]);
    expect(same, "wgmma: the two warpgroups' results differ");
    double flops = double(sms) * 2 * double(iters) * 16 * 2 * 64 * 256 * 16;
    std::printf("wgmma m64n256k16 bf16 from shared memory: %.1f TFLOP/s (%.3f ms; %s)\n",
                flops / (ms * 1e9), ms, k.program->resources().c_str());
  }
  {  // mma.sync: each thread's total is iters * 28 + 512 * iters / 2
    int64_t iters = 4000, blocks = 2 * sms;
    CompiledKernel k = compile_kernel(*b.dev, mma_sync_peak_kernel(blocks, iters));
    Buffer out = b.alloc(size_t(blocks * 256 * 4));
    double ms = time(k, {out});
    std::vector<float> v = floats(out);
    float want = float(iters * 28 + 512 * iters / 2);
    expect(std::all_of(v.begin(), v.end(), [&](float x) { return x == want; }),
           "mma.sync: a total is wrong");
    double flops = double(blocks) * 8 * double(iters) * 32 * 2 * 16 * 8 * 16;
    std::printf("mma.sync m16n8k16 bf16 from registers: %.1f TFLOP/s (%.3f ms)\n",
                flops / (ms * 1e9), ms);
  }
  {  // streams: the same 64-tiles-per-SM of a 8192-column bf16 tensor, by TMA and cp.async
    int64_t per_sm = 128, tiles = per_sm * sms, rows = (tiles + 31) / 32 * 64;
    std::vector<double> v;
    Buffer in = b.random(dtypes::bfloat16, rows * 8192, v);
    double bytes = double(tiles) * 64 * 256 * 2;
    auto first_sum = [&](int64_t blocks, int64_t block, int64_t n, int64_t elem) {
      double s = 0;
      for (int64_t j = 0; j < n; ++j) {
        int64_t g = block + j * blocks;
        s += v[size_t((g / 32 * 64 + elem / 256) * 8192 + g % 32 * 256 + elem % 256)];
      }
      return s;
    };
    CompiledKernel tk = compile_kernel(*b.dev, tma_stream_kernel(sms, per_sm, 4));
    Buffer out = b.alloc(size_t(sms * 4));
    std::vector<KernelArg> ta = {
        out, make_tensor_map(in, dtypes::bfloat16, {8192, rows}, {8192 * 2}, {256, 64})};
    double tms = time(tk, ta);
    std::vector<float> got = floats(out);
    bool ok = true;
    for (int64_t blk = 0; blk < sms; ++blk)
      ok &= std::fabs(got[size_t(blk)] - first_sum(sms, blk, per_sm, 0)) < 1e-3 * per_sm;
    expect(ok, "TMA stream: a block's sum of first elements is wrong");
    int64_t cblocks = 4 * sms, cper = per_sm / 4;
    CompiledKernel ck = compile_kernel(*b.dev, cp_async_stream_kernel(cblocks, cper));
    Buffer cout = b.alloc(size_t(cblocks * 256 * 4));
    double cms = time(ck, {cout, in});
    got = floats(cout);
    ok = true;
    for (int64_t blk = 0; blk < cblocks; blk += 37)
      ok &= std::fabs(got[size_t(blk * 256 + 5)] - first_sum(cblocks, blk, cper, 40)) < 1e-3 * cper;
    expect(ok, "cp.async stream: a thread's sum is wrong");
    std::printf(
        "TMA loads HBM -> shared, persistent grid of %lld blocks, 4 stages of 32 KiB: "
        "%.0f GB/s (%.3f ms)\n",
        (long long)sms, bytes / (tms * 1e6), tms);
    std::printf("cp.async loads HBM -> shared, %lld blocks of 256 threads: %.0f GB/s (%.3f ms)\n",
                (long long)cblocks, bytes / (cms * 1e6), cms);
    std::printf("stream bytes: %.0f\n", bytes);
  }
  {  // round trips: both warps must finish every turn
    int64_t iters = 100000;
    for (bool mb : {true, false}) {
      CompiledKernel k = compile_kernel(
          *b.dev, mb ? mbarrier_ping_pong_kernel(iters) : barrier_ping_pong_kernel(iters));
      Buffer out = b.alloc(64 * 4);
      double ms = time(k, {out});
      std::vector<float> v = floats(out);
      expect(std::all_of(v.begin(), v.end(), [](float x) { return x == 1.0f; }),
             "ping-pong: a thread did not finish");
      std::printf("%s round trip between two warps: %.1f ns\n",
                  mb ? "mbarrier arrive/wait" : "two __syncthreads", ms * 1e6 / double(iters));
    }
  }
  return bad ? work_failed("bench", std::to_string(bad) + " ceiling checks failed") : 0;
}

int cmd_bench(const std::vector<std::string>& args) {
  if (!args.empty() && args[0] == "gemm") return bench_gemm(args);
  if (!args.empty() && args[0] == "flash_attention_fwd") return bench_flash_attention_fwd(args);
  if (!args.empty() && args[0] == "ceilings") return bench_ceilings(args);
  if (!args.empty() && args[0] == "minilm") return bench_minilm(args);
  if (!args.empty() && args[0] == "train-step") return bench_train_step(args);
  return usage_error(
      "bench: expected a library kernel (gemm or flash_attention_fwd), ceilings or minilm");
}

}  // namespace kitten
