// The op registry: every op is registered once, with its sources, its dtype rule, its arg
// and one sentence of meaning. The verifier and docs/uops.md are both generated from
// these records, so the spec, the checks and the documentation cannot drift apart. The
// registry is open: later layers (tiles/) register their own ops into it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dsl/arg.h"
#include "dsl/dtype.h"

namespace kitten {

class UOp;

// The core ops. Ops registered later get ids after these; an Op is only a number, its
// identity for hashing and printing is its registered name.
enum class Op : uint16_t {
  // definitions
  CONST,
  PARAM,
  DEFINE_VAR,
  DEFINE_LOCAL,
  DEFINE_REG,
  SPECIAL,
  // structure and ordering
  RANGE,
  END,
  AFTER,
  GROUP,
  IF,
  ENDIF,
  BARRIER,
  SINK,
  // memory
  INDEX,
  LOAD,
  STORE,
  ASYNC_COPY,
  WAIT,
  // warp-level
  SHUFFLE,
  MMA,
  // types and vectors
  CAST,
  BITCAST,
  VECTORIZE,
  EXTRACT,
  // ALU
  NEG,
  RECIP,
  SQRT,
  EXP2,
  LOG2,
  SIN,
  TRUNC,
  ADD,
  SUB,
  MUL,
  FDIV,
  IDIV,
  MOD,
  MAX,
  MIN,
  CMPLT,
  CMPEQ,
  CMPNE,
  AND,
  OR,
  XOR,
  SHL,
  SHR,
  WHERE,
  MULACC,
};
inline constexpr int kNumCoreOps = int(Op::MULACC) + 1;

// A constraint on one source. `ok` sees the node being checked and the source.
struct SourceRule {
  std::string name;  // e.g. "buffer"
  std::string doc;   // e.g. "a pointer"
  std::function<bool(const UOp& node, const UOp& src)> ok;
};

// A rule on the whole node: `check` returns "" when it holds, else what is wrong.
struct NodeRule {
  std::string doc;
  std::function<std::string(const UOp& node)> check;
};

// The dtype rule. Where `infer` is set, the dtype must equal what it returns for the
// sources and arg (and builders use it); `check`, where set, is then also applied.
struct DTypeRule {
  std::string doc;
  std::function<std::optional<DType>(std::span<const UOp> src, const Arg& arg)> infer;
  std::function<bool(DType dtype)> check;
};

struct OpSpec {
  std::string name;
  std::string meaning;              // one sentence
  std::vector<SourceRule> sources;  // the fixed sources, in order
  std::optional<SourceRule> rest;   // further sources: between rest_min and rest_max of them
  int rest_min = 0;
  int rest_max = 0;  // -1: unbounded
  DTypeRule dtype;
  ArgKind arg = ArgKind::None;
  std::vector<NodeRule> rules;  // everything else the spec demands
  bool commutative = false;     // the two sources may be swapped
};

// Registers an op and returns its id; throws std::invalid_argument when the name is
// taken or the spec is incomplete.
Op register_op(OpSpec spec);
const OpSpec* find_op_spec(Op op);  // nullptr for an unregistered id
std::optional<Op> op_by_name(std::string_view name);
std::string op_name(Op op);    // "OP#<id>" for an unregistered id
uint64_t op_name_hash(Op op);  // stable: fnv1a of the name
int num_ops();                 // ids 0 .. num_ops()-1 are registered

// Where element `i` of a lane's fragment sits in its matrix: {row, col}.
using FragmentMap = std::pair<int, int> (*)(int lane, int i);

// A warp-level MMA's fragment layout: the per-thread register fragments of A (m x k,
// row-major), B (k x n) and C/D (m x n) an MMA with this name takes, and which matrix
// element each lane holds in each (docs/mma.md). Backends must honour the maps.
struct MmaLayout {
  std::string name;
  std::string meaning;
  int m, n, k;
  DType a, b, c;  // per-thread fragments
  FragmentMap a_at, b_at, c_at;
};
void register_mma_layout(MmaLayout layout);
const MmaLayout* find_mma_layout(std::string_view name);
std::vector<const MmaLayout*> mma_layouts();

// docs/uops.md, generated from the registry.
std::string ops_doc();

}  // namespace kitten
