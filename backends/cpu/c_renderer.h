// Renders a linear program as a C function for the cpu backend:
//   void <name>(void* const* args, long long lo, long long hi)
// args holds the buffers and integers in parameter-slot order, then the variables by
// name. When the program's only top-level loop is a global range, the function runs its
// iterations [lo, hi) so that a thread pool can split it; otherwise it runs everything.
// float16 and bfloat16 values are held as their 16-bit patterns and every operation on
// them rounds exactly once (the source carries its own exact conversions), so results
// match per-op rounded hardware arithmetic. The source needs no headers.
#pragma once

#include "backends/hcq.h"

namespace kitten {

// Throws BackendError for kernels the cpu cannot run (threads of a block cooperating:
// local ranges, shared memory, barriers, shuffles, MMA, async copies) or types it does not
// render yet (float8, vectors of narrow floats).
RenderedKernel render_c(const LinearProgram& p);

}  // namespace kitten
