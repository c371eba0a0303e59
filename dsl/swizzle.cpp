#include "dsl/swizzle.h"

#include <stdexcept>

namespace kitten {

std::string_view swizzle_name(Swizzle s) {
  static constexpr std::string_view names[] = {"none", "32B", "64B", "128B"};
  return names[int(s)];
}

int swizzle_width(Swizzle s) {
  static constexpr int widths[] = {0, 32, 64, 128};
  return widths[int(s)];
}

int64_t swizzle_alignment(Swizzle s) { return s == Swizzle::None ? 16 : 8 * swizzle_width(s); }

UOp swizzled_offset(Swizzle s, const UOp& row, const UOp& byte) {
  if (s == Swizzle::None) throw std::invalid_argument("swizzled_offset: Swizzle::None has no rows");
  int64_t width = swizzle_width(s);
  // The address bits 7.. (the 128-byte line) select the XOR pattern: a row of `width`
  // bytes sits in line row * width / 128, and the pattern repeats every 8 lines.
  int64_t rows_per_line = 128 / width, lines = 8 / rows_per_line;
  UOp line = rows_per_line == 1 ? row : row / rows_per_line;
  UOp pattern = (line % lines) * 16;
  UOp chunk = UOp::make(Op::XOR, {byte, pattern});
  return row * width + chunk;
}

int64_t swizzle_address(Swizzle s, int64_t address) {
  if (s == Swizzle::None) return address;
  return address ^ (((address >> 7) & (swizzle_width(s) / 16 - 1)) << 4);
}

uint64_t descriptor_fields(Swizzle s, int64_t lbo, int64_t sbo) {
  static constexpr uint64_t codes[] = {0, 3, 2, 1};  // none, 32B, 64B, 128B
  return (uint64_t(lbo) >> 4 << 16) | (uint64_t(sbo) >> 4 << 32) | (codes[int(s)] << 62);
}

Swizzle descriptor_swizzle(uint64_t descriptor) {
  static constexpr Swizzle modes[] = {Swizzle::None, Swizzle::B128, Swizzle::B64, Swizzle::B32};
  return modes[descriptor >> 62];
}

}  // namespace kitten
