// A model's named tensors saved to and loaded from a safetensors file.
#pragma once

#include <map>
#include <string>

#include "frontend/safetensors.h"
#include "frontend/tensor.h"

namespace kitten {

using StateDict = std::map<std::string, Tensor>;

// Realizes every tensor and writes them (atomically: a temporary file renamed into place).
void save_state_dict(const std::string& path, const StateDict& tensors,
                     const SafeTensorsMetadata& metadata = {});
// Every tensor of the file on `device` (its data copied from the mapped file).
StateDict load_state_dict(const std::string& path, const std::string& device = "cpu");

}  // namespace kitten
