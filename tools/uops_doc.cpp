// docs/uops.md, generated from the op registry, the dtypes and the graph rules.
#include "tools/uops_doc.h"

#include <cstdio>

#include "dsl/linearize.h"
#include "dsl/mma.h"
#include "dsl/ops.h"
#include "dsl/printer.h"
#include "dsl/verify.h"
#include "kernels/examples.h"
#include "tiles/tile.h"

namespace kitten {

namespace {

std::string sources_text(const OpSpec& s) {
  std::string out;
  for (const SourceRule& r : s.sources)
    out += (out.empty() ? "" : "; ") + ("`" + r.name + "`: " + r.doc);
  if (s.rest) {
    std::string count = s.rest_max < 0 ? std::to_string(s.rest_min) + " or more"
                        : s.rest_min == s.rest_max
                            ? std::to_string(s.rest_min)
                            : std::to_string(s.rest_min) + " to " + std::to_string(s.rest_max);
    out += (out.empty() ? "" : "; then ") + count + " `" + s.rest->name + "`: " + s.rest->doc;
  }
  return out.empty() ? "none" : out;
}

std::string flag_names(const OpSpec& s) {
  static constexpr std::pair<OpFlag, const char*> names[] = {
      {kOpAlu, "alu"},
      {kOpEffect, "effect"},
      {kOpControl, "control flow"},
      {kOpDefinition, "definition"},
      {kOpMemory, "memory"},
      {kOpCooperative, "cooperative"},
  };
  std::string out;
  for (auto [f, name] : names)
    if (s.flags & f) out += (out.empty() ? "" : ", ") + std::string(name);
  if (s.flags & kOpAlu) out += " (" + std::to_string(s.arity) + " sources)";
  return out;
}

std::string operand_text(const FragmentLayout& f) {
  if (f.home == OperandHome::SharedDescriptor)
    return "shared, " + std::string(swizzle_name(f.swizzle)) + " swizzle";
  return std::string(f.fragment.name());
}

std::string format_row(const FloatFormat& f) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "| %s | %d | %d | %d | %g | %s | %s |\n",
                std::string(f.name).c_str(), f.exp_bits, f.man_bits, f.bias(), f.max_finite(),
                f.ieee ? "IEEE: all-ones exponent is Inf (mantissa 0) or NaN"
                       : "no Inf; only S.1111.111 is NaN",
                f.cast_saturation == Saturation::Finite ? "saturates to max finite" : "to Inf");
  return buf;
}

std::string example(const std::string& title, const UOp& k) {
  return "\n" + title + ":\n\n```\n" + print_graph(k) + "```\n\nLinearized:\n\n```\n" +
         print_program(linearize(k)) + "```\n";
}

std::string kernel_semantics() {
  std::string d =
      "\n## Kernel semantics\n\n"
      "A kernel is a SINK over its effects. Structure is explicit in the graph:\n\n"
      "- **RANGE and END.** RANGE(end) is a loop index from 0 to end-1. END(body, ranges...)\n"
      "  closes the ranges over the body effect: the body runs once per iteration of them.\n"
      "  Every RANGE is closed by exactly one END. Ranges nest: a range sits inside the ranges\n"
      "  still open around its END, and ranges closed by one END nest in order of axis kind\n"
      "  (global outermost), then axis id.\n"
      "- **Placement.** An op sits in the innermost range it depends on, counting the RANGEs\n"
      "  it reaches through its sources, through AFTERs, and through the END that closes it\n"
      "  (an END removes the ranges it closes). Loop-invariant code therefore stays outside.\n"
      "- **AFTER(buf, deps...)** is buf, ordered after deps: only the uses reached through this\n"
      "  AFTER are ordered. Ordering between the threads of a block also needs a BARRIER\n"
      "  among the deps.\n"
      "- **Accumulators.** An accumulator is a register buffer acc (DEFINE_REG). Its init\n"
      "  STOREs through AFTER(acc, output ranges), so it is reset for every output element\n"
      "  rather than hoisted to kernel entry; the in-loop read goes through AFTER(acc, init,\n"
      "  reduce range); the update STORE is closed by END(update, reduce range); the result is\n"
      "  read through AFTER(acc, that END). There is no ASSIGN: an update is STORE, END, AFTER.\n"
      "- **Multi-output.** GROUP(store_a, store_b) closed by one END over the shared ranges\n"
      "  writes two outputs in one pass over the inputs.\n"
      "- **Gates.** INDEX(buf, i, gate) with gate false neither loads nor stores; a gated LOAD\n"
      "  yields its alternative value.\n\n"
      "The linearizer (dsl/linearize.h) turns a kernel into a linear program by these rules.\n"
      "The examples below are the built-in kernels (kernels/examples.h), printed from the\n"
      "graphs the tests run.\n";
  d += example("A reduction into a register accumulator (sum over each row of a 16x1000 input)",
               reduce_kernel(16, 1000, 1, Op::ADD, dtypes::float32));
  d += example("Multi-output: sum and sum of squares of each row in one pass",
               sum_and_squares_kernel(16, 1000));
  d += example("An in-place update whose second loop reads the buffer only through AFTER",
               inplace_update_kernel(100));
  d += example("Gated loads at the edges (a 3-point stencil reading 0 outside the input)",
               stencil_kernel(100));
  return d;
}

}  // namespace

std::string ops_doc() {
  tiles::tile_ops();  // the tile layer's ops are listed after the core ones
  std::string d =
      "# UOps reference\n\n"
      "Generated from the op registry by `kitten uops --doc` (`make docs` rewrites this file; a\n"
      "test fails when it is stale). Do not edit by hand: change the op's spec in dsl/ops.cpp "
      "(tile ops: tiles/tile.cpp).\n\n"
      "A UOp is (op, dtype, sources, arg), immutable and hash-consed. `UOp::make` checks every\n"
      "new node against the spec below; `verify(root)` also applies the graph rules.\n\n"
      "## Dtypes\n\n"
      "- Scalars: `bool`, `int8` `int16` `int32` `int64`, `uint8` `uint16` `uint32` `uint64`,\n"
      "  `float16`, `bfloat16`, `float32`, `float64`, `float8_e4m3`, `float8_e5m2`.\n"
      "- Vectors: `<scalar>x<lanes>`, 2 to 256 lanes, e.g. `bfloat16x8`.\n"
      "- Pointers: `ptr<element,space>` or `ptr<element,space,size>`; the element is a scalar, a\n"
      "  vector or an extension dtype; the space is `global`, `local` (a block's shared memory)\n"
      "  or `reg` (registers).\n"
      "- `void` (effects: stores, ENDs ...) and `token` (an async copy in flight).\n"
      "- Extension dtypes, registered by later layers under their own names (tile dtypes).\n\n"
      "Narrow float formats. Conversions (CAST, rounded constants) round to nearest, ties to\n"
      "even; NaN stays NaN. On overflow float8 saturates to the largest finite value, as CUDA's\n"
      "fp8 types do, and float16 and bfloat16 go to Inf, as IEEE does:\n\n"
      "| format | exponent bits | mantissa bits | bias | max finite | Inf and NaN | overflow |\n"
      "|---|---|---|---|---|---|---|\n";
  for (const FloatFormat* f : {&kFloat16, &kBFloat16, &kFloat8E4M3, &kFloat8E5M2})
    d += format_row(*f);
  d += "\n## Args\n\n"
       "none; int; const (the bits of a double for float dtypes, else of an int64); name (a\n"
       "string); axis (`r<id> <kind>`, kind one of global, local, loop, reduce, upcast, unroll);\n"
       "special (blockIdx.x/y/z, threadIdx.x/y/z); var (`name min..max`); ints (a list);\n"
       "shuffle mode (idx, xor, up, down); atomic op (add, max, min); extension (an arg kind\n"
       "a later layer registers, named by the op's spec).\n\n"
       "## Ops\n";
  for (int i = 0; i < num_ops(); ++i) {
    const OpSpec& s = *find_op_spec(Op(i));
    d += "\n### " + s.name + "\n\n" + s.meaning + "\n\n";
    d += "- sources: " + sources_text(s) + "\n";
    d += "- dtype: " + s.dtype.doc + "\n";
    d += "- arg: " + std::string(arg_kind_name(s.arg)) +
         (s.arg == ArgKind::Ext ? " (" + s.ext_arg + ")" : "") + "\n";
    if (!flag_names(s).empty()) d += "- kind: " + flag_names(s) + "\n";
    for (const NodeRule& r : s.rules) d += "- rule: " + r.doc + "\n";
    if (s.commutative) d += "- commutative\n";
  }
  d += "\n## MMA fragment layouts\n\n| name | m x n x k | threads | a | b | c | meaning "
       "|\n|---|---|---|---|---|---|---|\n";
  for (const MmaLayout* l : mma_layouts())
    d += "| " + l->name + " | " + std::to_string(l->m) + " x " + std::to_string(l->n) + " x " +
         std::to_string(l->k) + " | " + std::to_string(l->group_threads) + " | " +
         operand_text(l->a) + " | " + operand_text(l->b) + " | " + operand_text(l->c) + " | " +
         l->meaning + " |\n";
  d += "\n## Graph rules (checked by verify)\n\n";
  for (const GraphRule& r : graph_rules())
    d += "- " + std::string(r.name) + ": " + std::string(r.doc) + "\n";
  d += kernel_semantics();
  return d;
}

}  // namespace kitten
