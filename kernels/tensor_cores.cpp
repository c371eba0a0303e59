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

// u without the one cast to `to` it may be (a widening of an operand, the rounding of the
// result); u itself otherwise.
UOp without_cast(const UOp& u, DType to) {
  return u.op() == Op::CAST && u.dtype() == to ? u.src(0) : u;
}

bool depends_on(const UOp& u, const UOp& on) {
  for (const UOp& x : toposort(u))
    if (x == on) return true;
  return false;
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
  DType f32 = dtypes::float32;
  std::set<const void*> operands{without_cast(mul.src(0), f32).id(),
                                 without_cast(mul.src(1), f32).id()};
  if (operands != std::set<const void*>{loads[0].id(), loads[1].id()} || mul.dtype() != f32 ||
      sum.dtype() != f32)
    return no("its product is not of the two loads in float32");
  UOp other = sum.src(0) == mul ? sum.src(1) : sum.src(1) == mul ? sum.src(0) : UOp();
  if (!other || other.op() != Op::LOAD || global(other.src(0)))
    return no("its sum does not add the product to an accumulator");
  // The accumulator: set to 0 once per output element (inside every output range, outside
  // the reduction), then set to the sum in the reduction; the result read after it.
  const UOp& init = reg_stores[0].src(1) == sum ? reg_stores[1] : reg_stores[0];
  const UOp& update = reg_stores[0].src(1) == sum ? reg_stores[0] : reg_stores[1];
  if (update.src(1) != sum || init.src(1).op() != Op::CONST || init.src(1).const_value() != 0.0)
    return no("its accumulator does not start at 0 and take the sum");
  if (depends_on(init, r)) return no("its accumulator is reset inside the reduction");
  for (const UOp& g : globals)
    if (g.src(0).const_int() > 1 && !depends_on(init, g))
      return no("its accumulator is not reset for every output element");
  UOp value = without_cast(st.src(1), st.src(1).dtype());
  bool after_loop = false;
  for (const UOp& x : toposort(value))
    after_loop = after_loop || (x.op() == Op::END &&
                                std::find(x.src().begin() + 1, x.src().end(), r) != x.src().end());
  if (value.op() != Op::LOAD || global(value.src(0)) || value.dtype() != f32 || !after_loop)
    return no("it does not store the accumulator after the reduction");
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
  // An operand of `rows` x `cols` with these strides: rows dense (the pitch, its row
  // stride) or, stored transposed, columns dense (the pitch, its column stride).
  auto layout = [](int64_t row_stride, int64_t col_stride, int64_t rows, int64_t cols, int64_t& ld,
                   bool& transposed) {
    if (col_stride == 1 || cols == 1) {
      ld = rows == 1 ? cols : row_stride;
    } else if (row_stride == 1 || rows == 1) {
      transposed = true;
      ld = col_stride;
    } else {
      return false;
    }
    return true;
  };
  if (!layout(a_i, a_k, p.m, p.k, p.lda, p.a_transposed)) return no("A has no unit stride");
  if (!layout(b_k, b_j, p.k, p.n, p.ldb, p.b_transposed)) return no("B has no unit stride");
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
  // The GEMM's kernels (and a repack's copies and temporaries, from slot 3) take C, A and
  // B at slots 0, 1 and 2; a repack copies dense operands.
  if (p->c_slot != 0 || p->a_slot != 1 || p->b_slot != 2)
    refuse("takes C, A and B at slots 0, 1 and 2 (this kernel: " + std::to_string(p->c_slot) +
           ", " + std::to_string(p->a_slot) + ", " + std::to_string(p->b_slot) + ")");
  bool dense = p->lda == (p->a_transposed ? p->m : p->k) &&
               p->ldb == (p->b_transposed ? p->k : p->n) && p->ldc == p->n;
  if (s.knob_or("REPACK", 0) && !dense) refuse("with REPACK copies dense operands only");
  // 32-bit offsets: the last element of each operand.
  if ((p->a_transposed ? p->k : p->m) * p->lda >= (int64_t(1) << 31) ||
      (p->b_transposed ? p->n : p->k) * p->ldb >= (int64_t(1) << 31) ||
      p->m * p->ldc >= (int64_t(1) << 31))
    refuse("needs operands of fewer than 2^31 elements");
  std::vector<ScheduleEntry> knobs;
  for (const ScheduleEntry& e : s.entries()) {
    if (e.axis || e.part)
      refuse("takes the GEMM's knobs, not actions or a part's entries such as " +
             Schedule({e}).to_string());
    if (e.name != "TC" && e.name != "NOOPT") knobs.push_back(e);
  }
  // C through shared memory and a TMA store writes whole 16-byte units of its rows: with
  // rows of C (width n) that are not, it goes from registers.
  Schedule gemm(knobs);
  if (p->n * p->out.itemsize() % 16 && p->ldc != p->n && !s.knob_or("REPACK", 0)) {
    if (s.knob_or("EPILOGUE", 0)) refuse("EPILOGUE=1 needs rows of C of whole 16-byte units");
    gemm.knob("EPILOGUE", 0);
  }
  LoweredKernels out;
  try {
    out = gemm_kernels(*p, gemm, target);
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
