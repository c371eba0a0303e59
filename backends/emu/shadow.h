// Shadow state of a block's shared memory, byte by byte: whether it was written, which
// thread last wrote and read it in the current barrier epoch, whether an atomic touched
// it, and whether an async copy to it is still in flight. It decides what is a race: two
// accesses by different threads in one epoch where one writes, unless both are atomics.
// Internal to backends/emu.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kitten {

enum class Access { Read, Write, Atomic };

// What is wrong with an access, and the other thread involved (-1: none; -2: several).
struct ShadowFault {
  std::string what;
  int other = -1;
};

class SharedShadow {
 public:
  void reset(size_t bytes);
  std::vector<unsigned char>& bytes() { return bytes_; }
  // Checks and records an access of [offset, offset + n) by `thread` in `epoch`.
  std::optional<ShadowFault> access(int64_t offset, int n, int thread, uint32_t epoch, Access a);
  // An async copy by `thread` is in flight to [offset, offset + n) (thread < 0: it landed).
  void set_pending(int64_t offset, int n, int thread);

 private:
  std::vector<unsigned char> bytes_, init_;
  std::vector<int32_t> writer_, reader_, atomic_;  // thread ids; -2: several threads
  std::vector<uint32_t> w_epoch_, r_epoch_, a_epoch_;
  std::vector<int32_t> pending_;  // thread+1 whose async copy has not landed, else 0
};

}  // namespace kitten
