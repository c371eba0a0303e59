#include "kernels/gemm.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>

#include "tiles/tile.h"

namespace kitten {

using namespace tiles;

std::string GemmProblem::to_string() const {
  return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " " +
         std::string(in.name()) + "->" + std::string(out.name()) + (a_transposed ? " A^T" : "") +
         (b_transposed ? " B^T" : "");
}

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

const char* const kHopper =
    "BM=128 BN=256 BK=64 WM=2 WN=1 STAGES=3 SWIZZLE=128 GROUP=16 WGMMA=1 EPILOGUE=1";
const char* const kMmaSync =
    "BM=128 BN=128 BK=64 WM=2 WN=2 STAGES=3 SWIZZLE=128 GROUP=1 WGMMA=0 EPILOGUE=0";

}  // namespace

tiles::TensorLayout gemm_operand_layout(const GemmProblem& p, int slot) {
  int64_t e = p.in.itemsize();
  bool t = slot == 1 ? p.a_transposed : p.b_transposed;
  int64_t rows = slot == 1 ? p.m : p.k, cols = slot == 1 ? p.k : p.n;  // as A and B multiply
  if (t) std::swap(rows, cols);  // A stored K x M, B stored N x K
  int64_t ld = slot == 1 ? p.lda : p.ldb;
  return {{cols, rows}, {(ld ? ld : cols) * e}};
}

Schedule gemm_default_schedule(const GemmProblem& p, const Target& target) {
  bool tma = gemm_operand_layout(p, 1).strides[0] % 16 == 0 &&
             gemm_operand_layout(p, 2).strides[0] % 16 == 0;
  if (!hopper_target(target) || !tma) return Schedule::parse(kMmaSync);
  Schedule s = Schedule::parse(kHopper);  // C through shared memory where it can go by TMA
  if (p.out.itemsize() != 2 || (p.ldc ? p.ldc : p.n) * 2 % 16)
    s.knob("STAGES", 4).knob("EPILOGUE", 0);
  return s;
}

namespace {

struct Config {
  int bm, bn, bk, wm, wn, stages, swizzle, group, wgmma, blocks, epilogue;
};

// The widest swizzle up to `most` bytes whose lines a row of `bytes` holds whole.
Swizzle swizzle_for(int most, int64_t bytes) {
  for (Swizzle s : {Swizzle::B128, Swizzle::B64, Swizzle::B32})
    if (swizzle_width(s) <= most && bytes % swizzle_width(s) == 0) return s;
  return Swizzle::None;
}

Config config(const GemmProblem& p, const Schedule& s, const Target& t) {
  // The defaults of the path the schedule names (WGMMA), else of the target's best.
  Schedule d = gemm_default_schedule(p, t);
  if (s.knob_or("WGMMA", d.knob_or("WGMMA", 0)) != d.knob_or("WGMMA", 0))
    d = Schedule::parse(s.knob_or("WGMMA", 0) ? kHopper : kMmaSync);
  for (const ScheduleEntry& e : s.entries())
    if (e.axis || e.part ||
        (e.name != "BM" && e.name != "BN" && e.name != "BK" && e.name != "WM" && e.name != "WN" &&
         e.name != "STAGES" && e.name != "SWIZZLE" && e.name != "GROUP" && e.name != "WGMMA" &&
         e.name != "BLOCKS" && e.name != "EPILOGUE"))
      throw ScheduleError("gemm: '" + Schedule({e}).to_string() +
                          "' is not a knob of the GEMM (BM BN BK WM WN STAGES SWIZZLE GROUP "
                          "WGMMA BLOCKS EPILOGUE)");
  auto knob = [&](const char* n) { return int(s.knob_or(n, d.knob_or(n, 0))); };
  int tiles = int(ceil_div(p.m, knob("BM") > 0 ? knob("BM") : 1) *
                  ceil_div(p.n, knob("BN") > 0 ? knob("BN") : 1));
  Config c{knob("BM"),      knob("BN"),
           knob("BK"),      knob("WM"),
           knob("WN"),      knob("STAGES"),
           knob("SWIZZLE"), knob("GROUP"),
           knob("WGMMA"),   int(s.knob_or("BLOCKS", std::min(t.multiprocessors, tiles))),
           knob("EPILOGUE")};
  auto refuse = [&](const std::string& why) {
    throw ScheduleError("gemm schedule '" + s.to_string() + "': " + why);
  };
  if (c.wm < 1 || c.wn < 1) refuse("WM and WN must be at least 1");
  // The Hopper schedule: WM x WN consumer warpgroups of 64 rows each and a producer.
  int unit = c.wgmma ? 64 : 16, per_unit = c.wgmma ? 128 : 32;
  if (c.wgmma != 0 && c.wgmma != 1) refuse("WGMMA is 0 (mma.sync) or 1 (wgmma, TMA)");
  if (c.wgmma && !hopper_target(t))
    refuse("WGMMA=1 needs wgmma, TMA, mbarriers and setmaxnreg, which " + t.arch + " lacks");
  if (c.wgmma &&
      (gemm_operand_layout(p, 1).strides[0] % 16 || gemm_operand_layout(p, 2).strides[0] % 16))
    refuse("WGMMA=1 loads by TMA, which needs rows of whole 16-byte units (" + p.to_string() +
           " has not: WGMMA=0, or the autotuner's repack)");
  if (c.wgmma && (c.bm != 64 * c.wm || c.bn % (16 * c.wn) || c.bn / c.wn > 256 || c.bm > 256 ||
                  c.bk > 256 || c.swizzle != 128 || c.bk % 64))
    refuse(
        "WGMMA=1: BM is 64*WM (a warpgroup's 64 rows), BN/WN a multiple of 16 up to 256, "
        "BM and BK at most 256 (a TMA box), BK a multiple of 64 and SWIZZLE 128");
  if (c.blocks < 1) refuse("BLOCKS must be at least 1");
  if (c.epilogue && (!c.wgmma || p.out.itemsize() != 2 || (p.ldc ? p.ldc : p.n) * 2 % 16))
    refuse(
        "EPILOGUE=1 (through shared memory and a TMA store) needs WGMMA=1, a 16-bit C and "
        "rows of C of whole 16-byte units");
  if (c.bm % (unit * c.wm) || c.bn % (16 * c.wn) || c.bm <= 0 || c.bn <= 0)
    refuse("BM must be a multiple of 16*WM and BN of 16*WN (each warp holds whole 16x16 tiles)");
  if (c.bk <= 0 || c.bk % 16) refuse("BK must be a positive multiple of 16");
  if (c.stages < 2) refuse("STAGES must be at least 2");
  if (c.group < 1) refuse("GROUP must be at least 1");
  if (c.swizzle != 0 && c.swizzle != 32 && c.swizzle != 64 && c.swizzle != 128)
    refuse("SWIZZLE is 0, 32, 64 or 128");
  int threads = c.wm * c.wn * per_unit + (c.wgmma ? 128 : 0);
  if (threads > t.max_threads_per_block)
    refuse(std::to_string(threads) + " threads, more than the target's " +
           std::to_string(t.max_threads_per_block));
  int64_t shared = int64_t(c.bm + c.bn) * c.bk * p.in.itemsize() * c.stages +
                   (c.epilogue ? int64_t(c.bm) * c.bn * p.out.itemsize() : 0);
  if (shared > t.shared_per_block_optin)
    refuse(std::to_string(shared) + " bytes of shared memory, more than the target's " +
           std::to_string(t.shared_per_block_optin));
  int consumers = c.wm * c.wn * per_unit;
  if (int64_t(c.bm) * c.bn / consumers > 128)
    refuse("more than 128 accumulators per thread (" + std::to_string(c.bm * c.bn / consumers) +
           "): they would spill");
  return c;
}

}  // namespace

namespace {
// acc + the stage's A tile times its B tile (B stored N x K where bt): mma.sync from
// registers, or on warpgroup tiles wgmma reading the shared tiles in place.
Tile stage_product(const Tile& acc, const Tile& sa, const Tile& sb, bool bt) {
  const char* product = bt ? "ABt" : "AB";
  Tile a = load(sa, operand_tile(acc, sa, 'a', product));
  Tile b = load(sb, operand_tile(acc, sb, 'b', product));
  return bt ? mma_ABt(acc, a, b) : mma_AB(acc, a, b);
}

// The shared tiles of one stage: A as BM x BK (column-major when A is stored transposed, so
// that its lines run along the stored rows), B as BK x BN or BN x BK.
DType a_tile(const GemmProblem& p, int bm, int bk, int swizzle) {
  int64_t e = p.in.itemsize();
  return shared_tile(p.in, bm, bk, p.a_transposed ? Layout::Col : Layout::Row,
                     swizzle_for(swizzle, (p.a_transposed ? bm : bk) * e));
}
DType b_tile(const GemmProblem& p, int bn, int bk, int swizzle) {
  int64_t e = p.in.itemsize();
  return p.b_transposed ? shared_tile(p.in, bn, bk, Layout::Row, swizzle_for(swizzle, bk * e))
                        : shared_tile(p.in, bk, bn, Layout::Row, swizzle_for(swizzle, bn * e));
}
Ring ring_of(Kernel& k, DType tile, int stages) {
  const TileType& t = *tile_type(tile);
  return k.ring(t.elem, t.rows, t.cols, t.swizzle, stages, t.layout);
}
}  // namespace

void gemm_mainloop(Kernel& k, const GemmOperands& o, const Schedule& tiles, Carried& acc) {
  int bk = int(tiles.knob_or("BK", 0)), stages = int(tiles.knob_or("STAGES", 0));
  int swizzle = int(tiles.knob_or("SWIZZLE", 0));
  const TileType& t = acc.type();
  GemmProblem p{0, 0, 0, view_type(o.a.node.dtype())->elem};
  p.a_transposed = o.a_transposed, p.b_transposed = o.b_transposed;
  auto i32 = [](int64_t v) { return const_int(dtypes::int32, v); };
  Ring sa = ring_of(k, a_tile(p, t.rows, bk, swizzle), stages);
  Ring sb = ring_of(k, b_tile(p, t.cols, bk, swizzle), stages);
  k.pipeline(
      i32(ceil_div(o.k, bk)), stages,
      [&](const UOp& kt, const UOp& s) {
        UOp kk = kt * bk;
        return std::vector<UOp>{
            k.copy(sa[s], o.a, o.row0, kk),
            o.b_transposed ? k.copy(sb[s], o.b, o.col0, kk) : k.copy(sb[s], o.b, kk, o.col0)};
      },
      [&](const UOp&, const UOp& s) { acc = stage_product(acc, sa[s], sb[s], o.b_transposed); });
}

UOp gemm_kernel(const GemmProblem& p, const Schedule& schedule, const Target& target) {
  if (p.m < 1 || p.n < 1 || p.k < 1 || p.m * p.k >= (1ll << 31) || p.k * p.n >= (1ll << 31) ||
      p.m * p.n >= (1ll << 31))
    throw std::invalid_argument("gemm " + p.to_string() +
                                ": sizes from 1 to 2^31 elements a matrix");
  if (p.in != dtypes::bfloat16 && p.in != dtypes::float16)
    throw std::invalid_argument("gemm: inputs are bfloat16 or float16, not " +
                                std::string(p.in.name()));
  Config c = config(p, schedule, target);
  auto i32 = [](int64_t v) { return const_int(dtypes::int32, v); };
  UOp M = i32(p.m), N = i32(p.n), K = i32(p.k), one = i32(1);
  // Tiles run in groups of GROUP tile rows, column by column within a group, so that the
  // tiles running at once share their A and B panels in L2.
  int64_t nbm = ceil_div(p.m, c.bm), nbn = ceil_div(p.n, c.bn);
  auto origin = [&](const UOp& pid) {
    int64_t per_group = int64_t(c.group) * nbn;
    UOp first = (pid / per_group) * c.group;
    UOp rows = alu(Op::MIN, i32(nbm) - first, i32(c.group));
    return std::pair{(first + (pid % per_group) % rows) * c.bm, ((pid % per_group) / rows) * c.bn};
  };
  auto result = [&](const Tile& acc) { return p.out == dtypes::float32 ? acc : cast(acc, p.out); };
  UOp ldc = i32(p.ldc ? p.ldc : p.n);
  if (!c.wgmma) {
    Kernel k("gemm", c.wm, c.wn);
    View C = k.view(p.c_slot, p.out, M, N, ldc, one);
    UOp lda = i32(gemm_operand_layout(p, 1).strides[0] / p.in.itemsize());
    UOp ldb = i32(gemm_operand_layout(p, 2).strides[0] / p.in.itemsize());
    View A = p.a_transposed ? k.view(p.a_slot, p.in, M, K, one, lda)
                            : k.view(p.a_slot, p.in, M, K, lda, one);
    View B = p.b_transposed ? k.view(p.b_slot, p.in, N, K, ldb, one)
                            : k.view(p.b_slot, p.in, K, N, ldb, one);
    auto [bm, bn] = origin(k.block_index(1, i32(nbm)) * nbn + k.block_index(0, i32(nbn)));
    Carried acc = k.carried(fill(k.reg(dtypes::float32, c.bm, c.bn), 0.0));
    gemm_mainloop(k, {A, p.a_transposed, B, p.b_transposed, bm, bn, p.k},
                  gemm_full_schedule(p, schedule, target), acc);
    k.store(C, bm, bn, result(acc));
    return k.finish();
  }
  // Hopper: a producer warpgroup loads the stages of a ring by TMA; WM x WN consumer
  // warpgroups multiply them with wgmma and free each stage; every block loops over tiles.
  Kernel k("gemm", Unit::Warpgroup, c.wm, c.wn, 1);
  View C = k.view(p.c_slot, p.out, M, N, ldc, one);
  DType ta = a_tile(p, c.bm, c.bk, c.swizzle), tb = b_tile(p, c.bn, c.bk, c.swizzle);
  TmaMap A = k.tensor_map(p.a_slot, ta), B = k.tensor_map(p.b_slot, tb);
  DType tc = shared_tile(p.out, c.bm, c.bn, Layout::Row, Swizzle::B128);
  TmaMap Cmap = c.epilogue ? k.tensor_map(p.c_slot, tc) : TmaMap{};
  Tile sc = c.epilogue ? k.shared(p.out, c.bm, c.bn, Swizzle::B128) : Tile{};
  Ring sa = ring_of(k, ta, c.stages), sb = ring_of(k, tb, c.stages);
  Semaphores full = k.semaphores(c.stages, 1), empty = k.semaphores(c.stages, c.wm * c.wn * 4);
  int64_t steps = ceil_div(p.k, c.bk), bytes = int64_t(c.bm + c.bn) * c.bk * p.in.itemsize();
  UOp tiles = i32(nbm * nbn);
  // Step kk of the block's j-th tile uses ring stage (j*steps + kk) % STAGES in its round.
  auto stage = [&](const UOp& j, const UOp& kk) { return (j * steps + kk) % c.stages; };
  auto round = [&](const UOp& j, const UOp& kk) { return (j * steps + kk) / c.stages % 2; };
  k.specialise(
      40, 0,
      [&] {  // the producer: wait for a free stage, expect its bytes, load it
        k.persistent(tiles, c.blocks, [&](const UOp& tile, const UOp& j) {
          auto [bm, bn] = origin(tile);
          k.loop(i32(steps), [&](const UOp& kk) {
            UOp s = stage(j, kk), kc = kk * c.bk;
            k.wait(empty, s, i32(1) - round(j, kk));  // passes at once in the first round
            k.arrive(full, s, bytes);
            k.tma_load(sa[s], A, bm, kc, full, s);
            if (p.b_transposed)
              k.tma_load(sb[s], B, bn, kc, full, s);
            else
              k.tma_load(sb[s], B, kc, bn, full, s);
          });
        });
      },
      [&] {  // the consumers: wait for a loaded stage, multiply, free it (one arrival a warp)
        k.persistent(tiles, c.blocks, [&](const UOp& tile, const UOp& j) {
          auto [bm, bn] = origin(tile);
          Carried acc = k.carried(fill(k.reg(dtypes::float32, c.bm, c.bn), 0.0));
          k.loop(i32(steps), [&](const UOp& kk) {
            UOp s = stage(j, kk);
            k.wait(full, s, round(j, kk));
            acc = stage_product(acc, sa[s], sb[s], p.b_transposed);
            k.when(alu(Op::CMPEQ, k.thread_index() % 32, i32(0)), [&] { k.arrive(empty, s); });
          });
          if (!c.epilogue) return k.store(C, bm, bn, result(acc));
          // C through shared memory: once the last tile's store has read it, the consumers
          // write it, fence it for TMA and meet; thread 0 stores it by TMA.
          UOp first = alu(Op::CMPEQ, k.thread_index(), i32(0));
          k.when(first, [&] { k.store_wait(0); });
          k.sync(1, c.wm * c.wn * 128);
          k.store(sc, result(acc));
          k.fence_async();
          k.sync(1, c.wm * c.wn * 128);
          k.when(first, [&] { k.tma_store(Cmap, sc, bm, bn); });
        });
        if (c.epilogue) k.when(alu(Op::CMPEQ, k.thread_index(), i32(0)), [&] { k.store_wait(0); });
      });
  return k.finish();
}

namespace {
// Rows of `cols` elements copied between dense rows and rows of `pitch`: into the padded
// rows (the padding zero) 16 bytes of elements per thread side by side (UPCAST), so that
// the stores are whole 16-byte vectors; back out of them eight elements per thread, 256
// apart (LOCAL, then UPCAST), so that a warp's stores into the unaligned rows stay
// contiguous (16-byte-apart scalar stores made the H100's copy-out slower than the padded
// C saved) and each thread has eight loads in flight (one a thread took 46 us for a
// 4095x4095 bf16 C on the H100, eight 23 us).
GemmPart repack_part(int64_t rows, int64_t cols, int64_t pitch, DType dtype, int src, int dst,
                     bool into_padded) {
  UOp from = param(src, dtype.ptr()), to = param(dst, dtype.ptr());
  UOp r = range(rows, 0, AxisKind::Global), c = range(pitch, 1, AxisKind::Global);
  UOp inside = alu(Op::CMPLT, c, const_int(c.dtype(), cols));
  UOp copy = into_padded ? store(index(to, r * pitch + c),
                                 load(index(from, r * cols + c, inside), const_(dtype, 0.0)))
                         : store(index(to, r * cols + c, inside), load(index(from, r * pitch + c)));
  UOp k =
      sink({end(copy, {r, c})}, "gemm_repack" + std::to_string(src) + "_" + std::to_string(dst));
  // The padded rows, as the tensor a GEMM's TMA map describes: the operands' rows, and C
  // with its padding (whole 16-byte units for TMA stores).
  int64_t e = dtype.itemsize();
  TempBuffer padded{into_padded ? dst : src,
                    dtype,
                    rows * pitch,
                    256,
                    {into_padded ? cols : pitch, rows},
                    {pitch * e}};
  Schedule schedule = Schedule().action("UPCAST", 1, 16 / e);
  if (!into_padded) {
    int64_t threads = std::min<int64_t>(256, pitch),
            each = std::min<int64_t>(8, (pitch + threads - 1) / threads);
    schedule = Schedule().action("LOCAL", 1, threads);
    if (each > 1) schedule = schedule.action("UPCAST", 1, each);
  }
  return {0, k, schedule, padded};
}

// The schedule's knobs (what the GEMM and REPACK read) and its entries of one part.
std::pair<Schedule, std::vector<ScheduleEntry>> knobs_and_parts(const Schedule& s) {
  std::vector<ScheduleEntry> knobs, parts;
  for (const ScheduleEntry& e : s.entries()) (e.part ? parts : knobs).push_back(e);
  return {Schedule(knobs), parts};
}

// The schedule without REPACK, and the problem the GEMM solves under it: REPACK=1 gives
// each operand whose rows are not whole 16-byte units a padded copy (its pitch, at the
// next temporary slot from 3).
std::pair<Schedule, GemmProblem> repacked(const GemmProblem& p, const Schedule& schedule) {
  std::vector<ScheduleEntry> rest;
  for (const ScheduleEntry& e : schedule.entries())
    if (e.axis || e.name != "REPACK") rest.push_back(e);
  int64_t repack = schedule.knob_or("REPACK", 0);
  if (repack < 0 || repack > 2)
    throw ScheduleError("gemm schedule '" + schedule.to_string() +
                        "': REPACK is 0, 1 (A and B) or 2 (A, B and C)");
  GemmProblem q = p;
  int slot = 3;
  auto pitch = [](int64_t cols, int64_t e) { return (cols * e + 15) / 16 * 16 / e; };
  for (int operand = 1; repack && operand <= 2; ++operand) {
    TensorLayout l = gemm_operand_layout(p, operand);
    if (l.strides[0] % 16 == 0) continue;  // already whole 16-byte units
    (operand == 1 ? q.lda : q.ldb) = pitch(l.dims[0], p.in.itemsize());
    (operand == 1 ? q.a_slot : q.b_slot) = slot++;
  }
  if (repack == 2 && p.n * p.out.itemsize() % 16) {
    q.ldc = pitch(p.n, p.out.itemsize());
    q.c_slot = slot++;
  }
  if (repack && slot == 3)
    throw ScheduleError(
        "gemm schedule '" + schedule.to_string() + "': REPACK=" + std::to_string(repack) +
        " pads rows that are not whole 16-byte units, and the rows of " + p.to_string() + " are");
  return {Schedule(rest), q};
}
}  // namespace

Schedule gemm_full_schedule(const GemmProblem& p, const Schedule& schedule, const Target& target) {
  auto [knobs, own] = knobs_and_parts(schedule);
  gemm_repack_copies(p, schedule);  // checks the parts' entries
  auto [rest, q] = repacked(p, knobs);
  Config c = config(q, rest, target);
  Schedule out;
  out.knob("BM", c.bm).knob("BN", c.bn).knob("BK", c.bk).knob("WM", c.wm).knob("WN", c.wn);
  out.knob("STAGES", c.stages).knob("SWIZZLE", c.swizzle).knob("GROUP", c.group);
  out.knob("WGMMA", c.wgmma);
  if (c.wgmma) out.knob("BLOCKS", c.blocks).knob("EPILOGUE", c.epilogue);
  if (q.a_slot != p.a_slot || q.b_slot != p.b_slot || q.c_slot != p.c_slot)
    out.knob("REPACK", schedule.knob_or("REPACK", 0));
  std::vector<ScheduleEntry> all = out.entries();
  all.insert(all.end(), own.begin(), own.end());
  return Schedule(all);
}

std::vector<GemmPart> gemm_repack_copies(const GemmProblem& p, const Schedule& schedule) {
  auto [knobs, own] = knobs_and_parts(schedule);
  auto [gemm, q] = repacked(p, knobs);
  std::vector<GemmPart> parts;
  for (int operand : {1, 2}) {
    int slot = operand == 1 ? q.a_slot : q.b_slot;
    if (slot == operand) continue;
    TensorLayout l = gemm_operand_layout(p, operand);
    int64_t pitch = operand == 1 ? q.lda : q.ldb;
    parts.push_back(repack_part(l.dims[1], l.dims[0], pitch, p.in, operand, slot, true));
  }
  int gemm_part = int(parts.size());
  if (q.c_slot != p.c_slot)
    parts.push_back(repack_part(p.m, p.n, q.ldc, p.out, q.c_slot, p.c_slot, false));
  for (size_t i = 0; i < parts.size(); ++i) parts[i].part = int(i) + (int(i) >= gemm_part);
  std::map<int64_t, std::vector<ScheduleEntry>> by_part;
  for (ScheduleEntry e : own) {
    if ((e.axis && (e.name == "CUT" || e.name == "SPLIT")) || (!e.axis && e.name == "TC"))
      throw ScheduleError("gemm schedule '" + schedule.to_string() +
                          "': " + Schedule({e}).to_string() +
                          ": a copy of REPACK is one kernel, not cut, split or routed");
    auto it = std::find_if(parts.begin(), parts.end(),
                           [&](const GemmPart& c) { return c.part == *e.part; });
    if (it == parts.end())
      throw ScheduleError(
          "gemm schedule '" + schedule.to_string() + "': " + Schedule({e}).to_string() +
          (*e.part == gemm_part
               ? " names the GEMM itself (part " + std::to_string(gemm_part) +
                     "), which takes knobs"
               : " names no copy of REPACK=" + std::to_string(knobs.knob_or("REPACK", 0)) +
                     " (its parts: " + std::to_string(parts.size() + 1) +
                     ", the copies around the GEMM's part " + std::to_string(gemm_part) + ")"));
    e.part.reset();
    by_part[it->part].push_back(e);
  }
  for (GemmPart& c : parts)
    if (auto it = by_part.find(c.part); it != by_part.end()) c.schedule = Schedule(it->second);
  return parts;
}

LoweredKernels gemm_kernels(const GemmProblem& p, const Schedule& schedule, const Target& target,
                            GemmLoweringCache* cache) {
  auto [knobs, own] = knobs_and_parts(schedule);
  auto [gemm, q] = repacked(p, knobs);
  std::vector<GemmPart> copies = gemm_repack_copies(p, schedule);
  LoweredKernels out;
  auto copy = [&](const GemmPart& c) {
    for (UOp& k : lower_kernels(c.copy, target, c.schedule).kernels) out.kernels.push_back(k);
    out.temps.push_back(c.temp);
  };
  // The copies in (the parts before the GEMM's), the GEMM on the padded problem (the
  // schedule's knobs as given; those it leaves are that problem's defaults), the copy out.
  int gemm_part = 0;
  while (gemm_part < int(copies.size()) && copies[size_t(gemm_part)].part == gemm_part) {
    copy(copies[size_t(gemm_part)]);
    ++gemm_part;
  }
  UOp k = gemm_kernel(q, gemm, target);
  StableKey graph = k.key();
  std::string key = graph.hex() + " " + target.arch + " " + std::to_string(target.multiprocessors) +
                    "," + std::to_string(target.shared_per_block_optin) + "," +
                    std::to_string(target.max_threads_per_block) + "," +
                    std::to_string(target.registers_per_block) + "," +
                    std::to_string(target.features);
  std::vector<UOp> core;
  if (cache) {
    std::lock_guard<std::mutex> lock(cache->mu);
    if (auto it = cache->lowered.find(key); it != cache->lowered.end()) core = it->second;
  }
  if (core.empty()) {
    core = lower_kernels(k, target).kernels;
    if (cache) {
      std::lock_guard<std::mutex> lock(cache->mu);
      cache->lowered.emplace(key, core);
    }
  }
  out.kernels.insert(out.kernels.end(), core.begin(), core.end());
  for (size_t i = size_t(gemm_part); i < copies.size(); ++i) copy(copies[i]);
  return out;
}

}  // namespace kitten
