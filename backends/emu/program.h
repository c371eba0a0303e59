// The emulator's own form of a kernel: the linear program translated into instructions
// over register slots (translate.cpp), which the runner executes (run.cpp). Internal to
// backends/emu.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backends/hcq.h"
#include "dsl/target.h"

namespace kitten {

inline constexpr int kEmuWarp = 32;
inline constexpr int kEmuMmaTile = 256;  // elements of one MMA operand's matrix, at most

enum class EmuBufKind { Global, Shared, Reg };

struct EmuBuffer {
  EmuBufKind kind;
  int64_t slot;
  DType elem;    // the buffer's element dtype
  int64_t size;  // elements (shared, reg)
  std::string name;
  int64_t base = 0;                 // shared: its address, laid out as the CUDA renderer does
  Swizzle swizzle = Swizzle::None;  // shared: the layout its allocation declares
};

enum class EmuKind {
  Nop,
  Const,
  IntParam,
  Var,
  Special,
  Range,
  End,
  If,
  EndIf,
  Index,
  Load,
  Store,
  Atomic,
  Alu,
  Cast,
  Bitcast,
  Vectorize,
  Extract,
  Shuffle,
  Mma,
  Ldmatrix,
  Stmatrix,
  AsyncCopy,
  AsyncCommit,
  Wait,
  WaitGroup,
  Barrier,
  MbarrierInit,
  MbarrierArrive,
  MbarrierWait,
  Fence,
  NamedBarrier,
  Setmaxnreg,
  MatrixDesc,
  Wgmma,
  WgmmaCommit,
  WgmmaWait,
  TmaLoad,
  TmaStore,
  BulkReduceAdd,
  BulkCommit,
  BulkWait,
};

// FENCE's kinds (EmuInstr::imm_i).
enum class EmuFence { MbarrierInit, ProxyAsync, Wgmma };

// Where each lane's fragment elements of one MMA operand sit: row * cols + col, for
// element i of lane l at [l * count + i].
struct EmuFragment {
  int rows = 0, cols = 0, count = 0;
  std::vector<int> at;
};

struct EmuInstr {
  EmuKind kind = EmuKind::Nop;
  Op op = Op::SINK;
  int line = 0;  // the op's index in the linear program (%N in print_program)
  DType dtype;   // of the result (for memory ops: of the value accessed)
  DType in;      // of the first value source (ALU, CAST, BITCAST)
  int out = -1;
  std::vector<int> src;  // source slots
  int64_t imm_i = 0;
  double imm_f = 0;
  int buf = -1;                                   // memory ops: the buffer
  int idx = -1, gate = -1, alt = -1, value = -1;  // memory ops: slots
  int src_buf = -1, src_idx = -1;                 // async copy: the global side
  int end_pc = -1, level = 0;  // RANGE: its END and its place there; IF: its ENDIF
  std::vector<int> closes;     // END: RANGE pcs, innermost first
  SpecialArg special{};
  ShuffleMode shuffle = ShuffleMode::Idx;
  AtomicOp atomic = AtomicOp::Add;
  EmuFragment mma_a, mma_b, mma_c;  // MMA: the layout's fragments
  int mma_k = 0;
  bool mma_a_shared = false;                // WGMMA: A through a descriptor (else registers)
  bool mma_a_mn = false, mma_b_mn = false;  // WGMMA: the descriptors' majors
  std::vector<int64_t> lanes;  // EXTRACT; LDMATRIX: count and trans; NAMED_BARRIER: id, threads
};

struct EmuKernel {
  std::string name;
  std::vector<EmuInstr> code;
  std::vector<EmuBuffer> buffers;
  int slots = 0;  // register rows of 32 lanes
  int num_params = 0;
  std::vector<std::string> vars;
  // The parameters' kinds as a launch checks them (check_arg): name, num_params, buffer,
  // unused and tensor-map slots.
  KernelInfo info;
  LaunchDims grid, block;
  std::array<UOp, 3> grid_extent;  // extents read from variables (null where constant)
  Target target;
  bool explicit_groups = false;  // ASYNC_COMMIT groups the copies; else each is its own group
  bool setmaxnreg = false;       // SETMAXNREG appears: warpgroups must run the same ones
  bool warpgroups = false;       // WGMMA appears: the block is whole warpgroups
};

}  // namespace kitten
