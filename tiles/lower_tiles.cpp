#include "tiles/lower_tiles.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "dsl/lower.h"
#include "dsl/mma.h"
#include "dsl/printer.h"
#include "dsl/rewrite.h"
#include "dsl/symbolic.h"
#include "tiles/tile.h"

namespace kitten::tiles {

namespace {

// What a node of the tile graph became.
struct Lowered {
  // Operand: a shared tile loaded only as a wgmma operand (read through descriptors):
  // its slot (buf, base) and the origin of the warpgroup's window (row0, col0).
  enum Kind { Single, Values, Place, Slot, View, Token, Operand } kind = Single;
  std::vector<UOp> v;        // Single: [node]; Values: a lane's elements; Token: its copies' tokens
  std::vector<UOp> sync;     // Token: the stores of a copy that could not go async
  std::vector<UOp> started;  // Values of a wgmma product: its commit, each chain's last wgmma
  UOp buf, base;             // Place: the buffer (through AFTERs); Slot: buffer, first element
  UOp ptr, rows, cols, rs, cs, off;  // View
  UOp row0, col0;                    // Operand
  int64_t align = 0;
};

UOp i32(int64_t v) { return const_int(dtypes::int32, v); }

UOp all_of(const std::vector<UOp>& effects) {
  if (effects.size() == 1) return effects[0];
  return UOp::make(Op::GROUP, dtypes::void_, effects);
}

// The 16x16 base tile's element places (the A layout of m16n8k16), and which of its
// elements make each mma.sync operand, derived from the layouts' expressions.
struct Fragments {
  const MmaLayout* mma = nullptr;
  std::vector<std::pair<UOp, UOp>> at;  // element e of a lane: (row, col) in a row-layout base
  int b_pick[2][4], c_pick[2][4];       // n-half h: the base elements of B's and C's fragments
  // A lane's distinct rows (2) and columns (4) of a base, in order of first appearance:
  // which group each element is in, and the lane masks whose lanes share a row (column).
  std::vector<UOp> rows, cols;
  int row_of[8], col_of[8];
  std::vector<int> row_masks, col_masks;
  bool pairs_adjacent = true;  // elements 2q and 2q+1 sit in adjacent columns of one row
};

Fragments fragments(const MmaLayout& L, const UOp& lane) {
  Fragments f;
  f.mma = &L;
  for (int e = 0; e < 8; ++e) f.at.push_back({L.a.row_of(lane, i32(e)), L.a.col_of(lane, i32(e))});
  auto find = [&](auto place) {  // the element e with A(l, e) == place(l) for every lane l
    for (int e = 0; e < 8; ++e) {
      bool all = true;
      for (int l = 0; l < 32 && all; ++l) all = L.a.at(l, e) == place(l);
      if (all) return e;
    }
    throw IrError("lower_tiles: the layout " + L.name + " is not the 16x16 base tile's");
  };
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 4; ++i) {
      f.b_pick[h][i] = find([&](int l) {  // B is k x n: base element (n, k)
        auto [k, n] = L.b.at(l, i);
        return std::pair<int, int>{n + 8 * h, k};
      });
      f.c_pick[h][i] = find([&](int l) {
        auto [r, c] = L.c.at(l, i);
        return std::pair<int, int>{r, c + 8 * h};
      });
    }
  for (int e = 0; e < 8; ++e) {
    auto group = [](std::vector<UOp>& seen, const UOp& x) {
      auto it = std::find(seen.begin(), seen.end(), x);
      if (it != seen.end()) return int(it - seen.begin());
      seen.push_back(x);
      return int(seen.size()) - 1;
    };
    f.row_of[e] = group(f.rows, f.at[size_t(e)].first);
    f.col_of[e] = group(f.cols, f.at[size_t(e)].second);
  }
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < 8; e += 2) {
      auto [r, c] = L.a.at(l, e);
      f.pairs_adjacent &= L.a.at(l, e + 1) == std::pair<int, int>{r, c + 1};
    }
  for (int m = 1; m < 32; m <<= 1) {
    bool same_row = true, same_col = true;
    for (int l = 0; l < 32; ++l) {
      same_row &= L.a.at(l, 0).first == L.a.at(l ^ m, 0).first;
      same_col &= L.a.at(l, 0).second == L.a.at(l ^ m, 0).second;
    }
    if (same_row) f.row_masks.push_back(m);
    if (same_col) f.col_masks.push_back(m);
  }
  if (f.rows.size() != 2 || f.cols.size() != 4)
    throw IrError("lower_tiles: the layout " + L.name + " is not the 16x16 base tile's");
  return f;
}

class TileLowering {
 public:
  TileLowering(const Target& t) : target_(t) {}

  UOp run(const UOp& sink) {
    std::vector<UOp> order = toposort(sink);
    const TileOps& ops = tile_ops();
    bool any = false;
    for (const UOp& u : order) {
      if (const TileType* t = tile_type(u.dtype()); t && t->memory == Memory::Register) {
        if (t->owner.rows != 1 || t->owner.cols != 1)
          throw IrError("lower_tiles: " + std::string(u.dtype().name()) +
                        " is a block's tile; tile_warps makes it the warps' tiles first");
      }
      any |=
          tile_type(u.dtype()) || view_type(u.dtype()) || u.op() == ops.copy || u.op() == ops.store;
    }
    if (!any) return sink;
    threads_ = 32;
    for (const UOp& u : order)
      if (const TileType* t = tile_type(u.dtype()); t && t->owner.unit == Unit::Warpgroup)
        threads_ = 128;
    for (const UOp& u : order)  // tile_warps (or the kernel) made the block's threads
      if (u.op() == Op::SPECIAL &&
          std::get<SpecialArg>(u.arg()) == SpecialArg{SpecialKind::ThreadIdx, 0})
        threads_ = u.src(0).const_int();
    if (threads_ > target_.max_threads_per_block)
      throw IrError("lower_tiles: " + std::to_string(threads_) + " threads, the target has " +
                    std::to_string(target_.max_threads_per_block));
    for (const UOp& u : order) {  // the tiles loaded as a product's B operand
      if (u.op() != ops.mma) continue;
      if (tile_type(u.dtype())->owner.unit == Unit::Warpgroup) {  // wgmma reads them in place
        for (int i : {1, 2})
          if (u.src(i).op() == ops.load) operands_.insert(u.src(i).id());
      } else if (u.src(2).op() == ops.load) {
        b_operands_.insert(u.src(2).id());
      }
    }
    for (const UOp& u : order)
      if (const TileType* t = tile_type(u.dtype());
          t && t->memory == Memory::Register && t->owner.unit == Unit::Warpgroup &&
          t->vector == Vector::None && t->unit_rows() != 64 && !operands_.count(u.id()))
        throw IrError("lower_tiles: " + std::string(u.dtype().name()) +
                      ": a warpgroup holds 64 rows of a register tile (wgmma's M), one 16-row "
                      "strip per warp");
    tid_ = special(SpecialKind::ThreadIdx, 0, threads_);
    lane_ = tid_ % 32;
    strip_ = simplify(tid_ / 32 % 4 * 16);
    for (const UOp& u : order) low_[u.id()] = lower(u);
    return low_.at(sink.id()).v.at(0);
  }

 private:
  const Lowered& of(const UOp& u) const { return low_.at(u.id()); }

  Lowered single(UOp u) {
    Lowered l;
    l.v = {std::move(u)};
    return l;
  }

  Lowered lower(const UOp& u) {
    const TileOps& ops = tile_ops();
    Op op = u.op();
    if (op == ops.view) return view(u);
    if (op == ops.alloc) return alloc(u);
    if (op == ops.slot) {
      const Lowered& ring = of(u.src(0));
      const TileType& t = *tile_type(u.dtype());
      Lowered l;
      l.kind = Lowered::Slot;
      l.buf = ring.buf;
      l.base = simplify(of(u.src(1)).v[0] * (int64_t(t.rows) * t.cols));
      return l;
    }
    if (op == ops.fill) {
      const TileType& t = *tile_type(u.dtype());
      Lowered l;
      l.kind = Lowered::Values;
      l.v.assign(size_t(t.per_thread()),
                 const_(t.elem, const_as_double(std::get<ConstArg>(u.arg()), t.elem)));
      return l;
    }
    if (op == ops.load) return load(u);
    if (op == ops.copy) return copy(u);
    if (op == ops.store) return store(u);
    if (op == ops.mma)
      return tile_type(u.dtype())->owner.unit == Unit::Warpgroup ? wgmma(u) : mma(u);
    if (op == ops.tma || op == ops.tma_store) return tma(u);
    if (op == ops.start) return single(of(u.src(0)).started.at(0));  // the product's commit
    if (op == ops.await) return await(u);
    if (op == ops.map) return map(u);
    if (op == ops.reduce) return reduce(u);
    if (op == ops.bcast) return bcast(u);
    if (op == ops.mask) return mask(u);
    return core(u);
  }

  // ---- core ops over lowered sources ---------------------------------------------------
  Lowered core(const UOp& u) {
    if (u.op() == Op::WAIT_GROUP)
      for (const UOp& s : u.src())
        if (of(s).kind == Lowered::Token)
          throw IrError(
              "lower_tiles: WAIT_GROUP waits for groups: commit the tile copies with "
              "ASYNC_COMMIT and wait for the commits");
    std::vector<UOp> src;
    bool changed = false;
    for (size_t i = 0; i < u.src().size(); ++i) {
      const UOp& s = u.src(i);
      const Lowered& l = of(s);
      switch (l.kind) {
        case Lowered::Single:
          src.push_back(l.v[0]);
          changed |= l.v[0] != s;
          break;
        case Lowered::Token:
          src.insert(src.end(), l.v.begin(), l.v.end());
          src.insert(src.end(), l.sync.begin(), l.sync.end());
          changed = true;
          break;
        case Lowered::Place:
        case Lowered::Slot:
          src.push_back(l.buf);
          changed = true;
          break;
        default:
          throw IrError("lower_tiles: " + op_name(u.op()) + " takes the tile " +
                        std::string(s.dtype().name()) + " as a source");
      }
    }
    if (u.op() == Op::AFTER &&
        (of(u.src(0)).kind == Lowered::Place || of(u.src(0)).kind == Lowered::Slot)) {
      Lowered l = of(u.src(0));  // the same tile, ordered after the deps
      l.buf = UOp::make(Op::AFTER, src);
      return l;
    }
    if (!changed) return single(u);
    if (u.op() == Op::GROUP && src.size() == 1) return single(src[0]);
    return single(UOp::make(u.op(), u.dtype(), src, u.arg()));
  }

  // ---- places ----------------------------------------------------------------------------
  Lowered view(const UOp& u) {
    Lowered l;
    l.kind = Lowered::View;
    l.ptr = of(u.src(0)).v[0];
    l.rows = of(u.src(1)).v[0], l.cols = of(u.src(2)).v[0];
    l.rs = of(u.src(3)).v[0], l.cs = of(u.src(4)).v[0], l.off = of(u.src(5)).v[0];
    l.align = u.int_arg();
    for (const UOp* x : {&l.rows, &l.cols, &l.rs, &l.cs, &l.off})
      if (x->dtype() != dtypes::int32)
        throw IrError("lower_tiles: view extents and strides are int32 for now");
    return l;
  }

  Lowered alloc(const UOp& u) {
    const TileType& t = *tile_type(u.dtype());
    Lowered l;
    l.kind = Lowered::Place;
    if (t.memory == Memory::Register) {
      l.buf = define_reg(t.elem, t.per_thread(), u.int_arg());
    } else {
      if (!target_.has(kFeatureBlocks))
        throw IrError("lower_tiles: shared tiles need a target with blocks (" + target_.arch + ")");
      l.buf = define_local(t.elem, int64_t(t.rows) * t.cols * t.stages, u.int_arg(),
                           std::max<int64_t>(16, swizzle_alignment(t.swizzle)), t.swizzle);
      l.base = i32(0);
    }
    return l;
  }

  // The elements of a register tile as values: a carried tile's registers are read.
  std::vector<UOp> values(const UOp& u) {
    const Lowered& l = of(u);
    if (l.kind == Lowered::Values) return l.v;
    if (l.kind == Lowered::Operand)
      throw IrError(
          "lower_tiles: " + std::string(u.dtype().name()) +
          " is loaded as a wgmma operand and read in place; load it again for other uses");
    if (l.kind != Lowered::Place)
      throw IrError("lower_tiles: " + std::string(u.dtype().name()) + " is not a register tile");
    auto it = reads_.find(l.buf.id());
    if (it != reads_.end()) return it->second;
    std::vector<UOp> out;
    for (int k = 0; k < tile_type(u.dtype())->per_thread(); ++k)
      out.push_back(kitten::load(index(l.buf, i32(k))));
    reads_[l.buf.id()] = out;
    return out;
  }

  // ---- where each element is -------------------------------------------------------------
  const Fragments& frag(DType elem) {
    std::string name = elem == dtypes::float16 ? "m16n8k16_f16_f32" : "m16n8k16_bf16_f32";
    auto it = frags_.find(name);
    if (it == frags_.end())
      it = frags_.emplace(name, fragments(*find_mma_layout(name), lane_)).first;
    return it->second;
  }

  // A warp tile's origin in the block's tile: sources `first` and `first`+1 of u (set by
  // tile_warps), else (0, 0).
  std::pair<UOp, UOp> origin_of(const UOp& u, size_t first) {
    if (u.src().size() < first + 2) return {i32(0), i32(0)};
    return {of(u.src(first)).v[0], of(u.src(first + 1)).v[0]};
  }

  // Element k of this lane's part of a warp's tile t: (row, col) in the block's tile, the
  // warp tile's origin there added.
  std::pair<UOp, UOp> position(const TileType& t, int k,
                               const std::pair<UOp, UOp>& origin = {i32(0), i32(0)}) {
    const Fragments& f = frag(dtypes::bfloat16);
    UOp strip = t.owner.unit == Unit::Warpgroup ? strip_ : i32(0);  // the warp's 16 rows
    if (t.vector == Vector::PerRow)
      return {simplify(f.rows[size_t(k % 2)] + int64_t(k / 2) * 16 + origin.first + strip), i32(0)};
    if (t.vector == Vector::PerCol)
      return {i32(0), simplify(f.cols[size_t(k % 4)] + int64_t(k / 4) * 16 + origin.second)};
    int bc = t.unit_cols() / 16, b = k / 8, e = k % 8;
    auto [ar, ac] = frag(dtypes::bfloat16).at[size_t(e)];
    UOp r = t.layout == Layout::Row ? ar : ac, c = t.layout == Layout::Row ? ac : ar;
    UOp row = r + int64_t(b / bc) * 16, col = c + int64_t(b % bc) * 16;
    row = row + origin.first + strip;
    col = col + origin.second;
    return {simplify(row), simplify(col)};
  }

  // The element offset of (row, col) in a shared tile slot.
  UOp shared_offset(const TileType& t, const Lowered& slot, const UOp& row, const UOp& col) {
    bool rowmajor = t.layout == Layout::Row;
    UOp a = rowmajor ? row : col, b = rowmajor ? col : row;
    int64_t line = rowmajor ? t.cols : t.rows, lines = rowmajor ? t.rows : t.cols;
    UOp off;
    if (t.swizzle == Swizzle::None) {
      off = a * line + b;
    } else {
      int64_t e = t.elem.itemsize(), per = swizzle_width(t.swizzle) / e;
      UOp byte = swizzled_offset(t.swizzle, a, (b % per) * e);
      off = (b / per) * (lines * per) + byte / e;
    }
    return simplify(slot.base + off);
  }

  UOp in_view(const Lowered& v, const UOp& row, const UOp& col) {
    UOp g = simplify(alu(Op::AND, row < v.rows, col < v.cols));
    return g.op() == Op::CONST && g.const_int() ? UOp() : g;
  }

  // ---- tile ops ----------------------------------------------------------------------------
  Lowered load(const UOp& u) {
    const TileType &r = *tile_type(u.dtype()), &s = *tile_type(u.src(0).dtype());
    const Lowered& slot = of(u.src(0));
    Lowered l;
    l.kind = Lowered::Values;
    bool ldm = matrices(r, s, kFeatureLdmatrix);
    int bases = r.warp_rows() / 16 * (r.unit_cols() / 16);
    auto origin = origin_of(u, 1);
    if (operands_.count(u.id())) {
      Lowered o = slot;
      o.kind = Lowered::Operand;
      o.row0 = origin.first, o.col0 = origin.second;
      return o;
    }
    if (!ldm) {
      for (int k = 0; k < r.per_thread(); ++k) {
        auto [row, col] = position(r, k, origin);
        l.v.push_back(load_elem(slot, s, row, col));
      }
      return l;
    }
    // One ldmatrix.x4 per 16x16 base. A tile that is a product's B operand loads its pairs
    // in the order (0, 2, 1, 3), so that each n8 half's fragment is two adjacent registers
    // of the result, as mma.sync reads them (no register moves between).
    bool b_order = b_operands_.count(u.id()) > 0;
    static constexpr int kPlain[4] = {0, 1, 2, 3}, kB[4] = {0, 2, 1, 3};
    const int* pair = b_order ? kB : kPlain;
    for (int b = 0; b < bases; ++b) {
      UOp m = UOp::make(Op::LDMATRIX, {matrix_row(r, s, slot, b, origin, b_order)},
                        std::vector<int64_t>{4, r.layout != s.layout ? 1 : 0});
      size_t first = l.v.size();
      l.v.resize(first + 8);
      for (int k = 0; k < 4; ++k)
        for (int h = 0; h < 2; ++h)
          l.v[first + size_t(2 * pair[k] + h)] =
              UOp::make(Op::EXTRACT, {m}, std::vector<int64_t>{2 * k + h});
    }
    return l;
  }

  // ldmatrix/stmatrix of base b of register tile r in shared tile s: lane L addresses line
  // L%8 of matrix L/8, whose origin is where that matrix's pair of elements starts (pair
  // order (0, 2, 1, 3) where b_order); the matrix is transposed where the pairs run across
  // the shared tile's lines.
  UOp matrix_row(const TileType& r, const TileType& s, const Lowered& slot, int b,
                 const std::pair<UOp, UOp>& origin, bool b_order) {
    int bc = r.unit_cols() / 16;
    UOp q = lane_ / 8, i8 = lane_ % 8;
    UOp p = b_order ? (q % 2) * 2 + q / 2 : q;  // the pair matrix q holds
    UOp qr = r.layout == Layout::Row ? (p % 2) * 8 : (p / 2) * 8;
    UOp qc = r.layout == Layout::Row ? (p / 2) * 8 : (p % 2) * 8;
    if (r.owner.unit == Unit::Warpgroup) qr = qr + strip_;
    UOp row = qr + int64_t(b / bc) * 16 + origin.first,
        col = qc + int64_t(b % bc) * 16 + origin.second;
    if (s.layout == Layout::Row)
      row = row + i8;
    else
      col = col + i8;
    return UOp::make(Op::INDEX, s.elem.vec(8).ptr(AddrSpace::Local),
                     {slot.buf, shared_offset(s, slot, simplify(row), simplify(col))});
  }

  // Whether 16x16 bases of r move to or from s as 8x8 matrices of 16-bit rows.
  bool matrices(const TileType& r, const TileType& s, TargetFeature f) const {
    int line = s.layout == Layout::Row ? s.cols : s.rows;
    return target_.has(f) && s.elem.itemsize() == 2 && r.vector == Vector::None &&
           (s.swizzle != Swizzle::None || line % 8 == 0);
  }

  UOp load_elem(const Lowered& slot, const TileType& s, const UOp& row, const UOp& col) {
    return kitten::load(index(slot.buf, shared_offset(s, slot, row, col)));
  }

  Lowered copy(const UOp& u) {
    const TileType& s = *tile_type(u.src(0).dtype());
    const Lowered &slot = of(u.src(0)), &v = of(u.src(1));
    UOp r0 = of(u.src(2)).v[0], c0 = of(u.src(3)).v[0];
    bool rowmajor = s.layout == Layout::Row;
    int64_t line = rowmajor ? s.cols : s.rows, total = int64_t(s.rows) * s.cols;
    int64_t e = s.elem.itemsize();
    const UOp &stride = rowmajor ? v.cs : v.rs, &other = rowmajor ? v.rs : v.cs;
    const UOp &start = rowmajor ? c0 : r0, &extent = rowmajor ? v.cols : v.rows;
    // The widest copy whose every source is aligned and whose chunks are wholly inside or
    // outside the view: proven from the view's alignment facts and the divisibility of
    // its strides, origin and extent.
    int64_t width = 0;
    if (target_.has(kFeatureAsyncCopy) && stride.op() == Op::CONST && stride.const_int() == 1)
      for (int64_t w : {16, 8, 4}) {
        int64_t ce = w / e;
        if (ce < 1 || w % e || line % ce || (total / ce) % threads_ || v.align % w ||
            !provably_multiple(other, ce) || !provably_multiple(start, ce) ||
            !provably_multiple(v.off, ce) || !provably_multiple(extent, ce))
          continue;
        width = w;
        break;
      }
    Lowered l;
    l.kind = Lowered::Token;
    int64_t ce = width ? width / e : 1, per_line = line / ce;
    int64_t count = (total / ce + threads_ - 1) / threads_;
    for (int64_t it = 0; it < count; ++it) {
      UOp qi = tid_ + it * threads_;
      UOp a = qi / per_line, b = (qi % per_line) * ce;
      UOp row = rowmajor ? a : b, col = rowmajor ? b : a;
      UOp grow = r0 + row, gcol = c0 + col;
      UOp gate = in_view(v, grow, gcol);
      UOp src = simplify(v.off + grow * v.rs + gcol * v.cs);
      UOp dst = shared_offset(s, slot, simplify(row), simplify(col));
      if (width) {
        DType vt = ce == 1 ? s.elem : s.elem.vec(int(ce));
        UOp si = gate ? UOp::make(Op::INDEX, vt.ptr(), {v.ptr, src, gate})
                      : UOp::make(Op::INDEX, vt.ptr(), {v.ptr, src});
        UOp di = UOp::make(Op::INDEX, vt.ptr(AddrSpace::Local), {slot.buf, dst});
        l.v.push_back(UOp::make(Op::ASYNC_COPY, dtypes::token, {di, si}));
      } else {  // synchronous, one element at a time (a thread past the tile does nothing)
        UOp mine = total % threads_ ? simplify(qi < total) : UOp();
        UOp g = gate && mine ? alu(Op::AND, gate, mine) : gate ? gate : mine;
        UOp x = g ? kitten::load(index(v.ptr, src, g), const_(s.elem, 0))
                  : kitten::load(index(v.ptr, src));
        l.sync.push_back(
            kitten::store(mine ? index(slot.buf, dst, mine) : index(slot.buf, dst), x));
      }
    }
    return l;
  }

  Lowered store(const UOp& u) {
    const UOp& dst = u.src(0);
    const TileType& t = *tile_type(u.src(1).dtype());
    std::vector<UOp> vals = values(u.src(1)), out;
    const Lowered& d = of(dst);
    if (d.kind == Lowered::Place && tile_type(dst.dtype())->memory == Memory::Register) {
      for (size_t k = 0; k < vals.size(); ++k)
        out.push_back(kitten::store(index(d.buf, i32(int64_t(k))), vals[k]));
    } else if (d.kind == Lowered::Slot || d.kind == Lowered::Place) {
      Lowered slot = d;
      if (d.kind == Lowered::Place) slot.base = i32(0);
      const TileType& s = *tile_type(dst.dtype());
      auto origin = origin_of(u, 2);
      if (matrices(t, s, kFeatureStmatrix)) {  // one stmatrix.x4 per 16x16 base
        for (size_t b = 0; b * 8 < vals.size(); ++b)
          out.push_back(
              UOp::make(Op::STMATRIX, dtypes::void_,
                        {matrix_row(t, s, slot, int(b), origin, false),
                         UOp::make(Op::VECTORIZE,
                                   std::vector<UOp>(vals.begin() + std::ptrdiff_t(8 * b),
                                                    vals.begin() + std::ptrdiff_t(8 * b + 8)))},
                        std::vector<int64_t>{4, t.layout != s.layout ? 1 : 0}));
        return single(all_of(out));
      }
      for (size_t k = 0; k < vals.size(); ++k) {
        auto [row, col] = position(t, int(k), origin);
        out.push_back(kitten::store(index(d.buf, shared_offset(s, slot, row, col)), vals[k]));
      }
    } else {  // a global view: gated at its edges
      UOp r0 = of(u.src(2)).v[0], c0 = of(u.src(3)).v[0];
      UOp leader;  // a vector: the first of the lanes that hold each value writes it
      if (t.vector != Vector::None) {
        const Fragments& f = frag(dtypes::bfloat16);
        int64_t bits = 0;
        for (int m : t.vector == Vector::PerRow ? f.row_masks : f.col_masks) bits |= m;
        leader = simplify(alu(Op::CMPEQ, alu(Op::AND, lane_, i32(bits)), i32(0)));
      }
      // Elements 2q and 2q+1 of a row-layout base are adjacent columns: one store of two
      // where the view is contiguous along rows and the pair provably aligned and wholly
      // inside or outside it (the columns even).
      int64_t e = t.elem.itemsize();
      bool pairs = t.vector == Vector::None && t.layout == Layout::Row &&
                   frag(dtypes::bfloat16).pairs_adjacent && d.cs.op() == Op::CONST &&
                   d.cs.const_int() == 1 && provably_multiple(d.rs, 2) &&
                   provably_multiple(d.off, 2) && provably_multiple(c0, 2) &&
                   provably_multiple(d.cols, 2) && d.align % (2 * e) == 0 &&
                   target_.max_vector_lanes(AddrSpace::Global, t.elem) >= 2;
      auto origin = origin_of(u, 4);
      for (size_t k = 0; k < vals.size(); k += pairs ? 2 : 1) {
        auto [row, col] = position(t, int(k), origin);
        UOp grow = r0 + row, gcol = c0 + col, gate = in_view(d, grow, gcol);
        if (leader) gate = gate ? alu(Op::AND, gate, leader) : leader;
        UOp at = simplify(d.off + grow * d.rs + gcol * d.cs);
        DType vt = pairs ? t.elem.vec(2) : t.elem;
        UOp idx = gate ? UOp::make(Op::INDEX, vt.ptr(), {d.ptr, at, gate})
                       : UOp::make(Op::INDEX, vt.ptr(), {d.ptr, at});
        out.push_back(
            kitten::store(idx, pairs ? UOp::make(Op::VECTORIZE, {vals[k], vals[k + 1]}) : vals[k]));
      }
    }
    return single(all_of(out));
  }

  Lowered mma(const UOp& u) {
    const TileType &c = *tile_type(u.dtype()), &a = *tile_type(u.src(1).dtype()),
                   &b = *tile_type(u.src(2).dtype());
    const Fragments& f = frag(a.elem);
    if (!target_.has_mma(f.mma->name))
      throw IrError("lower_tiles: mma needs " + f.mma->name + ", which " + target_.arch +
                    " does not have");
    const std::string& p = u.name_arg();
    std::vector<UOp> acc = values(u.src(0)), va = values(u.src(1)), vb = values(u.src(2));
    int mb = c.unit_rows() / 16, nb = c.unit_cols() / 16;
    int kb = (p == "AtB" ? a.rows : a.cols) / 16;
    auto a_base = [&](int i, int kk) {
      return p == "AtB" ? kk * (a.unit_cols() / 16) + i : i * kb + kk;
    };
    auto b_base = [&](int j, int kk) {
      return p == "ABt" ? j * kb + kk : kk * (b.unit_cols() / 16) + j;
    };
    for (int kk = 0; kk < kb; ++kk)
      for (int i = 0; i < mb; ++i)
        for (int j8 = 0; j8 < 2 * nb; ++j8) {
          int h = j8 % 2, cb = (i * nb + j8 / 2) * 8, ab = a_base(i, kk) * 8,
              bb = b_base(j8 / 2, kk) * 8;
          std::vector<UOp> fa, fb, fc;
          for (int e = 0; e < 8; ++e) fa.push_back(va.at(size_t(ab + e)));
          for (int e = 0; e < 4; ++e) fb.push_back(vb.at(size_t(bb + f.b_pick[h][e])));
          for (int e = 0; e < 4; ++e) fc.push_back(acc.at(size_t(cb + f.c_pick[h][e])));
          UOp d = UOp::make(Op::MMA,
                            {UOp::make(Op::VECTORIZE, fa), UOp::make(Op::VECTORIZE, fb),
                             UOp::make(Op::VECTORIZE, fc)},
                            f.mma->name);
          for (int e = 0; e < 4; ++e)
            acc[size_t(cb + f.c_pick[h][e])] = UOp::make(Op::EXTRACT, {d}, std::vector<int64_t>{e});
        }
    Lowered l;
    l.kind = Lowered::Values;
    l.v = std::move(acc);
    return l;
  }

  // The wgmma descriptor of the k16 step at k0 of an operand read in place from shared tile
  // s: mn0 is the first row (A) or column (B) of the instruction's window, `mn_rows` whether
  // the tile's rows run along M or N (else along K). The tile DSL lays shared tiles out as
  // wgmma's canonical swizzled layouts: K-major when its lines run along K (8-line groups
  // 8*width bytes apart), else MN-major (panels of the swizzle's width, lines*width apart).
  UOp descriptor(const UOp& load, const Lowered& o, bool mn_rows, const UOp& mn0, int64_t k0) {
    const TileType& s = *tile_type(load.src(0).dtype());
    if (s.swizzle == Swizzle::None || s.elem.itemsize() != 2)
      throw IrError("lower_tiles: wgmma reads 16-bit shared tiles laid out with a swizzle, not " +
                    std::string(load.src(0).dtype().name()));
    bool k_major = (s.layout == Layout::Row) == mn_rows;
    int64_t width = swizzle_width(s.swizzle), lines = s.layout == Layout::Row ? s.rows : s.cols;
    UOp row = mn_rows ? mn0 : i32(k0), col = mn_rows ? i32(k0) : mn0;
    UOp start = shared_offset(s, o, simplify(row + o.row0), simplify(col + o.col0));
    int64_t lbo = k_major ? 16 : lines * width, sbo = 8 * width;
    return UOp::make(Op::MATRIX_DESC, dtypes::uint64, {index(o.buf, start)},
                     std::vector<int64_t>{int64_t(s.swizzle), k_major ? 0 : 1, lbo, sbo});
  }

  // Throws unless the wgmma layout puts element e of thread t where this lowering keeps
  // the warpgroup tile's element e: warp t/32's strip, the base tile's place.
  void check_places(const MmaLayout& L, const FragmentLayout& F, int n) {
    const Fragments& f = frag(dtypes::bfloat16);
    for (int t = 0; t < 128; ++t)
      for (int k = 0; k < F.fragment.count(); ++k) {
        int bc = n / 16, b = k / 8, e = k % 8;
        auto [r, c] = f.mma->a.at(t % 32, e);
        std::pair<int, int> want{16 * (t / 32) + r + 16 * (b / bc), c + 16 * (b % bc)};
        if (F.at(t, k) != want)
          throw IrError("lower_tiles: " + L.name +
                        " keeps its elements elsewhere than the warpgroup tiles do");
      }
  }

  // A product on warpgroup tiles: wgmma chains of m64nNk16 (N up to 256 a chain), A from
  // registers or read in place from shared memory, B in place; fenced, committed and
  // waited for at once.
  Lowered wgmma(const UOp& u) {
    const TileType& c = *tile_type(u.dtype());
    const std::string& p = u.name_arg();
    const UOp &ua = u.src(1), &ub = u.src(2);
    const TileType& a = *tile_type(ua.dtype());
    if (!target_.has(kFeatureWgmma))
      throw IrError("lower_tiles: a warpgroup's product needs wgmma, which " + target_.arch +
                    " does not have");
    bool rs = of(ua).kind != Lowered::Operand;
    if (of(ub).kind != Lowered::Operand)
      throw IrError(
          "lower_tiles: wgmma reads b from shared memory: b must be a shared tile's load");
    if (rs && p == "AtB")
      throw IrError("lower_tiles: wgmma reads a transposed a only from shared memory");
    std::vector<UOp> acc = values(u.src(0)), va = rs ? values(ua) : std::vector<UOp>{};
    int k = p == "AtB" ? a.rows : a.cols, n = c.unit_cols();
    std::string type = a.elem == dtypes::float16 ? "f16" : "bf16";
    // The chains (N of at most 256 each) and their accumulators, fenced together.
    std::vector<std::pair<int, int>> chains;  // (first column, columns)
    for (int n0 = 0; n0 < n; n0 += 256) chains.push_back({n0, std::min(256, n - n0)});
    std::vector<UOp> ready, accs;
    for (auto [n0, nn] : chains) {
      accs.push_back(UOp::make(
          Op::VECTORIZE, std::vector<UOp>(acc.begin() + n0 / 2, acc.begin() + (n0 + nn) / 2)));
      ready.push_back(accs.back());
    }
    std::vector<UOp> frags;
    for (int kk = 0; rs && kk < k / 16; ++kk) {
      frags.push_back(
          UOp::make(Op::VECTORIZE, std::vector<UOp>(va.begin() + 8 * kk, va.begin() + 8 * kk + 8)));
      ready.push_back(frags.back());
    }
    // The fence also reads the first step's descriptors, so that it stays with the product
    // (inside its loop) even when the accumulator is a constant.
    ready.push_back(descriptor(ub, of(ub), p == "ABt", i32(0), 0));
    if (!rs) ready.push_back(descriptor(ua, of(ua), p != "AtB", i32(0), 0));
    UOp fence = UOp::make(Op::FENCE, dtypes::void_, ready, std::string("wgmma"));
    std::vector<UOp> last;
    for (size_t ch = 0; ch < chains.size(); ++ch) {
      auto [n0, nn] = chains[ch];
      std::string name = "wgmma_m64n" + std::to_string(nn) + "k16_" + type + (rs ? "_rs" : "_ss");
      const MmaLayout& L = *find_mma_layout(name);
      check_places(L, L.c, nn);
      if (rs) check_places(L, L.a, 16);
      UOp d = accs[ch];
      for (int kk = 0; kk < k / 16; ++kk) {
        UOp da = rs ? frags[size_t(kk)] : descriptor(ua, of(ua), p != "AtB", i32(0), 16 * kk);
        UOp db = descriptor(ub, of(ub), p == "ABt", i32(n0), 16 * kk);
        d = UOp::make(Op::WGMMA, d.dtype(), {da, db, d, fence}, L.name);
      }
      last.push_back(d);
    }
    UOp commit = UOp::make(Op::WGMMA_COMMIT, dtypes::void_, last);
    Lowered l;
    l.kind = Lowered::Values;
    l.started = {commit};  // what a TILE_START of it issues; then each chain's last wgmma
    l.started.insert(l.started.end(), last.begin(), last.end());
    for (size_t ch = 0; ch < chains.size(); ++ch) {
      UOp done = UOp::make(Op::WGMMA_WAIT, last[ch].dtype(), {last[ch], commit}, int64_t(0));
      for (int i = 0; i < chains[ch].second / 2; ++i)
        l.v.push_back(UOp::make(Op::EXTRACT, {done}, std::vector<int64_t>{i}));
    }
    return l;
  }

  // A started product's values after wgmma.wait_group N, itself after the given effects.
  Lowered await(const UOp& u) {
    const Lowered& product = of(u.src(0));
    std::vector<UOp> deps;
    for (size_t i = 1; i < u.src().size(); ++i) deps.push_back(of(u.src(i)).v.at(0));
    Lowered l;
    l.kind = Lowered::Values;
    for (size_t ch = 1; ch < product.started.size(); ++ch) {
      std::vector<UOp> src = {product.started[ch], product.started[0]};
      src.insert(src.end(), deps.begin(), deps.end());
      UOp done = UOp::make(Op::WGMMA_WAIT, product.started[ch].dtype(), src, u.int_arg());
      for (int i = 0; i < done.dtype().count(); ++i)
        l.v.push_back(UOp::make(Op::EXTRACT, {done}, std::vector<int64_t>{i}));
    }
    return l;
  }

  // TMA loads of a shared tile, one per panel of the swizzle's width: panel p holds columns
  // (of a row-layout tile; rows of a column-layout one) p*per .. p*per+per-1.
  Lowered tma(const UOp& u) {
    if (!target_.has(kFeatureTma))
      throw IrError("lower_tiles: a TMA load needs a target with TMA (" + target_.arch + ")");
    const TileType& s = *tile_type(u.src(0).dtype());
    const Lowered& slot = of(u.src(0));
    bool load = u.op() == tile_ops().tma;  // else a store: no mbarrier
    UOp map = of(u.src(1)).v[0], bar = load ? of(u.src(2)).v[0] : UOp();
    UOp r0 = of(u.src(load ? 3 : 2)).v[0], c0 = of(u.src(load ? 4 : 3)).v[0];
    bool row = s.layout == Layout::Row;
    const auto& box = std::get<std::vector<int64_t>>(u.src(1).arg());
    int64_t per = box[2], lines = box[3], line = row ? s.cols : s.rows;
    UOp base = slot.kind == Lowered::Place ? i32(0) : slot.base;
    std::vector<UOp> out;
    for (int64_t p = 0; p < line / per; ++p) {
      UOp inner = simplify((row ? c0 : r0) + p * per), outer = row ? r0 : c0;
      UOp tile = index(slot.buf, simplify(base + p * per * lines));
      std::vector<UOp> src = load ? std::vector<UOp>{map, tile, bar, inner, outer}
                                  : std::vector<UOp>{map, tile, inner, outer};
      for (size_t i = load ? 5 : 4; i < u.src().size(); ++i) src.push_back(of(u.src(i)).v[0]);
      out.push_back(UOp::make(load ? Op::TMA_LOAD : Op::TMA_STORE, dtypes::void_, src));
    }
    return single(all_of(out));
  }

  Lowered map(const UOp& u) {
    const TileType& t = *tile_type(u.dtype());
    std::vector<std::vector<UOp>> src;
    for (const UOp& s : u.src())
      src.push_back(tile_type(s.dtype()) ? values(s)
                                         : std::vector<UOp>(size_t(t.per_thread()), of(s).v[0]));
    Lowered l;
    l.kind = Lowered::Values;
    Op op = u.name_arg() == "CAST" ? Op::CAST : *op_by_name(u.name_arg());
    for (size_t k = 0; k < src[0].size(); ++k) {
      if (op == Op::CAST) {
        l.v.push_back(cast(src[0][k], t.elem));
      } else {
        std::vector<UOp> args;
        for (auto& s : src) args.push_back(s[k]);
        l.v.push_back(UOp::make(op, args));
      }
    }
    return l;
  }

  // Row (column) reductions: within the lane, then across the lanes sharing the row.
  Lowered reduce(const UOp& u) {
    const TileType &t = *tile_type(u.src(0).dtype()), &v = *tile_type(u.dtype());
    const Fragments& f = frag(dtypes::bfloat16);
    Op op = u.name_arg() == "ADD" ? Op::ADD : Op::MAX;
    std::vector<UOp> x = values(u.src(0));
    int br = t.warp_rows() / 16, bc = t.unit_cols() / 16;
    bool rows = v.vector == Vector::PerRow;
    Lowered l;
    l.kind = Lowered::Values;
    for (int k = 0; k < v.per_thread(); ++k) {
      std::vector<UOp> terms;
      int base = rows ? k / 2 : k / 4, group = rows ? k % 2 : k % 4;
      for (int o = 0; o < (rows ? bc : br); ++o)
        for (int e = 0; e < 8; ++e)
          if ((rows ? f.row_of[e] : f.col_of[e]) == group) {
            int b = rows ? base * bc + o : o * bc + base;
            terms.push_back(x[size_t(b * 8 + e)]);
          }
      while (terms.size() > 1) {  // a balanced tree
        std::vector<UOp> next;
        for (size_t i = 0; i + 1 < terms.size(); i += 2)
          next.push_back(alu(op, terms[i], terms[i + 1]));
        if (terms.size() % 2) next.push_back(terms.back());
        terms = std::move(next);
      }
      UOp r = terms[0];
      for (int m : rows ? f.row_masks : f.col_masks)
        r = alu(op, r, UOp::make(Op::SHUFFLE, {r, i32(m)}, ShuffleMode::Xor));
      l.v.push_back(r);
    }
    return l;
  }

  Lowered bcast(const UOp& u) {
    const TileType &t = *tile_type(u.dtype()), &v = *tile_type(u.src(1).dtype());
    const Fragments& f = frag(dtypes::bfloat16);
    Op op = *op_by_name(u.name_arg());
    std::vector<UOp> x = values(u.src(0)), y = values(u.src(1));
    int bc = t.unit_cols() / 16;
    Lowered l;
    l.kind = Lowered::Values;
    for (size_t k = 0; k < x.size(); ++k) {
      int b = int(k) / 8, e = int(k) % 8;
      size_t at = v.vector == Vector::PerRow ? size_t((b / bc) * 2 + f.row_of[e])
                                             : size_t((b % bc) * 4 + f.col_of[e]);
      l.v.push_back(alu(op, x[k], y[at]));
    }
    return l;
  }

  Lowered mask(const UOp& u) {
    const TileType& t = *tile_type(u.dtype());
    std::vector<UOp> x = values(u.src(0));
    UOp keep = of(u.src(1)).v[0], fill = of(u.src(2)).v[0];
    auto origin = origin_of(u, 3);
    Lowered l;
    l.kind = Lowered::Values;
    for (size_t k = 0; k < x.size(); ++k) {
      auto [row, col] = position(t, int(k), origin);
      UOp c = simplify(substitute(keep, {{tile_row_var(), row}, {tile_col_var(), col}}));
      if (c.op() == Op::CONST)
        l.v.push_back(c.const_int() ? x[k] : fill);
      else
        l.v.push_back(UOp::make(Op::WHERE, {c, x[k], fill}));
    }
    return l;
  }

  const Target& target_;
  int64_t threads_ = 32;
  UOp tid_, lane_;
  std::unordered_map<const void*, Lowered> low_;
  std::unordered_map<const void*, std::vector<UOp>> reads_;
  std::unordered_set<const void*> b_operands_;
  std::unordered_set<const void*> operands_;  // loads that wgmma reads in place
  UOp strip_;  // a warpgroup tile's first row in this warp: 16 * (warp % 4)
  std::unordered_map<std::string, Fragments> frags_;
};

}  // namespace

// ---- tile_warps: block tiles into warp tiles ------------------------------------------

namespace {

// The tile one warp holds of a block tile: its part (unit_rows x unit_cols), owned by a
// grid of one warp.
DType warp_tile(const TileType& t) {
  Owner one{t.owner.unit, 1, 1};
  if (t.vector == Vector::PerRow) return row_vector(t.elem, t.unit_rows(), one);
  if (t.vector == Vector::PerCol) return col_vector(t.elem, t.unit_cols(), one);
  return register_tile(t.elem, t.unit_rows(), t.unit_cols(), t.layout, one);
}

}  // namespace

UOp tile_warps(const UOp& sink) {
  const TileOps& ops = tile_ops();
  std::vector<UOp> order = toposort(sink);
  const TileType* first = nullptr;
  for (const UOp& u : order)
    if (const TileType* t = tile_type(u.dtype()); t && t->memory == Memory::Register && !first)
      first = t;
  if (!first || (first->owner.rows == 1 && first->owner.cols == 1)) return sink;
  Owner grid = first->owner;
  // A unit is a warp or a warpgroup; the block may have more threads than its units (a
  // producer warpgroup after the consumers'): the kernel's threadIdx says how many.
  int64_t per_unit = grid.unit == Unit::Warpgroup ? 128 : 32,
          threads = int64_t(grid.rows) * grid.cols * per_unit;
  for (const UOp& u : order)
    if (u.op() == Op::SPECIAL &&
        std::get<SpecialArg>(u.arg()) == SpecialArg{SpecialKind::ThreadIdx, 0})
      threads = std::max(threads, u.src(0).const_int());
  UOp tid = special(SpecialKind::ThreadIdx, 0, threads);
  UOp unit = tid / per_unit, wr = simplify(unit / grid.cols), wc = simplify(unit % grid.cols);
  // Where a warp's part of tile t starts in the block's tile.
  auto origin = [&](const TileType& t) {
    auto at = [&](Split s, int size) {
      if (t.owner.parts(s) == 1) return i32(0);
      return simplify((s == Split::GridRows ? wr : wc) * int64_t(size));
    };
    return std::vector<UOp>{at(t.owner.row_split, t.unit_rows()),
                            at(t.owner.col_split, t.unit_cols())};
  };
  std::unordered_map<const void*, UOp> out;
  for (const UOp& u : order) {
    std::vector<UOp> src;
    for (const UOp& s : u.src()) src.push_back(out.at(s.id()));
    DType dtype = u.dtype();
    const TileType* t = tile_type(dtype);
    if (t && t->memory == Memory::Register) {
      if (t->owner.rows != grid.rows || t->owner.cols != grid.cols || t->owner.unit != grid.unit)
        throw IrError(
            "tile_warps: register tiles over different warp grids: " + std::string(dtype.name()) +
            " and a " + std::to_string(grid.rows) + "x" + std::to_string(grid.cols) + " grid");
      dtype = warp_tile(*t);
    }
    // The ops that place elements in the block's tile take the warp's origin.
    if (u.op() == ops.load || u.op() == ops.mask) {
      for (const UOp& o : origin(*t)) src.push_back(o);
    } else if (u.op() == ops.store) {
      const TileType* d = tile_type(u.src(0).dtype());
      if (!d || d->memory == Memory::Shared)  // a view or a shared tile; not a carried tile
        for (const UOp& o : origin(*tile_type(u.src(1).dtype()))) src.push_back(o);
    }
    out[u.id()] = UOp::make(u.op(), dtype, src, u.arg());
  }
  return out.at(sink.id());
}

UOp lower_tiles(const UOp& sink, const Target& target) { return TileLowering(target).run(sink); }

void register_tile_passes() {
  register_pass(
      {"lower_tiles",
       "Rewrites tile ops into per-thread UOps: register tiles become each lane's "
       "fragment elements (from the MMA layouts), shared tiles swizzled buffers, "
       "loads ldmatrix, copies cp.async as wide as the view's alignment proves, "
       "products mma.sync, reductions shuffles, stores gated at the view's edges.",
       [](const UOp& sink, const LowerContext& ctx) { return lower_tiles(sink, ctx.target); }},
      PassPosition::Before, "schedule");
  register_pass({"tile_warps",
                 "Block tiles become warp tiles: each register tile becomes the part one warp "
                 "holds (its dtype owned by a grid of one warp), and the ops that place "
                 "elements (loads, stores, masks) take that warp's origin in the block's tile.",
                 [](const UOp& sink, const LowerContext&) { return tile_warps(sink); }},
                PassPosition::Before, "lower_tiles");
}

}  // namespace kitten::tiles
