#include "kernels/gemm.h"

#include <stdexcept>

#include "tiles/tile.h"

namespace kitten {

using namespace tiles;

std::string GemmProblem::to_string() const {
  return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) + " " +
         std::string(in.name()) + "->" + std::string(out.name()) + (a_transposed ? " A^T" : "") +
         (b_transposed ? " B^T" : "");
}

Schedule gemm_default_schedule(const GemmProblem& p, const Target& target) {
  (void)p, (void)target;
  return Schedule::parse("BM=128 BN=128 BK=64 WM=2 WN=2 STAGES=3 SWIZZLE=128 GROUP=1");
}

namespace {

struct Config {
  int bm, bn, bk, wm, wn, stages, swizzle, group;
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The widest swizzle up to `most` bytes whose lines a row of `bytes` holds whole.
Swizzle swizzle_for(int most, int64_t bytes) {
  for (Swizzle s : {Swizzle::B128, Swizzle::B64, Swizzle::B32})
    if (swizzle_width(s) <= most && bytes % swizzle_width(s) == 0) return s;
  return Swizzle::None;
}

Config config(const GemmProblem& p, const Schedule& s, const Target& t) {
  Schedule d = gemm_default_schedule(p, t);
  for (const ScheduleEntry& e : s.entries())
    if (e.axis ||
        (e.name != "BM" && e.name != "BN" && e.name != "BK" && e.name != "WM" && e.name != "WN" &&
         e.name != "STAGES" && e.name != "SWIZZLE" && e.name != "GROUP"))
      throw ScheduleError("gemm: '" + Schedule({e}).to_string() +
                          "' is not a knob of the GEMM (BM BN BK WM WN STAGES SWIZZLE GROUP)");
  auto knob = [&](const char* n) { return int(s.knob_or(n, d.knob_or(n, 0))); };
  Config c{knob("BM"), knob("BN"),     knob("BK"),      knob("WM"),
           knob("WN"), knob("STAGES"), knob("SWIZZLE"), knob("GROUP")};
  auto refuse = [&](const std::string& why) {
    throw ScheduleError("gemm schedule '" + s.to_string() + "': " + why);
  };
  if (c.wm < 1 || c.wn < 1) refuse("WM and WN must be at least 1");
  if (c.bm % (16 * c.wm) || c.bn % (16 * c.wn) || c.bm <= 0 || c.bn <= 0)
    refuse("BM must be a multiple of 16*WM and BN of 16*WN (each warp holds whole 16x16 tiles)");
  if (c.bk <= 0 || c.bk % 16) refuse("BK must be a positive multiple of 16");
  if (c.stages < 2) refuse("STAGES must be at least 2");
  if (c.group < 1) refuse("GROUP must be at least 1");
  if (c.swizzle != 0 && c.swizzle != 32 && c.swizzle != 64 && c.swizzle != 128)
    refuse("SWIZZLE is 0, 32, 64 or 128");
  int threads = c.wm * c.wn * 32;
  if (threads > t.max_threads_per_block)
    refuse(std::to_string(threads) + " threads, more than the target's " +
           std::to_string(t.max_threads_per_block));
  int64_t shared = int64_t(c.bm + c.bn) * c.bk * p.in.itemsize() * c.stages;
  if (shared > t.shared_per_block_optin)
    refuse(std::to_string(shared) + " bytes of shared memory, more than the target's " +
           std::to_string(t.shared_per_block_optin));
  if (int64_t(c.bm) * c.bn / threads > 128)
    refuse("more than 128 accumulators per thread (" + std::to_string(c.bm * c.bn / threads) +
           "): they would spill");
  return c;
}

}  // namespace

Schedule gemm_full_schedule(const GemmProblem& p, const Schedule& schedule, const Target& target) {
  Config c = config(p, schedule, target);
  Schedule out;
  out.knob("BM", c.bm).knob("BN", c.bn).knob("BK", c.bk).knob("WM", c.wm).knob("WN", c.wn);
  out.knob("STAGES", c.stages).knob("SWIZZLE", c.swizzle).knob("GROUP", c.group);
  return out;
}

void gemm_mainloop(Kernel& k, const GemmOperands& o, const Schedule& tiles, Carried& acc) {
  int bk = int(tiles.knob_or("BK", 0)), stages = int(tiles.knob_or("STAGES", 0));
  int swizzle = int(tiles.knob_or("SWIZZLE", 0));
  const TileType& t = acc.type();
  DType in = view_type(o.a.node.dtype())->elem;
  auto i32 = [](int64_t v) { return const_int(dtypes::int32, v); };
  // Shared rings: A as BM x BK (column-major when A is stored transposed, so copies run
  // along its contiguous dimension), B as BK x BN or BN x BK.
  int64_t e = in.itemsize();
  Layout al = o.a_transposed ? Layout::Col : Layout::Row;
  Ring sa =
      k.ring(in, t.rows, bk, swizzle_for(swizzle, (o.a_transposed ? t.rows : bk) * e), stages, al);
  Ring sb = o.b_transposed ? k.ring(in, t.cols, bk, swizzle_for(swizzle, bk * e), stages)
                           : k.ring(in, bk, t.cols, swizzle_for(swizzle, t.cols * e), stages);
  const char* product = o.b_transposed ? "ABt" : "AB";
  k.pipeline(
      i32(ceil_div(o.k, bk)), stages,
      [&](const UOp& kt, const UOp& s) {
        UOp kk = kt * bk;
        return std::vector<UOp>{
            k.copy(sa[s], o.a, o.row0, kk),
            o.b_transposed ? k.copy(sb[s], o.b, o.col0, kk) : k.copy(sb[s], o.b, kk, o.col0)};
      },
      [&](const UOp&, const UOp& s) {
        Tile a = load(sa[s], operand_tile(acc, sa[s], 'a', product));
        Tile b = load(sb[s], operand_tile(acc, sb[s], 'b', product));
        acc = o.b_transposed ? mma_ABt(acc, a, b) : mma_AB(acc, a, b);
      });
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
  Kernel k("gemm", c.wm, c.wn);
  View C = k.view(0, p.out, M, N, N, one);
  View A = p.a_transposed ? k.view(1, p.in, M, K, one, M) : k.view(1, p.in, M, K, K, one);
  View B = p.b_transposed ? k.view(2, p.in, N, K, K, one) : k.view(2, p.in, K, N, N, one);
  // Blocks run in groups of GROUP block rows, column by column within a group, so that
  // the blocks running at once share their A and B panels in L2.
  int64_t nbm = ceil_div(p.m, c.bm), nbn = ceil_div(p.n, c.bn);
  UOp pid = k.block_index(1, i32(nbm)) * nbn + k.block_index(0, i32(nbn));
  int64_t per_group = int64_t(c.group) * nbn;
  UOp first = (pid / per_group) * c.group;
  UOp rows = alu(Op::MIN, i32(nbm) - first, i32(c.group));
  UOp bm = (first + (pid % per_group) % rows) * c.bm, bn = ((pid % per_group) / rows) * c.bn;
  Carried acc = k.carried(fill(k.reg(dtypes::float32, c.bm, c.bn), 0.0));
  gemm_mainloop(k, {A, p.a_transposed, B, p.b_transposed, bm, bn, p.k},
                gemm_full_schedule(p, schedule, target), acc);
  Tile result = acc;
  k.store(C, bm, bn, p.out == dtypes::float32 ? result : cast(result, p.out));
  return k.finish();
}

}  // namespace kitten
