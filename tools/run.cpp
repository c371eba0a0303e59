// `kitten run minilm` and `kitten bench minilm`: the front end running a real model.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>

#include "frontend/minilm.h"
#include "frontend/schedule.h"
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

int cmd_run(const std::vector<std::string>& all) {
  if (all.empty() || all[0] != "minilm") return usage_error("run: expected a model (minilm)");
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
    auto num = [&](int64_t& v) {
      if (i + 1 >= args.size()) return false;
      char* end = nullptr;
      v = std::strtoll(args[++i].c_str(), &end, 10);
      return *end == 0 && v > 0;
    };
    bool ok = args[i] == "--batch"    ? num(batch)
              : args[i] == "--tokens" ? num(tokens)
              : args[i] == "--reps"   ? num(reps)
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
