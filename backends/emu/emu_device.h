// The emu device: the GPU-semantics emulator (backends/emu/emulator.h) behind the HCQ
// interface. Its "source" is the printed linear program and its "binary" that text; the
// program it runs travels in KernelInfo. Host memory, host queues.
#pragma once

#include <memory>

#include "backends/hcq.h"

namespace kitten {

// The emulator with a target profile (its limits and features): the H100's by default.
std::unique_ptr<Device> make_emu_device(Target target = h100_target());

}  // namespace kitten
