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

// The core ops, listed once: the enum, the names the registry checks its specs against,
// and the case lists below all come from these lists. Ops registered later get ids after
// these; an Op is only a number, its identity for hashing and printing is its name.
#define KITTEN_STRUCTURE_OPS(X)                                                             \
  /* definitions */                                                                         \
  X(CONST)                                                                                  \
  X(PARAM)                                                                                  \
  X(DEFINE_VAR)                                                                             \
  X(DEFINE_LOCAL)                                                                           \
  X(DEFINE_REG)                                                                             \
  X(SPECIAL) /* structure and ordering */                                                   \
  X(RANGE)                                                                                  \
  X(END)                                                                                    \
  X(AFTER)                                                                                  \
  X(GROUP)                                                                                  \
  X(IF)                                                                                     \
  X(ENDIF)                                                                                  \
  X(BARRIER)                                                                                \
  X(SINK) /* memory */                                                                      \
  X(INDEX)                                                                                  \
  X(LOAD)                                                                                   \
  X(STORE)                                                                                  \
  X(ATOMIC) X(ASYNC_COPY) X(ASYNC_COMMIT) X(WAIT) X(WAIT_GROUP) /* warp-level */            \
      X(SHUFFLE) X(MMA) X(LDMATRIX) X(STMATRIX)                 /* asynchronous barriers */ \
      X(MBARRIER_INIT) X(MBARRIER_ARRIVE) X(MBARRIER_WAIT) X(FENCE) X(NAMED_BARRIER)        \
          X(SETMAXNREG)                                     /* warpgroup MMA */             \
      X(MATRIX_DESC) X(WGMMA) X(WGMMA_COMMIT) X(WGMMA_WAIT) /* bulk copies */               \
      X(TENSOR_MAP) X(TMA_LOAD) X(TMA_STORE) X(BULK_REDUCE_ADD) X(BULK_COMMIT)              \
          X(BULK_WAIT) /* types and vectors */                                              \
      X(CAST) X(BITCAST) X(VECTORIZE) X(EXTRACT)
// The ALU ops: pure functions of their sources, lane by lane, whose meaning is the one
// evaluation table (dsl/eval.h).
#define KITTEN_ALU_OPS(X) \
  X(NEG)                  \
  X(RECIP)                \
  X(SQRT)                 \
  X(EXP2)                 \
  X(EXP2_FTZ)             \
  X(LOG2)                 \
  X(SIN)                  \
  X(TRUNC)                \
  X(ADD)                  \
  X(SUB)                  \
  X(MUL)                  \
  X(FDIV)                 \
  X(IDIV)                 \
  X(MOD)                  \
  X(MAX) X(MIN) X(CMPLT) X(CMPEQ) X(CMPNE) X(AND) X(OR) X(XOR) X(SHL) X(SHR) X(WHERE) X(MULACC)

enum class Op : uint16_t {
#define KITTEN_OP_ENUMERATOR(name) name,
  KITTEN_STRUCTURE_OPS(KITTEN_OP_ENUMERATOR) KITTEN_ALU_OPS(KITTEN_OP_ENUMERATOR)
#undef KITTEN_OP_ENUMERATOR
};
// `switch (op) { KITTEN_ALU_OPS(KITTEN_OP_CASE) ... }` lists every ALU op as a case, for
// the switches that treat them alike through the evaluation or printing tables.
#define KITTEN_OP_CASE(name) case Op::name:
inline constexpr int kNumCoreOps = int(Op::MULACC) + 1;
// The enumerator's spelling of a core op ("" past the core ops): the registry checks
// that each core spec carries its enumerator's name.
std::string_view core_op_name(Op op);

// What kind of op a spec describes; every query about ops reads these, never enum order.
enum OpFlag : uint32_t {
  kOpAlu = 1u << 0,          // a pure function of its sources (the evaluation table)
  kOpEffect = 1u << 1,       // performs an effect; its dtype is void
  kOpControl = 1u << 2,      // opens or closes a block of the program (RANGE, END, IF ...)
  kOpDefinition = 1u << 3,   // defines a value or buffer from its arg alone
  kOpMemory = 1u << 4,       // addresses, reads or writes memory
  kOpCooperative = 1u << 5,  // needs the threads of a block to run together
};

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
// The rule of an op whose result is always `d` (an effect's void, a copy's token).
DTypeRule fixed_dtype(DType d);

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
  uint32_t flags = 0;           // OpFlag bits
  int arity = 0;                // ALU ops: the number of sources
  std::string ext_arg;          // ArgKind::Ext: the extension kind the arg must be
};

// Registers an op and returns its id; throws std::invalid_argument when the name is
// taken or the spec is incomplete.
Op register_op(OpSpec spec);
const OpSpec* find_op_spec(Op op);  // nullptr for an unregistered id
std::optional<Op> op_by_name(std::string_view name);
std::string op_name(Op op);       // "OP#<id>" for an unregistered id
uint64_t op_name_hash(Op op);     // stable: fnv1a of the name
int num_ops();                    // ids 0 .. num_ops()-1 are registered
bool op_has(Op op, OpFlag flag);  // false for an unregistered id
inline bool is_alu(Op op) { return op_has(op, kOpAlu); }
// An effect that does something by itself (a store, an atomic, an IF block, a barrier),
// not one that only closes or bundles others (END, ENDIF, GROUP, SINK): run outside the
// loop a launch splits, it would run once per piece.
inline bool acts(Op op) {
  return op_has(op, kOpEffect) && op != Op::END && op != Op::ENDIF && op != Op::GROUP &&
         op != Op::SINK;
}

}  // namespace kitten
