// The cpu backend's pieces shared by its two compile paths: the in-process compiler (Clang
// compiles C into an LLVM module, optimised for the host and emitted as an object file,
// which LLVM ORC links into its own JITDylib per program, so that freeing a program frees
// its code) and the launch of a compiled kernel function on the thread pool.
#pragma once

#include <memory>
#include <string>

#include "backends/cpu/thread_pool.h"
#include "backends/hcq.h"

namespace kitten {

class ClangJit : public Compiler {
 public:
  using Compiler::Compiler;
  virtual std::unique_ptr<Program> load(const std::string& object, const KernelInfo& info,
                                        ThreadPool& pool) = 0;
};

bool cpu_has_jit();
// Throws BackendError where this build has no LLVM/Clang.
std::unique_ptr<ClangJit> make_clang_jit(CompileCache cache);

// Checks the arguments against the kernel and runs fn over [0, global.x), split over the pool.
void run_cpu_kernel(void (*fn)(void* const*, long long, long long), const KernelInfo& info,
                    ThreadPool& pool, LaunchDims global, LaunchDims local,
                    std::span<const KernelArg> args, size_t shared);

}  // namespace kitten
