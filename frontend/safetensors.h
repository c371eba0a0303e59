// Reading and writing safetensors files (the Hugging Face weight format): an 8-byte
// little-endian header length N, N bytes of JSON header naming each tensor's dtype, shape
// and byte range, then the data buffer. Files are memory-mapped and validated in full
// before any tensor is handed out; writes are atomic (a temporary file, fsync, rename).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dsl/dtype.h"

namespace kitten {

// A file that breaks a rule of the format, or one that cannot be read or written: names
// the file, the tensor and the rule.
struct SafeTensorsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One tensor: in a SafeTensorsFile, `data` points into the file's bytes and lives as long
// as the file object; for save_safetensors, into the caller's memory. Bytes are
// little-endian, row-major.
struct SafeTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;  // [] is a scalar
  std::span<const std::byte> data;
};

using SafeTensorsMetadata = std::map<std::string, std::string, std::less<>>;

class SafeTensorsFile {
 public:
  // Maps `path` read-only. Throws SafeTensorsError. The file must not be truncated while
  // mapped (the system would kill the process on touching the lost pages).
  static SafeTensorsFile open(const std::string& path);
  // The same rules on a copy of `bytes`; `name` stands for the file in messages.
  static SafeTensorsFile parse(std::string_view bytes, std::string name = "<memory>");

  const std::string& path() const { return path_; }
  const std::vector<SafeTensor>& tensors() const { return tensors_; }  // in header order
  const SafeTensor* find(std::string_view name) const;                 // nullptr if absent
  const SafeTensorsMetadata& metadata() const { return metadata_; }
  std::span<const std::byte> buffer() const { return buffer_; }  // the data after the header

 private:
  struct Release {  // munmap a mapping, delete[] a copy
    size_t size;
    bool mapped;
    void operator()(const std::byte* p) const;
  };
  SafeTensorsFile(std::string path, std::unique_ptr<const std::byte, Release> bytes);
  void read_header();

  std::string path_;
  std::unique_ptr<const std::byte, Release> bytes_;  // the whole file
  std::span<const std::byte> buffer_;
  std::vector<SafeTensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  SafeTensorsMetadata metadata_;
};

// Writes `tensors` in the given order with `metadata` to `path`, through `<path>.tmp`
// renamed over it once complete and synced, so a failure leaves any old file as it was.
// Throws SafeTensorsError on a dtype the format cannot name, a byte count that disagrees
// with the shape, a duplicate name, or an I/O error.
void save_safetensors(const std::string& path, std::span<const SafeTensor> tensors,
                      const SafeTensorsMetadata& metadata = {});

}  // namespace kitten
