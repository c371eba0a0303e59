// Small kernels written directly as UOp graphs: the worked examples of the kernel
// semantics (ranges, END, AFTER, accumulators) that the command line shows and the tests
// and later backends run.
#pragma once

#include <string>
#include <vector>

#include "dsl/uop.h"

namespace kitten {

std::vector<std::string> builtin_kernel_names();
// Throws std::invalid_argument naming the known kernels when `name` is not one of them.
UOp builtin_kernel(const std::string& name);

}  // namespace kitten
