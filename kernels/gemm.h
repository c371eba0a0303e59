// C = A * B written in the tile DSL (mma.sync path): A is M x K, B is K x N or, stored
// transposed, N x K; A may itself be stored transposed (K x M, a strided view); bf16 or
// f16 in, f32 accumulation, C in f32, bf16 or f16. Any M, N, K: the tiles at the edges are
// gated (zero-filled copies, skipped stores). The schedule's knobs (docs/dsl.md):
//   BM, BN, BK  the block's tile; WM x WN  its warps; STAGES  the pipeline's depth;
//   SWIZZLE     the widest shared-memory swizzle in bytes (0, 32, 64, 128);
//   GROUP       block rows per group of the launch order (L2 reuse);
//   WGMMA       1: the Hopper schedule (a TMA ring filled by a producer warpgroup, WM x WN
//               consumer warpgroups of 64 rows multiplying with wgmma, a persistent loop
//               over tiles on BLOCKS blocks); 0: mma.sync and cp.async.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "dsl/lower.h"
#include "dsl/schedule.h"
#include "dsl/target.h"
#include "dsl/uop.h"
#include "tiles/tile.h"

namespace kitten {

struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  DType in = dtypes::bfloat16, out = dtypes::float32;
  bool a_transposed = false;  // A stored K x M
  bool b_transposed = false;  // B stored N x K
  // The row pitches of A, B and C as stored, in elements (0: rows stored densely), and
  // the parameter slots the kernel reads and writes them at.
  int64_t lda = 0, ldb = 0, ldc = 0;
  int a_slot = 1, b_slot = 2, c_slot = 0;
  std::string to_string() const;
};

// How operand `slot` (1: A, 2: B) is stored, as a TMA tensor map describes it: extents
// innermost first and the byte stride of the outer one. The Hopper schedule (WGMMA=1)
// takes tensor maps of A and B at slots 1 and 2, with the box and swizzle its KernelInfo
// names.
tiles::TensorLayout gemm_operand_layout(const GemmProblem& p, int slot);

// The knobs' values where the schedule sets none: the tuned default for the target.
Schedule gemm_default_schedule(const GemmProblem& p, const Target& target);
// Every knob's value that `schedule` gives the kernel (defaults filled in), checked.
Schedule gemm_full_schedule(const GemmProblem& p, const Schedule& schedule, const Target& target);
// Builds the kernel: buffers C (slot 0), A (1), B (2). Throws ScheduleError naming the
// constraint a schedule breaks (before anything is compiled) and std::invalid_argument
// for a bad problem.
UOp gemm_kernel(const GemmProblem& p, const Schedule& schedule, const Target& target);
// The kernels a schedule makes, lowered for the target. The knob REPACK=1 first copies
// each operand whose rows are not whole 16-byte units (4095 bfloat16: 8190 bytes) into a
// temporary of padded rows (a generated copy kernel each), so that the GEMM reads them by
// TMA (the Hopper schedule) or by 16-byte copies; REPACK=2 also lets the GEMM write such a
// C into a padded temporary (through shared memory and TMA stores) that a last kernel
// copies into C. The copies' time is part of the kernel's. The temporaries are tensors at slots 3,
// 4, 5 in the order A, B, C (those needed): launches give them as tensor maps where the GEMM takes
// maps. Without REPACK: the GEMM alone.
// The copies' schedules are searched as parts (`UPCAST:0:2@0`, dsl/schedule.h): the parts
// are the copies of A and B, the GEMM, then the copy out of C, numbered in launch order
// (those REPACK makes). A copy with entries of its own runs them instead of its default
// (into padded rows: 16 bytes a thread; out of them: one element a thread).
// With a cache, the GEMM's own kernel is lowered once per graph and target (its arch,
// multiprocessors, limits and features): a search lowers many schedules that differ only
// in their copies' entries.
struct GemmLoweringCache {
  std::mutex mu;
  std::map<std::string, std::vector<UOp>> lowered;
};
LoweredKernels gemm_kernels(const GemmProblem& p, const Schedule& schedule, const Target& target,
                            GemmLoweringCache* cache = nullptr);
// REPACK's copies (unlowered) with their parts' numbers, the schedules they run and the
// padded temporary each writes (a copy in) or reads (the copy out); none without REPACK.
// Throws ScheduleError for an entry of the GEMM's own part or of no part.
struct GemmPart {
  int part;
  UOp copy;
  Schedule schedule;
  TempBuffer temp;
};
std::vector<GemmPart> gemm_repack_copies(const GemmProblem& p, const Schedule& schedule);

// The GEMM's core, callable from any tile kernel (the autotuner's TC action routes a
// matmul-shaped reduction onto it rather than writing a second tensor-core path):
// acc (a carried f32 register tile, BM x BN) += A[row0 .. row0+BM, 0..k) *
// B[0..k, col0 .. col0+BN), pipelined over k with the schedule's BK, STAGES and SWIZZLE
// (gemm_full_schedule gives them).
struct GemmOperands {
  tiles::View a;
  bool a_transposed;
  tiles::View b;
  bool b_transposed;
  UOp row0, col0;
  int64_t k;
};
void gemm_mainloop(tiles::Kernel& kernel, const GemmOperands& operands, const Schedule& tiles,
                   tiles::Carried& acc);

}  // namespace kitten
