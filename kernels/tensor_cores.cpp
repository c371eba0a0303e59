#include "kernels/tensor_cores.h"

#include <mutex>
#include <set>

#include "dsl/lower.h"
#include "dsl/opt.h"
#include "dsl/printer.h"
#include "dsl/rewrite.h"
#include "dsl/symbolic.h"

namespace kitten {

namespace {

UOp without_casts(UOp u) {
  while (u.op() == Op::CAST) u = u.src(0);
  return u;
}

// The PARAM an INDEX addresses (through AFTERs).
UOp buffer_of(const UOp& index) {
  UOp b = index.src(0);
  while (b.op() == Op::AFTER) b = b.src(0);
  return b;
}

bool global(const UOp& index) { return index.dtype().space() == AddrSpace::Global; }

}  // namespace

std::optional<GemmProblem> matmul_problem(const UOp& sink, std::string* why) {
  auto no = [&](const std::string& w) -> std::optional<GemmProblem> {
    if (why) *why = w;
    return std::nullopt;
  };
  std::vector<UOp> globals, reduces, loads, stores, reg_stores, products, sums;
  int regs = 0;
  for (const UOp& u : toposort(sink)) {
    Op op = u.op();
    switch (op) {
      case Op::RANGE:
        if (u.src(0).op() != Op::CONST) return no("a range of variable extent");
        if (u.axis().kind == AxisKind::Global)
          globals.push_back(u);
        else if (u.axis().kind == AxisKind::Reduce)
          reduces.push_back(u);
        else
          return no("a " + std::string(axis_kind_name(u.axis().kind)) + " range");
        break;
      case Op::LOAD:
        if (global(u.src(0))) loads.push_back(u);
        break;
      case Op::STORE:
        (global(u.src(0)) ? stores : reg_stores).push_back(u);
        break;
      case Op::DEFINE_REG:
        ++regs;
        break;
      case Op::PARAM:
      case Op::CONST:
      case Op::INDEX:
      case Op::END:
      case Op::AFTER:
      case Op::SINK:
      case Op::CAST:
        break;
      default:
        if (!is_alu(op)) return no("it uses " + op_name(op));
        if (u.dtype().is_float()) {
          if (op == Op::MUL)
            products.push_back(u);
          else if (op == Op::ADD)
            sums.push_back(u);
          else
            return no("it computes " + op_name(op) + " on floats");
        }
    }
  }
  if (reduces.size() != 1 || globals.size() > 2 || stores.size() != 1 || loads.size() != 2 ||
      products.size() != 1 || sums.size() != 1 || regs != 1 || reg_stores.size() != 2)
    return no("it is not one sum over one reduce range of one product of two loads, stored once");
  const UOp &r = reduces[0], &mul = products[0], &sum = sums[0], &st = stores[0];
  // The product of the two loads (as f32), summed into an f32 register that starts at 0 and
  // is stored (cast) to C.
  std::set<const void*> operands{without_casts(mul.src(0)).id(), without_casts(mul.src(1)).id()};
  if (operands != std::set<const void*>{loads[0].id(), loads[1].id()} ||
      mul.dtype() != dtypes::float32)
    return no("its product is not of the two loads in float32");
  UOp other = sum.src(0) == mul ? sum.src(1) : sum.src(1) == mul ? sum.src(0) : UOp();
  if (!other || other.op() != Op::LOAD || global(other.src(0)))
    return no("its sum does not add the product to an accumulator");
  bool zero_init = false;
  for (const UOp& s : reg_stores)
    zero_init = zero_init || (s.src(1).op() == Op::CONST && s.src(1).const_value() == 0.0);
  if (!zero_init) return no("its accumulator does not start at 0");
  UOp value = without_casts(st.src(1));
  if (value.op() != Op::LOAD || global(value.src(0)))
    return no("it does not store the accumulator");
  DType in = loads[0].dtype();
  if (loads[1].dtype() != in || (in != dtypes::bfloat16 && in != dtypes::float16))
    return no("its operands are " + std::string(loads[0].dtype().name()) + " and " +
              std::string(loads[1].dtype().name()) + ", not both bfloat16 or both float16");
  DType out = st.src(1).dtype();
  if (out != dtypes::float32 && out != dtypes::bfloat16 && out != dtypes::float16)
    return no("it stores " + std::string(out.name()));
  // Each index: linear in the ranges, from 0 (no offset into the buffer), ungated.
  std::vector<UOp> ranges(globals);
  ranges.push_back(r);
  auto strides = [&](const UOp& index, std::vector<int64_t>& s) {
    if (index.src().size() > 2) return false;
    UOp idx = index.src(1), expect = const_int(idx.dtype(), 0);
    for (const UOp& g : ranges)  // a range of one iteration is index 0
      if (g.src(0).const_int() == 1) idx = substitute(idx, {{g, const_int(g.dtype(), 0)}});
    idx = simplify(idx);
    for (const UOp& g : ranges) {
      std::optional<int64_t> d = axis_stride(idx, g);
      if (!d || *d < 0) return false;
      s.push_back(*d);
      expect = expect + g * *d;
    }
    UOp rest = simplify(idx - expect);
    return rest.op() == Op::CONST && rest.const_int() == 0;
  };
  std::vector<int64_t> sa, sb, sc;
  if (!strides(loads[0].src(0), sa) || !strides(loads[1].src(0), sb) || !strides(st.src(0), sc))
    return no("an index is not linear in the ranges from the buffer's start, or is gated");
  size_t kr = globals.size();  // the reduce range's position in the stride lists
  if (sc[kr] != 0) return no("C's index depends on the reduce range");
  // A's global range is i, B's is j (a range both or neither read is not a product's).
  auto reads = [&](const std::vector<int64_t>& s) {
    std::vector<size_t> g;
    for (size_t x = 0; x < kr; ++x)
      if (s[x]) g.push_back(x);
    return g;
  };
  std::vector<size_t> ga = reads(sa), gb = reads(sb);
  if (ga.size() > 1 || gb.size() > 1 || (ga.size() == 1 && gb.size() == 1 && ga[0] == gb[0]))
    return no("an operand's index reads both output ranges");
  std::optional<size_t> i = ga.empty() ? std::nullopt : std::optional(ga[0]);
  std::optional<size_t> j = gb.empty() ? std::nullopt : std::optional(gb[0]);
  for (size_t x = 0; x < kr; ++x)  // a range neither operand reads must be extent 1
    if (x != i && x != j && globals[x].src(0).const_int() != 1)
      return no("an output range that neither operand reads");
  auto extent = [&](std::optional<size_t> x) {
    return x ? globals[*x].src(0).const_int() : int64_t(1);
  };
  auto stride = [&](const std::vector<int64_t>& s, std::optional<size_t> x) {
    return x ? s[*x] : int64_t(0);
  };
  GemmProblem p;
  p.m = extent(i);
  p.n = extent(j);
  p.k = r.src(0).const_int();
  p.in = in;
  p.out = out;
  p.a_slot = int(buffer_of(loads[0].src(0)).slot());
  p.b_slot = int(buffer_of(loads[1].src(0)).slot());
  p.c_slot = int(buffer_of(st.src(0)).slot());
  if (p.a_slot == p.c_slot || p.b_slot == p.c_slot) return no("C is also an operand");
  // A: M x K rows (unit stride along k) or stored K x M; B: K x N or stored N x K; C's
  // rows dense. A stride of 0 (an axis of extent 1) takes the dense pitch.
  int64_t a_i = stride(sa, i), a_k = sa[kr], b_k = sb[kr], b_j = stride(sb, j);
  int64_t c_i = stride(sc, i), c_j = stride(sc, j);
  if (a_k == 1 || p.k == 1) {
    p.lda = p.m == 1 ? p.k : a_i;
  } else if (a_i == 1 || p.m == 1) {
    p.a_transposed = true;
    p.lda = a_k;
  } else {
    return no("A has no unit stride");
  }
  if (b_j == 1 || p.n == 1) {
    p.ldb = p.k == 1 ? p.n : b_k;
  } else if (b_k == 1 || p.k == 1) {
    p.b_transposed = true;
    p.ldb = b_j;
  } else {
    return no("B has no unit stride");
  }
  if (c_j != 1 && p.n != 1) return no("C's rows are not dense");
  p.ldc = p.m == 1 ? p.n : c_i;
  if (p.lda < (p.a_transposed ? p.m : p.k) || p.ldb < (p.b_transposed ? p.k : p.n) || p.ldc < p.n)
    return no("an operand's rows overlap");
  return p;
}

namespace {

// The route: a kernel whose schedule says TC=1 becomes the tile GEMM's kernels for the
// product it computes (gemm_kernels: with REPACK, the copies too), built with the
// schedule's GEMM knobs; on the Hopper schedule the launch passes A and B (and C through
// the shared-memory epilogue) as the tensor maps `maps` describes.
std::optional<LoweredKernels> route_to_tensor_cores(const UOp& sink, const Target& target,
                                                    const Schedule& s) {
  if (!s.knob_or("TC", 0)) return std::nullopt;
  auto refuse = [&](const std::string& why) {
    throw ScheduleError("schedule: TC=1 " + why + " (kernel '" + sink.name_arg() + "')");
  };
  if (!target.has(kFeatureMmaSync))
    refuse("needs tensor cores (mma.sync), which " + target.arch + " lacks");
  std::string why;
  std::optional<GemmProblem> p = matmul_problem(sink, &why);
  if (!p) refuse("needs a matrix product of 16-bit floats: " + why);
  std::vector<ScheduleEntry> knobs;
  for (const ScheduleEntry& e : s.entries()) {
    if (e.axis) refuse("takes the GEMM's knobs, not actions such as " + Schedule({e}).to_string());
    if (e.name != "TC" && e.name != "NOOPT") knobs.push_back(e);
  }
  LoweredKernels out;
  try {
    out = gemm_kernels(*p, Schedule(knobs), target);
  } catch (const std::invalid_argument& e) {
    refuse(e.what());
  }
  for (int slot : {1, 2}) {
    tiles::TensorLayout l = gemm_operand_layout(*p, slot);
    out.maps.push_back({slot == 1 ? p->a_slot : p->b_slot, l.dims, l.strides});
  }
  out.maps.push_back({p->c_slot, {p->n, p->m}, {(p->ldc ? p->ldc : p->n) * p->out.itemsize()}});
  return out;
}

}  // namespace

void register_tensor_core_route() {
  static std::once_flag once;
  std::call_once(once, [] { register_kernel_route("tensor_cores", route_to_tensor_cores); });
}

}  // namespace kitten
