// A small strict JSON reader (RFC 8259) for file headers such as safetensors', and the
// string quoting its writers need. Strict: no comments, trailing commas, duplicate keys,
// lone surrogates, invalid UTF-8 or trailing garbage; errors name the byte offset.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kitten {

// A malformed document ("JSON error at byte 17: expected ...") or a value of the wrong type.
struct JsonError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class JsonValue {
 public:
  struct Number {
    double value;
    std::optional<int64_t> exact;  // an integer literal (no fraction or exponent) in int64
  };
  using Array = std::vector<JsonValue>;
  using Object = std::vector<std::pair<std::string, JsonValue>>;  // members in file order
  using Value = std::variant<std::nullptr_t, bool, Number, std::string, Array, Object>;

  JsonValue() : v_(nullptr) {}
  explicit JsonValue(Value v) : v_(std::move(v)) {}

  // Parses a whole document; nesting deeper than kMaxDepth is an error.
  static constexpr int kMaxDepth = 256;
  static JsonValue parse(std::string_view text);

  const Value& value() const { return v_; }
  std::string_view type_name() const;  // "null", "a boolean", "a number", ...
  bool is_null() const { return std::holds_alternative<std::nullptr_t>(v_); }
  bool is_bool() const { return std::holds_alternative<bool>(v_); }
  bool is_number() const { return std::holds_alternative<Number>(v_); }
  bool is_int() const { return is_number() && std::get<Number>(v_).exact.has_value(); }
  bool is_string() const { return std::holds_alternative<std::string>(v_); }
  bool is_array() const { return std::holds_alternative<Array>(v_); }
  bool is_object() const { return std::holds_alternative<Object>(v_); }

  // Each throws JsonError naming the expected and the actual type on a mismatch.
  bool as_bool() const;
  double as_double() const;
  int64_t as_int() const;  // only an integer literal in the int64 range (see Number)
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;
  // The member named `key` of an object, or nullptr; throws when this is not an object.
  const JsonValue* find(std::string_view key) const;

 private:
  Value v_;
};

// `s` as a JSON string literal, quotes included. Throws JsonError when `s` is not valid
// UTF-8 (JSON cannot carry it).
std::string json_quote(std::string_view s);

}  // namespace kitten
