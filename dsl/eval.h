// The meaning of every ALU op, written once: evaluation over int64 (integers and bool,
// unsigned types by their bits), double (every float dtype, rounded to it after each op)
// with C semantics. Constant folding and bounds (dsl/symbolic.h), the CLI's evaluator
// (tools/int_expr.h) and the emulator all call it; the renderers print the same meaning.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>

#include "dsl/dtype.h"
#include "dsl/ops.h"

namespace kitten {

// One scalar lane: integers and bool in `i`, floats in `f` (which dtype says).
union Scalar {
  int64_t i;
  double f;
};

// What C says of an evaluation besides its value.
enum class EvalFault : uint8_t {
  None,
  Undefined,  // signed overflow or a shift by a negative or too large count: the value wraps
  DivByZero,  // integer division or remainder by zero: there is no value
};

struct EvalResult {
  Scalar value;
  EvalFault fault = EvalFault::None;
};

// Evaluates one lane of ALU op `op` (is_alu(op)); `in` is the element dtype of its operands
// (for WHERE, of its values), `out` the element dtype of its result. Floats are computed in
// double and rounded once to `out`; integers wrap to `out` (two's complement).
EvalResult eval_alu(Op op, DType in, DType out, std::span<const Scalar> args);

// CAST of one lane from `from` to `to` (element dtypes): floats round to nearest even,
// float to integer truncates toward zero (and is Undefined when out of range), integers
// wrap, anything to bool is `!= 0`.
EvalResult eval_cast(DType from, DType to, Scalar x);

// A float rounded to a float dtype (narrow floats exactly, float32 by a conversion).
double round_to(double x, DType d);
// An integer wrapped to an integer or bool dtype (bool: != 0).
int64_t wrap_to(int64_t v, DType d);

class UOp;

// The value of an integer or bool graph (CONST, DEFINE_VAR, CAST and core ALU ops on
// integers and bool) for the given variable values, with C semantics: nullopt where C
// leaves it undefined or it divides by zero. A WHERE is C's ?: (as the renderers write
// it): only the branch taken decides whether it is defined. Throws IrError for any other
// node.
std::optional<int64_t> eval_int(const UOp& u, const std::map<std::string, int64_t>& vars);

}  // namespace kitten
