// Devices for the device-parameterised backend tests, and host data with float64
// references. Each test process compiles into its own temporary cache directory.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/clang_jit.h"
#include "backends/cpu/cpu_device.h"
#include "backends/cuda/cuda_device.h"
#include "backends/emu/emu_device.h"
#include "backends/hcq.h"
#include "kernels/examples.h"

namespace kitten {

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
  static HostData random(DType d, size_t n, uint64_t seed) {
    HostData h(d, n);
    std::mt19937_64 rng(seed);
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

// A buffer on the device holding `h`, freed with the holder.
struct DeviceBuffer {
  Device& dev;
  Buffer buf;
  DeviceBuffer(Device& d, const HostData& h) : dev(d), buf(d.allocator().alloc(h.bytes.size())) {
    d.allocator().copy_in(buf, h.bytes.data(), h.bytes.size());
  }
  ~DeviceBuffer() { dev.allocator().free(buf); }
  void read(HostData& h) const { dev.allocator().copy_out(h.bytes.data(), buf, h.bytes.size()); }
};

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
inline std::vector<double> matmul_reference(const HostData& a, const HostData& b, int64_t m,
                                            int64_t n, int64_t k) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t r = 0; r < k; ++r)
        c[size_t(i * n + j)] += a.values[size_t(i * k + r)] * b.values[size_t(r * n + j)];
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

// Two queues ordered by signals: the copy queue is submitted first but waits for the
// compute queue, which adds a + b (n float32) into out; the copy of out must see the sum.
// Repeated `rounds` times with fresh queues and signals. Returns the relative error of the
// copied sum.
inline double add_then_copy_across_queues(Device& dev, int64_t n, int rounds) {
  HostData a = HostData::random(dtypes::float32, size_t(n), 3),
           b = HostData::random(dtypes::float32, size_t(n), 4);
  HostData out = HostData::poisoned(dtypes::float32, size_t(n)),
           copy = HostData::poisoned(dtypes::float32, size_t(n));
  DeviceBuffer da(dev, a), db(dev, b), dout(dev, out), dcopy(dev, copy);
  CompiledKernel k = compile_kernel(dev, elementwise_add_kernel(1, n, dtypes::float32, false));
  for (int round = 0; round < rounds; ++round) {
    auto compute = dev.new_queue(), copier = dev.new_queue();
    auto ready = dev.new_signal(0), finished = dev.new_signal(0);
    copier->wait(*ready, 1);
    copier->copy(dcopy.buf, dout.buf, size_t(n) * 4);
    copier->signal(*finished, 1);
    copier->submit();
    compute->exec(*k.program, k.rendered.info.global, k.rendered.info.local,
                  {dout.buf, da.buf, db.buf});
    compute->signal(*ready, 1);
    compute->submit();
    finished->wait(1);
  }
  dcopy.read(copy);
  std::vector<double> want(static_cast<size_t>(n));
  for (size_t i = 0; i < want.size(); ++i) want[i] = a.values[i] + b.values[i];
  return rel_error(copy, want);
}

}  // namespace kitten
