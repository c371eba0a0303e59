#include "backends/compile_cache.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dsl/hash.h"

namespace kitten {

namespace {

constexpr char kMagic[8] = {'K', 'T', 'C', 'A', 'C', 'H', 'E', '1'};

// 128 bits of stable hash over a string, as two 64-bit lanes.
std::pair<uint64_t, uint64_t> hash128(const std::string& s) {
  uint64_t lo = fnv1a(s), hi = fnv1a(s, 0x84222325cbf29ce4ull);
  return {fmix64(lo ^ hi * 31), fmix64(hi ^ lo)};
}

std::string hex(std::pair<uint64_t, uint64_t> h) {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", (unsigned long long)h.second,
                (unsigned long long)h.first);
  return buf;
}

}  // namespace

CompileCache::CompileCache(std::string dir) : dir_(std::move(dir)) {}

CompileCache CompileCache::from_environment() {
  if (const char* d = std::getenv("KITTEN_CACHE_DIR"); d && *d)
    return CompileCache(std::string(d) == "off" ? "" : d);
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return CompileCache(std::string(x) + "/kitten");
  if (const char* h = std::getenv("HOME"); h && *h)
    return CompileCache(std::string(h) + "/.cache/kitten");
  return CompileCache("");
}

std::string CompileCache::key(const std::string& source, const std::string& target,
                              const std::string& version) {
  std::string all = source;
  all += '\0';
  all += target;
  all += '\0';
  all += version;
  return hex(hash128(all));
}

std::string CompileCache::path(const std::string& key) const { return dir_ + "/" + key + ".bin"; }

std::optional<std::string> CompileCache::get(const std::string& key) const {
  if (dir_.empty()) return std::nullopt;
  std::ifstream in(path(key), std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  std::string data = ss.str();
  constexpr size_t header = sizeof kMagic + 32 + 8;
  if (data.size() < header || std::memcmp(data.data(), kMagic, sizeof kMagic) != 0)
    return std::nullopt;
  uint64_t len;
  std::memcpy(&len, data.data() + sizeof kMagic + 32, 8);
  if (len != data.size() - header) return std::nullopt;
  std::string payload = data.substr(header);
  if (data.compare(sizeof kMagic, 32, hex(hash128(payload))) != 0) return std::nullopt;
  return payload;
}

void CompileCache::put(const std::string& key, const std::string& binary) const {
  if (dir_.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return;  // an unwritable cache only costs a recompile
  static std::atomic<uint64_t> counter{0};
  std::string tmp =
      path(key) + ".tmp." + std::to_string(getpid()) + "." + std::to_string(counter++);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    uint64_t len = binary.size();
    out.write(kMagic, sizeof kMagic);
    out << hex(hash128(binary));
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << binary;
    if (!out) {
      std::filesystem::remove(tmp, ec);
      return;
    }
  }
  std::filesystem::rename(tmp, path(key), ec);
  if (ec) std::filesystem::remove(tmp, ec);
}

}  // namespace kitten
