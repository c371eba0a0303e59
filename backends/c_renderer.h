// Renders a linear program as C for the cpu backend or as CUDA C for the cuda backend;
// the two dialects share everything but the launch model.
//
// C:    void <name>(void* const* args, long long lo, long long hi)
//       args holds the buffers and integers in parameter-slot order, then the variables
//       by name. When the only top-level loop is a global range, the function runs its
//       iterations [lo, hi), so a thread pool can split it; otherwise it runs everything.
// CUDA: extern "C" __global__ void <name>(T* p0, ..., long long <vars>...)
//       SPECIALs are blockIdx/threadIdx and give the launch shape (the lowering's map_grid
//       pass makes them from global ranges); a kernel without them runs as one thread;
//       shared memory is static up to 48 KiB, else dynamic.
//
// float16 and bfloat16 values are held as their 16-bit patterns and every operation on
// them rounds exactly once (the source carries its own exact conversions; on sm_80 and
// later the GPU's cvt.rn, which rounds the same and gives NaNs the canonical payload), so
// results match per-op rounded hardware arithmetic. The sources need no headers.
#pragma once

#include "backends/hcq.h"

namespace kitten {

// Throws BackendError, naming the op and "cpu", for kernels the cpu cannot run (threads of
// a block cooperating: SPECIAL, local ranges, shared memory, barriers, shuffles, MMA, async
// copies) or arithmetic it does not render yet (on vectors of narrow floats).
// With a target, its atomics are checked too (an ATOMIC it lacks is refused by name).
RenderedKernel render_c(const LinearProgram& p, const Target* target = nullptr);

// Throws BackendError, naming the op and "cuda", for what the CUDA renderer does not
// support yet (arithmetic on vectors of narrow floats, MMA layouts other than mma.sync).
RenderedKernel render_cuda(const LinearProgram& p, const Target* target = nullptr);

}  // namespace kitten
