// Shared by the front-end tests: the devices they run on, random host data rounded to a
// dtype, and comparisons against float64 references computed in the tests by plain loops.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cuda/cuda_device.h"
#include "dsl/float_format.h"
#include "frontend/tensor.h"

namespace kitten {

// frontend_tests runs cpu and emu; frontend_cuda_tests (KITTEN_CUDA_TESTS) cuda, skipped
// with the reason where there is no GPU.
inline std::vector<std::string> frontend_devices() {
#ifdef KITTEN_CUDA_TESTS
  return {"cuda"};
#else
  return {"cpu", "emu"};
#endif
}

// Call from SetUp: a skip there keeps the test body from running.
inline void skip_unavailable(const std::string& device) {
  if (device == "cuda") {
    std::string why = cuda_unavailable_reason();
    if (!why.empty()) GTEST_SKIP() << "no GPU: " << why;
  }
}

// A test run on each front-end device (skipped with the reason where it is missing), with
// tensors made there from values or from seeded random values rounded to the dtype.
class FrontendDeviceTest : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { skip_unavailable(GetParam()); }
  const std::string& dev() const { return GetParam(); }
  Tensor from(const std::vector<double>& v, Shape s) const {
    return Tensor::from_doubles(v, std::move(s), dtypes::float32, dev());
  }
  Tensor random(Shape s, uint64_t seed, DType d = dtypes::float32) const;
};

inline double round_to_dtype(DType d, double x) {
  if (const FloatFormat* f = d.narrow_float()) return decode_float(*f, encode_float(*f, x));
  if (d == dtypes::float32) return double(float(x));
  if (!d.is_float()) return std::trunc(x);
  return x;
}

// n normal values (or integers in [lo, hi) for integer dtypes), already rounded to d.
inline std::vector<double> random_values(size_t n, DType d, uint64_t seed, double scale = 1) {
  std::mt19937_64 rng(seed * 7919 + n);
  std::normal_distribution<double> normal(0, scale);
  std::vector<double> v(n);
  for (double& x : v) {
    if (d == dtypes::bool_)
      x = double(rng() % 2);
    else if (!d.is_float())
      x = double(int64_t(rng() % 41) - 20);
    else
      x = round_to_dtype(d, normal(rng));
  }
  return v;
}

inline Tensor FrontendDeviceTest::random(Shape s, uint64_t seed, DType d) const {
  size_t n = size_t(numel(s));
  return Tensor::from_doubles(random_values(n, d, seed), std::move(s), d, dev());
}

// Every element within atol + rtol * |want| (NaN where want is NaN), reporting the first
// few that are not.
inline void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                         double rtol, double atol, const std::string& what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  int bad = 0;
  std::ostringstream msg;
  msg.precision(10);
  for (size_t i = 0; i < got.size(); ++i) {
    double g = got[i], w = want[i];
    bool ok =
        (std::isnan(w) && std::isnan(g)) || g == w || std::abs(g - w) <= atol + rtol * std::abs(w);
    if (!ok && bad++ < 5) msg << "\n  [" << i << "] got " << g << " want " << w;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ"
                    << msg.str();
}

// Float64 attention per head: softmax(q k^T / sqrt(d)) v with queries [heads, nq, d], keys
// [heads, rows, d] and values [heads, rows, dv] of which the first `keys` rows are
// attended (causal: aligned at the bottom right of those).
inline std::vector<double> attention_reference(const std::vector<double>& q,
                                               const std::vector<double>& k,
                                               const std::vector<double>& v, int64_t heads,
                                               int64_t nq, int64_t rows, int64_t keys, int64_t d,
                                               int64_t dv, bool causal) {
  std::vector<double> out;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < nq; ++i) {
      int64_t seen = causal ? keys - nq + i + 1 : keys;
      std::vector<double> s(static_cast<size_t>(seen));
      double mx = -INFINITY, z = 0;
      for (int64_t j = 0; j < seen; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < d; ++e)
          dot += q[size_t((h * nq + i) * d + e)] * k[size_t((h * rows + j) * d + e)];
        mx = std::max(mx, s[size_t(j)] = dot / std::sqrt(double(d)));
      }
      for (double& x : s) z += (x = std::exp(x - mx));
      for (int64_t e = 0; e < dv; ++e) {
        double acc = 0;
        for (int64_t j = 0; j < seen; ++j)
          acc += s[size_t(j)] / z * v[size_t((h * rows + j) * dv + e)];
        out.push_back(acc);
      }
    }
  return out;
}

// The test data directory, and a file's lines split at '\n' only (as the scripts that
// made the data read them).
inline const std::string kFrontendData = std::string(KITTEN_SOURCE_DIR) + "/tests/frontend/data/";
inline std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace kitten
