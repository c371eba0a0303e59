// The cuda backend: CUDA C rendered from the linear program (backends/c_renderer.h),
// compiled by NVRTC to a cubin for the device's architecture (sm_90a on an H100) and
// cached on disk, run through the driver API. libcuda and libnvrtc are opened at run time
// (backends/cuda/cuda_api.h), so nothing CUDA is needed to build. Every stream is
// non-blocking: nothing uses the legacy NULL stream. Queue = a stream; Signal = a 64-bit
// value in host-mapped memory that streams write and wait on (cuStreamWriteValue64 /
// cuStreamWaitValue64); Graph = a CUDA graph of kernel nodes, rebound by updating nodes.
#pragma once

#include <memory>
#include <string>

#include "backends/hcq.h"

namespace kitten {

// Why there is no cuda device here ("" when there is one).
std::string cuda_unavailable_reason();
// Throws BackendError with that reason when there is none. The default cache is
// CompileCache::from_environment().
std::unique_ptr<Device> make_cuda_device();
std::unique_ptr<Device> make_cuda_device(CompileCache cache);

// NVRTC for an architecture ("sm_90a"), usable without a GPU. Throws BackendError when
// NVRTC cannot be opened.
std::unique_ptr<Compiler> make_nvrtc_compiler(const std::string& arch, CompileCache cache);

}  // namespace kitten
