// Kernels written directly as UOp graphs: the worked examples of the kernel semantics
// (ranges, END, AFTER, register accumulators, GROUP, gates) that the command line shows,
// docs/uops.md prints, and the backend tests run at many shapes and dtypes.
#pragma once

#include <string>
#include <vector>

#include "dsl/uop.h"

namespace kitten {

// out[i, j] = a[i, j] + b[i, j], or + b[j] when broadcast_b (b is one row, broadcast
// along the rows). Buffers: 0 out, 1 a, 2 b; all of `dtype`.
UOp elementwise_add_kernel(int64_t rows, int64_t cols, DType dtype, bool broadcast_b);

// out = x reduced with op (ADD: sum, MAX: max) along `axis` (0: over rows, giving cols
// values; 1: over columns, giving rows values), accumulating in float32 (for float
// dtypes) in a register. Buffers: 0 out, 1 x; both of `dtype`.
UOp reduce_kernel(int64_t rows, int64_t cols, int axis, Op op, DType dtype);

// c[m, n] = sum over k of a[m, k] * b[k, n], accumulating in float32 in a register.
// Buffers: 0 c, 1 a, 2 b; all of `dtype`; a stored k x m where a_transposed, b n x k
// where b_transposed.
UOp matmul_kernel(int64_t m, int64_t n, int64_t k, DType dtype, bool a_transposed = false,
                  bool b_transposed = false);

// One pass over x (rows x cols, float32) writes two outputs: sum[i] and sumsq[i] over
// each row, the two accumulator updates bundled by GROUP under one END.
// Buffers: 0 sum, 1 sumsq, 2 x.
UOp sum_and_squares_kernel(int64_t rows, int64_t cols);

// Two loops over buf (n float32): buf[i] = buf[i] * 2, then out[i] = buf[i] + 1, where
// the second loop reads buf through AFTER(buf, first loop's END), which alone orders it
// after the first. Buffers: 0 out, 1 buf.
UOp inplace_update_kernel(int64_t n);

// out[i] = x[i-1] + x[i] + x[i+1] with the out-of-range neighbours read as 0 through
// gated loads. Buffers: 0 out, 1 x; float32.
UOp stencil_kernel(int64_t n);

// out[i, :] = the rows of the inputs side by side (torch.cat(dim=1)): input k (rows x
// widths[k], float32) fills columns [start_k, start_k + widths[k]); each element is a
// where over the segments, every load gated to its own. Buffers: 0 out, 1.. the inputs.
UOp concat_kernel(int64_t rows, const std::vector<int64_t>& widths);

// out[i, :] = layernorm(x[i, :]) * w + b over rows x cols float32 (torch.layer_norm with
// eps 1e-5): per row the mean, the mean of squared deviations (two passes), then the
// normalised values. Buffers: 0 out, 1 x, 2 w, 3 b (cols each).
UOp layernorm_kernel(int64_t rows, int64_t cols);

// out[i, :] = softmax(x[i, :]) over rows x cols float32: per row a max, a sum of
// exp2((x - max) * log2 e) and the normalised values, one loop each. Buffers: 0 out, 1 x.
UOp softmax_kernel(int64_t rows, int64_t cols);

// Kernels for devices with blocks of threads (emu, cuda):

// c = a * b (float32, m x k times k x n, each a multiple of tile) by blocks of tile x tile
// threads: each block stages a tile of a and of b in shared memory, a BARRIER before the
// tiles are read and another before they are overwritten. Buffers: 0 c, 1 a, 2 b.
UOp tiled_matmul_kernel(int64_t m, int64_t n, int64_t k, int64_t tile);

// out[0] = sum of x[0..n) (float32) by one block of 128 threads: strided partial sums, a
// warp reduction with SHUFFLE xor, one partial per warp through shared memory, and
// thread 0 adding them up after a BARRIER. Buffers: 0 out, 1 x.
UOp block_sum_kernel(int64_t n);

// c = a * b with tensor-core MMA (mma.sync m16n8k16, bfloat16 in, float32 accumulate;
// m a multiple of 16, n of 8, k of 16): one warp per 16x8 tile of c, staging a 16x16 tile
// of a and a 16x8 tile of b in shared memory per step of k. Buffers: 0 c (float32),
// 1 a, 2 b (bfloat16).
UOp mma_matmul_kernel(int64_t m, int64_t n, int64_t k);

// c = a * b for one warpgroup with one wgmma chain (m64nNk16, sm_90a): a (64 x k) and b
// (k x n) row-major in `in`, c (64 x n) float32. b is staged in shared memory K-major (as
// b^T) or MN-major, laid out with `swizzle` as the PTX canonical layouts want; a is staged
// K-major too or, with a_in_registers, read straight into the wgmma's register fragments.
// Ordinary stores fill the tiles, so a FENCE proxy_async precedes the wgmmas; n a multiple
// of 8 up to 256, k a multiple of 16 and of the swizzle's width in elements.
// Buffers: 0 c, 1 a, 2 b.
struct WgmmaTile {
  int64_t n = 64, k = 64;
  Swizzle swizzle = Swizzle::B128;
  bool a_in_registers = false, b_mn_major = false;
  DType in = dtypes::bfloat16;
};
UOp wgmma_tile_kernel(const WgmmaTile& o);

// A TMA round trip for one warp (sm_90): thread 0 loads the box at (load0, load1, ...) of
// the tensor behind map 1 into shared memory laid out with `swizzle` (zeros outside the
// tensor), completing an mbarrier's transaction; every thread waits on it and copies the
// box densely to buffer 0; thread 0 then stores the box at (store0, ...) through map 2
// (elements outside that tensor are dropped) and waits for the store to read the tile.
// `box` innermost first, 1 to 5 dimensions. Variables load<d>, store<d>: int32 coordinates.
UOp tma_round_trip_kernel(DType dtype, const std::vector<int64_t>& box, Swizzle swizzle);

// The ceilings of a Hopper GPU, measured by `kitten bench ceilings`. Each has its work
// counted in its comment; all keep a result so that nothing is dead.
// wgmma from shared memory with no global traffic: `blocks` blocks of two warpgroups, each
// issuing `iterations` chains of 16 wgmma m64n256k16 (bf16, 128B-swizzled K-major tiles);
// 2*64*256*16 flops each. Buffer 0: one float32 per thread.
UOp wgmma_peak_kernel(int64_t blocks, int64_t iterations);
// mma.sync from registers: `blocks` blocks of 8 warps, each issuing `iterations` x 8
// independent chains of 4 mma.sync m16n8k16 (bf16); 2*16*8*16 flops each. Buffer 0: one
// float32 per thread, the sum over the iterations i of 28 + 512 * (i % 2).
UOp mma_sync_peak_kernel(int64_t blocks, int64_t iterations);
// A persistent grid streaming tiles of 64 rows x 256 bf16 (32 KiB) from HBM into shared
// memory: block b loads tiles b, b + blocks, ... (`tiles` each) of the tensor behind the
// tensor map in slot 1 (8192 columns) into a ring of `stages` slots, one thread issuing TMA
// loads on mbarriers; buffer 0 gets, per block, the sum of its tiles' first elements.
UOp tma_stream_kernel(int64_t blocks, int64_t tiles, int64_t stages);
// The same stream by cp.async (256 threads, 16 bytes each, a commit and wait per tile) from
// the tensor in buffer 1 (8192 columns, rows contiguous); buffer 0 as above.
UOp cp_async_stream_kernel(int64_t blocks, int64_t tiles);
// Two warps pass the turn `iterations` times: on a pair of mbarriers (warp 0 arrives on
// one and waits on the other, warp 1 the reverse), or with two block barriers per turn.
// Buffer 0: one float32 per thread.
UOp mbarrier_ping_pong_kernel(int64_t iterations);
UOp barrier_ping_pong_kernel(int64_t iterations);

std::vector<std::string> builtin_kernel_names();
// The named kernel at a default size. Throws std::invalid_argument naming the known ones.
UOp builtin_kernel(const std::string& name);

}  // namespace kitten
