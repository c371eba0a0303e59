#include "kernels/flash_attention_fwd.h"

#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <stdexcept>

#include "tiles/tile.h"

namespace kitten {

using namespace tiles;

double AttentionProblem::softmax_scale() const { return scale ? scale : 1.0 / std::sqrt(d); }

std::string AttentionProblem::to_string() const {
  return "D" + std::to_string(d) + " " + std::string(in.name()) + "->" + std::string(out.name()) +
         (mask == AttentionMask::Causal ? " causal" : "") + (key_lengths ? " key-lengths" : "") +
         (scale ? " scale " + std::to_string(scale) : "");
}

AttentionShape AttentionShape::contiguous(int64_t b, int64_t h, int64_t hkv, int64_t nq,
                                          int64_t nkv, int d) {
  AttentionShape s{b, h, hkv, nq, nkv};
  auto set = [&](int64_t* st, int64_t heads, int64_t n) {
    st[2] = d, st[1] = n * d, st[0] = heads * n * d;
  };
  set(s.q_stride, h, nq), set(s.k_stride, hkv, nkv), set(s.v_stride, hkv, nkv);
  set(s.o_stride, h, nq);
  return s;
}

std::string AttentionShape::to_string() const {
  return std::to_string(b) + "," + std::to_string(h) + "," + std::to_string(hkv) + "," +
         std::to_string(nq) + "," + std::to_string(nkv);
}

// Measured on the H100 (docs/dsl.md): on Hopper the wgmma schedule, two consumer
// warpgroups over 128 keys a step in three stages (BKV 64, 96, 112, 144 and 176 were slower, 256
// spills), with P V under the next block's softmax (PV=1) at D128: 5% faster there, 5% slower
// at D64; PINGPONG=1 is slower at both. Without wgmma: at
// D128 eight warps of 16 rows over 128 keys a step (fewer rescales of O per key) in three stages
// beat four warps over 64 keys by 4-6%; at D64 four warps of 32 rows (half the shared-memory reads
// per product) with Q read again every step fit the registers and win by 8%.
Schedule flash_attention_fwd_default_schedule(const AttentionProblem& p, const Target& target) {
  if (hopper_target(target))
    return Schedule::parse(p.d == 128 ? "BQ=128 BKV=128 WARPS=8 STAGES=3 QREG=0 WGMMA=1 PV=1"
                                      : "BQ=128 BKV=128 WARPS=8 STAGES=3 QREG=0 WGMMA=1");
  return Schedule::parse(p.d == 128 ? "BQ=128 BKV=128 WARPS=8 STAGES=3 QREG=1 WGMMA=0"
                                    : "BQ=128 BKV=64 WARPS=4 STAGES=2 QREG=0 WGMMA=0");
}

namespace {

struct Config {
  int bq, bkv, warps, stages, qreg, wgmma, pv, pingpong;
};

const char* const kKnobs[] = {"BQ", "BKV", "WARPS", "STAGES", "QREG", "WGMMA", "PV", "PINGPONG"};

Config config(const AttentionProblem& p, const Schedule& s, const Target& t) {
  Schedule d = flash_attention_fwd_default_schedule(p, t);
  for (const ScheduleEntry& e : s.entries())
    if (e.axis || e.part ||
        std::find(std::begin(kKnobs), std::end(kKnobs), e.name) == std::end(kKnobs))
      throw ScheduleError(
          "flash_attention_fwd: '" + Schedule({e}).to_string() +
          "' is not a knob of the kernel (BQ BKV WARPS STAGES QREG WGMMA PV PINGPONG)");
  if (int w = int(s.knob_or("WGMMA", d.knob_or("WGMMA", 0))); w != d.knob_or("WGMMA", 0)) {
    Target other = t;  // the defaults of the path the schedule names
    if (!w) other.features &= ~kFeatureWgmma;
    d = flash_attention_fwd_default_schedule(p, other);
  }
  auto knob = [&](const char* n) { return int(s.knob_or(n, d.knob_or(n, 0))); };
  Config c{knob("BQ"),   knob("BKV"),   knob("WARPS"), knob("STAGES"),
           knob("QREG"), knob("WGMMA"), knob("PV"),    knob("PINGPONG")};
  auto refuse = [&](const std::string& why) {
    throw ScheduleError("flash_attention_fwd schedule '" + s.to_string() + "': " + why);
  };
  if (c.warps < 1 || c.bq <= 0 || c.bq % (16 * c.warps))
    refuse("BQ must be a positive multiple of 16*WARPS (each warp holds whole 16-row tiles)");
  if (c.bkv <= 0 || c.bkv % 16) refuse("BKV must be a positive multiple of 16");
  if (c.stages < 2) refuse("STAGES must be at least 2");
  if (c.warps * 32 > t.max_threads_per_block)
    refuse(std::to_string(c.warps * 32) + " threads, more than the target's " +
           std::to_string(t.max_threads_per_block));
  int64_t shared = int64_t(c.bq + 2 * c.stages * c.bkv) * p.d * p.in.itemsize();
  if (shared > t.shared_per_block_optin)
    refuse(std::to_string(shared) + " bytes of shared memory, more than the target's " +
           std::to_string(t.shared_per_block_optin));
  if (c.qreg != 0 && c.qreg != 1) refuse("QREG is 0 (Q read from shared memory every step) or 1");
  if (c.wgmma != 0 && c.wgmma != 1) refuse("WGMMA is 0 (mma.sync) or 1 (wgmma, TMA)");
  if (c.pv != 0 && (c.pv != 1 || !c.wgmma))
    refuse("PV is 0, or 1 with WGMMA=1 (P V under the next block's softmax)");
  if (c.pingpong != 0 && (c.pingpong != 1 || !c.pv || c.warps != 8))
    refuse("PINGPONG is 0, or 1 with PV=1 and WARPS=8 (two consumer warpgroups take turns)");
  if (c.wgmma && !hopper_target(t))
    refuse("WGMMA=1 needs wgmma, TMA, mbarriers and setmaxnreg, which " + t.arch + " lacks");
  if (c.wgmma && (c.warps % 4 || c.bq != 16 * c.warps || c.qreg || c.bkv > 256 ||
                  (c.warps / 4 + 1) * 128 > t.max_threads_per_block))
    refuse(
        "WGMMA=1: WARPS a multiple of 4 (consumer warpgroups of 64 rows), BQ = 16*WARPS, "
        "BKV at most 256, QREG=0 (wgmma reads Q in shared memory)");
  // Registers per thread for O and S in f32 and, with QREG, Q in pairs of 16-bit values.
  int rows = c.bq / c.warps, held = rows * (p.d + c.bkv) / 32 + c.qreg * rows * p.d / 64;
  if (held > 200)
    refuse(std::to_string(held) + " registers per thread hold O, S" + (c.qreg ? " and Q" : "") +
           " (at most 200): they would spill");
  return c;
}

// The widest swizzle whose lines a row of `bytes` holds whole.
Swizzle swizzle_for(int64_t bytes) {
  for (Swizzle s : {Swizzle::B128, Swizzle::B64, Swizzle::B32})
    if (bytes % swizzle_width(s) == 0) return s;
  return Swizzle::None;
}

// A stride variable given in units of 8 elements (16 bytes), so that copies are provably
// 16-byte aligned.
UOp stride(const std::string& name) { return define_var(name, 0, (1 << 28) - 1) * 8; }

const char* const kTensors[] = {"q", "k", "v", "o"};
const char* const kDims[] = {"batch", "head", "row"};

std::string stride_name(int tensor, int dim) {
  return std::string(kTensors[tensor]) + "_" + kDims[dim] + "_stride8";
}

constexpr int64_t kMaxGrid = 65535;  // blocks along y and z

}  // namespace

Schedule flash_attention_fwd_full_schedule(const AttentionProblem& p, const Schedule& schedule,
                                           const Target& target) {
  Config c = config(p, schedule, target);
  Schedule out;
  out.knob("BQ", c.bq).knob("BKV", c.bkv).knob("WARPS", c.warps).knob("STAGES", c.stages);
  out.knob("QREG", c.qreg).knob("WGMMA", c.wgmma);
  if (c.wgmma) out.knob("PV", c.pv).knob("PINGPONG", c.pingpong);
  return out;
}

UOp flash_attention_fwd_kernel(const AttentionProblem& p, const Schedule& schedule,
                               const Target& target) {
  if (p.d != 32 && p.d != 64 && p.d != 128)
    throw std::invalid_argument("flash_attention_fwd: D is 32, 64 or 128, not " +
                                std::to_string(p.d));
  if (p.in != dtypes::bfloat16 && p.in != dtypes::float16)
    throw std::invalid_argument("flash_attention_fwd: Q, K and V are bfloat16 or float16, not " +
                                std::string(p.in.name()));
  if (p.out != p.in && p.out != dtypes::float32)
    throw std::invalid_argument("flash_attention_fwd: O is " + std::string(p.in.name()) +
                                " or float32, not " + std::string(p.out.name()));
  if (!(p.softmax_scale() > 0) || !std::isfinite(p.softmax_scale()))
    throw std::invalid_argument("flash_attention_fwd: the scale must be positive and finite");
  Config c = config(p, schedule, target);
  const DType f32 = dtypes::float32;
  auto i32 = [](int64_t v) { return const_int(dtypes::int32, v); };
  auto f = [&](double v) { return const_(f32, v); };
  UOp B = define_var("B", 1, kMaxGrid), H = define_var("H", 1, kMaxGrid);
  UOp Hkv = define_var("Hkv", 1, kMaxGrid);
  UOp Nq = define_var("Nq", 1, (1 << 24)), Nkv = define_var("Nkv", 1, (1 << 24));
  UOp st[4][3];
  for (int t = 0; t < 4; ++t)
    for (int d = 0; d < 3; ++d) st[t][d] = stride(stride_name(t, d));

  Kernel k = c.wgmma ? Kernel("flash_attention_fwd", Unit::Warpgroup, c.warps / 4, 1, 1)
                     : Kernel("flash_attention_fwd", c.warps, 1);
  UOp qt = k.block_index(0, (Nq + (c.bq - 1)) / c.bq);
  UOp h = k.block_index(1, H), b = k.block_index(2, B);
  UOp hkv = h / (H / Hkv), q0 = qt * c.bq, D = i32(p.d), one = i32(1);
  View Q = k.view(2, p.in, Nq, D, st[0][2], one, b * st[0][0] + h * st[0][1]);
  View K = k.view(3, p.in, Nkv, D, st[1][2], one, b * st[1][0] + hkv * st[1][1]);
  View V = k.view(4, p.in, Nkv, D, st[2][2], one, b * st[2][0] + hkv * st[2][1]);
  View O = k.view(0, p.out, Nq, D, st[3][2], one, b * st[3][0] + h * st[3][1]);
  View LSE = k.view(1, f32, Nq, one, one, one, (b * H + h) * Nq);

  // The keys a row may see: those below `keys` and, causally, up to its row + Nkv - Nq.
  UOp keys = p.key_lengths ? alu(Op::MIN, Nkv, load(index(param(5, dtypes::int32.ptr()), b))) : Nkv;
  bool causal = p.mask == AttentionMask::Causal;
  UOp end = causal ? alu(Op::MIN, keys, q0 + c.bq + Nkv - Nq) : keys;
  UOp steps = alu(Op::MAX, end + (c.bkv - 1), i32(0)) / c.bkv;
  // The first `whole` steps see every key of their block from every row: no mask there.
  UOp whole = keys / c.bkv;
  if (causal) whole = alu(Op::MIN, whole, alu(Op::MAX, q0 + Nkv - Nq + 1, i32(0)) / c.bkv);
  whole = alu(Op::MIN, whole, steps);

  // Q lands in shared memory once (and stays in registers with QREG); K and V stream
  // through a ring of shared stages.
  Swizzle sw = swizzle_for(p.d * p.in.itemsize());
  Tile q_shared = k.shared(p.in, c.bq, p.d, sw);
  Ring ks = k.ring(p.in, c.bkv, p.d, sw, c.stages), vs = k.ring(p.in, c.bkv, p.d, sw, c.stages);
  DType S = k.reg(f32, c.bq, c.bkv);
  DType q_type = operand_tile(fill(S, 0), q_shared, 'a', "ABt");
  UOp scale = f(p.softmax_scale() * M_LOG2E);  // scores in log2 units
  // The pieces of a step on either path, in the consumers: the scores of block j (in slot
  // s), from Q in shared memory (q_ready; with QREG in registers); the online softmax of a
  // block's scores (masked at the edge), which updates the running maximum m and sum l and
  // gives P and the factor alpha that rescales O; and O + P V.
  Tile q_ready, q_held;
  std::optional<Carried> o, m, l;
  auto begin = [&](const Tile& q) {
    q_ready = q;
    if (c.qreg) q_held = load(q, q_type);
    o = k.carried(fill(k.reg(f32, c.bq, p.d), 0));
    m = k.carried(fill(row_vector_of(S), -std::numeric_limits<float>::max()));
    l = k.carried(fill(row_vector_of(S), 0));
  };
  auto scores_of = [&](const UOp& j, const UOp& s) {
    // QREG=0: Q read again every step (ordered in the loop, so not hoisted out of it);
    // wgmma reads it in place.
    Tile q = c.qreg ? q_held : load({UOp::make(Op::AFTER, {q_ready.node, j})}, q_type);
    return mma_ABt(fill(S, 0), q, load(ks[s], operand_tile(fill(S, 0), ks[s], 'b', "ABt")));
  };
  auto softmax = [&](Tile scores, const UOp& j, bool edge) {
    if (edge)
      scores = mask(
          scores,
          [&](const UOp& row, const UOp& col) {
            UOp key = j * c.bkv + col, seen = key < keys;
            return causal ? alu(Op::AND, seen, key < q0 + row + Nkv - Nq + 1) : seen;
          },
          -INFINITY);
    Tile m_new = map(Op::MAX, *m, map(Op::MUL, row_max(scores), scale));  // log2 units
    Tile pr = exp2(sub_row(map(Op::MUL, scores, scale), m_new));
    Tile alpha = exp2(map(Op::SUB, *m, m_new));
    *l = map(Op::ADD, map(Op::MUL, *l, alpha), row_sum(pr));
    *m = m_new;
    return std::pair{to_operand(pr, p.in), alpha};
  };
  auto plus_pv = [&](const Tile& acc, const Tile& pj, const UOp& s) {
    return mma_AB(acc, pj, load(vs[s], operand_tile(*o, vs[s], 'b', "AB")));
  };
  auto finish_rows = [&] {  // rows that saw no key: O = 0 and LSE = +inf
    Tile seen = map(Op::CMPNE, *l, f(0));
    Tile out = mul_row(*o, map(Op::RECIP, where(seen, *l, f(1))));  // one division a row
    k.store(O, q0, i32(0), p.out == f32 ? out : cast(out, p.out));
    Tile lse = map(Op::MUL, map(Op::ADD, *m, log2(*l)), f(M_LN2));
    k.store(LSE, q0, i32(0), where(seen, lse, f(INFINITY)));
  };
  if (!c.wgmma) {  // a cp.async pipeline: the copies of step j+STAGES-1 fly while j computes
    begin(k.landed(q_shared, {k.copy(q_shared, Q, q0, i32(0))}));
    auto step = [&](bool edge) {
      return [&, edge](const UOp& j, const UOp& s) {
        auto [pj, alpha] = softmax(scores_of(j, s), j, edge);
        *o = plus_pv(mul_row(*o, alpha), pj, s);
      };
    };
    k.pipeline({{whole, step(false)}, {steps - whole, step(true)}}, c.stages,
               [&](const UOp& j, const UOp& s) {
                 return std::vector<UOp>{k.copy(ks[s], K, j * c.bkv, i32(0)),
                                         k.copy(vs[s], V, j * c.bkv, i32(0))};
               });
    finish_rows();
    return k.finish();
  }
  // Hopper: a producer warpgroup loads Q once and K and V into a ring by TMA (4-D maps of
  // B, H, N, D: rows past N read as zeros); the consumer warpgroups, 64 query rows each,
  // wait for a stage, compute with wgmma and free it (one arrival per warp).
  DType kv_tile = shared_tile(p.in, c.bkv, p.d, Layout::Row, sw);
  TmaMap Qm = k.tensor_map(2, q_shared.node.dtype(), 2), Km = k.tensor_map(3, kv_tile, 2),
         Vm = k.tensor_map(4, kv_tile, 2);
  Semaphores q_full = k.semaphores(1, 1), full = k.semaphores(c.stages, 1),
             empty = k.semaphores(c.stages, c.warps);
  int64_t e = p.in.itemsize();
  auto slot = [&](const UOp& j) { return j % c.stages; };
  auto round = [&](const UOp& j) { return j / c.stages % 2; };
  k.specialise(
      24, 0,
      [&] {
        k.arrive(q_full, i32(0), int64_t(c.bq) * p.d * e);
        k.tma_load(q_shared, Qm, q0, i32(0), q_full, i32(0), {h, b});
        k.loop(steps + 1, [&](const UOp& j) {         // one block more: the consumers run ahead
          k.wait(empty, slot(j), i32(1) - round(j));  // passes at once in the first round
          k.arrive(full, slot(j), 2 * int64_t(c.bkv) * p.d * e);
          k.tma_load(ks[slot(j)], Km, j * c.bkv, i32(0), full, slot(j), {hkv, b});
          k.tma_load(vs[slot(j)], Vm, j * c.bkv, i32(0), full, slot(j), {hkv, b});
        });
      },
      [&] {
        // Block j's softmax runs under the scores of block j+1 (started first); with PV=1
        // (FlashAttention-3's order) P_j V_j also runs under the softmax of block j+1.
        begin({UOp::make(Op::AFTER, {q_shared.node, k.wait(q_full, i32(0), i32(0))})});
        k.wait(full, i32(0), i32(0));
        Tile first = scores_of(i32(0), i32(0));
        Carried ahead = k.carried(c.pv ? softmax(first, i32(0), true).first : first);
        // PINGPONG: the two warpgroups take turns issuing their products (named barriers 1
        // and 2, each a warpgroup's turn), so that one's softmax runs under the other's.
        UOp group = k.thread_index() / 128;
        auto turns = [&](bool mine) {
          for (int g : {0, 1})
            k.when(alu(Op::CMPEQ, group, i32(g)),
                   [&] { mine ? k.sync(1 + g, 256) : k.signal(2 - g, 256); });
        };
        if (c.pingpong)  // the second warpgroup lets the first go first
          k.when(alu(Op::CMPEQ, group, i32(1)), [&] { k.signal(1, 256); });
        auto part = [&](const UOp& n, const UOp& from, bool edge) {  // edge: of the softmax
          k.loop(n, [&](const UOp& i) {
            UOp j = from + i;
            k.wait(full, slot(j + 1), round(j + 1));
            Tile next = scores_of(j + 1, slot(j + 1));
            if (!c.pv) k.start(next);
            if (c.pv) {  // ahead: P_j
              if (c.pingpong) turns(true);
              k.start(next);
              Tile pv = plus_pv(*o, ahead, slot(j));
              k.start(pv);
              if (c.pingpong) turns(false);
              auto [pn, alpha] = softmax(k.await(next, 1), j + 1, edge);  // P_j V_j in flight
              *o = mul_row(pv, alpha);
              ahead = pn;
            } else {  // ahead: the scores of block j
              auto [pj, alpha] = softmax(ahead, j, edge);
              *o = plus_pv(mul_row(*o, alpha), pj, slot(j));
              ahead = next;  // waited for here, after the softmax
            }
            k.when(alu(Op::CMPEQ, k.thread_index() % 32, i32(0)),
                   [&] { k.arrive(empty, slot(j)); });
          });
        };
        // PV=1 masks the softmax of block j+1, PV=0 that of block j; the last PV=1 softmax
        // sees the extra block, all masked.
        UOp inner = c.pv ? alu(Op::MAX, whole - i32(1), i32(0)) : whole;
        part(inner, i32(0), false);
        part(steps - inner, inner, true);
        finish_rows();
      });
  return k.finish();
}

tiles::TensorLayout flash_attention_operand_layout(const AttentionProblem& p,
                                                   const AttentionShape& s, int slot) {
  int64_t e = p.in.itemsize();
  if (slot == 2)
    return {{p.d, s.nq, s.h, s.b}, {s.q_stride[2] * e, s.q_stride[1] * e, s.q_stride[0] * e}};
  const int64_t* st = slot == 3 ? s.k_stride : s.v_stride;
  return {{p.d, s.nkv, s.hkv, s.b}, {st[2] * e, st[1] * e, st[0] * e}};
}

std::map<std::string, int64_t> flash_attention_fwd_vars(const AttentionProblem& p,
                                                        const AttentionShape& s) {
  auto refuse = [&](const std::string& why) {
    throw std::invalid_argument("flash_attention_fwd " + s.to_string() + ": " + why);
  };
  if (s.b < 1 || s.h < 1 || s.hkv < 1 || s.nq < 1 || s.nkv < 1) refuse("every size is at least 1");
  if (s.b > kMaxGrid || s.h > kMaxGrid) refuse("B and H are at most 65535");
  if (s.nq > (1 << 24) || s.nkv > (1 << 24)) refuse("Nq and Nkv are at most 2^24");
  if (s.h % s.hkv) refuse("H must be a multiple of Hkv");
  std::map<std::string, int64_t> v = {
      {"B", s.b}, {"H", s.h}, {"Hkv", s.hkv}, {"Nq", s.nq}, {"Nkv", s.nkv}};
  const int64_t* strides[4] = {s.q_stride, s.k_stride, s.v_stride, s.o_stride};
  const int64_t extent[4][3] = {
      {s.b, s.h, s.nq}, {s.b, s.hkv, s.nkv}, {s.b, s.hkv, s.nkv}, {s.b, s.h, s.nq}};
  for (int t = 0; t < 4; ++t) {
    int64_t last = p.d - 1;
    for (int d = 0; d < 3; ++d) {
      int64_t x = strides[t][d];
      if (x < 0 || x % 8)
        refuse(std::string(kTensors[t]) + "'s " + kDims[d] + " stride " + std::to_string(x) +
               " is not a non-negative multiple of 8 elements (16-byte rows)");
      last += (extent[t][d] - 1) * x;
      v[stride_name(t, d)] = x / 8;
    }
    if (last >= (int64_t(1) << 31))
      refuse(std::string(kTensors[t]) + " spans " + std::to_string(last + 1) +
             " elements, more than 2^31");
  }
  if (s.b * s.h * s.nq >= (int64_t(1) << 31)) refuse("LSE holds more than 2^31 elements");
  return v;
}

}  // namespace kitten
