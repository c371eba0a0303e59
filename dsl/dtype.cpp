#include "dsl/dtype.h"

#include <charconv>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

namespace kitten {

namespace {

// Interned vector, pointer and extension dtypes. Immortal: a DType handle never dangles.
struct Interned {
  std::string name;
  DTypeInfo info;
  std::unique_ptr<const DTypeExtension> ext;
};

struct DTypeTable {
  std::mutex mu;
  std::unordered_map<std::string_view, const DTypeInfo*> by_name;

  DTypeTable() {
    for (const DTypeInfo& i : detail::kBuiltinDTypes) by_name.emplace(i.name, &i);
  }
  // Returns the dtype named `name`, creating it from `info` when absent.
  const DTypeInfo* intern(std::string name, DTypeInfo info,
                          std::unique_ptr<const DTypeExtension> ext = nullptr) {
    std::lock_guard lock(mu);
    if (auto it = by_name.find(name); it != by_name.end()) return it->second;
    auto* e = new Interned{std::move(name), info, std::move(ext)};
    e->info.name = e->name;
    e->info.hash = fnv1a(e->name);
    e->info.ext = e->ext.get();
    by_name.emplace(e->info.name, &e->info);
    return &e->info;
  }
  const DTypeInfo* find(std::string_view name) {
    std::lock_guard lock(mu);
    auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : it->second;
  }
};

DTypeTable& table() {
  static DTypeTable* t = new DTypeTable();  // immortal, like the dtypes it holds
  return *t;
}

}  // namespace

std::string_view addr_space_name(AddrSpace s) {
  switch (s) {
    case AddrSpace::Global:
      return "global";
    case AddrSpace::Local:
      return "local";
    case AddrSpace::Reg:
      return "reg";
  }
  return "?";
}

DType DType::element() const {
  if (!is_vector()) return *this;
  return dtypes::kScalars[int(info_->scalar)];
}
int64_t DType::imin() const {
  if (!is_int() || is_unsigned()) return 0;
  return bits() == 64 ? INT64_MIN : -(int64_t(1) << (bits() - 1));
}
int64_t DType::imax() const {
  if (is_bool()) return 1;
  if (!is_int()) return 0;
  int b = is_unsigned() ? bits() : bits() - 1;
  return b >= 63 ? INT64_MAX : (int64_t(1) << b) - 1;
}
uint64_t DType::umax() const {
  if (is_unsigned() && bits() == 64) return UINT64_MAX;
  return uint64_t(imax());
}

DType DType::vec(int lanes) const {
  if (!is_scalar())
    throw std::invalid_argument("DType::vec: only a scalar has vectors, not " +
                                std::string(name()));
  if (lanes < 2 || lanes > 256)
    throw std::invalid_argument("DType::vec: lanes must be in 2..256, got " +
                                std::to_string(lanes) + " for " + std::string(name()));
  DTypeInfo info = *info_;
  info.kind = DTypeKind::Vector;
  info.count = lanes;
  return DType(table().intern(std::string(name()) + "x" + std::to_string(lanes), info));
}

DType DType::ptr(AddrSpace space, int64_t size) const {
  if (!is_value() && !is_extension())
    throw std::invalid_argument("DType::ptr: cannot point to " + std::string(name()));
  if (size < -1 || size == 0)
    throw std::invalid_argument("DType::ptr: size must be positive or -1 (unknown), got " +
                                std::to_string(size));
  std::string n = "ptr<" + std::string(name()) + "," + std::string(addr_space_name(space));
  if (size > 0) n += "," + std::to_string(size);
  n += ">";
  DTypeInfo info{DTypeKind::Pointer, {}, ScalarType::Bool, 1, info_, space, size, nullptr, 0};
  info.elem_bits = 0;
  return DType(table().intern(std::move(n), info));
}

DType DType::extension(std::string name, std::unique_ptr<const DTypeExtension> payload) {
  if (name.empty() || parse(name).has_value()) {
    const DTypeInfo* found = table().find(name);
    if (found && found->kind == DTypeKind::Extension) return DType(found);
    throw std::invalid_argument("DType::extension: the name '" + name +
                                "' is empty or taken by a core dtype");
  }
  DTypeInfo info{DTypeKind::Extension, {}, ScalarType::Bool, 1, nullptr,
                 AddrSpace::Global,    -1, nullptr,          0};
  return DType(table().intern(std::move(name), info, std::move(payload)));
}

std::optional<DType> DType::parse(std::string_view name) {
  if (const DTypeInfo* found = table().find(name)) return DType(found);
  auto to_int = [](std::string_view s, int64_t& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
  };
  try {
    if (name.starts_with("ptr<") && name.ends_with(">")) {
      std::string_view body = name.substr(4, name.size() - 5);
      size_t c1 = body.rfind(',');
      if (c1 == std::string_view::npos) return std::nullopt;
      int64_t size = -1;
      std::string_view last = body.substr(c1 + 1);
      if (!last.empty() && last[0] >= '0' && last[0] <= '9') {
        if (!to_int(last, size)) return std::nullopt;
        body = body.substr(0, c1);
        c1 = body.rfind(',');
        if (c1 == std::string_view::npos) return std::nullopt;
        last = body.substr(c1 + 1);
      }
      std::optional<AddrSpace> space;
      for (AddrSpace s : {AddrSpace::Global, AddrSpace::Local, AddrSpace::Reg})
        if (addr_space_name(s) == last) space = s;
      auto elem = parse(body.substr(0, c1));
      if (!space || !elem) return std::nullopt;
      return elem->ptr(*space, size);
    }
    size_t x = name.rfind('x');
    int64_t lanes;
    if (x != std::string_view::npos && to_int(name.substr(x + 1), lanes)) {
      auto elem = parse(name.substr(0, x));
      if (!elem || lanes > 256) return std::nullopt;
      return elem->vec(int(lanes));
    }
  } catch (const std::invalid_argument&) {
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace kitten
