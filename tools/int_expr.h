// The text form of integer expressions used by `kitten simplify`: C's integer operators
// (+ - * / % with truncating division, << >> & | ^ ~, comparisons, && || !), min, max,
// where, parentheses and integer literals (decimal or 0x hex; a leading 0 is refused
// because C reads it as octal), over named variables with inclusive bounds. Parsed into
// UOps of one signed type (int64 by default, or int32 as kernels index) with
// comparisons and logic in bool, converted as C converts them; rendered back in the same
// grammar (dsl/eval.h evaluates them). Parser and renderer use no recursion per operator
// of a chain: a chain of 100,000 terms is fine; parentheses and prefix operators nest at
// most 200 deep.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dsl/uop.h"

namespace kitten {

struct ExprVar {
  std::string name;
  int64_t lo, hi;
};

// A parse error: the message names the column (1-based) and what was expected there.
struct ExprError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws ExprError on a syntax error, an unknown variable, a literal or variable bound
// outside `type`, a division or modulo by an expression whose bounds contain 0, or a
// shift whose count can fall outside [0, bits-1].
UOp parse_int_expr(std::string_view text, const std::vector<ExprVar>& vars,
                   DType type = dtypes::int64);
// Reads "name=lo..hi" (as given to --var); throws ExprError when malformed or empty.
ExprVar parse_var_bounds(std::string_view spec);

std::string render_int_expr(const UOp& u);

}  // namespace kitten
