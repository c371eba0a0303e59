#include "dsl/rewrite.h"

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <unordered_map>
#include <vector>

#include "dsl/printer.h"

namespace kitten {

namespace {
thread_local RewriteObserver* observer = nullptr;
}  // namespace

RewriteObserver* set_rewrite_observer(RewriteObserver* o) {
  RewriteObserver* before = observer;
  observer = o;
  return before;
}

RewriteOptions default_rewrite_options() {
  RewriteOptions o;
  const char* t = std::getenv("KITTEN_TRACE_REWRITE");
  o.trace = t && *t && std::string(t) != "0";
  return o;
}

namespace {

struct Frame {
  UOp node;
  int stage;    // 0: first visit, 1: sources done, 2: waiting for `pending`
  UOp pending;  // stage 2: what the node was rewritten to
  int depth;    // rewrites so far along this chain
};

class Rewriter {
 public:
  Rewriter(const RuleSet& rules, void* ctx, const RewriteOptions& o)
      : rules_(rules), ctx_(ctx), opts_(o) {}

  UOp run(const UOp& root) {
    stack_.push_back({root, 0, {}, 0});
    while (!stack_.empty()) step();
    return done_.at(root.id()).second;
  }

 private:
  bool is_done(const UOp& u) const { return done_.count(u.id()) != 0; }
  void finish(const UOp& u, const UOp& result) {
    done_.emplace(u.id(), std::pair{u, result});
    done_.emplace(result.id(), std::pair{result, result});
  }

  // Applies the rules once; on a hit, the frame waits for the result to be rewritten.
  bool try_rules(Frame& f, const UOp& u) {
    const std::string* fired = nullptr;
    std::optional<UOp> r = rules_.rewrite(u, ctx_, &fired);
    if (!r) return false;
    if (opts_.trace)
      std::fprintf(stderr, "rewrite %s: %s -> %s\n", fired->c_str(), describe(u).c_str(),
                   describe(*r).c_str());
    if (observer) (*observer)(*fired, u, *r);
    recent_.push_back(*fired);
    if (recent_.size() > 12) recent_.pop_front();
    int depth = f.depth + 1;
    if (depth > opts_.max_rewrites_per_node) fail(u);
    f.stage = 2;
    f.pending = *r;
    stack_.push_back({*r, 0, {}, depth});
    return true;
  }

  [[noreturn]] void fail(const UOp& u) {
    std::string names;
    for (const std::string& n : recent_) names += (names.empty() ? "" : ", ") + n;
    throw IrError("graph_rewrite(" + rules_.name() + "): no fixed point after " +
                  std::to_string(opts_.max_rewrites_per_node) +
                  " rewrites of one node; the last rules to fire: " + names + "\n" +
                  print_graph(u, u, 20));
  }

  void step() {
    Frame& f = stack_.back();
    if (f.stage == 2) {
      if (!is_done(f.pending)) return;  // not reached: pending is pushed above this frame
      UOp node = f.node, result = done_.at(f.pending.id()).second;
      stack_.pop_back();
      finish(node, result);
      return;
    }
    if (is_done(f.node)) {
      stack_.pop_back();
      return;
    }
    if (f.stage == 0) {
      if (opts_.order == RewriteOrder::TopDown && try_rules(f, f.node)) return;
      f.stage = 1;
      UOp node = f.node;
      int depth = f.depth;
      for (size_t i = node.src().size(); i-- > 0;)  // last first: source 0 is done first
        if (!is_done(node.src(i))) stack_.push_back({node.src(i), 0, {}, depth});
      return;
    }
    // stage 1: every source is rewritten; rebuild with the new sources.
    std::vector<UOp> src;
    src.reserve(f.node.src().size());
    bool changed = false;
    for (const UOp& s : f.node.src()) {
      src.push_back(done_.at(s.id()).second);
      changed |= src.back() != s;
    }
    UOp rebuilt = changed ? UOp::make(f.node.op(), f.node.dtype(), src, f.node.arg()) : f.node;
    if (opts_.order == RewriteOrder::BottomUp) {
      if (try_rules(f, rebuilt)) return;
      UOp node = f.node;
      stack_.pop_back();
      finish(node, rebuilt);
      return;
    }
    if (changed) {  // top-down: the rebuilt node may match again
      f.stage = 2;
      f.pending = rebuilt;
      int depth = f.depth + 1;
      if (depth > opts_.max_rewrites_per_node) fail(rebuilt);
      stack_.push_back({rebuilt, 0, {}, depth});
      return;
    }
    UOp node = f.node;
    stack_.pop_back();
    finish(node, node);
  }

  const RuleSet& rules_;
  void* ctx_;
  RewriteOptions opts_;
  std::vector<Frame> stack_;
  // node -> (node kept alive, its rewritten form); keeping the key alive stops its
  // address from being reused by another node while the map still names it.
  std::unordered_map<const void*, std::pair<UOp, UOp>> done_;
  std::deque<std::string> recent_;
};

}  // namespace

UOp graph_rewrite(const UOp& root, const RuleSet& rules, void* ctx, RewriteOptions opts) {
  if (!root) throw IrError("graph_rewrite(" + rules.name() + "): the graph is null");
  return Rewriter(rules, ctx, opts).run(root);
}

UOp substitute(const UOp& root, const std::vector<std::pair<UOp, UOp>>& replace) {
  std::unordered_map<const void*, UOp> image;
  for (const auto& [from, to] : replace) image.emplace(from.id(), to);
  for (const UOp& u : toposort(root)) {
    if (image.count(u.id())) continue;
    std::vector<UOp> src;
    bool changed = false;
    for (const UOp& s : u.src()) {
      const UOp& t = image.at(s.id());
      changed |= t != s;
      src.push_back(t);
    }
    image.emplace(u.id(), changed ? UOp::make(u.op(), u.dtype(), src, u.arg()) : u);
  }
  return image.at(root.id());
}

}  // namespace kitten
