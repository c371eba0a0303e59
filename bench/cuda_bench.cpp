// The cuda backend on the GPU, as tools/gpu/check.sh runs it: elementwise bandwidth,
// launch overhead (direct, graph-replayed, graph-replayed with rebinding, and a bare
// cuLaunchKernel loop in the same process), copy/compute overlap across two queues, and
// GEMM at 4096^3 (tiled float32 through shared memory; bf16 with mma.sync; the plain
// matmul through the lowering pipeline), a row softmax and one long sum. Times are
// medians of 20 runs after 5 warm-ups, by CUDA events unless said otherwise. Writes JSON.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_device.h"
#include "kernels/examples.h"

using namespace kitten;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class F>
double timed_ms(Queue& q, F&& enqueue, int warm = 5, int reps = 20) {
  for (int i = 0; i < warm; ++i) cuda_elapsed_ms(q, enqueue);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(cuda_elapsed_ms(q, enqueue));
  return median(t);
}

// n*n random values of `dtype` (float32 or bfloat16) on the device, and the same values as
// doubles (rounded to the dtype) for the reference.
Buffer random_matrix(Device& d, int64_t n, DType dtype, uint64_t seed, std::vector<double>& v) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, 1.0);
  size_t count = size_t(n * n), width = size_t(dtype.itemsize());
  std::vector<unsigned char> bytes(count * width);
  v.resize(count);
  for (size_t i = 0; i < count; ++i) {
    float x = float(dist(rng));
    if (dtype == dtypes::bfloat16) {
      uint16_t h = uint16_t(encode_float(kBFloat16, x));
      v[i] = decode_float(kBFloat16, h);
      std::memcpy(&bytes[i * width], &h, 2);
    } else {
      v[i] = x;
      std::memcpy(&bytes[i * width], &x, 4);
    }
  }
  Buffer b = d.allocator().alloc(bytes.size());
  d.allocator().copy_in(b, bytes.data(), bytes.size());
  return b;
}

// The largest error of 512 sampled elements of c (n x n float32) against the float64
// product, relative to the norm of the row of a times the column of b (the scale of the
// rounding error of a dot product).
double gemm_sample_error(Device& d, Buffer c, const std::vector<double>& a,
                         const std::vector<double>& b, int64_t n) {
  std::vector<float> got(size_t(n * n));
  d.allocator().copy_out(got.data(), c, got.size() * 4);
  std::mt19937_64 rng(99);
  double worst = 0;
  for (int s = 0; s < 512; ++s) {
    int64_t i = int64_t(rng() % uint64_t(n)), j = int64_t(rng() % uint64_t(n));
    double want = 0, scale = 0;
    for (int64_t k = 0; k < n; ++k) {
      double p = a[size_t(i * n + k)] * b[size_t(k * n + j)];
      want += p;
      scale += std::abs(p);
    }
    double g = got[size_t(i * n + j)];
    worst = std::isnan(g) ? INFINITY : std::max(worst, std::abs(g - want) / scale);
  }
  return worst;
}

Buffer filled(Device& d, size_t bytes, unsigned char byte) {
  Buffer b = d.allocator().alloc(bytes);
  std::vector<unsigned char> host(bytes, byte);
  d.allocator().copy_in(b, host.data(), bytes);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path = argc > 2 && std::string(argv[1]) == "--json" ? argv[2] : "";
  std::map<std::string, double> r;
  auto dev = make_cuda_device();
  auto q = dev->new_queue();
  std::printf("device: %s\n", dev->props().compiler.c_str());

  // 1. Elementwise add of two 256 MiB float32 arrays.
  {
    const int64_t n = int64_t(64) << 20;
    Buffer a = filled(*dev, n * 4, 0x3f), b = filled(*dev, n * 4, 0x3f),
           out = dev->allocator().alloc(n * 4);
    CompiledKernel k = compile_kernel(*dev, elementwise_add_kernel(1, n, dtypes::float32, false));
    double ms = timed_ms(*q, [&] {
      q->exec(*k.program, k.rendered.info.global, k.rendered.info.local, {out, a, b});
    });
    r["add_256MB_ms"] = ms;
    r["add_256MB_GBps"] = 3.0 * double(n * 4) / (ms * 1e6);
    dev->allocator().free(a);
    dev->allocator().free(b);
    dev->allocator().free(out);
  }

  // 2. Launch overhead of 1000 tiny kernels.
  {
    const int launches = 1000;
    Buffer a = filled(*dev, 256, 0), b = filled(*dev, 256, 0), o1 = dev->allocator().alloc(256),
           o2 = dev->allocator().alloc(256);
    CompiledKernel k = compile_kernel(*dev, elementwise_add_kernel(1, 32, dtypes::float32, false));
    LaunchDims g = k.rendered.info.global, l = k.rendered.info.local;
    auto host_ms = [&](auto&& f) {
      std::vector<double> t;
      for (int rep = 0; rep < 25; ++rep) {
        auto s = dev->new_signal(0);
        auto t0 = std::chrono::steady_clock::now();
        f();
        q->signal(*s, 1);
        q->submit();
        s->wait(1);
        if (rep >= 5)
          t.push_back(
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                  .count());
      }
      return median(t);
    };
    // The direct and the bare loops alternate, so that drift of the machine hits both alike.
    std::vector<KernelArg> args = {o1, a, b};
    std::vector<double> direct, bare;
    for (int rep = 0; rep < 25; ++rep) {
      auto s = dev->new_signal(0);
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < launches; ++i) q->exec(*k.program, g, l, args);
      q->signal(*s, 1);
      q->submit();
      s->wait(1);
      double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      double bare_ms = cuda_bare_launches_ms(*q, *k.program, g, l, args, launches);
      if (rep >= 5) direct.push_back(ms), bare.push_back(bare_ms);
    }
    r["launch_direct_us"] = 1e3 * median(direct) / launches;
    r["launch_bare_driver_us"] = 1e3 * median(bare) / launches;
    auto graph = dev->new_graph();
    for (int i = 0; i < launches; ++i) graph->record(*k.program, g, l, {o1, a, b});
    r["launch_graph_us"] = 1e3 * host_ms([&] { graph->replay(*q); }) / launches;
    bool flip = false;
    r["launch_graph_rebind_us"] = 1e3 * host_ms([&] {
                                    std::pair<Buffer, Buffer> rb[] = {{o1, flip ? o1 : o2}};
                                    flip = !flip;
                                    graph->replay(*q, rb);
                                  }) /
                                  launches;
    std::vector<double> bare_graph;
    for (int rep = 0; rep < 25; ++rep) {
      double ms = cuda_bare_graph_ms(*q, *k.program, g, l, args, launches);
      if (rep >= 5) bare_graph.push_back(ms);
    }
    r["launch_bare_graph_us"] = 1e3 * median(bare_graph) / launches;
    std::vector<double> bare_rebind;
    std::vector<KernelArg> other = {o2, a, b};
    for (int rep = 0; rep < 25; ++rep) {
      double ms = cuda_bare_graph_ms(*q, *k.program, g, l, args, launches, other);
      if (rep >= 5) bare_rebind.push_back(ms);
    }
    r["launch_bare_graph_rebind_us"] = 1e3 * median(bare_rebind) / launches;
    for (Buffer x : {a, b, o1, o2}) dev->allocator().free(x);
  }

  // 3. Copy/compute overlap: a 1 GiB device copy on one queue while another runs a
  //    compute-bound kernel (the tiled float32 GEMM at 2048^3).
  {
    const int64_t n = 2048, copy_bytes = int64_t(1) << 30;
    Buffer a = filled(*dev, n * n * 4, 0x3c), b = filled(*dev, n * n * 4, 0x3c),
           out = dev->allocator().alloc(n * n * 4);
    Buffer src = filled(*dev, copy_bytes, 0x11), dst = dev->allocator().alloc(copy_bytes);
    CompiledKernel k = compile_kernel(*dev, tiled_matmul_kernel(n, n, n, 16));
    auto copier = dev->new_queue();
    auto compute = [&] {
      q->exec(*k.program, k.rendered.info.global, k.rendered.info.local, {out, a, b});
    };
    double t_compute = timed_ms(*q, compute);
    double t_copy = timed_ms(*copier, [&] { copier->copy(dst, src, copy_bytes); });
    std::vector<double> both;
    for (int rep = 0; rep < 25; ++rep) {
      auto s1 = dev->new_signal(0), s2 = dev->new_signal(0);
      auto t0 = std::chrono::steady_clock::now();
      copier->copy(dst, src, copy_bytes);
      copier->signal(*s1, 1);
      compute();
      q->signal(*s2, 1);
      copier->submit();
      q->submit();
      s1->wait(1);
      s2->wait(1);
      if (rep >= 5)
        both.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
    }
    r["overlap_sequential_ms"] = t_compute + t_copy;
    r["overlap_concurrent_ms"] = median(both);
    for (Buffer x : {a, b, out, src, dst}) dev->allocator().free(x);
  }

  // 4. GEMM at 4096^3 on random data, each result checked against float64 in this run.
  bool gemm_ok = true;
  {
    const int64_t n = 4096;
    std::vector<double> va32, vb32, va16, vb16;
    Buffer a32 = random_matrix(*dev, n, dtypes::float32, 1, va32),
           b32 = random_matrix(*dev, n, dtypes::float32, 2, vb32),
           c = dev->allocator().alloc(n * n * 4);
    Buffer a16 = random_matrix(*dev, n, dtypes::bfloat16, 3, va16),
           b16 = random_matrix(*dev, n, dtypes::bfloat16, 4, vb16);
    CompiledKernel tiled = compile_kernel(*dev, tiled_matmul_kernel(n, n, n, 16));
    double ms = timed_ms(
        *q,
        [&] {
          q->exec(*tiled.program, tiled.rendered.info.global, tiled.rendered.info.local,
                  {c, a32, b32});
        },
        2, 5);
    r["gemm_f32_tiled_TFLOPs"] = 2.0 * double(n * n * n) / (ms * 1e9);
    r["gemm_f32_tiled_max_err"] = gemm_sample_error(*dev, c, va32, vb32, n);
    CompiledKernel mma = compile_kernel(*dev, mma_matmul_kernel(n, n, n));
    ms = timed_ms(
        *q,
        [&] {
          q->exec(*mma.program, mma.rendered.info.global, mma.rendered.info.local, {c, a16, b16});
        },
        2, 5);
    r["gemm_bf16_mma_TFLOPs"] = 2.0 * double(n * n * n) / (ms * 1e9);
    r["gemm_bf16_mma_max_err"] = gemm_sample_error(*dev, c, va16, vb16, n);
    // The plain matmul kernel through the lowering pipeline: the heuristic schedule (a 4 x 4
    // register tile per thread) and a schedule with 16 x 16 threads per block.
    for (auto [name, text] : std::vector<std::pair<std::string, std::string>>{
             {"heuristic", ""}, {"local", "UPCAST:1:4 LOCAL:1:16 UPCAST:0:4 LOCAL:0:16"}}) {
      CompiledKernel k =
          compile_kernel(*dev, matmul_kernel(n, n, n, dtypes::float32), Schedule::parse(text));
      ms = timed_ms(
          *q,
          [&] {
            q->exec(*k.program, k.rendered.info.global, k.rendered.info.local, {c, a32, b32});
          },
          2, 5);
      r["gemm_f32_" + name + "_TFLOPs"] = 2.0 * double(n * n * n) / (ms * 1e9);
      r["gemm_f32_" + name + "_max_err"] = gemm_sample_error(*dev, c, va32, vb32, n);
    }
    // float32 accumulation over K = 4096 in either order: well under 1e-5 of the scale.
    gemm_ok = r["gemm_f32_tiled_max_err"] < 1e-5 && r["gemm_bf16_mma_max_err"] < 1e-5 &&
              r["gemm_f32_heuristic_max_err"] < 1e-5 && r["gemm_f32_local_max_err"] < 1e-5;
    for (Buffer x : {a32, b32, c, a16, b16}) dev->allocator().free(x);
  }

  // 5. Row softmax of 16384 x 1024 float32 (the heuristic schedule: one thread per row),
  //    checked on sampled rows against float64.
  {
    const int64_t rows = 16384, cols = 1024;
    std::mt19937_64 rng(7);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> host(size_t(rows * cols)), got(host.size());
    for (float& v : host) v = dist(rng);
    Buffer x = dev->allocator().alloc(host.size() * 4),
           out = dev->allocator().alloc(host.size() * 4);
    dev->allocator().copy_in(x, host.data(), host.size() * 4);
    CompiledKernel k = compile_kernel(*dev, softmax_kernel(rows, cols));
    double ms = timed_ms(*q, [&] {
      q->exec(*k.program, k.rendered.info.global, k.rendered.info.local, {out, x});
    });
    r["softmax_16384x1024_GBps"] = 2.0 * double(rows * cols * 4) / (ms * 1e6);
    dev->allocator().copy_out(got.data(), out, got.size() * 4);
    double worst = 0;
    for (int64_t i = 0; i < rows; i += 997) {
      double m = -INFINITY, sum = 0;
      for (int64_t j = 0; j < cols; ++j) m = std::max(m, double(host[size_t(i * cols + j)]));
      for (int64_t j = 0; j < cols; ++j) sum += std::exp(double(host[size_t(i * cols + j)]) - m);
      for (int64_t j = 0; j < cols; ++j) {
        double want = std::exp(double(host[size_t(i * cols + j)]) - m) / sum;
        worst = std::max(worst, std::abs(got[size_t(i * cols + j)] - want) / want);
      }
    }
    r["softmax_max_rel_err"] = worst;
    gemm_ok = gemm_ok && worst < double(cols + 8) * std::ldexp(1.0, -24);
    dev->allocator().free(x);
    dev->allocator().free(out);
  }

  // 6. One sum of 64M float32 (the heuristic SPLITs it into partials and their combine),
  //    checked against float64.
  {
    const int64_t n = int64_t(64) << 20;
    std::vector<float> host(static_cast<size_t>(n));
    std::mt19937_64 rng(8);
    std::uniform_real_distribution<float> dist(0.0f, 1.0f);
    double want = 0, scale = 0;
    for (float& v : host) v = dist(rng), want += v, scale += std::abs(v);
    Buffer x = dev->allocator().alloc(size_t(n) * 4), out = dev->allocator().alloc(4);
    dev->allocator().copy_in(x, host.data(), size_t(n) * 4);
    CompiledKernel k = compile_kernel(*dev, reduce_kernel(1, n, 1, Op::ADD, dtypes::float32));
    std::vector<KernelArg> kargs = {out, x};
    double ms = timed_ms(*q, [&] { k.enqueue(*q, kargs); });
    r["sum_256MB_GBps"] = double(n * 4) / (ms * 1e6);
    float got = 0;
    dev->allocator().copy_out(&got, out, 4);
    r["sum_256MB_rel_err"] = std::abs(double(got) - want) / scale;
    gemm_ok = gemm_ok && r["sum_256MB_rel_err"] < 1e-5;
    dev->allocator().free(x);
    dev->allocator().free(out);
  }

  std::string json = "{\n";
  for (auto it = r.begin(); it != r.end(); ++it) {
    char line[160];
    std::snprintf(line, sizeof line, "  \"%s\": %.6g%s\n", it->first.c_str(), it->second,
                  std::next(it) == r.end() ? "" : ",");
    json += line;
  }
  json += "}\n";
  std::fputs(json.c_str(), stdout);
  if (!json_path.empty()) std::ofstream(json_path) << json;
  if (!gemm_ok) std::fprintf(stderr, "a result is wrong: see *_max_err\n");
  if (!gemm_ok) return 1;
  return 0;
}
