#include "backends/hcq.h"

#include <algorithm>
#include <regex>
#include <sstream>

#include "dsl/eval.h"
#include "dsl/lower.h"
#include "dsl/printer.h"

namespace kitten {

std::string Compiler::compile(const std::string& source) {
  std::string key = CompileCache::key(source, target(), version());
  if (auto hit = cache_.get(key)) return *hit;
  std::string binary = compile_uncached(source);
  cache_.put(key, binary);
  return binary;
}

LaunchDims resolve_grid(LaunchDims fixed, const std::array<UOp, 3>& extent,
                        const std::vector<std::string>& vars, int num_params,
                        std::span<const KernelArg> args) {
  if (!extent[0] && !extent[1] && !extent[2]) return fixed;
  std::map<std::string, int64_t> values;
  for (size_t i = 0; i < vars.size(); ++i) {
    size_t at = size_t(num_params) + i;
    if (at < args.size() && std::holds_alternative<int64_t>(args[at]))
      values[vars[i]] = std::get<int64_t>(args[at]);
  }
  int64_t* dims[3] = {&fixed.x, &fixed.y, &fixed.z};
  for (int d = 0; d < 3; ++d) {
    if (!extent[size_t(d)]) continue;
    std::string axis = std::string("the grid's extent along ") + "xyz"[d];
    for (const UOp& u : toposort(extent[size_t(d)]))
      if (u.op() == Op::DEFINE_VAR && !values.count(std::get<VarArg>(u.arg()).name))
        throw BackendError(axis + " reads the variable " + std::get<VarArg>(u.arg()).name +
                           ", which the launch does not pass as an integer");
    std::optional<int64_t> v = eval_int(extent[size_t(d)], values);
    if (!v) throw BackendError(axis + " is undefined for these arguments (overflow or / 0)");
    if (*v < 1)
      throw BackendError(axis + " is " + std::to_string(*v) +
                         " for these arguments (at least 1 block)");
    *dims[d] = *v;
  }
  return fixed;
}

bool place_special(const UOp& special, LaunchDims& grid, LaunchDims& block,
                   std::array<UOp, 3>& grid_extent) {
  SpecialArg s = std::get<SpecialArg>(special.arg());
  bool is_block = s.kind == SpecialKind::BlockIdx;
  LaunchDims& d = is_block ? grid : block;
  int64_t& dim = s.dim == 0 ? d.x : s.dim == 1 ? d.y : d.z;
  if (special.src(0).op() == Op::CONST) {
    dim = special.src(0).const_int();
  } else {
    if (!is_block) return false;
    dim = 0;  // resolve_grid evaluates it from a launch's variables
    grid_extent[size_t(s.dim)] = special.src(0);
  }
  return true;
}

std::vector<KernelArg> bind_args(const KernelInfo& k, std::vector<KernelArg> params,
                                 const std::map<std::string, int64_t>& vars) {
  for (const std::string& name : k.vars) {
    auto it = vars.find(name);
    if (it == vars.end())
      throw BackendError("kernel '" + k.name + "' reads the variable " + name +
                         ", which the launch does not give");
    params.push_back(it->second);
  }
  return params;
}

namespace {
void build(Device& d, const UOp& lowered, KernelLaunch& k) {
  k.linear = linearize(lowered);
  k.rendered = d.render(k.linear);
  k.program = d.load(d.compiler().compile(k.rendered.source), k.rendered.info);
}
}  // namespace

CompiledKernel compile_kernel(Device& d, const UOp& sink, const Schedule& schedule) {
  LoweredKernels parts = lower_kernels(sink, d.props().target, schedule);
  CompiledKernel k;
  build(d, parts.kernels[0], k);
  k.then.resize(parts.kernels.size() - 1);
  for (size_t i = 1; i < parts.kernels.size(); ++i) build(d, parts.kernels[i], k.then[i - 1]);
  k.temps_from = &d.allocator();
  if (!parts.temps.empty()) k.temps_at = size_t(parts.temps[0].slot);
  for (const TempBuffer& t : parts.temps)
    k.temps.push_back(d.allocator().alloc(size_t(t.count * t.dtype.itemsize())));
  return k;
}

CompiledKernel::CompiledKernel(CompiledKernel&& o) noexcept { *this = std::move(o); }

CompiledKernel& CompiledKernel::operator=(CompiledKernel&& o) noexcept {
  if (this == &o) return *this;
  for (Buffer b : temps) temps_from->free(b);
  static_cast<KernelLaunch&>(*this) = std::move(static_cast<KernelLaunch&>(o));
  then = std::move(o.then);
  temps = std::move(o.temps);
  temps_from = o.temps_from;
  temps_at = o.temps_at;
  o.temps.clear();
  return *this;
}

CompiledKernel::~CompiledKernel() {
  for (Buffer b : temps) temps_from->free(b);
}

namespace {
// The caller's buffers, the temporaries (the parameter slots after them), then variables.
std::vector<KernelArg> with_temps(std::span<const KernelArg> args, const std::vector<Buffer>& t,
                                  size_t at) {
  std::vector<KernelArg> all(args.begin(), args.end());
  all.insert(all.begin() + std::ptrdiff_t(std::min(at, all.size())), t.begin(), t.end());
  return all;
}
}  // namespace

void KernelLaunch::enqueue(Queue& q, std::span<const KernelArg> args) const {
  q.exec(*program, launch_grid(rendered.info, args), rendered.info.local, args);
}

void KernelLaunch::record(Graph& g, std::span<const KernelArg> args) const {
  g.record(*program, launch_grid(rendered.info, args), rendered.info.local,
           std::vector<KernelArg>(args.begin(), args.end()));
}

void CompiledKernel::run(std::span<const KernelArg> args) {
  if (temps.empty() && then.empty()) {
    program->launch(launch_grid(rendered.info, args), rendered.info.local, args);
    return;
  }
  std::vector<KernelArg> all = with_temps(args, temps, temps_at);
  program->launch(launch_grid(rendered.info, all), rendered.info.local, all);
  for (const KernelLaunch& k : then)
    k.program->launch(launch_grid(k.rendered.info, all), k.rendered.info.local, all);
}

void CompiledKernel::enqueue(Queue& q, std::span<const KernelArg> args) const {
  if (temps.empty() && then.empty()) return KernelLaunch::enqueue(q, args);
  std::vector<KernelArg> all = with_temps(args, temps, temps_at);
  KernelLaunch::enqueue(q, all);
  for (const KernelLaunch& k : then) k.enqueue(q, all);
}

void CompiledKernel::record(Graph& g, std::span<const KernelArg> args) const {
  if (temps.empty() && then.empty()) return KernelLaunch::record(g, args);
  std::vector<KernelArg> all = with_temps(args, temps, temps_at);
  KernelLaunch::record(g, all);
  for (const KernelLaunch& k : then) k.record(g, all);
}

std::string compile_error_message(const std::string& compiler, const std::string& log,
                                  const std::string& source) {
  std::string msg = compiler + " could not compile the kernel:\n" + log;
  std::smatch m;
  if (std::regex_search(log, m,
                        std::regex(R"((?::(\d+):\d+: (?:fatal )?error)|(?:\((\d+)\): error))"))) {
    int line = std::stoi(m[1].matched ? m[1].str() : m[2].str());
    std::istringstream in(source);
    std::string text;
    msg += "source around line " + std::to_string(line) + ":\n";
    for (int n = 1; std::getline(in, text); ++n)
      if (n >= line - 3 && n <= line + 3)
        msg += (n == line ? "> " : "  ") + std::to_string(n) + " | " + text + "\n";
  }
  return msg;
}

}  // namespace kitten
