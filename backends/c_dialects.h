// The two dialects of the C renderer (backends/c_renderer.h): what differs between C for the
// cpu and CUDA C, and the per-op table of how each ALU op prints. Internal to backends/.
#pragma once

#include <optional>
#include <span>
#include <string>

#include "dsl/ops.h"

namespace kitten {

struct CDialect {
  const char* target;       // "cpu", "cuda": named in every refusal
  const char* prelude;      // KT_FN and the float bit helpers
  const char* math_prefix;  // "__builtin_" (C) or "" (CUDA)
  bool blocks;              // threads of a block cooperate (SPECIAL, shared memory ...)
};
const CDialect& c_dialect();
const CDialect& cuda_dialect();
// Exact conversions for float16, bfloat16 and the float8s, over the dialect's helpers.
const char* narrow_float_prelude();

// A scalar ALU op applied to printed operands of dtype `operand` (floats already widened);
// nullopt when `op` is not in the table (not an ALU op, or registered by a later layer).
std::optional<std::string> print_alu(const CDialect& d, Op op, DType operand,
                                     std::span<const std::string> args);

}  // namespace kitten
