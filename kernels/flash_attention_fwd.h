// Flash-attention forward written in the tile DSL (mma.sync path): for every batch b and
// head h, O = softmax(scale * Q K^T + mask) V and LSE = log(sum(exp(scale * Q K^T + mask)))
// per query row, with Q (B, H, Nq, D), K and V (B, Hkv, Nkv, D) strided views (H a multiple
// of Hkv: grouped-query attention), O (B, H, Nq, D) strided and LSE (B, H, Nq) float32
// contiguous. The sizes and strides are run-time arguments: one compiled kernel serves every
// B, H, Hkv, Nq, Nkv and layout (decode, graph replay). Rows whose keys are all masked give
// O = 0 and LSE = +inf. The schedule's knobs (docs/dsl.md):
//   BQ   query rows per block;   BKV  keys per step of the key loop;
//   WARPS  warps per block (each holds BQ/WARPS whole rows);   STAGES  the K/V pipeline's depth.
#pragma once

#include <map>
#include <string>

#include "dsl/schedule.h"
#include "dsl/target.h"
#include "dsl/uop.h"
#include "tiles/tile.h"

namespace kitten {

enum class AttentionMask : uint8_t {
  None,
  Causal,  // query i sees key j <= i + Nkv - Nq (aligned bottom-right, as FlashAttention)
};

// What one compiled kernel is for.
struct AttentionProblem {
  int d = 128;
  DType in = dtypes::bfloat16, out = dtypes::bfloat16;
  AttentionMask mask = AttentionMask::None;
  bool key_lengths = false;  // a per-batch count of valid keys (a padding mask), int32
  double scale = 0;          // the softmax scale; 0 means 1/sqrt(d)
  double softmax_scale() const;
  std::string to_string() const;
};

// The run-time shape of one call: sizes, and strides in elements (the last dimension,
// D, is contiguous). Strides must be multiples of 8 elements and buffers 16-byte aligned
// (rows are copied 16 bytes at a time).
struct AttentionShape {
  int64_t b = 1, h = 1, hkv = 1, nq = 1, nkv = 1;
  int64_t q_stride[3] = {0, 0, 0};  // batch, head, row
  int64_t k_stride[3] = {0, 0, 0};
  int64_t v_stride[3] = {0, 0, 0};
  int64_t o_stride[3] = {0, 0, 0};
  // The contiguous (B, H, N, D) strides for these sizes.
  static AttentionShape contiguous(int64_t b, int64_t h, int64_t hkv, int64_t nq, int64_t nkv,
                                   int d);
  std::string to_string() const;
};

Schedule flash_attention_fwd_default_schedule(const AttentionProblem& p, const Target& target);
// Every knob's value the kernel gets (defaults filled in), checked: ScheduleError names the
// constraint a schedule breaks.
Schedule flash_attention_fwd_full_schedule(const AttentionProblem& p, const Schedule& schedule,
                                           const Target& target);
// Builds the kernel: buffers O (slot 0), LSE (1), Q (2), K (3), V (4) and, with key
// lengths, the int32 lengths (5); then the variables flash_attention_fwd_vars gives.
// std::invalid_argument for a problem it does not support.
UOp flash_attention_fwd_kernel(const AttentionProblem& p, const Schedule& schedule,
                               const Target& target);
// The Hopper schedule (WGMMA=1) takes Q, K and V (slots 2, 3, 4) as tensor maps of
// 4-D tensors (B, heads, N, D), with the box and swizzle its KernelInfo names: how each is
// stored (extents innermost first, byte strides).
tiles::TensorLayout flash_attention_operand_layout(const AttentionProblem& p,
                                                   const AttentionShape& s, int slot);
// The kernel's variables for a call of this shape, by name; std::invalid_argument naming
// what is wrong with a shape the kernel cannot take (sizes, GQA ratio, strides).
std::map<std::string, int64_t> flash_attention_fwd_vars(const AttentionProblem& p,
                                                        const AttentionShape& s);

}  // namespace kitten
