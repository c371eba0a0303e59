#include "backends/cuda/cuda_api.h"

#include <dlfcn.h>

#include <initializer_list>

namespace kitten::cu {

namespace {

// Binds `fn` to the first of `names` the library has.
template <class F>
bool bind(void* lib, F& fn, std::initializer_list<const char*> names, std::string& why) {
  for (const char* n : names)
    if (void* p = dlsym(lib, n)) {
      fn = reinterpret_cast<F>(p);
      return true;
    }
  why = std::string("it has no ") + *names.begin();
  return false;
}

Driver load_driver() {
  Driver d;
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    d.why = "no CUDA driver (libcuda.so.1 cannot be opened: " + std::string(dlerror()) + ")";
    return d;
  }
  std::string why;
  bool ok =
      bind(lib, d.Init, {"cuInit"}, why) &&
      bind(lib, d.DeviceGetCount, {"cuDeviceGetCount"}, why) &&
      bind(lib, d.DeviceGet, {"cuDeviceGet"}, why) &&
      bind(lib, d.DeviceGetName, {"cuDeviceGetName"}, why) &&
      bind(lib, d.DriverGetVersion, {"cuDriverGetVersion"}, why) &&
      bind(lib, d.DeviceGetAttribute, {"cuDeviceGetAttribute"}, why) &&
      bind(lib, d.DevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"}, why) &&
      bind(lib, d.CtxSetCurrent, {"cuCtxSetCurrent"}, why) &&
      bind(lib, d.MemAlloc, {"cuMemAlloc_v2"}, why) &&
      bind(lib, d.MemFree, {"cuMemFree_v2"}, why) &&
      bind(lib, d.MemcpyHtoDAsync, {"cuMemcpyHtoDAsync_v2"}, why) &&
      bind(lib, d.MemcpyDtoHAsync, {"cuMemcpyDtoHAsync_v2"}, why) &&
      bind(lib, d.MemcpyDtoDAsync, {"cuMemcpyDtoDAsync_v2"}, why) &&
      bind(lib, d.MemHostAlloc, {"cuMemHostAlloc"}, why) &&
      bind(lib, d.MemFreeHost, {"cuMemFreeHost"}, why) &&
      bind(lib, d.MemHostGetDevicePointer, {"cuMemHostGetDevicePointer_v2"}, why) &&
      bind(lib, d.StreamCreate, {"cuStreamCreate"}, why) &&
      bind(lib, d.StreamDestroy, {"cuStreamDestroy_v2"}, why) &&
      bind(lib, d.StreamSynchronize, {"cuStreamSynchronize"}, why) &&
      bind(lib, d.StreamWriteValue64, {"cuStreamWriteValue64_v2", "cuStreamWriteValue64"}, why) &&
      bind(lib, d.StreamWaitValue64, {"cuStreamWaitValue64_v2", "cuStreamWaitValue64"}, why) &&
      bind(lib, d.LaunchHostFunc, {"cuLaunchHostFunc"}, why) &&
      bind(lib, d.EventCreate, {"cuEventCreate"}, why) &&
      bind(lib, d.EventRecord, {"cuEventRecord"}, why) &&
      bind(lib, d.EventSynchronize, {"cuEventSynchronize"}, why) &&
      bind(lib, d.EventElapsedTime, {"cuEventElapsedTime_v2", "cuEventElapsedTime"}, why) &&
      bind(lib, d.EventDestroy, {"cuEventDestroy_v2"}, why) &&
      bind(lib, d.ModuleLoadData, {"cuModuleLoadData"}, why) &&
      bind(lib, d.ModuleUnload, {"cuModuleUnload"}, why) &&
      bind(lib, d.ModuleGetFunction, {"cuModuleGetFunction"}, why) &&
      bind(lib, d.FuncSetAttribute, {"cuFuncSetAttribute"}, why) &&
      bind(lib, d.FuncGetAttribute, {"cuFuncGetAttribute"}, why) &&
      bind(lib, d.LaunchKernel, {"cuLaunchKernel"}, why) &&
      bind(lib, d.GraphCreate, {"cuGraphCreate"}, why) &&
      bind(lib, d.GraphAddKernelNode, {"cuGraphAddKernelNode_v2"}, why) &&
      bind(lib, d.GraphInstantiate, {"cuGraphInstantiateWithFlags"}, why) &&
      bind(lib, d.GraphExecKernelNodeSetParams, {"cuGraphExecKernelNodeSetParams_v2"}, why) &&
      bind(lib, d.GraphLaunch, {"cuGraphLaunch"}, why) &&
      bind(lib, d.GraphExecDestroy, {"cuGraphExecDestroy"}, why) &&
      bind(lib, d.GraphDestroy, {"cuGraphDestroy"}, why) &&
      bind(lib, d.GetErrorName, {"cuGetErrorName"}, why) &&
      bind(lib, d.GetErrorString, {"cuGetErrorString"}, why);
  if (!ok) {
    d.why = "libcuda.so.1 is too old: " + why;
    return d;
  }
  std::string optional;
  bind(lib, d.TensorMapEncodeTiled, {"cuTensorMapEncodeTiled"}, optional);
  d.loaded = true;
  return d;
}

Nvrtc load_nvrtc() {
  Nvrtc n;
  void* lib = nullptr;
  for (const char* name : {"libnvrtc.so.13", "libnvrtc.so.12"}) {
    lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      n.library = name;
      break;
    }
  }
  if (!lib) {
    n.why = "no NVRTC (neither libnvrtc.so.13 nor libnvrtc.so.12 can be opened)";
    return n;
  }
  std::string why;
  bool ok = bind(lib, n.Version, {"nvrtcVersion"}, why) &&
            bind(lib, n.CreateProgram, {"nvrtcCreateProgram"}, why) &&
            bind(lib, n.CompileProgram, {"nvrtcCompileProgram"}, why) &&
            bind(lib, n.GetProgramLogSize, {"nvrtcGetProgramLogSize"}, why) &&
            bind(lib, n.GetProgramLog, {"nvrtcGetProgramLog"}, why) &&
            bind(lib, n.GetCUBINSize, {"nvrtcGetCUBINSize"}, why) &&
            bind(lib, n.GetCUBIN, {"nvrtcGetCUBIN"}, why) &&
            bind(lib, n.DestroyProgram, {"nvrtcDestroyProgram"}, why) &&
            bind(lib, n.GetErrorString, {"nvrtcGetErrorString"}, why);
  if (!ok) {
    n.why = n.library + " is unusable: " + why;
    return n;
  }
  n.loaded = true;
  return n;
}

}  // namespace

const Driver& driver() {
  static const Driver d = load_driver();
  return d;
}

const Nvrtc& nvrtc() {
  static const Nvrtc n = load_nvrtc();
  return n;
}

std::string error_text(Result r) {
  const char *name = nullptr, *text = nullptr;
  if (driver().loaded) {
    driver().GetErrorName(r, &name);
    driver().GetErrorString(r, &text);
  }
  return std::string(name ? name : "CUDA error " + std::to_string(r)) +
         (text ? std::string(": ") + text : "");
}

}  // namespace kitten::cu
