// The linearizer: turns a kernel graph (a SINK) into a linear program, the block-structured
// list of UOps that a renderer walks in order. A RANGE in the list opens a loop and an END
// closes the ranges it names (innermost first); every other op sits inside exactly the
// ranges it depends on (through sources, AFTERs and its closing END), so loop-invariant
// code stays outside. The order is deterministic: the same graph gives the same program.
#pragma once

#include <string>
#include <vector>

#include "dsl/uop.h"

namespace kitten {

struct LinearProgram {
  std::string name;      // the SINK's name
  std::vector<UOp> ops;  // in execution order, the SINK last
};

// Verifies the graph, then linearizes it. Throws IrError when the graph has no valid
// block structure: a RANGE closed by no END or by two, an op that needs a range the END
// has already closed, or ranges that cannot nest.
LinearProgram linearize(const UOp& sink);

// One op per line, indented by loop depth, values named %0, %1 ... in program order.
std::string print_program(const LinearProgram& p);

}  // namespace kitten
