#include "backends/cpu/c_renderer.h"

#include <bit>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_map>

namespace kitten {

namespace {

constexpr const char* kPrelude = R"(typedef unsigned short kt_half;
typedef unsigned short kt_bf16;
static inline float kt_h2f(kt_half h) {
  unsigned int sign = (unsigned int)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu, x;
  if (e == 0) { float v = (float)m * 5.9604644775390625e-08f; return sign ? -v : v; }
  x = sign | (e == 0x1F ? 0x7F800000u | (m << 13) : ((e + 112u) << 23) | (m << 13));
  float f; __builtin_memcpy(&f, &x, 4); return f;
}
static inline kt_half kt_f2h(float f) {
  unsigned int x; __builtin_memcpy(&x, &f, 4);
  unsigned int sign = (x >> 16) & 0x8000u, ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return (kt_half)(sign | 0x7E00u);
  if (ax >= 0x477FF000u) return (kt_half)(sign | 0x7C00u);
  if (ax < 0x38800000u) {
    float v; __builtin_memcpy(&v, &ax, 4);
    return (kt_half)(sign | (unsigned int)__builtin_rintf(v * 16777216.0f));
  }
  unsigned int m = ax - 0x38000000u;
  m += 0xFFFu + ((m >> 13) & 1u);
  return (kt_half)(sign | (m >> 13));
}
static inline float kt_bf2f(kt_bf16 b) {
  unsigned int x = (unsigned int)b << 16; float f; __builtin_memcpy(&f, &x, 4); return f;
}
static inline kt_bf16 kt_f2bf(float f) {
  unsigned int x; __builtin_memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (kt_bf16)((x >> 16) | 0x40u);
  x += 0x7FFFu + ((x >> 16) & 1u);
  return (kt_bf16)(x >> 16);
}
)";

[[noreturn]] void refuse(const LinearProgram& p, const std::string& what) {
  throw BackendError("cpu: kernel '" + p.name + "' " + what);
}

bool narrow(DType d) { return d.element() == dtypes::float16 || d.element() == dtypes::bfloat16; }

std::string scalar_c(DType d) {
  switch (d.scalar_type()) {
    case ScalarType::Bool:
      return "_Bool";
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
  explicit CRenderer(const LinearProgram& p) : p_(p) {}

  RenderedKernel run() {
    check_supported();
    find_parallel_loop();
    for (const UOp& u : p_.ops) emit(u);
    RenderedKernel out;
    out.info.name = p_.name.empty() ? "kernel" : p_.name;
    out.info.num_params = num_params_;
    out.info.buffer_params.assign(size_t(num_params_), false);
    for (const UOp& u : p_.ops)
      if (u.op() == Op::PARAM) out.info.buffer_params[size_t(u.int_arg())] = u.dtype().is_pointer();
    out.info.vars.assign(vars_.begin(), vars_.end());
    out.info.global.x = parallel_extent_;
    std::string src = uses_narrow_ ? kPrelude : "";
    for (const auto& [name, def] : vector_types_) src += def;
    src += "void " + out.info.name + "(void* const* args, long long lo, long long hi) {\n";
    src += "  (void)lo; (void)hi;\n" + body_ + "}\n";
    out.source = std::move(src);
    return out;
  }

 private:
  void check_supported() {
    for (const UOp& u : p_.ops) {
      switch (u.op()) {
        case Op::SPECIAL:
        case Op::DEFINE_LOCAL:
        case Op::BARRIER:
        case Op::SHUFFLE:
        case Op::MMA:
        case Op::ASYNC_COPY:
        case Op::WAIT:
          refuse(p_, "needs the threads of a block to cooperate (" + op_name(u.op()) +
                         "): run it on emu or cuda");
        case Op::RANGE:
          if (u.axis().kind == AxisKind::Local)
            refuse(
                p_,
                "needs the threads of a block to cooperate (a local range): run it on emu or cuda");
          break;
        case Op::PARAM:
          num_params_ = std::max<int>(num_params_, int(u.int_arg()) + 1);
          break;
        case Op::DEFINE_VAR:
          vars_.insert(std::get<VarArg>(u.arg()).name);
          break;
        default:
          break;
      }
      DType d = u.dtype().is_pointer() ? u.dtype().pointee() : u.dtype();
      uses_narrow_ |= d.is_value() && narrow(d);
      if (d.is_value() && scalar_c(d.element()).empty())
        refuse(p_,
               "uses " + std::string(d.name()) + ", which the cpu renderer does not support yet");
      if (d.is_vector() && (narrow(d) || d.is_bool()))
        refuse(p_, "uses vectors of " + std::string(d.element().name()) +
                       ", which the cpu renderer does not support yet");
    }
    int slot = 0;
    for (const std::string& v : vars_) var_slot_[v] = num_params_ + slot++;
  }

  // The loop a thread pool may split: the only top-level loop, global, with a constant
  // extent, and nothing but definitions outside it.
  void find_parallel_loop() {
    int depth = 0, top_loops = 0;
    UOp loop;
    for (const UOp& u : p_.ops) {
      if (u.op() == Op::RANGE && depth == 0) ++top_loops, loop = u;
      if (u.op() == Op::RANGE) ++depth;
      if (u.op() == Op::END) depth -= int(u.src().size()) - 1;
      if (depth == 0 && (u.op() == Op::STORE)) return;
    }
    if (top_loops != 1 || loop.axis().kind != AxisKind::Global || loop.src(0).op() != Op::CONST)
      return;
    parallel_ = loop;
    parallel_extent_ = loop.src(0).const_int();
  }

  std::string type(DType d) {
    if (!d.is_vector()) return scalar_c(d);
    std::string name = "kt_" + std::string(d.name());
    if (!vector_types_.count(name))
      vector_types_[name] = "typedef " + scalar_c(d.element()) + " " + name +
                            " __attribute__((vector_size(" + std::to_string(d.itemsize()) +
                            ")));\n";
    return name;
  }

  static std::string literal(const UOp& c) {
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
    if (std::isnan(v)) return f32 ? "__builtin_nanf(\"\")" : "__builtin_nan(\"\")";
    if (std::isinf(v))
      return std::string(v < 0 ? "-" : "") + (f32 ? "__builtin_inff()" : "__builtin_inf()");
    char buf[40];
    std::snprintf(buf, sizeof buf, "%a", v);
    return std::string(buf) + (f32 ? "f" : "");
  }

  std::string name(const UOp& u) const { return names_.at(u.id()); }

  // A value as a float (narrow floats widened) for arithmetic.
  std::string wide(const UOp& u) const {
    if (u.dtype() == dtypes::float16) return "kt_h2f(" + name(u) + ")";
    if (u.dtype() == dtypes::bfloat16) return "kt_bf2f(" + name(u) + ")";
    return name(u);
  }
  static std::string narrowed(DType d, const std::string& expr) {
    if (d == dtypes::float16) return "kt_f2h(" + expr + ")";
    if (d == dtypes::bfloat16) return "kt_f2bf(" + expr + ")";
    return expr;
  }
  static std::string math(const char* fn, DType d) {
    bool f64 = d.element() == dtypes::float64;
    return std::string("__builtin_") + fn + (f64 ? "" : "f");
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

  void line(const std::string& s) { body_ += std::string(2 * size_t(depth_ + 1), ' ') + s + "\n"; }
  void define(const UOp& u, const std::string& expr) {
    std::string n = "v" + std::to_string(counter_++);
    names_[u.id()] = n;
    line(type(u.dtype()) + " " + n + " = " + expr + ";");
  }

  std::string alu(const UOp& u) {
    DType d = u.dtype(), in = u.src(0).dtype();
    auto bin = [&](const char* op) {
      return narrowed(d, "(" + wide(u.src(0)) + " " + op + " " + wide(u.src(1)) + ")");
    };
    auto cmp = [&](const char* op) {
      return "(" + wide(u.src(0)) + " " + op + " " + wide(u.src(1)) + ")";
    };
    switch (u.op()) {
      case Op::NEG:
        return narrowed(d, "(-" + wide(u.src(0)) + ")");
      case Op::RECIP:
        return narrowed(d, std::string(in.element() == dtypes::float64 ? "(1.0 / " : "(1.0f / ") +
                               wide(u.src(0)) + ")");
      case Op::SQRT:
        return narrowed(d, math("sqrt", in) + "(" + wide(u.src(0)) + ")");
      case Op::EXP2:
        return narrowed(d, math("exp2", in) + "(" + wide(u.src(0)) + ")");
      case Op::LOG2:
        return narrowed(d, math("log2", in) + "(" + wide(u.src(0)) + ")");
      case Op::SIN:
        return narrowed(d, math("sin", in) + "(" + wide(u.src(0)) + ")");
      case Op::TRUNC:
        return narrowed(d, math("trunc", in) + "(" + wide(u.src(0)) + ")");
      case Op::ADD:
        return bin("+");
      case Op::SUB:
        return bin("-");
      case Op::MUL:
        return bin("*");
      case Op::FDIV:
      case Op::IDIV:
        return bin("/");
      case Op::MOD:
        return bin("%");
      case Op::AND:
        return bin("&");
      case Op::OR:
        return bin("|");
      case Op::XOR:
        return bin("^");
      case Op::SHL:
        return bin("<<");
      case Op::SHR:
        return bin(">>");
      case Op::MAX:
      case Op::MIN: {
        if (in.is_float() && !in.is_vector())
          return narrowed(d, math(u.op() == Op::MAX ? "fmax" : "fmin", in) + "(" + wide(u.src(0)) +
                                 ", " + wide(u.src(1)) + ")");
        const char* op = u.op() == Op::MAX ? ">" : "<";
        return "(" + name(u.src(0)) + " " + op + " " + name(u.src(1)) + " ? " + name(u.src(0)) +
               " : " + name(u.src(1)) + ")";
      }
      case Op::CMPLT:
        return cmp("<");
      case Op::CMPEQ:
        return cmp("==");
      case Op::CMPNE:
        return cmp("!=");
      case Op::WHERE:
        return "(" + name(u.src(0)) + " ? " + name(u.src(1)) + " : " + name(u.src(2)) + ")";
      case Op::MULACC:
        return narrowed(
            d, "(" + wide(u.src(0)) + " * " + wide(u.src(1)) + " + " + wide(u.src(2)) + ")");
      default:
        refuse(p_, "uses " + op_name(u.op()) + ", which the cpu renderer does not support");
    }
  }

  std::string cast(const UOp& u) {
    DType to = u.dtype(), from = u.src(0).dtype();
    if (to.is_vector()) refuse(p_, "casts vectors, which the cpu renderer does not support yet");
    std::string x = from.is_float() ? wide(u.src(0)) : name(u.src(0));
    if (to.is_bool()) return "(" + x + " != 0)";
    if (narrow(to)) return narrowed(to, "(float)" + x);
    return "(" + type(to) + ")" + x;
  }

  void emit(const UOp& u) {
    switch (u.op()) {
      case Op::CONST:
        names_[u.id()] = literal(u);
        return;
      case Op::PARAM:
        if (u.dtype().is_pointer()) {
          names_[u.id()] = "p" + std::to_string(u.int_arg());
          line(type(u.dtype().pointee()) + "* p" + std::to_string(u.int_arg()) + " = (" +
               type(u.dtype().pointee()) + "*)args[" + std::to_string(u.int_arg()) + "];");
        } else {
          define(u,
                 "(" + type(u.dtype()) + ")(long long)args[" + std::to_string(u.int_arg()) + "]");
        }
        return;
      case Op::DEFINE_VAR: {
        const std::string& v = std::get<VarArg>(u.arg()).name;
        define(u,
               "(" + type(u.dtype()) + ")(long long)args[" + std::to_string(var_slot_.at(v)) + "]");
        return;
      }
      case Op::DEFINE_REG: {
        std::string n = "reg" + std::to_string(u.int_arg());
        names_[u.id()] = n;
        line(type(u.dtype().pointee()) + " " + n + "[" + std::to_string(u.dtype().size()) + "];");
        return;
      }
      case Op::RANGE: {
        std::string n = "r" + std::to_string(u.axis().id);
        names_[u.id()] = n;
        if (u == parallel_)
          line("for (" + type(u.dtype()) + " " + n + " = (" + type(u.dtype()) + ")lo; " + n +
               " < hi; ++" + n + ") {");
        else
          line("for (" + type(u.dtype()) + " " + n + " = 0; " + n + " < " + name(u.src(0)) +
               "; ++" + n + ") {");
        ++depth_;
        return;
      }
      case Op::END:
        for (size_t k = 1; k < u.src().size(); ++k) {
          --depth_;
          line("}");
        }
        return;
      case Op::AFTER:
      case Op::INDEX:
      case Op::GROUP:
      case Op::SINK:
        return;
      case Op::LOAD: {
        const UOp& idx = u.src(0);
        std::string read = element(idx);
        if (u.dtype().is_vector()) {
          std::string n = "v" + std::to_string(counter_++);
          names_[u.id()] = n;
          line(type(u.dtype()) + " " + n + ";");
          line("__builtin_memcpy(&" + n + ", &" + read + ", sizeof " + n + ");");
          return;
        }
        if (idx.src().size() == 3)
          read = "(" + name(idx.src(2)) + " ? " + read + " : " + name(u.src(1)) + ")";
        define(u, read);
        return;
      }
      case Op::STORE: {
        const UOp& idx = u.src(0);
        std::string write = u.src(1).dtype().is_vector()
                                ? "__builtin_memcpy(&" + element(idx) + ", &" + name(u.src(1)) +
                                      ", sizeof " + name(u.src(1)) + ");"
                                : element(idx) + " = " + name(u.src(1)) + ";";
        line(idx.src().size() == 3 ? "if (" + name(idx.src(2)) + ") " + write : write);
        return;
      }
      case Op::CAST:
        define(u, cast(u));
        return;
      case Op::BITCAST: {
        std::string n = "v" + std::to_string(counter_++);
        names_[u.id()] = n;
        line(type(u.dtype()) + " " + n + ";");
        line("__builtin_memcpy(&" + n + ", &" + name(u.src(0)) + ", sizeof " + n + ");");
        return;
      }
      case Op::VECTORIZE: {
        std::string e;
        for (const UOp& s : u.src()) e += (e.empty() ? "" : ", ") + name(s);
        define(u, "(" + type(u.dtype()) + "){" + e + "}");
        return;
      }
      case Op::EXTRACT: {
        const auto& lanes = std::get<std::vector<int64_t>>(u.arg());
        if (lanes.size() != 1)
          refuse(p_, "extracts several lanes at once, which the cpu renderer does not support yet");
        define(u, name(u.src(0)) + "[" + std::to_string(lanes[0]) + "]");
        return;
      }
      default:
        define(u, alu(u));
        return;
    }
  }

  const LinearProgram& p_;
  int num_params_ = 0;
  bool uses_narrow_ = false;
  std::set<std::string> vars_;
  std::map<std::string, int> var_slot_;
  std::map<std::string, std::string> vector_types_;
  std::unordered_map<const void*, std::string> names_;
  UOp parallel_;
  int64_t parallel_extent_ = 1;
  std::string body_;
  int depth_ = 0;
  int counter_ = 0;
};

}  // namespace

RenderedKernel render_c(const LinearProgram& p) { return CRenderer(p).run(); }

}  // namespace kitten
