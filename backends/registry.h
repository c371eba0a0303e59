// The devices kitten knows, by name, and why one is unavailable on this machine.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/hcq.h"

namespace kitten {

std::vector<std::string> device_names();
// Throws BackendError naming the device and why it cannot be opened here.
std::unique_ptr<Device> open_device(const std::string& name);

}  // namespace kitten
