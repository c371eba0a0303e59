// MMA fragment layouts as expressions. A layout names the thread group that executes one
// MMA (a warp of 32 now; a warpgroup of 128 for wgmma), its shape m x n x k, and for each
// operand (A m x k, B k x n, C/D m x n) where it lives and, for register fragments, which
// matrix element each thread holds: a pair of UOp expressions (row, col) of the thread's
// index within its group and the element's index in its fragment. Lowering passes
// substitute and simplify them; the emulator and the renderers derive fragment addresses
// and sizes from them; docs/mma.md prints them beside the PTX tables.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsl/swizzle.h"
#include "dsl/uop.h"

namespace kitten {

// Where an operand of an MMA lives: a register fragment per thread, or a tile in shared
// memory read through a matrix descriptor with a swizzle mode (wgmma's A and B).
enum class OperandHome : uint8_t { Registers, SharedDescriptor };

struct FragmentLayout {
  OperandHome home = OperandHome::Registers;
  Swizzle swizzle = Swizzle::None;  // SharedDescriptor: the mode of the tile it points into
  DType fragment;                   // Registers: one thread's fragment (e.g. bfloat16x8)
  int rows = 0, cols = 0;           // the operand's matrix
  UOp row, col;                     // Registers: of mma_thread_var() and mma_element_var()

  // Row and column of element `element` of thread `thread` (evaluated).
  std::pair<int, int> at(int thread, int element) const;
  // The expressions with the thread and element replaced by the given UOps, simplified.
  UOp row_of(const UOp& thread, const UOp& element) const;
  UOp col_of(const UOp& thread, const UOp& element) const;
};

struct MmaLayout {
  std::string name;
  std::string meaning;
  int m = 0, n = 0, k = 0;
  int group_threads = 32;  // the threads that execute one MMA together
  FragmentLayout a, b, c;
};

// The variables the fragment expressions are written in: int32, the thread's index
// within its group (0..1023) and the element's index within its fragment (0..255).
UOp mma_thread_var();
UOp mma_element_var();

// The registry of layouts; the mma.sync m16n8k16 and m16n8k8 layouts (bf16 and f16 in,
// f32 accumulate) are built in, and the warpgroup layouts wgmma_m64n<N>k16_<bf16|f16>_<rs|ss>
// (N a multiple of 8 up to 256; A in registers or shared memory, B in shared memory) are
// made when find_mma_layout first names them. register_mma_layout throws std::invalid_argument when
// the name is taken or a register fragment's expressions leave its matrix.
void register_mma_layout(MmaLayout layout);
const MmaLayout* find_mma_layout(std::string_view name);
std::vector<const MmaLayout*> mma_layouts();

}  // namespace kitten
