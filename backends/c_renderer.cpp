#include "backends/c_renderer.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_map>

#include "backends/c_dialects.h"
#include "dsl/mma.h"

namespace kitten {

namespace {

[[noreturn]] void refuse(const CDialect& d, const LinearProgram& p, const std::string& what) {
  throw BackendError(std::string(d.target) + ": kernel '" + p.name + "' " + what);
}

// float16, bfloat16 and the float8s: held as their bits, computed in float32.
bool narrow(DType d) { return d.narrow_float() != nullptr; }

std::string scalar_c(DType d) {
  switch (d.scalar_type()) {
    case ScalarType::Bool:
      return "bool";
    case ScalarType::Int8:
      return "signed char";
    case ScalarType::Int16:
      return "short";
    case ScalarType::Int32:
      return "int";
    case ScalarType::Int64:
      return "long long";
    case ScalarType::UInt8:
      return "unsigned char";
    case ScalarType::UInt16:
      return "unsigned short";
    case ScalarType::UInt32:
      return "unsigned int";
    case ScalarType::UInt64:
      return "unsigned long long";
    case ScalarType::Float16:
      return "kt_half";
    case ScalarType::BFloat16:
      return "kt_bf16";
    case ScalarType::Float8E4M3:
      return "kt_e4m3";
    case ScalarType::Float8E5M2:
      return "kt_e5m2";
    case ScalarType::Float32:
      return "float";
    case ScalarType::Float64:
      return "double";
    default:
      return "";
  }
}

class CRenderer {
 public:
  CRenderer(const LinearProgram& p, const CDialect& d, const Target* t)
      : p_(p), dialect_(d), target_(t) {}

  RenderedKernel run() {
    check_supported();
    if (cuda())
      map_grid();
    else
      cpu_grid();
    for (const UOp& u : p_.ops) emit(u);
    RenderedKernel out;
    out.info.name = p_.name.empty() ? "kernel" : p_.name;
    out.info.symbol = "kt_" + out.info.name;  // never a library function's name (max, sin ...)
    out.info.num_params = num_params_;
    out.info.buffer_params.assign(size_t(num_params_), false);
    out.info.unused_params.assign(size_t(num_params_), true);
    for (const UOp& u : p_.ops)
      if (u.op() == Op::PARAM) {
        out.info.buffer_params[size_t(u.int_arg())] = u.dtype().is_pointer();
        out.info.unused_params[size_t(u.int_arg())] = false;
      } else if (u.op() == Op::TENSOR_MAP) {
        const auto& v = std::get<std::vector<int64_t>>(u.arg());
        out.info.unused_params[size_t(v[0])] = false;
        out.info.tensor_maps[int(v[0])] = {
            u.dtype().pointee(), std::vector<int64_t>(v.begin() + 2, v.end()), Swizzle(v[1])};
      }
    for (const UOp& u : p_.ops)
      if (u.op() == Op::TMA_STORE) out.info.tensor_maps[int(u.src(0).slot())].stored = true;
    out.info.vars.assign(vars_.begin(), vars_.end());
    std::string src = dialect_.prelude;
    if (uses_narrow_) src += narrow_float_prelude();
    for (const auto& [name, def] : vector_types_) src += def;
    if (cuda()) {
      out.info.global = grid_;
      out.info.global_extent = grid_extent_;
      out.info.local = block_;
      out.info.dynamic_shared = dynamic_shared_;
      std::string params;
      for (int i = 0; i < num_params_; ++i) params += (i ? ", " : "") + param_decl_[i];
      for (const std::string& v : vars_)
        params += (params.empty() ? "" : ", ") + std::string("long long kt_var_") + v;
      int64_t threads = block_.x * block_.y * block_.z;
      // setmaxnreg needs the kernel's register cap fixed at entry: one block per SM.
      std::string bounds = std::to_string(threads) + (setmaxnreg_ ? ", 1" : "");
      src += "extern \"C\" __global__ void __launch_bounds__(" + bounds + ") " + out.info.symbol +
             "(" + params + ") {\n" + body_ + "}\n";
    } else {
      // The thread pool runs blocks lo..hi of the grid, one thread each.
      out.info.global.x = cpu_blocks_;
      out.info.global_extent = grid_extent_;
      src += "void " + out.info.symbol + "(void* const* args, long long lo, long long hi) {\n";
      if (cpu_blocks_ > 1 || has_block_)
        src +=
            "  for (long long kt_block = lo; kt_block < hi; ++kt_block) {\n" + body_ + "  }\n}\n";
      else
        src += "  (void)lo; (void)hi;\n" + body_ + "}\n";
    }
    out.source = std::move(src);
    return out;
  }

 private:
  bool cuda() const { return dialect_.blocks; }

  void check_supported() {
    std::vector<std::string> cooperative;  // ops this dialect has no threads of a block for
    for (const UOp& u : p_.ops) {
      Op op = u.op();
      if (!find_op_spec(op) || (!is_alu(op) && core_op_name(op).empty()))
        refuse(
            dialect_, p_,
            "uses " + op_name(op) + ", which the " + dialect_.target + " renderer does not know");
      bool cpu_block = op == Op::SPECIAL &&
                       std::get<SpecialArg>(u.arg()) == SpecialArg{SpecialKind::BlockIdx, 0};
      if (op_has(op, kOpCooperative) && !dialect_.blocks && !cpu_block &&
          std::find(cooperative.begin(), cooperative.end(), op_name(op)) == cooperative.end())
        cooperative.push_back(op_name(op));
      if (op == Op::ATOMIC && target_) {
        AtomicOp a = std::get<AtomicOp>(u.arg());
        DType d = u.src(1).dtype();
        if (!target_->has_atomic(a, d))
          refuse(dialect_, p_,
                 "uses ATOMIC " + std::string(atomic_op_name(a)) + " of " + std::string(d.name()) +
                     ", which " + target_->arch + " does not have");
      }
      if (op == Op::MMA && dialect_.blocks && target_ && !target_->has_mma(u.name_arg()))
        refuse(dialect_, p_,
               "uses MMA " + u.name_arg() + ", which " + target_->arch + " does not have");
      if (dialect_.blocks && target_) {
        std::optional<TargetFeature> needs;
        if (op == Op::MBARRIER_INIT || op == Op::MBARRIER_ARRIVE || op == Op::MBARRIER_WAIT)
          needs = kFeatureMbarrier;
        if (op == Op::FENCE) needs = u.name_arg() == "wgmma" ? kFeatureWgmma : kFeatureMbarrier;
        if (op == Op::SETMAXNREG) needs = kFeatureSetmaxnreg;
        if (op == Op::MATRIX_DESC || op == Op::WGMMA || op == Op::WGMMA_COMMIT ||
            op == Op::WGMMA_WAIT)
          needs = kFeatureWgmma;
        if (op == Op::TENSOR_MAP || op == Op::TMA_LOAD || op == Op::TMA_STORE ||
            op == Op::BULK_REDUCE_ADD || op == Op::BULK_COMMIT || op == Op::BULK_WAIT)
          needs = kFeatureTma;
        if (needs && !target_->has(*needs))
          refuse(dialect_, p_,
                 "uses " + op_name(op) + ", which " + target_->arch + " does not have");
      }
      if (op == Op::RANGE && u.axis().kind == AxisKind::Local)
        refuse(dialect_, p_, "uses a local range; write threads as SPECIALs");
      if (op == Op::PARAM || op == Op::TENSOR_MAP)
        num_params_ = std::max<int>(num_params_, int(u.slot()) + 1);
      explicit_groups_ |= op == Op::ASYNC_COMMIT;  // then copies join the open group
      setmaxnreg_ |= op == Op::SETMAXNREG;
      for (const UOp& s : u.src()) ++uses_[s.id()];
      if (op == Op::MATRIX_DESC) {  // the hardware applies the swizzle the descriptor names
        UOp b = u.src(0).src(0);
        while (b.op() == Op::AFTER) b = b.src(0);
        Swizzle named = Swizzle(std::get<std::vector<int64_t>>(u.arg())[0]);
        if (b.op() == Op::DEFINE_LOCAL && std::get<AllocArg>(b.arg()).swizzle != named)
          refuse(dialect_, p_,
                 "has a MATRIX_DESC naming swizzle " + std::string(swizzle_name(named)) +
                     " into shared memory laid out with " +
                     std::string(swizzle_name(std::get<AllocArg>(b.arg()).swizzle)));
      }
      if (op == Op::DEFINE_VAR) vars_.insert(std::get<VarArg>(u.arg()).name);
      DType d = u.dtype().is_pointer() ? u.dtype().pointee() : u.dtype();
      uses_narrow_ |= d.is_value() && narrow(d);
      if (d.is_value() && scalar_c(d.element()).empty())
        refuse(dialect_, p_,
               "uses " + std::string(d.name()) + ", which the renderer does not support yet");
      // Vectors of bool move as a whole; C has no vectors of them to compute on.
      bool arithmetic = is_alu(op) || op == Op::CAST;
      if (d.is_vector() && d.is_bool() && arithmetic)
        refuse(dialect_, p_,
               "computes on vectors of " + std::string(d.element().name()) + " (" + op_name(op) +
                   "), which the renderer does not support yet");
    }
    if (!cooperative.empty()) {
      std::string list;
      for (const std::string& c : cooperative) list += (list.empty() ? "" : ", ") + c;
      refuse(dialect_, p_,
             "uses " + list + (cooperative.size() == 1 ? ", which needs" : ", which need") +
                 " the threads of a block to cooperate, which " + dialect_.target +
                 " does not have; run it on emu or cuda");
    }
    for (int i = 0; i < num_params_; ++i)
      param_decl_.push_back("long long kt_unused" + std::to_string(i));
    for (const UOp& u : p_.ops)
      if (u.op() == Op::DEFINE_LOCAL)
        shared_total_ += u.dtype().size() * u.dtype().pointee().itemsize() +
                         std::max<int64_t>(16, std::get<AllocArg>(u.arg()).align) - 1;
    int slot = 0;
    for (const std::string& v : vars_) var_slot_[v] = num_params_ + slot++;
  }

  // cpu: the lowering's map_grid turns the outer global range into blockIdx.x; the thread
  // pool runs the blocks (one thread each), the body inside a loop over its share. An
  // extent of variables is evaluated at launch (launch_grid).
  void cpu_grid() {
    for (const UOp& u : p_.ops)
      if (u.op() == Op::SPECIAL) {
        if (!place_special(u, cpu_grid_, block_, grid_extent_))
          refuse(dialect_, p_, "has a thread index on a cpu");
        cpu_blocks_ = cpu_grid_.x;
        has_block_ = true;
      }
    if (has_block_) ++depth_;
  }

  // CUDA: the launch shape is the extents of the SPECIALs (the lowering's map_grid pass
  // gives a kernel its grid); a kernel without them runs as one thread.
  void map_grid() {
    for (const UOp& u : p_.ops) {
      if (u.op() != Op::SPECIAL) continue;
      if (!place_special(u, grid_, block_, grid_extent_))
        refuse(dialect_, p_, "has a thread index whose extent is not a constant");
    }
  }

  std::string type(DType d) {
    if (!d.is_vector()) return scalar_c(d);
    std::string name = "kt_" + std::string(d.name());
    // C vectors cannot hold _Bool: a vector of bools is one of bytes holding 0 or 1.
    std::string element = d.element().is_bool() ? "unsigned char" : scalar_c(d.element());
    if (!vector_types_.count(name))
      vector_types_[name] = "typedef " + element + " " + name + " __attribute__((vector_size(" +
                            std::to_string(d.itemsize()) + ")));\n";
    return name;
  }

  std::string literal(const UOp& c) const {
    DType d = c.dtype();
    if (d.is_bool()) return c.const_int() ? "1" : "0";
    if (d.is_int()) {
      if (d.is_unsigned()) return std::to_string(uint64_t(c.const_int())) + "ULL";
      if (c.const_int() == INT64_MIN) return "(-9223372036854775807LL - 1)";
      return d.bits() == 64 ? std::to_string(c.const_int()) + "LL" : std::to_string(c.const_int());
    }
    double v = c.const_value();
    if (const FloatFormat* f = d.narrow_float()) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "0x%04x", encode_float(*f, v));
      return std::string("(") + scalar_c(d) + ")" + buf;
    }
    bool f32 = d == dtypes::float32;
    if (cuda() && (std::isnan(v) || std::isinf(v))) {
      const char* bits = std::isnan(v) ? (f32 ? "0x7fc00000" : "0x7ff8000000000000LL")
                                       : (f32 ? "0x7f800000" : "0x7ff0000000000000LL");
      return std::string(v < 0 ? "-" : "") + (f32 ? "__int_as_float(" : "__longlong_as_double(") +
             bits + ")";
    }
    if (std::isnan(v)) return f32 ? "__builtin_nanf(\"\")" : "__builtin_nan(\"\")";
    if (std::isinf(v))
      return std::string(v < 0 ? "-" : "") + (f32 ? "__builtin_inff()" : "__builtin_inf()");
    char buf[40];
    std::snprintf(buf, sizeof buf, "%a", v);
    return std::string(buf) + (f32 ? "f" : "");
  }

  std::string name(const UOp& u) const { return names_.at(u.id()); }

  // A value as a float (narrow floats widened) for arithmetic.
  std::string wide(const UOp& u) const { return widen(u.dtype(), name(u)); }
  static std::string widen(DType d, const std::string& expr) {
    if (d == dtypes::float16) return "kt_h2f(" + expr + ")";
    if (d == dtypes::bfloat16) return "kt_bf2f(" + expr + ")";
    if (d == dtypes::float8_e4m3) return "kt_e4m3_2f(" + expr + ")";
    if (d == dtypes::float8_e5m2) return "kt_e5m2_2f(" + expr + ")";
    // unsigned char and short promote to int in C, where a product can overflow: compute
    // them as unsigned int, which wraps, and let the store narrow the result.
    if (d.is_unsigned() && d.bits() < 32) return "(unsigned int)" + expr;
    return expr;
  }
  static std::string narrowed(DType d, const std::string& expr) {
    if (d == dtypes::float16) return "kt_f2h(" + expr + ")";
    if (d == dtypes::bfloat16) return "kt_f2bf(" + expr + ")";
    if (d == dtypes::float8_e4m3) return "kt_f2e4m3(" + expr + ")";
    if (d == dtypes::float8_e5m2) return "kt_f2e5m2(" + expr + ")";
    return expr;
  }
  // The buffer a pointer node names (through AFTERs).
  std::string buffer(const UOp& u) const {
    UOp b = u;
    while (b.op() == Op::AFTER) b = b.src(0);
    return name(b);
  }
  std::string element(const UOp& idx) const {
    return buffer(idx.src(0)) + "[" + name(idx.src(1)) + "]";
  }
  // The 32-bit shared-memory address of an INDEX into shared memory, as PTX takes it.
  std::string shared_address(const UOp& idx) const {
    return "(unsigned int)__cvta_generic_to_shared(&" + element(idx) + ")";
  }

  void line(const std::string& s) { body_ += std::string(2 * size_t(depth_ + 1), ' ') + s + "\n"; }
  std::string fresh() { return "v" + std::to_string(counter_++); }
  void define(const UOp& u, const std::string& expr) {
    std::string n = fresh();
    names_[u.id()] = n;
    line(type(u.dtype()) + " " + n + " = " + expr + ";");
  }

  // One lane (`lane` < 0: a scalar op) of an ALU op, from the table of c_dialects.cpp.
  std::string alu(const UOp& u, int lane = -1) {
    Op op = u.op();
    DType d = u.dtype().element();
    DType in = (op == Op::WHERE ? u.src(1).dtype() : u.src(0).dtype()).element();
    std::vector<std::string> args;
    for (const UOp& src : u.src()) {
      std::string v = name(src);
      if (lane >= 0 && src.dtype().is_vector()) v += "[" + std::to_string(lane) + "]";
      args.push_back(op == Op::WHERE ? v : widen(src.dtype().element(), v));
    }
    std::optional<std::string> text = print_alu(dialect_, op, in, args);
    if (!text)
      refuse(
          dialect_, p_,
          "uses " + op_name(op) + ", which the " + dialect_.target + " renderer does not support");
    bool to_narrow = op != Op::WHERE && !d.is_bool();
    return to_narrow ? narrowed(d, *text) : *text;
  }
  // A vector ALU op lane by lane (CUDA vectors are arrays; C's vector extension has no
  // ?: and no math functions), each lane exactly as the scalar op.
  void emit_vector_alu(const UOp& u) {
    DType d = u.dtype();
    std::string n = fresh();
    names_[u.id()] = n;
    if (cuda())
      line(array_type(d) + " " + n + "[" + std::to_string(d.count()) + "];");
    else
      line(type(d) + " " + n + ";");
    for (int k = 0; k < d.count(); ++k)
      line(n + "[" + std::to_string(k) + "] = " + alu(u, k) + ";");
  }

  std::string cast(const UOp& u) {
    DType to = u.dtype(), from = u.src(0).dtype();
    if (to.is_vector())
      refuse(dialect_, p_, "casts vectors, which the renderer does not support yet");
    std::string x = from.is_float() ? wide(u.src(0)) : name(u.src(0));
    if (to.is_bool()) return "(" + x + " != 0)";
    // float64 and integers wider than float32's 24 bits reach a narrow float in one rounding.
    bool wide_source = from == dtypes::float64 || (from.is_int() && from.bits() > 16);
    if (narrow(to))
      return narrowed(to, wide_source ? "kt_d2f_odd((double)" + x + ")" : "(float)" + x);
    return "(" + type(to) + ")" + x;
  }

  // CUDA: a vector value is an array; a narrow-float fragment stays as its 16-bit codes.
  std::string array_type(DType d) { return scalar_c(d.element()); }
  // CUDA: an aligned struct holding a vector, so that a vector access is one instruction.
  std::string vec_struct(DType d) {
    std::string name = "kt_vec_" + std::string(d.name());
    int align = d.itemsize();
    while (align > 16 || (align & (align - 1))) align = align > 16 ? 16 : align & (align - 1);
    if (!vector_types_.count(name))
      vector_types_[name] = "struct __align__(" + std::to_string(align) + ") " + name + " { " +
                            scalar_c(d.element()) + " v[" + std::to_string(d.count()) + "]; };\n";
    return name;
  }

  // mma.sync as inline PTX: A and B fragments packed two 16-bit codes to a register, C
  // and D one float32 register per element, all sized from the layout.
  void emit_mma(const UOp& u) {
    const MmaLayout& L = *find_mma_layout(u.name_arg());
    DType in = L.a.fragment.element();
    if (L.group_threads != 32 || L.a.home != OperandHome::Registers ||
        L.b.home != OperandHome::Registers || L.c.fragment.element() != dtypes::float32 ||
        (in != dtypes::bfloat16 && in != dtypes::float16))
      refuse(dialect_, p_,
             "uses the MMA layout " + L.name + ", which is not a warp's bf16/f16 mma.sync");
    bool bf = in == dtypes::bfloat16;
    std::string type = bf ? "bf16" : "f16";
    std::string shape =
        "m" + std::to_string(L.m) + "n" + std::to_string(L.n) + "k" + std::to_string(L.k);
    auto packed = [&](const UOp& frag, int count) {
      std::vector<std::string> regs;
      for (int i = 0; i < count; i += 2) {
        std::string r = fresh();
        line("unsigned int " + r + " = (unsigned int)" + name(frag) + "[" + std::to_string(i) +
             "] | ((unsigned int)" + name(frag) + "[" + std::to_string(i + 1) + "] << 16);");
        regs.push_back("\"r\"(" + r + ")");
      }
      return regs;
    };
    std::vector<std::string> a = packed(u.src(0), L.a.fragment.count());
    std::vector<std::string> b = packed(u.src(1), L.b.fragment.count());
    int nc = L.c.fragment.count();
    std::string d = fresh();
    names_[u.id()] = d;
    line("float " + d + "[" + std::to_string(nc) + "];");
    std::vector<std::string> outs, c;
    for (int i = 0; i < nc; ++i) {
      outs.push_back("\"=f\"(" + d + "[" + std::to_string(i) + "])");
      c.push_back("\"f\"(" + name(u.src(2)) + "[" + std::to_string(i) + "])");
    }
    int next = 0;
    auto operands = [&](size_t count) {
      std::string l = "{";
      for (size_t i = 0; i < count; ++i) l += (i ? ", %" : "%") + std::to_string(next++);
      return l + "}";
    };
    std::string dl = operands(outs.size()), al = operands(a.size()), bl = operands(b.size()),
                cl = operands(c.size());
    auto join = [](const std::vector<std::string>& v) {
      std::string out;
      for (const std::string& x : v) out += (out.empty() ? "" : ", ") + x;
      return out;
    };
    std::vector<std::string> ins = a;
    ins.insert(ins.end(), b.begin(), b.end());
    ins.insert(ins.end(), c.begin(), c.end());
    // A pure register operation: not volatile, so the compiler may schedule it among the
    // fragment loads (which stay volatile, ordered with the barriers).
    line("asm(\"mma.sync.aligned." + shape + ".row.col.f32." + type + "." + type + ".f32 " + dl +
         ", " + al + ", " + bl + ", " + cl + ";\" : " + join(outs) + " : " + join(ins) + ");");
  }

  // wgmma.mma_async as inline PTX: the accumulator's registers read and written in place
  // ("+f"; a chain of WGMMAs on one accumulator shares its registers), A as four packed
  // registers or a descriptor, B a descriptor; scale-d 1 (D = A*B + C).
  // A register fragment of eight 16-bit values as four 32-bit registers; pinned (an empty
  // asm that reads and writes them) so that the compiler computes them where they are
  // packed and not between the wgmmas that read them, where ptxas would have to serialise
  // the wgmmas (it reports C7519, an injected warpgroup.arrive).
  std::vector<std::string> pack(const UOp& frag, bool pin) {
    std::vector<std::string> regs;
    std::string pins;
    for (int i = 0; i < 8; i += 2) {
      std::string r = fresh();
      line("unsigned int " + r + " = (unsigned int)" + name(frag) + "[" + std::to_string(i) +
           "] | ((unsigned int)" + name(frag) + "[" + std::to_string(i + 1) + "] << 16);");
      pins += std::string(pins.empty() ? "" : ", ") + "\"+r\"(" + r + ")";
      regs.push_back(r);
    }
    if (pin) line("asm volatile(\"\" : " + pins + ");");
    return regs;
  }
  // Before a wgmma fence: the A fragments it makes ready, packed and pinned there.
  void pack_fragments(const UOp& fence) {
    for (const UOp& s : fence.src())
      if (s.dtype() != dtypes::void_ && s.dtype().count() == 8 &&
          s.dtype().element().itemsize() == 2 && !packed_.count(s.id()))
        packed_[s.id()] = pack(s, true);
  }

  void emit_wgmma(const UOp& u) {
    const MmaLayout& L = *find_mma_layout(u.name_arg());
    DType in = L.name.find("_bf16_") != std::string::npos ? dtypes::bfloat16 : dtypes::float16;
    std::string type = in == dtypes::bfloat16 ? "bf16" : "f16";
    const UOp& c = u.src(2);
    int n = c.dtype().count();
    std::string d;
    if (c.op() == Op::WGMMA && uses_[c.id()] == 1) {
      d = name(c);
    } else {
      d = fresh();
      line("float " + d + "[" + std::to_string(n) + "];");
      line("for (int k = 0; k < " + std::to_string(n) + "; ++k) " + d + "[k] = " + name(c) +
           "[k];");
    }
    names_[u.id()] = d;
    std::string outs, list;
    for (int i = 0; i < n; ++i) {
      outs += std::string(i ? ", " : "") + "\"+f\"(" + d + "[" + std::to_string(i) + "])";
      list += std::string(i ? ", " : "") + "%" + std::to_string(i);
    }
    int next = n;
    std::string ins, a_operand;
    auto trans = [](const UOp& desc) { return std::get<std::vector<int64_t>>(desc.arg())[1]; };
    if (L.a.home == OperandHome::Registers) {
      a_operand = "{";
      auto packed = packed_.find(u.src(0).id());
      std::vector<std::string> regs =
          packed != packed_.end() ? packed->second : pack(u.src(0), false);
      for (const std::string& r : regs) {
        a_operand += std::string(a_operand.size() > 1 ? ", " : "") + "%" + std::to_string(next++);
        ins += ", \"r\"(" + r + ")";
      }
      a_operand += "}";
    } else {
      a_operand = "%" + std::to_string(next++);
      ins += ", \"l\"(" + name(u.src(0)) + ")";
    }
    std::string b_operand = "%" + std::to_string(next++), scale = "%" + std::to_string(next++);
    ins += ", \"l\"(" + name(u.src(1)) + "), \"r\"(1)";
    std::string transposes =
        (L.a.home == OperandHome::Registers ? "" : std::to_string(trans(u.src(0))) + ", ") +
        std::to_string(trans(u.src(1)));
    line("asm volatile(\"{ .reg .pred p; setp.ne.b32 p, " + scale +
         ", 0; wgmma.mma_async.sync.aligned.m64n" + std::to_string(L.n) + "k16.f32." + type + "." +
         type + " {" + list + "}, " + a_operand + ", " + b_operand + ", p, 1, 1, " + transposes +
         "; }\" : " + outs + " : " + ins.substr(2) + " : \"memory\");");
  }

  // ATOMIC: CUDA issues `red` on the generic address; C runs a compare-and-swap loop over
  // the element's bytes (integer add uses __atomic_fetch_add), so that the cpu thread
  // pool's threads combine correctly.
  void emit_atomic(const UOp& u) {
    const UOp& idx = u.src(0);
    DType d = u.src(1).dtype();
    AtomicOp op = std::get<AtomicOp>(u.arg());
    std::string gate = idx.src().size() == 3 ? "if (" + name(idx.src(2)) + ") " : "";
    std::string addr = "&" + element(idx), v = name(u.src(1));
    if (cuda()) {
      std::string type, reg, value = v;
      if (d.is_vector()) {  // two 16-bit codes in one register
        type = std::string("noftz.") + (d.element() == dtypes::bfloat16 ? "bf16x2" : "f16x2");
        reg = "r";
        value = "(unsigned int)" + v + "[0] | ((unsigned int)" + v + "[1] << 16)";
      } else if (d.is_float()) {
        type = d == dtypes::float32 ? "f32" : "f64";
        reg = d == dtypes::float32 ? "f" : "d";
      } else {
        bool sign = !d.is_unsigned() && op != AtomicOp::Add;
        type = std::string(sign ? "s" : "u") + std::to_string(d.bits());
        reg = d.bits() == 64 ? "l" : "r";
      }
      line(gate + "asm volatile(\"red." + std::string(atomic_op_name(op)) + "." + type +
           " [%0], %1;\" :: \"l\"(" + addr + "), \"" + reg + "\"(" + value + ") : \"memory\");");
      return;
    }
    if (op == AtomicOp::Add && d.is_int()) {
      line(gate + "__atomic_fetch_add(" + addr + ", " + v + ", __ATOMIC_RELAXED);");
      return;
    }
    std::string t = type(d), bits = d.itemsize() == 8 ? "unsigned long long" : "unsigned int";
    std::string next;
    if (d.is_vector()) {
      DType e = d.element();
      next = "kt_cur; for (int kt_i = 0; kt_i < 2; ++kt_i) kt_next[kt_i] = " +
             narrowed(e, "(" + std::string(e == dtypes::bfloat16 ? "kt_bf2f" : "kt_h2f") +
                             "(kt_cur[kt_i]) + " + (e == dtypes::bfloat16 ? "kt_bf2f" : "kt_h2f") +
                             "(" + v + "[kt_i]))");
    } else if (op == AtomicOp::Add) {
      next = "kt_cur + " + v;
    } else {
      next =
          "kt_cur " + std::string(op == AtomicOp::Max ? ">" : "<") + " " + v + " ? kt_cur : " + v;
    }
    line(gate + "{ " + bits + "* kt_p = (" + bits + "*)" + addr + "; " + bits +
         " kt_old = __atomic_load_n(kt_p, __ATOMIC_RELAXED), kt_new; do { " + t +
         " kt_cur, kt_next; __builtin_memcpy(&kt_cur, &kt_old, sizeof kt_cur); kt_next = " + next +
         "; __builtin_memcpy(&kt_new, &kt_next, sizeof kt_new); } while "
         "(!__atomic_compare_exchange_n(kt_p, &kt_old, kt_new, 1, __ATOMIC_RELAXED, "
         "__ATOMIC_RELAXED)); }");
  }

  void emit(const UOp& u) {
    switch (u.op()) {
      case Op::CONST:
        names_[u.id()] = literal(u);
        return;
      case Op::PARAM: {
        std::string slot = std::to_string(u.int_arg());
        if (cuda()) {
          if (u.dtype().is_pointer()) {
            names_[u.id()] = "p" + slot;
            param_decl_[size_t(u.int_arg())] =
                type(u.dtype().pointee()) + "* __restrict__ p" + slot;
          } else {
            param_decl_[size_t(u.int_arg())] = "long long kt_param_" + slot;
            define(u, "(" + type(u.dtype()) + ")kt_param_" + slot);
          }
          return;
        }
        if (u.dtype().is_pointer()) {
          names_[u.id()] = "p" + slot;
          line(type(u.dtype().pointee()) + "* p" + slot + " = (" + type(u.dtype().pointee()) +
               "*)args[" + slot + "];");
        } else {
          define(u, "(" + type(u.dtype()) + ")(long long)args[" + slot + "]");
        }
        return;
      }
      case Op::DEFINE_VAR: {
        const std::string& v = std::get<VarArg>(u.arg()).name;
        define(u, cuda() ? "(" + type(u.dtype()) + ")kt_var_" + v
                         : "(" + type(u.dtype()) + ")(long long)args[" +
                               std::to_string(var_slot_.at(v)) + "]");
        return;
      }
      case Op::SPECIAL: {
        SpecialArg s = std::get<SpecialArg>(u.arg());
        if (!cuda()) {
          define(u, "(int)kt_block");
          return;
        }
        define(u, std::string("(int)") +
                      (s.kind == SpecialKind::BlockIdx ? "blockIdx." : "threadIdx.") +
                      "xyz"[s.dim]);
        return;
      }
      case Op::DEFINE_REG: {
        std::string n = "reg" + std::to_string(u.int_arg());
        names_[u.id()] = n;
        line(type(u.dtype().pointee()) + " " + n + "[" + std::to_string(u.dtype().size()) + "];");
        return;
      }
      case Op::DEFINE_LOCAL: {
        // Static __shared__ arrays up to what a block gets without opting in (the target's
        // shared_per_block, 48 KiB on NVIDIA GPUs); beyond, one dynamic allocation (the
        // launch passes its size and the program raises the function's limit).
        std::string n = "smem" + std::to_string(u.slot()), t = type(u.dtype().pointee());
        names_[u.id()] = n;
        int64_t bytes = u.dtype().size() * u.dtype().pointee().itemsize();
        int64_t align = std::max<int64_t>(16, std::get<AllocArg>(u.arg()).align);
        if (shared_total_ <= (target_ ? target_->shared_per_block : 48 * 1024)) {
          line("__shared__ __align__(" + std::to_string(align) + ") " + t + " " + n + "[" +
               std::to_string(u.dtype().size()) + "];");
        } else {  // the dynamic allocation starts 1024-aligned; each carve keeps its alignment
          if (dynamic_shared_ == 0)
            line("extern __shared__ __align__(1024) unsigned char kt_dynamic_smem[];");
          size_t at = (dynamic_shared_ + size_t(align) - 1) / size_t(align) * size_t(align);
          line(t + "* " + n + " = (" + t + "*)(kt_dynamic_smem + " + std::to_string(at) + ");");
          dynamic_shared_ = at + size_t(bytes);
        }
        return;
      }
      case Op::ASYNC_COPY: {  // cp.async: lands in shared memory at a WAIT
        const UOp &dst = u.src(0), &src = u.src(1);
        int bytes = dst.dtype().pointee().itemsize();
        // 16-byte copies bypass L1 (.cg); a gated-off source reads nothing and zero-fills
        // (src-size 0), from the buffer's start so that the address stays valid.
        std::string kind = bytes == 16 ? "cg" : "ca", from = "&" + element(src), size;
        if (src.src().size() == 3) {
          from = name(src.src(2)) + " ? (const void*)" + from + " : (const void*)" +
                 buffer(src.src(0));
          size = ", %2";
        }
        line("asm volatile(\"cp.async." + kind + ".shared.global [%0], [%1], " +
             std::to_string(bytes) + size +
             ";\" :: \"r\"((unsigned int)__cvta_generic_to_shared(&" + element(dst) + ")), \"l\"(" +
             from + ")" +
             (size.empty()
                  ? ""
                  : ", \"r\"(" + name(src.src(2)) + " ? " + std::to_string(bytes) + " : 0)") +
             " : \"memory\");");
        if (!explicit_groups_) line("asm volatile(\"cp.async.commit_group;\" ::: \"memory\");");
        names_[u.id()] = "0";  // the token: ordering only
        return;
      }
      case Op::ASYNC_COMMIT:
        line("asm volatile(\"cp.async.commit_group;\" ::: \"memory\");");
        names_[u.id()] = "0";
        return;
      case Op::WAIT:  // waits for every copy this thread started: at least the ones named
        line("asm volatile(\"cp.async.wait_all;\" ::: \"memory\");");
        return;
      case Op::WAIT_GROUP:  // at most N groups still in flight
        line("asm volatile(\"cp.async.wait_group " + std::to_string(u.int_arg()) +
             ";\" ::: \"memory\");");
        return;
      case Op::BARRIER:
        line("__syncthreads();");
        return;
      case Op::MBARRIER_INIT:
        line("asm volatile(\"mbarrier.init.shared::cta.b64 [%0], %1;\" :: \"r\"(" +
             shared_address(u.src(0)) + "), \"r\"(" + name(u.src(1)) + ") : \"memory\");");
        return;
      case Op::MBARRIER_ARRIVE:
        if (u.src(1).op() == Op::CONST && u.src(1).const_int() == 0)
          line("asm volatile(\"mbarrier.arrive.shared::cta.b64 _, [%0];\" :: \"r\"(" +
               shared_address(u.src(0)) + ") : \"memory\");");
        else
          line("asm volatile(\"mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\" :: \"r\"(" +
               shared_address(u.src(0)) + "), \"r\"(" + name(u.src(1)) + ") : \"memory\");");
        return;
      case Op::MBARRIER_WAIT: {  // try_wait may time out: retried until the phase completed
        std::string done = fresh();
        line("{ unsigned int " + done +
             " = 0; do { asm volatile(\"{ .reg .pred p; "
             "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }\" : "
             "\"=r\"(" +
             done + ") : \"r\"(" + shared_address(u.src(0)) + "), \"r\"(" + name(u.src(1)) +
             ") : \"memory\"); } while (!" + done + "); }");
        return;
      }
      case Op::FENCE: {
        const std::string& kind = u.name_arg();
        if (kind == "wgmma") pack_fragments(u);
        line(std::string("asm volatile(\"") +
             (kind == "mbarrier_init" ? "fence.mbarrier_init.release.cluster;"
              : kind == "proxy_async" ? "fence.proxy.async.shared::cta;"
                                      : "wgmma.fence.sync.aligned;") +
             "\" ::: \"memory\");");
        return;
      }
      case Op::NAMED_BARRIER: {
        const auto& v = std::get<std::vector<int64_t>>(u.arg());
        bool arrive = v.size() > 2 && v[2];
        line(std::string("asm volatile(\"") + (arrive ? "bar.arrive " : "bar.sync ") +
             std::to_string(v[0]) + ", " + std::to_string(v[1]) + ";\" ::: \"memory\");");
        return;
      }
      case Op::MATRIX_DESC: {  // the address bits 4..17, then the arg's fixed fields
        const auto& v = std::get<std::vector<int64_t>>(u.arg());
        uint64_t fixed = descriptor_fields(Swizzle(v[0]), v[2], v[3]);
        define(u, "(unsigned long long)((" + shared_address(u.src(0)) + " & 0x3FFFFu) >> 4) | " +
                      std::to_string(fixed) + "ULL");
        return;
      }
      case Op::WGMMA:
        emit_wgmma(u);
        return;
      case Op::TENSOR_MAP: {  // passed by value in the parameter space, addressed generically
        std::string slot = std::to_string(u.slot());
        vector_types_["kt_tensor_map"] =
            "struct __align__(64) kt_tensor_map { unsigned long long v[16]; };\n";
        param_decl_[size_t(u.slot())] = "const __grid_constant__ kt_tensor_map tm" + slot;
        names_[u.id()] = "(unsigned long long)&tm" + slot;
        return;
      }
      case Op::TMA_LOAD:
      case Op::TMA_STORE: {
        bool load = u.op() == Op::TMA_LOAD;
        size_t first = load ? 3 : 2, rank = u.src().size() - first;
        std::string coords, ins;
        for (size_t i = 0; i < rank; ++i) {
          coords += std::string(i ? ", " : "") + "%" + std::to_string(first + i);
          ins += ", \"r\"(" + name(u.src(first + i)) + ")";
        }
        std::string nd = std::to_string(rank) + "d";
        if (load)
          line("asm volatile(\"cp.async.bulk.tensor." + nd +
               ".shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {" + coords +
               "}], [%2];\" :: \"r\"(" + shared_address(u.src(1)) + "), \"l\"(" + name(u.src(0)) +
               "), \"r\"(" + shared_address(u.src(2)) + ")" + ins + " : \"memory\");");
        else
          line("asm volatile(\"cp.async.bulk.tensor." + nd +
               ".global.shared::cta.bulk_group [%0, {" + coords + "}], [%1];\" :: \"l\"(" +
               name(u.src(0)) + "), \"r\"(" + shared_address(u.src(1)) + ")" + ins +
               " : \"memory\");");
        return;
      }
      case Op::BULK_REDUCE_ADD:
        line(
            "asm volatile(\"cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], "
            "[%1], %2;\" :: \"l\"(&" +
            element(u.src(0)) + "), \"r\"(" + shared_address(u.src(1)) + "), \"r\"(" +
            name(u.src(2)) + ") : \"memory\");");
        return;
      case Op::BULK_COMMIT:
        line("asm volatile(\"cp.async.bulk.commit_group;\" ::: \"memory\");");
        return;
      case Op::BULK_WAIT:
        line("asm volatile(\"cp.async.bulk.wait_group.read " + std::to_string(u.int_arg()) +
             ";\" ::: \"memory\");");
        return;
      case Op::WGMMA_COMMIT:
        line("asm volatile(\"wgmma.commit_group.sync.aligned;\" ::: \"memory\");");
        return;
      case Op::WGMMA_WAIT: {  // the accumulator's registers are tied to the wait
        const UOp& acc = u.src(0);
        std::string outs;
        for (int i = 0; i < acc.dtype().count(); ++i)
          outs +=
              std::string(i ? ", " : "") + "\"+f\"(" + name(acc) + "[" + std::to_string(i) + "])";
        line("asm volatile(\"wgmma.wait_group.sync.aligned " + std::to_string(u.int_arg()) +
             ";\" : " + outs + " :: \"memory\");");
        names_[u.id()] = name(acc);
        return;
      }
      case Op::SETMAXNREG: {
        const auto& v = std::get<std::vector<int64_t>>(u.arg());
        line(std::string("asm volatile(\"setmaxnreg.") + (v[1] ? "inc" : "dec") +
             ".sync.aligned.u32 " + std::to_string(v[0]) + ";\");");
        return;
      }
      case Op::SHUFFLE: {
        static constexpr const char* fns[] = {"__shfl_sync", "__shfl_xor_sync", "__shfl_up_sync",
                                              "__shfl_down_sync"};
        std::string fn = fns[int(std::get<ShuffleMode>(u.arg()))];
        define(u, fn + "(0xffffffffu, " + name(u.src(0)) + ", " + name(u.src(1)) + ")");
        return;
      }
      case Op::MMA:
        emit_mma(u);
        return;
      case Op::STMATRIX: {  // two 16-bit lanes to a 32-bit register
        const auto& v = std::get<std::vector<int64_t>>(u.arg());
        int count = int(v[0]);
        std::string list, ins;
        for (int q = 0; q < count; ++q) {
          std::string r = fresh();
          line("unsigned int " + r + " = (unsigned int)" + name(u.src(1)) + "[" +
               std::to_string(2 * q) + "] | ((unsigned int)" + name(u.src(1)) + "[" +
               std::to_string(2 * q + 1) + "] << 16);");
          list += std::string(q ? ", " : "") + "%" + std::to_string(q + 1);
          ins += ", \"r\"(" + r + ")";
        }
        line("asm volatile(\"stmatrix.sync.aligned.m8n8.x" + std::to_string(count) +
             (v[1] ? ".trans" : "") + ".shared.b16 [%0], {" + list +
             "};\" :: \"r\"((unsigned int)__cvta_generic_to_shared(&" + element(u.src(0)) + "))" +
             ins + " : \"memory\");");
        return;
      }
      case Op::LDMATRIX: {  // four 32-bit registers at most, two 16-bit lanes each
        const auto& v = std::get<std::vector<int64_t>>(u.arg());
        int count = int(v[0]);
        std::string n = fresh(), outs, list;
        names_[u.id()] = n;
        line(array_type(u.dtype()) + " " + n + "[" + std::to_string(2 * count) + "];");
        std::string r = fresh();
        line("unsigned int " + r + "[" + std::to_string(count) + "];");
        for (int q = 0; q < count; ++q) {
          outs += std::string(q ? ", " : "") + "\"=r\"(" + r + "[" + std::to_string(q) + "])";
          list += std::string(q ? ", " : "") + "%" + std::to_string(q);
        }
        line("asm volatile(\"ldmatrix.sync.aligned.m8n8.x" + std::to_string(count) +
             (v[1] ? ".trans" : "") + ".shared.b16 {" + list + "}, [%" + std::to_string(count) +
             "];\" : " + outs + " : \"r\"((unsigned int)__cvta_generic_to_shared(&" +
             element(u.src(0)) + ")));");
        for (int q = 0; q < count; ++q)
          line(n + "[" + std::to_string(2 * q) + "] = (unsigned short)" + r + "[" +
               std::to_string(q) + "]; " + n + "[" + std::to_string(2 * q + 1) +
               "] = (unsigned short)(" + r + "[" + std::to_string(q) + "] >> 16);");
        return;
      }
      case Op::RANGE: {
        std::string n = "r" + std::to_string(u.axis().id);
        names_[u.id()] = n;
        std::string t = type(u.dtype());
        line("for (" + t + " " + n + " = 0; " + n + " < " + name(u.src(0)) + "; ++" + n + ") {");
        ++depth_;
        return;
      }
      case Op::END:
        for (size_t k = 1; k < u.src().size(); ++k) {
          --depth_;
          line("}");
        }
        return;
      case Op::IF:
        line("if (" + name(u.src(0)) + ") {");
        ++depth_;
        return;
      case Op::ENDIF:
        --depth_;
        line("}");
        return;
      case Op::ATOMIC:
        emit_atomic(u);
        return;
      case Op::AFTER:
      case Op::INDEX:
      case Op::GROUP:
      case Op::SINK:
        return;
      case Op::LOAD: {
        const UOp& idx = u.src(0);
        if (u.dtype().is_vector()) {  // one access of the whole vector; a gated-off one takes alt
          std::string n = fresh(), gate = idx.src().size() == 3 ? name(idx.src(2)) : "";
          names_[u.id()] = n;
          std::string count = std::to_string(u.dtype().count());
          if (cuda()) {
            std::string vt = vec_struct(u.dtype()), t = fresh();
            line(array_type(u.dtype()) + " " + n + "[" + count + "];");
            std::string read = vt + " " + t + " = *(const " + vt + "*)&" + element(idx) +
                               "; for (int k = 0; k < " + count + "; ++k) " + n + "[k] = " + t +
                               ".v[k];";
            if (gate.empty())
              line("{ " + read + " }");
            else
              line("if (" + gate + ") { " + read + " } else { for (int k = 0; k < " + count +
                   "; ++k) " + n + "[k] = " + name(u.src(1)) + "[k]; }");
          } else {
            line(type(u.dtype()) + " " + n + ";");
            std::string read =
                "__builtin_memcpy(&" + n + ", &" + element(idx) + ", sizeof " + n + ");";
            line(gate.empty() ? read
                              : "if (" + gate + ") { " + read + " } else { " + n + " = " +
                                    name(u.src(1)) + "; }");
          }
          return;
        }
        std::string read = element(idx);
        if (idx.src().size() == 3)
          read = "(" + name(idx.src(2)) + " ? " + read + " : " + name(u.src(1)) + ")";
        define(u, read);
        return;
      }
      case Op::STORE: {
        const UOp& idx = u.src(0);
        std::string write;
        if (u.src(1).dtype().is_vector() && cuda()) {
          std::string vt = vec_struct(u.src(1).dtype()), t = fresh();
          write = vt + " " + t + "; for (int k = 0; k < " +
                  std::to_string(u.src(1).dtype().count()) + "; ++k) " + t +
                  ".v[k] = " + name(u.src(1)) + "[k]; *(" + vt + "*)&" + element(idx) + " = " + t +
                  ";";
        } else if (u.src(1).dtype().is_vector()) {
          write = "__builtin_memcpy(&" + element(idx) + ", &" + name(u.src(1)) + ", sizeof " +
                  name(u.src(1)) + ");";
        } else
          write = element(idx) + " = " + name(u.src(1)) + ";";
        line(idx.src().size() == 3 ? "if (" + name(idx.src(2)) + ") { " + write + " }" : write);
        return;
      }
      case Op::CAST:
        define(u, cast(u));
        return;
      case Op::BITCAST: {
        std::string n = fresh(), un = fresh();
        names_[u.id()] = n;
        line("union { " + type(u.src(0).dtype()) + " a; " + type(u.dtype()) + " b; } " + un + ";");
        line(un + ".a = " + name(u.src(0)) + ";");
        line(type(u.dtype()) + " " + n + " = " + un + ".b;");
        return;
      }
      case Op::VECTORIZE: {
        std::string e;
        for (const UOp& s : u.src()) e += (e.empty() ? "" : ", ") + name(s);
        if (cuda()) {
          std::string n = fresh();
          names_[u.id()] = n;
          line(array_type(u.dtype()) + " " + n + "[" + std::to_string(u.dtype().count()) + "] = {" +
               e + "};");
        } else {
          define(u, "(" + type(u.dtype()) + "){" + e + "}");
        }
        return;
      }
      case Op::EXTRACT: {
        const auto& lanes = std::get<std::vector<int64_t>>(u.arg());
        if (lanes.size() != 1)
          refuse(dialect_, p_,
                 "extracts several lanes at once, which the renderer does not support yet");
        define(u, name(u.src(0)) + "[" + std::to_string(lanes[0]) + "]");
        return;
      }
        KITTEN_ALU_OPS(KITTEN_OP_CASE)
        if (u.dtype().is_vector())
          emit_vector_alu(u);
        else
          define(u, alu(u));
        return;
    }
    refuse(
        dialect_, p_,
        "uses " + op_name(u.op()) + ", which the " + dialect_.target + " renderer does not know");
  }

  const LinearProgram& p_;
  const CDialect& dialect_;
  const Target* target_;
  int num_params_ = 0;
  bool explicit_groups_ = false;  // the kernel commits its async copies in groups itself
  bool setmaxnreg_ = false;
  std::unordered_map<const void*, int> uses_;  // how many ops read each node
  bool uses_narrow_ = false;
  std::set<std::string> vars_;
  std::map<std::string, int> var_slot_;
  std::vector<std::string> param_decl_;
  std::map<std::string, std::string> vector_types_;
  std::unordered_map<const void*, std::string> names_;
  std::unordered_map<const void*, std::vector<std::string>> packed_;  // pinned A fragments
  int64_t cpu_blocks_ = 1;
  LaunchDims cpu_grid_;
  bool has_block_ = false;
  LaunchDims grid_, block_;
  std::array<UOp, 3> grid_extent_;
  size_t dynamic_shared_ = 0;
  int64_t shared_total_ = 0;
  std::string body_;
  int depth_ = 0;
  int counter_ = 0;
};

}  // namespace

RenderedKernel render_c(const LinearProgram& p, const Target* target) {
  return CRenderer(p, c_dialect(), target).run();
}
RenderedKernel render_cuda(const LinearProgram& p, const Target* target) {
  return CRenderer(p, cuda_dialect(), target).run();
}

}  // namespace kitten
