// graph_rewrite: applies a RuleSet to a whole graph until no rule fires anywhere (a fixed
// point), bottom-up (sources first) or top-down (a node before its sources), without
// recursion, however deep the graph. A rule that keeps firing on the same chain of
// results (a rewrite loop) stops the rewrite with an IrError naming the rules involved.
#pragma once

#include <functional>

#include <string>
#include <utility>
#include <vector>

#include "dsl/pattern.h"

namespace kitten {

enum class RewriteOrder { BottomUp, TopDown };

struct RewriteOptions {
  RewriteOrder order = RewriteOrder::BottomUp;
  // Rewrites allowed along one chain (a node, what it became, what that became ...).
  int max_rewrites_per_node = 1000;
  // Print each rule that fires, on which node, to stderr. Default: the environment
  // variable KITTEN_TRACE_REWRITE is set to something other than 0.
  bool trace = false;
};

RewriteOptions default_rewrite_options();

// Every rule that fires on this thread while one is installed is reported to it: the
// rule's name, the node it fired on and the node it returned (the lowering pipeline
// records them for KITTEN_DUMP_JSON). Installing returns the previous observer.
using RewriteObserver =
    std::function<void(const std::string& rule, const UOp& from, const UOp& to)>;
RewriteObserver* set_rewrite_observer(RewriteObserver* observer);

UOp graph_rewrite(const UOp& root, const RuleSet& rules, void* ctx = nullptr,
                  RewriteOptions opts = default_rewrite_options());

// `root` rebuilt with each `from` node replaced by its `to` (sources first, no rules): how
// a lowering pass puts values into an expression written over variables.
UOp substitute(const UOp& root, const std::vector<std::pair<UOp, UOp>>& replace);

}  // namespace kitten
