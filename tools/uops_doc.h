// docs/uops.md, generated from the op registry (`kitten uops --doc`, `make docs`): every
// op's spec, the dtypes, the MMA layouts, the graph rules and worked examples of kernels.
#pragma once

#include <string>

namespace kitten {

std::string ops_doc();

}  // namespace kitten
