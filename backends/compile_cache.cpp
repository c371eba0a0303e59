#include "backends/compile_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "dsl/hash.h"

namespace kitten {

namespace {

constexpr char kMagic[8] = {'K', 'T', 'C', 'A', 'C', 'H', 'E', '1'};
constexpr size_t kHeaderBytes = sizeof kMagic + 32 + 8;  // magic, checksum, payload length
// No compiled kernel comes near this; a larger file at an entry's path is not an entry.
constexpr size_t kMaxEntryBytes = size_t(1) << 30;

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

// The bytes of the regular file at `path`, or nullopt for anything else. A FIFO would block
// the open or the read forever and a device such as /dev/zero never ends, so the open does
// not block and follows no symlink, and only a regular file of bounded size is read.
std::optional<std::string> read_regular_file(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::optional<std::string> result;
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && size_t(st.st_size) <= kMaxEntryBytes) {
    std::string data(size_t(st.st_size), '\0');
    size_t got = 0;
    while (got < data.size()) {
      ssize_t n = read(fd, data.data() + got, data.size() - got);
      if (n > 0)
        got += size_t(n);
      else if (n == 0 || errno != EINTR)
        break;
    }
    if (got == data.size()) result = std::move(data);
  }
  close(fd);
  return result;
}

bool write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n > 0)
      done += size_t(n);
    else if (n == 0 || errno != EINTR)
      return false;
  }
  return true;
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
  std::optional<std::string> data = read_regular_file(path(key));
  if (!data || data->size() < kHeaderBytes || std::memcmp(data->data(), kMagic, sizeof kMagic) != 0)
    return std::nullopt;
  uint64_t len;
  std::memcpy(&len, data->data() + sizeof kMagic + 32, 8);
  if (len != data->size() - kHeaderBytes) return std::nullopt;
  std::string payload = data->substr(kHeaderBytes);
  if (data->compare(sizeof kMagic, 32, hex(hash128(payload))) != 0) return std::nullopt;
  return payload;
}

// The entry is written to a fresh file (O_EXCL, no symlink followed) and renamed over the
// entry's path, which replaces whatever is there (a FIFO, a symlink) without opening it.
void CompileCache::put(const std::string& key, const std::string& binary) const {
  if (dir_.empty() || binary.size() > kMaxEntryBytes - kHeaderBytes) return;
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return;  // an unwritable cache only costs a recompile
  static std::atomic<uint64_t> counter{0};
  std::string tmp =
      path(key) + ".tmp." + std::to_string(getpid()) + "." + std::to_string(counter++);
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) return;
  uint64_t len = binary.size();
  std::string entry(kMagic, sizeof kMagic);
  entry += hex(hash128(binary));
  entry.append(reinterpret_cast<const char*>(&len), 8);
  entry += binary;
  bool written = write_all(fd, entry);
  if (close(fd) != 0) written = false;
  if (written) std::filesystem::rename(tmp, path(key), ec);
  if (!written || ec) std::filesystem::remove(tmp, ec);
}

}  // namespace kitten
