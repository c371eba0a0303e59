// Patterns over UOp graphs and named rewrite rules. A pattern matches an op (or a set of
// ops), a dtype, an arg, and its sources in order or, for commutative ops, in any order;
// names capture nodes (a name used twice must match the same node) and a predicate can
// veto a node. A rule is a name, a pattern and a body that builds the replacement (or
// declines with nullopt). Rules are grouped into named RuleSets, indexed by root op.
//
//   Rule{"x+0", pat(Op::ADD, {any("x"), cint(0)}).commutative(),
//        [](const Match& m) { return m["x"]; }}
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dsl/uop.h"

namespace kitten {

class Match;

class Pat {
 public:
  // Matches any node; with a name, captures it.
  static Pat any(std::string name = "");
  // Matches a node of one of `ops` with exactly these sources (in order).
  static Pat op(std::vector<Op> ops, std::vector<Pat> src);
  // Matches a node of one of `ops`, whatever its sources.
  static Pat op(std::vector<Op> ops);

  Pat& name(std::string n);
  Pat& dtype(DType d);  // exactly this dtype
  Pat& where(std::function<bool(const UOp&)> pred);
  Pat& arg(Arg a);     // exactly this arg
  Pat& commutative();  // two sources, either order

  struct Node;
  std::shared_ptr<const Node> node() const { return node_; }
  const std::vector<Op>& root_ops() const;  // empty: any op

 private:
  Node& mut();
  std::shared_ptr<Node> node_;
};

// Short forms.
inline Pat any(std::string name = "") { return Pat::any(std::move(name)); }
inline Pat pat(Op op, std::vector<Pat> src) { return Pat::op({op}, std::move(src)); }
Pat cvar(std::string name);  // a CONST, captured
Pat cint(int64_t value);     // an integer or bool CONST of this value
Pat ivar(std::string name);  // any node of an integer dtype, captured

// The captures of one match, and the context object the rewrite was given.
class Match {
 public:
  const UOp& operator[](const std::string& name) const;  // throws if not captured
  bool has(const std::string& name) const;
  template <class T>
  T& ctx() const {
    return *static_cast<T*>(ctx_);
  }
  const UOp& root() const { return root_; }

 private:
  friend class RuleSet;
  friend bool match_pattern(const Pat&, const UOp&, Match&);
  std::vector<std::pair<std::string, UOp>> caps_;
  UOp root_;
  void* ctx_ = nullptr;
};

// Matches `p` against `u`, filling `m`'s captures. Exposed for tests.
bool match_pattern(const Pat& p, const UOp& u, Match& m);

struct Rule {
  std::string name;
  Pat pattern;
  std::function<std::optional<UOp>(const Match&)> body;
};

class RuleSet {
 public:
  RuleSet(std::string name, std::vector<Rule> rules);
  const std::string& name() const { return name_; }
  const std::vector<Rule>& rules() const { return rules_; }
  // This set's rules, then `other`'s: named "<this>+<other>".
  RuleSet operator+(const RuleSet& other) const;
  // One step at one node: the first rule (in order) whose pattern matches and whose body
  // returns a node different from u. `fired` gets the rule's name.
  std::optional<UOp> rewrite(const UOp& u, void* ctx = nullptr,
                             const std::string** fired = nullptr) const;

 private:
  void index();
  std::string name_;
  std::vector<Rule> rules_;
  std::vector<std::vector<size_t>> by_op_;  // root op id -> rules, wildcard ones included
  std::vector<size_t> wildcard_;            // rules whose root matches any op
};

}  // namespace kitten
