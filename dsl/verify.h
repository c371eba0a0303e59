// The verifier. check_node applies one node's op spec from the registry (UOp::make runs
// it on every new node); verify walks a whole graph and also applies the graph rules that
// no single node can check. Both throw IrError naming the rule and printing the node.
#pragma once

#include <string_view>
#include <vector>

#include "dsl/uop.h"

namespace kitten {

void check_node(const UOp& node);
void verify(const UOp& root);
// The same for a graph already in toposort order (`order`, root last), as linearize has it.
void verify(const UOp& root, const std::vector<UOp>& order);

struct GraphRule {
  std::string_view name;
  std::string_view doc;
};
const std::vector<GraphRule>& graph_rules();

// An IrError for `node` breaking `rule`: the message names both and prints the graph
// below `root` (default: the node itself) with the node marked.
IrError ir_error(const UOp& node, std::string_view rule, std::string_view detail,
                 const UOp& root = {});

}  // namespace kitten
