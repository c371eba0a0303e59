// The text form of integer expressions used by `kitten simplify`: C's integer operators
// (+ - * / % with truncating division, comparisons, && || !), min, max, where,
// parentheses and integer literals, over named variables with inclusive bounds. Parsed
// into int64 UOps (comparisons and logic into bool, converted as C converts them),
// rendered back in the same grammar (dsl/eval.h evaluates them).
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

// Throws ExprError on a syntax error, an unknown variable, or a division or modulo by
// an expression whose bounds contain 0.
UOp parse_int_expr(std::string_view text, const std::vector<ExprVar>& vars);
// Reads "name=lo..hi" (as given to --var); throws ExprError when malformed or empty.
ExprVar parse_var_bounds(std::string_view spec);

std::string render_int_expr(const UOp& u);

}  // namespace kitten
