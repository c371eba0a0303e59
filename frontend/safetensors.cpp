#include "frontend/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <utility>

#include "frontend/json.h"

namespace kitten {
namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the reference implementation's limit

constexpr std::pair<std::string_view, DType> kDTypes[] = {
    {"F64", dtypes::float64},        {"F32", dtypes::float32},
    {"F16", dtypes::float16},        {"BF16", dtypes::bfloat16},
    {"I64", dtypes::int64},          {"I32", dtypes::int32},
    {"I16", dtypes::int16},          {"I8", dtypes::int8},
    {"U64", dtypes::uint64},         {"U32", dtypes::uint32},
    {"U16", dtypes::uint16},         {"U8", dtypes::uint8},
    {"BOOL", dtypes::bool_},         {"F8_E4M3", dtypes::float8_e4m3},
    {"F8_E5M2", dtypes::float8_e5m2}};

std::optional<DType> dtype_of(std::string_view name) {
  for (auto [n, d] : kDTypes)
    if (n == name) return d;
  return std::nullopt;
}

std::string_view name_of(DType dtype) {
  for (auto [n, d] : kDTypes)
    if (d == dtype) return n;
  return {};
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw SafeTensorsError(path + ": " + what);
}

std::string errno_text() { return std::strerror(errno); }

std::string list(std::span<const int64_t> xs) {
  std::string s = "[";
  for (size_t i = 0; i < xs.size(); ++i) s += (i ? ", " : "") + std::to_string(xs[i]);
  return s + "]";
}

// The bytes of a tensor of `shape` (dims already checked non-negative), or nullopt when
// the count overflows int64.
std::optional<int64_t> byte_size(std::span<const int64_t> shape, DType dtype) {
  int64_t n = dtype.itemsize();
  for (int64_t d : shape) {
    if (d != 0 && n > INT64_MAX / d) return std::nullopt;
    n *= d;
  }
  return n;
}

// The checks a shape gets on both sides: no negative dimension, a representable size.
int64_t checked_bytes(const std::string& path, const std::string& where,
                      std::span<const int64_t> shape, DType dtype) {
  if (std::any_of(shape.begin(), shape.end(), [](int64_t d) { return d < 0; }))
    fail(path, where + "shape " + list(shape) + " has a negative dimension");
  std::optional<int64_t> bytes = byte_size(shape, dtype);
  if (!bytes)
    fail(path, where + "shape " + list(shape) + " of " + std::string(name_of(dtype)) +
                   " has a byte size beyond int64");
  return *bytes;
}

struct Fd {  // closes on scope exit
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// An array of int64 integers under `key` of a tensor's entry.
std::vector<int64_t> int_list(const std::string& path, const std::string& where, const JsonValue& v,
                              std::string_view key) {
  std::vector<int64_t> out;
  if (v.is_array())
    for (const JsonValue& x : v.as_array()) {
      if (!x.is_int()) break;
      out.push_back(x.as_int());
    }
  if (!v.is_array() || out.size() != v.as_array().size())
    fail(path, where + "\"" + std::string(key) + "\" must be an array of integers in int64");
  return out;
}

SafeTensor read_tensor(const std::string& path, const std::string& name, const JsonValue& entry,
                       std::span<const std::byte> buffer) {
  std::string where = "tensor " + json_quote(name) + ": ";
  if (!entry.is_object())
    fail(path, where + "expected an object with dtype, shape and data_offsets, found " +
                   std::string(entry.type_name()));
  auto field = [&](std::string_view key) -> const JsonValue& {
    const JsonValue* v = entry.find(key);
    if (!v) fail(path, where + "missing \"" + std::string(key) + "\"");
    return *v;
  };
  const JsonValue& dtype_name = field("dtype");
  if (!dtype_name.is_string())
    fail(path, where + "\"dtype\" must be a string, found " + std::string(dtype_name.type_name()));
  std::optional<DType> dtype = dtype_of(dtype_name.as_string());
  if (!dtype) {
    std::string known;
    for (auto [n, d] : kDTypes) known += (known.empty() ? "" : ", ") + std::string(n);
    fail(path, where + "unknown dtype " + json_quote(dtype_name.as_string()) + " (kitten reads " +
                   known + ")");
  }
  std::vector<int64_t> shape = int_list(path, where, field("shape"), "shape");
  std::vector<int64_t> offsets = int_list(path, where, field("data_offsets"), "data_offsets");
  int64_t bytes = checked_bytes(path, where, shape, *dtype);
  if (offsets.size() != 2)
    fail(path, where + "data_offsets " + list(offsets) + " must be [begin, end]");
  auto [begin, end] = std::pair(offsets[0], offsets[1]);
  if (begin < 0 || begin > end)
    fail(path, where + "data_offsets " + list(offsets) + " must have 0 <= begin <= end");
  if (uint64_t(end) > buffer.size())
    fail(path, where + "data_offsets " + list(offsets) + " end past the " +
                   std::to_string(buffer.size()) + "-byte data buffer");
  if (end - begin != bytes)
    fail(path, where + "shape " + list(shape) + " of " + dtype_name.as_string() + " needs " +
                   std::to_string(bytes) + " bytes but data_offsets " + list(offsets) + " hold " +
                   std::to_string(end - begin));
  return {name, *dtype, std::move(shape), buffer.subspan(size_t(begin), size_t(bytes))};
}

// The tensors' byte ranges must tile the data buffer: no overlap, no hole, no tail.
void check_layout(const std::string& path, const std::vector<SafeTensor>& tensors,
                  std::span<const std::byte> buffer) {
  auto begin = [&](const SafeTensor* t) { return size_t(t->data.data() - buffer.data()); };
  auto range = [&](const SafeTensor* t) {
    return " [" + std::to_string(begin(t)) + ", " + std::to_string(begin(t) + t->data.size()) + ")";
  };
  std::vector<const SafeTensor*> order;
  for (const SafeTensor& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [&](const SafeTensor* a, const SafeTensor* b) {
    return std::pair(begin(a), a->data.size()) < std::pair(begin(b), b->data.size());
  });
  size_t pos = 0;
  const SafeTensor* prev = nullptr;
  for (const SafeTensor* t : order) {
    if (begin(t) < pos)
      fail(path, "tensor " + json_quote(t->name) + range(t) + " overlaps tensor " +
                     json_quote(prev->name) + range(prev));
    if (begin(t) > pos)
      fail(path, "bytes [" + std::to_string(pos) + ", " + std::to_string(begin(t)) +
                     ") of the data buffer, before tensor " + json_quote(t->name) +
                     ", belong to no tensor");
    pos = begin(t) + t->data.size();
    prev = t;
  }
  if (pos != buffer.size())
    fail(path, "bytes [" + std::to_string(pos) + ", " + std::to_string(buffer.size()) +
                   ") at the end of the data buffer belong to no tensor");
}

}  // namespace

void SafeTensorsFile::Release::operator()(const std::byte* p) const {
  if (mapped)
    ::munmap(const_cast<std::byte*>(p), size);
  else
    delete[] p;
}

SafeTensorsFile::SafeTensorsFile(std::string path, std::unique_ptr<const std::byte, Release> bytes)
    : path_(std::move(path)), bytes_(std::move(bytes)) {}

SafeTensorsFile SafeTensorsFile::open(const std::string& path) {
  Fd fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (fd.fd < 0) fail(path, "cannot open: " + errno_text());
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) fail(path, "cannot stat: " + errno_text());
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  size_t size = size_t(st.st_size);
  void* p = nullptr;  // an empty file maps nothing (mmap refuses length 0)
  if (size > 0 && (p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.fd, 0)) == MAP_FAILED)
    fail(path, "cannot map: " + errno_text());
  SafeTensorsFile file(path, {static_cast<const std::byte*>(p), Release{size, true}});
  file.read_header();
  return file;
}

SafeTensorsFile SafeTensorsFile::parse(std::string_view bytes, std::string name) {
  auto* copy = new std::byte[bytes.size()];  // exactly sized: a sanitizer sees any overrun
  if (!bytes.empty()) std::memcpy(copy, bytes.data(), bytes.size());
  SafeTensorsFile file(std::move(name), {copy, Release{bytes.size(), false}});
  file.read_header();
  return file;
}

const SafeTensor* SafeTensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafeTensorsFile::read_header() {
  const std::byte* p = bytes_.get();
  size_t size = bytes_.get_deleter().size;
  if (size < 8)
    fail(path_,
         "the file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | uint64_t(p[i]);
  if (n > kMaxHeader)
    fail(path_, "header length " + std::to_string(n) + " is beyond the 100 MB limit");
  if (n > size - 8)
    fail(path_, "header length " + std::to_string(n) + " runs past the end of the file (" +
                    std::to_string(size - 8) + " bytes follow the length)");
  buffer_ = std::span(p + 8 + n, size - 8 - n);
  JsonValue header;
  try {
    header = JsonValue::parse({reinterpret_cast<const char*>(p + 8), size_t(n)});
  } catch (const JsonError& e) {
    fail(path_, std::string("the header (from file byte 8) is not valid JSON: ") + e.what());
  }
  if (!header.is_object())
    fail(path_, "the header is " + std::string(header.type_name()) + ", not a JSON object");
  for (const auto& [name, entry] : header.as_object()) {
    if (name != "__metadata__") {
      index_.emplace(name, tensors_.size());  // unique: the parser refuses duplicate keys
      tensors_.push_back(read_tensor(path_, name, entry, buffer_));
      continue;
    }
    if (!entry.is_object())
      fail(path_,
           "__metadata__ must be an object of strings, found " + std::string(entry.type_name()));
    for (const auto& [key, value] : entry.as_object()) {
      if (!value.is_string())
        fail(path_, "__metadata__ " + json_quote(key) + " must be a string, found " +
                        std::string(value.type_name()));
      metadata_.emplace(key, value.as_string());
    }
  }
  check_layout(path_, tensors_, buffer_);
}

void save_safetensors(const std::string& path, std::span<const SafeTensor> tensors,
                      const SafeTensorsMetadata& metadata) {
  auto quote = [&](std::string_view s, const std::string& what) {
    try {
      return json_quote(s);
    } catch (const JsonError& e) {
      fail(path, what + " is not valid UTF-8 (" + e.what() + ")");
    }
  };
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (const auto& [key, value] : metadata)
      header += quote(key, "a metadata key") + ":" + quote(value, "a metadata value") + ",";
    header.back() = '}';
    header += ',';
  }
  std::set<std::string_view> names;
  int64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafeTensor& t = tensors[i];
    std::string quoted = quote(t.name, "the name of tensor #" + std::to_string(i));
    std::string where = "tensor " + quoted + ": ";
    if (t.name == "__metadata__") fail(path, where + "the name is reserved for the metadata");
    if (!names.insert(t.name).second) fail(path, where + "the name is given twice");
    std::string_view dtype = name_of(t.dtype);
    if (dtype.empty())
      fail(path, where + "safetensors has no name for dtype " + std::string(t.dtype.name()));
    int64_t bytes = checked_bytes(path, where, t.shape, t.dtype);
    if (uint64_t(bytes) != t.data.size())
      fail(path, where + "shape " + list(t.shape) + " of " + std::string(dtype) + " needs " +
                     std::to_string(bytes) + " bytes but the data holds " +
                     std::to_string(t.data.size()));
    header += quoted + ":{\"dtype\":\"" + std::string(dtype) + "\",\"shape\":" + list(t.shape) +
              ",\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes) + "]},";
    offset += bytes;
  }
  if (header.back() == ',') header.pop_back();
  header += '}';
  header.resize((header.size() + 7) / 8 * 8, ' ');  // the buffer starts 8-byte aligned

  std::string tmp = path + ".tmp";
  Fd fd{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)};
  if (fd.fd < 0) fail(path, "cannot create " + tmp + ": " + errno_text());
  auto write_all = [&](const void* data, size_t size) {
    for (auto* p = static_cast<const char*>(data); size > 0;) {
      ssize_t k = ::write(fd.fd, p, size);
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) fail(path, "cannot write " + tmp + ": " + errno_text());
      p += k, size -= size_t(k);
    }
  };
  try {
    unsigned char length[8];
    for (int i = 0; i < 8; ++i) length[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
    write_all(length, 8);
    write_all(header.data(), header.size());
    for (const SafeTensor& t : tensors) write_all(t.data.data(), t.data.size());
    if (::fsync(fd.fd) != 0) fail(path, "cannot sync " + tmp + ": " + errno_text());
    if (::close(std::exchange(fd.fd, -1)) != 0)
      fail(path, "cannot close " + tmp + ": " + errno_text());
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail(path, "cannot rename " + tmp + " over it: " + errno_text());
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  // Sync the directory too, so that the rename survives a crash.
  size_t slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  Fd dir_fd{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  if (dir_fd.fd < 0 || ::fsync(dir_fd.fd) != 0)
    fail(path, "written, but its directory " + dir + " could not be synced: " + errno_text());
}

}  // namespace kitten
