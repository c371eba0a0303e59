#include "frontend/json.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <unordered_set>

namespace kitten {
namespace {

// Length of the well-formed UTF-8 sequence at s[i], or 0: overlong forms, surrogates, code
// points past U+10FFFF and truncated sequences are ill-formed (RFC 3629).
size_t utf8_length(std::string_view s, size_t i) {
  auto b = [&](size_t k) { return uint8_t(s[i + k]); };
  uint8_t c = b(0);
  if (c < 0x80) return 1;
  size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;  // 80-C1: never a lead byte
  if (n == 0 || c > 0xF4 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((b(k) & 0xC0) != 0x80) return 0;
  if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xF0 && b(1) < 0x90) ||  // overlong
      (c == 0xED && b(1) > 0x9F) ||                                // surrogates
      (c == 0xF4 && b(1) > 0x8F))                                  // past U+10FFFF
    return 0;
  return n;
}

void append_utf8(std::string& out, uint32_t cp) {
  int n = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  static constexpr uint8_t kLead[] = {0, 0, 0xC0, 0xE0, 0xF0};
  out += char(kLead[n] | cp >> (6 * (n - 1)));
  for (int k = n - 2; k >= 0; --k) out += char(0x80 | (cp >> (6 * k) & 0x3F));
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// A number literal from_chars found out of range: an overflow when its decimal magnitude
// (leading digit position + exponent) is positive, else an underflow towards zero.
bool overflows(std::string_view t) {
  size_t i = t[0] == '-', e = t.find_first_of("eE");
  int64_t exp = 0, sign = 1;
  if (e != std::string_view::npos) {
    size_t k = e + 1;
    if (t[k] == '+' || t[k] == '-') sign = t[k++] == '-' ? -1 : 1;
    for (; k < t.size(); ++k) exp = std::min<int64_t>(exp * 10 + (t[k] - '0'), 1'000'000'000);
  }
  int64_t lead = 0;
  if (t[i] != '0') {
    while (i < t.size() && is_digit(t[i])) ++i, ++lead;
  } else {
    for (i += 2; i < t.size() && t[i] == '0'; ++i) --lead;
  }
  return lead + sign * exp > 0;
}

std::string describe_byte(std::string_view s, size_t i) {
  if (i >= s.size()) return "the end of the input";
  auto c = uint8_t(s[i]);
  if (c >= 0x20 && c < 0x7F) return std::string("'") + char(c) + "'";
  char buf[16];
  std::snprintf(buf, sizeof buf, "byte 0x%02x", c);
  return buf;
}

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  JsonValue document() {
    JsonValue v = value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("the end of the document", pos_);
    return v;
  }

 private:
  [[noreturn]] void error(size_t at, const std::string& what) const {
    throw JsonError("JSON error at byte " + std::to_string(at) + ": " + what);
  }
  [[noreturn]] void fail(const std::string& expected, size_t at) const {
    error(at, "expected " + expected + ", found " + describe_byte(s_, at));
  }
  bool at_end() const { return pos_ >= s_.size(); }
  void skip_ws() {
    while (!at_end() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }
  bool eat(char c) {
    skip_ws();
    if (at_end() || s_[pos_] != c) return false;
    ++pos_;
    return true;
  }

  JsonValue value(int depth) {
    skip_ws();
    if (at_end()) fail("a value", pos_);
    char c = s_[pos_];
    if (c == '{') return object(depth + 1);
    if (c == '[') return array(depth + 1);
    if (c == '"') return JsonValue(string());
    if (c == 't') return literal("true", JsonValue(true));
    if (c == 'f') return literal("false", JsonValue(false));
    if (c == 'n') return literal("null", JsonValue());
    if (c == '-' || is_digit(c)) return number();
    fail("a value", pos_);
  }

  JsonValue literal(std::string_view word, JsonValue v) {
    for (size_t k = 0; k < word.size(); ++k)
      if (pos_ + k >= s_.size() || s_[pos_ + k] != word[k])
        fail("'" + std::string(word) + "'", pos_ + k);
    pos_ += word.size();
    return v;
  }

  void enter(int depth) {
    if (depth > JsonValue::kMaxDepth)
      error(pos_, "nesting deeper than " + std::to_string(JsonValue::kMaxDepth) + " levels");
    ++pos_;  // the '{' or '['
  }

  JsonValue object(int depth) {
    enter(depth);
    JsonValue::Object members;
    std::unordered_set<std::string> keys;
    if (eat('}')) return JsonValue(std::move(members));
    do {
      skip_ws();
      size_t at = pos_;
      if (at_end() || s_[pos_] != '"') fail("a string key", pos_);
      std::string key = string();
      if (!keys.insert(key).second) error(at, "duplicate key " + json_quote(key));
      if (!eat(':')) fail("':' after an object key", pos_);
      JsonValue v = value(depth);
      members.emplace_back(std::move(key), std::move(v));
    } while (eat(','));
    if (!eat('}')) fail("',' or '}' after an object member", pos_);
    return JsonValue(std::move(members));
  }

  JsonValue array(int depth) {
    enter(depth);
    JsonValue::Array items;
    if (eat(']')) return JsonValue(std::move(items));
    do items.push_back(value(depth));
    while (eat(','));
    if (!eat(']')) fail("',' or ']' after an array element", pos_);
    return JsonValue(std::move(items));
  }

  std::string string() {
    size_t start = pos_++;  // the opening quote
    std::string out;
    for (;;) {
      if (at_end()) fail("'\"' closing the string at byte " + std::to_string(start), pos_);
      auto c = uint8_t(s_[pos_]);
      if (c == '"') break;
      if (c == '\\') {
        escape(out);
      } else if (c < 0x20) {
        fail("an escape sequence for a control character", pos_);
      } else {
        size_t n = utf8_length(s_, pos_);
        if (n == 0) error(pos_, "invalid UTF-8 in a string");
        out.append(s_.substr(pos_, n));
        pos_ += n;
      }
    }
    ++pos_;
    return out;
  }

  void escape(std::string& out) {
    size_t at = pos_++;  // the backslash
    static constexpr std::string_view kEscapes = "\"\\/bfnrt", kMeanings = "\"\\/\b\f\n\r\t";
    size_t k = at_end() ? std::string_view::npos : kEscapes.find(s_[pos_]);
    if (k != std::string_view::npos) {
      out += kMeanings[k];
      ++pos_;
      return;
    }
    if (at_end() || s_[pos_] != 'u')
      fail("an escape (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)", pos_);
    ++pos_;
    uint32_t cp = hex4();
    if (cp >= 0xDC00 && cp <= 0xDFFF) error(at, "a low surrogate without a high one before it");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (s_.substr(pos_, 2) != "\\u")
        fail("'\\u' and a low surrogate after a high surrogate", pos_);
      pos_ += 2;
      uint32_t lo = hex4();
      if (lo < 0xDC00 || lo > 0xDFFF)
        error(pos_ - 6, "expected a low surrogate (\\uDC00-\\uDFFF) after a high surrogate");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    append_utf8(out, cp);
  }

  uint32_t hex4() {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k, ++pos_) {
      char c = at_end() ? '\0' : s_[pos_];
      int d = is_digit(c)              ? c - '0'
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                       : -1;
      if (d < 0) fail("a hex digit of a \\u escape", pos_);
      v = v * 16 + uint32_t(d);
    }
    return v;
  }

  JsonValue number() {
    size_t start = pos_;
    auto digits = [&] {
      size_t from = pos_;
      while (!at_end() && is_digit(s_[pos_])) ++pos_;
      return pos_ - from;
    };
    bool integer = true;
    if (s_[pos_] == '-') ++pos_;
    if (!at_end() && s_[pos_] == '0') {
      if (++pos_ < s_.size() && is_digit(s_[pos_])) error(start, "a number with a leading zero");
    } else if (digits() == 0) {
      fail("a digit", pos_);
    }
    if (!at_end() && s_[pos_] == '.') {
      ++pos_, integer = false;
      if (digits() == 0) fail("a digit after the decimal point", pos_);
    }
    if (!at_end() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_, integer = false;
      if (!at_end() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) fail("a digit in the exponent", pos_);
    }
    std::string_view text = s_.substr(start, pos_ - start);
    const char* end = text.data() + text.size();
    JsonValue::Number n{0, std::nullopt};
    if (std::from_chars(text.data(), end, n.value).ec == std::errc::result_out_of_range) {
      if (overflows(text)) error(start, "number out of the range of a double");
      n.value = text[0] == '-' ? -0.0 : 0.0;
    }
    int64_t i;
    if (integer && std::from_chars(text.data(), end, i).ec == std::errc()) n.exact = i;
    return JsonValue(n);
  }

  std::string_view s_;
  size_t pos_ = 0;
};

template <class T>
const T& get(const JsonValue& v, std::string_view expected) {
  if (auto* p = std::get_if<T>(&v.value())) return *p;
  throw JsonError("JSON: expected " + std::string(expected) + ", found " +
                  std::string(v.type_name()));
}

}  // namespace

JsonValue JsonValue::parse(std::string_view text) { return Parser(text).document(); }

std::string_view JsonValue::type_name() const {
  static constexpr std::string_view kNames[] = {"null",     "a boolean", "a number",
                                                "a string", "an array",  "an object"};
  return kNames[v_.index()];
}

bool JsonValue::as_bool() const { return get<bool>(*this, "a boolean"); }
double JsonValue::as_double() const { return get<Number>(*this, "a number").value; }
const std::string& JsonValue::as_string() const { return get<std::string>(*this, "a string"); }
const JsonValue::Array& JsonValue::as_array() const { return get<Array>(*this, "an array"); }
const JsonValue::Object& JsonValue::as_object() const { return get<Object>(*this, "an object"); }

int64_t JsonValue::as_int() const {
  const Number& n = get<Number>(*this, "an integer");
  if (n.exact) return *n.exact;
  char buf[32];
  std::string shortest(buf, std::to_chars(buf, buf + sizeof buf, n.value).ptr);
  throw JsonError("JSON: expected an integer in the int64 range, found " + shortest);
}

const JsonValue* JsonValue::find(std::string_view key) const {
  for (const auto& [k, v] : as_object())
    if (k == key) return &v;
  return nullptr;
}

std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    auto c = uint8_t(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      const char* named = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : nullptr;
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += named ? named : buf;
    } else {
      size_t n = utf8_length(s, i);
      if (n == 0) throw JsonError("json_quote: byte " + std::to_string(i) + " is not valid UTF-8");
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    ++i;
  }
  return out + '"';
}

}  // namespace kitten
