// The GPU-semantics emulator: runs a linear program as a GPU would, block by block, each
// block's threads in warps of 32 that step in lockstep under per-lane masks, with shared
// memory per block, real barriers, warp shuffles, MMA with the real fragment layouts,
// IF blocks that mask lanes, atomics, and async copies that land at their WAIT. It checks
// what a GPU would hide: out-of-bounds and misaligned accesses, reads of shared or register
// memory never written, shared memory races between barriers (atomics race only with plain
// accesses), barriers reached by part of a block, reads of an async copy's destination
// before its WAIT, and the limits of its target profile. Every error names the kernel, the buffer,
// the index, the thread and the block. Deterministic: blocks run in order, warps in order between
// barriers.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "backends/hcq.h"
#include "dsl/target.h"

namespace kitten {

struct EmuKernel;

// Prepares a linear program for the emulator with a target profile (limits and features,
// the H100's by default); throws BackendError for what it cannot run or what the profile
// does not allow (too much shared memory or too many threads per block, a missing feature).
std::shared_ptr<const EmuKernel> emu_compile(const LinearProgram& p,
                                             const Target& target = h100_target());

// The grid and block a kernel needs: the extents of its SPECIALs (1 where it has none).
void emu_launch_dims(const EmuKernel& k, LaunchDims& grid, LaunchDims& block);

// Shared-memory accesses go through 32 banks of 4 bytes, as on NVIDIA GPUs: an access of
// 4 bytes or less is served for the whole warp at once, 8 bytes per half-warp and 16 bytes
// per quarter-warp; in each of those phases, lanes that touch distinct 4-byte words of one
// bank are served one after another (one wavefront each), lanes that touch the same word
// are served together (a broadcast).
struct EmuStats {
  uint64_t warp_instructions = 0;  // instructions issued, counting once per warp
  uint64_t shared_accesses = 0;    // warp-level shared loads, stores, atomics, async copies
  uint64_t shared_wavefronts = 0;  // the bank passes those took
  uint64_t bank_conflicts = 0;     // wavefronts beyond one per phase: the serialisation
};

// Runs the kernel over `grid` blocks of `block` threads. Throws BackendError on the first
// fault, naming kernel, buffer, index, thread and block.
void emu_run(const EmuKernel& k, LaunchDims grid, LaunchDims block, std::span<const KernelArg> args,
             EmuStats* stats = nullptr);

}  // namespace kitten
