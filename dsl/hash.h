// Stable hashing: the same bytes give the same hash in every run, build and compiler, so
// hashes can key on-disk caches. Never feed these addresses or enum numbers.
#pragma once

#include <cstdint>
#include <string_view>

namespace kitten {

constexpr uint64_t fnv1a(std::string_view s, uint64_t h = 0xcbf29ce484222325ull) {
  for (char c : s) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  return h;
}

// MurmurHash3's 64-bit finaliser: every input bit affects every output bit.
constexpr uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

constexpr uint64_t hash_combine(uint64_t h, uint64_t v) {
  return fmix64(h ^ (v * 0x87c37b91114253d5ull + 0x9e3779b97f4a7c15ull));
}

}  // namespace kitten
