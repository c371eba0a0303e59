// Runs the emulator's instructions: blocks in order, a block's warps in order between
// barriers, the lanes of a warp in lockstep under a mask.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <map>

#include "backends/emu/emulator.h"
#include "backends/emu/program.h"
#include "backends/emu/shadow.h"
#include "dsl/eval.h"
#include "dsl/swizzle.h"

namespace kitten {

namespace {

constexpr int kWarp = kEmuWarp;

// ---- values in memory ------------------------------------------------------------------

// A NaN keeps its sign and payload through the emulator's double registers (a hardware
// conversion would quiet a signalling one), so loads, stores and bitcasts move its bits
// unchanged, as the GPU does. `payload` is the format's mantissa, `shift` its distance
// from the top of a double's.
double nan_with(bool negative, uint64_t payload, int shift) {
  uint64_t bits = (negative ? 1ull << 63 : 0) | 0x7FF0000000000000ull | (payload << shift);
  return std::bit_cast<double>(bits);
}
uint64_t nan_payload(double x, int shift) {
  uint64_t p = (std::bit_cast<uint64_t>(x) & 0x000FFFFFFFFFFFFFull) >> shift;
  return p ? p : 1ull << (52 - shift - 1);  // a payload lost below the format: quiet NaN
}
bool negative(double x) { return std::signbit(x); }

Scalar decode(const unsigned char* p, DType d) {
  Scalar v;
  switch (d.scalar_type()) {
    case ScalarType::Float32: {
      uint32_t x;
      std::memcpy(&x, p, 4);
      bool nan = (x & 0x7FFFFFFFu) > 0x7F800000u;
      v.f = nan ? nan_with(x >> 31, x & 0x7FFFFFu, 29) : double(std::bit_cast<float>(x));
      return v;
    }
    case ScalarType::Float64:
      std::memcpy(&v.f, p, 8);
      return v;
    case ScalarType::BFloat16: {  // the top half of a float32
      uint16_t h;
      std::memcpy(&h, p, 2);
      bool nan = (h & 0x7FFFu) > 0x7F80u;
      v.f =
          nan ? nan_with(h >> 15, h & 0x7Fu, 45) : double(std::bit_cast<float>(uint32_t(h) << 16));
      return v;
    }
    case ScalarType::Float16: {
      uint16_t h;
      std::memcpy(&h, p, 2);
      bool nan = (h & 0x7FFFu) > 0x7C00u;
      v.f = nan ? nan_with(h >> 15, h & 0x3FFu, 42) : decode_float(kFloat16, h);
      return v;
    }
    case ScalarType::Float8E4M3:
    case ScalarType::Float8E5M2:
      v.f = decode_float(*d.narrow_float(), *p);
      return v;
    default: {
      uint64_t u = 0;
      std::memcpy(&u, p, size_t(d.bits() / 8));
      v.i = wrap_to(int64_t(u), d);
      return v;
    }
  }
}

void encode(unsigned char* p, DType d, Scalar v) {
  switch (d.scalar_type()) {
    case ScalarType::Float32: {
      uint32_t x = std::isnan(v.f) ? (negative(v.f) ? 0x80000000u : 0) | 0x7F800000u |
                                         uint32_t(nan_payload(v.f, 29))
                                   : std::bit_cast<uint32_t>(float(v.f));
      std::memcpy(p, &x, 4);
      return;
    }
    case ScalarType::Float64:
      std::memcpy(p, &v.f, 8);
      return;
    case ScalarType::BFloat16:
      if (std::isnan(v.f)) {
        uint16_t h = uint16_t((negative(v.f) ? 0x8000u : 0) | 0x7F80u | nan_payload(v.f, 45));
        std::memcpy(p, &h, 2);
        return;
      }
      if (double(float(v.f)) == v.f) {  // exact in float32: round its low half
        uint32_t x = std::bit_cast<uint32_t>(float(v.f));
        uint16_t h = uint16_t((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
        std::memcpy(p, &h, 2);
        return;
      }
      [[fallthrough]];
    case ScalarType::Float16: {
      uint16_t h = std::isnan(v.f) && d.scalar_type() == ScalarType::Float16
                       ? uint16_t((negative(v.f) ? 0x8000u : 0) | 0x7C00u | nan_payload(v.f, 42))
                       : uint16_t(encode_float(*d.narrow_float(), v.f));
      std::memcpy(p, &h, 2);
      return;
    }
    case ScalarType::Float8E4M3:
    case ScalarType::Float8E5M2:
      *p = uint8_t(encode_float(*d.narrow_float(), v.f));
      return;
    default:
      std::memcpy(p, &v.i, size_t(d.bits() / 8));
      return;
  }
}

struct PendingCopy {
  int thread;
  int64_t token;
  int64_t group;  // its commit group (-1: not committed yet)
  int buf;
  int64_t offset;
  std::vector<unsigned char> data;
};

// A mask saved by the RANGE or IF at `pc` that narrowed it.
struct MaskFrame {
  uint32_t mask;
  int pc;
};

// Bytes of a shared buffer.
struct SharedRange {
  int buf;
  int64_t offset;
  int n;
};

struct Warp {
  int pc = 0;
  uint32_t exists = 0, mask = 0;
  std::vector<MaskFrame> masks;
  std::vector<Scalar> regs;
  std::vector<std::vector<unsigned char>> reg_bytes, reg_init;  // per reg buffer: 32 threads
  bool done = false;
  // What the warp waits for: nothing (it runs), the block's BARRIER, a named barrier, or an
  // mbarrier phase (it retries the wait when the scheduler comes back to it).
  enum class Waits { Nothing, Barrier, Named, Mbarrier } waits = Waits::Nothing;
  int end_level = -1;            // set when a RANGE with no iterations jumps to its END
  std::vector<int64_t> maxnreg;  // the SETMAXNREG budgets it ran (dec negative), in order
  // wgmma: when each register slot was last written by an ordinary instruction (0: by a
  // WGMMA), the clock at the last FENCE wgmma, and the WGMMAs whose results are in flight.
  std::vector<uint64_t> written;
  uint64_t clock = 0, wgmma_fence = 0;
  struct InFlight {
    int slot, count;
    int64_t group;  // -1: not committed yet
    int pc;
    std::vector<SharedRange> reads;  // the shared bytes of its operands
  };
  std::vector<InFlight> wgmmas;
};

// An mbarrier's state (PTX: the expected arrivals, the pending arrivals and transaction
// bytes of the current phase, and the phase).
struct Mbarrier {
  int64_t count = 0, pending = 0, tx = 0, phase = 0;
  int init_thread = -1;
  bool fenced = false;      // a FENCE mbarrier_init by the initialising thread followed
  uint32_t init_epoch = 0;  // the barrier epoch it was initialised in
};

class Runner {
 public:
  Runner(const EmuKernel& k, LaunchDims grid, LaunchDims block, std::span<const KernelArg> args)
      : k_(k), grid_(grid), block_(block), args_(args) {}

  EmuStats run() {
    check_args();
    for (int64_t bz = 0; bz < grid_.z; ++bz)
      for (int64_t by = 0; by < grid_.y; ++by)
        for (int64_t bx = 0; bx < grid_.x; ++bx) run_block({bx, by, bz});
    stats_.warp_instructions = issued_;
    return stats_;
  }

 private:
  // ---- faults ----
  std::string thread_text(int t) const {
    int64_t x = t % block_.x, y = (t / block_.x) % block_.y, z = t / (block_.x * block_.y);
    return "thread (" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) +
           ") of block (" + std::to_string(bid_.x) + "," + std::to_string(bid_.y) + "," +
           std::to_string(bid_.z) + ")";
  }
  std::string place(int pc) const {
    const EmuInstr& in = k_.code[size_t(pc)];
    return op_name(in.op) + " %" + std::to_string(in.line);
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw BackendError("emu: kernel '" + k_.name + "': " + what);
  }
  [[noreturn]] void refuse_launch(const std::string& what) const {
    throw BackendError("emu: kernel '" + k_.name + "' " + what);
  }
  [[noreturn]] void fault(const std::string& what, int buf, int64_t index, int thread) const {
    std::string where =
        buf >= 0 ? " in " + k_.buffers[size_t(buf)].name + " at index " + std::to_string(index)
                 : "";
    fail(what + where + " by " + thread_text(thread));
  }

  void check_args() {
    size_t want = size_t(k_.num_params) + k_.vars.size();
    if (args_.size() != want)
      refuse_launch("takes " + std::to_string(want) + " arguments, got " +
                    std::to_string(args_.size()));
    for (size_t i = 0; i < args_.size(); ++i) {
      if (i < size_t(k_.num_params)) {
        check_arg(k_.info, i, args_[i], "emu");
      } else if (!std::holds_alternative<int64_t>(args_[i])) {
        refuse_launch("argument " + std::to_string(i) + " is a variable, an integer");
      }
    }
    auto same = [](LaunchDims a, LaunchDims b) { return a.x == b.x && a.y == b.y && a.z == b.z; };
    LaunchDims grid = resolve_grid(k_.grid, k_.grid_extent, k_.vars, k_.num_params, args_);
    if (!same(grid_, grid) || !same(block_, k_.block))
      refuse_launch("needs a grid of " + dims(grid) + " blocks of " + dims(k_.block) +
                    " threads, launched with " + dims(grid_) + " of " + dims(block_));
    if (block_.x * block_.y * block_.z > k_.target.max_threads_per_block)
      refuse_launch("has more than " + std::to_string(k_.target.max_threads_per_block) +
                    " threads per block");
  }
  static std::string dims(LaunchDims d) {
    return std::to_string(d.x) + "x" + std::to_string(d.y) + "x" + std::to_string(d.z);
  }

  // ---- blocks and warps ----
  void run_block(LaunchDims bid) {
    bid_ = bid;
    epoch_ = 1;
    pending_.clear();
    shared_.resize(k_.buffers.size());  // reused from block to block: no reallocation
    for (size_t b = 0; b < k_.buffers.size(); ++b)
      if (k_.buffers[b].kind == EmuBufKind::Shared)
        shared_[b].reset(size_t(k_.buffers[b].size * k_.buffers[b].elem.itemsize()));
    int64_t threads = block_.x * block_.y * block_.z;
    std::vector<Warp> warps(size_t((threads + kWarp - 1) / kWarp));
    for (size_t w = 0; w < warps.size(); ++w) {
      int64_t live = std::min<int64_t>(kWarp, threads - int64_t(w) * kWarp);
      warps[w].exists = live == kWarp ? 0xFFFFFFFFu : (1u << live) - 1;
      warps[w].mask = warps[w].exists;
      warps[w].regs.assign(size_t(k_.slots) * kWarp, Scalar{0});
      if (k_.warpgroups) warps[w].written.assign(size_t(k_.slots), 0);
      warps[w].reg_bytes.resize(k_.buffers.size());
      warps[w].reg_init.resize(k_.buffers.size());
      for (size_t b = 0; b < k_.buffers.size(); ++b)
        if (k_.buffers[b].kind == EmuBufKind::Reg) {
          size_t n = size_t(k_.buffers[b].size * k_.buffers[b].elem.itemsize()) * kWarp;
          warps[w].reg_bytes[b].assign(n, 0);
          warps[w].reg_init[b].assign(n, 0);
        }
    }
    warps_ = &warps;
    proxy_fences_.assign(size_t(threads), 0);
    tma_.clear();
    bulk_.clear();
    mbarriers_.clear();
    named_ = {};
    // Each warp runs until it ends or waits; the round repeats while some warp moved. When
    // none can, either every warp waits at the block's BARRIER (it opens) or the block is
    // stuck: a wait that nothing left can satisfy is an error naming it.
    for (;;) {
      uint64_t before = advanced_;
      for (size_t w = 0; w < warps.size(); ++w) {
        warp_id_ = int(w);
        Warp& wp = warps[w];
        if (wp.waits == Warp::Waits::Mbarrier) wp.waits = Warp::Waits::Nothing;  // retry
        while (!wp.done && wp.waits == Warp::Waits::Nothing) step(wp);
      }
      if (advanced_ != before || deliver(nullptr)) continue;
      for (size_t w = 0; w < warps.size(); ++w)
        if (warps[w].waits == Warp::Waits::Mbarrier || warps[w].waits == Warp::Waits::Named)
          stuck(warps, int(w));
      if (!all_at_one_barrier(warps)) break;
      ++epoch_;
      for (Warp& wp : warps) wp.waits = Warp::Waits::Nothing, ++wp.pc;
    }
    if (k_.setmaxnreg) same_setmaxnreg(warps);
  }

  // Every warp of a warpgroup must run the same SETMAXNREG instructions.
  void same_setmaxnreg(const std::vector<Warp>& warps) const {
    for (size_t w = 0; w < warps.size(); ++w)
      if (warps[w].maxnreg != warps[w - w % 4].maxnreg) {
        auto list = [](const std::vector<int64_t>& v) {
          std::string out;
          for (int64_t r : v)
            out += (out.empty() ? "" : ", ") + std::string(r < 0 ? "dec " : "inc ") +
                   std::to_string(std::abs(r));
          return "[" + out + "]";
        };
        fail("warps " + std::to_string(w - w % 4) + " and " + std::to_string(w) + " of warpgroup " +
             std::to_string(w / 4) + " ran different SETMAXNREG sequences (" +
             list(warps[w - w % 4].maxnreg) + " and " + list(warps[w].maxnreg) + " in block (" +
             std::to_string(bid_.x) + "," + std::to_string(bid_.y) + "," + std::to_string(bid_.z) +
             ")): setmaxnreg is warpgroup-wide");
      }
  }

  // No warp can move and warp `w` waits on an mbarrier or a named barrier: nothing left can
  // satisfy it. Names the wait and where the first other unfinished warp is.
  [[noreturn]] void stuck(std::vector<Warp>& warps, int w) {
    warp_id_ = w;
    Warp& wp = warps[size_t(w)];
    const EmuInstr& in = k_.code[size_t(wp.pc)];
    int lane = std::countr_zero(wp.mask);
    std::string others = "every other thread has finished";
    for (size_t o = 0; o < warps.size(); ++o)
      if (int(o) != w && !warps[o].done) {
        others = thread_text(int(o) * kWarp) + " waits at " + place(warps[o].pc);
        break;
      }
    if (wp.waits == Warp::Waits::Named) {
      const NamedBarrier& nb = named_[size_t(in.lanes[0])];
      fail(place(wp.pc) + " (named barrier " + std::to_string(in.lanes[0]) + " for " +
           std::to_string(in.lanes[1]) + " threads) is reached by " + thread_text(thread_of(lane)) +
           " and only " + std::to_string(nb.arrived) + " threads in all, and can never open (" +
           others + ")");
    }
    int64_t index = reg(wp, in.idx)[lane].i, parity = reg(wp, in.src[0])[lane].i;
    const Mbarrier& m = mbarriers_.at({in.buf, index});
    fail(place(wp.pc) + ": " + thread_text(thread_of(lane)) + " waits for the phase of parity " +
         std::to_string(parity) + " of the mbarrier in " + k_.buffers[size_t(in.buf)].name +
         " at index " + std::to_string(index) + ", which is in phase " + std::to_string(m.phase) +
         " with " + std::to_string(m.pending) + " of " + std::to_string(m.count) +
         " arrivals and " + std::to_string(m.tx) +
         " transaction bytes outstanding; that phase can never complete (" + others + ")");
  }

  // After every warp ran as far as it can: true when all wait at one barrier, false when
  // all are done; a barrier that only some warps reach is an error naming both places.
  bool all_at_one_barrier(const std::vector<Warp>& warps) const {
    const Warp* waiting = nullptr;
    const Warp* done = nullptr;
    int waiting_id = 0, done_id = 0;
    for (size_t w = 0; w < warps.size(); ++w) {
      const Warp& wp = warps[w];
      if (wp.done) {
        if (!done) done = &wp, done_id = int(w);
        continue;
      }
      if (!waiting) {
        waiting = &wp, waiting_id = int(w);
      } else if (wp.pc != waiting->pc) {
        fail(place(waiting->pc) + " is reached by " + thread_text(waiting_id * kWarp) + " while " +
             thread_text(int(w) * kWarp) + " waits at " + place(wp.pc) +
             ": a barrier must be reached by every thread of the block");
      }
    }
    if (waiting && done)
      fail(place(waiting->pc) + " is reached by " + thread_text(waiting_id * kWarp) + " but " +
           thread_text(done_id * kWarp) +
           " ran to the end of the kernel without it: a barrier must be reached by every thread "
           "of the block");
    return waiting != nullptr;
  }

  // Within a warp: every thread must be active at a barrier. Names the construct where a
  // missing thread went its own way.
  void check_barrier_lanes(const Warp& w, const EmuInstr& in) const {
    uint32_t missing = w.exists & ~w.mask;
    if (!missing) return;
    int lane = std::countr_zero(missing), here = std::countr_zero(w.mask);
    std::string where = " (it is inactive here)";
    for (auto it = w.masks.rbegin(); it != w.masks.rend(); ++it)
      if ((it->mask >> lane) & 1) {
        const EmuInstr& opener = k_.code[size_t(it->pc)];
        where = opener.kind == EmuKind::If ? ", which skipped it at " + place(it->pc) +
                                                 " and waits at " + place(opener.end_pc)
                                           : ", which left the loop " + place(it->pc) +
                                                 " and waits at " + place(opener.end_pc);
        break;
      }
    fail(place(w.pc) + " is reached by " + thread_text(thread_of(here)) + " but not by " +
         thread_text(thread_of(lane)) + where +
         ": a barrier must be reached by every thread of the block");
    (void)in;
  }

  int thread_of(int lane) const { return warp_id_ * kWarp + lane; }
  Scalar* reg(Warp& w, int slot, int elem = 0) {
    return &w.regs[(size_t(slot) + size_t(elem)) * kWarp];
  }

  template <class F>
  void each(uint32_t mask, F f) {
    while (mask) {
      int l = std::countr_zero(mask);
      mask &= mask - 1;
      f(l);
    }
  }

  // ---- memory ----
  // Checks an access of `bytes` at element `index` of buffer b by lane l, and returns the
  // byte offset.
  int64_t check_access(int b, int64_t index, int bytes, int lane, bool write) {
    const EmuBuffer& d = k_.buffers[size_t(b)];
    int64_t elem = d.elem.itemsize(), offset = index * elem, size;
    uintptr_t base = 0;
    if (d.kind == EmuBufKind::Global) {
      const Buffer& buf = std::get<Buffer>(args_[size_t(d.slot)]);
      size = int64_t(buf.bytes);
      base = reinterpret_cast<uintptr_t>(buf.ptr);
    } else {
      size = d.size * elem;
    }
    if (index < 0 || offset + bytes > size)
      fault(std::string(write ? "out-of-bounds write" : "out-of-bounds read") + " of " +
                std::to_string(bytes) + " bytes (the buffer has " +
                std::to_string(size / std::max<int64_t>(elem, 1)) + " elements)",
            b, index, thread_of(lane));
    if (bytes > elem && (base + uintptr_t(offset)) % uintptr_t(bytes) != 0)
      fault("misaligned " + std::to_string(bytes) + "-byte " + (write ? "write" : "read") +
                " (byte offset " + std::to_string(offset) + ")",
            b, index, thread_of(lane));
    return offset;
  }

  unsigned char* memory(Warp& w, int b, int64_t offset, int lane) {
    const EmuBuffer& d = k_.buffers[size_t(b)];
    if (d.kind == EmuBufKind::Global)
      return static_cast<unsigned char*>(std::get<Buffer>(args_[size_t(d.slot)]).ptr) + offset;
    if (d.kind == EmuBufKind::Shared) return shared_[size_t(b)].bytes().data() + offset;
    return w.reg_bytes[size_t(b)].data() + size_t(lane) * size_t(d.size * d.elem.itemsize()) +
           size_t(offset);
  }

  void track(Warp& w, int b, int64_t index, int64_t offset, int bytes, int lane, Access a) {
    const EmuBuffer& d = k_.buffers[size_t(b)];
    int t = thread_of(lane);
    if (d.kind == EmuBufKind::Reg) {
      unsigned char* init =
          w.reg_init[size_t(b)].data() + size_t(lane) * size_t(d.size * d.elem.itemsize());
      for (int i = 0; i < bytes; ++i) {
        if (a == Access::Write)
          init[offset + i] = 1;
        else if (!init[offset + i])
          fault("read of register memory never written", b, index, t);
      }
      return;
    }
    if (d.kind != EmuBufKind::Shared) return;
    if (auto f = shared_[size_t(b)].access(offset, bytes, t, epoch_, a)) {
      std::string other = f->other >= 0 ? " " + thread_text(f->other) : " several threads";
      fault(f->what + (f->other != -1 ? other + f->then : ""), b, index, t);
    }
    if (a == Access::Write)
      shared_[size_t(b)].generic_write(offset, bytes, t, proxy_fences_[size_t(t)]);
  }

  // The bank passes of one warp-level shared access (EmuStats): lane_offset_ holds each
  // active lane's byte offset, -1 for the others. Offsets within one buffer: its base
  // shifts every word by the same amount, which only renames the banks.
  void count_banks(int bytes) {
    int phases = bytes <= 4 ? 1 : bytes <= 8 ? 2 : 4, per = kWarp / phases;
    uint64_t total = 0, busy = 0;
    for (int p = 0; p < phases; ++p) {
      std::array<int64_t, 32 * 4> words;  // the 4-byte words the phase touches
      int n = 0;
      for (int l = p * per; l < (p + 1) * per; ++l) {
        if (lane_offset_[size_t(l)] < 0) continue;
        for (int64_t wd = lane_offset_[size_t(l)] / 4;
             wd <= (lane_offset_[size_t(l)] + bytes - 1) / 4; ++wd)
          words[size_t(n++)] = wd;
      }
      if (n == 0) continue;
      std::sort(words.begin(), words.begin() + n);
      n = int(std::unique(words.begin(), words.begin() + n) - words.begin());
      std::array<int, 32> per_bank{};
      int worst = 0;
      for (int i = 0; i < n; ++i)
        worst = std::max(worst, ++per_bank[size_t(words[size_t(i)] % 32)]);
      total += uint64_t(worst);
      ++busy;
    }
    if (busy == 0) return;
    ++stats_.shared_accesses;
    stats_.shared_wavefronts += total;
    stats_.bank_conflicts += total - busy;
  }
  bool is_shared(int b) const { return k_.buffers[size_t(b)].kind == EmuBufKind::Shared; }

  void load(Warp& w, const EmuInstr& in) {
    DType d = in.dtype, e = d.element();
    int n = d.count(), bytes = d.itemsize();
    if (is_shared(in.buf)) lane_offset_.fill(-1);  // the bank count's input
    each(w.mask, [&](int l) {
      bool on = in.gate < 0 || reg(w, in.gate)[l].i != 0;
      if (!on) {
        for (int v = 0; v < n; ++v) reg(w, in.out, v)[l] = reg(w, in.alt, v)[l];
        return;
      }
      int64_t index = reg(w, in.idx)[l].i;
      int64_t off = check_access(in.buf, index, bytes, l, false);
      track(w, in.buf, index, off, bytes, l, Access::Read);
      lane_offset_[size_t(l)] = off;
      const unsigned char* p = memory(w, in.buf, off, l);
      for (int v = 0; v < n; ++v) reg(w, in.out, v)[l] = decode(p + v * e.itemsize(), e);
    });
    if (is_shared(in.buf)) count_banks(bytes);
  }

  void store(Warp& w, const EmuInstr& in) {
    DType d = in.dtype, e = d.element();
    int n = d.count(), bytes = d.itemsize();
    if (is_shared(in.buf)) lane_offset_.fill(-1);  // the bank count's input
    each(w.mask, [&](int l) {
      if (in.gate >= 0 && reg(w, in.gate)[l].i == 0) return;
      int64_t index = reg(w, in.idx)[l].i;
      int64_t off = check_access(in.buf, index, bytes, l, true);
      track(w, in.buf, index, off, bytes, l, Access::Write);
      lane_offset_[size_t(l)] = off;
      unsigned char* p = memory(w, in.buf, off, l);
      for (int v = 0; v < n; ++v) encode(p + v * e.itemsize(), e, reg(w, in.value, v)[l]);
    });
    if (is_shared(in.buf)) count_banks(bytes);
  }

  // Lane by lane, in lane order: each read-modify-write is indivisible, so concurrent
  // atomics to one element all land (exact for integers; floats in this order).
  void atomic(Warp& w, const EmuInstr& in) {
    DType d = in.dtype, e = d.element();
    int n = d.count(), bytes = d.itemsize();
    Op combine = in.atomic == AtomicOp::Add   ? Op::ADD
                 : in.atomic == AtomicOp::Max ? Op::MAX
                                              : Op::MIN;
    if (is_shared(in.buf)) lane_offset_.fill(-1);  // the bank count's input
    each(w.mask, [&](int l) {
      if (in.gate >= 0 && reg(w, in.gate)[l].i == 0) return;
      int64_t index = reg(w, in.idx)[l].i;
      int64_t off = check_access(in.buf, index, bytes, l, true);
      track(w, in.buf, index, off, bytes, l, Access::Atomic);
      lane_offset_[size_t(l)] = off;
      unsigned char* p = memory(w, in.buf, off, l);
      for (int v = 0; v < n; ++v) {
        Scalar args[2] = {decode(p + v * e.itemsize(), e), reg(w, in.value, v)[l]};
        encode(p + v * e.itemsize(), e, eval_alu(combine, e, e, args).value);
      }
    });
    if (is_shared(in.buf)) count_banks(bytes);
  }

  void async_copy(Warp& w, const EmuInstr& in) {
    int bytes = in.dtype.itemsize();
    if (is_shared(in.buf)) lane_offset_.fill(-1);  // the bank count's input
    each(w.mask, [&](int l) {
      // A gated-off source is not read: the copy writes zeros (cp.async's src-size 0).
      bool on = in.gate < 0 || reg(w, in.gate)[l].i != 0;
      int64_t si = reg(w, in.src_idx)[l].i, di = reg(w, in.idx)[l].i;
      int64_t soff = on ? check_access(in.src_buf, si, bytes, l, false) : 0;
      int64_t doff = check_access(in.buf, di, bytes, l, true);
      // The copy may land any time before its WAIT: it writes its slot from the issue on,
      // so a slot that another thread read or wrote in this epoch (no barrier between) or
      // that a copy still in flight targets is a race here, not only at the WAIT.
      if (auto f =
              shared_[size_t(in.buf)].access(doff, bytes, thread_of(l), epoch_, Access::Write)) {
        std::string other = f->other >= 0 ? " " + thread_text(f->other) : " several threads";
        fault("async copy into shared memory: " + f->what + (f->other != -1 ? other + f->then : ""),
              in.buf, di, thread_of(l));
      }
      std::vector<unsigned char> data(size_t(bytes), 0);
      if (on) std::memcpy(data.data(), memory(w, in.src_buf, soff, l), size_t(bytes));
      PendingCopy c{thread_of(l), next_token_, k_.explicit_groups ? -1 : next_token_,
                    in.buf,       doff,        std::move(data)};
      shared_[size_t(in.buf)].set_pending(doff, bytes, thread_of(l));
      reg(w, in.out)[l].i = next_token_;
      pending_.push_back(std::move(c));
      lane_offset_[size_t(l)] = doff;
    });
    count_banks(bytes);  // the shared writes, counted at the issue
    ++next_token_;
  }

  // A copy lands: its bytes are written as the issuing thread's write at this point.
  std::vector<PendingCopy>::iterator land(Warp& w, std::vector<PendingCopy>::iterator it, int l) {
    SharedShadow& sb = shared_[size_t(it->buf)];
    sb.set_pending(it->offset, int(it->data.size()), -1);
    int64_t index = it->offset / k_.buffers[size_t(it->buf)].elem.itemsize();
    track(w, it->buf, index, it->offset, int(it->data.size()), l, Access::Write);
    std::memcpy(sb.bytes().data() + it->offset, it->data.data(), it->data.size());
    return pending_.erase(it);
  }

  void wait(Warp& w, const EmuInstr& in) {
    each(w.mask, [&](int l) {
      int t = thread_of(l);
      for (int s : in.src) {
        int64_t token = reg(w, s)[l].i;
        for (auto it = pending_.begin(); it != pending_.end();)
          it = it->thread == t && it->token == token ? land(w, it, l) : it + 1;
      }
    });
  }

  // cp.async.commit_group: the thread's copies since its last commit become one group.
  void commit(Warp& w, const EmuInstr& in) {
    int64_t group = next_token_++;
    each(w.mask, [&](int l) {
      for (PendingCopy& c : pending_)
        if (c.thread == thread_of(l) && c.group < 0) c.group = group;
      reg(w, in.out)[l].i = group;
    });
  }

  // cp.async.wait_group N: the thread's oldest committed groups land until at most N are
  // in flight; copies not committed yet are not waited for (reading one is caught at the
  // read), as on the hardware.
  void wait_group(Warp& w, const EmuInstr& in) {
    each(w.mask, [&](int l) {
      int t = thread_of(l);
      for (;;) {
        std::vector<int64_t> groups;
        for (const PendingCopy& c : pending_)
          if (c.thread == t && c.group >= 0) groups.push_back(c.group);
        std::sort(groups.begin(), groups.end());
        groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
        if (int64_t(groups.size()) <= in.imm_i) return;
        for (auto it = pending_.begin(); it != pending_.end();)
          it = it->thread == t && it->group == groups[0] ? land(w, it, l) : it + 1;
      }
    });
  }

  // ---- arithmetic ----
  void alu(Warp& w, const EmuInstr& in) {
    int count = in.dtype.count();
    size_t n = in.src.size();
    for (int v = 0; v < count; ++v)
      each(w.mask, [&](int l) {
        Scalar args[3];
        for (size_t s = 0; s < n; ++s) args[s] = reg(w, in.src[s], v)[l];
        EvalResult r = eval_alu(in.op, in.in, in.dtype, std::span<const Scalar>(args, n));
        if (r.fault == EvalFault::DivByZero) fault("integer division by zero", -1, 0, thread_of(l));
        reg(w, in.out, v)[l] = r.value;  // C's undefined overflow wraps, as on the GPU
      });
  }

  // Warp-wide instructions (.sync.aligned) need every lane of the warp.
  void whole_warp(const Warp& w, const char* op) {
    if (w.mask != 0xFFFFFFFFu)
      fault(std::string(op) + " with only some lanes of the warp active", -1, 0,
            thread_of(std::countr_zero(~w.mask | 0u)));
  }

  // Where element c of row r of an 8x8 ldmatrix/stmatrix matrix lives in the warp: the
  // lane, and which of its two values for that matrix (PTX: lane l holds elements
  // 2(l%4), 2(l%4)+1 of row l/4, or with trans element l/4 of rows 2(l%4), 2(l%4)+1).
  static std::pair<int, int> matrix_lane(int r, int c, bool trans) {
    return trans ? std::pair{4 * c + r / 2, r % 2} : std::pair{4 * r + c / 2, c % 2};
  }

  void mma(Warp& w, const EmuInstr& in) {
    whole_warp(w, "MMA");
    const EmuFragment &fa = in.mma_a, &fb = in.mma_b, &fc = in.mma_c;
    // Tiles up to kEmuMmaTile elements each (the translator refuses larger layouts).
    std::array<double, kEmuMmaTile> A, B, C;
    auto gather = [&](const EmuFragment& f, int src, std::array<double, kEmuMmaTile>& m) {
      for (int l = 0; l < kWarp; ++l)
        for (int i = 0; i < f.count; ++i)
          m[size_t(f.at[size_t(l * f.count + i)])] = reg(w, src, i)[l].f;
    };
    gather(fa, in.src[0], A);
    gather(fb, in.src[1], B);
    gather(fc, in.src[2], C);
    for (int l = 0; l < kWarp; ++l)
      for (int i = 0; i < fc.count; ++i) {
        int at = fc.at[size_t(l * fc.count + i)], r = at / fc.cols, c = at % fc.cols;
        double acc = C[size_t(at)];
        for (int kk = 0; kk < in.mma_k; ++kk)
          acc += A[size_t(r * fa.cols + kk)] * B[size_t(kk * fb.cols + c)];
        reg(w, in.out, i)[l].f = double(float(acc));
      }
  }

  // ldmatrix and stmatrix: lane 8q+r addresses row r (16 bytes) of matrix q; each lane
  // holds two elements of each matrix, from one row, or with trans from two rows
  // (dsl/ops.cpp). A load gathers them from the rows, a store scatters them back.
  void matrices(Warp& w, const EmuInstr& in, bool store) {
    whole_warp(w, store ? "STMATRIX" : "LDMATRIX");
    int count = int(in.lanes[0]);
    bool trans = in.lanes[1] != 0;
    DType e = in.dtype.element();
    lane_offset_.fill(-1);
    for (int q = 0; q < count; ++q)
      for (int r = 0; r < 8; ++r) {
        int l = 8 * q + r;
        int64_t index = reg(w, in.idx)[l].i;
        int64_t off = check_access(in.buf, index, 16, l, store);
        track(w, in.buf, index, off, 16, l, store ? Access::Write : Access::Read);
        lane_offset_[size_t(l)] = off;
        unsigned char* p = memory(w, in.buf, off, l);
        for (int c = 0; c < 8; ++c) {
          auto [lane, half] = matrix_lane(r, c, trans);
          if (store)
            encode(p + c * 2, e, reg(w, in.value, 2 * q + half)[lane]);
          else
            reg(w, in.out, 2 * q + half)[lane] = decode(p + c * 2, e);
        }
      }
    count_banks(16);  // a phase of 8 lanes per matrix
  }

  void shuffle(Warp& w, const EmuInstr& in) {
    std::vector<Scalar> src(reg(w, in.src[0]), reg(w, in.src[0]) + kWarp);
    each(w.mask, [&](int l) {
      int64_t arg = reg(w, in.src[1])[l].i, from = l;
      switch (in.shuffle) {
        case ShuffleMode::Idx:  // the lane number modulo the warp, as shfl takes it
          from = arg & (kWarp - 1);
          break;
        case ShuffleMode::Xor:
          from = (l ^ arg) & (kWarp - 1);
          break;
        case ShuffleMode::Up:  // the delta is unsigned: a negative one is out of range
          from = arg >= 0 && l - arg >= 0 ? l - arg : l;
          break;
        case ShuffleMode::Down:
          from = arg >= 0 && l + arg < kWarp ? l + arg : l;
          break;
      }
      if (!((w.mask >> from) & 1))
        fault("shuffle from lane " + std::to_string(from) + ", which is not active,", -1, 0,
              thread_of(l));
      reg(w, in.out)[l] = src[size_t(from)];
    });
  }

  int64_t special(const EmuInstr& in, int lane) const {
    if (in.special.kind == SpecialKind::BlockIdx)
      return in.special.dim == 0 ? bid_.x : in.special.dim == 1 ? bid_.y : bid_.z;
    int64_t t = thread_of(lane);
    if (in.special.dim == 0) return t % block_.x;
    if (in.special.dim == 1) return (t / block_.x) % block_.y;
    return t / (block_.x * block_.y);
  }

  // Opens a RANGE: every active lane starts at 0; with no lane iterating, jumps to its END.
  bool open_range(Warp& w, const EmuInstr& in) {
    w.masks.push_back({w.mask, w.pc});
    uint32_t live = 0;
    each(w.mask, [&](int l) {
      reg(w, in.out)[l].i = 0;
      if (0 < reg(w, in.src[0])[l].i) live |= 1u << l;
    });
    if (!live) {
      w.end_level = in.level;
      w.pc = in.end_pc;
      return false;
    }
    w.mask = live;
    return true;
  }

  // Closes ranges innermost first: loops back while a lane has iterations left.
  bool close_ranges(Warp& w, const EmuInstr& in) {
    size_t start = w.end_level >= 0 ? size_t(w.end_level) : 0;
    bool skipped = w.end_level >= 0;
    w.end_level = -1;
    for (size_t level = start; level < in.closes.size(); ++level) {
      const EmuInstr& r = k_.code[size_t(in.closes[level])];
      if (!(skipped && level == start)) {
        uint32_t live = 0;
        each(w.mask, [&](int l) {
          int64_t& i = reg(w, r.out)[l].i;
          if (++i < reg(w, r.src[0])[l].i) live |= 1u << l;
        });
        if (live) {
          w.mask = live;
          w.pc = in.closes[level] + 1;
          return false;
        }
      }
      w.mask = w.masks.back().mask;
      w.masks.pop_back();
    }
    return true;
  }

  // ---- one instruction of one warp ----
  void step(Warp& w) {
    if (w.pc >= int(k_.code.size())) {
      w.done = true;
      return;
    }
    const EmuInstr& in = k_.code[size_t(w.pc)];
    ++issued_, ++advanced_;
    if (!w.wgmmas.empty()) check_settled(w, in);
    if (k_.warpgroups && in.out >= 0)
      w.written[size_t(in.out)] =
          in.kind == EmuKind::Wgmma || in.kind == EmuKind::WgmmaWait ? 0 : ++w.clock;
    int count = in.dtype.is_value() ? in.dtype.count() : 1;
    switch (in.kind) {
      case EmuKind::Nop:
        break;
      case EmuKind::Const:
        each(w.exists, [&](int l) {
          if (in.dtype.is_float())
            reg(w, in.out)[l].f = in.imm_f;
          else
            reg(w, in.out)[l].i = in.imm_i;
        });
        break;
      case EmuKind::IntParam:
      case EmuKind::Var: {
        Scalar v;
        v.i = std::get<int64_t>(args_[size_t(in.imm_i)]);
        each(w.exists, [&](int l) { reg(w, in.out)[l] = v; });
        break;
      }
      case EmuKind::Special:
        each(w.mask, [&](int l) { reg(w, in.out)[l].i = special(in, l); });
        break;
      case EmuKind::Range:
        if (!open_range(w, in)) return;
        break;
      case EmuKind::End:
        if (!close_ranges(w, in)) return;
        break;
      case EmuKind::If: {
        w.masks.push_back({w.mask, w.pc});
        uint32_t live = 0;
        each(w.mask, [&](int l) {
          if (reg(w, in.src[0])[l].i) live |= 1u << l;
        });
        w.mask = live;
        if (!live) {  // nobody runs the body: straight to the ENDIF, which restores the mask
          w.pc = in.end_pc;
          return;
        }
        break;
      }
      case EmuKind::EndIf:
        w.mask = w.masks.back().mask;
        w.masks.pop_back();
        break;
      case EmuKind::Index:
        each(w.mask, [&](int l) { reg(w, in.out)[l] = reg(w, in.src[0])[l]; });
        break;
      case EmuKind::Load:
        load(w, in);
        break;
      case EmuKind::Store:
        store(w, in);
        break;
      case EmuKind::Atomic:
        atomic(w, in);
        break;
      case EmuKind::AsyncCopy:
        async_copy(w, in);
        break;
      case EmuKind::Wait:
        wait(w, in);
        break;
      case EmuKind::WaitGroup:
        wait_group(w, in);
        break;
      case EmuKind::AsyncCommit:
        commit(w, in);
        break;
      case EmuKind::Barrier:
        check_barrier_lanes(w, in);
        w.waits = Warp::Waits::Barrier;
        return;  // the block scheduler moves it past the barrier
      case EmuKind::NamedBarrier:
        check_barrier_lanes(w, in);
        named_barrier(w, in);
        return;  // moved past it when the last thread arrives
      case EmuKind::MbarrierInit:
        mbarrier_init(w, in);
        break;
      case EmuKind::MbarrierArrive:
        mbarrier_arrive(w, in);
        break;
      case EmuKind::MbarrierWait:
        if (!mbarrier_ready(w, in)) {
          --advanced_, --issued_;
          w.waits = Warp::Waits::Mbarrier;
          return;
        }
        break;
      case EmuKind::Fence:
        fence(w, in);
        break;
      case EmuKind::BulkCommit:
        each(w.mask, [&](int l) {
          BulkReads& r = bulk_[thread_of(l)];
          r.groups.push_back(std::move(r.open));
          r.open.clear();
        });
        break;
      case EmuKind::BulkWait:
        bulk_wait(w, in);
        break;
      case EmuKind::TmaLoad:
        tma_load(w, in);
        break;
      case EmuKind::TmaStore:
        tma_store(w, in);
        break;
      case EmuKind::BulkReduceAdd:
        bulk_reduce_add(w, in);
        break;
      case EmuKind::MatrixDesc:
        matrix_desc(w, in);
        break;
      case EmuKind::Wgmma:
        wgmma(w, in);
        break;
      case EmuKind::WgmmaCommit:
        whole_warp(w, "WGMMA_COMMIT");
        ++wgmma_groups_;
        for (Warp::InFlight& f : w.wgmmas)
          if (f.group < 0) f.group = wgmma_groups_;
        break;
      case EmuKind::WgmmaWait:
        wgmma_wait(w, in);
        break;
      case EmuKind::Setmaxnreg:
        whole_warp(w, "SETMAXNREG");
        w.maxnreg.push_back(in.lanes[1] ? in.lanes[0] : -in.lanes[0]);
        break;
      case EmuKind::Shuffle:
        shuffle(w, in);
        break;
      case EmuKind::Mma:
        mma(w, in);
        break;
      case EmuKind::Ldmatrix:
      case EmuKind::Stmatrix:
        matrices(w, in, in.kind == EmuKind::Stmatrix);
        break;
      case EmuKind::Vectorize:
        for (size_t v = 0; v < in.src.size(); ++v)
          each(w.mask, [&](int l) { reg(w, in.out, int(v))[l] = reg(w, in.src[v])[l]; });
        break;
      case EmuKind::Extract:
        for (size_t v = 0; v < in.lanes.size(); ++v)
          each(w.mask,
               [&](int l) { reg(w, in.out, int(v))[l] = reg(w, in.src[0], int(in.lanes[v]))[l]; });
        break;
      case EmuKind::Cast:
        for (int v = 0; v < count; ++v)
          each(w.mask, [&](int l) {
            reg(w, in.out, v)[l] = eval_cast(in.in, in.dtype, reg(w, in.src[0], v)[l]).value;
          });
        break;
      case EmuKind::Bitcast:
        bitcast(w, in);
        break;
      case EmuKind::Alu:
        alu(w, in);
        break;
    }
    ++w.pc;
  }

  void bitcast(Warp& w, const EmuInstr& in) {
    DType from = in.in, to = in.dtype;
    each(w.mask, [&](int l) {
      std::vector<unsigned char> bytes(size_t(from.itemsize()));
      for (int v = 0; v < from.count(); ++v)
        encode(bytes.data() + v * from.element().itemsize(), from.element(),
               reg(w, in.src[0], v)[l]);
      for (int v = 0; v < to.count(); ++v)
        reg(w, in.out, v)[l] = decode(bytes.data() + v * to.element().itemsize(), to.element());
    });
  }

  // ---- asynchronous barriers ----
  struct NamedBarrier {
    int64_t threads = 0, arrived = 0;
    std::vector<int> warps;
  };

  // bar.sync id, threads: the warp waits until `threads` threads have arrived; the last
  // arrival releases them all (an epoch for the race checks, as a BARRIER is). bar.arrive
  // (a third int 1) counts the warp's threads and goes on.
  void named_barrier(Warp& w, const EmuInstr& in) {
    bool arrive = in.lanes.size() > 2 && in.lanes[2];
    NamedBarrier& nb = named_[size_t(in.lanes[0])];
    int64_t threads = in.lanes[1];
    if (nb.arrived > 0 && nb.threads != threads)
      fault(place(w.pc) + " waits for " + std::to_string(threads) + " threads at named barrier " +
                std::to_string(in.lanes[0]) + ", which others entered expecting " +
                std::to_string(nb.threads) + ",",
            -1, 0, thread_of(0));
    nb.threads = threads;
    nb.arrived += std::popcount(w.exists);
    if (arrive) {
      ++w.pc;
    } else {
      nb.warps.push_back(warp_id_);
      w.waits = Warp::Waits::Named;
    }
    if (nb.arrived < threads) return;
    if (nb.arrived > threads)
      fault(place(w.pc) + " is reached by " + std::to_string(nb.arrived) +
                " threads, more than the " + std::to_string(threads) + " it is for,",
            -1, 0, thread_of(0));
    for (int id : nb.warps) {
      Warp& o = (*warps_)[size_t(id)];
      o.waits = Warp::Waits::Nothing;
      ++o.pc;
    }
    nb = NamedBarrier{};
    ++epoch_;
  }

  std::string mbarrier_text(int buf, int64_t index) const {
    return "the mbarrier in " + k_.buffers[size_t(buf)].name + " at index " + std::to_string(index);
  }
  // The mbarrier lane l addresses, checked: in bounds, initialised, and for a thread other
  // than the one that initialised it, fenced (FENCE mbarrier_init) and synchronised since.
  Mbarrier& mbarrier(Warp& w, const EmuInstr& in, int l) {
    return mbarrier_at(w, in.buf, reg(w, in.idx)[l].i, l);
  }
  Mbarrier& mbarrier_at(Warp& w, int buf, int64_t index, int l) {
    check_access(buf, index, 8, l, false);
    auto it = mbarriers_.find({buf, index});
    if (it == mbarriers_.end())
      fault(place(w.pc) + " uses " + mbarrier_text(buf, index) + " before any MBARRIER_INIT,", -1,
            0, thread_of(l));
    Mbarrier& m = it->second;
    if (m.init_thread != thread_of(l) && (!m.fenced || m.init_epoch == epoch_))
      fault(place(w.pc) + " uses " + mbarrier_text(buf, index) + ", initialised by " +
                thread_text(m.init_thread) +
                (m.fenced ? " with no barrier since," : " with no FENCE mbarrier_init after it,"),
            -1, 0, thread_of(l));
    return m;
  }

  void mbarrier_init(Warp& w, const EmuInstr& in) {
    each(w.mask, [&](int l) {
      int64_t index = reg(w, in.idx)[l].i, count = reg(w, in.src[0])[l].i;
      check_access(in.buf, index, 8, l, true);
      if (count < 1 || count >= (1 << 20))
        fault("MBARRIER_INIT for " + std::to_string(count) +
                  " arrivals (an mbarrier counts 1 to 2^20-1)",
              in.buf, index, thread_of(l));
      Mbarrier m;
      m.count = m.pending = count;
      m.init_thread = thread_of(l);
      m.init_epoch = epoch_;
      mbarriers_[{in.buf, index}] = m;
    });
  }

  // The current phase of `m` completes once its arrivals are in and its transaction bytes
  // counted down to zero: the TMA copies it waited for land, and a new race epoch starts.
  void maybe_complete(std::pair<int, int64_t> key, Mbarrier& m, int thread) {
    if (m.pending > 0 || m.tx > 0) return;
    if (m.tx < 0)
      fail(mbarrier_text(key.first, key.second) + " completed phase " + std::to_string(m.phase) +
           "'s arrivals with " + std::to_string(-m.tx) +
           " more transaction bytes landed than expected (by " + thread_text(thread) + ")");
    for (auto it = tma_.begin(); it != tma_.end();) {
      if (it->mbarrier != key || it->phase != m.phase) {  // not delivered to this phase
        ++it;
        continue;
      }
      SharedShadow& sb = shared_[size_t(it->buf)];
      sb.set_pending(it->offset, int(it->data.size()), -1);
      std::memcpy(sb.bytes().data() + it->offset, it->data.data(), it->data.size());
      sb.async_write(it->offset, int(it->data.size()));
      it = tma_.erase(it);
    }
    ++m.phase;
    m.pending = m.count;
    m.tx = 0;
    ++epoch_;  // what its waiters read after it is ordered after what came before it
  }

  void mbarrier_arrive(Warp& w, const EmuInstr& in) {
    // The lanes arriving on each barrier, counted together: more than its phase has left
    // is an error (an arrival that would count toward the next phase).
    std::map<std::pair<int, int64_t>, std::pair<int64_t, int64_t>> arrivals;  // lanes, bytes
    each(w.mask, [&](int l) {
      mbarrier(w, in, l);
      auto& [lanes, bytes] = arrivals[{in.buf, reg(w, in.idx)[l].i}];
      ++lanes;
      bytes += reg(w, in.src[0])[l].i;
    });
    for (auto& [key, arrival] : arrivals) {
      Mbarrier& m = mbarriers_.at(key);
      if (arrival.first > m.pending)
        fault(place(w.pc) + ": " + std::to_string(arrival.first) + " threads arrive on " +
                  mbarrier_text(key.first, key.second) + ", whose phase " +
                  std::to_string(m.phase) + " has " + std::to_string(m.pending) +
                  " arrivals left (initialised for " + std::to_string(m.count) + "),",
              -1, 0, thread_of(std::countr_zero(w.mask)));
      m.tx += arrival.second;
      m.pending -= arrival.first;
      maybe_complete(key, m, thread_of(std::countr_zero(w.mask)));
    }
  }

  // try_wait.parity: the phase of that parity has completed when the current phase's
  // parity differs.
  bool mbarrier_ready(Warp& w, const EmuInstr& in) {
    bool ready = true;
    each(w.mask, [&](int l) {
      std::pair<int, int64_t> key{in.buf, reg(w, in.idx)[l].i};
      if (!tma_.empty()) deliver(&key);
      const Mbarrier& m = mbarrier(w, in, l);
      int64_t parity = reg(w, in.src[0])[l].i;
      if (parity != 0 && parity != 1)
        fault("MBARRIER_WAIT on parity " + std::to_string(parity) + " (0 or 1)", in.buf,
              reg(w, in.idx)[l].i, thread_of(l));
      ready &= (m.phase & 1) != parity;
    });
    return ready;
  }

  void fence(Warp& w, const EmuInstr& in) {
    switch (EmuFence(in.imm_i)) {
      case EmuFence::MbarrierInit:
        each(w.mask, [&](int l) {
          for (auto& [key, m] : mbarriers_)
            if (m.init_thread == thread_of(l)) m.fenced = true;
        });
        return;
      case EmuFence::ProxyAsync:
        each(w.mask, [&](int l) { ++proxy_fences_[size_t(thread_of(l))]; });
        return;
      case EmuFence::Wgmma:
        whole_warp(w, "FENCE wgmma");
        w.wgmma_fence = w.clock;
        return;
    }
  }

  // ---- TMA and bulk copies ----
  // A TMA load in flight: its bytes count toward its mbarrier's phase only once delivered
  // (when a thread waits on that barrier, or when nothing else can move), and land when
  // that phase completes, so a read of the tile that waits for nothing is caught.
  struct TmaCopy {
    int buf;
    int64_t offset;
    std::vector<unsigned char> data;
    std::pair<int, int64_t> mbarrier;
    int64_t phase = -1;  // the phase it was delivered to (-1: not yet)
    int thread;
  };

  // Delivers the TMA copies in flight to `key` (every barrier when null); true if any.
  bool deliver(const std::pair<int, int64_t>* key) {
    bool any = false;
    for (size_t i = 0; i < tma_.size(); ++i) {
      TmaCopy& c = tma_[i];
      if (c.phase >= 0 || (key && c.mbarrier != *key)) continue;
      Mbarrier& m = mbarriers_.at(c.mbarrier);
      c.phase = m.phase;
      m.tx -= int64_t(c.data.size());
      any = true;
      std::pair<int, int64_t> at = c.mbarrier;
      int thread = c.thread;
      maybe_complete(at, m, thread);  // may erase copies: start over
      i = size_t(-1);
    }
    return any;
  }

  // Calls f(element's byte offset in the box, its byte offset in the tensor or -1 when it
  // lies outside) for every element of the box at `coords`.
  template <class F>
  static void each_box_element(const TensorMap& m, const std::vector<int64_t>& coords, F f) {
    size_t rank = m.dims.size();
    int64_t item = m.dtype.itemsize(), count = 1;
    for (int64_t b : m.box) count *= b;
    for (int64_t e = 0; e < count; ++e) {
      int64_t rest = e, global = 0;
      bool inside = true;
      for (size_t d = 0; d < rank; ++d) {
        int64_t c = coords[d] + rest % m.box[d];
        rest /= m.box[d];
        inside &= c >= 0 && c < m.dims[d];
        global += c * (d == 0 ? item : m.strides[d - 1]);
      }
      f(e * item, inside ? global : -1);
    }
  }

  // The shared byte offset (in buffer b, from `start`) of byte `logical` of a dense box:
  // the tensor map's swizzle is applied to the address, as the hardware does.
  int64_t swizzled(int b, int64_t start, int64_t logical, Swizzle s) const {
    int64_t base = k_.buffers[size_t(b)].base;
    return swizzle_address(s, base + start + logical) - base;
  }

  // The tile of a TMA op: its byte offset, checked against the allocation (bounds, 128-byte
  // alignment, the map's swizzle).
  int64_t tma_tile(Warp& w, const EmuInstr& in, int l, int64_t bytes, Swizzle s) {
    const EmuBuffer& b = k_.buffers[size_t(in.buf)];
    int64_t index = reg(w, in.idx)[l].i, off = index * b.elem.itemsize();
    if (b.swizzle != s)
      fault(place(w.pc) + " moves a tensor map's box swizzled " + std::string(swizzle_name(s)) +
                " through " + b.name + ", laid out with " + std::string(swizzle_name(b.swizzle)) +
                ",",
            in.buf, index, thread_of(l));
    if (off < 0 || off + bytes > b.size * b.elem.itemsize())
      fault(place(w.pc) + "'s box of " + std::to_string(bytes) + " bytes does not fit", in.buf,
            index, thread_of(l));
    if ((b.base + off) % 128)
      fault(place(w.pc) + "'s tile is not 128-byte aligned", in.buf, index, thread_of(l));
    return off;
  }

  // The coordinates of lane l's box; the innermost must be a multiple of 16 bytes (the
  // H100 raises an illegal instruction otherwise).
  std::vector<int64_t> coords(Warp& w, const EmuInstr& in, int l) {
    std::vector<int64_t> c;
    for (int s : in.src) c.push_back(reg(w, s)[l].i);
    int64_t bytes = c[0] * in.dtype.itemsize();
    if (bytes % 16)
      fault(place(w.pc) + "'s innermost coordinate " + std::to_string(c[0]) + " is " +
                std::to_string(bytes) + " bytes: the H100 takes multiples of 16,",
            -1, 0, thread_of(l));
    return c;
  }

  // cp.async.bulk.tensor to shared memory: the box is read now (zeros outside the tensor)
  // and lands when the mbarrier phase it was issued in completes; its bytes count down the
  // phase's transaction bytes.
  void tma_load(Warp& w, const EmuInstr& in) {
    each(w.mask, [&](int l) {
      const TensorMap& m = std::get<TensorMap>(args_[size_t(in.imm_i)]);
      Swizzle s = Swizzle(in.lanes[0]);
      int64_t bytes = m.dtype.itemsize();
      for (int64_t b : m.box) bytes *= b;
      int64_t off = tma_tile(w, in, l, bytes, s);
      int t = thread_of(l);
      if (auto f = shared_[size_t(in.buf)].access(off, int(bytes), t, epoch_, Access::Write)) {
        std::string other = f->other >= 0 ? " " + thread_text(f->other) : " several threads";
        fault("TMA copy into shared memory: " + f->what + (f->other != -1 ? other + f->then : ""),
              in.buf, off / k_.buffers[size_t(in.buf)].elem.itemsize(), t);
      }
      std::vector<unsigned char> data(size_t(bytes), 0);  // at the tile's swizzled places
      const auto* src = static_cast<const unsigned char*>(m.buffer.ptr);
      each_box_element(m, coords(w, in, l), [&](int64_t logical, int64_t global) {
        if (global >= 0)
          std::memcpy(data.data() + (swizzled(in.buf, off, logical, s) - off), src + global,
                      size_t(m.dtype.itemsize()));
      });
      int64_t mindex = reg(w, in.src_idx)[l].i;
      Mbarrier& mb = mbarrier_at(w, in.src_buf, mindex, l);
      shared_[size_t(in.buf)].set_pending(off, int(bytes), t, true);
      (void)mb;  // checked: initialised and published
      tma_.push_back({in.buf, off, std::move(data), {in.src_buf, mindex}, -1, t});
    });
  }

  // The shared bytes a bulk copy reads must have no ordinary store that its writer has not
  // fenced with FENCE proxy_async.
  void async_read(Warp& w, int buf, int64_t off, int n, int l, int32_t reader) {
    int64_t index = off / k_.buffers[size_t(buf)].elem.itemsize();
    track(w, buf, index, off, n, l, Access::Read);
    shared_[size_t(buf)].async_read(off, n, reader);
    if (reader > 0) bulk_[reader - 1].open.push_back({buf, off, n});
    if (auto t = shared_[size_t(buf)].unfenced(off, n, proxy_fences_))
      fault(place(w.pc) + " reads through the async proxy what " + thread_text(*t) +
                " wrote with ordinary stores and no FENCE proxy_async since",
            buf, index, thread_of(l));
  }

  // A thread's bulk copies: the shared bytes each group still reads, oldest first.
  struct BulkReads {
    std::vector<SharedRange> open;                 // not committed yet
    std::vector<std::vector<SharedRange>> groups;  // committed, oldest first
  };

  // cp.async.bulk.wait_group.read N: the thread's committed groups but the youngest N
  // stop reading shared memory.
  void bulk_wait(Warp& w, const EmuInstr& in) {
    each(w.mask, [&](int l) {
      BulkReads& r = bulk_[thread_of(l)];
      while (int64_t(r.groups.size()) > in.imm_i) {
        for (const SharedRange& s : r.groups.front())
          shared_[size_t(s.buf)].end_reads(thread_of(l) + 1, s.offset, s.n);
        r.groups.erase(r.groups.begin());
      }
    });
  }

  // cp.async.bulk.tensor to global memory: the elements of the box inside the tensor are
  // written (at the issue in the emulator).
  void tma_store(Warp& w, const EmuInstr& in) {
    each(w.mask, [&](int l) {
      const TensorMap& m = std::get<TensorMap>(args_[size_t(in.imm_i)]);
      Swizzle s = Swizzle(in.lanes[0]);
      int64_t item = m.dtype.itemsize(), bytes = item;
      for (int64_t b : m.box) bytes *= b;
      int64_t off = tma_tile(w, in, l, bytes, s);
      std::vector<int64_t> at = coords(w, in, l);
      for (size_t d = 0; d < at.size(); ++d)
        if (at[d] < 0)  // the H100 raises an illegal instruction
          fault(place(w.pc) + " stores at coordinate " + std::to_string(at[d]) + " in dimension " +
                    std::to_string(d) +
                    ": a TMA store's box may run past the tensor's end but not start before it,",
                -1, 0, thread_of(l));
      auto* dst = static_cast<unsigned char*>(m.buffer.ptr);
      each_box_element(m, at, [&](int64_t logical, int64_t global) {
        if (global < 0) return;
        int64_t at = swizzled(in.buf, off, logical, s);
        async_read(w, in.buf, at, int(item), l, thread_of(l) + 1);
        std::memcpy(dst + global, shared_[size_t(in.buf)].bytes().data() + at, size_t(item));
      });
    });
  }

  // cp.reduce.async.bulk .add.f32: global[i] += shared[i] for `bytes` bytes of float32.
  void bulk_reduce_add(Warp& w, const EmuInstr& in) {
    each(w.mask, [&](int l) {
      int64_t dst = reg(w, in.idx)[l].i, src = reg(w, in.src_idx)[l].i;
      int64_t soff = src * 4;
      for (int64_t i = 0; i < in.imm_i / 4; ++i) {
        int64_t doff = check_access(in.buf, dst + i, 4, l, true);
        check_access(in.src_buf, src + i, 4, l, false);
        async_read(w, in.src_buf, soff + 4 * i, 4, l, thread_of(l) + 1);
        unsigned char* g = memory(w, in.buf, doff, l);
        Scalar sum;
        sum.f = double(float(
            decode(g, dtypes::float32).f +
            decode(shared_[size_t(in.src_buf)].bytes().data() + soff + 4 * i, dtypes::float32).f));
        encode(g, dtypes::float32, sum);
      }
    });
  }

  // ---- warpgroup MMA ----
  // The shared address of lane l's INDEX (the buffer's base plus the byte offset).
  void matrix_desc(Warp& w, const EmuInstr& in) {
    const EmuBuffer& b = k_.buffers[size_t(in.buf)];
    uint64_t fixed = descriptor_fields(Swizzle(in.lanes[0]), in.lanes[2], in.lanes[3]);
    each(w.mask, [&](int l) {
      int64_t index = reg(w, in.idx)[l].i;
      int64_t off = check_access(in.buf, index, 2, l, false);
      uint64_t address = uint64_t(b.base + off);
      reg(w, in.out)[l].i = int64_t(((address & 0x3FFFF) >> 4) | fixed);
    });
  }

  // Element (mn, k) of the 16-bit matrix a descriptor points to, read from shared memory as
  // the PTX canonical layouts place it (K-major: rows of the swizzle's width, 8-row groups
  // SBO apart; MN-major: MN contiguous, 8-deep K groups SBO apart; with no swizzle, 8x16-byte
  // core matrices LBO and SBO apart), the swizzle XOR applied to the address. The
  // allocation it lands in must be laid out with the descriptor's swizzle.
  double desc_element(Warp& w, uint64_t d, bool mn_major, int mn, int k, const char* which,
                      DType elem, std::vector<SharedRange>& reads) {
    int64_t start = int64_t(d & 0x3FFF) << 4, lbo = int64_t((d >> 16) & 0x3FFF) << 4,
            sbo = int64_t((d >> 32) & 0x3FFF) << 4;
    Swizzle mode = descriptor_swizzle(d);
    int64_t width = swizzle_width(mode), off;
    if (!mn_major)
      off = mode == Swizzle::None ? mn % 8 * 16 + mn / 8 * sbo + k % 8 * 2 + k / 8 * lbo
                                  : mn % 8 * width + mn / 8 * sbo + k * 2;
    else
      off = mode == Swizzle::None
                ? mn % 8 * 2 + mn / 8 * sbo + k % 8 * 16 + k / 8 * lbo
                : mn % (width / 2) * 2 + mn / (width / 2) * lbo + k % 8 * width + k / 8 * sbo;
    int64_t address = start + off;
    address = swizzle_address(mode, address);
    int b = -1;
    for (size_t i = 0; i < k_.buffers.size(); ++i) {
      const EmuBuffer& buf = k_.buffers[i];
      if (buf.kind == EmuBufKind::Shared && start >= buf.base &&
          start < buf.base + buf.size * buf.elem.itemsize())
        b = int(i);
    }
    int lane = std::countr_zero(w.mask);
    if (b < 0)
      fault(place(w.pc) + "'s " + which + " descriptor points at shared address " +
                std::to_string(start) + ", which no shared allocation holds,",
            -1, 0, thread_of(lane));
    const EmuBuffer& buf = k_.buffers[size_t(b)];
    if (buf.swizzle != mode)
      fault(place(w.pc) + "'s " + which + " descriptor names swizzle " +
                std::string(swizzle_name(mode)) + " but " + buf.name + " is laid out with " +
                std::string(swizzle_name(buf.swizzle)) + ",",
            -1, 0, thread_of(lane));
    int64_t offset = address - buf.base, index = offset / buf.elem.itemsize();
    if (offset < 0 || offset + 2 > buf.size * buf.elem.itemsize())
      fault(place(w.pc) + " reads its " + which + " operand (row " + std::to_string(mn) + ", k " +
                std::to_string(k) + ") past the end of its allocation",
            b, index, thread_of(lane));
    track(w, b, index, offset, 2, lane, Access::Read);
    shared_[size_t(b)].async_read(offset, 2, -(thread_of(0) + 1));  // until its WGMMA_WAIT
    reads.push_back({b, offset, 2});
    if (auto t = shared_[size_t(b)].unfenced(offset, 2, proxy_fences_))
      fault(place(w.pc) + " reads through the async proxy what " + thread_text(*t) +
                " wrote with ordinary stores and no FENCE proxy_async since",
            b, index, thread_of(lane));
    return decode(shared_[size_t(b)].bytes().data() + offset, elem).f;
  }

  // A warp's part of a warpgroup MMA: rows 16q..16q+15 of D for warp q of its warpgroup,
  // computed at the issue in double and rounded to float32; the result is in flight until
  // a WGMMA_WAIT lets it land.
  void wgmma(Warp& w, const EmuInstr& in) {
    whole_warp(w, "WGMMA");
    int q = warp_id_ % 4;
    std::vector<int> regs = {in.src[2]};
    if (!in.mma_a_shared) regs.push_back(in.src[0]);
    for (int s : regs)
      if (w.written[size_t(s)] > w.wgmma_fence)
        fault(place(w.pc) +
                  " reads registers written by ordinary instructions with no FENCE "
                  "wgmma between,",
              -1, 0, thread_of(0));
    const EmuFragment& fc = in.mma_c;
    int n = fc.cols, kk = in.mma_k;
    DType elem = in.in;
    std::vector<double> A(size_t(16 * kk)), B(size_t(kk * n)), C(size_t(16 * n));
    std::vector<SharedRange> reads;  // the operands' shared bytes, read until the wait
    auto descriptor = [&](int s, const char* which) {
      int64_t d = reg(w, s)[0].i;
      each(w.mask, [&](int l) {
        if (reg(w, s)[l].i != d)
          fault(place(w.pc) + "'s " + which + " descriptor differs between lanes 0 and " +
                    std::to_string(l) + ",",
                -1, 0, thread_of(l));
      });
      return uint64_t(d);
    };
    if (in.mma_a_shared) {
      uint64_t da = descriptor(in.src[0], "A");
      for (int r = 0; r < 16; ++r)
        for (int c = 0; c < kk; ++c)
          A[size_t(r * kk + c)] = desc_element(w, da, in.mma_a_mn, 16 * q + r, c, "A", elem, reads);
    } else {
      const EmuFragment& fa = in.mma_a;
      for (int l = 0; l < kWarp; ++l)
        for (int i = 0; i < fa.count; ++i) {
          int at = fa.at[size_t((32 * q + l) * fa.count + i)];
          A[size_t((at / fa.cols - 16 * q) * kk + at % fa.cols)] = reg(w, in.src[0], i)[l].f;
        }
    }
    uint64_t db = descriptor(in.src[1], "B");
    for (int c = 0; c < kk; ++c)
      for (int j = 0; j < n; ++j)
        B[size_t(c * n + j)] = desc_element(w, db, in.mma_b_mn, j, c, "B", elem, reads);
    for (int l = 0; l < kWarp; ++l)
      for (int i = 0; i < fc.count; ++i) {
        int at = fc.at[size_t((32 * q + l) * fc.count + i)];
        C[size_t((at / n - 16 * q) * n + at % n)] = reg(w, in.src[2], i)[l].f;
      }
    for (int l = 0; l < kWarp; ++l)
      for (int i = 0; i < fc.count; ++i) {
        int at = fc.at[size_t((32 * q + l) * fc.count + i)], r = at / n - 16 * q, c = at % n;
        double acc = C[size_t(r * n + c)];
        for (int x = 0; x < kk; ++x) acc += A[size_t(r * kk + x)] * B[size_t(x * n + c)];
        reg(w, in.out, i)[l].f = double(float(acc));
      }
    w.wgmmas.push_back({in.out, fc.count, -1, w.pc, std::move(reads)});
  }

  // wgmma.wait_group N: the warp's oldest committed groups land until at most N are in
  // flight; the accumulator it returns must have landed.
  void wgmma_wait(Warp& w, const EmuInstr& in) {
    whole_warp(w, "WGMMA_WAIT");
    std::vector<int64_t> groups;
    for (const Warp::InFlight& f : w.wgmmas)
      if (f.group >= 0) groups.push_back(f.group);
    std::sort(groups.begin(), groups.end());
    groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
    if (int64_t(groups.size()) > in.imm_i) {
      int64_t last = groups[groups.size() - size_t(in.imm_i) - 1];
      std::erase_if(w.wgmmas, [&](const Warp::InFlight& f) {
        bool landed = f.group >= 0 && f.group <= last;
        if (landed)  // its operands are read no more
          for (const SharedRange& r : f.reads)
            shared_[size_t(r.buf)].end_reads(-(thread_of(0) + 1), r.offset, r.n);
        return landed;
      });
    }
    for (const Warp::InFlight& f : w.wgmmas)
      if (f.slot == in.src[0])
        fault(place(w.pc) + " (N = " + std::to_string(in.imm_i) + ") leaves " + place(f.pc) +
                  (f.group < 0 ? ", which is not committed," : " in flight,") +
                  " whose accumulator it returns",
              -1, 0, thread_of(0));
    for (int v = 0; v < in.dtype.count(); ++v)
      each(w.mask, [&](int l) { reg(w, in.out, v)[l] = reg(w, in.src[0], v)[l]; });
  }

  // An instruction may not read a WGMMA's result before a WGMMA_WAIT lets it land (a WGMMA
  // may take an in-flight accumulator as its own: the hardware chains them).
  void check_settled(Warp& w, const EmuInstr& in) {
    if (in.kind == EmuKind::WgmmaWait) return;
    auto check = [&](int s) {
      if (s < 0) return;
      for (const Warp::InFlight& f : w.wgmmas)
        if (s >= f.slot && s < f.slot + f.count)
          fault(place(w.pc) + " reads the result of " + place(f.pc) +
                    " before a WGMMA_WAIT lets it land,",
                -1, 0, thread_of(std::countr_zero(w.mask | 1u)));
    };
    for (size_t i = 0; i < in.src.size(); ++i)
      if (!(in.kind == EmuKind::Wgmma && i == 2)) check(in.src[i]);
    for (int s : {in.value, in.alt, in.gate, in.idx, in.src_idx}) check(s);
  }

  const EmuKernel& k_;
  LaunchDims grid_, block_, bid_;
  std::span<const KernelArg> args_;
  std::vector<SharedShadow> shared_;
  std::vector<PendingCopy> pending_;
  uint32_t epoch_ = 1;
  int64_t next_token_ = 1;
  int warp_id_ = 0;
  uint64_t issued_ = 0;
  uint64_t advanced_ = 0;  // instructions that completed (a wait that must retry does not)
  EmuStats stats_;
  std::vector<Warp>* warps_ = nullptr;
  std::map<std::pair<int, int64_t>, Mbarrier> mbarriers_;  // by (buffer, index)
  std::array<NamedBarrier, 16> named_;
  std::vector<uint32_t> proxy_fences_;  // per thread: the FENCE proxy_async it ran
  std::vector<TmaCopy> tma_;            // TMA loads waiting for their mbarrier phase
  std::map<int, BulkReads> bulk_;       // by thread
  int64_t wgmma_groups_ = 0;
  std::array<int64_t, 32> lane_offset_;  // a shared access's byte offset per lane (-1: off)
};

}  // namespace

void emu_run(const EmuKernel& k, LaunchDims grid, LaunchDims block, std::span<const KernelArg> args,
             EmuStats* stats) {
  EmuStats s = Runner(k, grid, block, args).run();
  if (!stats) return;
  stats->warp_instructions += s.warp_instructions;
  stats->shared_accesses += s.shared_accesses;
  stats->shared_wavefronts += s.shared_wavefronts;
  stats->bank_conflicts += s.bank_conflicts;
}

}  // namespace kitten
