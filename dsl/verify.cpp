#include "dsl/verify.h"

#include <algorithm>
#include <map>
#include <unordered_map>

#include "dsl/printer.h"

namespace kitten {

IrError ir_error(const UOp& node, std::string_view rule, std::string_view detail, const UOp& root) {
  std::string msg = op_name(node.op()) + " breaks \"" + std::string(rule) + "\"";
  if (!detail.empty()) msg += ": " + std::string(detail);
  msg += "\n" + print_graph(root ? root : node, node, 30);
  return IrError(msg);
}

namespace {

std::string count_text(const OpSpec& s) {
  size_t fixed = s.sources.size();
  if (s.rest_max == 0) return "exactly " + std::to_string(fixed);
  size_t lo = fixed + s.rest_min;
  if (s.rest_max < 0) return "at least " + std::to_string(lo);
  return std::to_string(lo) + " to " + std::to_string(fixed + s.rest_max);
}

}  // namespace

void check_node(const UOp& node) {
  const OpSpec* spec = find_op_spec(node.op());
  if (!spec)
    throw IrError("unknown op id " + std::to_string(int(node.op())) +
                  ": no op is registered under it");
  size_t n = node.src().size(), fixed = spec->sources.size();
  bool count_ok =
      n >= fixed + spec->rest_min && (spec->rest_max < 0 || n <= fixed + size_t(spec->rest_max));
  if (!count_ok)
    throw ir_error(node, spec->name + " takes " + count_text(*spec) + " sources",
                   "it has " + std::to_string(n));
  for (size_t i = 0; i < n; ++i) {
    const SourceRule& r = i < fixed ? spec->sources[i] : *spec->rest;
    const UOp& s = node.src(i);
    if (!r.ok(node, s))
      throw ir_error(node, "source " + r.name + " is " + r.doc,
                     "source " + std::to_string(i) + " is " + op_name(s.op()) + " : " +
                         std::string(s.dtype().name()));
  }
  if (arg_kind(node.arg()) != spec->arg)
    throw ir_error(node, "the arg is of kind " + std::string(arg_kind_name(spec->arg)),
                   "it is of kind " + std::string(arg_kind_name(arg_kind(node.arg()))));
  if (const auto* ext = std::get_if<ExtArg>(&node.arg());
      ext && ext->value->kind() != spec->ext_arg)
    throw ir_error(node, "the arg is an extension of kind " + spec->ext_arg,
                   "it is of kind " + std::string(ext->value->kind()));
  if (spec->dtype.infer) {
    std::optional<DType> want = spec->dtype.infer(node.src(), node.arg());
    if (!want || *want != node.dtype())
      throw ir_error(node, "dtype: " + spec->dtype.doc,
                     "it is " + std::string(node.dtype().name()) +
                         (want ? ", expected " + std::string(want->name()) : ""));
  }
  if (spec->dtype.check && !spec->dtype.check(node.dtype()))
    throw ir_error(node, "dtype: " + spec->dtype.doc, "it is " + std::string(node.dtype().name()));
  for (const NodeRule& r : spec->rules) {
    std::string what = r.check(node);
    if (!what.empty()) throw ir_error(node, r.doc, what);
  }
}

const std::vector<GraphRule>& graph_rules() {
  static const std::vector<GraphRule> rules = {
      {"sink-is-root", "SINK is only ever the root of a graph, never a source"},
      {"one-range-per-axis", "distinct RANGEs have distinct axis ids"},
      {"one-buffer-per-slot",
       "distinct PARAMs (with TENSOR_MAPs), DEFINE_LOCALs or DEFINE_REGs (each op on its own) "
       "have distinct slots"},
      {"one-var-per-name", "distinct DEFINE_VARs have distinct names"},
      {"one-extent-per-special",
       "all SPECIALs of one launch dimension (e.g. threadIdx.x) have the same extent"},
  };
  return rules;
}

void verify(const UOp& root) {
  if (!root) throw IrError("verify: the graph is null");
  verify(root, toposort(root));
}

void verify(const UOp& root, const std::vector<UOp>& order) {
  std::map<std::pair<int64_t, int>, UOp> ranges_and_slots;  // (id, op) -> first node
  std::unordered_map<std::string, UOp> vars, specials;
  auto rule = [](int i) { return graph_rules()[i]; };
  auto fail = [&](const UOp& node, GraphRule r, const UOp& other) {
    return ir_error(
        node, r.doc,
        std::string(r.name) + ", see also %" +
            std::to_string(std::find(order.begin(), order.end(), other) - order.begin()),
        root);
  };
  for (const UOp& u : order) {
    check_node(u);
    for (const UOp& s : u.src())
      if (s.op() == Op::SINK) throw ir_error(s, rule(0).doc, std::string(rule(0).name), root);
    Op op = u.op();
    if (op == Op::RANGE || op == Op::PARAM || op == Op::TENSOR_MAP || op == Op::DEFINE_LOCAL ||
        op == Op::DEFINE_REG) {
      int64_t id = op == Op::RANGE ? u.axis().id : u.slot();
      Op kind = op == Op::TENSOR_MAP ? Op::PARAM : op;  // one parameter slot, either kind
      auto [it, fresh] = ranges_and_slots.emplace(std::pair{id, int(kind)}, u);
      if (!fresh) throw fail(u, rule(op == Op::RANGE ? 1 : 2), it->second);
    } else if (op == Op::DEFINE_VAR) {
      auto [it, fresh] = vars.emplace(std::get<VarArg>(u.arg()).name, u);
      if (!fresh) throw fail(u, rule(3), it->second);
    } else if (op == Op::SPECIAL) {
      std::string dim(special_name(std::get<SpecialArg>(u.arg())));
      auto [it, fresh] = specials.emplace(dim, u);
      if (!fresh) throw fail(u, rule(4), it->second);
    }
  }
}

}  // namespace kitten
