#include "dsl/ops.h"

#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

#include "dsl/mma.h"
#include "dsl/uop.h"

namespace kitten {

namespace {

// ---- source constraints ----------------------------------------------------------------
using Pred = std::function<bool(const UOp& node, const UOp& src)>;
SourceRule src(std::string name, std::string doc, Pred ok) {
  return {std::move(name), std::move(doc), std::move(ok)};
}
bool is_effect(const UOp& s) { return s.dtype().is_void(); }
bool is_int_scalar(const UOp& s) { return s.dtype().is_scalar() && s.dtype().is_int(); }
bool is_numeric(DType d) { return d.is_value() && !d.is_bool(); }

SourceRule any_node(std::string name) {
  return src(std::move(name), "any node", [](const UOp&, const UOp&) { return true; });
}
SourceRule effect(std::string name) {
  return src(std::move(name), "an effect (a node of dtype void)",
             [](const UOp&, const UOp& s) { return is_effect(s); });
}
SourceRule int_scalar(std::string name) {
  return src(std::move(name), "an integer scalar",
             [](const UOp&, const UOp& s) { return is_int_scalar(s); });
}
SourceRule int_of_result(std::string name) {
  return src(std::move(name), "an integer scalar of the result's dtype",
             [](const UOp& n, const UOp& s) { return is_int_scalar(s) && s.dtype() == n.dtype(); });
}
SourceRule bool_scalar(std::string name) {
  return src(std::move(name), "a bool scalar",
             [](const UOp&, const UOp& s) { return s.dtype() == dtypes::bool_; });
}
SourceRule pointer(std::string name) {
  return src(std::move(name), "a pointer (a buffer)",
             [](const UOp&, const UOp& s) { return s.dtype().is_pointer(); });
}
SourceRule index_in(std::string name, std::optional<AddrSpace> space) {
  std::string doc = "an INDEX";
  if (space) doc += " into " + std::string(addr_space_name(*space)) + " memory";
  return src(std::move(name), doc, [space](const UOp&, const UOp& s) {
    return s.op() == Op::INDEX && (!space || s.dtype().space() == *space);
  });
}
SourceRule op_is(std::string name, Op op, std::string doc) {
  return src(std::move(name), std::move(doc),
             [op](const UOp&, const UOp& s) { return s.op() == op; });
}
SourceRule value_of_result(std::string name) {
  return src(std::move(name), "a value of the result's dtype",
             [](const UOp& n, const UOp& s) { return s.dtype() == n.dtype(); });
}
SourceRule like_src0(std::string name) {
  return src(std::move(name), "of source 0's dtype",
             [](const UOp& n, const UOp& s) { return s.dtype() == n.src(0).dtype(); });
}
SourceRule value_where(std::string name, std::string doc, bool (*ok)(DType)) {
  return src(std::move(name), std::move(doc),
             [ok](const UOp&, const UOp& s) { return ok(s.dtype()); });
}

// ---- dtype rules -----------------------------------------------------------------------
DTypeRule same_as_src(size_t i) {
  return {"the dtype of source " + std::to_string(i),
          [i](std::span<const UOp> s, const Arg&) -> std::optional<DType> {
            if (i >= s.size()) return std::nullopt;
            return s[i].dtype();
          },
          {}};
}
DTypeRule bool_lanes_of_src0() {
  return {"bool, with the lane count of the sources",
          [](std::span<const UOp> s, const Arg&) -> std::optional<DType> {
            if (s.empty() || !s[0].dtype().is_value()) return std::nullopt;
            int n = s[0].dtype().count();
            return n == 1 ? dtypes::bool_ : dtypes::bool_.vec(n);
          },
          {}};
}
DTypeRule checked_dtype(std::string doc, std::function<bool(DType)> ok) {
  return {std::move(doc), {}, std::move(ok)};
}

NodeRule rule(std::string doc, std::function<std::string(const UOp&)> check) {
  return {std::move(doc), std::move(check)};
}
std::string fails_if(bool bad, std::string what) { return bad ? what : std::string(); }

// ---- spec families ---------------------------------------------------------------------
OpSpec spec(Op op, std::string meaning, uint32_t flags = 0) {
  OpSpec s;
  s.name = std::string(core_op_name(op));
  s.meaning = std::move(meaning);
  s.flags = flags;
  return s;
}
OpSpec alu_spec(Op op, std::string meaning, int arity) {
  OpSpec s = spec(op, std::move(meaning), kOpAlu);
  s.arity = arity;
  return s;
}
OpSpec unary(Op op, std::string meaning, std::string doc, bool (*ok)(DType)) {
  OpSpec s = alu_spec(op, std::move(meaning), 1);
  s.sources = {value_where("x", std::move(doc), ok)};
  s.dtype = same_as_src(0);
  return s;
}
OpSpec binary(Op op, std::string meaning, std::string doc, bool (*ok)(DType), bool commutative) {
  OpSpec s = alu_spec(op, std::move(meaning), 2);
  s.sources = {value_where("a", std::move(doc), ok), like_src0("b")};
  s.dtype = same_as_src(0);
  s.commutative = commutative;
  return s;
}
OpSpec compare(Op op, std::string meaning, std::string doc, bool (*ok)(DType), bool commutative) {
  OpSpec s = binary(op, std::move(meaning), std::move(doc), ok, commutative);
  s.dtype = bool_lanes_of_src0();
  return s;
}
bool float_value(DType d) { return d.is_float(); }
bool float32_value(DType d) { return d.element() == dtypes::float32; }
bool int_value(DType d) { return d.is_int(); }
bool numeric_value(DType d) { return is_numeric(d); }
bool any_value(DType d) { return d.is_value(); }
bool int_or_bool(DType d) { return d.is_int() || d.is_bool(); }

std::string const_fits(const UOp& u) {
  DType d = u.dtype();
  ConstArg c = std::get<ConstArg>(u.arg());
  if (d.is_bool()) return fails_if(c.bits > 1, "a bool constant is 0 or 1");
  if (d.is_int()) {
    if (d.is_unsigned() && d.bits() == 64) return "";
    int64_t v = int64_t(c.bits);
    return fails_if(v < d.imin() || v > d.imax(),
                    std::to_string(v) + " is outside " + std::string(d.name()) + "'s range");
  }
  double v = std::bit_cast<double>(c.bits);
  if (std::isnan(v) || d == dtypes::float64) return "";
  double exact = v;
  if (const FloatFormat* f = d.narrow_float())
    exact = decode_float(*f, encode_float(*f, v));
  else
    exact = double(float(v));
  return fails_if(exact != v, std::to_string(v) + " is not exactly a " + std::string(d.name()) +
                                  " (round it first, e.g. with const_)");
}

bool is_identifier(const std::string& s) {
  if (s.empty() || std::isdigit(uint8_t(s[0]))) return false;
  for (char c : s)
    if (!std::isalnum(uint8_t(c)) && c != '_') return false;
  return true;
}

std::string slot_nonnegative(const UOp& u) {
  return fails_if(u.slot() < 0, "slot " + std::to_string(u.slot()) + " is negative");
}

std::vector<OpSpec> core_specs() {
  std::vector<OpSpec> v;
  auto add = [&](OpSpec s) { v.push_back(std::move(s)); };

  // definitions
  OpSpec c = spec(Op::CONST, "A compile-time constant scalar; the arg holds its bits.");
  c.dtype = checked_dtype("a scalar", [](DType d) { return d.is_scalar(); });
  c.arg = ArgKind::Const;
  c.rules = {rule("the value is exact in the dtype", const_fits)};
  c.flags = kOpDefinition;
  add(c);

  OpSpec p =
      spec(Op::PARAM, "A kernel parameter: a global buffer or an integer; the arg is its slot.");
  p.dtype = checked_dtype("a pointer into global memory or an integer scalar", [](DType d) {
    return (d.is_pointer() && d.space() == AddrSpace::Global) || (d.is_scalar() && d.is_int());
  });
  p.arg = ArgKind::Int;
  p.rules = {rule("the slot is not negative", slot_nonnegative)};
  p.flags = kOpDefinition;
  add(p);

  OpSpec dv = spec(Op::DEFINE_VAR,
                   "A run-time integer known to lie within inclusive bounds (name min..max).");
  dv.dtype =
      checked_dtype("an integer scalar", [](DType d) { return d.is_scalar() && d.is_int(); });
  dv.arg = ArgKind::Var;
  dv.rules = {rule("the name is an identifier",
                   [](const UOp& u) {
                     const auto& n = std::get<VarArg>(u.arg()).name;
                     return fails_if(!is_identifier(n), "'" + n + "' is not an identifier");
                   }),
              rule("min <= max, both within the dtype", [](const UOp& u) {
                const auto& a = std::get<VarArg>(u.arg());
                DType d = u.dtype();
                bool unsigned64 = d.is_unsigned() && d.bits() == 64;
                bool bad = a.min > a.max ||
                           (!unsigned64 && (a.min < d.imin() || a.max > d.imax())) ||
                           (unsigned64 && a.min < 0);
                return fails_if(bad, "bounds " + std::to_string(a.min) + ".." +
                                         std::to_string(a.max) + " for " + std::string(d.name()));
              })};
  dv.flags = kOpDefinition;
  add(dv);

  for (auto [op, space] :
       {std::pair{Op::DEFINE_LOCAL, AddrSpace::Local}, std::pair{Op::DEFINE_REG, AddrSpace::Reg}}) {
    std::string where = space == AddrSpace::Local ? "a block's shared memory" : "registers";
    OpSpec d = spec(op, "A buffer in " + where + " of a fixed size; the arg is its slot" +
                            (space == AddrSpace::Local ? " and the alignment of its start." : "."));
    d.dtype = checked_dtype(
        "a pointer into " + std::string(addr_space_name(space)) + " memory with a known size",
        [space](DType t) { return t.is_pointer() && t.space() == space && t.size() > 0; });
    d.arg = space == AddrSpace::Local ? ArgKind::Alloc : ArgKind::Int;
    d.rules = {rule("the slot is not negative", slot_nonnegative)};
    if (space == AddrSpace::Local)
      d.rules.push_back(
          rule("the alignment is a power of two up to 1024 bytes, at least what "
               "its swizzle's pattern needs (256, 512, 1024 bytes)",
               [](const UOp& u) {
                 const AllocArg& a = std::get<AllocArg>(u.arg());
                 int64_t need =
                     a.swizzle == Swizzle::None ? 1 : 128 << int(a.swizzle);  // 256, 512, 1024
                 return fails_if(a.align < need || a.align > 1024 || (a.align & (a.align - 1)),
                                 "alignment " + std::to_string(a.align));
               }));
    d.flags = kOpDefinition | kOpMemory | (space == AddrSpace::Local ? kOpCooperative : 0u);
    add(d);
  }

  OpSpec sp = spec(Op::SPECIAL,
                   "The index of this block in the grid or of this thread in its block, "
                   "along one dimension, below the extent.");
  sp.sources = {int_of_result("extent")};
  sp.dtype = fixed_dtype(dtypes::int32);
  sp.arg = ArgKind::Special;
  sp.rules = {rule("the dimension is 0, 1 or 2 (x, y, z)", [](const UOp& u) {
    int d = std::get<SpecialArg>(u.arg()).dim;
    return fails_if(d < 0 || d > 2, "dimension " + std::to_string(d));
  })};
  sp.flags = kOpDefinition | kOpCooperative;
  add(sp);

  // structure and ordering
  OpSpec r =
      spec(Op::RANGE, "A loop index running from 0 to end-1; the arg is its axis id and kind.");
  r.sources = {int_of_result("end")};
  r.dtype = checked_dtype("an integer scalar", [](DType d) { return d.is_scalar() && d.is_int(); });
  r.arg = ArgKind::Axis;
  r.rules = {rule("the axis id is not negative", [](const UOp& u) {
    return fails_if(u.axis().id < 0, "axis id " + std::to_string(u.axis().id));
  })};
  r.flags = kOpControl;
  add(r);

  OpSpec e = spec(Op::END,
                  "Closes the given ranges over a body effect: the body "
                  "runs once for every iteration of them.");
  e.sources = {effect("body")};
  e.rest = op_is("ranges", Op::RANGE, "a RANGE");
  e.rest_min = 1;
  e.rest_max = -1;
  e.dtype = fixed_dtype(dtypes::void_);
  e.rules = {rule("each range is closed once", [](const UOp& u) {
    for (size_t i = 1; i < u.src().size(); ++i)
      for (size_t j = 1; j < i; ++j)
        if (u.src(i) == u.src(j))
          return "source " + std::to_string(i) + " repeats " + std::to_string(j);
    return std::string();
  })};
  e.flags = kOpControl | kOpEffect;
  add(e);

  OpSpec af = spec(Op::AFTER,
                   "The buffer, usable only after the deps ran; only uses "
                   "reached through this node are ordered.");
  af.sources = {src(
      "buffer", "a pointer (a buffer) or a tile (an extension dtype)",
      [](const UOp&, const UOp& s) { return s.dtype().is_pointer() || s.dtype().is_extension(); })};
  af.rest = any_node("deps");
  af.rest_min = 1;
  af.rest_max = -1;
  af.dtype = same_as_src(0);
  add(af);

  OpSpec g = spec(Op::GROUP,
                  "Bundles several effects into one, so that one END "
                  "closes them all; an async copy's token counts as its effect.");
  g.rest = src("effects", "an effect (a node of dtype void) or a token",
               [](const UOp&, const UOp& s) { return is_effect(s) || s.dtype().is_token(); });
  g.rest_min = 2;
  g.rest_max = -1;
  g.dtype = fixed_dtype(dtypes::void_);
  g.flags = kOpEffect;
  add(g);

  OpSpec i = spec(Op::IF,
                  "Opens a block that runs only where cond is true, after "
                  "the given effects.");
  i.sources = {bool_scalar("cond")};
  i.rest = effect("deps");
  i.rest_max = -1;
  i.dtype = fixed_dtype(dtypes::void_);
  i.flags = kOpControl | kOpEffect;
  add(i);

  OpSpec ei = spec(Op::ENDIF, "Closes an IF over the body effects that run under it.");
  ei.sources = {op_is("if", Op::IF, "an IF")};
  ei.rest = effect("body");
  ei.rest_min = 1;
  ei.rest_max = -1;
  ei.dtype = fixed_dtype(dtypes::void_);
  ei.flags = kOpControl | kOpEffect;
  add(ei);

  OpSpec b = spec(Op::BARRIER,
                  "Waits for every thread of the block, making the "
                  "given writes visible to all of them.");
  b.rest = effect("writes");
  b.rest_max = -1;
  b.dtype = fixed_dtype(dtypes::void_);
  b.flags = kOpEffect | kOpCooperative;
  add(b);

  OpSpec sk = spec(Op::SINK,
                   "The root of a kernel: the effects it must perform; "
                   "the arg is the kernel's name (may be empty).");
  sk.rest = effect("effects");
  sk.rest_max = -1;
  sk.dtype = fixed_dtype(dtypes::void_);
  sk.arg = ArgKind::Name;
  sk.flags = kOpEffect;
  add(sk);

  // memory
  OpSpec ix = spec(Op::INDEX,
                   "The address of element `index` of a buffer, valid "
                   "only where the optional gate is true.");
  ix.sources = {pointer("buffer"), int_scalar("index")};
  ix.rest = bool_scalar("gate");
  ix.rest_max = 1;
  ix.dtype = checked_dtype(
      "a pointer in the buffer's address space to the buffer's element or a vector of it",
      [](DType d) { return d.is_pointer(); });
  ix.rules = {
      rule("it points into the buffer's space, to its element or a vector of it", [](const UOp& u) {
        DType buf = u.src(0).dtype(), d = u.dtype();
        bool ok =
            d.space() == buf.space() && (d.pointee() == buf.pointee() ||
                                         (d.pointee().is_vector() && buf.pointee().is_scalar() &&
                                          d.pointee().element() == buf.pointee()));
        return fails_if(!ok, std::string(d.name()) + " into " + std::string(buf.name()));
      })};
  ix.flags = kOpMemory;
  add(ix);

  OpSpec ld = spec(Op::LOAD,
                   "Reads the value at an address; gated-off lanes yield "
                   "the alternative value.");
  ld.sources = {index_in("address", std::nullopt)};
  ld.rest = value_of_result("alt");
  ld.rest_max = 1;
  ld.dtype = {"the element the address points to",
              [](std::span<const UOp> s, const Arg&) -> std::optional<DType> {
                if (s.empty() || !s[0].dtype().is_pointer()) return std::nullopt;
                return s[0].dtype().pointee();
              },
              {}};
  ld.rules = {
      rule("a gated address has an alternative value, an ungated one has none", [](const UOp& u) {
        bool gated = u.src(0).src().size() == 3, alt = u.src().size() == 2;
        return fails_if(gated != alt, gated ? "the address is gated and there is no "
                                              "alternative value"
                                            : "the address has no gate but an "
                                              "alternative value is given");
      })};
  ld.flags = kOpMemory;
  add(ld);

  OpSpec st = spec(Op::STORE,
                   "Writes value to an address (nothing where its gate is "
                   "false).");
  st.sources = {
      index_in("address", std::nullopt),
      src("value", "a value of the element the address points to", [](const UOp& n, const UOp& s) {
        return n.src(0).dtype().is_pointer() && s.dtype() == n.src(0).dtype().pointee() &&
               s.dtype().is_value();
      })};
  st.dtype = fixed_dtype(dtypes::void_);
  st.flags = kOpMemory | kOpEffect;
  add(st);

  OpSpec at = spec(Op::ATOMIC,
                   "Atomically combines value into the element at an address (nothing where "
                   "its gate is false); the arg is add, max or min.",
                   kOpMemory | kOpEffect);
  at.sources = {
      src("address", "an INDEX into global or local (shared) memory",
          [](const UOp&, const UOp& s) {
            return s.op() == Op::INDEX && (s.dtype().space() == AddrSpace::Global ||
                                           s.dtype().space() == AddrSpace::Local);
          }),
      src("value", "a value of the element the address points to", [](const UOp& n, const UOp& s) {
        return n.src(0).dtype().is_pointer() && s.dtype() == n.src(0).dtype().pointee();
      })};
  at.dtype = fixed_dtype(dtypes::void_);
  at.arg = ArgKind::Atomic;
  at.rules = {
      rule("add takes float32, float64, float16x2, bfloat16x2 or a 32/64-bit integer; "
           "max and min a 32/64-bit integer",
           [](const UOp& u) {
             DType d = u.src(1).dtype();
             bool int_ok = d.is_scalar() && d.is_int() && d.bits() >= 32;
             bool add_ok = int_ok || d == dtypes::float32 || d == dtypes::float64 ||
                           d == dtypes::float16.vec(2) || d == dtypes::bfloat16.vec(2);
             AtomicOp a = std::get<AtomicOp>(u.arg());
             return fails_if(!(a == AtomicOp::Add ? add_ok : int_ok),
                             std::string(atomic_op_name(a)) + " of " + std::string(d.name()));
           })};
  add(at);

  OpSpec ac = spec(Op::ASYNC_COPY,
                   "Starts copying one 4, 8 or 16 byte value from "
                   "global to shared memory (zeros where src's gate is false, "
                   "reading nothing); it has landed only after a WAIT on the "
                   "returned token.");
  ac.sources = {index_in("dst", AddrSpace::Local), index_in("src", AddrSpace::Global)};
  ac.dtype = fixed_dtype(dtypes::token);
  ac.rules = {rule("dst and src point to the same type of 4, 8 or 16 bytes",
                   [](const UOp& u) {
                     DType d = u.src(0).dtype().pointee(), s = u.src(1).dtype().pointee();
                     int bytes = d.itemsize();
                     return fails_if(d != s || (bytes != 4 && bytes != 8 && bytes != 16),
                                     std::string(d.name()) + " from " + std::string(s.name()));
                   }),
              rule("dst is not gated", [](const UOp& u) {
                return fails_if(u.src(0).src().size() == 3, "a gated dst");
              })};
  ac.flags = kOpMemory | kOpCooperative;
  add(ac);

  OpSpec cm = spec(Op::ASYNC_COMMIT,
                   "Closes this thread's async copies issued since its last commit into one "
                   "group (cp.async.commit_group); the sources are those copies (tokens) and "
                   "what must come before (effects); its token stands for the group.");
  cm.rest = src("copies", "a token or an effect",
                [](const UOp&, const UOp& s) { return s.dtype().is_token() || is_effect(s); });
  cm.rest_min = 1;
  cm.rest_max = -1;
  cm.dtype = fixed_dtype(dtypes::token);
  cm.flags = kOpMemory | kOpCooperative;
  add(cm);

  OpSpec w = spec(Op::WAIT,
                  "Waits until the async copies of the given tokens have "
                  "landed (for this thread).");
  w.rest = src("tokens", "a token", [](const UOp&, const UOp& s) { return s.dtype().is_token(); });
  w.rest_min = 1;
  w.rest_max = -1;
  w.dtype = fixed_dtype(dtypes::void_);
  w.flags = kOpMemory | kOpEffect | kOpCooperative;
  add(w);

  OpSpec wg = spec(Op::WAIT_GROUP,
                   "Waits until at most N (the arg) of this thread's groups of async copies are "
                   "still in flight, the oldest landing first (cp.async.wait_group N): the "
                   "groups are ASYNC_COMMITs, or each copy in a kernel without them; the "
                   "tokens are the groups it orders after, oldest first, so all but the "
                   "youngest N of them have landed; effects among the sources only order it "
                   "after them (a second loop's wait after the first loop).");
  wg.rest = src("tokens", "a token, or an effect to order after",
                [](const UOp&, const UOp& s) { return s.dtype().is_token() || is_effect(s); });
  wg.rest_min = 1;
  wg.rest_max = -1;
  wg.dtype = fixed_dtype(dtypes::void_);
  wg.arg = ArgKind::Int;
  wg.rules = {rule("N is at least 0 and less than the number of tokens", [](const UOp& u) {
    int64_t n = u.int_arg(), tokens = 0;
    for (const UOp& s : u.src()) tokens += s.dtype().is_token();
    return fails_if(n < 0 || n >= tokens,
                    "N = " + std::to_string(n) + " with " + std::to_string(tokens) + " tokens");
  })};
  wg.flags = kOpMemory | kOpEffect | kOpCooperative;
  add(wg);

  // warp-level
  OpSpec sh = spec(Op::SHUFFLE,
                   "Exchanges a value between the lanes of a warp; the "
                   "arg is the mode (idx, xor, up or down).");
  sh.sources = {
      value_where("value", "a 32- or 64-bit scalar",
                  [](DType d) { return d.is_scalar() && (d.bits() == 32 || d.bits() == 64); }),
      src("lane", "an int32 scalar",
          [](const UOp&, const UOp& s) { return s.dtype() == dtypes::int32; })};
  sh.dtype = same_as_src(0);
  sh.arg = ArgKind::Shuffle;
  sh.flags = kOpCooperative;
  add(sh);

  OpSpec mma = spec(Op::MMA,
                    "A warp-level matrix multiply-accumulate c + a*b on "
                    "register fragments; the arg names the fragment layout.");
  mma.sources = {any_node("a"), any_node("b"), any_node("c")};
  mma.dtype = same_as_src(2);
  mma.arg = ArgKind::Name;
  mma.rules = {rule("the layout is registered and a, b, c are its fragments", [](const UOp& u) {
    const MmaLayout* l = find_mma_layout(u.name_arg());
    if (!l) return "no MMA layout is named '" + u.name_arg() + "'";
    DType a = l->a.fragment, b = l->b.fragment, c = l->c.fragment;
    return fails_if(u.src(0).dtype() != a || u.src(1).dtype() != b || u.src(2).dtype() != c,
                    l->name + " takes " + std::string(a.name()) + ", " + std::string(b.name()) +
                        ", " + std::string(c.name()));
  })};
  mma.flags = kOpCooperative;
  add(mma);

  OpSpec lm = spec(Op::LDMATRIX,
                   "Loads count (the arg's first int: 1, 2 or 4) 8x8 matrices of 16-bit "
                   "elements from shared memory, warp-wide: lane 8q+r gives the address of "
                   "row r of matrix q (16 bytes), and lane l gets elements 2(l%4) and "
                   "2(l%4)+1 of row l/4 of each matrix, or with trans (the second int, 1) "
                   "element l/4 of rows 2(l%4) and 2(l%4)+1; lanes 2q and 2q+1 of the result "
                   "are matrix q's.");
  lm.sources = {src("address", "an INDEX into local memory of 8 16-bit elements",
                    [](const UOp&, const UOp& s) {
                      DType p = s.dtype().pointee();
                      return s.op() == Op::INDEX && s.dtype().space() == AddrSpace::Local &&
                             p.is_vector() && p.count() == 8 && p.bits() == 16;
                    })};
  lm.arg = ArgKind::Ints;
  lm.dtype = {"the address's element with two lanes per matrix",
              [](std::span<const UOp> s, const Arg& a) -> std::optional<DType> {
                auto* v = std::get_if<std::vector<int64_t>>(&a);
                if (s.empty() || !v || v->size() != 2 || !s[0].dtype().is_pointer())
                  return std::nullopt;
                if ((*v)[0] != 1 && (*v)[0] != 2 && (*v)[0] != 4) return std::nullopt;
                return s[0].dtype().pointee().element().vec(int(2 * (*v)[0]));
              },
              {}};
  lm.rules = {rule("count is 1, 2 or 4 and trans 0 or 1, the address ungated", [](const UOp& u) {
    const auto& v = std::get<std::vector<int64_t>>(u.arg());
    return fails_if(v.size() != 2 || (v[0] != 1 && v[0] != 2 && v[0] != 4) ||
                        (v[1] != 0 && v[1] != 1) || u.src(0).src().size() == 3,
                    "count and trans, ungated");
  })};
  lm.flags = kOpMemory | kOpCooperative;
  add(lm);

  OpSpec sm = spec(Op::STMATRIX,
                   "Stores count (the arg's first int: 1, 2 or 4) 8x8 matrices of 16-bit "
                   "elements to shared memory, warp-wide, as LDMATRIX reads them: lane 8q+r gives "
                   "the address of row r of matrix q, and lanes 2q and 2q+1 of each lane's value "
                   "go where LDMATRIX (trans: the second int) would have read them from.");
  sm.sources = {lm.sources[0],
                src("value", "a vector of the address's element, two lanes per matrix",
                    [](const UOp& n, const UOp& s) {
                      const auto* v = std::get_if<std::vector<int64_t>>(&n.arg());
                      return v && v->size() == 2 &&
                             s.dtype() ==
                                 n.src(0).dtype().pointee().element().vec(int(2 * (*v)[0]));
                    })};
  sm.arg = ArgKind::Ints;
  sm.dtype = fixed_dtype(dtypes::void_);
  sm.rules = lm.rules;
  sm.flags = kOpEffect | kOpMemory | kOpCooperative;
  add(sm);

  // asynchronous barriers
  // An mbarrier is a 64-bit word of shared memory: a phase completes when its expected
  // arrivals have arrived and its expected transaction bytes have landed.
  SourceRule mbarrier = src("mbarrier", "an ungated INDEX into shared memory of a 64-bit integer",
                            [](const UOp&, const UOp& s) {
                              return s.op() == Op::INDEX && s.dtype().space() == AddrSpace::Local &&
                                     s.dtype().pointee().is_scalar() &&
                                     s.dtype().pointee().is_int() &&
                                     s.dtype().pointee().bits() == 64 && s.src().size() == 2;
                            });
  SourceRule int32_scalar = src(
      "n", "an int32 scalar", [](const UOp&, const UOp& s) { return s.dtype() == dtypes::int32; });
  auto barrier_op = [&](Op op, std::string meaning, std::vector<SourceRule> sources) {
    OpSpec b = spec(op, std::move(meaning), kOpEffect | kOpMemory | kOpCooperative);
    b.sources = std::move(sources);
    b.rest = effect("deps");
    b.rest_max = -1;
    b.dtype = fixed_dtype(dtypes::void_);
    return b;
  };
  SourceRule count = int32_scalar, tx = int32_scalar, parity = int32_scalar;
  count.name = "count", tx.name = "tx_bytes", parity.name = "parity";
  add(barrier_op(Op::MBARRIER_INIT,
                 "Initialises an mbarrier for `count` arrivals per phase, in phase 0 "
                 "(mbarrier.init); other threads and the async proxy may use it after a "
                 "FENCE mbarrier_init and a barrier.",
                 {mbarrier, count}));
  add(barrier_op(Op::MBARRIER_ARRIVE,
                 "Arrives once per thread on an mbarrier, first adding tx_bytes to the "
                 "transaction bytes its phase waits for (mbarrier.arrive, .expect_tx where "
                 "tx_bytes is not the constant 0).",
                 {mbarrier, tx}));
  add(barrier_op(Op::MBARRIER_WAIT,
                 "Waits until the phase of the given parity (0 or 1) of an mbarrier has "
                 "completed (a try_wait.parity loop): the phase before the current one when "
                 "parity differs from the current phase's.",
                 {mbarrier, parity}));
  OpSpec fe = spec(Op::FENCE,
                   "A fence, by its arg: mbarrier_init (this thread's mbarrier inits become "
                   "visible), proxy_async (this thread's ordinary shared-memory writes become "
                   "visible to wgmma and TMA) or wgmma (registers written before it are ready "
                   "for the wgmmas after it; warpgroup-wide); the sources are effects it comes "
                   "after and, for wgmma, the register values it makes ready.",
                   kOpEffect | kOpMemory | kOpCooperative);
  fe.rest = any_node("deps");
  fe.rest_max = -1;
  fe.dtype = fixed_dtype(dtypes::void_);
  fe.arg = ArgKind::Name;
  fe.rules = {rule("the kind is mbarrier_init, proxy_async or wgmma",
                   [](const UOp& u) {
                     const std::string& k = u.name_arg();
                     return fails_if(k != "mbarrier_init" && k != "proxy_async" && k != "wgmma",
                                     "kind '" + k + "'");
                   }),
              rule("only a wgmma fence takes values", [](const UOp& u) {
                bool values = false;
                for (const UOp& s : u.src()) values |= !is_effect(s);
                return fails_if(values && u.name_arg() != "wgmma", "values");
              })};
  add(fe);
  OpSpec nb = spec(Op::NAMED_BARRIER,
                   "Waits until `threads` (the arg's second int) threads, whole warps, have "
                   "reached named barrier `id` (the first int, 1 to 15; 0 is BARRIER's), making "
                   "their earlier writes visible to each other (bar.sync id, threads); with a "
                   "third int 1 the threads only arrive and go on (bar.arrive).",
                   kOpEffect | kOpCooperative);
  nb.rest = effect("writes");
  nb.rest_max = -1;
  nb.dtype = fixed_dtype(dtypes::void_);
  nb.arg = ArgKind::Ints;
  nb.rules = {
      rule("id in 1..15, threads a positive multiple of 32, arrive 0 or 1", [](const UOp& u) {
        const auto& v = std::get<std::vector<int64_t>>(u.arg());
        bool ok = (v.size() == 2 || (v.size() == 3 && (v[2] == 0 || v[2] == 1))) && v[0] >= 1 &&
                  v[0] <= 15 && v[1] > 0 && v[1] % 32 == 0;
        return fails_if(!ok, "id and threads");
      })};
  add(nb);
  OpSpec mr = spec(Op::SETMAXNREG,
                   "Raises (the arg's second int 1) or lowers (0) this warpgroup's register "
                   "budget per thread to the first int, a multiple of 8 in 24..256; every warp "
                   "of the warpgroup runs it (setmaxnreg.inc/dec.sync.aligned).",
                   kOpEffect | kOpCooperative);
  mr.rest = effect("deps");
  mr.rest_max = -1;
  mr.dtype = fixed_dtype(dtypes::void_);
  mr.arg = ArgKind::Ints;
  mr.rules = {rule("registers a multiple of 8 in 24..256, inc 0 or 1", [](const UOp& u) {
    const auto& v = std::get<std::vector<int64_t>>(u.arg());
    bool ok =
        v.size() == 2 && v[0] >= 24 && v[0] <= 256 && v[0] % 8 == 0 && (v[1] == 0 || v[1] == 1);
    return fails_if(!ok, "registers and inc");
  })};
  add(mr);

  // warpgroup MMA
  OpSpec md = spec(Op::MATRIX_DESC,
                   "The 64-bit matrix descriptor (wgmma) of the 16-bit matrix that starts at a "
                   "shared-memory address: the arg is the swizzle mode its allocation is laid "
                   "out with (0 none, 1 32B, 2 64B, 3 128B), whether it is MN-major (1) or "
                   "K-major (0), and the leading and stride byte offsets of the PTX canonical "
                   "layouts.",
                   kOpCooperative);
  md.sources = {src("address", "an ungated INDEX into shared memory of a 16-bit element",
                    [](const UOp&, const UOp& s) {
                      return s.op() == Op::INDEX && s.dtype().space() == AddrSpace::Local &&
                             s.dtype().pointee().is_scalar() && s.dtype().pointee().bits() == 16 &&
                             s.src().size() == 2;
                    })};
  md.dtype = fixed_dtype(dtypes::uint64);
  md.arg = ArgKind::Ints;
  md.rules = {
      rule("swizzle 0..3, major 0 or 1, byte offsets multiples of 16 below 2^18", [](const UOp& u) {
        const auto& v = std::get<std::vector<int64_t>>(u.arg());
        bool ok = v.size() == 4 && v[0] >= 0 && v[0] <= 3 && (v[1] == 0 || v[1] == 1);
        for (size_t i = 2; ok && i < 4; ++i) ok = v[i] >= 0 && v[i] < (1 << 18) && v[i] % 16 == 0;
        return fails_if(!ok, "swizzle, major and offsets");
      })};
  add(md);

  OpSpec wm = spec(Op::WGMMA,
                   "Starts a warpgroup MMA c + a*b (wgmma.mma_async): the arg names a "
                   "warpgroup layout; a is its register fragment or a MATRIX_DESC, b a "
                   "MATRIX_DESC; the result may be read only through a WGMMA_WAIT after a "
                   "WGMMA_COMMIT of it; the deps are effects it comes after (a FENCE wgmma).",
                   kOpMemory | kOpCooperative);
  wm.sources = {any_node("a"), any_node("b"), any_node("c")};
  wm.rest = effect("deps");
  wm.rest_max = -1;
  wm.dtype = same_as_src(2);
  wm.arg = ArgKind::Name;
  wm.rules = {rule(
      "the layout is a registered warpgroup layout and a, b, c its operands, "
      "descriptors from MATRIX_DESC",
      [](const UOp& u) {
        const MmaLayout* l = find_mma_layout(u.name_arg());
        if (!l || l->group_threads != 128)
          return "no warpgroup MMA layout is named '" + u.name_arg() + "'";
        auto operand = [](const FragmentLayout& f, const UOp& s) {
          return f.home == OperandHome::Registers ? s.dtype() == f.fragment
                                                  : s.op() == Op::MATRIX_DESC;
        };
        return fails_if(!operand(l->a, u.src(0)) || !operand(l->b, u.src(1)) ||
                            u.src(2).dtype() != l->c.fragment,
                        l->name + " takes " +
                            (l->a.home == OperandHome::Registers ? std::string(l->a.fragment.name())
                                                                 : "a MATRIX_DESC") +
                            ", a MATRIX_DESC, " + std::string(l->c.fragment.name()));
      })};
  add(wm);

  OpSpec wc = spec(Op::WGMMA_COMMIT,
                   "Closes this warpgroup's WGMMAs issued since its last commit into one group "
                   "(wgmma.commit_group); the sources are those WGMMAs and effects to come after.",
                   kOpEffect | kOpMemory | kOpCooperative);
  wc.rest = src("wgmmas", "a WGMMA or an effect",
                [](const UOp&, const UOp& s) { return s.op() == Op::WGMMA || is_effect(s); });
  wc.rest_min = 1;
  wc.rest_max = -1;
  wc.dtype = fixed_dtype(dtypes::void_);
  add(wc);

  OpSpec ww = spec(Op::WGMMA_WAIT,
                   "The accumulator of a WGMMA, once at most N (the arg) of this warpgroup's "
                   "committed WGMMA groups are still in flight (wgmma.wait_group N); the deps "
                   "are effects it comes after (the commit).",
                   kOpMemory | kOpCooperative);
  ww.sources = {op_is("wgmma", Op::WGMMA, "a WGMMA")};
  ww.rest = effect("deps");
  ww.rest_max = -1;
  ww.dtype = same_as_src(0);
  ww.arg = ArgKind::Int;
  ww.rules = {rule("N is 0 to 7", [](const UOp& u) {
    return fails_if(u.int_arg() < 0 || u.int_arg() > 7, "N = " + std::to_string(u.int_arg()));
  })};
  add(ww);

  // bulk copies
  OpSpec tm = spec(Op::TENSOR_MAP,
                   "A kernel parameter that is a TMA tensor map of the pointer's element: the "
                   "arg is its slot, the swizzle of the shared tiles it fills (0 none, 1 32B, 2 "
                   "64B, 3 128B) and the box one copy moves, innermost dimension first.",
                   kOpDefinition | kOpMemory | kOpCooperative);
  tm.dtype = checked_dtype("a pointer into global memory", [](DType d) {
    return d.is_pointer() && d.space() == AddrSpace::Global;
  });
  tm.arg = ArgKind::Ints;
  tm.rules = {
      rule("slot >= 0, swizzle 0..3, 1 to 5 box extents of 1..256, the inner one a "
           "multiple of 16 bytes, the swizzle's width when swizzled",
           [](const UOp& u) {
             const auto& v = std::get<std::vector<int64_t>>(u.arg());
             bool ok = v.size() >= 3 && v.size() <= 7 && v[0] >= 0 && v[1] >= 0 && v[1] <= 3;
             for (size_t i = 2; ok && i < v.size(); ++i) ok = v[i] >= 1 && v[i] <= 256;
             if (ok) {
               int64_t inner = v[2] * u.dtype().pointee().itemsize();
               ok = inner % 16 == 0 && (v[1] == 0 || inner == (int64_t(16) << v[1]));
             }
             return fails_if(!ok, "slot, swizzle and box");
           })};
  add(tm);
  SourceRule map = op_is("map", Op::TENSOR_MAP, "a TENSOR_MAP");
  SourceRule tile = src("tile", "an ungated INDEX into shared memory of the map's element",
                        [](const UOp& n, const UOp& s) {
                          return s.op() == Op::INDEX && s.dtype().space() == AddrSpace::Local &&
                                 s.src().size() == 2 &&
                                 s.dtype().pointee() == n.src(0).dtype().pointee();
                        });
  auto coords_rule = [] {
    return rule("one int32 coordinate per dimension of the map's box", [](const UOp& u) {
      size_t fixed = u.op() == Op::TMA_LOAD ? 3 : 2;
      size_t rank = std::get<std::vector<int64_t>>(u.src(0).arg()).size() - 2;
      bool ok = u.src().size() == fixed + rank;
      for (size_t i = fixed; ok && i < u.src().size(); ++i) ok = u.src(i).dtype() == dtypes::int32;
      return fails_if(!ok, std::to_string(u.src().size() - fixed) + " coordinates for rank " +
                               std::to_string(rank));
    });
  };
  OpSpec tl = spec(Op::TMA_LOAD,
                   "Starts a TMA copy of the box at the coordinates (the innermost a multiple of "
                   "16 bytes; elements outside the tensor read as zeros) into a shared tile laid "
                   "out with the map's swizzle; its bytes "
                   "complete a transaction of the mbarrier, and land when that phase completes "
                   "(cp.async.bulk.tensor ... mbarrier::complete_tx::bytes).",
                   kOpEffect | kOpMemory | kOpCooperative);
  tl.sources = {map, tile, mbarrier};
  tl.rest = int_scalar("coords");
  tl.rest_min = 1;
  tl.rest_max = 5;
  tl.dtype = fixed_dtype(dtypes::void_);
  tl.rules = {coords_rule()};
  add(tl);
  OpSpec ts = spec(Op::TMA_STORE,
                   "Starts a TMA copy of a shared tile to the box at the coordinates, which may "
                   "not be negative (elements past the tensor's end are not written), in this "
                   "thread's bulk group "
                   "(cp.async.bulk.tensor ... bulk_group); the tile may be rewritten after a "
                   "BULK_WAIT.",
                   kOpEffect | kOpMemory | kOpCooperative);
  ts.sources = {map, tile};  // the rest as TMA_LOAD's: coordinates, no mbarrier
  ts.rest = tl.rest, ts.rest_min = tl.rest_min, ts.rest_max = tl.rest_max;
  ts.dtype = tl.dtype;
  ts.rules = tl.rules;
  add(ts);
  OpSpec br = spec(Op::BULK_REDUCE_ADD,
                   "Adds `bytes` bytes of float32 from shared memory into global memory, "
                   "element by element and atomically, in this thread's bulk group "
                   "(cp.reduce.async.bulk .add.f32).",
                   kOpEffect | kOpMemory | kOpCooperative);
  br.sources = {
      src("dst", "an ungated INDEX into global memory of float32",
          [](const UOp&, const UOp& s) {
            return s.op() == Op::INDEX && s.dtype().space() == AddrSpace::Global &&
                   s.dtype().pointee() == dtypes::float32 && s.src().size() == 2;
          }),
      src("src", "an ungated INDEX into shared memory of float32",
          [](const UOp&, const UOp& s) {
            return s.op() == Op::INDEX && s.dtype().space() == AddrSpace::Local &&
                   s.dtype().pointee() == dtypes::float32 && s.src().size() == 2;
          }),
      src("bytes", "an int32 CONST, a positive multiple of 16", [](const UOp&, const UOp& s) {
        return s.op() == Op::CONST && s.dtype() == dtypes::int32 && s.const_int() > 0 &&
               s.const_int() % 16 == 0;
      })};
  br.rest = effect("deps");
  br.rest_max = -1;
  br.dtype = fixed_dtype(dtypes::void_);
  add(br);
  OpSpec bk = spec(Op::BULK_COMMIT,
                   "Closes this thread's bulk copies (TMA stores, bulk reductions) since its "
                   "last commit into one bulk group (cp.async.bulk.commit_group).",
                   kOpEffect | kOpMemory | kOpCooperative);
  bk.rest = effect("copies");
  bk.rest_min = 1;
  bk.rest_max = -1;
  bk.dtype = fixed_dtype(dtypes::void_);
  add(bk);
  OpSpec bw = spec(Op::BULK_WAIT,
                   "Waits until at most N (the arg) of this thread's bulk groups still read "
                   "shared memory (cp.async.bulk.wait_group.read N).",
                   kOpEffect | kOpMemory | kOpCooperative);
  bw.rest = effect("deps");
  bw.rest_max = -1;
  bw.dtype = fixed_dtype(dtypes::void_);
  bw.arg = ArgKind::Int;
  bw.rules = {rule("N is 0 to 7", [](const UOp& u) {
    return fails_if(u.int_arg() < 0 || u.int_arg() > 7, "N = " + std::to_string(u.int_arg()));
  })};
  add(bw);

  // types and vectors
  OpSpec cs = spec(Op::CAST,
                   "Converts a value to another dtype of the same lane count "
                   "(floats round to nearest even).");
  cs.sources = {value_where("x", "a value", any_value)};
  cs.dtype = checked_dtype("a value", [](DType d) { return d.is_value(); });
  cs.rules = {rule("the lane count is kept", [](const UOp& u) {
    return fails_if(u.dtype().count() != u.src(0).dtype().count(), "lanes differ");
  })};
  add(cs);

  OpSpec bc = spec(Op::BITCAST,
                   "Reinterprets the bits of a value as another dtype of "
                   "the same size.");
  bc.sources = {value_where("x", "a value", any_value)};
  bc.dtype = checked_dtype("a value", [](DType d) { return d.is_value(); });
  bc.rules = {rule("the size in bytes is kept", [](const UOp& u) {
    return fails_if(u.dtype().itemsize() != u.src(0).dtype().itemsize(), "sizes differ");
  })};
  add(bc);

  OpSpec vz = spec(Op::VECTORIZE, "Builds a vector from scalars, one per lane.");
  vz.rest = src("elements", "a scalar of one dtype shared by all sources",
                [](const UOp& n, const UOp& s) {
                  return s.dtype().is_scalar() && s.dtype() == n.src(0).dtype();
                });
  vz.rest_min = 2;
  vz.rest_max = 256;
  vz.dtype = {"a vector of the sources' dtype with one lane per source",
              [](std::span<const UOp> s, const Arg&) -> std::optional<DType> {
                if (s.size() < 2 || !s[0].dtype().is_scalar()) return std::nullopt;
                return s[0].dtype().vec(int(s.size()));
              },
              {}};
  add(vz);

  OpSpec ex = spec(Op::EXTRACT,
                   "Takes the listed lanes of a vector: a scalar for one "
                   "lane, else a vector.");
  ex.sources = {value_where("x", "a vector", [](DType d) { return d.is_vector(); })};
  ex.arg = ArgKind::Ints;
  ex.dtype = {"the element for one lane, else a vector of it with one lane per listed lane",
              [](std::span<const UOp> s, const Arg& a) -> std::optional<DType> {
                auto* lanes = std::get_if<std::vector<int64_t>>(&a);
                if (s.empty() || !lanes || lanes->empty() || lanes->size() > 256)
                  return std::nullopt;
                DType e = s[0].dtype().element();
                return lanes->size() == 1 ? e : e.vec(int(lanes->size()));
              },
              {}};
  ex.rules = {rule("every lane is within the vector", [](const UOp& u) {
    for (int64_t l : std::get<std::vector<int64_t>>(u.arg()))
      if (l < 0 || l >= u.src(0).dtype().count()) return "lane " + std::to_string(l);
    return std::string();
  })};
  add(ex);

  // ALU
  add(unary(Op::NEG, "Negates x.", "a number (not bool)", numeric_value));
  add(unary(Op::RECIP, "1/x.", "a float", float_value));
  add(unary(Op::SQRT, "The square root of x.", "a float", float_value));
  add(unary(Op::EXP2, "2 to the power x.", "a float", float_value));
  add(unary(Op::EXP2_FTZ,
            "2 to the power x, with subnormal inputs read as 0 and subnormal results "
            "written as 0 (one MUFU.EX2 on a GPU, where EXP2 keeps subnormals at a few "
            "instructions more): exponents of a softmax, whose tiny terms are 0 anyway.",
            "a float32", float32_value));
  add(unary(Op::LOG2, "The base-2 logarithm of x.", "a float", float_value));
  add(unary(Op::SIN, "The sine of x (radians).", "a float", float_value));
  add(unary(Op::TRUNC, "x rounded toward zero.", "a float", float_value));
  add(binary(Op::ADD, "a + b.", "a number (not bool)", numeric_value, true));
  add(binary(Op::SUB, "a - b.", "a number (not bool)", numeric_value, false));
  add(binary(Op::MUL, "a * b.", "a number (not bool)", numeric_value, true));
  add(binary(Op::FDIV, "a / b for floats.", "a float", float_value, false));
  add(binary(Op::IDIV, "a / b for integers, truncating toward zero as C does.", "an integer",
             int_value, false));
  add(binary(Op::MOD, "The remainder of IDIV: a - (a/b)*b, with the sign of a as in C.",
             "an integer", int_value, false));
  add(binary(Op::MAX, "The larger of a and b.", "a number (not bool)", numeric_value, true));
  add(binary(Op::MIN, "The smaller of a and b.", "a number (not bool)", numeric_value, true));
  add(compare(Op::CMPLT, "a < b.", "a value", any_value, false));
  add(compare(Op::CMPEQ, "a == b.", "a value", any_value, true));
  add(compare(Op::CMPNE, "a != b.", "a value", any_value, true));
  add(binary(Op::AND, "Bitwise (logical for bool) and.", "an integer or bool", int_or_bool, true));
  add(binary(Op::OR, "Bitwise (logical for bool) or.", "an integer or bool", int_or_bool, true));
  add(binary(Op::XOR, "Bitwise (logical for bool) exclusive or.", "an integer or bool", int_or_bool,
             true));
  add(binary(Op::SHL, "a shifted left by b bits.", "an integer", int_value, false));
  add(binary(Op::SHR, "a shifted right by b bits (arithmetic for signed a).", "an integer",
             int_value, false));

  OpSpec wh = alu_spec(Op::WHERE, "a where cond is true, else b, lane by lane.", 3);
  wh.sources = {src("cond", "bool with the result's lane count",
                    [](const UOp& n, const UOp& s) {
                      return s.dtype().is_bool() && s.dtype().count() == n.dtype().count();
                    }),
                value_where("a", "a value", any_value),
                src("b", "of a's dtype",
                    [](const UOp& n, const UOp& s) { return s.dtype() == n.src(1).dtype(); })};
  wh.dtype = same_as_src(1);
  add(wh);

  OpSpec ma = alu_spec(Op::MULACC, "a * b + c (fused where the target has it).", 3);
  ma.sources = {value_where("a", "a number (not bool)", numeric_value), like_src0("b"),
                like_src0("c")};
  ma.dtype = same_as_src(0);
  add(ma);
  return v;
}

bool is_core_alu(Op op) {
  switch (op) {
    KITTEN_ALU_OPS(KITTEN_OP_CASE)
    return true;
    KITTEN_STRUCTURE_OPS(KITTEN_OP_CASE)
    return false;
  }
  return false;
}

// ---- the registry ----------------------------------------------------------------------
constexpr size_t kMaxOps = 1024;

struct Registry {
  std::mutex mu;
  std::array<std::atomic<const OpSpec*>, kMaxOps> specs{};
  std::array<uint64_t, kMaxOps> name_hash{};
  std::atomic<int> count{0};
  std::unordered_map<std::string, Op> by_name;

  Registry() {
    for (OpSpec& s : core_specs()) add(std::move(s));
    check_core_specs();
  }

  // Each enumerator is tied to its spec by id and name, and the ALU flag matches the
  // KITTEN_ALU_OPS list; a mismatch is a bug in ops.cpp, found at the first use.
  void check_core_specs() const {
    std::string bad;
    if (count.load() != kNumCoreOps) bad = "core_specs() and enum Op differ in length";
    for (int id = 0; id < kNumCoreOps && bad.empty(); ++id) {
      const OpSpec& s = *specs[size_t(id)].load();
      if (s.name != core_op_name(Op(id)))
        bad = "spec " + s.name + " sits at the id of " + std::string(core_op_name(Op(id)));
      else if (bool(s.flags & kOpAlu) != is_core_alu(Op(id)) || (s.flags & kOpAlu && s.arity < 1))
        bad = s.name + "'s ALU flag or arity disagrees with KITTEN_ALU_OPS";
      else if (bool(s.flags & kOpEffect) !=
               (s.dtype.infer && s.dtype.infer({}, Arg{}) == std::optional(dtypes::void_)))
        bad = s.name + "'s effect flag disagrees with its dtype";
    }
    if (bad.empty()) return;
    std::fprintf(stderr, "kitten: the op registry is inconsistent: %s\n", bad.c_str());
    std::abort();
  }

  Op add(OpSpec s) {
    if (s.name.empty() || s.meaning.empty() || s.dtype.doc.empty() ||
        (!s.dtype.infer && !s.dtype.check))
      throw std::invalid_argument("register_op: '" + s.name +
                                  "' needs a name, a meaning and a dtype rule");
    if ((s.rest_min > 0 || s.rest_max != 0) && !s.rest)
      throw std::invalid_argument("register_op: '" + s.name +
                                  "' counts further sources but has no rule for them");
    int id = count.load();
    if (by_name.count(s.name))
      throw std::invalid_argument("register_op: '" + s.name + "' is taken");
    if (size_t(id) >= kMaxOps) throw std::invalid_argument("register_op: too many ops");
    by_name.emplace(s.name, Op(id));
    name_hash[id] = fnv1a(s.name);
    specs[id].store(new OpSpec(std::move(s)), std::memory_order_release);
    count.store(id + 1, std::memory_order_release);
    return Op(id);
  }
};

Registry& registry() {
  static Registry* r = new Registry();  // immortal: nodes may outlive static destruction
  return *r;
}

}  // namespace

DTypeRule fixed_dtype(DType d) {
  return {std::string(d.name()), [d](std::span<const UOp>, const Arg&) { return d; }, {}};
}

std::string_view core_op_name(Op op) {
  static constexpr std::string_view names[] = {
#define KITTEN_OP_NAME(name) #name,
      KITTEN_STRUCTURE_OPS(KITTEN_OP_NAME) KITTEN_ALU_OPS(KITTEN_OP_NAME)
#undef KITTEN_OP_NAME
  };
  size_t id = size_t(op);
  return id < std::size(names) ? names[id] : std::string_view();
}

bool op_has(Op op, OpFlag flag) {
  const OpSpec* s = find_op_spec(op);
  return s && (s->flags & flag);
}

Op register_op(OpSpec spec) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  return r.add(std::move(spec));
}

const OpSpec* find_op_spec(Op op) {
  size_t id = size_t(op);
  return id < kMaxOps ? registry().specs[id].load(std::memory_order_acquire) : nullptr;
}

std::optional<Op> op_by_name(std::string_view name) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.by_name.find(std::string(name));
  if (it == r.by_name.end()) return std::nullopt;
  return it->second;
}

std::string op_name(Op op) {
  const OpSpec* s = find_op_spec(op);
  return s ? s->name : "OP#" + std::to_string(int(op));
}

uint64_t op_name_hash(Op op) {
  size_t id = size_t(op);
  if (id < kMaxOps && find_op_spec(op)) return registry().name_hash[id];
  return fnv1a(op_name(op));
}

int num_ops() { return registry().count.load(std::memory_order_acquire); }

}  // namespace kitten
