// What a device offers a kernel: its limits (threads, shared memory, registers) and its
// features (cooperating blocks, warp shuffles, mma.sync, cp.async, wgmma, TMA, atomics per
// dtype). Each device fills one; lowering and the emulator read it, renderers read nothing
// else, so no layer above backends needs a backend to know what a device can do.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsl/arg.h"
#include "dsl/dtype.h"

namespace kitten {

enum TargetFeature : uint32_t {
  kFeatureBlocks = 1u << 0,     // threads of a block cooperate: SPECIAL, shared memory, BARRIER
  kFeatureShuffle = 1u << 1,    // warp shuffles
  kFeatureMmaSync = 1u << 2,    // warp-level mma.sync (sm_80+)
  kFeatureAsyncCopy = 1u << 3,  // cp.async global -> shared (sm_80+)
  kFeatureLdmatrix = 1u << 4,   // ldmatrix (sm_75+)
  kFeatureWgmma = 1u << 5,      // warpgroup MMA (sm_90a)
  kFeatureTma = 1u << 6,        // tensor memory accelerator copies (sm_90)
  kFeatureStmatrix = 1u << 7,   // stmatrix (sm_90)
  kFeatureMbarrier = 1u << 8,   // mbarriers with transaction counts, try_wait, proxy fences (sm_90)
  kFeatureSetmaxnreg = 1u << 9,  // setmaxnreg: warpgroups hand registers to each other (sm_90a)
};

struct Target {
  std::string arch;         // "x86_64", "sm_90a"
  int multiprocessors = 1;  // SMs, or CPU cores
  int warp_size = 1;        // threads that step together
  int max_threads_per_block = 1;
  int64_t shared_per_block = 0;        // bytes a block gets without opting in
  int64_t shared_per_block_optin = 0;  // the most a block may opt into
  int registers_per_thread = 0;        // 32-bit registers (0: no such limit)
  int registers_per_block = 0;
  uint32_t features = 0;  // TargetFeature bits
  // The widest vector load or store, in bytes, per address space (0: none); buffers that
  // kernels get as parameters start at `param_align` bytes or more. Vectors of narrow
  // floats (16 and 8 bits) only where `narrow_vectors`.
  int global_vector_bytes = 0, shared_vector_bytes = 0;
  int param_align = 16;
  bool narrow_vectors = false;
  std::vector<std::pair<AtomicOp, DType>> atomics;  // the atomics it has, per dtype
  std::vector<std::string> mma;                     // the MMA layouts (dsl/mma.h, by name) it runs

  bool has(TargetFeature f) const { return (features & f) != 0; }
  bool has_atomic(AtomicOp op, DType d) const;
  bool has_mma(std::string_view layout) const;
  // The most lanes of `element` one vector access to `space` may move (1: no vectors).
  int max_vector_lanes(AddrSpace space, DType element) const;
  // "blocks, shuffle, mma.sync, ..." for `kitten devices`.
  std::string feature_names() const;
};

// An NVIDIA H100 (sm_90a) as the driver reports it: the emulator's default profile.
Target h100_target();
// A host CPU: one thread per block, no block features; atomics through the C builtins.
Target host_target(std::string arch, int cores);
// The atomics every CUDA GPU from sm_80 on and the host CPU have: add for float32,
// float64, float16x2, bfloat16x2 and 32/64-bit integers; max and min for those integers.
std::vector<std::pair<AtomicOp, DType>> common_atomics();
// The mma.sync layouts of sm_80 and later (m16n8k16 and m16n8k8, bf16 and f16 in).
std::vector<std::string> mma_sync_layouts();

}  // namespace kitten
