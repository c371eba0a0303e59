// `kitten run minilm`, `kitten bench minilm`, `kitten run train-demo`, `kitten bench
// train-step` and `kitten run decode-demo`: the front end running a real model, training
// one, and decoding over a growing KV cache.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>

#include "backends/cuda/cuda_device.h"
#include "frontend/jit.h"
#include "frontend/minilm.h"
#include "frontend/schedule.h"
#include "frontend/train_demo.h"
#include "tools/cli.h"

namespace kitten {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The device named by --device (cuda when it opens here, else cpu), and the rest of args.
bool take_device(std::vector<std::string>& args, std::string& device, std::string& err) {
  for (size_t i = 0; i < args.size(); ++i)
    if (args[i] == "--device") {
      if (i + 1 >= args.size()) {
        err = "--device takes a device name";
        return false;
      }
      device = args[i + 1];
      args.erase(args.begin() + std::ptrdiff_t(i), args.begin() + std::ptrdiff_t(i) + 2);
      return true;
    }
  try {
    frontend_device("cuda");
    device = "cuda";
  } catch (const std::exception&) {
    device = "cpu";
  }
  return true;
}

DType weights_for(const std::string& device) {
  return device == "cuda" ? dtypes::float16 : dtypes::float32;
}

}  // namespace

// A whole number option's value after args[i] (advancing i); false when missing or bad.
bool count_option(const std::vector<std::string>& args, size_t& i, int64_t& v) {
  if (i + 1 >= args.size()) return false;
  char* end = nullptr;
  v = std::strtoll(args[++i].c_str(), &end, 10);
  return *end == 0 && v > 0;
}

int run_train_demo(const std::vector<std::string>& all) {
  std::vector<std::string> args(all.begin() + 1, all.end());
  TrainDemoOptions o;
  std::string err;
  if (!take_device(args, o.device, err)) return usage_error("run train-demo: " + err);
  int64_t steps = o.steps;
  for (size_t i = 0; i < args.size(); ++i) {
    bool ok = args[i] == "--steps"     ? count_option(args, i, steps)
              : args[i] == "--no-jit"  ? !(o.jit = false)
              : args[i] == "--no-fuse" ? !(o.fused = false)
                                       : false;
    if (!ok) return usage_error("run train-demo: bad or unknown option '" + args[i] + "'");
  }
  o.steps = int(steps);
  std::printf(
      "a 2-layer causal transformer (width 64, 4 heads) memorising 65 random tokens over a "
      "vocabulary of 32, AdamW lr 3e-3, on %s (fused optimiser %s, JIT %s)\n",
      o.device.c_str(), o.fused ? "on" : "off", o.jit ? "on" : "off");
  auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  o.progress = [&](int step, double loss) {
    if (step % 50 != 0 && step != o.steps) return;
    double ms = seconds_since(last) * 1e3 / (step % 50 ? step % 50 : 50);
    last = std::chrono::steady_clock::now();
    std::printf("step %4d  cross-entropy %.4f  (%.2f ms per step)\n", step, loss, ms);
    std::fflush(stdout);
  };
  TrainDemoResult r = train_demo(o);
  std::printf("%d steps in %.2f s, %lld kernels per step; final cross-entropy %.4f (%s 0.05)\n",
              o.steps, r.seconds, (long long)r.kernels_per_step, r.losses.back(),
              r.losses.back() < 0.05 ? "below" : "NOT below");
  return r.losses.back() < 0.05 || o.steps < 500 ? 0 : 1;
}

int bench_train_step(const std::vector<std::string>& all) {
  std::vector<std::string> args(all.begin() + 1, all.end());
  TrainDemoOptions o;
  std::string err;
  if (!take_device(args, o.device, err)) return usage_error("bench train-step: " + err);
  int64_t steps = 100;
  for (size_t i = 0; i < args.size(); ++i)
    if (!(args[i] == "--steps" && count_option(args, i, steps)))
      return usage_error("bench train-step: bad or unknown option '" + args[i] + "'");
  o.steps = int(steps);
  // Per step of the training demo, after its first 10 steps (compilation, capture).
  for (auto [fused, jit] : {std::pair{true, true}, {false, true}, {true, false}, {false, false}}) {
    o.fused = fused;
    o.jit = jit;
    std::vector<double> at;
    auto t0 = std::chrono::steady_clock::now();
    o.progress = [&](int, double) { at.push_back(seconds_since(t0)); };
    TrainDemoResult r = train_demo(o);
    size_t skip = std::min<size_t>(10, at.size() - 1);
    double per = (at.back() - at[skip - 1]) / double(at.size() - skip);
    std::printf(
        "train step on %s, fused optimiser %-3s JIT %-3s: %8.3f ms per step, %lld "
        "kernels per step, final loss %.4f\n",
        o.device.c_str(), fused ? "on" : "off", jit ? "on" : "off", per * 1e3,
        (long long)r.kernels_per_step, r.losses.back());
  }
  // The launch cost inside a replayed graph: 150 small element-wise kernels, captured.
  const int n = 150;
  Jit chain([&](const std::vector<Tensor>& in) {
    Tensor x = in[0];
    for (int k = 0; k < n; ++k) x = (x * 1.0001 + 0.5).contiguous();
    return std::vector<Tensor>{x};
  });
  Tensor x = Tensor::rand({1024}, dtypes::float32, o.device, 1).contiguous();
  x.realize();
  std::vector<double> times;
  for (int r = 0; r < 23; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    chain({x});
    if (r >= 3) times.push_back(seconds_since(t0));
  }
  std::sort(times.begin(), times.end());
  double us = times[times.size() / 2] * 1e6;
  std::printf("replayed graph of %zu kernels on %s: %.1f us per call, %.2f us per kernel\n",
              chain.graph_kernels(), o.device.c_str(), us, us / double(chain.graph_kernels()));
  if (o.device == "cuda" && chain.capture()) {
    const auto& [kernel, kargs] = chain.capture()->launches.front();
    Device& dev = frontend_device("cuda");
    auto q = dev.new_queue();
    std::vector<double> bare;
    for (int r = 0; r < 20; ++r)
      bare.push_back(cuda_bare_graph_ms(*q, *kernel->program,
                                        launch_grid(kernel->rendered.info, kargs),
                                        kernel->rendered.info.local, kargs, n, {}) *
                     1e3);
    std::sort(bare.begin(), bare.end());
    double b = bare[bare.size() / 2];
    std::printf(
        "bare driver graph of %d of the same kernel: %.1f us per launch, %.2f us per "
        "kernel; kitten's replay costs %.2fx\n",
        n, b, b / n, us / b);
  }
  return 0;
}

// Decoding over a growing KV cache: each step appends a key and a value at position t and
// attends from the new query over the first t + 1 cache rows (an axis of variable length),
// under the JIT: captured once, replayed with t and the length rebound. Checked against
// float64 attention over the same rows at every step.
int run_decode_demo(const std::vector<std::string>& all) {
  std::vector<std::string> args(all.begin() + 1, all.end());
  std::string device, err;
  if (!take_device(args, device, err)) return usage_error("run decode-demo: " + err);
  int64_t steps = 256;
  for (size_t i = 0; i < args.size(); ++i)
    if (!(args[i] == "--steps" && count_option(args, i, steps)))
      return usage_error("run decode-demo: bad or unknown option '" + args[i] + "'");
  const int64_t heads = 4, d = 32;
  std::printf(
      "decoding %lld steps of one attention layer (%lld heads of %lld) over a growing "
      "KV cache on %s, the step captured by the JIT\n",
      (long long)steps, (long long)heads, (long long)d, device.c_str());
  auto zeros = [&] {
    return Tensor::zeros({heads, steps, d}, dtypes::float32, device).contiguous().realize();
  };
  Tensor kc = zeros(), vc = zeros();
  Jit jit([&](const std::vector<Tensor>& in) {
    const Tensor &q = in[0], &k = in[1], &v = in[2], &t = in[3], &len = in[4];
    Tensor::assign({{kc.slice(1, t, 1), k}, {vc.slice(1, t, 1), v}});
    return std::vector<Tensor>{
        Tensor::scaled_dot_product_attention(q, kc.narrow(1, 0, len), vc.narrow(1, 0, len))};
  });
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal;
  auto draw = [&] {
    std::vector<double> x(size_t(heads * d));
    for (double& e : x) e = double(float(normal(rng)));
    return x;
  };
  std::vector<std::vector<double>> keys, values;  // per step, [heads][d]
  RealizeStats before = realize_stats();
  double worst = 0;
  auto t0 = std::chrono::steady_clock::now(), last = t0;
  for (int64_t t = 0; t < steps; ++t) {
    std::vector<double> q = draw();
    keys.push_back(draw());
    values.push_back(draw());
    auto host = [&](const std::vector<double>& x) {
      return Tensor::from_doubles(x, {heads, 1, d}, dtypes::float32, device);
    };
    Tensor o = jit({host(q), host(keys.back()), host(values.back()),
                    Tensor::variable("t", t, 0, steps - 1, device),
                    Tensor::variable("len", t + 1, 1, steps, device)})[0];
    std::vector<double> got = o.to_doubles();
    for (int64_t h = 0; h < heads; ++h) {  // float64 attention over rows 0..t
      std::vector<double> p(size_t(t + 1));
      double mx = -INFINITY, z = 0;
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0;
        for (int64_t e = 0; e < d; ++e)
          dot += q[size_t(h * d + e)] * keys[size_t(j)][size_t(h * d + e)];
        mx = std::max(mx, p[size_t(j)] = dot / std::sqrt(double(d)));
      }
      for (double& x : p) z += (x = std::exp(x - mx));
      for (int64_t e = 0; e < d; ++e) {
        double acc = 0;
        for (int64_t j = 0; j <= t; ++j) acc += p[size_t(j)] * values[size_t(j)][size_t(h * d + e)];
        double diff = std::abs(got[size_t(h * d + e)] - acc / z);
        if (!(diff <= worst)) worst = diff;  // NaN too
      }
    }
    if ((t + 1) % 64 == 0 || t + 1 == steps) {
      double ms = seconds_since(last) * 1e3 / double(t % 64 + 1);
      last = std::chrono::steady_clock::now();
      std::printf("step %4lld  attends over %4lld rows  %s  (%.3f ms per step)\n", (long long)t + 1,
                  (long long)t + 1, jit.replayed() ? "replayed" : "run", ms);
      std::fflush(stdout);
    }
  }
  RealizeStats after = realize_stats();
  std::printf(
      "%lld steps in %.2f s: %lld kernels compiled, %lld replays of a %zu-kernel graph; "
      "largest difference from float64 attention %.2e (%s 1e-4)\n",
      (long long)steps, seconds_since(t0), (long long)(after.compiled - before.compiled),
      (long long)(after.replays - before.replays), jit.graph_kernels(), worst,
      worst < 1e-4 ? "below" : "NOT below");
  return worst < 1e-4 ? 0 : 1;  // (false for NaN)
}

int cmd_run(const std::vector<std::string>& all) {
  if (!all.empty() && all[0] == "train-demo") return run_train_demo(all);
  if (!all.empty() && all[0] == "decode-demo") return run_decode_demo(all);
  if (all.empty() || all[0] != "minilm")
    return usage_error("run: expected a model (minilm), train-demo or decode-demo");
  std::vector<std::string> args(all.begin() + 1, all.end()), sentences;
  std::string device, err;
  if (!take_device(args, device, err)) return usage_error("run minilm: " + err);
  for (const std::string& a : args) {
    if (a.rfind("--", 0) == 0) return usage_error("run minilm: unknown option '" + a + "'");
    sentences.push_back(a);
  }
  if (sentences.empty()) return usage_error("run minilm: expected one or more sentences");
  auto t0 = std::chrono::steady_clock::now();
  MiniLM model = MiniLM::load(minilm_dir(), device, weights_for(device));
  double load_s = seconds_since(t0);
  RealizeStats before = realize_stats();
  auto t1 = std::chrono::steady_clock::now();
  Tensor e = model.encode(sentences);
  std::vector<double> v = e.to_doubles();
  double run_s = seconds_since(t1);
  int64_t kernels = realize_stats().kernels - before.kernels;
  int64_t h = e.shape()[1];
  std::printf(
      "all-MiniLM-L6-v2 on %s (weights %s): %zu sentence(s), %lld kernels, %.3f s "
      "(%lld compiled; weights loaded in %.2f s)\n",
      device.c_str(), std::string(weights_for(device).name()).c_str(), sentences.size(),
      (long long)kernels, run_s, (long long)(realize_stats().compiled - before.compiled), load_s);
  for (size_t i = 0; i < sentences.size(); ++i) {
    std::printf("[%zu] %.6f %.6f %.6f %.6f ...  %s\n", i, v[i * size_t(h)], v[i * size_t(h) + 1],
                v[i * size_t(h) + 2], v[i * size_t(h) + 3], sentences[i].c_str());
  }
  if (sentences.size() > 1) {
    std::printf("cosine similarities:\n");
    for (size_t i = 0; i < sentences.size(); ++i) {
      std::printf("[%zu]", i);
      for (size_t j = 0; j < sentences.size(); ++j) {
        double c = 0;
        for (int64_t k = 0; k < h; ++k)
          c += v[i * size_t(h) + size_t(k)] * v[j * size_t(h) + size_t(k)];
        std::printf(" %7.4f", c);
      }
      std::printf("\n");
    }
  }
  return 0;
}

int bench_minilm(const std::vector<std::string>& all) {
  std::vector<std::string> args(all.begin() + 1, all.end());
  std::string device, err;
  if (!take_device(args, device, err)) return usage_error("bench minilm: " + err);
  int64_t batch = 8, tokens = 128, reps = 3;
  for (size_t i = 0; i < args.size(); ++i) {
    bool ok = args[i] == "--batch"    ? count_option(args, i, batch)
              : args[i] == "--tokens" ? count_option(args, i, tokens)
              : args[i] == "--reps"   ? count_option(args, i, reps)
                                      : false;
    if (!ok) return usage_error("bench minilm: bad or unknown option '" + args[i] + "'");
  }
  if (tokens < 2 || tokens > 512) return usage_error("bench minilm: --tokens is 2 to 512");
  MiniLM model = MiniLM::load(minilm_dir(), device, weights_for(device));
  // Random word pieces between [CLS] and [SEP], the same every run.
  std::mt19937 rng(1);
  std::vector<std::vector<int32_t>> ids(static_cast<size_t>(batch));
  for (auto& s : ids) {
    s.push_back(model.tokenizer().cls_id());
    while (int64_t(s.size()) < tokens - 1) s.push_back(int32_t(1000 + rng() % 28000));
    s.push_back(model.tokenizer().sep_id());
  }
  // Kernels per forward, fused and not.
  Tensor probe = model.embed(ids);
  size_t fused = schedule_nodes({probe.node()}).items.size();
  setenv("KITTEN_FUSION", "0", 1);
  size_t unfused = schedule_nodes({probe.node()}).items.size();
  unsetenv("KITTEN_FUSION");
  probe.realize();  // compiles every kernel
  // Each forward builds its graph, schedules and runs it (nothing is cached between calls
  // but the compiled kernels); the graph and schedule time is measured apart.
  std::vector<double> times;
  double schedule_s = 0;
  for (int64_t r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    model.embed(ids).realize();
    times.push_back(seconds_since(t0));
    auto t1 = std::chrono::steady_clock::now();
    schedule_nodes({model.embed(ids).node()});
    schedule_s += seconds_since(t1);
  }
  std::sort(times.begin(), times.end());
  double t = times[times.size() / 2];
  std::printf(
      "minilm %s batch %lld x %lld tokens: %.2f ms per forward (median of %lld), "
      "%.1f sentences/s; %zu kernels per forward (%zu without fusion); graph and "
      "schedule %.1f ms of it\n",
      device.c_str(), (long long)batch, (long long)tokens, t * 1e3, (long long)reps,
      double(batch) / t, fused, unfused, schedule_s / double(reps) * 1e3);
  // One forward with each kernel timed: the kernels of the six layers, per layer.
  realize_stats().profile = true;
  realize_stats().times.clear();
  model.embed(ids).realize();
  realize_stats().profile = false;
  std::map<std::string, std::pair<int, double>> by_name;
  double total = 0;
  for (auto& [name, us] : realize_stats().times) {
    by_name[name].first++;
    by_name[name].second += us;
    total += us;
  }
  int64_t layers = model.config().layers;
  std::printf("kernels timed one by one: %.2f ms in all, %.2f ms and %.1f kernels per layer\n",
              total / 1e3, total / 1e3 / double(layers),
              double(realize_stats().times.size()) / double(layers));
  std::vector<std::pair<double, std::string>> top;
  for (auto& [name, v] : by_name) top.emplace_back(v.second, name);
  std::sort(top.rbegin(), top.rend());
  for (size_t i = 0; i < top.size() && i < 8; ++i)
    std::printf("  %-36s x%-3d %9.1f us\n", top[i].second.c_str(), by_name[top[i].second].first,
                top[i].first);
  return 0;
}

}  // namespace kitten
