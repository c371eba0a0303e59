#include "backends/registry.h"

#include "backends/cpu/cpu_device.h"
#include "backends/cuda/cuda_device.h"
#include "backends/emu/emu_device.h"

namespace kitten {

std::vector<std::string> device_names() { return {"cpu", "emu", "cuda"}; }

std::unique_ptr<Device> open_device(const std::string& name) {
  if (name == "cpu") return make_cpu_device();
  if (name == "emu") return make_emu_device();
  if (name == "cuda") return make_cuda_device();
  std::string known;
  for (const std::string& n : device_names()) known += (known.empty() ? "" : ", ") + n;
  throw BackendError("no device named '" + name + "' (known: " + known + ")");
}

}  // namespace kitten
