#include "backends/hcq.h"

#include <algorithm>
#include <regex>
#include <sstream>

#include "dsl/eval.h"
#include "dsl/lower.h"
#include "dsl/printer.h"
#include "dsl/swizzle.h"

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

KernelArg tensor_arg(const KernelInfo& info, int slot, Buffer buffer, std::vector<int64_t> dims,
                     std::vector<int64_t> strides) {
  auto it = info.tensor_maps.find(slot);
  if (it == info.tensor_maps.end()) return KernelArg(std::in_place_type<Buffer>, buffer);
  const KernelInfo::MapSlot& m = it->second;
  return KernelArg(
      std::in_place_type<TensorMap>,
      make_tensor_map(buffer, m.dtype, std::move(dims), std::move(strides), m.box, m.swizzle));
}

TensorMap make_tensor_map(Buffer buffer, DType dtype, std::vector<int64_t> dims,
                          std::vector<int64_t> strides, std::vector<int64_t> box, Swizzle swizzle) {
  auto refuse = [](const std::string& what) { throw BackendError("tensor map: " + what); };
  size_t rank = dims.size();
  int64_t item = dtype.itemsize();
  if (rank < 1 || rank > 5) refuse("rank " + std::to_string(rank) + " (TMA takes 1 to 5)");
  if (strides.size() != rank - 1 || box.size() != rank)
    refuse("needs " + std::to_string(rank - 1) + " strides and " + std::to_string(rank) +
           " box extents for " + std::to_string(rank) + " dimensions");
  if (reinterpret_cast<uintptr_t>(buffer.ptr) % 16) refuse("the tensor must start 16-byte aligned");
  int64_t end = item;  // one past the last byte the tensor reaches
  for (size_t d = 0; d < rank; ++d) {
    int64_t stride = d == 0 ? item : strides[d - 1];
    if (dims[d] < 1 || dims[d] > (int64_t(1) << 32))
      refuse("dimension " + std::to_string(d) + " has " + std::to_string(dims[d]) + " elements");
    if (d > 0 && (stride % 16 || stride <= 0))
      refuse("the stride of dimension " + std::to_string(d) + " is " + std::to_string(stride) +
             " bytes; TMA needs multiples of 16 (rows of " + std::to_string(dims[0]) + " " +
             std::string(dtype.name()) + " take another path, or a padded copy)");
    if (box[d] < 1 || box[d] > 256)
      refuse("box extent " + std::to_string(box[d]) + " in dimension " + std::to_string(d) +
             " (1 to 256)");
    end += (dims[d] - 1) * stride;
  }
  if (box[0] * item % 16)
    refuse("the box's inner extent is " + std::to_string(box[0] * item) +
           " bytes; TMA needs a multiple of 16");
  if (swizzle != Swizzle::None && box[0] * item != swizzle_width(swizzle))
    refuse("the box's inner extent is " + std::to_string(box[0] * item) + " bytes; a " +
           std::string(swizzle_name(swizzle)) + " swizzled box must be exactly that wide");
  if (size_t(end) > buffer.bytes)
    refuse("the tensor reaches byte " + std::to_string(end) + " of a buffer of " +
           std::to_string(buffer.bytes));
  return {buffer, dtype, std::move(dims), std::move(strides), std::move(box), swizzle};
}

void rebind_arg(KernelArg& a, std::span<const std::pair<Buffer, Buffer>> rebind) {
  Buffer* b = std::get_if<Buffer>(&a);
  if (auto* m = std::get_if<TensorMap>(&a)) b = &m->buffer;
  if (b)
    for (const auto& [from, to] : rebind)
      if (*b == from) {
        *b = to;
        return;
      }
}

void check_arg(const KernelInfo& k, size_t slot, const KernelArg& a, const std::string& device) {
  auto kind = [](const KernelArg& x) {
    return std::holds_alternative<Buffer>(x)    ? "a buffer"
           : std::holds_alternative<int64_t>(x) ? "an integer"
                                                : "a tensor map";
  };
  std::string where = device + ": kernel '" + k.name + "' argument " + std::to_string(slot);
  auto map = k.tensor_maps.find(int(slot));
  if (slot < k.unused_params.size() && k.unused_params[slot]) return;  // unread: either kind
  std::string want = map != k.tensor_maps.end()                               ? "a tensor map"
                     : slot < k.buffer_params.size() && k.buffer_params[slot] ? "a buffer"
                                                                              : "an integer";
  if (want != kind(a)) throw BackendError(where + " is " + want + ", got " + kind(a));
  if (map == k.tensor_maps.end()) return;
  const TensorMap& m = std::get<TensorMap>(a);
  auto text = [](DType d, const std::vector<int64_t>& box, Swizzle s) {
    std::string b;
    for (int64_t x : box) b += (b.empty() ? "" : "x") + std::to_string(x);
    return std::string(d.name()) + " box " + b + " swizzle " + std::string(swizzle_name(s));
  };
  const KernelInfo::MapSlot& want_map = map->second;
  if (m.dtype != want_map.dtype || m.box != want_map.box || m.swizzle != want_map.swizzle)
    throw BackendError(where + " is a tensor map of " + text(m.dtype, m.box, m.swizzle) +
                       "; the kernel was built for " +
                       text(want_map.dtype, want_map.box, want_map.swizzle));
  try {  // a map rebound to another buffer must still fit it
    make_tensor_map(m.buffer, m.dtype, m.dims, m.strides, m.box, m.swizzle);
  } catch (const BackendError& e) {
    throw BackendError(where + ": " + e.what());
  }
  int64_t row = m.dims[0] * m.dtype.itemsize();
  if (want_map.stored && row % 16)
    throw BackendError(where + " is stored through with rows of " + std::to_string(row) +
                       " bytes; the H100's TMA stores write whole 16-byte units, past such a "
                       "row's end: store through a map of whole units (or another path)");
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
  return compile_lowered(d, lower_kernels(sink, d.props().target, schedule));
}

CompiledKernel compile_lowered(Device& d, const LoweredKernels& parts) {
  CompiledKernel k;
  build(d, parts.kernels[0], k);
  k.then.resize(parts.kernels.size() - 1);
  for (size_t i = 1; i < parts.kernels.size(); ++i) build(d, parts.kernels[i], k.then[i - 1]);
  k.temps_from = &d.allocator();
  if (!parts.temps.empty()) k.temps_at = size_t(parts.temps[0].slot);
  for (const TempBuffer& t : parts.temps)
    k.temps.push_back(d.allocator().alloc(size_t(t.count * t.dtype.itemsize())));
  k.temp_specs = parts.temps;
  k.maps = parts.maps;
  return k;
}

CompiledKernel::CompiledKernel(CompiledKernel&& o) noexcept { *this = std::move(o); }

CompiledKernel& CompiledKernel::operator=(CompiledKernel&& o) noexcept {
  if (this == &o) return *this;
  for (Buffer b : temps) temps_from->free(b);
  static_cast<KernelLaunch&>(*this) = std::move(static_cast<KernelLaunch&>(o));
  then = std::move(o.then);
  temps = std::move(o.temps);
  temp_specs = std::move(o.temp_specs);
  maps = std::move(o.maps);
  temps_from = o.temps_from;
  temps_at = o.temps_at;
  o.temps.clear();
  return *this;
}

CompiledKernel::~CompiledKernel() {
  for (Buffer b : temps) temps_from->free(b);
}

// The caller's buffers, the temporaries (the parameter slots after them), then variables.
std::vector<KernelArg> CompiledKernel::part_args(const KernelLaunch& part,
                                                 std::span<const KernelArg> args) const {
  const KernelInfo& info = part.rendered.info;
  std::vector<KernelArg> all(args.begin(), args.end());
  size_t at = std::min(temps_at, all.size());
  for (size_t i = 0; i < temps.size(); ++i) {
    const TempBuffer& t = temp_specs[i];
    KernelArg a = temps[i];
    if (!t.dims.empty()) a = tensor_arg(info, int(t.slot), temps[i], t.dims, t.strides);
    all.insert(all.begin() + std::ptrdiff_t(at + i), a);
  }
  for (size_t slot = 0; slot < all.size() && int(slot) < info.num_params; ++slot)
    if (const TensorMap* m = std::get_if<TensorMap>(&all[slot]);
        m && !info.tensor_maps.count(int(slot)))
      all[slot] = m->buffer;
  for (const MapParam& m : maps)  // a caller's buffer the part takes as a tensor map
    if (const Buffer* b =
            size_t(m.slot) < all.size() ? std::get_if<Buffer>(&all[size_t(m.slot)]) : nullptr;
        b && info.tensor_maps.count(int(m.slot)))
      all[size_t(m.slot)] = tensor_arg(info, int(m.slot), *b, m.dims, m.strides);
  // A part that reads fewer slots than the kernel's parts together (a repack's copy of A,
  // before B's temporary; a segment of a cut concatenation, which reads one input) takes
  // the parameters it has, then the variables.
  size_t params = size_t(rendered.info.num_params);
  for (const KernelLaunch& k : then) params = std::max(params, size_t(k.rendered.info.num_params));
  if (size_t(info.num_params) < params && params <= all.size())
    all.erase(all.begin() + info.num_params, all.begin() + std::ptrdiff_t(params));
  return all;
}

KernelArg tensor_arg(const CompiledKernel& k, int slot, Buffer buffer, std::vector<int64_t> dims,
                     std::vector<int64_t> strides) {
  const KernelInfo* info = &k.rendered.info;
  for (const KernelLaunch& part : k.then)
    if (!info->tensor_maps.count(slot) && part.rendered.info.tensor_maps.count(slot))
      info = &part.rendered.info;
  return tensor_arg(*info, slot, buffer, std::move(dims), std::move(strides));
}

void KernelLaunch::enqueue(Queue& q, std::span<const KernelArg> args) const {
  q.exec(*program, launch_grid(rendered.info, args), rendered.info.local, args);
}

void KernelLaunch::record(Graph& g, std::span<const KernelArg> args) const {
  g.record(*program, launch_grid(rendered.info, args), rendered.info.local,
           std::vector<KernelArg>(args.begin(), args.end()));
}

void CompiledKernel::run(std::span<const KernelArg> args) {
  if (direct()) {
    program->launch(launch_grid(rendered.info, args), rendered.info.local, args);
    return;
  }
  auto launch = [&](const KernelLaunch& k) {
    std::vector<KernelArg> all = part_args(k, args);
    k.program->launch(launch_grid(k.rendered.info, all), k.rendered.info.local, all);
  };
  launch(*this);
  for (const KernelLaunch& k : then) launch(k);
}

void CompiledKernel::enqueue(Queue& q, std::span<const KernelArg> args) const {
  if (direct()) return KernelLaunch::enqueue(q, args);
  KernelLaunch::enqueue(q, part_args(*this, args));
  for (const KernelLaunch& k : then) k.enqueue(q, part_args(k, args));
}

void CompiledKernel::record(Graph& g, std::span<const KernelArg> args) const {
  if (direct()) return KernelLaunch::record(g, args);
  KernelLaunch::record(g, part_args(*this, args));
  for (const KernelLaunch& k : then) k.record(g, part_args(k, args));
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
