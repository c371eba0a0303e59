// The cuda backend: CUDA C rendered from the linear program (backends/c_renderer.h),
// compiled by NVRTC to a cubin for the device's architecture (sm_90a on an H100) and
// cached on disk, run through the driver API. libcuda and libnvrtc are opened at run time
// (backends/cuda/cuda_api.h), so nothing CUDA is needed to build. Every stream is
// non-blocking: nothing uses the legacy NULL stream. Queue = a stream; Signal = a 64-bit
// value in host-mapped memory that streams write and wait on (cuStreamWriteValue64 /
// cuStreamWaitValue64); Graph = a CUDA graph of kernel nodes, rebound by updating nodes.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>

#include "backends/hcq.h"

namespace kitten {

// Why there is no cuda device here ("" when there is one).
std::string cuda_unavailable_reason();
// Throws BackendError with that reason when there is none. The default cache is
// CompileCache::from_environment().
std::unique_ptr<Device> make_cuda_device();
std::unique_ptr<Device> make_cuda_device(CompileCache cache);

// For benchmarks: the device time (CUDA events on the queue's stream) of the work that
// `enqueue` puts on queue `q`, and the time of n launches of `p` by a bare cuLaunchKernel
// loop on q's stream (no kitten layer in between), both in milliseconds.
double cuda_elapsed_ms(Queue& q, const std::function<void()>& enqueue);
double cuda_bare_launches_ms(Queue& q, Program& p, LaunchDims global, LaunchDims local,
                             std::span<const KernelArg> args, int n);
// The same n launches as one CUDA graph built with the bare driver API: the time of one
// replay (the graph is built and instantiated before the clock starts). With `rebound`,
// every node's arguments are first replaced by `rebound` with
// cuGraphExecKernelNodeSetParams, inside the timed part, as a rebinding replay does.
double cuda_bare_graph_ms(Queue& q, Program& p, LaunchDims global, LaunchDims local,
                          std::span<const KernelArg> args, int n,
                          std::span<const KernelArg> rebound = {});

// NVRTC for an architecture ("sm_90a"), usable without a GPU. Throws BackendError when
// NVRTC cannot be opened.
std::unique_ptr<Compiler> make_nvrtc_compiler(const std::string& arch, CompileCache cache);

}  // namespace kitten
