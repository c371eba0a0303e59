// TC: the schedule entry TC=1 routes a generated kernel that is a matrix product onto the
// tile GEMM (kernels/gemm.h), whose knobs (BM BN BK WM WN STAGES SWIZZLE GROUP WGMMA
// BLOCKS EPILOGUE REPACK) the same schedule may set; the default is the GEMM's own (the
// Hopper schedule on an H100). Not a second tensor-core path: the "tensor_cores" kernel
// route (dsl/lower.h), registered here by the tile library, recognises the product and
// lowers the GEMM's kernels in its place, with the tensor maps their launches take
// described for the caller's buffers (LoweredKernels::maps).
#pragma once

#include <optional>
#include <string>

#include "dsl/uop.h"
#include "kernels/gemm.h"

namespace kitten {

// The GEMM a generated kernel computes, or nullopt with the reason in `why`: one store of
// C[i, j] (f32, bf16 or f16, rows dense in j) of the f32 sum over one reduce range k of
// A[i, k] * B[k, j], A and B loaded from two other buffers of one 16-bit float dtype at
// indices linear in the ranges with one unit stride (either layout), nothing else
// computed. An axis of extent 1 may be absent.
std::optional<GemmProblem> matmul_problem(const UOp& sink, std::string* why = nullptr);

// Registers the "tensor_cores" route (once; later calls do nothing). Programs that lower
// TC=1 schedules call it first; without it such a schedule is refused by name.
void register_tensor_core_route();

}  // namespace kitten
