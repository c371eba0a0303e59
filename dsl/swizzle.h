// Shared-memory swizzles as expressions: the 32-, 64- and 128-byte XOR modes that tensor
// maps and wgmma descriptors name. A swizzled buffer is read as rows of the mode's width;
// within each group of 8 such 128-byte lines, the 16-byte chunks of a row are permuted by
// XOR with bits of the line index, so that the 8 rows of a column hit 8 different banks.
// The tile DSL and the Hopper primitives both build their addresses from these.
#pragma once

#include <cstdint>
#include <string_view>

#include "dsl/uop.h"

namespace kitten {

std::string_view swizzle_name(Swizzle s);  // "none", "32B", "64B", "128B"
int swizzle_width(Swizzle s);              // bytes per row: 0 (none), 32, 64, 128
// What a buffer swizzled this way must be aligned to: the whole pattern, 8 rows of 128
// bytes' worth of lines (256, 512 or 1024 bytes; 16 without a swizzle).
int64_t swizzle_alignment(Swizzle s);

// The byte offset, from the start of the buffer, of byte `byte` of row `row` (both
// non-negative integer UOps of one dtype, byte < the width): row*width + (byte ^ (f(row) << 4)),
// where f takes the line bits that the mode XORs into the chunk index. Swizzle::None: row-major
// with no permutation needs a width, so it is refused (std::invalid_argument).
UOp swizzled_offset(Swizzle s, const UOp& row, const UOp& byte);

// The same permutation as the hardware applies it to an absolute shared-memory address
// (wgmma descriptors, TMA): bits 4.. of the address XORed with its line bits 7.. (None:
// the address unchanged).
int64_t swizzle_address(Swizzle s, int64_t address);

// A wgmma matrix descriptor's fields other than the start address: the leading and stride
// byte offsets and the swizzle mode in its 2-bit code (0 none, 1 128B, 2 64B, 3 32B); and
// the mode a descriptor names.
uint64_t descriptor_fields(Swizzle s, int64_t lbo, int64_t sbo);
Swizzle descriptor_swizzle(uint64_t descriptor);

}  // namespace kitten
