#include "tools/cli.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "backends/registry.h"

namespace kitten {

std::string escape_controls(const std::string& msg, bool keep_lines) {
  std::string out;
  for (unsigned char c : msg) {
    if ((c >= 0x20 && c != 0x7f) || (keep_lines && (c == '\n' || c == '\t')))
      out += char(c);
    else if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\r')
      out += "\\r";
    else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "kitten: %s\nrun `kitten --help` for usage\n",
               escape_controls(msg, false).c_str());
  return 2;
}

int work_failed(const std::string& cmd, const std::string& msg) {
  std::fprintf(stderr, "kitten %s: %s\n", cmd.c_str(), escape_controls(msg, true).c_str());
  return 1;
}

int open_named_device(const std::string& cmd, const std::string& name,
                      std::unique_ptr<Device>& dev) {
  try {
    dev = open_device(name);
  } catch (const BackendError& e) {
    std::vector<std::string> known = device_names();
    if (std::find(known.begin(), known.end(), name) != known.end())
      return work_failed(cmd, name + ": " + e.what());
    return usage_error(cmd + ": " + e.what());
  }
  return -1;
}

std::vector<int64_t> parse_shape(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  for (std::string part; std::getline(in, part, ',');) {
    char* end = nullptr;
    long long v = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end || v < 1 || v > (1ll << 20)) return {};
    out.push_back(v);
  }
  return out;
}

std::string self_path() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, size_t(n)) : "kitten";
}

}  // namespace kitten
