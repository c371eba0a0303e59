#include "dsl/printer.h"

#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace kitten {

std::vector<UOp> toposort(const UOp& root) {
  std::vector<UOp> order;
  if (!root) return order;
  std::unordered_set<const void*> seen{root.id()};
  std::vector<std::pair<const UOp*, size_t>> stack{{&root, 0}};
  while (!stack.empty()) {
    auto& [u, next] = stack.back();
    if (next < u->src().size()) {
      const UOp& s = u->src(next++);
      if (seen.insert(s.id()).second) stack.emplace_back(&s, 0);
    } else {
      order.push_back(*u);
      stack.pop_back();
    }
  }
  return order;
}

namespace {
std::string line(const UOp& u, const std::unordered_map<const void*, size_t>& names) {
  std::string s = op_name(u.op());
  if (!u.src().empty()) {
    s += "(";
    for (size_t i = 0; i < u.src().size(); ++i) {
      auto it = names.find(u.src(i).id());
      s += (i ? ", %" : "%") + (it == names.end() ? std::string("?") : std::to_string(it->second));
    }
    s += ")";
  }
  std::string arg = arg_to_string(u.arg(), u.dtype());
  if (!arg.empty()) s += " [" + arg + "]";
  return s + " : " + std::string(u.dtype().name());
}
}  // namespace

std::string print_graph(const UOp& root, const UOp& mark, size_t max_lines) {
  std::vector<UOp> order = toposort(root);
  std::unordered_map<const void*, size_t> names;
  for (size_t i = 0; i < order.size(); ++i) names.emplace(order[i].id(), i);
  std::string out;
  size_t first = order.size() > max_lines ? order.size() - max_lines : 0;
  if (first) out += "  ... " + std::to_string(first) + " earlier nodes\n";
  for (size_t i = first; i < order.size(); ++i) {
    out += "  %" + std::to_string(i) + " = " + line(order[i], names);
    if (order[i] == mark) out += "   <--";
    out += "\n";
  }
  return out;
}

std::string describe(const UOp& u) {
  std::string s = op_name(u.op());
  if (!u.src().empty()) {
    s += "(";
    for (size_t i = 0; i < u.src().size(); ++i)
      s += (i ? ", " : "") + op_name(u.src(i).op()) + "@" + u.src(i).key().hex().substr(24);
    s += ")";
  }
  std::string arg = arg_to_string(u.arg(), u.dtype());
  if (!arg.empty()) s += " [" + arg + "]";
  return s + " : " + std::string(u.dtype().name()) + " @" + u.key().hex().substr(24);
}

}  // namespace kitten
