// The build without LLVM/Clang development files (e.g. the GPU machine): no in-process
// compiler; the cpu backend compiles with the system C compiler instead.
#include "backends/cpu/clang_jit.h"

namespace kitten {

bool cpu_has_jit() { return false; }

std::unique_ptr<ClangJit> make_clang_jit(CompileCache) {
  throw BackendError("cpu: this build has no LLVM/Clang, so no in-process compiler");
}

}  // namespace kitten
