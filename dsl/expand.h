// The expander: UPCAST and UNROLL ranges (constant extents) leave the graph; each node that
// depends on one becomes one copy per value of the index, the index a constant in each.
//  - UPCAST copies are side by side (independent iterations of a parallel axis): a
//    register buffer written per iteration gets one instance per copy (its size
//    multiplied, each copy indexing its own), and contiguous global accesses whose
//    alignment is proven become one vector load or store (as wide as the target allows).
//  - UNROLL copies run one after another: copy k sees memory after copy k - 1's body
//    (an AFTER that named the range is ordered after the previous copy's body instead).
// An END that closed an expanded range closes the others around all the copies (a GROUP);
// an END left with no range is its body.
#pragma once

#include "dsl/target.h"
#include "dsl/uop.h"

namespace kitten {

UOp expand(const UOp& sink, const Target& target);

}  // namespace kitten
