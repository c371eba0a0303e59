#include "kernels/examples.h"

#include <cmath>
#include <functional>
#include <stdexcept>

#include "dsl/mma.h"

namespace kitten {

namespace {

UOp i32(int64_t v) { return const_int(dtypes::int32, v); }

DType acc_dtype(DType d) { return d.is_float() ? dtypes::float32 : d; }

// A register accumulator: its init is ordered after the output ranges (so it is reset
// for every output element), its loop read after the init and inside the reduce range,
// and the result read after the loop's END. Returns the stores of one update and the
// read of the result, given the update as a function of the current value.
struct Accumulator {
  UOp buf, in_loop;
  Accumulator(int64_t slot, DType dt, UOp init, const std::vector<UOp>& outer, const UOp& red) {
    buf = define_reg(dt, 1, slot);
    UOp at = buf;
    if (!outer.empty()) {
      std::vector<UOp> src{buf};
      src.insert(src.end(), outer.begin(), outer.end());
      at = UOp::make(Op::AFTER, std::span<const UOp>(src));
    }
    UOp init_store = store(index(at, i32(0)), init);
    in_loop = after(buf, {init_store, red});
  }
  UOp current() const { return load(index(in_loop, i32(0))); }
  UOp update(const UOp& v) const { return store(index(in_loop, i32(0)), v); }
  UOp result(const UOp& loop_end) const { return load(index(after(buf, {loop_end}), i32(0))); }
};

UOp to(DType d, const UOp& v) { return v.dtype() == d ? v : cast(v, d); }

UOp lowest(DType d) {
  if (d.is_float()) return const_(d, -INFINITY);
  return const_int(d, d.imin());
}

}  // namespace

UOp elementwise_add_kernel(int64_t rows, int64_t cols, DType dtype, bool broadcast_b) {
  UOp out = param(0, dtype.ptr()), a = param(1, dtype.ptr()), b = param(2, dtype.ptr());
  UOp i = range(rows, 0, AxisKind::Global), j = range(cols, 1, AxisKind::Global);
  UOp at = i * cols + j;
  UOp sum = load(index(a, at)) + load(index(b, broadcast_b ? j : at));
  return sink({end(store(index(out, at), sum), {i, j})}, broadcast_b ? "add_broadcast" : "add");
}

UOp reduce_kernel(int64_t rows, int64_t cols, int axis, Op op, DType dtype) {
  if (axis != 0 && axis != 1) throw std::invalid_argument("reduce_kernel: axis is 0 or 1");
  if (op != Op::ADD && op != Op::MAX)
    throw std::invalid_argument("reduce_kernel: op is ADD or MAX");
  UOp out = param(0, dtype.ptr()), x = param(1, dtype.ptr());
  int64_t kept = axis == 0 ? cols : rows, reduced = axis == 0 ? rows : cols;
  UOp o = range(kept, 0, AxisKind::Global), r = range(reduced, 1, AxisKind::Reduce);
  UOp at = axis == 0 ? r * cols + o : o * cols + r;
  DType acc_dt = acc_dtype(dtype);
  Accumulator acc(0, acc_dt, op == Op::ADD ? const_(acc_dt, 0.0) : lowest(acc_dt), {o}, r);
  UOp loop = end(acc.update(alu(op, acc.current(), to(acc_dt, load(index(x, at))))), {r});
  UOp result = to(dtype, acc.result(loop));
  return sink({end(store(index(out, o), result), {o})}, op == Op::ADD ? "sum" : "max");
}

UOp matmul_kernel(int64_t m, int64_t n, int64_t k, DType dtype, bool a_transposed,
                  bool b_transposed) {
  UOp c = param(0, dtype.ptr()), a = param(1, dtype.ptr()), b = param(2, dtype.ptr());
  UOp i = range(m, 0, AxisKind::Global), j = range(n, 1, AxisKind::Global);
  UOp r = range(k, 2, AxisKind::Reduce);
  DType acc_dt = acc_dtype(dtype);
  Accumulator acc(0, acc_dt, const_(acc_dt, 0.0), {i, j}, r);
  UOp ai = a_transposed ? r * m + i : i * k + r, bi = b_transposed ? j * k + r : r * n + j;
  UOp prod = to(acc_dt, load(index(a, ai))) * to(acc_dt, load(index(b, bi)));
  UOp loop = end(acc.update(acc.current() + prod), {r});
  return sink({end(store(index(c, i * n + j), to(dtype, acc.result(loop))), {i, j})}, "matmul");
}

UOp sum_and_squares_kernel(int64_t rows, int64_t cols) {
  DType f = dtypes::float32;
  UOp sum = param(0, f.ptr()), sumsq = param(1, f.ptr()), x = param(2, f.ptr());
  UOp i = range(rows, 0, AxisKind::Global), r = range(cols, 1, AxisKind::Reduce);
  Accumulator s(0, f, const_(f, 0.0), {i}, r), q(1, f, const_(f, 0.0), {i}, r);
  UOp v = load(index(x, i * cols + r));
  UOp loop = end(group({s.update(s.current() + v), q.update(q.current() + v * v)}), {r});
  UOp outs = group({store(index(sum, i), s.result(loop)), store(index(sumsq, i), q.result(loop))});
  return sink({end(outs, {i})}, "sum_and_squares");
}

UOp inplace_update_kernel(int64_t n) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), buf = param(1, f.ptr());
  UOp i = range(n, 0, AxisKind::Loop), j = range(n, 1, AxisKind::Loop);
  UOp first = end(store(index(buf, i), load(index(buf, i)) * const_(f, 2.0)), {i});
  UOp doubled = after(buf, {first});
  UOp second = end(store(index(out, j), load(index(doubled, j)) + const_(f, 1.0)), {j});
  return sink({second}, "inplace_update");
}

UOp stencil_kernel(int64_t n) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i = range(n, 0, AxisKind::Global), zero = const_(f, 0.0);
  UOp left = load(index(x, i + -1, alu(Op::CMPLT, i32(0), i)), zero);
  UOp right = load(index(x, i + 1, i + 1 < n), zero);
  UOp v = left + load(index(x, i)) + right;
  return sink({end(store(index(out, i), v), {i})}, "stencil");
}

UOp concat_kernel(int64_t rows, const std::vector<int64_t>& widths) {
  DType f = dtypes::float32;
  int64_t total = 0;
  for (int64_t w : widths) total += w;
  UOp out = param(0, f.ptr());
  UOp i = range(rows, 0, AxisKind::Global), j = range(total, 1, AxisKind::Global);
  UOp v;
  for (size_t k = widths.size(); k-- > 0;) {  // the last segment innermost
    int64_t start = 0;
    for (size_t m = 0; m < k; ++m) start += widths[m];
    int64_t w = widths[k];
    UOp after_start = alu(Op::CMPLT, i32(int32_t(start - 1)), j), before_end = j < start + w;
    UOp gate = k == 0                   ? before_end
               : k + 1 == widths.size() ? after_start
                                        : UOp::make(Op::AND, {after_start, before_end});
    UOp x = load(index(param(int64_t(k) + 1, f.ptr()), i * w + (j + -start), gate), const_(f, 0.0));
    v = v ? UOp::make(Op::WHERE, {before_end, x, v}) : x;
  }
  return sink({end(store(index(out, i * total + j), v), {i, j})}, "concat");
}

UOp softmax_kernel(int64_t rows, int64_t cols) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp i = range(rows, 0, AxisKind::Global);
  UOp r1 = range(cols, 1, AxisKind::Reduce), r2 = range(cols, 2, AxisKind::Reduce),
      j = range(cols, 3, AxisKind::Global);  // its iterations are independent
  UOp log2e = const_(f, 1.4426950408889634);
  Accumulator mx(0, f, const_(f, -INFINITY), {i}, r1);
  UOp max_loop = end(mx.update(alu(Op::MAX, mx.current(), load(index(x, i * cols + r1)))), {r1});
  UOp m = mx.result(max_loop);
  auto e = [&](const UOp& at) {
    return UOp::make(Op::EXP2, {(load(index(x, i * cols + at)) - m) * log2e});
  };
  Accumulator sum(1, f, const_(f, 0.0), {i}, r2);
  UOp sum_loop = end(sum.update(sum.current() + e(r2)), {r2});
  UOp inv = UOp::make(Op::RECIP, {sum.result(sum_loop)});
  UOp row = end(store(index(out, i * cols + j), e(j) * inv), {j});
  return sink({end(row, {i})}, "softmax");
}

UOp layernorm_kernel(int64_t rows, int64_t cols) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr()), w = param(2, f.ptr()), b = param(3, f.ptr());
  UOp i = range(rows, 0, AxisKind::Global);
  UOp r1 = range(cols, 1, AxisKind::Reduce), r2 = range(cols, 2, AxisKind::Reduce),
      j = range(cols, 3, AxisKind::Global);
  UOp inv_n = const_(f, 1.0 / double(cols));
  Accumulator sum(0, f, const_(f, 0.0), {i}, r1);
  UOp mean =
      sum.result(end(sum.update(sum.current() + load(index(x, i * cols + r1))), {r1})) * inv_n;
  Accumulator sq(1, f, const_(f, 0.0), {i}, r2);
  UOp d = load(index(x, i * cols + r2)) - mean;
  UOp var = sq.result(end(sq.update(sq.current() + d * d), {r2})) * inv_n;
  UOp rstd = UOp::make(Op::RECIP, {UOp::make(Op::SQRT, {var + const_(f, 1e-5)})});
  UOp y = (load(index(x, i * cols + j)) - mean) * rstd * load(index(w, j)) + load(index(b, j));
  return sink({end(end(store(index(out, i * cols + j), y), {j}), {i})}, "layernorm");
}

UOp tiled_matmul_kernel(int64_t m, int64_t n, int64_t k, int64_t tile) {
  if (tile <= 0 || m % tile || n % tile || k % tile)
    throw std::invalid_argument("tiled_matmul_kernel: m, n and k must be multiples of the tile");
  DType f = dtypes::float32;
  UOp c = param(0, f.ptr()), a = param(1, f.ptr()), b = param(2, f.ptr());
  UOp bx = special(SpecialKind::BlockIdx, 0, n / tile),
      by = special(SpecialKind::BlockIdx, 1, m / tile);
  UOp tx = special(SpecialKind::ThreadIdx, 0, tile), ty = special(SpecialKind::ThreadIdx, 1, tile);
  UOp as = define_local(f, tile * tile, 0), bs = define_local(f, tile * tile, 1);
  UOp acc = define_reg(f, 1, 0), zero = i32(0);
  UOp init = store(index(acc, zero), const_(f, 0.0));
  UOp row = by * tile + ty, col = bx * tile + tx;
  UOp kt = range(k / tile, 0, AxisKind::Loop);
  UOp stage_a = store(index(as, ty * tile + tx), load(index(a, row * k + kt * tile + tx)));
  UOp stage_b = store(index(bs, ty * tile + tx), load(index(b, (kt * tile + ty) * n + col)));
  UOp staged = UOp::make(Op::BARRIER, dtypes::void_, {stage_a, stage_b});
  UOp as_ready = after(as, {staged}), bs_ready = after(bs, {staged});
  UOp kk = range(tile, 1, AxisKind::Reduce);
  UOp acc_in = after(acc, {init, kk});
  UOp prod = load(index(as_ready, ty * tile + kk)) * load(index(bs_ready, kk * tile + tx));
  UOp inner = end(store(index(acc_in, zero), load(index(acc_in, zero)) + prod), {kk});
  UOp consumed = UOp::make(Op::BARRIER, dtypes::void_, {inner});  // before the next staging
  UOp outer = end(consumed, {kt});
  UOp result = load(index(after(acc, {outer}), zero));
  return sink({store(index(c, row * n + col), result)}, "tiled_matmul");
}

UOp block_sum_kernel(int64_t n) {
  DType f = dtypes::float32;
  const int64_t threads = 128;
  UOp out = param(0, f.ptr()), x = param(1, f.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, threads);
  UOp acc = define_reg(f, 1, 0), zero = i32(0), fzero = const_(f, 0.0);
  UOp init = store(index(acc, zero), fzero);
  UOp i = range((n + threads - 1) / threads, 0, AxisKind::Loop);
  UOp gi = i * threads + t;
  UOp acc_in = after(acc, {init, i});
  UOp loop =
      end(store(index(acc_in, zero), load(index(acc_in, zero)) + load(index(x, gi, gi < n), fzero)),
          {i});
  UOp v = load(index(after(acc, {loop}), zero));
  for (int64_t lane_mask : {16, 8, 4, 2, 1})
    v = v + UOp::make(Op::SHUFFLE, {v, i32(lane_mask)}, ShuffleMode::Xor);
  UOp partials = define_local(f, threads / 32, 0);
  UOp first_lane = alu(Op::CMPEQ, t % 32, i32(0)), first_thread = alu(Op::CMPEQ, t, i32(0));
  UOp published =
      UOp::make(Op::BARRIER, dtypes::void_, {store(index(partials, t / 32, first_lane), v)});
  UOp ready = after(partials, {published});
  UOp total = fzero;
  for (int64_t w = 0; w < threads / 32; ++w)
    total = total + load(index(ready, i32(w), first_thread), fzero);
  return sink({store(index(out, zero, first_thread), total)}, "block_sum");
}

UOp mma_matmul_kernel(int64_t m, int64_t n, int64_t k) {
  if (m % 16 || n % 8 || k % 16)
    throw std::invalid_argument("mma_matmul_kernel: m must be a multiple of 16, n of 8, k of 16");
  const MmaLayout& L = *find_mma_layout("m16n8k16_bf16_f32");
  DType bf = dtypes::bfloat16, f = dtypes::float32;
  int na = L.a.fragment.count(), nb = L.b.fragment.count(), nc = L.c.fragment.count();
  UOp c = param(0, f.ptr()), a = param(1, bf.ptr()), b = param(2, bf.ptr());
  UOp bx = special(SpecialKind::BlockIdx, 0, n / 8), by = special(SpecialKind::BlockIdx, 1, m / 16);
  UOp lane = special(SpecialKind::ThreadIdx, 0, 32);
  // Element i of this lane's fragment of an operand, as a flat index into its tile.
  auto at = [&](const FragmentLayout& op, int i) {
    return op.row_of(lane, i32(i)) * op.cols + op.col_of(lane, i32(i));
  };
  UOp sa = define_local(bf, 16 * 16, 0), sb = define_local(bf, 16 * 8, 1);
  UOp acc = define_reg(f, nc, 0);
  std::vector<UOp> inits;
  for (int i = 0; i < nc; ++i) inits.push_back(store(index(acc, i32(i)), const_(f, 0.0)));
  UOp init = UOp::make(Op::GROUP, std::span<const UOp>(inits));
  UOp kt = range(k / 16, 0, AxisKind::Loop);
  std::vector<UOp> staging;
  for (int j = 0; j < 8; ++j) {  // the 16x16 tile of a: 8 elements per lane
    UOp e = lane * 8 + j;
    staging.push_back(
        store(index(sa, e), load(index(a, (by * 16 + e / 16) * k + kt * 16 + e % 16))));
  }
  for (int j = 0; j < 4; ++j) {  // the 16x8 tile of b: 4 elements per lane
    UOp e = lane * 4 + j;
    staging.push_back(store(index(sb, e), load(index(b, (kt * 16 + e / 8) * n + bx * 8 + e % 8))));
  }
  UOp staged = UOp::make(Op::BARRIER, dtypes::void_, std::span<const UOp>(staging));
  UOp sa_ready = after(sa, {staged}), sb_ready = after(sb, {staged});
  std::vector<UOp> fa, fb, fc;
  for (int i = 0; i < na; ++i) fa.push_back(load(index(sa_ready, at(L.a, i))));
  for (int i = 0; i < nb; ++i) fb.push_back(load(index(sb_ready, at(L.b, i))));
  UOp acc_in = after(acc, {init, kt});
  for (int i = 0; i < nc; ++i) fc.push_back(load(index(acc_in, i32(i))));
  UOp d = UOp::make(Op::MMA,
                    {UOp::make(Op::VECTORIZE, std::span<const UOp>(fa)),
                     UOp::make(Op::VECTORIZE, std::span<const UOp>(fb)),
                     UOp::make(Op::VECTORIZE, std::span<const UOp>(fc))},
                    L.name);
  std::vector<UOp> updates;
  for (int i = 0; i < nc; ++i)
    updates.push_back(
        store(index(acc_in, i32(i)), UOp::make(Op::EXTRACT, {d}, std::vector<int64_t>{i})));
  UOp consumed = UOp::make(Op::BARRIER, dtypes::void_, std::span<const UOp>(updates));
  UOp loop = end(consumed, {kt});
  UOp result = after(acc, {loop});
  std::vector<UOp> outs;
  for (int i = 0; i < nc; ++i) {
    UOp row = by * 16 + L.c.row_of(lane, i32(i)), col = bx * 8 + L.c.col_of(lane, i32(i));
    outs.push_back(store(index(c, row * n + col), load(index(result, i32(i)))));
  }
  return sink({UOp::make(Op::GROUP, std::span<const UOp>(outs))}, "mma_matmul");
}

namespace {

// Byte offsets of element (mn, k) of a 16-bit tile staged for wgmma, and its descriptor's
// leading and stride byte offsets (PTX, "Shared Memory Matrix Layout"). K-major: with no
// swizzle, 8x16-byte core matrices, K's next one 128 bytes on and MN's next 8 rows
// (k/8)*128; swizzled, lines of the swizzle's width W, k beyond W/2 elements in the next
// block of `rows` lines, 8-row groups 8W apart. MN-major: MN contiguous; with no swizzle,
// core matrices of 8 k-rows by 8 mn, MN's next 128 bytes on and K's next (mn/8)*128;
// swizzled, lines of W bytes of mn, one per k, the next W/2 of mn K lines on.
struct StagedTile {
  Swizzle s;
  bool mn_major;
  int64_t rows, k;  // the MN extent and K
  int64_t width() const { return swizzle_width(s); }
  int64_t elems() const {  // the allocation, in 16-bit elements
    if (!mn_major || s == Swizzle::None) return rows * k;
    int64_t e = width() / 2;
    return (rows + e - 1) / e * k * width() / 2;
  }
  UOp offset(const UOp& mn, const UOp& kk) const {
    if (s == Swizzle::None)
      return mn_major ? kk / 8 * (rows / 8 * 128) + mn / 8 * 128 + kk % 8 * 16 + mn % 8 * 2
                      : mn / 8 * (k / 8 * 128) + kk / 8 * 128 + mn % 8 * 16 + kk % 8 * 2;
    int64_t e = width() / 2;
    return mn_major ? swizzled_offset(s, mn / e * k + kk, mn % e * 2)
                    : swizzled_offset(s, kk / e * rows + mn, kk % e * 2);
  }
  int64_t lbo() const {
    if (s == Swizzle::None) return mn_major ? rows / 8 * 128 : 128;
    return mn_major ? k * width() : 16;  // K-major swizzled: unused (1 in 16-byte units)
  }
  int64_t sbo() const {
    if (s == Swizzle::None) return mn_major ? 128 : k / 8 * 128;
    return 8 * width();
  }
  // The descriptor of the k-step starting at k0 (row 0 of a pattern: no XOR applies).
  UOp desc(const UOp& buffer, int64_t k0) const {
    int64_t start;
    if (s == Swizzle::None)
      start = mn_major ? k0 / 8 * (rows / 8 * 128) : k0 / 8 * 128;
    else
      start =
          mn_major ? k0 * width() : k0 / (width() / 2) * rows * width() + k0 % (width() / 2) * 2;
    return UOp::make(Op::MATRIX_DESC, dtypes::uint64, {index(buffer, i32(start / 2))},
                     std::vector<int64_t>{int64_t(s), mn_major ? 1 : 0, lbo(), sbo()});
  }
};

}  // namespace

UOp wgmma_tile_kernel(const WgmmaTile& o) {
  int64_t e = o.swizzle == Swizzle::None ? 8 : swizzle_width(o.swizzle) / 2;
  if (o.n % 8 || o.n < 8 || o.n > 256 || o.k % 16 || o.k % e)
    throw std::invalid_argument(
        "wgmma_tile_kernel: n must be a multiple of 8 up to 256, k of 16 "
        "and of the swizzle's width in elements");
  std::string type = o.in == dtypes::bfloat16 ? "bf16" : "f16";
  const MmaLayout& L = *find_mma_layout("wgmma_m64n" + std::to_string(o.n) + "k16_" + type + "_" +
                                        (o.a_in_registers ? "rs" : "ss"));
  DType f = dtypes::float32;
  UOp c = param(0, f.ptr()), a = param(1, o.in.ptr()), b = param(2, o.in.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, 128);
  int64_t align = swizzle_alignment(o.swizzle);
  StagedTile ta{o.swizzle, false, 64, o.k}, tb{o.swizzle, o.b_mn_major, o.n, o.k};
  // Ordinary stores stage a tile: element (mn, k) of a row-major source whose rows run
  // along `mn` (a, b^T) or along k (b as stored).
  std::vector<UOp> fills;
  auto stage = [&](const StagedTile& tile, const UOp& buf, const UOp& src, bool src_k_rows,
                   int64_t axis) {
    int64_t total = tile.rows * tile.k;
    UOp r = range((total + 127) / 128, axis, AxisKind::Loop);
    UOp idx = r * 128 + t, in_range = idx < total;
    UOp mn = src_k_rows ? idx % tile.rows : idx / tile.k,
        kk = src_k_rows ? idx / tile.rows : idx % tile.k;
    UOp v = load(index(src, idx, in_range), const_(o.in, 0.0));
    UOp at = tile.offset(mn, kk) / 2;
    fills.push_back(end(store(index(buf, at, in_range), v), {r}));
  };
  UOp sb = define_local(o.in, tb.elems(), 1, align, o.swizzle), sa;
  if (!o.a_in_registers) {
    sa = define_local(o.in, ta.elems(), 0, align, o.swizzle);
    stage(ta, sa, a, false, 0);
  }
  stage(tb, sb, b, true, 1);
  UOp fenced =
      UOp::make(Op::FENCE, dtypes::void_, std::span<const UOp>(fills), std::string("proxy_async"));
  UOp staged = UOp::make(Op::BARRIER, dtypes::void_, {fenced});
  int nc = L.c.fragment.count();
  UOp acc = UOp::make(Op::VECTORIZE, std::vector<UOp>(size_t(nc), const_(f, 0.0)));
  std::vector<UOp> ready = {staged, acc}, frags;
  for (int64_t k0 = 0; o.a_in_registers && k0 < o.k; k0 += 16) {
    std::vector<UOp> elems;
    for (int i = 0; i < 8; ++i) {
      UOp row = L.a.row_of(t, i32(i)), col = L.a.col_of(t, i32(i)) + k0;
      elems.push_back(load(index(a, row * o.k + col)));
    }
    frags.push_back(UOp::make(Op::VECTORIZE, std::span<const UOp>(elems)));
    ready.push_back(frags.back());
  }
  UOp wfence =
      UOp::make(Op::FENCE, dtypes::void_, std::span<const UOp>(ready), std::string("wgmma"));
  UOp sb_ready = after(sb, {staged});
  for (int64_t k0 = 0; k0 < o.k; k0 += 16) {
    UOp av = o.a_in_registers ? frags[size_t(k0 / 16)] : ta.desc(after(sa, {staged}), k0);
    acc = UOp::make(Op::WGMMA, acc.dtype(), {av, tb.desc(sb_ready, k0), acc, wfence}, L.name);
  }
  UOp commit = UOp::make(Op::WGMMA_COMMIT, dtypes::void_, {acc});
  UOp result = UOp::make(Op::WGMMA_WAIT, acc.dtype(), {acc, commit}, int64_t(0));
  std::vector<UOp> outs;
  for (int i = 0; i < nc; ++i)
    outs.push_back(store(index(c, L.c.row_of(t, i32(i)) * o.n + L.c.col_of(t, i32(i))),
                         UOp::make(Op::EXTRACT, {result}, std::vector<int64_t>{i})));
  return sink({UOp::make(Op::GROUP, std::span<const UOp>(outs))}, "wgmma_tile");
}

UOp tma_round_trip_kernel(DType dtype, const std::vector<int64_t>& box, Swizzle swizzle) {
  int64_t count = 1, item = dtype.itemsize();
  for (int64_t b : box) count *= b;
  std::vector<int64_t> map_arg = {1, int64_t(swizzle)};
  map_arg.insert(map_arg.end(), box.begin(), box.end());
  UOp in = UOp::make(Op::TENSOR_MAP, dtype.ptr(), {}, map_arg);
  map_arg[0] = 2;
  UOp out_map = UOp::make(Op::TENSOR_MAP, dtype.ptr(), {}, map_arg);
  UOp dense = param(0, dtype.ptr());
  std::vector<UOp> load_at, store_at;
  for (size_t d = 0; d < box.size(); ++d) {
    load_at.push_back(define_var("load" + std::to_string(d), -65536, 65536));
    store_at.push_back(define_var("store" + std::to_string(d), -65536, 65536));
  }
  UOp t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp tile =
      define_local(dtype, count, 0, std::max<int64_t>(128, swizzle_alignment(swizzle)), swizzle);
  UOp bar = define_local(dtypes::int64, 1, 1, 8);
  UOp first = UOp::make(Op::IF, {t < 1});
  UOp init =
      UOp::make(Op::MBARRIER_INIT, dtypes::void_, {index(after(bar, {first}), i32(0)), i32(1)});
  UOp fenced = UOp::make(Op::FENCE, dtypes::void_, {init}, std::string("mbarrier_init"));
  UOp published = UOp::make(Op::BARRIER, dtypes::void_, {UOp::make(Op::ENDIF, {first, fenced})});
  UOp ready = after(bar, {published});
  // Thread 0 expects the box's bytes and starts the copy.
  UOp issuer = UOp::make(Op::IF, {t < 1, published});
  UOp at = index(after(ready, {issuer}), i32(0));
  UOp expect = UOp::make(Op::MBARRIER_ARRIVE, dtypes::void_, {at, i32(count * item)});
  std::vector<UOp> load_src = {in, index(after(tile, {issuer}), i32(0)),
                               index(after(ready, {expect}), i32(0))};
  load_src.insert(load_src.end(), load_at.begin(), load_at.end());
  UOp copy = UOp::make(Op::TMA_LOAD, dtypes::void_, std::span<const UOp>(load_src));
  UOp issued = UOp::make(Op::ENDIF, {issuer, copy});
  UOp landed =
      UOp::make(Op::MBARRIER_WAIT, dtypes::void_, {index(after(ready, {issued}), i32(0)), i32(0)});
  UOp full = after(tile, {landed});
  // Every thread reads elements of the box where the swizzle put them.
  UOp r = range((count + 31) / 32, 0, AxisKind::Loop);
  UOp e = r * 32 + t, live = e < count;
  UOp place = e;
  if (swizzle != Swizzle::None) {
    int64_t per_row = swizzle_width(swizzle) / item;
    place = swizzled_offset(swizzle, e / per_row, e % per_row * item) / item;
  }
  UOp copied =
      end(store(index(dense, e, live), load(index(full, place, live), const_(dtype, 0))), {r});
  // Thread 0 stores the tile back through the second map, once everyone has read it.
  UOp read = UOp::make(Op::BARRIER, dtypes::void_, {copied});
  UOp storer = UOp::make(Op::IF, {t < 1, read});
  std::vector<UOp> store_src = {out_map, index(after(full, {storer}), i32(0))};
  store_src.insert(store_src.end(), store_at.begin(), store_at.end());
  UOp stored = UOp::make(Op::TMA_STORE, dtypes::void_, std::span<const UOp>(store_src));
  UOp committed = UOp::make(Op::BULK_COMMIT, dtypes::void_, {stored});
  UOp drained = UOp::make(Op::BULK_WAIT, dtypes::void_, {committed}, int64_t(0));
  return sink({UOp::make(Op::ENDIF, {storer, drained})}, "tma_round_trip");
}

UOp wgmma_peak_kernel(int64_t blocks, int64_t iterations) {
  DType bf = dtypes::bfloat16, f = dtypes::float32;
  const MmaLayout& L = *find_mma_layout("wgmma_m64n256k16_bf16_ss");
  UOp out = param(0, f.ptr());
  UOp b = special(SpecialKind::BlockIdx, 0, blocks), t = special(SpecialKind::ThreadIdx, 0, 256);
  StagedTile ta{Swizzle::B128, false, 64, 64}, tb{Swizzle::B128, false, 256, 64};
  // Two copies of each tile, so that each iteration's descriptors depend on it.
  UOp sa = define_local(bf, 2 * ta.elems(), 0, 1024, Swizzle::B128),
      sb = define_local(bf, 2 * tb.elems(), 1, 1024, Swizzle::B128);
  std::vector<UOp> fills;
  int64_t axis = 0;
  for (const auto& [buf, n] : {std::pair{sa, 2 * ta.elems()}, std::pair{sb, 2 * tb.elems()}}) {
    UOp r = range(n / 256, axis++, AxisKind::Loop);
    UOp e = r * 256 + t;
    fills.push_back(end(store(index(buf, e), cast(cast(e % 7 - i32(3), f), bf)), {r}));
  }
  UOp staged = UOp::make(Op::BARRIER, dtypes::void_,
                         {UOp::make(Op::FENCE, dtypes::void_, std::span<const UOp>(fills),
                                    std::string("proxy_async"))});
  // The accumulator is carried from iteration to iteration in registers, so that every
  // wgmma's result is used (ptxas drops wgmmas whose results are dead).
  UOp keep = define_reg(f, 128, 0);
  std::vector<UOp> zeroes;
  for (int e = 0; e < 128; ++e) zeroes.push_back(store(index(keep, i32(e)), const_(f, 0.0)));
  UOp zeroed = group({UOp::make(Op::GROUP, std::span<const UOp>(zeroes)), staged});
  UOp i = range(iterations, axis, AxisKind::Loop);
  UOp carried = after(keep, {zeroed, i});
  std::vector<UOp> in_regs;
  for (int e = 0; e < 128; ++e) in_regs.push_back(load(index(carried, i32(e))));
  UOp acc = UOp::make(Op::VECTORIZE, std::span<const UOp>(in_regs));
  UOp fence = UOp::make(Op::FENCE, dtypes::void_, {staged, acc}, std::string("wgmma"));
  UOp copy = i % 2;
  for (int c = 0; c < 16; ++c) {
    int64_t k0 = c % 4 * 16;
    UOp da =
        UOp::make(Op::MATRIX_DESC, dtypes::uint64,
                  {index(after(sa, {staged}), copy * ta.elems() + ta.desc(sa, k0).src(0).src(1))},
                  ta.desc(sa, k0).arg());
    UOp db =
        UOp::make(Op::MATRIX_DESC, dtypes::uint64,
                  {index(after(sb, {staged}), copy * tb.elems() + tb.desc(sb, k0).src(0).src(1))},
                  tb.desc(sb, k0).arg());
    acc = UOp::make(Op::WGMMA, acc.dtype(), {da, db, acc, fence}, L.name);
  }
  UOp done = UOp::make(Op::WGMMA_WAIT, acc.dtype(),
                       {acc, UOp::make(Op::WGMMA_COMMIT, dtypes::void_, {acc})}, int64_t(0));
  std::vector<UOp> back;
  for (int e = 0; e < 128; ++e)
    back.push_back(
        store(index(carried, i32(e)), UOp::make(Op::EXTRACT, {done}, std::vector<int64_t>{e})));
  UOp kept = end(UOp::make(Op::GROUP, std::span<const UOp>(back)), {i});
  UOp final = after(keep, {kept});
  UOp total = load(index(final, i32(0)));
  for (int e = 1; e < 128; e *= 2) total = total + load(index(final, i32(e)));
  return sink({store(index(out, b * 256 + t), total)}, "wgmma_peak");
}

UOp mma_sync_peak_kernel(int64_t blocks, int64_t iterations) {
  DType bf = dtypes::bfloat16, f = dtypes::float32;
  const MmaLayout& L = *find_mma_layout("m16n8k16_bf16_f32");
  UOp out = param(0, f.ptr());
  UOp b = special(SpecialKind::BlockIdx, 0, blocks), t = special(SpecialKind::ThreadIdx, 0, 256);
  UOp keep = define_reg(f, 1, 0);
  UOp i = range(iterations, 0, AxisKind::Loop);
  UOp x = cast(cast(i % 2, f), bf);  // the operands change with the iteration: nothing hoists
  UOp a = UOp::make(Op::VECTORIZE, std::vector<UOp>(8, x));
  UOp bv = UOp::make(Op::VECTORIZE, std::vector<UOp>(4, const_(bf, 1.0)));
  UOp total = const_(f, 0.0);
  for (int j = 0; j < 8; ++j) {  // independent chains (distinct starts: none is merged)
    UOp acc = UOp::make(Op::VECTORIZE, std::vector<UOp>(4, const_(f, double(j))));
    for (int s = 0; s < 4; ++s) acc = UOp::make(Op::MMA, {a, bv, acc}, L.name);
    total = total + UOp::make(Op::EXTRACT, {acc}, std::vector<int64_t>{0});
  }
  UOp zeroed = store(index(keep, i32(0)), const_(f, 0.0));
  UOp acc = after(keep, {zeroed, i});  // summed over the iterations: every one is used
  UOp kept = end(store(index(acc, i32(0)), load(index(acc, i32(0))) + total), {i});
  return sink({store(index(out, b * 256 + t), load(index(after(keep, {kept}), i32(0))))},
              "mma_sync_peak");
}

namespace {
// Tile g of the streamed tensor: 64 rows by 256 bf16 columns of 8192.
constexpr int64_t kStreamCols = 8192, kTileCols = 256, kTileRows = 64;
UOp tile_col(const UOp& g) { return g % (kStreamCols / kTileCols) * kTileCols; }
UOp tile_row(const UOp& g) { return g / (kStreamCols / kTileCols) * kTileRows; }
}  // namespace

UOp tma_stream_kernel(int64_t blocks, int64_t tiles, int64_t stages) {
  DType bf = dtypes::bfloat16, f = dtypes::float32;
  int64_t tile = kTileRows * kTileCols;
  UOp map =
      UOp::make(Op::TENSOR_MAP, bf.ptr(), {}, std::vector<int64_t>{1, 0, kTileCols, kTileRows});
  UOp out = param(0, f.ptr());
  UOp b = special(SpecialKind::BlockIdx, 0, blocks), t = special(SpecialKind::ThreadIdx, 0, 32);
  UOp ring = define_local(bf, stages * tile, 0, 128),
      bars = define_local(dtypes::int64, stages, 1, 8);
  UOp first = UOp::make(Op::IF, {t < 1});
  std::vector<UOp> inits;
  for (int64_t s = 0; s < stages; ++s)
    inits.push_back(
        UOp::make(Op::MBARRIER_INIT, dtypes::void_, {index(after(bars, {first}), i32(s)), i32(1)}));
  UOp fenced = UOp::make(Op::FENCE, dtypes::void_, std::span<const UOp>(inits),
                         std::string("mbarrier_init"));
  UOp published = UOp::make(Op::BARRIER, dtypes::void_, {UOp::make(Op::ENDIF, {first, fenced})});
  UOp issuer = UOp::make(Op::IF, {t < 1, published});
  UOp ready = after(bars, {issuer}), keep = define_reg(f, 1, 0);
  UOp zeroed = store(index(after(keep, {issuer}), i32(0)), const_(f, 0.0));
  UOp j = range(tiles, 0, AxisKind::Loop);
  UOp s = j % stages, parity = j / stages % 2;
  // The slot's previous load (a parity-1 wait passes at once the first time round).
  UOp freed = UOp::make(Op::MBARRIER_WAIT, dtypes::void_, {index(ready, s), i32(1) - parity});
  UOp slot = after(ring, {freed});
  UOp acc = after(keep, {zeroed, j});
  UOp sum = store(index(acc, i32(0)),
                  load(index(acc, i32(0))) +
                      cast(load(index(slot, s * tile, i32(stages - 1) < j), const_(bf, 0.0)), f));
  UOp expect = UOp::make(Op::MBARRIER_ARRIVE, dtypes::void_,
                         {index(after(ready, {freed}), s), i32(tile * 2), sum});
  UOp g = b + j * blocks;
  UOp copy = UOp::make(
      Op::TMA_LOAD, dtypes::void_,
      {map, index(slot, s * tile), index(after(ready, {expect}), s), tile_col(g), tile_row(g)});
  UOp streamed = end(copy, {j});
  // The last load of each slot, waited for and counted.
  UOp total = load(index(after(keep, {streamed}), i32(0)));
  std::vector<UOp> drains;
  for (int64_t st = 0; st < stages && st < tiles; ++st) {
    int64_t last = st + (tiles - 1 - st) / stages * stages;
    UOp landed = UOp::make(Op::MBARRIER_WAIT, dtypes::void_,
                           {index(after(ready, {streamed}), i32(st)), i32(last / stages % 2)});
    drains.push_back(landed);
    total = total + cast(load(index(after(ring, {landed}), i32(st * tile))), f);
  }
  std::vector<UOp> done = drains;
  done.push_back(store(index(out, b), total));
  return sink({UOp::make(Op::ENDIF, {issuer, UOp::make(Op::GROUP, std::span<const UOp>(done))})},
              "tma_stream");
}

UOp cp_async_stream_kernel(int64_t blocks, int64_t tiles) {
  DType bf = dtypes::bfloat16, f = dtypes::float32, v8 = bf.vec(8);
  int64_t tile = kTileRows * kTileCols;
  UOp out = param(0, f.ptr()), in = param(1, bf.ptr());
  UOp b = special(SpecialKind::BlockIdx, 0, blocks), t = special(SpecialKind::ThreadIdx, 0, 256);
  UOp buf = define_local(bf, tile, 0, 128), keep = define_reg(f, 1, 0);
  UOp zeroed = store(index(keep, i32(0)), const_(f, 0.0));
  UOp j = range(tiles, 0, AxisKind::Loop);
  UOp g = b + j * blocks;
  std::vector<UOp> copies;
  for (int64_t c = 0; c < tile / 8 / 256; ++c) {  // 16-byte chunks: 8 per thread
    UOp chunk = t + c * 256, row = chunk / (kTileCols / 8), col = chunk % (kTileCols / 8) * 8;
    UOp src =
        UOp::make(Op::INDEX, v8.ptr(), {in, (tile_row(g) + row) * kStreamCols + tile_col(g) + col});
    UOp dst = UOp::make(Op::INDEX, v8.ptr(AddrSpace::Local), {buf, chunk * 8});
    copies.push_back(UOp::make(Op::ASYNC_COPY, dtypes::token, {dst, src}));
  }
  UOp group = UOp::make(Op::ASYNC_COMMIT, dtypes::token, std::span<const UOp>(copies));
  UOp landed = UOp::make(Op::WAIT_GROUP, dtypes::void_, {group}, int64_t(0));
  UOp acc = after(keep, {zeroed, j});
  UOp sum = store(index(acc, i32(0)),
                  load(index(acc, i32(0))) + cast(load(index(after(buf, {landed}), t * 8)), f));
  UOp streamed = end(sum, {j});
  return sink({store(index(out, b * 256 + t), load(index(after(keep, {streamed}), i32(0))))},
              "cp_async_stream");
}

namespace {
UOp ping_pong(int64_t iterations, bool mbarriers) {
  DType f = dtypes::float32;
  UOp out = param(0, f.ptr());
  UOp t = special(SpecialKind::ThreadIdx, 0, 64);
  UOp j = range(iterations, 0, AxisKind::Loop);
  UOp turn;
  if (!mbarriers) {  // two block barriers per turn
    UOp tick = store(index(define_reg(f, 1, 0), i32(0)), cast(j, f));
    UOp first = UOp::make(Op::BARRIER, dtypes::void_, {tick});
    turn = end(UOp::make(Op::BARRIER, dtypes::void_, {first}), {j});
    return sink({store(index(after(out, {turn}), t), const_(f, 1.0))}, "barrier_ping_pong");
  }
  UOp bars = define_local(dtypes::int64, 2, 0, 8);
  UOp first = UOp::make(Op::IF, {t < 1});
  UOp inits = UOp::make(Op::GROUP, {UOp::make(Op::MBARRIER_INIT, dtypes::void_,
                                              {index(after(bars, {first}), i32(0)), i32(32)}),
                                    UOp::make(Op::MBARRIER_INIT, dtypes::void_,
                                              {index(after(bars, {first}), i32(1)), i32(32)})});
  UOp fenced = UOp::make(Op::FENCE, dtypes::void_, {inits}, std::string("mbarrier_init"));
  UOp published = UOp::make(Op::BARRIER, dtypes::void_, {UOp::make(Op::ENDIF, {first, fenced})});
  std::vector<UOp> sides;
  for (int64_t w : {0, 1}) {  // warp w arrives on barrier w and waits on the other
    UOp mine = UOp::make(Op::IF, {w == 0 ? t < 32 : UOp::make(Op::CMPLT, {i32(31), t}), published});
    UOp ready = after(bars, {mine});
    UOp k = range(iterations, 1 + w, AxisKind::Loop), par = k % 2;
    // Both effects are the loop's body (a GROUP under its END): the arrive reads nothing of
    // the loop, and would otherwise run once, before it.
    UOp body;
    if (w == 0) {
      UOp arrived = UOp::make(Op::MBARRIER_ARRIVE, dtypes::void_, {index(ready, i32(0)), i32(0)});
      body = group({arrived, UOp::make(Op::MBARRIER_WAIT, dtypes::void_,
                                       {index(ready, i32(1)), par, arrived})});
    } else {
      UOp waited = UOp::make(Op::MBARRIER_WAIT, dtypes::void_, {index(ready, i32(0)), par});
      body = group({waited, UOp::make(Op::MBARRIER_ARRIVE, dtypes::void_,
                                      {index(ready, i32(1)), i32(0), waited})});
    }
    sides.push_back(UOp::make(Op::ENDIF, {mine, end(body, {k})}));
  }
  return sink({store(index(after(out, {sides[0], sides[1]}), t), const_(f, 1.0))},
              "mbarrier_ping_pong");
}
}  // namespace

UOp mbarrier_ping_pong_kernel(int64_t iterations) { return ping_pong(iterations, true); }
UOp barrier_ping_pong_kernel(int64_t iterations) { return ping_pong(iterations, false); }

std::vector<std::string> builtin_kernel_names() {
  return {"add", "sum", "matmul", "multi", "softmax", "tiled_matmul", "block_sum", "mma_matmul"};
}

UOp builtin_kernel(const std::string& name) {
  if (name == "add") return elementwise_add_kernel(4, 100, dtypes::float32, true);
  if (name == "sum") return reduce_kernel(16, 1000, 1, Op::ADD, dtypes::float32);
  if (name == "matmul") return matmul_kernel(64, 64, 64, dtypes::float32);
  if (name == "softmax") return softmax_kernel(64, 100);
  if (name == "multi") return sum_and_squares_kernel(16, 1000);
  if (name == "tiled_matmul") return tiled_matmul_kernel(64, 64, 64, 16);
  if (name == "block_sum") return block_sum_kernel(1000);
  if (name == "mma_matmul") return mma_matmul_kernel(64, 64, 64);
  std::string known;
  for (const std::string& n : builtin_kernel_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("no built-in kernel named '" + name + "' (known: " + known + ")");
}

}  // namespace kitten
