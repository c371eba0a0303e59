#include "tiles/tile.h"

#include <mutex>

#include "dsl/ops.h"
#include "dsl/symbolic.h"
#include "dsl/verify.h"
#include "tiles/lower_tiles.h"

namespace kitten::tiles {

namespace {

std::string_view layout_name(Layout l) { return l == Layout::Row ? "row" : "col"; }

bool is_comparison(Op o) { return o == Op::CMPLT || o == Op::CMPEQ || o == Op::CMPNE; }

bool narrow16(DType d) { return d == dtypes::bfloat16 || d == dtypes::float16; }

}  // namespace

char split_code(Split s) { return s == Split::GridRows ? 'r' : s == Split::GridCols ? 'c' : '-'; }

// A split into one part is no split: the canonical owner says None there, so that equal
// holdings compare equal (a 2x1 grid's columns, every dimension of a warp's own tile).
Owner canonical(Owner o) {
  if (o.parts(o.row_split) == 1) o.row_split = Split::None;
  if (o.parts(o.col_split) == 1) o.col_split = Split::None;
  return o;
}

std::string TileType::shape() const { return std::to_string(rows) + "x" + std::to_string(cols); }

DType register_tile(DType elem, int rows, int cols, Layout layout, Owner owner) {
  if (!elem.is_scalar() || !(elem.is_float() || elem.is_bool()))
    throw TileError("register tile: the element must be a float or bool scalar, not " +
                    std::string(elem.name()));
  if (owner.rows < 1 || owner.cols < 1)
    throw TileError("register tile: the warp grid must be at least 1x1");
  owner = canonical(owner);
  auto t = std::make_unique<TileType>();
  t->memory = Memory::Register;
  t->elem = elem, t->rows = rows, t->cols = cols, t->layout = layout, t->owner = owner;
  int ur = owner.parts(owner.row_split), uc = owner.parts(owner.col_split);
  bool group = owner.unit == Unit::Warpgroup;
  if (rows <= 0 || cols <= 0 || rows % (16 * ur) || cols % (16 * uc))
    throw TileError("register tile " + t->shape() + " over " + std::to_string(owner.rows) + "x" +
                    std::to_string(owner.cols) + (group ? " warpgroups" : " warps") +
                    ": each unit's part must be whole 16x16 tiles");
  std::string name = "rt<" + std::string(elem.name()) + "," + std::to_string(rows) + "," +
                     std::to_string(cols) + "," + std::string(layout_name(layout)) +
                     (group ? ",g" : ",w") + std::to_string(owner.rows) + "x" +
                     std::to_string(owner.cols);
  if ((owner.row_split != Split::GridRows || owner.col_split != Split::GridCols) &&
      owner.rows * owner.cols > 1)
    name += std::string(":") + split_code(owner.row_split) + split_code(owner.col_split);
  return DType::extension(name + ">", std::move(t));
}

DType shared_tile(DType elem, int rows, int cols, Layout layout, Swizzle swizzle, int stages) {
  if (!elem.is_scalar() || elem.is_bool())
    throw TileError("shared tile: the element must be a number, not " + std::string(elem.name()));
  auto t = std::make_unique<TileType>();
  t->memory = Memory::Shared;
  t->elem = elem, t->rows = rows, t->cols = cols, t->layout = layout, t->swizzle = swizzle;
  t->stages = stages;
  if (rows <= 0 || cols <= 0 || stages < 1)
    throw TileError("shared tile " + t->shape() + " x" + std::to_string(stages) + ": empty");
  int line = layout == Layout::Row ? cols : rows;  // elements along the contiguous dimension
  int width = swizzle_width(swizzle);
  if (width && (line * elem.itemsize()) % width)
    throw TileError("shared tile " + t->shape() + " of " + std::string(elem.name()) + ": a " +
                    std::string(swizzle_name(swizzle)) + " swizzle needs " +
                    (layout == Layout::Row ? "rows" : "columns") + " of whole " +
                    std::to_string(width) + "-byte lines");
  std::string name = "st<" + std::string(elem.name()) + "," + std::to_string(rows) + "," +
                     std::to_string(cols) + "," + std::string(layout_name(layout)) + "," +
                     std::string(swizzle_name(swizzle)) +
                     (stages > 1 ? ",x" + std::to_string(stages) : "") + ">";
  return DType::extension(name, std::move(t));
}

namespace {
DType vector_dtype(DType elem, int length, Owner owner, Vector v) {
  if (!elem.is_scalar() || !(elem.is_float() || elem.is_bool()))
    throw TileError("register vector: the element must be a float or bool scalar");
  auto t = std::make_unique<TileType>();
  t->memory = Memory::Register;
  t->vector = v;
  t->elem = elem;
  t->owner = owner;
  if (v == Vector::PerRow) {
    t->rows = length, t->cols = 1, t->owner.col_split = Split::None;
  } else {
    t->cols = length, t->rows = 1, t->owner.row_split = Split::None;
  }
  t->owner = canonical(t->owner);
  int parts =
      v == Vector::PerRow ? owner.parts(t->owner.row_split) : owner.parts(t->owner.col_split);
  if (length <= 0 || length % (16 * parts))
    throw TileError("register vector of " + std::to_string(length) +
                    ": each warp's part must be whole 16s");
  std::string name = std::string(v == Vector::PerRow ? "rv<" : "cv<") + std::string(elem.name()) +
                     "," + std::to_string(length) + (owner.unit == Unit::Warpgroup ? ",g" : ",w") +
                     std::to_string(owner.rows) + "x" + std::to_string(owner.cols) + ":" +
                     split_code(t->owner.row_split) + split_code(t->owner.col_split) + ">";
  return DType::extension(name, std::move(t));
}
}  // namespace

DType row_vector(DType elem, int rows, Owner owner) {
  return vector_dtype(elem, rows, owner, Vector::PerRow);
}
DType col_vector(DType elem, int cols, Owner owner) {
  return vector_dtype(elem, cols, owner, Vector::PerCol);
}

namespace {
// The vector of a row-layout register tile's rows (or columns), which a reduction makes
// inside each warp: refused where the other dimension is split over warps.
DType vector_of(DType tile, Vector v) {
  const TileType* t = tile_type(tile);
  bool rows = v == Vector::PerRow;
  std::string what =
      std::string(rows ? "a row vector of " : "a column vector of ") + std::string(tile.name());
  if (!t || t->memory != Memory::Register || t->vector != Vector::None || t->layout != Layout::Row)
    throw TileError(what + ": only row-layout register tiles have " +
                    (rows ? "row vectors" : "column vectors"));
  if (!rows && t->owner.unit == Unit::Warpgroup)
    throw TileError(what +
                    ": a warpgroup's columns span its four warps; a reduction stays "
                    "inside a warp");
  if (t->owner.parts(rows ? t->owner.col_split : t->owner.row_split) != 1)
    throw TileError(what +
                    (rows ? ": its rows are spread over several warps (columns split)"
                          : ": its columns are spread over several warps (rows split)") +
                    "; a reduction stays inside a warp, so split the " +
                    (rows ? "rows" : "columns") + " only");
  return vector_dtype(t->elem, rows ? t->rows : t->cols, t->owner, v);
}
}  // namespace

DType row_vector_of(DType tile) { return vector_of(tile, Vector::PerRow); }
DType col_vector_of(DType tile) { return vector_of(tile, Vector::PerCol); }

DType view_dtype(DType elem) {
  auto v = std::make_unique<ViewType>();
  v->elem = elem;
  return DType::extension("gv<" + std::string(elem.name()) + ">", std::move(v));
}

const TileType* tile_type(DType d) {
  return d.is_extension() ? dynamic_cast<const TileType*>(d.extension()) : nullptr;
}
const ViewType* view_type(DType d) {
  return d.is_extension() ? dynamic_cast<const ViewType*>(d.extension()) : nullptr;
}

// ---- checks shared by the builders (which throw) and the ops' specs (which report) -----

namespace {

const TileType* reg_of(const UOp& u) {
  const TileType* t = tile_type(u.dtype());
  return t && t->memory == Memory::Register ? t : nullptr;
}
const TileType* shared_of(const UOp& u) {
  const TileType* t = tile_type(u.dtype());
  return t && t->memory == Memory::Shared ? t : nullptr;
}
std::string name_of(const UOp& u) { return std::string(u.dtype().name()); }

// The owner of an operand of acc's product: M split like acc's rows, N like acc's
// columns, K whole, wherever the operand stores them.
Owner operand_owner(Owner o, char which, const std::string& product) {
  Split m = o.row_split, n = o.col_split;
  if (which == 'a') {
    bool t = product == "AtB";  // K x M
    o.row_split = t ? Split::None : m, o.col_split = t ? m : Split::None;
  } else {
    bool t = product == "ABt";  // N x K
    o.row_split = t ? n : Split::None, o.col_split = t ? Split::None : n;
  }
  return canonical(o);
}

// "" when acc (+)= a*b in `product` (AB, ABt, AtB) is well formed, else what is wrong.
std::string mma_problem(const std::string& product, const UOp& acc, const UOp& a, const UOp& b) {
  const TileType *c = reg_of(acc), *ta = reg_of(a), *tb = reg_of(b);
  if (!c || !ta || !tb) return "acc, a and b must be register tiles";
  if (c->elem != dtypes::float32) return "the accumulator " + name_of(acc) + " must be float32";
  if (!narrow16(ta->elem) || ta->elem != tb->elem)
    return "a (" + name_of(a) + ") and b (" + name_of(b) + ") must both be bfloat16 or float16";
  bool at = product == "AtB", bt = product == "ABt";
  int m = at ? ta->cols : ta->rows, ka = at ? ta->rows : ta->cols;
  int n = bt ? tb->rows : tb->cols, kb = bt ? tb->cols : tb->rows;
  std::string shapes = ": acc " + c->shape() + ", a " + ta->shape() + ", b " + tb->shape();
  if (m != c->rows || n != c->cols || ka != kb) return "the shapes do not match" + shapes;
  Layout want_a = at ? Layout::Col : Layout::Row, want_b = bt ? Layout::Row : Layout::Col;
  if (ta->layout != want_a || tb->layout != want_b)
    return "a must be " + std::string(layout_name(want_a)) + "-layout and b " +
           std::string(layout_name(want_b)) + "-layout, not " + name_of(a) + " and " + name_of(b);
  if (ta->owner != operand_owner(c->owner, 'a', product) ||
      tb->owner != operand_owner(c->owner, 'b', product))
    return "the warps must hold a's rows as acc's and b's columns as acc's, with K whole: acc " +
           name_of(acc) + ", a " + name_of(a) + ", b " + name_of(b);
  return "";
}

std::string same_shape_problem(const UOp& a, const UOp& b) {
  const TileType *x = reg_of(a), *y = reg_of(b);
  if (!x || !y) return "both must be register tiles";
  if (x->rows != y->rows || x->cols != y->cols || x->layout != y->layout || x->owner != y->owner ||
      x->vector != y->vector)
    return name_of(a) + " and " + name_of(b) + " differ in shape, layout or owner";
  return "";
}

// A cast may also relabel a split of one part (the same warps hold the same elements).
std::string cast_problem(const UOp& to, const UOp& from) {
  const TileType *x = reg_of(to), *y = reg_of(from);
  if (!x || !y) return "both must be register tiles";
  auto same = [](const Owner& a, Split sa, const Owner& b, Split sb) {
    return sa == sb || (a.parts(sa) == 1 && b.parts(sb) == 1);
  };
  if (x->rows != y->rows || x->cols != y->cols || x->layout != y->layout ||
      x->vector != y->vector || x->owner.rows != y->owner.rows || x->owner.cols != y->owner.cols ||
      !same(x->owner, x->owner.row_split, y->owner, y->owner.row_split) ||
      !same(x->owner, x->owner.col_split, y->owner, y->owner.col_split))
    return "casting " + name_of(from) + " to " + name_of(to) + " changes which warps hold what";
  return "";
}

NodeRule rule(std::string doc, std::function<std::string(const UOp&)> check) {
  return {std::move(doc), std::move(check)};
}
SourceRule src(std::string name, std::string doc, std::function<bool(const UOp&)> ok) {
  return {std::move(name), std::move(doc), [ok](const UOp&, const UOp& s) { return ok(s); }};
}
SourceRule int_src(std::string name) {
  return src(std::move(name), "an integer scalar",
             [](const UOp& s) { return s.dtype().is_scalar() && s.dtype().is_int(); });
}
SourceRule reg_src(std::string name) {
  return src(std::move(name), "a register tile", [](const UOp& s) { return reg_of(s); });
}
SourceRule shared_stage(std::string name) {
  return src(std::move(name), "a shared tile of one stage", [](const UOp& s) {
    const TileType* t = shared_of(s);
    return t && t->stages == 1;
  });
}
SourceRule view_src(std::string name) {
  return src(std::move(name), "a global view", [](const UOp& s) { return view_type(s.dtype()); });
}
DTypeRule tile_dtype(std::string doc, std::function<bool(const TileType&)> ok) {
  return {std::move(doc), {}, [ok](DType d) {
            const TileType* t = tile_type(d);
            return t && ok(*t);
          }};
}

DTypeRule dtype_of_src0(std::string doc) {
  return {std::move(doc),
          [](std::span<const UOp> s, const Arg&) -> std::optional<DType> {
            if (s.empty()) return std::nullopt;
            return s[0].dtype();
          },
          {}};
}

// "" when `vector` is the row or column vector (as its kind says) of `tile`.
std::string vector_problem(const UOp& tile, DType vector) {
  try {
    DType want = tile_type(vector)->vector == Vector::PerCol ? col_vector_of(tile.dtype())
                                                             : row_vector_of(tile.dtype());
    return want == vector ? ""
                          : name_of(tile) + " has " + std::string(want.name()) + ", not " +
                                std::string(vector.name());
  } catch (const TileError& e) {
    return e.what();
  }
}

}  // namespace

// The TENSOR_MAP arg (slot, swizzle, box innermost first) of a map that fills shared tile t:
// the box is one panel, the swizzle's width (or the whole line) by the tile's lines.
std::vector<int64_t> tma_box_arg(int64_t slot, const TileType& t, int outer) {
  int64_t line = t.layout == Layout::Row ? t.cols : t.rows,
          lines = t.layout == Layout::Row ? t.rows : t.cols;
  int64_t per = t.swizzle == Swizzle::None ? line : swizzle_width(t.swizzle) / t.elem.itemsize();
  std::vector<int64_t> arg = {slot, int64_t(t.swizzle), per, lines};
  arg.resize(size_t(4 + outer), 1);  // one element of each outer dimension
  return arg;
}

namespace {

// The rule of TILE_TMA (5 fixed sources) and TILE_TMA_STORE (4): the map (source 1) fills
// the tile (source 0) and has one dimension per coordinate (row0, col0 and the outer ones).
NodeRule tma_rule(size_t fixed) {
  return rule("the map's element, swizzle and box are the tile's panel, a coordinate each",
              [fixed](const UOp& u) {
                const TileType& t = *shared_of(u.src(0));
                const UOp& m = u.src(1);
                const auto& box = std::get<std::vector<int64_t>>(m.arg());
                int outer = int(u.src().size() - fixed);
                return m.dtype().pointee() == t.elem && box == tma_box_arg(box[0], t, outer)
                           ? ""
                           : "a map of " + std::string(m.dtype().name()) + " (" +
                                 arg_to_string(m.arg(), m.dtype()) + ") for " + name_of(u.src(0)) +
                                 " with " + std::to_string(outer) + " outer coordinates";
              });
}

TileOps register_tile_ops() {
  TileOps ops;
  OpSpec v;
  v.name = "TILE_VIEW";
  v.meaning =
      "A strided 2-D view of a global buffer: rows x cols elements, (r, c) at offset + "
      "r*row_stride + c*col_stride; the arg is the alignment of the buffer's start in bytes.";
  v.sources = {src("buffer", "a pointer into global memory",
                   [](const UOp& s) {
                     return s.dtype().is_pointer() && s.dtype().space() == AddrSpace::Global;
                   }),
               int_src("rows"),
               int_src("cols"),
               int_src("row_stride"),
               int_src("col_stride"),
               int_src("offset")};
  v.dtype = {"gv<the buffer's element>",
             [](std::span<const UOp> s, const Arg&) -> std::optional<DType> {
               if (s.empty() || !s[0].dtype().is_pointer()) return std::nullopt;
               return view_dtype(s[0].dtype().pointee());
             },
             {}};
  v.arg = ArgKind::Int;
  v.rules = {
      rule("the alignment is a power of two of at least the element's size", [](const UOp& u) {
        int64_t a = u.int_arg(), e = u.src(0).dtype().pointee().itemsize();
        return a >= e && (a & (a - 1)) == 0 ? "" : "alignment " + std::to_string(a);
      })};
  v.flags = kOpMemory;
  ops.view = register_op(v);

  OpSpec al;
  al.name = "TILE_ALLOC";
  al.meaning =
      "A tile's storage: a shared tile (or ring) in the block's shared memory, or a register "
      "tile carried across loop iterations; the arg is its slot.";
  al.dtype = tile_dtype("a register or shared tile", [](const TileType&) { return true; });
  al.arg = ArgKind::Int;
  al.flags = kOpDefinition | kOpMemory;
  ops.alloc = register_op(al);

  OpSpec sl;
  sl.name = "TILE_SLOT";
  sl.meaning = "Stage `stage` (0 <= stage < stages) of a ring of shared tiles.";
  sl.sources = {src("ring", "a ring of shared tiles",
                    [](const UOp& s) {
                      const TileType* t = shared_of(s);
                      return t && t->stages > 1;
                    }),
                int_src("stage")};
  sl.dtype = {"the ring's tile with one stage",
              [](std::span<const UOp> s, const Arg&) -> std::optional<DType> {
                const TileType* t = s.empty() ? nullptr : shared_of(s[0]);
                if (!t) return std::nullopt;
                return shared_tile(t->elem, t->rows, t->cols, t->layout, t->swizzle, 1);
              },
              {}};
  sl.flags = kOpMemory;
  ops.slot = register_op(sl);

  OpSpec fl;
  fl.name = "TILE_FILL";
  fl.meaning = "A register tile with every element the arg's value.";
  fl.dtype =
      tile_dtype("a register tile", [](const TileType& t) { return t.memory == Memory::Register; });
  fl.arg = ArgKind::Const;
  ops.fill = register_op(fl);

  OpSpec cp;
  cp.name = "TILE_COPY";
  cp.meaning =
      "Starts copying the window of a view at (row0, col0) into a shared tile (zeros where "
      "the window leaves the view); the tile is ready after a WAIT_GROUP on the token and a "
      "BARRIER.";
  cp.sources = {shared_stage("dst"), view_src("src"), int_src("row0"), int_src("col0")};
  cp.dtype = fixed_dtype(dtypes::token);
  cp.rules = {rule("dst and src hold the same element", [](const UOp& u) {
    return shared_of(u.src(0))->elem == view_type(u.src(1).dtype())->elem
               ? ""
               : name_of(u.src(0)) + " from " + name_of(u.src(1));
  })};
  cp.flags = kOpMemory | kOpCooperative;
  ops.copy = register_op(cp);

  OpSpec ld;
  ld.name = "TILE_LOAD";
  ld.meaning =
      "Reads a shared tile into a register tile of its shape and element; a warp's tile "
      "(after tile_warps) reads the window at the origin (row, col) it is given.";
  ld.sources = {shared_stage("src")};
  ld.rest = int_src("origin");
  ld.rest_min = 0;
  ld.rest_max = 2;
  ld.dtype =
      tile_dtype("a register tile", [](const TileType& t) { return t.memory == Memory::Register; });
  ld.rules = {rule("the shapes and elements agree (a window with an origin)", [](const UOp& u) {
    const TileType *s = shared_of(u.src(0)), *r = reg_of(u);
    bool window = u.src().size() == 3;
    bool ok = u.src().size() != 2 && s->elem == r->elem &&
              (window ? r->rows <= s->rows && r->cols <= s->cols
                      : s->rows == r->rows && s->cols == r->cols);
    return ok ? "" : "loading " + name_of(u.src(0)) + " as " + name_of(u);
  })};
  ld.flags = kOpMemory | kOpCooperative;
  ops.load = register_op(ld);

  OpSpec st;
  st.name = "TILE_STORE";
  st.meaning =
      "Writes a register tile to a global view at (row0, col0) (nothing where it leaves the "
      "view), to a shared tile, or into a carried register tile.";
  st.sources = {src("dst", "a view, a shared tile or a register tile",
                    [](const UOp& s) { return view_type(s.dtype()) || tile_type(s.dtype()); }),
                reg_src("value")};
  st.rest = int_src("origin");
  st.rest_min = 0;
  st.rest_max = 4;
  st.dtype = fixed_dtype(dtypes::void_);
  st.rules = {
      rule("a view takes (row0, col0) and the value's element; a tile the value's type; "
           "a warp's tile also its origin in the block's tile",
           [](const UOp& u) {
             const UOp &d = u.src(0), &v = u.src(1);
             size_t n = u.src().size();
             if (const ViewType* vt = view_type(d.dtype()))
               return (n == 4 || n == 6) && vt->elem == reg_of(v)->elem
                          ? ""
                          : "storing " + name_of(v) + " into " + name_of(d);
             const TileType *t = tile_type(d.dtype()), *r = reg_of(v);
             bool ok = t->memory == Memory::Register
                           ? n == 2 && d.dtype() == v.dtype()
                           : t->stages == 1 && t->elem == r->elem &&
                                 (n == 4 ? r->rows <= t->rows && r->cols <= t->cols
                                         : n == 2 && t->rows == r->rows && t->cols == r->cols);
             return ok ? "" : "storing " + name_of(v) + " into " + name_of(d);
           })};
  st.flags = kOpEffect | kOpMemory;
  ops.store = register_op(st);

  OpSpec mm;
  mm.name = "TILE_MMA";
  mm.meaning =
      "acc + a*b (AB), acc + a*b^T (ABt) or acc + a^T*b (AtB), the arg; f32 accumulation of "
      "bf16 or f16 register tiles.";
  mm.sources = {reg_src("acc"), reg_src("a"), reg_src("b")};
  mm.arg = ArgKind::Name;
  mm.dtype = dtype_of_src0("the accumulator's");
  mm.rules = {rule("the product is well formed", [](const UOp& u) {
    const std::string& p = u.name_arg();
    if (p != "AB" && p != "ABt" && p != "AtB") return "the product is AB, ABt or AtB, not " + p;
    return mma_problem(p, u.src(0), u.src(1), u.src(2));
  })};
  mm.flags = kOpCooperative;
  ops.mma = register_op(mm);

  OpSpec mp;
  mp.name = "TILE_MAP";
  mp.meaning =
      "An ALU op (the arg names it) element by element over register tiles of one shape and "
      "owner (comparisons give bool tiles; WHERE takes a bool tile first), or CAST to the "
      "result's element.";
  mp.sources = {reg_src("a")};
  mp.rest = src("b", "a register tile, or a scalar of the values' element",
                [](const UOp& s) { return reg_of(s) || s.dtype().is_scalar(); });
  mp.rest_min = 0;
  mp.rest_max = 2;
  mp.arg = ArgKind::Name;
  mp.dtype =
      tile_dtype("a register tile", [](const TileType& t) { return t.memory == Memory::Register; });
  mp.rules = {rule("the op takes the sources, which agree in shape", [](const UOp& u) {
    const std::string& n = u.name_arg();
    std::optional<Op> op = op_by_name(n);
    if (n != "CAST" && (!op || !is_alu(*op) || find_op_spec(*op)->arity != int(u.src().size())))
      return "'" + n + "' is not CAST or an ALU op of " + std::to_string(u.src().size()) +
             " sources";
    if (n == "CAST") return cast_problem(u, u.src(0));
    bool where = *op == Op::WHERE;
    DType value = where ? reg_of(u)->elem : reg_of(u.src(0))->elem;
    DType result = is_comparison(*op) ? dtypes::bool_ : value;
    if (reg_of(u)->elem != result)
      return "the result's element is " + std::string(reg_of(u)->elem.name()) + ", not " +
             std::string(result.name());
    for (size_t i = 0; i < u.src().size(); ++i) {
      const UOp& s = u.src(i);
      DType want = where && i == 0 ? dtypes::bool_ : value;
      if (std::string p = reg_of(s) ? same_shape_problem(u, s) : ""; !p.empty()) return p;
      DType got = reg_of(s) ? reg_of(s)->elem : s.dtype();
      if (got != want)
        return "source " + std::to_string(i) + " holds " + std::string(got.name()) + ", not " +
               std::string(want.name());
    }
    return std::string();
  })};
  ops.map = register_op(mp);

  OpSpec rd;
  rd.name = "TILE_REDUCE";
  rd.meaning =
      "The sum (ADD) or maximum (MAX), the arg, of each row (the result a row vector) or "
      "each column (a column vector) of a float32 register tile.";
  rd.sources = {reg_src("t")};
  rd.arg = ArgKind::Name;
  rd.dtype =
      tile_dtype("a register vector", [](const TileType& t) { return t.vector != Vector::None; });
  rd.rules = {rule("the op and the vector fit the tile", [](const UOp& u) {
    const std::string& n = u.name_arg();
    if (n != "ADD" && n != "MAX") return "the reduction is ADD or MAX, not " + n;
    if (reg_of(u.src(0))->elem != dtypes::float32)
      return "reductions take float32 tiles, not " + name_of(u.src(0));
    return vector_problem(u.src(0), u.dtype());
  })};
  ops.reduce = register_op(rd);

  OpSpec bc;
  bc.name = "TILE_BCAST";
  bc.meaning =
      "t[r][c] op v[r] with a row vector, or t[r][c] op v[c] with a column vector; the arg "
      "names the ALU op (ADD, SUB, MUL, FDIV, MAX, MIN).";
  bc.sources = {reg_src("t"), reg_src("v")};
  bc.arg = ArgKind::Name;
  bc.dtype = dtype_of_src0("the tile's");
  bc.rules = {rule("the vector is the tile's and the op is binary arithmetic", [](const UOp& u) {
    const std::string& n = u.name_arg();
    if (n != "ADD" && n != "SUB" && n != "MUL" && n != "FDIV" && n != "MAX" && n != "MIN")
      return "the broadcast op is ADD, SUB, MUL, FDIV, MAX or MIN, not " + n;
    return vector_problem(u.src(0), u.src(1).dtype());
  })};
  ops.bcast = register_op(bc);

  OpSpec mk;
  mk.name = "TILE_MASK";
  mk.meaning =
      "t[r][c] where keep is true, else fill: keep is a bool expression of the variables "
      "tile_row and tile_col (the element's place in the tile) and any other values.";
  mk.sources = {
      reg_src("t"),
      src("keep", "a bool scalar", [](const UOp& s) { return s.dtype() == dtypes::bool_; }),
      src("fill", "a scalar", [](const UOp& s) { return s.dtype().is_scalar(); })};
  mk.rest = int_src("origin");
  mk.rest_min = 0;
  mk.rest_max = 2;
  mk.dtype = dtype_of_src0("the tile's");
  mk.rules = {rule("fill is of the tile's element, the tile not a vector", [](const UOp& u) {
    const TileType& t = *reg_of(u.src(0));
    return u.src(2).dtype() == t.elem && t.vector == Vector::None && u.src().size() != 4
               ? ""
               : "masking " + name_of(u.src(0));
  })};
  ops.mask = register_op(mk);

  OpSpec tm;
  tm.name = "TILE_TMA";
  tm.meaning =
      "Starts TMA loads of the window at (row0, col0) of a tensor map's matrix into a shared "
      "tile, one per panel of the swizzle's width (zeros outside the matrix), completing a "
      "transaction of the mbarrier.";
  tm.sources = {shared_stage("dst"),
                src("map", "a TENSOR_MAP", [](const UOp& s) { return s.op() == Op::TENSOR_MAP; }),
                src("mbarrier", "an INDEX into shared memory of int64",
                    [](const UOp& s) {
                      return s.op() == Op::INDEX && s.dtype().space() == AddrSpace::Local &&
                             s.dtype().pointee() == dtypes::int64;
                    }),
                int_src("row0"), int_src("col0")};
  tm.rest = int_src("outer");  // coordinates of the map's outer dimensions (a head, a batch)
  tm.rest_min = 0;
  tm.rest_max = 3;
  tm.dtype = fixed_dtype(dtypes::void_);
  tm.rules = {tma_rule(5)};
  tm.flags = kOpEffect | kOpMemory | kOpCooperative;
  ops.tma = register_op(tm);

  OpSpec ts = tm;  // the load's spec without the mbarrier
  ts.name = "TILE_TMA_STORE";
  ts.meaning =
      "Starts TMA stores of a shared tile to the window at (row0, col0) of a tensor map's "
      "matrix (nothing past its end), one per panel of the swizzle's width, closed into one "
      "bulk group of the issuing thread.";
  ts.sources.erase(ts.sources.begin() + 2);
  ts.sources[0].name = "src";
  ts.rules = {tma_rule(4)};
  ops.tma_store = register_op(ts);

  OpSpec sa;
  sa.name = "TILE_START";
  sa.meaning =
      "Issues a warpgroup's product (a TILE_MMA lowered to wgmma) at this point of the "
      "program; its result is waited for where it is used.";
  Op mma_op = ops.mma;
  sa.sources = {src("product", "a TILE_MMA of warpgroup tiles", [mma_op](const UOp& s) {
    const TileType* t = reg_of(s);
    return s.op() == mma_op && t && t->owner.unit == Unit::Warpgroup;
  })};
  sa.dtype = fixed_dtype(dtypes::void_);
  sa.flags = kOpEffect | kOpCooperative;
  ops.start = register_op(sa);

  OpSpec aw;
  aw.name = "TILE_AWAIT";
  aw.meaning =
      "A warpgroup's started product once at most N (the arg) products started after it are "
      "still in flight, after the given effects.";
  aw.sources = {sa.sources[0]};
  aw.rest = src("deps", "an effect", [](const UOp& s) { return s.dtype() == dtypes::void_; });
  aw.rest_min = 0;
  aw.rest_max = 1 << 20;
  aw.arg = ArgKind::Int;
  aw.dtype = dtype_of_src0("the product's");
  aw.rules = {rule("N is 0 to 7", [](const UOp& u) {
    return u.int_arg() >= 0 && u.int_arg() <= 7 ? "" : "N " + std::to_string(u.int_arg());
  })};
  aw.flags = kOpCooperative;
  ops.await = register_op(aw);
  register_tile_passes();
  return ops;
}

}  // namespace

bool hopper_target(const Target& t) {
  return t.has(kFeatureWgmma) && t.has(kFeatureTma) && t.has(kFeatureMbarrier) &&
         t.has(kFeatureSetmaxnreg);
}

const TileOps& tile_ops() {
  static const TileOps ops = register_tile_ops();
  return ops;
}

// ---- builders ------------------------------------------------------------------------

namespace {

UOp make(Op op, DType dtype, std::initializer_list<UOp> src, Arg arg = {}) {
  return UOp::make(op, dtype, src, std::move(arg));
}

void require(const std::string& what, const std::string& problem) {
  if (!problem.empty()) throw TileError(what + ": " + problem);
}

// The tile of a's shape and owner holding `elem`.
DType retyped(const TileType& x, DType elem) {
  return x.vector == Vector::PerRow   ? row_vector(elem, x.rows, x.owner)
         : x.vector == Vector::PerCol ? col_vector(elem, x.cols, x.owner)
                                      : register_tile(elem, x.rows, x.cols, x.layout, x.owner);
}

DType map_result(Op op, const Tile& a) {
  return is_comparison(op) ? retyped(a.type(), dtypes::bool_) : a.node.dtype();
}

}  // namespace

Tile fill(DType tile, double value) {
  const TileType* t = tile_type(tile);
  if (!t || t->memory != Memory::Register)
    throw TileError("fill: " + std::string(tile.name()) + " is not a register tile");
  return {make(tile_ops().fill, tile, {}, const_bits_of_double(value))};
}

Tile load(const Tile& shared, DType reg_tile) {
  return {make(tile_ops().load, reg_tile, {shared.node})};
}

Tile cast(const Tile& t, DType elem) {
  return {make(tile_ops().map, retyped(t.type(), elem), {t.node}, std::string("CAST"))};
}

Tile map(Op op, const Tile& a) {
  return {make(tile_ops().map, a.node.dtype(), {a.node}, op_name(op))};
}

Tile map(Op op, const Tile& a, const UOp& scalar) {
  if (scalar.dtype() != a.type().elem)
    throw TileError("map " + op_name(op) + ": the scalar is " + std::string(scalar.dtype().name()) +
                    ", the tile's element " + std::string(a.type().elem.name()));
  return {make(tile_ops().map, map_result(op, a), {a.node, scalar}, op_name(op))};
}

Tile where(const Tile& cond, const Tile& a, const UOp& b) {
  if (cond.type().elem != dtypes::bool_)
    throw TileError("where: the condition " + name_of(cond.node) + " is not a bool tile");
  require("where", same_shape_problem(cond.node, a.node));
  if (b.dtype() != a.type().elem)
    throw TileError("where: the scalar is " + std::string(b.dtype().name()) + ", the tile's " +
                    std::string(a.type().elem.name()));
  return {make(tile_ops().map, a.node.dtype(), {cond.node, a.node, b}, op_name(Op::WHERE))};
}

Tile exp2(const Tile& a) {
  return map(a.type().elem == dtypes::float32 ? Op::EXP2_FTZ : Op::EXP2, a);
}
Tile log2(const Tile& a) { return map(Op::LOG2, a); }
Tile exp(const Tile& a) { return exp2(map(Op::MUL, a, const_(a.type().elem, 1.4426950408889634))); }
Tile log(const Tile& a) { return map(Op::MUL, log2(a), const_(a.type().elem, 0.6931471805599453)); }

namespace {
Tile reduce(const char* op, const Tile& t, bool rows) {
  if (t.type().elem != dtypes::float32)
    throw TileError(std::string(rows ? "row_" : "col_") +
                    (std::string(op) == "ADD" ? "sum" : "max") +
                    ": reductions take float32 tiles, not " + std::string(t.node.dtype().name()));
  DType v = rows ? row_vector_of(t.node.dtype()) : col_vector_of(t.node.dtype());
  return {make(tile_ops().reduce, v, {t.node}, std::string(op))};
}
Tile broadcast(Op op, const Tile& t, const Tile& v, bool rows) {
  DType want = rows ? row_vector_of(t.node.dtype()) : col_vector_of(t.node.dtype());
  if (v.node.dtype() != want)
    throw TileError(std::string(rows ? "row" : "column") + " broadcast " + op_name(op) + ": " +
                    std::string(t.node.dtype().name()) + " takes " + std::string(want.name()) +
                    ", not " + std::string(v.node.dtype().name()));
  return {UOp::make(tile_ops().bcast, {t.node, v.node}, op_name(op))};
}
}  // namespace

Tile row_max(const Tile& t) { return reduce("MAX", t, true); }
Tile row_sum(const Tile& t) { return reduce("ADD", t, true); }
Tile col_max(const Tile& t) { return reduce("MAX", t, false); }
Tile col_sum(const Tile& t) { return reduce("ADD", t, false); }
Tile row_broadcast(Op op, const Tile& t, const Tile& v) { return broadcast(op, t, v, true); }
Tile col_broadcast(Op op, const Tile& t, const Tile& v) { return broadcast(op, t, v, false); }

UOp tile_row_var() { return define_var("tile_row", 0, 1 << 20); }
UOp tile_col_var() { return define_var("tile_col", 0, 1 << 20); }

Tile mask(const Tile& t, const std::function<UOp(const UOp&, const UOp&)>& keep, double fill) {
  UOp k = keep(tile_row_var(), tile_col_var());
  if (!k || k.dtype() != dtypes::bool_) throw TileError("mask: keep must be a bool expression");
  return {UOp::make(tile_ops().mask, {t.node, k, const_(t.type().elem, fill)})};
}

Tile to_operand(const Tile& acc, DType elem) {
  const TileType& a = acc.type();
  Owner o = a.owner;
  o.col_split = Split::None;
  if (a.owner.parts(a.owner.col_split) != 1)
    throw TileError("to_operand: " + std::string(acc.node.dtype().name()) +
                    " has its columns split over warps; an A operand holds K whole in each warp");
  return {make(tile_ops().map, register_tile(elem, a.rows, a.cols, a.layout, o), {acc.node},
               std::string("CAST"))};
}

Tile map(Op op, const Tile& a, const Tile& b) {
  require("map " + op_name(op), same_shape_problem(a.node, b.node));
  if (a.type().elem != b.type().elem)
    throw TileError("map " + op_name(op) + ": " + name_of(a.node) + " and " + name_of(b.node) +
                    " hold different elements");
  return {make(tile_ops().map, map_result(op, a), {a.node, b.node}, op_name(op))};
}

namespace {
Tile mma(const char* product, const Tile& acc, const Tile& a, const Tile& b) {
  require(std::string("mma_") + product, mma_problem(product, acc.node, a.node, b.node));
  return {make(tile_ops().mma, acc.node.dtype(), {acc.node, a.node, b.node}, std::string(product))};
}
}  // namespace

Tile mma_AB(const Tile& acc, const Tile& a, const Tile& b) { return mma("AB", acc, a, b); }
Tile mma_ABt(const Tile& acc, const Tile& a, const Tile& b) { return mma("ABt", acc, a, b); }
Tile mma_AtB(const Tile& acc, const Tile& a, const Tile& b) { return mma("AtB", acc, a, b); }

DType operand_tile(const Tile& acc, const Tile& shared, char which, const char* product) {
  const TileType &c = acc.type(), &s = shared.type();
  std::string p = product;
  Owner o = operand_owner(c.owner, which, p);
  Layout l = which == 'a' ? (p == "AtB" ? Layout::Col : Layout::Row)
                          : (p == "ABt" ? Layout::Row : Layout::Col);
  return register_tile(s.elem, s.rows, s.cols, l, o);
}

// ---- carried tiles and rings -----------------------------------------------------------

Tile Carried::get() const {
  State& s = *state_;
  size_t depth = s.kernel->frames_.size() - 1;
  if (s.frame != depth) {  // first read in a loop entered since: after the init, per iteration
    // (a value assigned before the loop is read back from the tile's storage)
    s.outer = s.assigned ? UOp::make(Op::AFTER, {s.alloc, s.stored}) : s.value;
    s.value = UOp::make(Op::AFTER, {s.outer, s.kernel->frames_.back().range});
    s.frame = depth;
    s.assigned = false;
  }
  return {s.value};
}

Carried& Carried::operator=(const Tile& v) {
  State& s = *state_;
  if (v.node.dtype() != s.alloc.dtype())
    throw TileError("carried " + std::string(s.alloc.dtype().name()) + " assigned " +
                    std::string(v.node.dtype().name()));
  Tile place = get();  // orders the update inside the current loop
  UOp at = place.node;
  if (s.assigned) throw TileError("a carried tile is assigned once per loop iteration");
  s.stored = make(tile_ops().store, dtypes::void_, {at, v.node});
  s.kernel->record(s.stored);
  s.value = v.node;
  s.assigned = true;
  return *this;
}

Tile Ring::operator[](const UOp& stage) const {
  return {UOp::make(tile_ops().slot, {state_->place, stage})};
}

// ---- the kernel builder ----------------------------------------------------------------

Kernel::Kernel(std::string name, int warp_rows, int warp_cols)
    : Kernel(std::move(name), Unit::Warp, warp_rows, warp_cols) {}

Kernel::Kernel(std::string name, Unit unit, int rows, int cols, int producers)
    : name_(std::move(name)),
      unit_(unit),
      producers_(producers),
      warp_rows_(rows),
      warp_cols_(cols) {
  tile_ops();
  if (rows < 1 || cols < 1 || producers < 0 || producers > 1 || (unit == Unit::Warp && producers) ||
      threads() > 1024)
    throw TileError("kernel " + name_ + ": " + std::to_string(rows) + "x" + std::to_string(cols) +
                    (unit == Unit::Warp ? " warps" : " warpgroups") + " and " +
                    std::to_string(producers) +
                    " producers (1 to 32 warps per block; one producer warpgroup at most, after "
                    "the consumer warpgroups)");
  frames_.push_back({});
}

UOp Kernel::thread_index() const { return special(SpecialKind::ThreadIdx, 0, threads()); }

UOp Kernel::block_index(int dim, const UOp& extent) {
  return UOp::make(Op::SPECIAL, dtypes::int32, {extent}, SpecialArg{SpecialKind::BlockIdx, dim});
}

View Kernel::view(int64_t slot, DType elem, UOp rows, UOp cols, UOp row_stride, UOp col_stride,
                  UOp offset, int64_t base_align) {
  if (!offset) offset = const_int(dtypes::int32, 0);
  return {UOp::make(tile_ops().view,
                    {param(slot, elem.ptr()), rows, cols, row_stride, col_stride, offset},
                    base_align)};
}

DType Kernel::reg(DType elem, int rows, int cols, Layout layout) const {
  return register_tile(elem, rows, cols, layout, owner());
}

Carried Kernel::carried(const Tile& init) {
  auto s = std::make_shared<Carried::State>();
  s->kernel = this;
  s->alloc = make(tile_ops().alloc, init.node.dtype(), {}, next_reg_++);
  s->init = make(tile_ops().store, dtypes::void_, {s->alloc, init.node});
  record(s->init);
  s->value = UOp::make(Op::AFTER, {s->alloc, s->init});
  s->frame = frames_.size() - 1;
  carried_.push_back(s);
  Carried c;
  c.state_ = s;
  return c;
}

Ring Kernel::ring(DType elem, int rows, int cols, Swizzle swizzle, int stages, Layout layout) {
  auto s = std::make_shared<Ring::State>();
  s->alloc = make(tile_ops().alloc, shared_tile(elem, rows, cols, layout, swizzle, stages), {},
                  next_shared_++);
  s->place = s->alloc;
  rings_.push_back(s);
  Ring r;
  r.state_ = s;
  return r;
}

Tile Kernel::shared(DType elem, int rows, int cols, Swizzle swizzle, Layout layout) {
  return {
      make(tile_ops().alloc, shared_tile(elem, rows, cols, layout, swizzle), {}, next_shared_++)};
}

Tile Kernel::landed(const Tile& shared, const std::vector<UOp>& copies) {
  UOp group = UOp::make(Op::ASYNC_COMMIT, dtypes::token, copies);
  UOp wait = UOp::make(Op::WAIT_GROUP, dtypes::void_, {group}, int64_t(0));
  return {UOp::make(Op::AFTER, {shared.node, UOp::make(Op::BARRIER, dtypes::void_, {wait})})};
}

void Kernel::loop(const UOp& n, const std::function<void(const UOp& i)>& body) {
  // The extent simplified now: simplifying an index that reads i later must not remake it.
  UOp i = range(simplify(n), next_axis_++, AxisKind::Loop);
  std::vector<UOp> places;
  for (auto& r : rings_) places.push_back(r->place);
  frames_.push_back({i, {}});
  body(i);
  Frame f = std::move(frames_.back());
  frames_.pop_back();
  for (size_t k = 0; k < places.size(); ++k) rings_[k]->place = places[k];
  if (f.effects.empty()) return;
  UOp all = f.effects.size() == 1 ? f.effects[0] : UOp::make(Op::GROUP, dtypes::void_, f.effects);
  UOp done = end(all, {i});
  record(done);
  close_frame(done);
}

void Kernel::close_frame(const UOp& done) {
  size_t depth = frames_.size() - 1;
  for (auto& c : carried_)  // reads after the loop see its last update
    if (c->frame > depth) {
      c->value = c->assigned ? UOp::make(Op::AFTER, {c->alloc, done}) : c->outer;
      c->frame = depth;
      c->assigned = false;
    }
}

void Kernel::pipeline(const UOp& n, int stages, const Load& load, const Body& body) {
  pipeline(std::vector<Part>{{n, body}}, stages, load);
}

void Kernel::pipeline(const std::vector<Part>& parts, int stages, const Load& load) {
  if (stages < 2) throw TileError("pipeline: at least 2 stages, not " + std::to_string(stages));
  for (auto& r : rings_)
    if (tile_type(r->alloc.dtype())->stages != stages)
      throw TileError("pipeline of " + std::to_string(stages) + " stages over the ring " +
                      std::string(r->alloc.dtype().name()));
  if (parts.empty()) throw TileError("pipeline: no parts");
  DType it = parts[0].n.dtype();
  // The prologue: stages 0 .. stages-2 in flight before the loop (a copy past the end
  // reads nothing: its window leaves the view and it zero-fills).
  // Each stage's copies are one commit group (cp.async.commit_group): a wait counts stages.
  auto stage = [&](const UOp& i, const UOp& slot) {
    std::vector<UOp> copies = load(i, slot);
    if (copies.empty()) throw TileError("pipeline: the load issues no copies");
    return UOp::make(Op::ASYNC_COMMIT, dtypes::token, copies);
  };
  // A commit takes every copy issued before it, so a stage's copies come after the previous
  // stage's commit: the rings are placed after it.
  std::vector<UOp> prologue, places;
  for (auto& r : rings_) places.push_back(r->place);
  for (int s = 0; s + 1 < stages; ++s) {
    prologue.push_back(stage(const_int(it, s), const_int(it, s)));
    for (auto& r : rings_) r->place = UOp::make(Op::AFTER, {r->alloc, prologue.back()});
  }
  for (size_t k = 0; k < rings_.size(); ++k) rings_[k]->place = places[k];
  UOp before = const_int(it, 0);  // iterations of the parts already run
  UOp previous;                   // the END of the part before
  for (const Part& part : parts) {
    loop(part.n, [&](const UOp& local) {
      // Iteration i: at most stages-2 stages still in flight, so stage i has landed; the
      // barrier publishes it and ends every read of the slot the next copy reuses.
      UOp i = before + local;
      std::vector<UOp> after = prologue;  // and, in a later part, the loop before
      if (previous) after.push_back(previous);
      UOp landed = UOp::make(Op::WAIT_GROUP, dtypes::void_, after, int64_t(stages - 2));
      UOp bar = UOp::make(Op::BARRIER, dtypes::void_, {landed});
      record(landed);
      std::vector<UOp> saved;
      for (auto& r : rings_) {
        saved.push_back(r->place);
        r->place = previous ? UOp::make(Op::AFTER, {r->alloc, previous, bar})
                            : UOp::make(Op::AFTER, {r->alloc, bar});
      }
      UOp ahead = i + const_int(it, stages - 1);
      record(stage(ahead, ahead % const_int(it, stages)));
      part.body(i, i % const_int(it, stages));
      for (size_t k = 0; k < rings_.size(); ++k) rings_[k]->place = saved[k];
    });
    before = before + part.n;
    previous = frames_.back().effects.back();  // the loop's END (its body has effects)
  }
}

UOp Kernel::copy(const Tile& dst, const View& src, const UOp& row0, const UOp& col0) {
  return make(tile_ops().copy, dtypes::token, {dst.node, src.node, row0, col0});
}

void Kernel::store(const View& dst, const UOp& row0, const UOp& col0, const Tile& value) {
  const ViewType* v = view_type(dst.node.dtype());
  if (v->elem != value.type().elem)
    throw TileError("store: " + std::string(value.node.dtype().name()) + " into a view of " +
                    std::string(v->elem.name()) + " (cast it first)");
  record(make(tile_ops().store, dtypes::void_, {dst.node, value.node, row0, col0}));
}

std::vector<UOp> Kernel::recorded() const {
  std::vector<UOp> out;
  // In a block, its IF: a verb there is that block's (equal verbs of two blocks would
  // otherwise be one node).
  if (const UOp& r = frames_.back().range; r && r.op() == Op::IF) out.push_back(r);
  for (const UOp& e : frames_.back().effects)
    if (e.dtype() == dtypes::void_) out.push_back(e);
  return out;
}

UOp Kernel::ordered(const UOp& verb) {
  record(verb);
  for (auto& r : rings_) r->place = UOp::make(Op::AFTER, {r->alloc, verb});
  return verb;
}

namespace {
// Sources then deps: a core op's fixed sources followed by effects it comes after.
std::vector<UOp> with_deps(std::vector<UOp> src, const std::vector<UOp>& deps) {
  src.insert(src.end(), deps.begin(), deps.end());
  return src;
}
// x after the deps (x itself when there are none).
UOp after_all(const UOp& x, const std::vector<UOp>& deps) {
  return deps.empty() ? x : UOp::make(Op::AFTER, with_deps({x}, deps));
}
}  // namespace

Semaphores Kernel::semaphores(int stages, int arrivals) {
  if (stages < 1 || arrivals < 1)
    throw TileError("semaphores: " + std::to_string(stages) + " stages of " +
                    std::to_string(arrivals) + " arrivals");
  Semaphores sem;
  sem.stages = stages;
  sem.buf = define_local(dtypes::int64, stages, next_shared_++, 8);
  // After what came before (two semaphores' IFs would otherwise be one node).
  UOp first = UOp::make(
      Op::IF, with_deps({alu(Op::CMPEQ, thread_index(), const_int(dtypes::int32, 0))}, recorded()));
  std::vector<UOp> inits;
  for (int s = 0; s < stages; ++s)
    inits.push_back(UOp::make(Op::MBARRIER_INIT, dtypes::void_,
                              {index(after(sem.buf, {first}), const_int(dtypes::int32, s)),
                               const_int(dtypes::int32, arrivals)}));
  UOp fenced = UOp::make(Op::FENCE, dtypes::void_, inits, std::string("mbarrier_init"));
  sem.ready = UOp::make(Op::BARRIER, dtypes::void_, {UOp::make(Op::ENDIF, {first, fenced})});
  record(sem.ready);
  return sem;
}

namespace {
UOp semaphore_at(const Semaphores& sem, const UOp& stage, const std::vector<UOp>& deps) {
  std::vector<UOp> d = {sem.ready};
  d.insert(d.end(), deps.begin(), deps.end());
  return index(UOp::make(Op::AFTER, with_deps({sem.buf}, d)), stage);
}
}  // namespace

UOp Kernel::wait(const Semaphores& sem, const UOp& stage, const UOp& parity) {
  std::vector<UOp> deps = recorded();
  return ordered(UOp::make(Op::MBARRIER_WAIT, dtypes::void_,
                           with_deps({semaphore_at(sem, stage, deps), parity}, deps)));
}

void Kernel::arrive(const Semaphores& sem, const UOp& stage, int64_t tx_bytes) {
  std::vector<UOp> deps = recorded();
  ordered(UOp::make(
      Op::MBARRIER_ARRIVE, dtypes::void_,
      with_deps({semaphore_at(sem, stage, deps), const_int(dtypes::int32, tx_bytes)}, deps)));
}

TmaMap Kernel::tensor_map(int64_t slot, DType tile, int outer) {
  const TileType* t = tile_type(tile);
  if (!t || t->memory != Memory::Shared || t->stages != 1)
    throw TileError("tensor_map: " + std::string(tile.name()) +
                    " is not a shared tile of one stage");
  if (outer < 0 || outer > 3)
    throw TileError("tensor_map: 0 to 3 outer dimensions, not " + std::to_string(outer));
  return {UOp::make(Op::TENSOR_MAP, t->elem.ptr(), {}, tma_box_arg(slot, *t, outer)), tile};
}

UOp Kernel::tma_load(const Tile& dst, const TmaMap& src, const UOp& row0, const UOp& col0,
                     const Semaphores& sem, const UOp& stage, const std::vector<UOp>& outer) {
  if (dst.node.dtype() != src.tile)
    throw TileError("tma_load: a map for " + std::string(src.tile.name()) + " fills " +
                    std::string(dst.node.dtype().name()));
  return ordered(UOp::make(
      tile_ops().tma, dtypes::void_,
      with_deps({dst.node, src.node, semaphore_at(sem, stage, recorded()), row0, col0}, outer)));
}

void Kernel::store(const Tile& dst, const Tile& value) {
  if (dst.type().memory != Memory::Shared)
    throw TileError("store: " + std::string(dst.node.dtype().name()) + " is not a shared tile");
  ordered(make(tile_ops().store, dtypes::void_, {after_all(dst.node, recorded()), value.node}));
}

void Kernel::fence_async() {
  ordered(UOp::make(Op::FENCE, dtypes::void_, recorded(), std::string("proxy_async")));
}

void Kernel::sync(int id, int threads) {
  ordered(
      UOp::make(Op::NAMED_BARRIER, dtypes::void_, recorded(), std::vector<int64_t>{id, threads}));
}

void Kernel::signal(int id, int threads) {
  ordered(UOp::make(Op::NAMED_BARRIER, dtypes::void_, recorded(),
                    std::vector<int64_t>{id, threads, 1}));
}

void Kernel::tma_store(const TmaMap& dst, const Tile& src, const UOp& row0, const UOp& col0,
                       const std::vector<UOp>& outer) {
  if (src.node.dtype() != dst.tile)
    throw TileError("tma_store: a map for " + std::string(dst.tile.name()) + " stores " +
                    std::string(src.node.dtype().name()));
  UOp stores = UOp::make(tile_ops().tma_store, dtypes::void_,
                         with_deps({after_all(src.node, recorded()), dst.node, row0, col0}, outer));
  ordered(UOp::make(Op::BULK_COMMIT, dtypes::void_, {stores}));
}

void Kernel::store_wait(int n) {
  ordered(UOp::make(Op::BULK_WAIT, dtypes::void_, recorded(), int64_t(n)));
}

void Kernel::start(const Tile& product) {
  if (product.node.op() != tile_ops().mma)
    throw TileError("start: " + std::string(product.node.dtype().name()) + " is not a product");
  if (product.type().owner.unit != Unit::Warpgroup) return;  // mma.sync: synchronous
  ordered(UOp::make(tile_ops().start, dtypes::void_, {product.node}));
}

Tile Kernel::await(const Tile& product, int pending) {
  if (product.node.op() != tile_ops().mma)
    throw TileError("await: " + std::string(product.node.dtype().name()) + " is not a product");
  if (product.type().owner.unit != Unit::Warpgroup) return product;
  return {UOp::make(tile_ops().await, product.node.dtype(), with_deps({product.node}, recorded()),
                    int64_t(pending))};
}

void Kernel::when(const UOp& cond, const std::function<void()>& body) {
  UOp open = UOp::make(Op::IF, with_deps({cond}, recorded()));
  std::vector<UOp> places;
  for (auto& r : rings_) {
    places.push_back(r->place);
    r->place = UOp::make(Op::AFTER, {r->place, open});
  }
  frames_.push_back({open, {}});
  body();
  Frame f = std::move(frames_.back());
  frames_.pop_back();
  for (size_t k = 0; k < places.size(); ++k) rings_[k]->place = places[k];
  if (f.effects.empty()) return;
  UOp done = UOp::make(Op::ENDIF, with_deps({open}, f.effects));
  record(done);
  close_frame(done);
}

void Kernel::specialise(int producer_regs, int consumer_regs, const std::function<void()>& producer,
                        const std::function<void()>& consumers) {
  if (unit_ != Unit::Warpgroup || producers_ != 1)
    throw TileError("specialise: the kernel needs consumer warpgroups and a producer warpgroup");
  UOp tid = thread_index();
  int64_t first = int64_t(warp_rows_) * warp_cols_ * 128;  // the producer's first thread
  // setmaxnreg moves registers through a pool of the block's own: the registers it was
  // launched with (the most the block's threads allow, which the compiler gives a kernel
  // that moves registers) less what the consumers take beyond that, plus what the producer
  // gives back. setmaxnreg.inc waits until its registers are in the pool: budgets that
  // need more would wait forever (four consumers of 112 beside a producer of 40 did).
  int64_t launch = std::min<int64_t>(248, 65536 / (first + 128) / 8 * 8);
  int64_t pool = 128 * (launch - producer_regs);
  if (consumer_regs == 0)
    consumer_regs = int(std::min<int64_t>(240, (launch + pool / first) / 8 * 8));
  if (producer_regs > launch || first * (consumer_regs - launch) > pool)
    throw TileError("specialise: " + std::to_string(warp_rows_ * warp_cols_) + " consumer " +
                    "warpgroups of " + std::to_string(consumer_regs) +
                    " registers and a producer of " + std::to_string(producer_regs) +
                    " need more than the block's " + std::to_string(launch) +
                    " registers per thread at launch can give them");
  auto budget = [&](int regs, bool inc) {
    record(UOp::make(Op::SETMAXNREG, dtypes::void_, recorded(), std::vector<int64_t>{regs, inc}));
  };
  when(alu(Op::CMPLT, const_int(dtypes::int32, first - 1), tid), [&] {
    budget(producer_regs, false);
    when(alu(Op::CMPEQ, tid, const_int(dtypes::int32, first)), producer);
  });
  when(tid < first, [&] {
    budget(consumer_regs, true);
    consumers();
  });
}

void Kernel::persistent(const UOp& tiles, int64_t blocks,
                        const std::function<void(const UOp&, const UOp&)>& body) {
  UOp b = block_index(0, const_int(dtypes::int32, blocks));
  loop((tiles - b + (blocks - 1)) / blocks, [&](const UOp& j) { body(b + j * blocks, j); });
}

UOp Kernel::finish() {
  if (frames_.size() != 1) throw TileError("finish: a loop is still open");
  std::vector<UOp>& e = frames_[0].effects;
  UOp root = UOp::make(Op::SINK, dtypes::void_, e, name_);
  verify(root);
  return root;
}

}  // namespace kitten::tiles
