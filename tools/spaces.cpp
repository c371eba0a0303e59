#include "tools/spaces.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "autotune/database.h"
#include "kernels/examples.h"
#include "tools/cli.h"

namespace kitten {

using autotune::BufferSpec;
using autotune::KernelId;
using autotune::Knob;
using autotune::SearchSpace;

KernelId gemm_id(const GemmProblem& p) {
  return {"gemm",
          autotune::text_key("gemm " + p.to_string()),
          {p.m, p.n, p.k},
          {std::string(p.in.name()), std::string(p.out.name())}};
}

KernelId attention_id(const AttentionProblem& p, const AttentionShape& s) {
  return {p.mask == AttentionMask::Causal ? "attention-causal" : "attention",
          autotune::text_key("flash_attention_fwd " + p.to_string()),
          {s.b, s.h, s.hkv, s.nq, s.nkv, p.d},
          {std::string(p.in.name()), std::string(p.out.name())}};
}

namespace {

SearchSpace gemm_space(const GemmProblem& p, const Target& target) {
  std::vector<Knob> knobs = {{"BM", {64, 128, 192, 256}},
                             {"BN", {64, 128, 192, 256}},
                             {"BK", {32, 64}},
                             {"STAGES", {2, 3, 4, 5}},
                             {"GROUP", {4, 8, 16, 32}},
                             {"WM", {1, 2, 4}},
                             {"WN", {1, 2}},
                             {"SWIZZLE", {64, 128}}};
  SearchSpace space = autotune::knob_space(
      "gemm " + p.to_string(), [p, target](const Schedule& s) { return gemm_kernel(p, s, target); },
      gemm_default_schedule(p, target), knobs,
      {{0, p.out, p.m * p.n, true, false}, {1, p.in, p.m * p.k}, {2, p.in, p.k * p.n}});
  space.id = gemm_id(p);
  auto cache = std::make_shared<GemmLoweringCache>();
  space.lower = [p, target, cache](const Schedule& s) {
    return gemm_kernels(p, s, target, cache.get());
  };
  // With REPACK, the steps also move each copy on its own (its part's entries).
  space.neighbours = [p, target, knobs](const Schedule& from) {
    std::vector<Schedule> out = autotune::knob_neighbours(from, knobs);
    std::vector<GemmPart> copies;
    try {
      copies = gemm_repack_copies(p, from);
    } catch (const ScheduleError&) {  // lowering refuses it and the search counts it
      return out;
    } catch (const std::invalid_argument&) {
      return out;
    }
    for (const GemmPart& c : copies)
      for (Schedule& step : autotune::part_steps(from, c.part, c.copy, c.schedule, target))
        out.push_back(std::move(step));
    return out;
  };
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
  return space;
}

SearchSpace attention_space(const AttentionProblem& p, const AttentionShape& s,
                            const Target& target) {
  std::vector<Knob> knobs = {{"BQ", {64, 128, 192, 256}},
                             {"BKV", {32, 64, 96, 128, 192, 256}},
                             {"WARPS", {4, 8, 12, 16}},
                             {"STAGES", {2, 3, 4}},
                             {"QREG", {0, 1}},
                             {"WGMMA", {0, 1}},
                             {"PV", {0, 1}},
                             {"PINGPONG", {0, 1}}};
  int64_t q = s.b * s.h * s.nq * p.d, kv = s.b * s.hkv * s.nkv * p.d;
  SearchSpace space = autotune::knob_space(
      "flash_attention_fwd " + p.to_string() + " B,H,Hkv,Nq,Nkv = " + s.to_string(),
      [p, target](const Schedule& sch) { return flash_attention_fwd_kernel(p, sch, target); },
      flash_attention_fwd_default_schedule(p, target), knobs,
      {{0, p.out, q, true, false},
       {1, dtypes::float32, s.b * s.h * s.nq, true, false},
       {2, p.in, q},
       {3, p.in, kv},
       {4, p.in, kv}});
  space.id = attention_id(p, s);
  space.vars = flash_attention_fwd_vars(p, s);
  // A step to the mma.sync schedule (WGMMA=0) leaves the Hopper schedule's own knobs; on
  // the Hopper schedule (BQ = 16*WARPS: consumer warpgroups of 64 rows) BQ and WARPS also
  // move together, which one knob's step alone never can.
  Schedule start = flash_attention_fwd_default_schedule(p, target);
  space.neighbours = [knobs, start](const Schedule& from) {
    std::vector<Schedule> out = autotune::knob_neighbours(from, knobs);
    for (Schedule& step : out) {
      if (step.knob_or("WGMMA", 1)) continue;
      std::vector<ScheduleEntry> kept;
      for (const ScheduleEntry& e : step.entries())
        if (e.name != "PV" && e.name != "PINGPONG") kept.push_back(e);
      step = Schedule(kept);
    }
    auto set = [](const Schedule& s, const char* name, int64_t value) {
      std::vector<Schedule> one = autotune::knob_neighbours(s, {{name, {value}}});
      return one.empty() ? s : one[0];  // empty: it has that value already
    };
    if (from.knob_or("WGMMA", start.knob_or("WGMMA", 0)))
      for (int64_t warps : {4, 8, 12, 16})
        if (warps != from.knob_or("WARPS", start.knob_or("WARPS", 0)))
          out.push_back(set(set(from, "WARPS", warps), "BQ", 16 * warps));
    return out;
  };
  space.arg = [p, s](const CompiledKernel& k, int64_t slot, Buffer b) -> KernelArg {
    if (slot < 2) return b;
    tiles::TensorLayout l = flash_attention_operand_layout(p, s, int(slot));
    return tensor_arg(k, int(slot), b, l.dims, l.strides);
  };
  return space;
}

}  // namespace

SearchSpace named_space(const std::string& kernel, std::vector<int64_t> shape,
                        std::optional<DType> dtype, const Target& target) {
  auto need = [&](size_t n, std::vector<int64_t> fallback, const char* what) {
    if (shape.empty()) shape = std::move(fallback);
    if (shape.size() != n) throw std::invalid_argument(kernel + " takes a shape " + what);
  };
  auto id_of = [&](SearchSpace space, DType d) {
    space.id.kernel = kernel;
    space.id.shape = shape;
    space.id.dtypes = {std::string(d.name())};
    return space;
  };
  if (kernel == "matmul") {
    need(3, {256, 256, 256}, "M,N,K");
    DType d = dtype.value_or(dtypes::float32);
    return id_of(autotune::action_space(matmul_kernel(shape[0], shape[1], shape[2], d), target), d);
  }
  if (kernel == "sum" || kernel == "softmax" || kernel == "layernorm" || kernel == "add") {
    need(2, {1024, 1024}, "ROWS,COLS");
    bool f32_only = kernel == "softmax" || kernel == "layernorm";
    DType d = f32_only ? dtypes::float32 : dtype.value_or(dtypes::float32);
    if (f32_only && dtype && *dtype != d) throw std::invalid_argument(kernel + " is float32 only");
    UOp k = kernel == "sum"         ? reduce_kernel(shape[0], shape[1], 1, Op::ADD, d)
            : kernel == "softmax"   ? softmax_kernel(shape[0], shape[1])
            : kernel == "layernorm" ? layernorm_kernel(shape[0], shape[1])
                                    : elementwise_add_kernel(shape[0], shape[1], d, false);
    return id_of(autotune::action_space(k, target), d);
  }
  if (kernel == "concat") {
    if (shape.empty()) shape = {64, 100, 200, 300};
    if (shape.size() < 3)
      throw std::invalid_argument("concat takes a shape ROWS,W1,W2[,W3...] (float32)");
    if (dtype && *dtype != dtypes::float32) throw std::invalid_argument("concat is float32 only");
    return id_of(
        autotune::action_space(
            concat_kernel(shape[0], std::vector<int64_t>(shape.begin() + 1, shape.end())), target),
        dtypes::float32);
  }
  if (kernel == "gemm") {
    need(3, {1024, 1024, 1024}, "M,N,K");
    return gemm_space(
        {shape[0], shape[1], shape[2], dtype.value_or(dtypes::bfloat16), dtypes::bfloat16}, target);
  }
  if (kernel == "attention" || kernel == "attention-causal") {
    need(6, {1, 4, 4, 256, 256, 64}, "B,H,Hkv,Nq,Nkv,D");
    AttentionProblem p;
    p.d = int(shape[5]);
    p.in = p.out = dtype.value_or(dtypes::bfloat16);
    if (kernel == "attention-causal") p.mask = AttentionMask::Causal;
    AttentionShape s =
        AttentionShape::contiguous(shape[0], shape[1], shape[2], shape[3], shape[4], p.d);
    return attention_space(p, s, target);
  }
  throw std::invalid_argument("no searchable kernel named '" + kernel + "' (" + kSpaceNames + ")");
}

std::optional<int> kernel_spec_option(const std::string& cmd, const std::vector<std::string>& args,
                                      size_t& i, KernelSpec& spec) {
  const std::string& a = args[i];
  bool more = i + 1 < args.size();
  if (a == "--shape" && more) {
    spec.shape = parse_shape(args[++i]);
    if (spec.shape.empty())
      return usage_error(cmd + ": --shape takes positive numbers, e.g. 512,512,512");
    return -1;
  }
  if (a == "--dtype" && more) {
    spec.dtype = DType::parse(args[++i]);
    if (!spec.dtype || !spec.dtype->is_float())
      return usage_error(cmd + ": --dtype takes a float dtype, got '" + args[i] + "'");
    return -1;
  }
  if (spec.kernel.empty() && a.rfind("--", 0) != 0) {
    spec.kernel = a;
    return -1;
  }
  return std::nullopt;
}

std::vector<std::string> measure_worker_argv(const KernelSpec& spec, const std::string& device,
                                             int reps) {
  std::vector<std::string> argv = {self_path(), "measure-worker", spec.kernel,         "--device",
                                   device,      "--reps",         std::to_string(reps)};
  if (!spec.shape.empty()) {
    std::string s;
    for (int64_t d : spec.shape) s += (s.empty() ? "" : ",") + std::to_string(d);
    argv.insert(argv.end(), {"--shape", s});
  }
  if (spec.dtype) argv.insert(argv.end(), {"--dtype", std::string(spec.dtype->name())});
  return argv;
}

std::string cost_text(double cost, bool timed) {
  if (std::isnan(cost)) return "not measured";
  char b[64];
  std::snprintf(b, sizeof b, timed ? "%.4f ms" : "%.6g (emulator cost)", timed ? cost * 1e3 : cost);
  return b;
}

std::optional<int> search_option(const std::string& cmd, const std::vector<std::string>& args,
                                 size_t& i, autotune::SearchOptions& opts,
                                 autotune::MeasureOptions& mopts, bool& workers) {
  const std::string& a = args[i];
  bool more = i + 1 < args.size();
  auto count = [&](int lo, int hi, int& out) {
    long long v = std::strtoll(args[++i].c_str(), nullptr, 10);
    if (v < lo || v > hi)
      return usage_error(cmd + ": " + a + " takes a number from " + std::to_string(lo) + " to " +
                         std::to_string(hi) + ", got '" + args[i] + "'");
    out = int(v);
    return -1;
  };
  if (a == "--beam" && more) return count(1, 64, opts.beam);
  if (a == "--rounds" && more) return count(0, 100, opts.max_rounds);
  if (a == "--measured" && more) return count(1, 10000, opts.measured_per_round);
  if (a == "--jobs" && more) return count(1, 256, mopts.jobs);
  if (a == "--reps" && more) return count(1, 1000, mopts.reps);
  if (a == "--budget" && more) {
    opts.budget_s = std::strtod(args[++i].c_str(), nullptr);
    return opts.budget_s > 0 ? -1 : usage_error(cmd + ": --budget takes seconds (> 0)");
  }
  if (a == "--no-validate") {
    opts.validate = false;
    return -1;
  }
  if (a == "--in-process") {
    workers = false;
    return -1;
  }
  return std::nullopt;
}

}  // namespace kitten
