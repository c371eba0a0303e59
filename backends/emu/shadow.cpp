#include "backends/emu/shadow.h"

namespace kitten {

void SharedShadow::reset(size_t n) {
  bytes_.assign(n, 0);
  init_.assign(n, 0);
  writer_.assign(n, -1);
  reader_.assign(n, -1);
  atomic_.assign(n, -1);
  w_epoch_.assign(n, 0);
  r_epoch_.assign(n, 0);
  a_epoch_.assign(n, 0);
  pending_.assign(n, 0);
  generic_.assign(n, 0);
  generic_fences_.assign(n, 0);
  async_reader_.assign(n, 0);
}

void SharedShadow::async_read(int64_t offset, int n, int32_t reader) {
  for (int64_t i = offset; i < offset + n; ++i) async_reader_[size_t(i)] = reader;
}

void SharedShadow::end_reads(int32_t reader, int64_t offset, int n) {
  size_t from = offset < 0 ? 0 : size_t(offset),
         to = offset < 0 ? async_reader_.size() : size_t(offset + n);
  for (size_t i = from; i < to; ++i)
    if (async_reader_[i] == reader) async_reader_[i] = 0;
}

void SharedShadow::generic_write(int64_t offset, int n, int thread, uint32_t fences) {
  for (int64_t i = offset; i < offset + n; ++i)
    generic_[size_t(i)] = thread + 1, generic_fences_[size_t(i)] = fences;
}

void SharedShadow::async_write(int64_t offset, int n) {
  for (int64_t i = offset; i < offset + n; ++i) generic_[size_t(i)] = 0;
}

std::optional<int> SharedShadow::unfenced(int64_t offset, int n,
                                          const std::vector<uint32_t>& fences) const {
  for (int64_t i = offset; i < offset + n; ++i)
    if (int32_t t = generic_[size_t(i)]; t && fences[size_t(t - 1)] == generic_fences_[size_t(i)])
      return t - 1;
  return std::nullopt;
}

void SharedShadow::set_pending(int64_t offset, int n, int thread, bool tma) {
  int32_t mark = thread < 0 ? 0 : tma ? -(thread + 1) : thread + 1;
  for (int64_t i = offset; i < offset + n; ++i) pending_[size_t(i)] = mark;
}

std::optional<ShadowFault> SharedShadow::access(int64_t offset, int n, int t, uint32_t epoch,
                                                Access a) {
  auto other = [t](int32_t who) { return who != -1 && who != t; };
  for (size_t i = size_t(offset); i < size_t(offset + n); ++i) {
    bool wrote = w_epoch_[i] == epoch && other(writer_[i]);
    bool read = r_epoch_[i] == epoch && other(reader_[i]);
    bool atomic = a_epoch_[i] == epoch && other(atomic_[i]);
    auto who = [](int32_t id) { return id; };
    if (a != Access::Read && async_reader_[i] > 0)
      return ShadowFault{"write to shared memory a bulk copy (TMA store or reduction) by",
                         async_reader_[i] - 1, " still reads (before its BULK_WAIT),"};
    if (a != Access::Read && async_reader_[i] < 0)
      return ShadowFault{"write to shared memory a WGMMA of the warp of", -async_reader_[i] - 1,
                         " still reads (before its WGMMA_WAIT),"};
    if (pending_[i] < 0)
      return ShadowFault{std::string(a == Access::Read ? "read of" : "write to") +
                             " a TMA copy's destination before its mbarrier phase completed",
                         -1};
    if (pending_[i])
      return ShadowFault{a == Access::Read ? "read of an async copy's destination before its WAIT"
                                           : "write to an async copy's destination before its WAIT",
                         -1};
    if (a != Access::Write && !init_[i])
      return ShadowFault{"read of shared memory never written", -1};
    const char* verb = a == Access::Read ? "a read" : a == Access::Write ? "a write" : "an atomic";
    if (wrote)
      return ShadowFault{std::string("shared memory race: ") + verb + " after a write by",
                         who(writer_[i])};
    if (a != Access::Read && read)
      return ShadowFault{std::string("shared memory race: ") + verb + " after a read by",
                         who(reader_[i])};
    if (a != Access::Atomic && atomic)
      return ShadowFault{std::string("shared memory race: ") + verb + " after an atomic by",
                         who(atomic_[i])};
    if (a == Access::Write) {
      writer_[i] = t, w_epoch_[i] = epoch, init_[i] = 1;
    } else if (a == Access::Read) {
      if (r_epoch_[i] != epoch)
        reader_[i] = t, r_epoch_[i] = epoch;
      else if (reader_[i] != t)
        reader_[i] = -2;
    } else {
      if (a_epoch_[i] != epoch)
        atomic_[i] = t, a_epoch_[i] = epoch;
      else if (atomic_[i] != t)
        atomic_[i] = -2;
    }
  }
  return std::nullopt;
}

}  // namespace kitten
