#include "frontend/state_dict.h"

#include <vector>

namespace kitten {

void save_state_dict(const std::string& path, const StateDict& tensors,
                     const SafeTensorsMetadata& metadata) {
  std::vector<std::vector<std::byte>> data;
  std::vector<SafeTensor> entries;
  data.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) throw TensorError("save_state_dict: tensor " + name + " is undefined");
    data.push_back(t.bytes());
    entries.push_back({name, t.dtype(), t.live_shape(), data.back()});
  }
  save_safetensors(path, entries, metadata);
}

StateDict load_state_dict(const std::string& path, const std::string& device) {
  SafeTensorsFile file = SafeTensorsFile::open(path);
  StateDict out;
  for (const SafeTensor& t : file.tensors())
    out[t.name] = Tensor::from_bytes(t.data, t.shape, t.dtype, device);
  return out;
}

}  // namespace kitten
