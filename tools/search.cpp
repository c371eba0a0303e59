// `kitten search <kernel>`: the autotuner's BEAM search over a kernel's schedules on a
// device, with its report; `kitten compile-worker`: the process that compiles one
// candidate for it. See the help text in kitten.cpp and docs/autotune.md.
#include <unistd.h>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <sstream>

#include "autotune/measure.h"
#include "autotune/search.h"
#include "kernels/examples.h"
#include "kernels/gemm.h"
#include "tools/cli.h"

namespace kitten {
namespace {

// The shape option's numbers: "64,128" -> {64, 128}; empty on a malformed list.
std::vector<int64_t> parse_shape(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, ',');) {
    char* end = nullptr;
    long long v = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end || v < 1 || v > (1ll << 20)) return {};
    out.push_back(v);
  }
  return out;
}

// The path of this executable, for the compile workers.
std::string self_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, size_t(n)) : "kitten";
}

}  // namespace

int cmd_compile_worker(const std::vector<std::string>& args) {
  if (args.size() != 2 || args[0] != "--device")
    return usage_error("compile-worker: expected --device D (the source comes on stdin)");
  std::unique_ptr<Device> dev;
  if (int status = open_named_device("compile-worker", args[1], dev); status >= 0) return status;
  std::string source((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (source.empty()) return work_failed("compile-worker", "no source on stdin");
  dev->compiler().compile(source);  // into the compile cache; errors reach run_command
  return 0;
}

int cmd_search(const std::vector<std::string>& args) {
  using namespace autotune;
  std::string kernel, device = "cpu";
  std::vector<int64_t> shape;
  DType dtype = dtypes::float32;
  bool dtype_given = false;
  SearchOptions opts;
  MeasureOptions mopts;
  bool workers = true;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool more = i + 1 < args.size();
    auto count = [&](int lo, int hi, int& out) {
      long long v = std::strtoll(args[++i].c_str(), nullptr, 10);
      if (v < lo || v > hi)
        return usage_error("search: " + a + " takes a number from " + std::to_string(lo) + " to " +
                           std::to_string(hi) + ", got '" + args[i] + "'");
      out = int(v);
      return -1;
    };
    int status = -1;
    if (a == "--device" && more) {
      device = args[++i];
    } else if (a == "--shape" && more) {
      shape = parse_shape(args[++i]);
      if (shape.empty())
        return usage_error("search: --shape takes positive numbers, e.g. 512,512,512");
    } else if (a == "--dtype" && more) {
      std::optional<DType> d = DType::parse(args[++i]);
      if (!d || !d->is_float())
        return usage_error("search: --dtype takes a float dtype, got '" + args[i] + "'");
      dtype = *d, dtype_given = true;
    } else if (a == "--beam" && more) {
      status = count(1, 64, opts.beam);
    } else if (a == "--rounds" && more) {
      status = count(0, 100, opts.max_rounds);
    } else if (a == "--measured" && more) {
      status = count(1, 10000, opts.measured_per_round);
    } else if (a == "--jobs" && more) {
      status = count(1, 256, mopts.jobs);
    } else if (a == "--reps" && more) {
      status = count(1, 1000, mopts.reps);
    } else if (a == "--budget" && more) {
      opts.budget_s = std::strtod(args[++i].c_str(), nullptr);
      if (!(opts.budget_s > 0)) return usage_error("search: --budget takes seconds (> 0)");
    } else if (a == "--verbose") {
      opts.verbose = true;
    } else if (a == "--no-validate") {
      opts.validate = false;
    } else if (a == "--in-process") {
      workers = false;
    } else if (kernel.empty() && a.rfind("--", 0) != 0) {
      kernel = a;
    } else {
      return usage_error("search: unexpected argument '" + a + "'");
    }
    if (status >= 0) return status;
  }
  if (kernel.empty())
    return usage_error("search: expected a kernel (matmul, sum, softmax, add, gemm)");
  std::unique_ptr<Device> dev;
  if (int status = open_named_device("search", device, dev); status >= 0) return status;
  const Target& target = dev->props().target;
  auto need = [&](size_t n, std::vector<int64_t> fallback) {
    if (shape.empty()) shape = std::move(fallback);
    return shape.size() == n;
  };
  SearchSpace space;
  if (kernel == "matmul") {
    if (!need(3, {256, 256, 256})) return usage_error("search: matmul takes --shape M,N,K");
    space = action_space(matmul_kernel(shape[0], shape[1], shape[2], dtype), target);
  } else if (kernel == "sum" || kernel == "softmax" || kernel == "add") {
    if (!need(2, {1024, 1024}))
      return usage_error("search: " + kernel + " takes --shape ROWS,COLS");
    UOp k = kernel == "sum"       ? reduce_kernel(shape[0], shape[1], 1, Op::ADD, dtype)
            : kernel == "softmax" ? softmax_kernel(shape[0], shape[1])
                                  : elementwise_add_kernel(shape[0], shape[1], dtype, false);
    space = action_space(k, target);
  } else if (kernel == "gemm") {
    if (!need(3, {1024, 1024, 1024})) return usage_error("search: gemm takes --shape M,N,K");
    GemmProblem p{shape[0], shape[1], shape[2], dtype_given ? dtype : dtypes::bfloat16,
                  dtypes::bfloat16};
    Schedule start = gemm_default_schedule(p, target);
    std::vector<Knob> knobs = {{"BM", {64, 128, 192, 256}},
                               {"BN", {64, 128, 192, 256}},
                               {"BK", {32, 64}},
                               {"STAGES", {2, 3, 4, 5}},
                               {"GROUP", {4, 8, 16, 32}},
                               {"WM", {1, 2, 4}},
                               {"WN", {1, 2}},
                               {"SWIZZLE", {64, 128}}};
    space = knob_space(
        "gemm " + p.to_string(),
        [p, target](const Schedule& s) { return gemm_kernel(p, s, target); }, start, knobs,
        {{0, p.out, p.m * p.n, true, false}, {1, p.in, p.m * p.k}, {2, p.in, p.k * p.n}});
    space.lower = [p, target](const Schedule& s) { return gemm_kernels(p, s, target); };
    space.arg = [p](const CompiledKernel& k, int64_t slot, Buffer b) {
      if (slot == 0) return tensor_arg(k, 0, b, {p.n, p.m}, {p.n * p.out.itemsize()});
      tiles::TensorLayout l = gemm_operand_layout(p, int(slot));
      return tensor_arg(k, int(slot), b, l.dims, l.strides);
    };
    // Rows that are not whole 16-byte units: also start from the repacked operands (with
    // the padded problem's defaults, the Hopper schedule where the target has it).
    if (gemm_operand_layout(p, 1).strides[0] % 16 || gemm_operand_layout(p, 2).strides[0] % 16)
      space.start.push_back(Schedule().knob("REPACK", 1));
    if (p.n * p.out.itemsize() % 16) space.start.push_back(Schedule().knob("REPACK", 2));
  } else {
    return usage_error("search: no searchable kernel named '" + kernel +
                       "' (matmul, sum, softmax, add, gemm)");
  }
  if (workers) mopts.worker = {self_path(), "compile-worker", "--device", device};
  opts.progress = [](const std::string& l) { std::fprintf(stderr, "search: %s\n", l.c_str()); };
  DeviceMeasure measure(*dev, space, mopts);
  SearchResult r = beam_search(space, target, measure, opts);
  bool timed = r.report.timed;
  auto cost = [timed](double c) {
    char b[64];
    std::snprintf(b, sizeof b, timed ? "%.4f ms" : "%.6g (emulator cost)", timed ? c * 1e3 : c);
    return std::string(b);
  };
  std::printf("kernel: %s on %s (%s)\n", space.name.c_str(), device.c_str(), target.arch.c_str());
  std::printf("best: '%s' %s; start %s (%.2fx)\n", r.best.to_string().c_str(), cost(r.cost).c_str(),
              cost(r.start_cost).c_str(), r.start_cost / r.cost);
  std::fputs(r.report.to_string().c_str(), stdout);
  return 0;
}

}  // namespace kitten
