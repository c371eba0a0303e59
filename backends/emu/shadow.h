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

// The asynchronous reader of shared memory (SharedShadow::async_read): a bulk copy's thread
// + 1, or a WGMMA's -(its warp's first thread + 1).
// What is wrong with an access, and the other thread involved (-1: none; -2: several).
struct ShadowFault {
  std::string what;
  int other = -1;
  std::string then = " with no barrier between,";  // after the other thread's name
};

class SharedShadow {
 public:
  void reset(size_t bytes);
  std::vector<unsigned char>& bytes() { return bytes_; }
  // Checks and records an access of [offset, offset + n) by `thread` in `epoch`.
  std::optional<ShadowFault> access(int64_t offset, int n, int thread, uint32_t epoch, Access a);
  // An async copy by `thread` is in flight to [offset, offset + n) (thread < 0: it landed);
  // `tma`: a TMA copy, which lands when its mbarrier phase completes.
  void set_pending(int64_t offset, int n, int thread, bool tma = false);
  // Proxies: ordinary stores (the generic proxy) by `thread`, which had run `fences` FENCE
  // proxy_async before them; writes by the async proxy (TMA) need no fence.
  void generic_write(int64_t offset, int n, int thread, uint32_t fences);
  void async_write(int64_t offset, int n);
  // The thread whose ordinary store to [offset, offset + n) has no FENCE proxy_async after
  // it yet (`fences`: each thread's count now), for a read through the async proxy.
  std::optional<int> unfenced(int64_t offset, int n, const std::vector<uint32_t>& fences) const;
  // An asynchronous read of [offset, offset + n) is in flight (a TMA store or bulk
  // reduction until its BULK_WAIT, a WGMMA until its WGMMA_WAIT): `reader` marks it, and
  // a write there before it ends is an error naming the reader. `end_reads` clears the
  // bytes of one reader (all of them with offset -1).
  void async_read(int64_t offset, int n, int32_t reader);
  void end_reads(int32_t reader, int64_t offset = -1, int n = 0);

 private:
  std::vector<unsigned char> bytes_, init_;
  std::vector<int32_t> writer_, reader_, atomic_;  // thread ids; -2: several threads
  std::vector<uint32_t> w_epoch_, r_epoch_, a_epoch_;
  std::vector<int32_t> pending_;          // thread+1 whose async copy has not landed (negated: TMA)
  std::vector<int32_t> generic_;          // thread+1 of the last ordinary store, else 0
  std::vector<uint32_t> generic_fences_;  // that thread's FENCE proxy_async count then
  std::vector<int32_t> async_reader_;     // the reader still reading (0: none)
};

}  // namespace kitten
