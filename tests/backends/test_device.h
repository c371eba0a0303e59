// Devices for the device-parameterised backend tests, and host data with float64
// references. Each test process compiles into its own temporary cache directory.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cpu/clang_jit.h"
#include "backends/cpu/cpu_device.h"
#include "backends/cuda/cuda_device.h"
#include "backends/emu/emu_device.h"
#include "backends/hcq.h"
#include "kernels/examples.h"

namespace kitten {

// The seed of this test process: KITTEN_TEST_SEED when set, else fresh. Printed when the
// process starts and with every failure of a device test, so a failure can be replayed.
inline uint64_t test_seed() {
  static const uint64_t seed = [] {
    if (const char* s = std::getenv("KITTEN_TEST_SEED"); s && *s)
      return uint64_t(std::strtoull(s, nullptr, 0));
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ rd();
  }();
  return seed;
}
inline std::string seed_text() {
  char buf[64];
  std::snprintf(buf, sizeof buf, "KITTEN_TEST_SEED=0x%llx", (unsigned long long)test_seed());
  return buf;
}
struct SeedBanner : testing::Environment {
  void SetUp() override { std::printf("kitten tests: %s\n", seed_text().c_str()); }
};
inline testing::Environment* const kSeedBanner = testing::AddGlobalTestEnvironment(new SeedBanner);

inline std::string test_cache_dir() {
  static std::string dir = [] {
    std::string t = testing::TempDir() + "kitten-cache-XXXXXX";
    return std::string(mkdtemp(t.data()) ? t : "");
  }();
  return dir;
}

// "cpu-jit" (in-process Clang + ORC) and "cpu-subprocess" (cc + dlopen); later backends add
// theirs. Returns nullptr with `why` set when the device is not available here.
inline std::unique_ptr<Device> open_test_device(const std::string& name, std::string& why) {
  if (name == "cpu-jit") {
    if (!cpu_has_jit()) {
      why = "this build has no LLVM/Clang for the in-process compiler";
      return nullptr;
    }
    return make_cpu_device(CpuCompileMode::Jit, CompileCache(test_cache_dir()));
  }
  if (name == "cpu-subprocess")
    return make_cpu_device(CpuCompileMode::Subprocess, CompileCache(test_cache_dir()));
  if (name == "emu") return make_emu_device();
  if (name == "cuda") {
    why = cuda_unavailable_reason();
    return why.empty() ? make_cuda_device(CompileCache(test_cache_dir())) : nullptr;
  }
  why = "unknown test device " + name;
  return nullptr;
}

// backend_tests runs the host devices; cuda_tests (built with KITTEN_CUDA_TESTS, labelled
// cuda) the same tests on the GPU.
#ifdef KITTEN_CUDA_TESTS
inline const std::vector<std::string>& test_devices() {
  static const std::vector<std::string> d = {"cuda"};
  return d;
}
inline const std::vector<std::string>& block_devices() { return test_devices(); }
#else
inline const std::vector<std::string>& test_devices() {
  static const std::vector<std::string> d = {"cpu-jit", "cpu-subprocess", "emu"};
  return d;
}
inline const std::vector<std::string>& block_devices() {
  static const std::vector<std::string> d = {"emu"};
  return d;
}
#endif

inline std::string test_name(const testing::TestParamInfo<std::string>& i) {
  std::string n = i.param;
  for (char& c : n)
    if (c == '-') c = '_';
  return n;
}

class DeviceTest : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    dev = open_test_device(GetParam(), why);
    if (!dev) GTEST_SKIP() << GetParam() << " unavailable: " << why;
  }
  std::unique_ptr<Device> dev;
  testing::ScopedTrace seed_trace{__FILE__, __LINE__, seed_text()};
};

// Host data of one dtype: the bytes the kernel sees, and the same values as doubles
// (already rounded to the dtype) for the reference.
struct HostData {
  DType dtype;
  std::vector<double> values;
  std::vector<unsigned char> bytes;

  HostData(DType d, size_t n) : dtype(d), values(n), bytes(n * size_t(d.itemsize())) {}
  // float16, bfloat16, float32 and float64 elements.
  void set(size_t i, double v) {
    unsigned char raw[8];
    size_t w = size_t(dtype.itemsize());
    if (const FloatFormat* f = dtype.narrow_float()) {
      uint16_t code = uint16_t(encode_float(*f, v));
      values[i] = decode_float(*f, code);
      std::memcpy(raw, &code, 2);
    } else if (dtype == dtypes::float32) {
      float x = float(v);
      values[i] = x;
      std::memcpy(raw, &x, 4);
    } else if (dtype == dtypes::float64) {
      values[i] = v;
      std::memcpy(raw, &v, 8);
    } else {
      ADD_FAILURE() << "HostData: unsupported dtype " << dtype.name();
      return;
    }
    std::copy(raw, raw + w, bytes.begin() + std::ptrdiff_t(i * w));
  }
  double get(size_t i) const {
    unsigned char raw[8] = {};
    size_t w = size_t(dtype.itemsize());
    std::copy(bytes.begin() + std::ptrdiff_t(i * w), bytes.begin() + std::ptrdiff_t((i + 1) * w),
              raw);
    if (const FloatFormat* f = dtype.narrow_float()) {
      uint16_t code;
      std::memcpy(&code, raw, 2);
      return decode_float(*f, code);
    }
    if (dtype == dtypes::float32) {
      float x;
      std::memcpy(&x, raw, 4);
      return x;
    }
    double x;
    std::memcpy(&x, raw, 8);
    return x;
  }
  // Random normal values: a stream of its own for every (stream, dtype, size), drawn from
  // the process's test seed.
  static HostData random(DType d, size_t n, uint64_t stream) {
    HostData h(d, n);
    std::seed_seq seq{test_seed(), test_seed() >> 32, stream, uint64_t(n),
                      uint64_t(std::hash<std::string_view>{}(d.name()))};
    std::mt19937_64 rng(seq);
    std::normal_distribution<double> dist(0.0, 1.0);
    for (size_t i = 0; i < n; ++i) h.set(i, dist(rng));
    return h;
  }
  // Poisoned: every byte 0xFF (NaN for every float dtype), so unwritten outputs show.
  static HostData poisoned(DType d, size_t n) {
    HostData h(d, n);
    std::fill(h.bytes.begin(), h.bytes.end(), 0xFF);
    return h;
  }
};

// A buffer on the device holding `h`, followed by a guard band of poisoned bytes that no
// kernel may touch: `read` fails the test when one changed (a write past the end, which
// only the emulator would report by itself). Kernels get `buf`, the buffer without it.
struct DeviceBuffer {
  static constexpr size_t kGuard = 256;
  static constexpr unsigned char kGuardByte = 0xA5;
  Device& dev;
  Buffer whole, buf;
  DeviceBuffer(Device& d, const HostData& h)
      : dev(d),
        whole(d.allocator().alloc(h.bytes.size() + kGuard)),
        buf{whole.ptr, h.bytes.size()} {
    std::vector<unsigned char> init(h.bytes);
    init.resize(h.bytes.size() + kGuard, kGuardByte);
    d.allocator().copy_in(whole, init.data(), init.size());
  }
  ~DeviceBuffer() { dev.allocator().free(whole); }
  void read(HostData& h) const {
    std::vector<unsigned char> all(h.bytes.size() + kGuard);
    dev.allocator().copy_out(all.data(), whole, all.size());
    std::copy(all.begin(), all.begin() + std::ptrdiff_t(h.bytes.size()), h.bytes.begin());
    for (size_t i = h.bytes.size(); i < all.size(); ++i)
      if (all[i] != kGuardByte) {
        ADD_FAILURE() << "a kernel wrote past the end of a buffer of " << h.bytes.size()
                      << " bytes (guard byte " << i - h.bytes.size() << " changed)";
        return;
      }
  }
};

// The message of what f throws ("" when it throws nothing).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// Kernel arguments from device buffers, in order.
inline std::vector<KernelArg> args(std::initializer_list<const DeviceBuffer*> bufs) {
  std::vector<KernelArg> a;
  for (const DeviceBuffer* b : bufs) a.push_back(b->buf);
  return a;
}

// The tolerance of docs/testing.md for results stored in `dtype` after reductions of K.
inline double tolerance(DType dtype, int64_t k = 1) {
  if (dtype == dtypes::float64) return 1e-12;
  if (dtype == dtypes::float32) return 1e-6 * std::max(1.0, std::sqrt(double(k)));
  if (dtype == dtypes::float16) return 1e-3;
  if (dtype == dtypes::bfloat16) return 8e-3;
  if (dtype == dtypes::float8_e4m3) return 6.5e-2;
  if (dtype == dtypes::float8_e5m2) return 1.3e-1;
  return 0;
}

// a (m x k) times b (k x n), row-major, in float64.
// The value of `want` rounded to dtype, as the kernel stores it.
inline double rounded(DType dtype, double want) {
  if (const FloatFormat* f = dtype.narrow_float()) return decode_float(*f, encode_float(*f, want));
  if (dtype == dtypes::float32) return double(float(want));
  return want;
}

// Reports one failure listing the first few bad elements (and how many there are).
inline bool report_elements(const std::vector<std::string>& bad, size_t total) {
  if (bad.empty()) return true;
  std::string text =
      std::to_string(bad.size()) + " of " + std::to_string(total) + " elements are wrong:";
  for (size_t i = 0; i < bad.size() && i < 5; ++i) text += "\n  " + bad[i];
  ADD_FAILURE() << text;
  return false;
}

// Exact where the result is exact (element-wise ops, max, copies, conversions): every
// element equals the float64 reference rounded once to the output dtype, bit for bit (NaN
// where the reference is NaN).
inline bool expect_exact(const HostData& got, const std::vector<double>& want) {
  std::vector<std::string> bad;
  for (size_t i = 0; i < want.size(); ++i) {
    double g = got.get(i), w = rounded(got.dtype, want[i]);
    if (g == w || (std::isnan(g) && std::isnan(w))) continue;
    std::ostringstream s;
    s.precision(17);
    s << "element " << i << " is " << g << ", want " << w << " exactly (" << got.dtype.name()
      << ")";
    bad.push_back(s.str());
  }
  return report_elements(bad, want.size());
}

// One unit in the last place of dtype at |x| (the spacing of the dtype's values there).
inline double ulp(DType dtype, double x) {
  int mantissa = 52, emin = -1022;  // below emin the spacing is that of the subnormals
  if (const FloatFormat* f = dtype.narrow_float()) {
    mantissa = f->man_bits;
    emin = 1 - f->bias();
  } else if (dtype == dtypes::float32) {
    mantissa = 23;
    emin = -126;
  }
  int e = std::max(std::ilogb(std::max(std::abs(x), 1e-300)), emin);
  return std::ldexp(1.0, e - mantissa);
}

// Accumulating kernels (sums, matmul) accumulate K terms in float32 in some order, then
// round once to the output dtype: each element must lie within one output ulp plus the
// float32 accumulation bound (K+1) * 2^-24 * sum |term| of its float64 reference. `scale`
// holds sum |term| per element. Returns false after reporting the first violations.
inline bool expect_accumulated(const HostData& got, const std::vector<double>& want,
                               const std::vector<double>& scale, int64_t k) {
  std::vector<std::string> bad;
  for (size_t i = 0; i < want.size(); ++i) {
    double g = got.get(i);
    double bound = ulp(got.dtype, want[i]) + double(k + 1) * std::ldexp(1.0, -24) * scale[i];
    if (std::abs(g - want[i]) <= bound) continue;  // false for NaN: an unwritten element
    std::ostringstream s;
    s.precision(17);
    s << "element " << i << " is " << g << ", want " << want[i] << " within " << bound << " ("
      << got.dtype.name() << ", K = " << k << ")";
    bad.push_back(s.str());
  }
  return report_elements(bad, want.size());
}

// The sums of x (rows x cols) along `axis` (0: over rows, one per column; 1: over
// columns, one per row) in float64, and sum |term| per output for expect_accumulated.
inline std::vector<double> sum_reference(const HostData& x, int64_t rows, int64_t cols, int axis,
                                         std::vector<double>& scale) {
  std::vector<double> want(size_t(axis == 0 ? cols : rows), 0.0);
  scale.assign(want.size(), 0.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      size_t o = size_t(axis == 0 ? j : i);
      want[o] += x.values[size_t(i * cols + j)];
      scale[o] += std::abs(x.values[size_t(i * cols + j)]);
    }
  return want;
}

// softmax of each row of x (rows x cols) in float64, and the check of docs/testing.md:
// each value within (cols + 8) * 2^-24 of its reference, relative to it.
inline std::vector<double> softmax_reference(const HostData& x, int64_t rows, int64_t cols) {
  std::vector<double> want(size_t(rows * cols));
  for (int64_t i = 0; i < rows; ++i) {
    const double* row = &x.values[size_t(i * cols)];
    double m = -INFINITY, sum = 0;
    for (int64_t j = 0; j < cols; ++j) m = std::max(m, row[j]);
    for (int64_t j = 0; j < cols; ++j) sum += std::exp(row[j] - m);
    for (int64_t j = 0; j < cols; ++j) want[size_t(i * cols + j)] = std::exp(row[j] - m) / sum;
  }
  return want;
}
inline bool expect_softmax(const HostData& got, const std::vector<double>& want, int64_t cols) {
  std::vector<std::string> bad;
  for (size_t k = 0; k < want.size(); ++k) {
    double bound = double(cols + 8) * std::ldexp(1.0, -24) * want[k];
    if (std::abs(got.get(k) - want[k]) <= bound) continue;  // false for NaN
    std::ostringstream s;
    s.precision(17);
    s << "element " << k << " is " << got.get(k) << ", want " << want[k] << " within " << bound;
    bad.push_back(s.str());
  }
  return report_elements(bad, want.size());
}

inline std::vector<double> matmul_reference(const HostData& a, const HostData& b, int64_t m,
                                            int64_t n, int64_t k,
                                            std::vector<double>* scale = nullptr) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  if (scale) scale->assign(c.size(), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t r = 0; r < k; ++r) {
        double p = a.values[size_t(i * k + r)] * b.values[size_t(r * n + j)];
        c[size_t(i * n + j)] += p;
        if (scale) (*scale)[size_t(i * n + j)] += std::abs(p);
      }
  return c;
}

// ||got - want|| / ||want||, with NaN (an unwritten output) as infinite error.
inline double rel_error(const HostData& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    double g = got.get(i);
    if (std::isnan(g)) return INFINITY;
    num += (g - want[i]) * (g - want[i]);
    den += want[i] * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// Runs `k` on the emulator (with a target profile) with float32 buffers of the given
// sizes; returns the error text, or "".
inline std::string emu_fault(const UOp& k, std::vector<size_t> sizes,
                             Target target = h100_target()) {
  auto dev = make_emu_device(std::move(target));
  std::vector<std::unique_ptr<DeviceBuffer>> bufs;
  std::vector<KernelArg> a;
  for (size_t n : sizes) {
    bufs.push_back(std::make_unique<DeviceBuffer>(*dev, HostData::random(dtypes::float32, n, 17)));
    a.push_back(bufs.back()->buf);
  }
  try {
    compile_kernel(*dev, k).run(a);
  } catch (const BackendError& e) {
    return e.what();
  }
  return "";
}

// Two queues ordered by signals: the copy queue is submitted first but waits for the
// compute queue, which adds a + b (n float32) into out; the copy of out must see the sum.
// Repeated `rounds` times with fresh queues and signals, out and its copy poisoned again
// before every round. Returns the largest relative error of a round's copy. `wait` false
// drops the copy's wait and submits the compute only after the copy ran: the broken
// ordering the harness must catch.
inline double add_then_copy_across_queues(Device& dev, int64_t n, int rounds, bool wait = true) {
  HostData a = HostData::random(dtypes::float32, size_t(n), 3),
           b = HostData::random(dtypes::float32, size_t(n), 4);
  HostData out = HostData::poisoned(dtypes::float32, size_t(n)),
           copy = HostData::poisoned(dtypes::float32, size_t(n));
  DeviceBuffer da(dev, a), db(dev, b), dout(dev, out), dcopy(dev, copy);
  CompiledKernel k = compile_kernel(dev, elementwise_add_kernel(1, n, dtypes::float32, false));
  std::vector<double> want(static_cast<size_t>(n));
  for (size_t i = 0; i < want.size(); ++i) want[i] = a.values[i] + b.values[i];
  double worst = 0;
  for (int round = 0; round < rounds; ++round) {
    dev.allocator().copy_in(dout.buf, out.bytes.data(), out.bytes.size());
    dev.allocator().copy_in(dcopy.buf, copy.bytes.data(), copy.bytes.size());
    auto compute = dev.new_queue(), copier = dev.new_queue();
    auto ready = dev.new_signal(0), finished = dev.new_signal(0);
    if (wait) copier->wait(*ready, 1);
    copier->copy(dcopy.buf, dout.buf, size_t(n) * 4);
    copier->signal(*finished, 1);
    copier->submit();
    if (!wait) finished->wait(1);
    compute->exec(*k.program, k.rendered.info.global, k.rendered.info.local,
                  {dout.buf, da.buf, db.buf});
    compute->signal(*ready, 1);
    compute->submit();
    finished->wait(1);
    ready->wait(1);
    HostData got = HostData::poisoned(dtypes::float32, size_t(n));
    dcopy.read(got);
    worst = std::max(worst, rel_error(got, want));
  }
  return worst;
}

}  // namespace kitten
