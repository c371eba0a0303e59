// Graph walks and the printer. A graph prints one node per line in topological order,
// every node named once (%0, %1 ...) and referred to by name, so shared nodes show as
// shared. Every IR error message prints the offending node this way.
#pragma once

#include <string>
#include <vector>

#include "dsl/uop.h"

namespace kitten {

// Every node reachable from root, sources before users, in a deterministic order (the
// order of first visit through sources). Iterative: safe on graphs of any depth.
std::vector<UOp> toposort(const UOp& root);

// Prints the graph below root. `mark` (when set) is flagged with "<--"; when the graph has
// more than max_lines nodes, only the last max_lines are printed, after a count of the rest.
std::string print_graph(const UOp& root, const UOp& mark = {}, size_t max_lines = SIZE_MAX);

// One line for one node, sources named by their short stable keys (for traces).
std::string describe(const UOp& u);

}  // namespace kitten
