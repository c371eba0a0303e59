// The cpu backend: kernels rendered as C, compiled in-process by Clang into an LLVM module
// and JIT-linked with LLVM ORC (where the build has LLVM), or else by the system C
// compiler as a subprocess and dlopen'ed; the outermost global range runs on a thread
// pool. Queues run their commands in order on a worker thread.
#pragma once

#include <memory>

#include "backends/hcq.h"

namespace kitten {

enum class CpuCompileMode { Jit, Subprocess };

// Whether this build can compile in-process (it was built with LLVM and Clang).
bool cpu_has_jit();

// Mode defaults to Jit where available; KITTEN_CPU_COMPILER=subprocess forces the
// subprocess path (the C compiler is $KITTEN_CC, else cc: one program, run without a shell).
std::unique_ptr<Device> make_cpu_device();
std::unique_ptr<Device> make_cpu_device(CpuCompileMode mode, CompileCache cache);

}  // namespace kitten
