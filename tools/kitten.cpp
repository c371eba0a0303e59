// The kitten command line.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <cmath>
#include <random>
#include "backends/cuda/cuda_device.h"
#include "backends/emu/emulator.h"
#include "backends/registry.h"
#include "dsl/float_format.h"
#include "dsl/linearize.h"
#include "dsl/lower.h"
#include "dsl/ops.h"
#include "dsl/printer.h"
#include "dsl/symbolic.h"
#include "dsl/verify.h"
#include "kernels/examples.h"
#include "kernels/gemm.h"
#include "kernels/tensor_cores.h"
#include "tiles/tile.h"
#include "tools/cli.h"
#include "tools/int_expr.h"
#include "tools/symbolic_fuzz.h"
#include "tools/uops_doc.h"

namespace kitten {
namespace {

constexpr const char* kHelp = R"(kitten: a kernel-authoring DSL, autotuner and tensor runtime

usage: kitten <command> [options]

commands:
  uops              list the registered ops, one per line: name and meaning
  uops --doc        print the op reference (docs/uops.md) generated from the registry
  devices           list the devices, their properties and how they compile; say why
                    an unavailable one is unavailable
  graph <kernel>    build a built-in kernel graph, verify it and print it with its key
  graph --list      list the built-in kernels
  render <kernel> [--device cpu] [--schedule S]
                    print a built-in kernel's linear program (lowered for the device)
                    and its rendered source, for each kernel the schedule makes
  lower <kernel> [--device cpu] [--schedule S] [--print-after P[,P...]|all]
                    run the lowering pipeline for a device and print the graph after
                    the named passes and at the end. S: the schedule, one line of
                    ACTION:AXIS:AMOUNT entries (UPCAST UNROLL LOCAL GROUP GROUPTOP
                    PADTO SWAP CUT SPLIT) and KNOB=VALUE (NOOPT=1: no heuristic;
                    NOLOCALS=1: no block threads; TC=1: a 16-bit matrix product on
                    the tile GEMM, with its knobs), e.g. 'UPCAST:1:4 UNROLL:2:2';
                    ENTRY@P applies to part P of a CUT or SPLIT only, e.g.
                    'CUT:0:96 UPCAST:0:4@1' (docs/lowering.md)
  lower --passes    list the lowering passes in order, one sentence each
  simplify '<expr>'|- [--var NAME=LO..HI]... [--dtype int64|int32]
                    simplify an integer expression (- reads it from stdin): line 1
                    the result in the same grammar, line 2 its bounds, line 3 the
                    largest divisor it is known to be a multiple of. Grammar (C
                    semantics, int64 unless --dtype): + - * / % (truncating),
                    << >> (arithmetic) & | ^ ~, < <= > >= == !=, && || !, min(a,b),
                    max(a,b), where(c,a,b), parentheses, decimal and 0x literals
  simplify --fuzz N [--seed S]
                    check the simplifier on N random expressions
  bench gemm --device emu|cuda --shape M,N,K [--schedule S] [--b-transposed]
        [--a-transposed] [--dtype bfloat16|float16] [--out float32|bfloat16|float16]
        [--reps N] [--seed S] [--source FILE] [--untuned] [--db PATH] [--tune SECONDS]
                    run a library kernel on fresh random data, check it against the
                    float64 reference (every element up to 2^26 multiply-adds, else 512
                    sampled), print the schedule, time and TFLOP/s (cuda: median of N
                    runs, with registers and spills; emu: instruction and bank-conflict
                    counts instead of a time); --source writes the rendered kernel.
                    Without --schedule the tuned schedule is used: the tuning database
                    (--db, KITTEN_TUNE_DB), then the library shipped with kitten, else
                    the default (--untuned: always the default; --tune S: a BEAM search
                    of about S seconds where nothing is stored, its winner saved in the
                    database); the schedule line says which, with the lookup's time
                    Knobs: BM BN BK WM WN STAGES SWIZZLE GROUP WGMMA BLOCKS EPILOGUE
                    REPACK (1: A and B whose rows are not whole 16-byte units are
                    first copied into padded rows; 2: C too, written padded and copied
                    out; the copies timed with the GEMM)
  bench flash_attention_fwd --device emu|cuda --shape B,H,Hkv,Nq,Nkv,D [--causal]
        [--schedule S] [--dtype bfloat16|float16] [--out float32] [--reps N] [--seed S]
        [--source FILE] [--untuned] [--db PATH] [--tune SECONDS]
                    the same for attention (contiguous B,H,N,D tensors): O and LSE of
                    every row checked (64 sampled rows of large problems), TFLOP/s
                    counting 4*Nq*Nkv*D per head (the visible pairs where causal).
                    Knobs: BQ BKV WARPS STAGES QREG WGMMA PV
  bench ceilings --device cuda [--reps N]
                    a Hopper GPU's ceilings, each result checked: wgmma m64n256k16 from
                    shared memory and mma.sync from registers (TFLOP/s), a persistent
                    grid streaming HBM to shared memory by TMA and by cp.async (GB/s),
                    the round trip of two warps on mbarriers and on __syncthreads (ns)
  search <kernel> --device cpu|emu|cuda [--shape S] [--dtype D] [--beam N]
        [--rounds R] [--measured M] [--budget SECONDS] [--jobs J] [--reps N]
        [--no-validate] [--in-process] [--verbose] [--start SCHEDULE]...
                    the autotuner's BEAM search over a kernel's schedules: generated
                    kernels matmul (M,N,K), sum, softmax, layernorm, add (ROWS,COLS), concat
                    (ROWS,W1,W2[,...]: torch.cat of rows side by side) by actions
                    (UPCAST UNROLL LOCAL GROUP GROUPTOP SWAP NOLOCALS SPLIT CUT; TC=1
                    routes a 16-bit matrix product onto the tile GEMM), the
                    DSL gemm (M,N,K, bfloat16) and attention, attention-causal
                    (B,H,Hkv,Nq,Nkv,D, bfloat16) by their knobs (the gemm also from REPACK=1 and 2 where rows are not 16-byte
                    units). Each round lowers the new schedules, drops repeats and
                    kernels already seen, lets the M (16) the cost model ranks best be
                    compiled by J worker processes (a deadline each) and measured in a
                    worker process (cuda, cpu: median of N runs after an L2 flush,
                    stopped at 2x the best; a run that hangs or crashes costs that
                    candidate; emu: a deterministic cost, in this process), keeps the best N (4); it ends when a round
                    gains under 1%, after R rounds (10) or the budget. The winner is
                    checked against the unoptimised kernel on fresh inputs (unless
                    --no-validate). Prints the best schedule and the report that counts
                    every candidate (docs/autotune.md); --verbose: each candidate's
                    measurement on stderr as it happens; --in-process: no workers;
                    --start: also start from this schedule (repeatable)
  tune LIST.yaml --device cpu|emu|cuda [--db PATH] [--budget SECONDS] [--beam N]
        [--rounds R] [--measured M] [--jobs J] [--reps N] [--force] [--no-validate]
        [--in-process]
                    tune every kernel the list names ({kernel, shape, dtype} under
                    `kernels:`, as `search` takes them) into the tuning database: a
                    kernel stored there (and still applying) is not searched again
                    (unless --force); each winner is saved as soon as it is found
                    (atomically, under a lock). --budget is per kernel (60 s). Progress
                    per kernel on stderr (best so far, ETA); a table of each kernel's
                    time before and after, the speed-up and the tuning time
  tune --check --device D [--db PATH] [--reps N]
                    re-time every stored entry; flag those slower than stored beyond
                    their measured noise (3x the spread, at least 3%) and those made
                    under other driver or compiler versions; exit 1 on a regression
  tune --show [--db PATH | --device D]
                    list the database's entries: schedule, time, speed-up, versions
  run minilm "a sentence" ["another" ...] [--device D]
                    all-MiniLM-L6-v2 (weights fetched into the cache on first use by
                    tools/fetch_minilm.sh) through the tensor front end: each sentence's
                    embedding (first values), their cosine similarities, the kernels run
                    and the time. D: cuda where it opens (float16 weights), else cpu
  bench minilm [--device D] [--batch B] [--tokens T] [--reps N]
                    the model's forward on B random sentences of T tokens (8 x 128):
                    median time, sentences/s, kernels per forward with and without
                    fusion, then one forward with every kernel timed (time and kernels
                    per layer, the costliest kernels)
  run decode-demo [--device D] [--steps N]
                    decode N (256) steps of one attention layer (4 heads of 32) over a
                    growing KV cache: each step appends at position t and attends over
                    the first t + 1 rows (an axis of variable length), captured once by
                    the JIT and replayed with t rebound; every step checked against
                    float64 attention (exit 1 above 1e-4); a line per 64 steps
  run train-demo [--device D] [--steps N] [--no-jit] [--no-fuse]
                    train a 2-layer causal transformer (width 64, 4 heads) to memorise
                    65 random tokens over a vocabulary of 32 with AdamW (lr 3e-3), fused
                    optimiser and JIT capture on unless turned off: a progress line per 50
                    steps; exit 1 when 500 or more steps end above cross-entropy 0.05
  bench train-step [--device D] [--steps N]
                    the train demo's time per step (after 10) with the fused optimiser
                    and the JIT on and off (N steps, 100), then a captured chain of 150
                    kernels replayed: time per kernel (on cuda, against a bare driver
                    graph of the same kernel)
  compile-worker --device D
                    compile the kernel source on stdin into the compile cache (the
                    search's worker process); exit 1 with the compiler's error
  measure-worker <kernel> --device D [--shape S] [--dtype T] [--reps N]
                    time the search's candidates of that kernel in a process of its
                    own (a kernel that hangs or crashes it costs one candidate): a
                    line "ready" once the device is open, then for each line
                    "BEST_SECONDS SCHEDULE" on stdin an answer line "measured STATUS
                    COST NOISE ERROR"; "lower SCHEDULE" lowers one ahead ("round"
                    drops those not measured); exit 1 after a failed run
  --help, -h        this text

environment: KITTEN_CACHE_DIR (compiled kernels; off disables), KITTEN_TUNE_DB (the tuning
database file; default <cache dir>/tune/<model>-<arch>.yaml; off: none, only the shipped
library), KITTEN_CPU_COMPILER=subprocess
(compile cpu kernels with $KITTEN_CC, default cc: one program, a path or a name on PATH,
run without a shell), KITTEN_TRACE_REWRITE=1 (trace rewrites), KITTEN_DUMP=P[,P...]|all
(print the graph after the named lowering passes, to stderr), KITTEN_DUMP_JSON=DIR (write
each lowering pass's graph and the rules that fired, one JSON file per pass),
KITTEN_DEBUG=1 (the front end prints each kernel it runs with its shape and time; 2 also
the schedule of each realize), KITTEN_FUSION=0 (the front end runs every computed tensor
op as a kernel of its own), KITTEN_SCHEDULE_TRACE=1 (the fusion rules' findings in each
pass of the front end's scheduler), KITTEN_MINILM_DIR (a directory holding the model's files;
skips the fetch), KITTEN_MODELS (where fetched models are cached), KITTEN_JIT=0 (a Jit runs
its function on every call instead of replaying a capture), KITTEN_CUDA_FMAD=0 (NVRTC
compiles without contracting multiplies and adds into fused multiply-adds)

exit status: 0 success, 1 the work failed (e.g. a graph failed verification, a device is
unavailable here, the output could not be written), 2 bad usage (unknown command, kernel,
device or option, or a bad option value).
)";

// A whole decimal number from 0 to max; stoull would read "-1" as 2^64 - 1, and both it
// and stoll ignore what follows the digits.
std::optional<uint64_t> parse_count(const std::string& s, uint64_t max) {
  uint64_t v;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v > max) return std::nullopt;
  return v;
}

int cmd_uops(const std::vector<std::string>& args) {
  if (args.size() == 1 && args[0] == "--doc") {
    std::fputs(ops_doc().c_str(), stdout);
    return 0;
  }
  if (!args.empty()) return usage_error("uops: unknown option '" + args[0] + "'");
  tiles::tile_ops();
  for (int i = 0; i < num_ops(); ++i) {
    const OpSpec* s = find_op_spec(Op(i));
    std::printf("%-12s %s\n", s->name.c_str(), s->meaning.c_str());
  }
  return 0;
}

int cmd_graph(const std::vector<std::string>& args) {
  if (args.size() != 1) return usage_error("graph: expected one kernel name or --list");
  if (args[0] == "--list") {
    for (const std::string& n : builtin_kernel_names()) std::printf("%s\n", n.c_str());
    return 0;
  }
  UOp k;
  try {
    k = builtin_kernel(args[0]);
  } catch (const std::invalid_argument& e) {
    return usage_error(std::string("graph: ") + e.what());
  }
  verify(k);
  std::printf("kernel %s: %zu nodes, verified, key %s\n%s", args[0].c_str(), toposort(k).size(),
              k.key().hex().c_str(), print_graph(k).c_str());
  return 0;
}

int cmd_devices(const std::vector<std::string>& args) {
  if (!args.empty()) return usage_error("devices: unexpected argument '" + args[0] + "'");
  for (const std::string& name : device_names()) {
    try {
      std::unique_ptr<Device> d = open_device(name);
      const DeviceProps& p = d->props();
      const Target& t = p.target;
      std::printf(
          "%s: arch %s, %d cores, warp size %d, %d threads per block, shared memory %lld bytes "
          "per block (%lld opt-in)\n  features: %s\n  compiler: %s\n",
          p.name.c_str(), t.arch.c_str(), t.multiprocessors, t.warp_size, t.max_threads_per_block,
          (long long)t.shared_per_block, (long long)t.shared_per_block_optin,
          t.feature_names().c_str(), escape_controls(p.compiler, false).c_str());
    } catch (const BackendError& e) {
      std::printf("%s: %s\n", name.c_str(), escape_controls(e.what(), false).c_str());
    }
  }
  return 0;
}

// What `render` and `lower` take: a built-in kernel, --device D (default cpu) and, for
// lower, --print-after P[,P...]. Returns an exit status, or -1 when all is well.
struct KernelCommand {
  UOp kernel;
  std::string device = "cpu";
  Schedule schedule;
  std::vector<std::string> print_after;
  std::unique_ptr<Device> dev;
};
int parse_kernel_command(const std::string& cmd, const std::vector<std::string>& args,
                         KernelCommand& out) {
  std::string kernel;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--device" && i + 1 < args.size())
      out.device = args[++i];
    else if (a.rfind("--device=", 0) == 0)
      out.device = a.substr(9);
    else if (a == "--schedule" && i + 1 < args.size()) {
      try {
        out.schedule = Schedule::parse(args[++i]);
      } catch (const ScheduleError& e) {
        return usage_error(cmd + ": " + e.what());
      }
    } else if (cmd == "lower" && a == "--print-after" && i + 1 < args.size())
      out.print_after.push_back(args[++i]);
    else if (kernel.empty() && a.rfind("--", 0) != 0)
      kernel = a;
    else
      return usage_error(cmd + ": unexpected argument '" + a + "'");
  }
  if (kernel.empty()) return usage_error(cmd + ": expected a kernel name (kitten graph --list)");
  try {
    out.kernel = builtin_kernel(kernel);
  } catch (const std::invalid_argument& e) {
    return usage_error(cmd + ": " + e.what());
  }
  return open_named_device(cmd, out.device, out.dev);
}

int cmd_lower(const std::vector<std::string>& args) {
  if (args.size() == 1 && args[0] == "--passes") {
    for (const Pass* p : passes()) std::printf("%s: %s\n", p->name.c_str(), p->meaning.c_str());
    return 0;
  }
  KernelCommand c;
  if (int status = parse_kernel_command("lower", args, c); status >= 0) return status;
  LowerOptions opts;
  for (const std::string& list : c.print_after)
    for (size_t at = 0; at <= list.size();) {
      size_t comma = std::min(list.find(',', at), list.size());
      std::string name = list.substr(at, comma - at);
      bool known = name == "all";
      for (const Pass* p : passes()) known |= p->name == name;
      if (!known)
        return usage_error("lower: no pass is named '" + name + "' (kitten lower --passes)");
      opts.print_after.push_back(name);
      at = comma + 1;
    }
  opts.dump = [](const std::string& pass, const UOp& g) {
    std::printf("# after %s\n%s", pass.c_str(), print_graph(g).c_str());
  };
  std::vector<UOp> lowered;
  try {
    lowered = lower_kernels(c.kernel, c.dev->props().target, c.schedule, opts).kernels;
  } catch (const ScheduleError& e) {
    return usage_error(std::string("lower: ") + e.what());
  }
  for (const UOp& k : lowered)
    std::printf("# lowered for %s (%s)%s\n%s", c.device.c_str(), c.dev->props().target.arch.c_str(),
                lowered.size() > 1 ? (": " + k.name_arg()).c_str() : "", print_graph(k).c_str());
  return 0;
}

int cmd_render(const std::vector<std::string>& args) {
  KernelCommand c;
  if (int status = parse_kernel_command("render", args, c); status >= 0) return status;
  const std::string& device = c.device;
  std::unique_ptr<Device>& d = c.dev;
  std::vector<UOp> lowered;
  try {
    lowered = lower_kernels(c.kernel, d->props().target, c.schedule).kernels;
  } catch (const ScheduleError& e) {
    return usage_error(std::string("render: ") + e.what());
  }
  for (const UOp& k : lowered) {
    LinearProgram p = linearize(k);
    RenderedKernel r = d->render(p);
    std::printf("// linear program\n%s\n// %s source\n%s", print_program(p).c_str(), device.c_str(),
                r.source.c_str());
  }
  return 0;
}

int cmd_simplify(const std::vector<std::string>& args) {
  std::vector<ExprVar> vars;
  std::string expr;
  bool have_expr = false;
  DType type = dtypes::int64;
  int64_t fuzz = -1;
  uint64_t seed = 1;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool has_value = i + 1 < args.size();
    try {
      if (a == "--var" && has_value) {
        vars.push_back(parse_var_bounds(args[++i]));
      } else if (a.rfind("--var=", 0) == 0) {
        vars.push_back(parse_var_bounds(a.substr(6)));
      } else if (a == "--fuzz" && has_value) {
        std::optional<uint64_t> n = parse_count(args[++i], INT64_MAX);
        if (!n)
          return usage_error("simplify: --fuzz takes a number of expressions (0 or more), got '" +
                             args[i] + "'");
        fuzz = int64_t(*n);
      } else if (a == "--seed" && has_value) {
        std::optional<uint64_t> n = parse_count(args[++i], UINT64_MAX);
        if (!n)
          return usage_error("simplify: --seed takes a number from 0 to " +
                             std::to_string(UINT64_MAX) + ", got '" + args[i] + "'");
        seed = *n;
      } else if (a == "--dtype" && has_value) {
        std::string t = args[++i];
        if (t != "int32" && t != "int64")
          return usage_error("simplify: --dtype takes int32 or int64, got '" + t + "'");
        type = t == "int32" ? dtypes::int32 : dtypes::int64;
      } else if ((a.rfind("--", 0) == 0 && a != "-") || have_expr) {
        return usage_error("simplify: unexpected argument '" + a + "'");
      } else if (a == "-") {  // the expression from stdin (too long for one argument)
        std::ostringstream text;
        text << std::cin.rdbuf();
        expr = text.str();
        have_expr = true;
      } else {
        expr = a;
        have_expr = true;
      }
    } catch (const ExprError& e) {
      return usage_error(std::string("simplify: ") + e.what());
    }
  }
  if (fuzz >= 0) {
    FuzzResult r = fuzz_simplify(seed, fuzz);
    std::printf(
        "%lld expressions checked, %lld rejected by the parser, %lld undefined everywhere tried\n",
        (long long)r.checked, (long long)r.rejected, (long long)r.undefined);
    if (!r.failure.empty()) {
      std::fprintf(stderr, "FAILED: %s\n", r.failure.c_str());
      return 1;
    }
    return 0;
  }
  if (!have_expr) return usage_error("simplify: expected an expression");
  for (size_t i = 0; i < vars.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (vars[i].name == vars[j].name)
        return usage_error("simplify: --var " + vars[i].name + " is given twice");
  UOp e;
  try {
    e = parse_int_expr(expr, vars, type);
  } catch (const ExprError& err) {
    return usage_error(std::string("simplify: ") + err.what());
  }
  UOp s = simplify(e);
  auto [lo, hi] = bounds(s);
  int64_t g = known_divisor(s);
  std::printf("%s\nbounds: [%lld, %lld]\ndivisible by: %s\n", render_int_expr(s).c_str(),
              (long long)lo, (long long)hi,
              g == 0 ? "any integer (it is 0)" : std::to_string(g).c_str());
  return 0;
}

int run_command(const std::string& cmd, const std::vector<std::string>& args) {
  try {
    if (cmd == "uops") return cmd_uops(args);
    if (cmd == "graph") return cmd_graph(args);
    if (cmd == "simplify") return cmd_simplify(args);
    if (cmd == "devices") return cmd_devices(args);
    if (cmd == "render") return cmd_render(args);
    if (cmd == "lower") return cmd_lower(args);
    if (cmd == "bench") return cmd_bench(args);
    if (cmd == "search") return cmd_search(args);
    if (cmd == "compile-worker") return cmd_compile_worker(args);
    if (cmd == "measure-worker") return cmd_measure_worker(args);
    if (cmd == "tune") return cmd_tune(args);
    if (cmd == "run") return cmd_run(args);
    return usage_error("unknown command '" + cmd + "'");
  } catch (const std::exception& e) {
    return work_failed(cmd, e.what());
  }
}

// Output that did not reach its file (a full disk, say) fails the command: a
// script must not take a truncated listing for a complete one.
int check_output(int status) {
  errno = 0;
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return status;
  std::fprintf(stderr, "kitten: cannot write the output%s%s\n", errno ? ": " : "",
               errno ? std::strerror(errno) : "");
  return status == 0 ? 1 : status;
}

}  // namespace
}  // namespace kitten

int main(int argc, char** argv) {
  using namespace kitten;
  register_tensor_core_route();  // TC=1 schedules route matrix products onto the tile GEMM
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kHelp, args.empty() ? stderr : stdout);
    return check_output(args.empty() ? 2 : 0);
  }
  std::string cmd = args[0];
  args.erase(args.begin());
  return check_output(run_command(cmd, args));
}
