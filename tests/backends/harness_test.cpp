// The harness itself: the broken kernels an audit found passing the old checks must each
// fail the check that targets them. Results of the broken arithmetic are made on the host
// (the checks see exactly what such a kernel would store); the write past the end and the
// missing wait run on the devices.
#include <gtest/gtest-spi.h>

#include "test_device.h"

namespace kitten {
namespace {

#ifndef KITTEN_CUDA_TESTS
// bf16 matmul whose output misses one K term: the per-element bound catches it.
TEST(Harness, AMatmulMissingOneKTermFailsTheElementBound) {
  const int64_t m = 16, n = 16, k = 1000;
  HostData a = HostData::random(dtypes::bfloat16, size_t(m * k), 1),
           b = HostData::random(dtypes::bfloat16, size_t(k * n), 2);
  std::vector<double> scale, want = matmul_reference(a, b, m, n, k, &scale);
  HostData good(dtypes::bfloat16, size_t(m * n)), broken(dtypes::bfloat16, size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      size_t at = size_t(i * n + j);
      double missing = a.values[size_t(i * k + k / 2)] * b.values[size_t((k / 2) * n + j)];
      good.set(at, want[at]);
      broken.set(at, want[at] - missing);
    }
  EXPECT_TRUE(expect_accumulated(good, want, scale, k));
  EXPECT_NONFATAL_FAILURE(expect_accumulated(broken, want, scale, k), "within");
}

// An fp8 add whose last column is wrong (it stored a, not a + b), and a bf16 add that
// truncates instead of rounding to nearest even: the exact check catches both (the old
// relative norm passed them: one column in a thousand, an error under one ulp).
TEST(Harness, AWrongLastColumnAndTruncationFailTheExactCheck) {
  const int64_t rows = 8, cols = 1000;
  for (DType dt : {dtypes::float8_e4m3, dtypes::bfloat16}) {
    SCOPED_TRACE(dt.name());
    HostData a = HostData::random(dt, size_t(rows * cols), 3),
             b = HostData::random(dt, size_t(rows * cols), 4);
    std::vector<double> want(size_t(rows * cols));
    HostData good(dt, want.size()), broken(dt, want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      want[i] = a.values[i] + b.values[i];
      good.set(i, want[i]);
      if (dt == dtypes::float8_e4m3) {
        broken.set(i, i % size_t(cols) == size_t(cols - 1) ? a.values[i] : want[i]);
      } else {  // truncate the float32 sum to its top 16 bits
        float s = float(want[i]);
        uint32_t bits;
        std::memcpy(&bits, &s, 4);
        bits &= 0xFFFF0000u;
        std::memcpy(&s, &bits, 4);
        broken.set(i, s);
      }
    }
    EXPECT_TRUE(expect_exact(good, want));
    EXPECT_NONFATAL_FAILURE(expect_exact(broken, want), "exactly");
  }
}

#endif

class HarnessOnDevices : public DeviceTest {};

// A kernel that writes one element past the end of its output: the guard band catches it
// on cpu and cuda; the emulator refuses the write itself.
TEST_P(HarnessOnDevices, AWritePastTheEndIsCaught) {
  const int64_t n = 100;
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i = range(n, 0, AxisKind::Global);
  UOp shifted = sink({end(store(index(out, i + 1), load(index(x, i))), {i})}, "past_end");
  HostData hx = HostData::random(f, n, 5), ho = HostData::poisoned(f, n);
  DeviceBuffer dx(*dev, hx), dout(*dev, ho);
  if (dev->props().name == "emu") {
    EXPECT_THROW(compile_kernel(*dev, shifted).run(args({&dout, &dx})), BackendError);
    return;
  }
  compile_kernel(*dev, shifted).run(args({&dout, &dx}));
  EXPECT_NONFATAL_FAILURE(dout.read(ho), "wrote past the end");
}

// Two queues without the wait between them: the copy sees the poison of its round.
TEST_P(HarnessOnDevices, AMissingWaitBetweenQueuesIsCaught) {
  EXPECT_LE(add_then_copy_across_queues(*dev, 4096, 2, true), tolerance(dtypes::float32));
  EXPECT_GT(add_then_copy_across_queues(*dev, 4096, 2, false), 1.0);
}

INSTANTIATE_TEST_SUITE_P(Devices, HarnessOnDevices, testing::ValuesIn(test_devices()), test_name);

}  // namespace
}  // namespace kitten
