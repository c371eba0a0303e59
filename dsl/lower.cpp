#include "dsl/lower.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "dsl/expand.h"
#include "dsl/linearize.h"
#include "dsl/opt.h"
#include "dsl/pattern.h"
#include "dsl/printer.h"
#include "dsl/rewrite.h"
#include "dsl/symbolic.h"
#include "dsl/verify.h"

namespace kitten {

namespace {

// ---- the core passes ------------------------------------------------------------------

// The symbolic rules over the whole kernel: they act on integer and bool nodes (a float
// node is only ever reordered where its op commutes), so index arithmetic folds and a
// gate proven true by bounds goes, with its load's alternative value.
UOp simplify_indices(const UOp& sink, const LowerContext&) { return simplify(sink); }

// ---- legalize ------------------------------------------------------------------------

// The lanes of `v` from `first`, `count` of them: one EXTRACT each, or a VECTORIZE of them.
UOp lanes_of(const UOp& v, int64_t first, int64_t count) {
  std::vector<UOp> lanes;
  for (int64_t l = first; l < first + count; ++l)
    lanes.push_back(UOp::make(Op::EXTRACT, v.dtype().element(), {v}, std::vector<int64_t>{l}));
  return count == 1 ? lanes[0] : UOp::make(Op::VECTORIZE, lanes);
}

// A vector access wider than the target moves (max_vector_lanes) becomes accesses of the
// widest width it has that divides the vector (scalars at worst), at consecutive indices.
std::optional<UOp> split_vector_access(const UOp& u, const Target& t) {
  const UOp& ix = u.src(0);
  DType vec = ix.dtype().pointee();
  if (!vec.is_vector()) return std::nullopt;
  AddrSpace space = ix.dtype().space();
  int64_t n = vec.count(), w = std::min<int64_t>(n, t.max_vector_lanes(space, vec.element()));
  if (space == AddrSpace::Reg || w == n) return std::nullopt;
  while (n % w) --w;
  DType part = w == 1 ? vec.element() : vec.element().vec(int(w));
  std::vector<UOp> pieces;
  for (int64_t c = 0; c < n; c += w) {
    std::vector<UOp> isrc{ix.src(0), c ? ix.src(1) + const_int(ix.src(1).dtype(), c) : ix.src(1)};
    if (ix.src().size() == 3) isrc.push_back(ix.src(2));
    UOp pix = UOp::make(Op::INDEX, part.ptr(space), isrc);
    if (u.op() == Op::LOAD)
      pieces.push_back(u.src().size() == 2 ? load(pix, lanes_of(u.src(1), c, w)) : load(pix));
    else
      pieces.push_back(store(pix, lanes_of(u.src(1), c, w)));
  }
  if (u.op() == Op::STORE) return UOp::make(Op::GROUP, dtypes::void_, pieces);
  std::vector<UOp> lanes;
  for (const UOp& p : pieces)
    for (int64_t l = 0; l < w; ++l)
      lanes.push_back(w == 1 ? p
                             : UOp::make(Op::EXTRACT, vec.element(), {p}, std::vector<int64_t>{l}));
  return UOp::make(Op::VECTORIZE, lanes);
}

// What the renderers print one to one: a float a * b + c becomes MULACC (one fused
// multiply-add where the target has it, as NVRTC contracts anyway; C compilers contract
// `a * b + c` written as one expression), so every backend computes the same thing; and
// vector accesses take the widths the target has.
UOp legalize(const UOp& sink, const LowerContext& ctx) {
  static const RuleSet rules(
      "legalize", {{"a*b+c -> mulacc",
                    pat(Op::ADD, {pat(Op::MUL, {any("a"), any("b")}), any("c")})
                        .commutative()
                        .where([](const UOp& u) { return u.dtype().is_float(); }),
                    [](const Match& m) -> std::optional<UOp> {
                      return UOp::make(Op::MULACC, {m["a"], m["b"], m["c"]});
                    }},
                   {"split wide vector access", Pat::op({Op::LOAD, Op::STORE}), [](const Match& m) {
                      return split_vector_access(m.root(), m.ctx<const Target>());
                    }}});
  return graph_rewrite(sink, rules, const_cast<Target*>(&ctx.target));
}

// ---- check_access --------------------------------------------------------------------

// Whether every value in `u`'s bounds is taken for some values of its variables: sums of
// constant multiples of distinct ranges, SPECIALs and variables (each bounded by an
// interval, independent of the others).
bool bounds_attained(const UOp& u, std::vector<const void*>& vars) {
  switch (u.op()) {
    case Op::CONST:
      return true;
    case Op::RANGE:
    case Op::SPECIAL:
    case Op::DEFINE_VAR:
      if (std::find(vars.begin(), vars.end(), u.id()) != vars.end()) return false;
      vars.push_back(u.id());
      return true;
    case Op::ADD:
      return bounds_attained(u.src(0), vars) && bounds_attained(u.src(1), vars);
    case Op::MUL:
      return u.src(1).op() == Op::CONST && bounds_attained(u.src(0), vars);
    default:
      return false;
  }
}

// An ungated access to a buffer of known size (registers, shared memory) whose index is
// proven to leave it for some iteration is an error here, naming the buffer and the range,
// rather than a wrong answer at run time.
UOp check_access(const UOp& sink, const LowerContext& ctx) {
  for (const UOp& u : toposort(sink)) {
    if (u.op() != Op::INDEX) continue;
    bool gated = u.src().size() == 3 && !(u.src(2).op() == Op::CONST && u.src(2).const_int() != 0);
    UOp buf = u.src(0);
    while (buf.op() == Op::AFTER) buf = buf.src(0);
    // On a GPU a register array indexed at run time lives in local memory: every index
    // into one must be a constant by now (the expander and the tile lowering make them so).
    if (buf.op() == Op::DEFINE_REG && ctx.target.has(kFeatureBlocks) && u.src(1).op() != Op::CONST)
      throw IrError("lower: kernel '" + sink.name_arg() + "' indexes registers " +
                    std::to_string(buf.slot()) +
                    " at run time, which would put them in local "
                    "memory; register arrays take constant indices:\n" +
                    print_graph(sink, u));
    int64_t size = buf.dtype().size();
    if (gated || size < 0 || !u.src(1).dtype().is_int()) continue;
    std::vector<const void*> vars;
    if (!bounds_attained(u.src(1), vars)) continue;
    auto [lo, hi] = bounds(u.src(1));
    int64_t lanes = u.dtype().pointee().count();
    if (lo >= 0 && hi + lanes <= size) continue;
    throw IrError("lower: kernel '" + sink.name_arg() + "' accesses " + op_name(buf.op()) + " " +
                  std::to_string(buf.slot()) + " of " + std::to_string(size) +
                  " elements at indices " + std::to_string(lo) + " to " +
                  std::to_string(hi + lanes - 1) + ":\n" + print_graph(sink, u));
  }
  return sink;
}

// ---- grid mapping ------------------------------------------------------------------------

// Whether an extent is computed from constants and variables alone (so a launch can
// evaluate it), not from other ranges or memory.
bool of_variables(const UOp& extent) {
  for (const UOp& u : toposort(extent))
    if (u.op() != Op::CONST && u.op() != Op::DEFINE_VAR && u.op() != Op::CAST && !is_alu(u.op()))
      return false;
  return true;
}

// The outermost chain of global and local ranges that every effect sits inside, each the
// only loop at its depth: what a grid can run, one thread per iteration. Local ranges have
// constant extents; a global range's may be an expression of variables. Outermost first;
// empty when the kernel has SPECIALs or no chain.
std::vector<UOp> grid_chain(const UOp& sink) {
  LinearProgram p = linearize(sink);
  std::vector<UOp> chain;
  std::vector<int> loops_at;
  int depth = 0, shallowest_effect = 1 << 30;
  for (const UOp& u : p.ops) {
    Op op = u.op();
    if (op == Op::RANGE || op == Op::IF) {
      if (op == Op::RANGE) {
        if (int(loops_at.size()) <= depth) loops_at.resize(size_t(depth) + 1, 0);
        ++loops_at[size_t(depth)];
      }
      bool parallel = op == Op::RANGE &&
                      (u.axis().kind == AxisKind::Global || u.axis().kind == AxisKind::Local);
      if (parallel && depth == int(chain.size()) &&
          (u.src(0).op() == Op::CONST ||
           (u.axis().kind == AxisKind::Global && of_variables(u.src(0)))))
        chain.push_back(u);
      ++depth;
    }
    if (op == Op::END) depth -= int(u.src().size()) - 1;
    if (op == Op::ENDIF) --depth;
    if (acts(op)) shallowest_effect = std::min(shallowest_effect, depth);
  }
  size_t keep = 0;
  while (keep < chain.size() && loops_at[keep] == 1 && int(keep) < shallowest_effect) ++keep;
  chain.resize(keep);
  return chain;
}

// The chain's ranges replaced by their values (the ENDs that closed them drop them), and
// the stores and atomics to memory gated by `in_range` where it is given.
UOp replace_chain(const UOp& sink, const std::unordered_map<const void*, UOp>& value,
                  const UOp& in_range) {
  std::unordered_map<const void*, UOp> image;  // old node -> new node
  std::vector<UOp> order = toposort(sink);
  for (const UOp& u : order) {
    std::vector<UOp> src;
    for (const UOp& s : u.src()) src.push_back(image.at(s.id()));
    UOp out;
    if (auto it = value.find(u.id()); it != value.end()) {
      out = it->second;
    } else if (u.op() == Op::END) {
      std::vector<UOp> kept = {src[0]};
      for (size_t k = 1; k < u.src().size(); ++k)
        if (!value.count(u.src(k).id())) kept.push_back(src[k]);
      out = kept.size() == 1 ? src[0] : UOp::make(Op::END, u.dtype(), kept, u.arg());
    } else if ((u.op() == Op::STORE || u.op() == Op::ATOMIC) && in_range &&
               u.src(0).dtype().space() != AddrSpace::Reg) {  // registers are the thread's own
      out = with_gate(UOp::make(u.op(), u.dtype(), src, u.arg()), in_range);
    } else {
      bool same = true;
      for (size_t k = 0; k < src.size(); ++k) same = same && src[k] == u.src(k);
      out = same ? u : UOp::make(u.op(), u.dtype(), src, u.arg());
    }
    image[u.id()] = out;
  }
  return image.at(sink.id());
}

// On targets whose threads form blocks, the chain becomes the launch grid. Where the
// schedule made local ranges, they become the block's threads (the innermost threadIdx.x)
// and the global ranges the blocks (the innermost blockIdx.x); at most three of each, and
// a kernel with local ranges left out of the chain is refused. Without local ranges, up
// to three global ranges: the innermost becomes blockIdx.x * B + threadIdx.x with blocks of
// B = min(256, extent) threads, the others blockIdx.y and blockIdx.z; where B does not
// divide the extent, the threads past the end compute on the last index (min(index,
// extent - 1): they read only what exists and divide by nothing new) and every store and
// atomic is gated by index < extent, so they change nothing. A global range whose extent
// is an expression of variables (an axis of variable length) takes a grid of the blocks
// its largest value needs at most, computed at launch from the variables (at least one
// block: a thread past the end reads index 0 and stores nothing); with local ranges or
// threads, the chain stops before it. The ENDs that closed the chain go. The emulator and
// CUDA then run the same mapping.
UOp map_grid(const UOp& sink, const LowerContext& ctx) {
  std::vector<UOp> chain = grid_chain(sink);
  bool has_local = false, has_threads = false;
  for (const UOp& u : toposort(sink)) {
    has_local |= u.op() == Op::RANGE && u.axis().kind == AxisKind::Local;
    if (u.op() == Op::SPECIAL) {
      if (std::get<SpecialArg>(u.arg()).kind == SpecialKind::BlockIdx) return sink;  // its own
      has_threads = true;  // a GROUP's threads: the global ranges become the blocks
    }
  }
  if (has_local || has_threads)  // the chain stops before a range of variable extent
    chain.erase(std::find_if(chain.begin(), chain.end(),
                             [](const UOp& r) { return r.src(0).op() != Op::CONST; }),
                chain.end());
  std::vector<UOp> globals, locals;
  for (const UOp& r : chain) (r.axis().kind == AxisKind::Local ? locals : globals).push_back(r);
  std::unordered_map<const void*, UOp> value;
  UOp in_range;
  auto as_index = [](const UOp& sp, DType d) { return d == dtypes::int32 ? sp : cast(sp, d); };
  // A block index over range r's extent, from a variable extent: at least one block, the
  // index clamped into [0, extent) and the stores gated by index < extent.
  auto blocks_over = [&](const UOp& r, int dim) {
    UOp end = r.src(0);
    if (end.op() == Op::CONST)
      return as_index(special(SpecialKind::BlockIdx, dim, end.const_int()), r.dtype());
    DType d = end.dtype();
    UOp one = const_int(d, 1),
        b = UOp::make(Op::SPECIAL, dtypes::int32, {simplify(alu(Op::MAX, end, one))},
                      SpecialArg{SpecialKind::BlockIdx, dim});
    UOp x = as_index(b, r.dtype());
    in_range = in_range ? alu(Op::AND, in_range, x < end) : x < end;
    return simplify(alu(Op::MAX, alu(Op::MIN, x, end - one), const_int(d, 0)));
  };
  if (!ctx.target.has(kFeatureBlocks)) {
    // A cpu: the thread pool runs the outermost global range as blocks of one thread.
    if (has_local || has_threads || chain.empty() || chain[0].axis().kind != AxisKind::Global)
      return sink;
    value[chain[0].id()] = blocks_over(chain[0], 0);
    return replace_chain(sink, value, in_range);
  }
  if (has_local && (locals.empty() || globals.size() > 3 || locals.size() > 3))
    throw IrError("map_grid: kernel '" + sink.name_arg() +
                  "' has local ranges that are not an outer chain of at most three global and "
                  "three local ranges around every effect");
  if (has_threads && (has_local || globals.size() > 3))
    throw IrError("map_grid: kernel '" + sink.name_arg() +
                  "' has threads and ranges that are not an outer chain of at most three "
                  "global ranges around every effect");
  // Each chain range's value (a SPECIAL, or an expression of them), and the gate of the
  // threads past the end where the block size does not divide the extent.
  if (has_local || has_threads) {
    auto assign = [&](const std::vector<UOp>& rs, SpecialKind kind) {
      for (size_t k = 0; k < rs.size(); ++k)  // the innermost on x
        value[rs[k].id()] = as_index(
            special(kind, int(rs.size() - 1 - k), rs[k].src(0).const_int()), rs[k].dtype());
    };
    assign(globals, SpecialKind::BlockIdx);
    assign(locals, SpecialKind::ThreadIdx);
  } else {
    if (globals.size() > 3) globals.resize(3);
    if (globals.empty()) return sink;
    const UOp& inner = globals.back();
    DType d = inner.dtype();
    UOp end = inner.src(0);
    if (end.op() == Op::CONST) {
      int64_t n = end.const_int(), block = std::min<int64_t>(256, n);
      int64_t blocks = (n + block - 1) / block;
      UOp x = as_index(special(SpecialKind::BlockIdx, 0, blocks), d) * block +
              as_index(special(SpecialKind::ThreadIdx, 0, block), d);
      in_range = n % block == 0 ? UOp() : x < UOp(const_int(d, n));
      value[inner.id()] = in_range ? UOp::make(Op::MIN, {x, const_int(d, n - 1)}) : x;
    } else {  // blocks of up to 256 threads over the largest extent, as many as the launch needs
      int64_t block = std::clamp<int64_t>(vmax(end), 1, 256);
      UOp one = const_int(end.dtype(), 1);
      UOp blocks = simplify(alu(Op::MAX, (end + (block - 1)) / block, one));
      UOp x = as_index(UOp::make(Op::SPECIAL, dtypes::int32, {blocks},
                                 SpecialArg{SpecialKind::BlockIdx, 0}),
                       d) *
                  block +
              as_index(special(SpecialKind::ThreadIdx, 0, block), d);
      in_range = x < end;
      value[inner.id()] =
          simplify(alu(Op::MAX, alu(Op::MIN, x, end - one), const_int(end.dtype(), 0)));
    }
    for (size_t lv = 0; lv + 1 < globals.size(); ++lv)  // y for the next-to-innermost, z above
      value[globals[lv].id()] = blocks_over(globals[lv], int(globals.size() - 1 - lv));
  }
  return replace_chain(sink, value, in_range);
}

// ---- KITTEN_DUMP_JSON ---------------------------------------------------------------------

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (uint8_t(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

struct Firing {
  std::string rule;
  UOp from, to;
};

// One pass's graph and the rules that fired in it, written whole or not at all (a
// temporary file renamed into place).
void write_pass_json(const std::string& dir, const std::string& kernel, int index,
                     const std::string& pass, const UOp& g, const std::vector<Firing>& fired) {
  std::string out = "{\"kernel\": " + json_string(kernel) + ", \"pass\": " + json_string(pass) +
                    ", \"index\": " + std::to_string(index) + ",\n \"nodes\": [";
  bool first = true;
  for (const UOp& u : toposort(g)) {
    out += first ? "\n  " : ",\n  ";
    first = false;
    out += "{\"id\": \"" + u.key().hex() + "\", \"op\": " + json_string(op_name(u.op())) +
           ", \"dtype\": " + json_string(u.dtype().name()) +
           ", \"arg\": " + json_string(arg_to_string(u.arg(), u.dtype())) + ", \"src\": [";
    for (size_t k = 0; k < u.src().size(); ++k)
      out += (k ? ", \"" : "\"") + u.src(k).key().hex() + "\"";
    out += "]}";
  }
  out += "],\n \"rules\": [";
  for (size_t i = 0; i < fired.size(); ++i)
    out += std::string(i ? ",\n  " : "\n  ") + "{\"rule\": " + json_string(fired[i].rule) +
           ", \"from\": \"" + fired[i].from.key().hex() + "\", \"to\": \"" +
           fired[i].to.key().hex() + "\"}";
  out += "]}\n";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  char num[16];
  std::snprintf(num, sizeof num, "%02d", index);
  std::filesystem::path path =
      std::filesystem::path(dir) / (kernel + "." + num + "." + pass + ".json");
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << out;
    f.flush();
    if (!f) throw std::runtime_error("KITTEN_DUMP_JSON: cannot write " + tmp.string());
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    throw std::runtime_error("KITTEN_DUMP_JSON: cannot write " + path.string() + ": " +
                             ec.message());
}

struct Pipeline {
  std::mutex mu;
  std::vector<std::unique_ptr<Pass>> passes;
  Pipeline() {
    auto add = [&](Pass p) { passes.push_back(std::make_unique<Pass>(std::move(p))); };
    add({"schedule",
         "Applies the schedule's actions (UPCAST, UNROLL, LOCAL, GROUP) by splitting the "
         "axes they name, a GROUP's partials combined through shared memory; a kernel "
         "given no actions gets the deterministic heuristic schedule.",
         [](const UOp& sink, const LowerContext& ctx) {
           return apply_schedule(sink, ctx.target, ctx.schedule);
         }});
    add({"expand",
         "UPCAST and UNROLL ranges become copies with constant indices (upcast copies side by "
         "side, with their own registers and vector accesses where contiguity and alignment are "
         "proven; unrolled copies one after another).",
         [](const UOp& sink, const LowerContext& ctx) { return expand(sink, ctx.target); }});
    add({"simplify_indices",
         "Simplifies index and gate arithmetic with the symbolic rules; a gate proven true "
         "goes, with its load's alternative value.",
         simplify_indices});
    add({"map_grid",
         "The outermost chain of global ranges that holds every effect becomes the launch "
         "grid: on a cpu the outermost is the thread pool's blocks; with LOCAL or GROUP "
         "threads the globals are the blocks; else blocks of up to 256 threads on the "
         "innermost, the threads past the end computing on the last index with their "
         "stores gated off.",
         map_grid});
    add({"simplify_grid", "The symbolic rules again, over the grid's index arithmetic.",
         simplify_indices});
    add({"check_access",
         "An ungated access to registers or shared memory whose index is proven to leave "
         "the buffer is an error naming the buffer and the indices; on a GPU, so is a "
         "register array indexed at run time (it would live in local memory).",
         check_access});
    add({"legalize",
         "Rewrites what the renderers print one to one: a float a * b + c becomes "
         "MULACC, and a vector access wider than the target moves becomes accesses of "
         "the widths it has.",
         legalize});
  }
};

Pipeline& pipeline() {
  static Pipeline* p = new Pipeline();  // immortal, as the op registry
  return *p;
}

std::vector<std::string> split_names(const char* list) {
  std::vector<std::string> out;
  std::string cur;
  for (const char* c = list; c && *c; ++c) {
    if (*c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += *c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

void register_pass(Pass pass, PassPosition where, std::string_view anchor) {
  Pipeline& p = pipeline();
  std::lock_guard lock(p.mu);
  if (pass.name.empty() || !pass.run)
    throw std::invalid_argument("register_pass: a pass needs a name and a function");
  for (auto& q : p.passes)
    if (q->name == pass.name)
      throw std::invalid_argument("register_pass: '" + pass.name + "' is taken");
  auto at = p.passes.end();
  if (!anchor.empty()) {
    at = std::find_if(p.passes.begin(), p.passes.end(),
                      [&](const auto& q) { return q->name == anchor; });
    if (at == p.passes.end())
      throw std::invalid_argument("register_pass: no pass is named '" + std::string(anchor) + "'");
    if (where == PassPosition::After) ++at;
  } else if (where == PassPosition::Before) {
    at = p.passes.begin();
  }
  p.passes.insert(at, std::make_unique<Pass>(std::move(pass)));
}

std::vector<const Pass*> passes() {
  Pipeline& p = pipeline();
  std::lock_guard lock(p.mu);
  std::vector<const Pass*> out;
  for (auto& q : p.passes) out.push_back(q.get());
  return out;
}

LowerOptions default_lower_options() {
  LowerOptions o;
  o.print_after = split_names(std::getenv("KITTEN_DUMP"));
  if (const char* d = std::getenv("KITTEN_DUMP_JSON")) o.dump_json = d;
  return o;
}

namespace {
struct Routes {
  std::mutex mu;
  std::vector<std::pair<std::string, KernelRoute>> routes;
};
Routes& routes() {
  static Routes r;
  return r;
}
}  // namespace

void register_kernel_route(std::string name, KernelRoute route) {
  Routes& r = routes();
  std::lock_guard lock(r.mu);
  for (const auto& [n, _] : r.routes)
    if (n == name) throw std::invalid_argument("register_kernel_route: '" + name + "' is taken");
  r.routes.emplace_back(std::move(name), std::move(route));
}

LoweredKernels lower_kernels(const UOp& sink, const Target& target, const Schedule& schedule,
                             const LowerOptions& opts) {
  if (!sink || sink.op() != Op::SINK) throw IrError("lower: the root must be a SINK");
  std::vector<KernelRoute> rs;
  {
    Routes& r = routes();
    std::lock_guard lock(r.mu);
    for (const auto& [n, route] : r.routes) rs.push_back(route);
  }
  for (const KernelRoute& route : rs)
    if (std::optional<LoweredKernels> out = route(sink, target, schedule)) return *out;
  KernelParts parts = split_kernels(sink, target, schedule);
  LoweredKernels out;
  for (const auto& [part, s] : parts.kernels) out.kernels.push_back(lower(part, target, s, opts));
  out.temps = parts.temps;
  return out;
}

UOp lower(const UOp& sink, const Target& target, const Schedule& schedule,
          const LowerOptions& opts) {
  if (!sink || sink.op() != Op::SINK) throw IrError("lower: the root must be a SINK");
  for (const ScheduleEntry& e : schedule.entries())
    if ((e.axis && (e.name == "CUT" || e.name == "SPLIT")) || e.part)
      throw ScheduleError(
          "schedule: " + Schedule({e}).to_string() +
          (!e.part || (e.axis && (e.name == "CUT" || e.name == "SPLIT"))
               ? " splits kernel '" + sink.name_arg() + "' into several kernels; lower them"
               : " names a part of kernel '" + sink.name_arg() +
                     "', which only a CUT or SPLIT makes; lower it") +
          " with lower_kernels");
  schedule.check_axes(sink);
  LowerContext ctx{target, schedule};
  auto wanted = [&](const std::string& name) {
    for (const std::string& p : opts.print_after)
      if (p == name || p == "all") return true;
    return false;
  };
  UOp g = sink;
  std::string kernel = sink.name_arg().empty() ? "kernel" : sink.name_arg();
  int index = 0;
  if (!opts.dump_json.empty()) write_pass_json(opts.dump_json, kernel, index, "input", g, {});
  for (const Pass* pass : passes()) {
    if (opts.dump_json.empty()) {
      g = pass->run(g, ctx);
    } else {
      std::vector<Firing> fired;
      RewriteObserver record = [&](const std::string& rule, const UOp& from, const UOp& to) {
        fired.push_back({rule, from, to});
      };
      RewriteObserver* before = set_rewrite_observer(&record);
      try {
        g = pass->run(g, ctx);
      } catch (...) {
        set_rewrite_observer(before);
        throw;
      }
      set_rewrite_observer(before);
      write_pass_json(opts.dump_json, kernel, ++index, pass->name, g, fired);
    }
    try {
      verify(g);
    } catch (const IrError& e) {
      throw IrError("lower: pass '" + pass->name + "' produced an invalid graph: " + e.what());
    }
    if (!wanted(pass->name)) continue;
    if (opts.dump)
      opts.dump(pass->name, g);
    else
      std::fprintf(stderr, "# after %s\n%s", pass->name.c_str(), print_graph(g).c_str());
  }
  return g;
}

}  // namespace kitten
