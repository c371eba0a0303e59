// The on-disk cache of compiled binaries, keyed by (source, target, compiler version).
// Each entry carries a checksum: a corrupt or truncated entry is rebuilt, never loaded.
// Entries are written to a temporary file and renamed, so no reader sees half a file.
// Only a regular file is read: anything else at an entry's path (a FIFO, a symlink, a
// device) is a miss, and the next store replaces it.
#pragma once

#include <optional>
#include <string>

namespace kitten {

class CompileCache {
 public:
  // dir empty: no caching. Default: $KITTEN_CACHE_DIR, else $XDG_CACHE_HOME/kitten, else
  // ~/.cache/kitten; KITTEN_CACHE_DIR=off disables it.
  explicit CompileCache(std::string dir);
  static CompileCache from_environment();

  static std::string key(const std::string& source, const std::string& target,
                         const std::string& version);
  std::optional<std::string> get(const std::string& key) const;
  void put(const std::string& key, const std::string& binary) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string path(const std::string& key) const;
  std::string dir_;
};

}  // namespace kitten
