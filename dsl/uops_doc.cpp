// docs/uops.md, generated from the op registry, the dtypes and the graph rules.
#include <cstdio>

#include "dsl/ops.h"
#include "dsl/verify.h"

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

std::string format_row(const FloatFormat& f) {
  char buf[200];
  std::snprintf(buf, sizeof buf, "| %s | %d | %d | %d | %g | %s | %s |\n",
                std::string(f.name).c_str(), f.exp_bits, f.man_bits, f.bias(), f.max_finite(),
                f.ieee ? "IEEE: all-ones exponent is Inf (mantissa 0) or NaN"
                       : "no Inf; only S.1111.111 is NaN",
                f.cast_saturation == Saturation::Finite ? "saturates to max finite" : "to Inf");
  return buf;
}

}  // namespace

std::string ops_doc() {
  std::string d =
      "# UOps reference\n\n"
      "Generated from the op registry by `kitten uops --doc` (`make docs` rewrites this file; a\n"
      "test fails when it is stale). Do not edit by hand: change the op's spec in dsl/ops.cpp.\n\n"
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
       "special (blockIdx.x/y/z, threadIdx.x/y/z); var (`name min..max`); ints (a list).\n\n"
       "## Ops\n";
  for (int i = 0; i < num_ops(); ++i) {
    const OpSpec& s = *find_op_spec(Op(i));
    d += "\n### " + s.name + "\n\n" + s.meaning + "\n\n";
    d += "- sources: " + sources_text(s) + "\n";
    d += "- dtype: " + s.dtype.doc + "\n";
    d += "- arg: " + std::string(arg_kind_name(s.arg)) + "\n";
    for (const NodeRule& r : s.rules) d += "- rule: " + r.doc + "\n";
    if (s.commutative) d += "- commutative\n";
  }
  d += "\n## MMA fragment layouts\n\n| name | m x n x k | a | b | c | meaning "
       "|\n|---|---|---|---|---|---|\n";
  for (const MmaLayout* l : mma_layouts())
    d += "| " + l->name + " | " + std::to_string(l->m) + " x " + std::to_string(l->n) + " x " +
         std::to_string(l->k) + " | " + std::string(l->a.name()) + " | " +
         std::string(l->b.name()) + " | " + std::string(l->c.name()) + " | " + l->meaning + " |\n";
  d += "\n## Graph rules (checked by verify)\n\n";
  for (const GraphRule& r : graph_rules())
    d += "- " + std::string(r.name) + ": " + std::string(r.doc) + "\n";
  return d;
}

}  // namespace kitten
