// The lowering pipeline: an ordered, open list of named passes between a kernel graph and
// the linearizer. Each pass rewrites the whole graph (a RuleSet run by graph_rewrite, or a
// plain function where rules cannot say it) for a Target, and its output is verified, so a
// pass that breaks the graph is named at once. Later layers register their passes before
// or after a named one, as they register ops. KITTEN_DUMP=<pass>[,<pass>...]|all prints
// the graph after the named passes (to stderr).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dsl/opt.h"
#include "dsl/schedule.h"
#include "dsl/target.h"
#include "dsl/uop.h"

namespace kitten {

// What every pass sees besides the graph: the device's facts and the kernel's schedule.
struct LowerContext {
  const Target& target;
  const Schedule& schedule;
};

struct Pass {
  std::string name;
  std::string meaning;  // one sentence, for `kitten lower --passes`
  std::function<UOp(const UOp& sink, const LowerContext& ctx)> run;
};

enum class PassPosition { Before, After };

// Adds a pass before or after the pass named `anchor` ("" with After: at the end). Throws
// std::invalid_argument when the name is taken or the anchor unknown.
void register_pass(Pass pass, PassPosition where = PassPosition::After,
                   std::string_view anchor = "");
std::vector<const Pass*> passes();  // in order

struct LowerOptions {
  std::vector<std::string> print_after;  // pass names, or "all"; default from KITTEN_DUMP
  std::function<void(const std::string& pass, const UOp& graph)> dump;  // default: stderr
  // A folder (created if missing) that gets one JSON file per pass and kernel: the graph
  // after the pass (nodes by stable id: op, dtype, arg, sources) and the rules that fired
  // in it, in order; <kernel>.<NN>.<pass>.json, 00 the input. Default: KITTEN_DUMP_JSON.
  std::string dump_json;
};
LowerOptions default_lower_options();

// Runs every pass in order on a SINK with a schedule (checked against the kernel's axes
// first: ScheduleError) for a target; throws IrError naming the pass whose output fails
// verification.
UOp lower(const UOp& sink, const Target& target, const Schedule& schedule = {},
          const LowerOptions& opts = default_lower_options());

// The kernels a schedule lowers one kernel into, to be launched in this order with the
// caller's arguments followed by the temporary buffers: one kernel, or the parts of a CUT
// or SPLIT (dsl/opt.h), each lowered by every pass with its part's schedule.
// `maps`: the caller's buffers that some kernel takes as a tensor map (MapParam).
struct LoweredKernels {
  std::vector<UOp> kernels;
  std::vector<TempBuffer> temps;
  std::vector<MapParam> maps;
};
LoweredKernels lower_kernels(const UOp& sink, const Target& target, const Schedule& schedule = {},
                             const LowerOptions& opts = default_lower_options());

// A lowering of whole kernels that a library above dsl/ registers (the tile library's
// TC=1: kernels/tensor_cores.h): the kernels `sink` lowers into under `schedule`, or
// nullopt to leave it to the pipeline. lower_kernels asks every route first, in order of
// registration; a route refuses a schedule it takes but cannot do with a ScheduleError.
using KernelRoute = std::function<std::optional<LoweredKernels>(
    const UOp& sink, const Target& target, const Schedule& schedule)>;
// Throws std::invalid_argument when the name is taken.
void register_kernel_route(std::string name, KernelRoute route);

}  // namespace kitten
