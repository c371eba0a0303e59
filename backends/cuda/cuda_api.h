// The CUDA driver API and NVRTC, opened at run time with dlopen: the project builds and
// its tests run on machines with no CUDA headers, libraries or GPU. Only the types and
// entry points kitten uses are declared here, with the driver's C ABI.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kitten::cu {

using Result = int;  // CUresult; 0 is success
using Device = int;
using Context = struct CUctx_st*;
using Module = struct CUmod_st*;
using Function = struct CUfunc_st*;
using Stream = struct CUstream_st*;
using Event = struct CUevent_st*;
using GraphT = struct CUgraph_st*;
using GraphExec = struct CUgraphExec_st*;
using GraphNode = struct CUgraphNode_st*;
using DevicePtr = unsigned long long;
using HostFn = void (*)(void*);

struct KernelNodeParams {  // CUDA_KERNEL_NODE_PARAMS_v2
  Function func;
  unsigned grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes;
  void** params;
  void** extra;
  void* kernel;  // CUkernel, unused: func is set
  Context ctx;   // unused: func is set
};

constexpr int kAttrWarpSize = 10, kAttrMultiprocessors = 16, kAttrCcMajor = 75, kAttrCcMinor = 76,
              kAttrSharedOptin = 97, kAttrMaxThreadsPerBlock = 1, kAttrSharedPerBlock = 8,
              kAttrRegistersPerBlock = 12;
constexpr unsigned kStreamNonBlocking = 1, kHostAllocDeviceMap = 2, kWaitValueGeq = 0;
constexpr int kFuncAttrMaxDynamicShared = 8;
constexpr int kFuncAttrLocalBytes = 3;  // per thread: spills and local arrays
constexpr int kFuncAttrNumRegs = 4;

struct Driver {
  bool loaded = false;
  std::string why;  // why not, when not
  Result (*Init)(unsigned);
  Result (*DeviceGetCount)(int*);
  Result (*DeviceGet)(Device*, int);
  Result (*DeviceGetName)(char*, int, Device);
  Result (*DriverGetVersion)(int*);
  Result (*DeviceGetAttribute)(int*, int, Device);
  Result (*DevicePrimaryCtxRetain)(Context*, Device);
  Result (*CtxSetCurrent)(Context);
  Result (*MemAlloc)(DevicePtr*, size_t);
  Result (*MemFree)(DevicePtr);
  Result (*MemcpyHtoDAsync)(DevicePtr, const void*, size_t, Stream);
  Result (*MemcpyDtoHAsync)(void*, DevicePtr, size_t, Stream);
  Result (*MemcpyDtoDAsync)(DevicePtr, DevicePtr, size_t, Stream);
  Result (*MemHostAlloc)(void**, size_t, unsigned);
  Result (*MemFreeHost)(void*);
  Result (*MemHostGetDevicePointer)(DevicePtr*, void*, unsigned);
  Result (*StreamCreate)(Stream*, unsigned);
  Result (*StreamDestroy)(Stream);
  Result (*StreamSynchronize)(Stream);
  Result (*StreamWriteValue64)(Stream, DevicePtr, uint64_t, unsigned);
  Result (*StreamWaitValue64)(Stream, DevicePtr, uint64_t, unsigned);
  Result (*LaunchHostFunc)(Stream, HostFn, void*);
  Result (*EventCreate)(Event*, unsigned);
  Result (*EventRecord)(Event, Stream);
  Result (*EventSynchronize)(Event);
  Result (*EventElapsedTime)(float*, Event, Event);
  Result (*EventDestroy)(Event);
  Result (*ModuleLoadData)(Module*, const void*);
  Result (*ModuleUnload)(Module);
  Result (*ModuleGetFunction)(Function*, Module, const char*);
  Result (*FuncSetAttribute)(Function, int, int);
  Result (*FuncGetAttribute)(int*, int, Function);
  Result (*LaunchKernel)(Function, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                         unsigned, Stream, void**, void**);
  Result (*GraphCreate)(GraphT*, unsigned);
  Result (*GraphAddKernelNode)(GraphNode*, GraphT, const GraphNode*, size_t,
                               const KernelNodeParams*);
  Result (*GraphInstantiate)(GraphExec*, GraphT, unsigned long long);
  Result (*GraphExecKernelNodeSetParams)(GraphExec, GraphNode, const KernelNodeParams*);
  Result (*GraphLaunch)(GraphExec, Stream);
  Result (*GraphExecDestroy)(GraphExec);
  Result (*GraphDestroy)(GraphT);
  // CUDA 12+: null where the driver lacks it (a launch with a tensor map then says so).
  Result (*TensorMapEncodeTiled)(void* map, int dtype, unsigned rank, void* address,
                                 const unsigned long long* dims, const unsigned long long* strides,
                                 const unsigned* box, const unsigned* element_strides,
                                 int interleave, int swizzle, int l2_promotion,
                                 int oob_fill) = nullptr;
  Result (*GetErrorName)(Result, const char**);
  Result (*GetErrorString)(Result, const char**);
};

struct Nvrtc {
  bool loaded = false;
  std::string why;
  std::string library;  // which libnvrtc was opened
  using Program = struct _nvrtcProgram*;
  int (*Version)(int*, int*);
  int (*CreateProgram)(Program*, const char*, const char*, int, const char* const*,
                       const char* const*);
  int (*CompileProgram)(Program, int, const char* const*);
  int (*GetProgramLogSize)(Program, size_t*);
  int (*GetProgramLog)(Program, char*);
  int (*GetCUBINSize)(Program, size_t*);
  int (*GetCUBIN)(Program, char*);
  int (*DestroyProgram)(Program*);
  const char* (*GetErrorString)(int);
};

// Opened once; `loaded` false with `why` when the library or an entry point is missing.
const Driver& driver();
const Nvrtc& nvrtc();

// "CUDA_ERROR_ILLEGAL_ADDRESS: an illegal memory access was encountered".
std::string error_text(Result r);

}  // namespace kitten::cu
