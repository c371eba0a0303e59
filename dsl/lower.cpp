#include "dsl/lower.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "dsl/printer.h"
#include "dsl/rewrite.h"
#include "dsl/symbolic.h"
#include "dsl/verify.h"

namespace kitten {

namespace {

// ---- the core passes ------------------------------------------------------------------

// The symbolic rules over the whole kernel: they act on integer and bool nodes (a float
// node is only ever reordered where its op commutes), so index arithmetic folds and a
// gate proven true by bounds goes, with its load's alternative value.
UOp simplify_indices(const UOp& sink, const Target&) { return simplify(sink); }

struct Pipeline {
  std::mutex mu;
  std::vector<std::unique_ptr<Pass>> passes;
  Pipeline() {
    passes.push_back(std::make_unique<Pass>(
        Pass{"simplify_indices",
             "Simplifies index and gate arithmetic with the symbolic rules; a gate proven true "
             "goes, with its load's alternative value.",
             simplify_indices}));
  }
};

Pipeline& pipeline() {
  static Pipeline* p = new Pipeline();  // immortal, as the op registry
  return *p;
}

std::vector<std::string> split_names(const char* list) {
  std::vector<std::string> out;
  std::string cur;
  for (const char* c = list; c && *c; ++c) {
    if (*c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += *c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

void register_pass(Pass pass, PassPosition where, std::string_view anchor) {
  Pipeline& p = pipeline();
  std::lock_guard lock(p.mu);
  if (pass.name.empty() || !pass.run)
    throw std::invalid_argument("register_pass: a pass needs a name and a function");
  for (auto& q : p.passes)
    if (q->name == pass.name)
      throw std::invalid_argument("register_pass: '" + pass.name + "' is taken");
  auto at = p.passes.end();
  if (!anchor.empty()) {
    at = std::find_if(p.passes.begin(), p.passes.end(),
                      [&](const auto& q) { return q->name == anchor; });
    if (at == p.passes.end())
      throw std::invalid_argument("register_pass: no pass is named '" + std::string(anchor) + "'");
    if (where == PassPosition::After) ++at;
  } else if (where == PassPosition::Before) {
    at = p.passes.begin();
  }
  p.passes.insert(at, std::make_unique<Pass>(std::move(pass)));
}

std::vector<const Pass*> passes() {
  Pipeline& p = pipeline();
  std::lock_guard lock(p.mu);
  std::vector<const Pass*> out;
  for (auto& q : p.passes) out.push_back(q.get());
  return out;
}

LowerOptions default_lower_options() {
  LowerOptions o;
  o.print_after = split_names(std::getenv("KITTEN_DUMP"));
  return o;
}

UOp lower(const UOp& sink, const Target& target, const LowerOptions& opts) {
  if (!sink || sink.op() != Op::SINK) throw IrError("lower: the root must be a SINK");
  auto wanted = [&](const std::string& name) {
    for (const std::string& p : opts.print_after)
      if (p == name || p == "all") return true;
    return false;
  };
  UOp g = sink;
  for (const Pass* pass : passes()) {
    g = pass->run(g, target);
    try {
      verify(g);
    } catch (const IrError& e) {
      throw IrError("lower: pass '" + pass->name + "' produced an invalid graph: " + e.what());
    }
    if (!wanted(pass->name)) continue;
    if (opts.dump)
      opts.dump(pass->name, g);
    else
      std::fprintf(stderr, "# after %s\n%s", pass->name.c_str(), print_graph(g).c_str());
  }
  return g;
}

}  // namespace kitten
