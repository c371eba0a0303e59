// The kernels `kitten search` and `kitten tune` know by name, as search spaces: generated
// kernels (matmul, sum, softmax, add) by their actions, the DSL's GEMM and attention
// forward by their knobs. Each space carries the KernelId the tuning database keys it by.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "autotune/measure.h"
#include "autotune/search.h"
#include "kernels/flash_attention_fwd.h"
#include "kernels/gemm.h"

namespace kitten {

// The names `named_space` takes, for messages.
inline constexpr const char* kSpaceNames =
    "matmul, sum, softmax, layernorm, add, concat, gemm, attention, attention-causal";

// The space for `kernel` at `shape` (an empty shape takes the kernel's small default), of
// `dtype` (where not given: float32 for generated kernels, bfloat16 for the DSL's). Throws
// std::invalid_argument saying what the kernel takes.
autotune::SearchSpace named_space(const std::string& kernel, std::vector<int64_t> shape,
                                  std::optional<DType> dtype, const Target& target);

// What the tuning database keys the DSL kernels by: their problem (and, for attention, the
// call's sizes).
autotune::KernelId gemm_id(const GemmProblem& p);
autotune::KernelId attention_id(const AttentionProblem& p, const AttentionShape& s);

// A kernel named_space knows: its name, shape (empty: its default) and dtype (none: its
// own), as `kitten search`, a tune list and a measure worker name it.
struct KernelSpec {
  std::string kernel;
  std::vector<int64_t> shape;
  std::optional<DType> dtype;
  autotune::SearchSpace space(const Target& target) const {
    return named_space(kernel, shape, dtype, target);
  }
};
// Reads the kernel's name, --shape S or --dtype T (a float dtype) at args[i] (advancing i
// past a value): nullopt where it is none of them, else the exit status (-1: go on).
std::optional<int> kernel_spec_option(const std::string& cmd, const std::vector<std::string>& args,
                                      size_t& i, KernelSpec& spec);

// The measure worker's command line for `spec`'s space on `device`
// (MeasureOptions::measure_worker): this program's `measure-worker`.
std::vector<std::string> measure_worker_argv(const KernelSpec& spec, const std::string& device,
                                             int reps);

// A search's cost for the reader: "0.1855 ms", "1234 (emulator cost)", "not measured".
std::string cost_text(double cost, bool timed);

// Reads an option `kitten search` and `kitten tune` share at args[i] (advancing i past its
// value): --beam --rounds --measured --jobs --reps --budget --no-validate --in-process.
// nullopt where it is none of them, else the exit status (-1: go on).
std::optional<int> search_option(const std::string& cmd, const std::vector<std::string>& args,
                                 size_t& i, autotune::SearchOptions& opts,
                                 autotune::MeasureOptions& mopts, bool& workers);

}  // namespace kitten
