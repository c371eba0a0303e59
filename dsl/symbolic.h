// Symbolic integer algebra on UOps: bounds (vmin/vmax) of every integer and bool
// expression, and the "symbolic" rule set that simplifies index arithmetic: constant
// folding, identities, a canonical order of sums and products with like terms
// collected, division and modulo folding by bounds and common factors (C's truncating
// semantics), comparisons decided by bounds or divided through by common factors, and
// boolean simplification including validity gates.
//
// The rules act on signed integers and bool; as in C, signed overflow is undefined, so
// they assume an expression does not overflow its dtype. A where's value is its taken
// branch's (C's ?:), so a rule may change what the other branch computes: inside the
// branch taken when c holds, c is true.
#pragma once

#include <cstdint>
#include <utility>

#include "dsl/pattern.h"

namespace kitten {

// Inclusive bounds of an integer or bool expression (bool: 0 or 1), from the bounds of
// its variables, ranges and specials. Other dtypes get the widest int64 range.
std::pair<int64_t, int64_t> bounds(const UOp& u);
inline int64_t vmin(const UOp& u) { return bounds(u).first; }
inline int64_t vmax(const UOp& u) { return bounds(u).second; }

// The largest divisor u is known to be a multiple of for every value of its variables (0:
// u is always 0), through + - * << & | ^ %, where, min, max, casts that widen, constants
// and bounds, and through / and >> only where they are exact. The lowering proves an
// address aligned with it: row*128 + (col ^ (row%8))*16 is a multiple of 16.
int64_t known_divisor(const UOp& u);
bool provably_multiple(const UOp& x, int64_t m);

const RuleSet& symbolic_rules();

// graph_rewrite with symbolic_rules().
UOp simplify(const UOp& u);

}  // namespace kitten
