// The strict JSON reader (valid documents, each error with its byte offset) and safetensors
// files: round trips over every dtype, the exact bytes the writer produces, each rule a
// bad file breaks, atomic writes, and a fuzz test of mutated headers (KITTEN_FUZZ_SEED
// replays one, KITTEN_FUZZ_COUNT sets the number of byte-flip cases).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <type_traits>

#include "frontend/json.h"
#include "frontend/safetensors.h"

namespace kitten {
namespace {

namespace fs = std::filesystem;

uint64_t seed_from(const char* env) {
  const char* s = std::getenv(env);
  return s ? std::strtoull(s, nullptr, 0) : std::random_device{}();
}

// ---- JSON ---------------------------------------------------------------------------------

TEST(Json, ParsesNestedDocumentsKeepingKeyOrder) {
  JsonValue v = JsonValue::parse(
      " {\"z\": [1, -2.5, true, false, null, {}, []],\n\t\"a\": {\"k\": \"v\"}, \"m\": 3}\r\n");
  const JsonValue::Object& o = v.as_object();
  ASSERT_EQ(o.size(), 3u);
  EXPECT_EQ(o[0].first, "z");
  EXPECT_EQ(o[1].first, "a");
  EXPECT_EQ(o[2].first, "m");
  const JsonValue::Array& z = o[0].second.as_array();
  ASSERT_EQ(z.size(), 7u);
  EXPECT_EQ(z[0].as_int(), 1);
  EXPECT_EQ(z[1].as_double(), -2.5);
  EXPECT_TRUE(z[2].as_bool());
  EXPECT_FALSE(z[3].as_bool());
  EXPECT_TRUE(z[4].is_null());
  EXPECT_TRUE(z[5].as_object().empty());
  EXPECT_TRUE(z[6].as_array().empty());
  EXPECT_EQ(v.find("a")->find("k")->as_string(), "v");
  EXPECT_EQ(v.find("m")->as_int(), 3);
  EXPECT_EQ(v.find("missing"), nullptr);
  EXPECT_TRUE(JsonValue::parse("  null ").is_null());
  EXPECT_EQ(JsonValue::parse("\"top\"").as_string(), "top");
}

TEST(Json, NumbersAreDoublesWithAnExactIntegerWhenWrittenAsOne) {
  auto num = [](const char* s) { return std::get<JsonValue::Number>(JsonValue::parse(s).value()); };
  EXPECT_EQ(num("9223372036854775807").exact, INT64_MAX);
  EXPECT_EQ(num("-9223372036854775808").exact, INT64_MIN);
  EXPECT_EQ(num("9223372036854775808").exact, std::nullopt);  // one past int64
  EXPECT_EQ(num("9223372036854775808").value, 9223372036854775808.0);
  EXPECT_EQ(num("123456789012345678901234567890").value, 1.2345678901234568e29);
  EXPECT_EQ(num("1e3").exact, std::nullopt);  // integral, but not an integer literal
  EXPECT_EQ(num("1E+2").value, 100.0);
  EXPECT_EQ(num("1.0").exact, std::nullopt);
  EXPECT_EQ(num("0.1").value, 0.1);
  EXPECT_EQ(num("-0").exact, 0);
  EXPECT_TRUE(std::signbit(num("-0").value));
  EXPECT_EQ(num("2.5e-3").value, 2.5e-3);
  EXPECT_EQ(num("1e-400").value, 0.0);  // underflow rounds to zero, keeping the sign
  EXPECT_TRUE(std::signbit(num("-1e-400").value));
  EXPECT_EQ(num(("0." + std::string(400, '0') + "1").c_str()).value, 0.0);
  EXPECT_EQ(num("4.9e-324").value, 4.9e-324);  // the smallest subnormal
}

TEST(Json, StringsDecodeEveryEscapeToUtf8) {
  auto str = [](const std::string& s) { return JsonValue::parse(s).as_string(); };
  EXPECT_EQ(str(R"("\"\\\/\b\f\n\r\t")"), "\"\\/\b\f\n\r\t");
  EXPECT_EQ(str(R"("\u0041\u00e9\u00E9\u20ac")"), "A\xc3\xa9\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(str(R"("\ud83d\ude00")"), "\xf0\x9f\x98\x80");  // a surrogate pair: U+1F600
  EXPECT_EQ(str(R"("\udbff\udfff")"), "\xf4\x8f\xbf\xbf");  // U+10FFFF
  EXPECT_EQ(str(R"("a\u0000b")"), std::string("a\0b", 3));
  EXPECT_EQ(str("\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""),
            "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
}

TEST(Json, NestingIsLimited) {
  auto nested = [](int n) { return std::string(n, '[') + std::string(n, ']'); };
  EXPECT_NO_THROW(JsonValue::parse(nested(JsonValue::kMaxDepth)));
  EXPECT_THROW(JsonValue::parse(nested(JsonValue::kMaxDepth + 1)), JsonError);
}

TEST(Json, ErrorsNameTheByteOffsetAndWhatWasExpected) {
  struct Case {
    std::string text;
    size_t offset;
    std::string says;
  };
  const std::string deep(JsonValue::kMaxDepth + 1, '[');
  const Case cases[] = {
      {"", 0, "expected a value, found the end of the input"},
      {" ", 1, "expected a value"},
      {"{\"a\":1,}", 7, "expected a string key, found '}'"},
      {"{'a':1}", 1, "expected a string key, found '''"},
      {"[1,]", 3, "expected a value, found ']'"},
      {"[1 2]", 3, "expected ',' or ']' after an array element, found '2'"},
      {"[1,2", 4, "expected ',' or ']' after an array element, found the end"},
      {"{\"a\" 1}", 5, "expected ':' after an object key, found '1'"},
      {"{\"a\":}", 5, "expected a value, found '}'"},
      {"{\"a\":1 \"b\":2}", 7, "expected ',' or '}' after an object member"},
      {"{\"a\":1,\"a\":2}", 7, "duplicate key \"a\""},
      {"tru", 3, "expected 'true', found the end of the input"},
      {"nul!", 3, "expected 'null', found '!'"},
      {"NaN", 0, "expected a value, found 'N'"},
      {"01", 0, "a number with a leading zero"},
      {"-01", 0, "a number with a leading zero"},
      {"-", 1, "expected a digit, found the end"},
      {"[-]", 2, "expected a digit, found ']'"},
      {"+1", 0, "expected a value, found '+'"},
      {".5", 0, "expected a value, found '.'"},
      {"1.", 2, "expected a digit after the decimal point"},
      {"1e+", 3, "expected a digit in the exponent"},
      {"1e400", 0, "number out of the range of a double"},
      {"-1.5e99999999999999999999", 0, "number out of the range of a double"},
      {"\"abc", 4, "expected '\"' closing the string at byte 0, found the end"},
      {"\"a\nb\"", 2, "control character, found byte 0x0a"},
      {"\"\\x\"", 2, "expected an escape"},
      {"\"\\", 2, "expected an escape"},
      {"\"\\u12G4\"", 5, "expected a hex digit of a \\u escape, found 'G'"},
      {"\"\\u12", 5, "expected a hex digit"},
      {"\"\\udc00\"", 1, "a low surrogate without a high one"},
      {"\"\\ud800\"", 7, "expected '\\u' and a low surrogate after a high surrogate"},
      {"\"\\ud800\\u0041\"", 7, "expected a low surrogate"},
      {"\"\xff\"", 1, "invalid UTF-8"},
      {"\"\xc0\xaf\"", 1, "invalid UTF-8"},          // overlong '/'
      {"\"\xed\xa0\x80\"", 1, "invalid UTF-8"},      // an encoded surrogate
      {"\"\xf4\x90\x80\x80\"", 1, "invalid UTF-8"},  // past U+10FFFF
      {"\"ab\xe2\x82\"", 3, "invalid UTF-8"},        // truncated
      {"{} x", 3, "expected the end of the document, found 'x'"},
      {"[] []", 3, "expected the end of the document"},
      {"\xef\xbb\xbf{}", 0, "found byte 0xef"},  // a byte order mark
      {"// c\n{}", 0, "found '/'"},
      {deep, JsonValue::kMaxDepth, "nesting deeper than 256 levels"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    try {
      JsonValue::parse(c.text);
      ADD_FAILURE() << "parsed";
    } catch (const JsonError& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("JSON error at byte " + std::to_string(c.offset) + ":"), std::string::npos)
          << m;
      EXPECT_NE(m.find(c.says), std::string::npos) << m;
    }
  }
}

TEST(Json, AccessorsRefuseTheWrongType) {
  JsonValue v = JsonValue::parse(R"({"arr": [1], "x": 1.5, "big": 1e3, "s": "t"})");
  auto message = [](auto f) {
    try {
      f();
    } catch (const JsonError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message([&] { v.find("arr")->as_object(); }),
            "JSON: expected an object, found an array");
  EXPECT_EQ(message([&] { v.find("s")->as_int(); }), "JSON: expected an integer, found a string");
  EXPECT_NE(message([&] { v.find("x")->as_int(); }).find("found 1.5"), std::string::npos);
  EXPECT_NE(message([&] { v.find("big")->as_int(); }).find("int64"), std::string::npos);
  EXPECT_EQ(message([&] { v.find("s")->as_array(); }), "JSON: expected an array, found a string");
  EXPECT_EQ(message([&] { v.as_string(); }), "JSON: expected a string, found an object");
  EXPECT_EQ(message([&] { v.find("arr")->find("k"); }), "JSON: expected an object, found an array");
  EXPECT_EQ(message([&] { v.find("x")->as_bool(); }), "JSON: expected a boolean, found a number");
  EXPECT_EQ(v.find("x")->as_double(), 1.5);
}

TEST(Json, QuoteEscapesAndRoundTrips) {
  EXPECT_EQ(json_quote("a\"b\\c\n\x01/\xc3\xa9"), "\"a\\\"b\\\\c\\n\\u0001/\xc3\xa9\"");
  std::string all;
  for (int c = 0; c < 128; ++c) all += char(c);
  all += "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  EXPECT_EQ(JsonValue::parse(json_quote(all)).as_string(), all);
  EXPECT_THROW(json_quote("ok\xff"), JsonError);
  EXPECT_THROW(json_quote("\xed\xa0\x80"), JsonError);
}

// ---- safetensors: helpers -----------------------------------------------------------------

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char(n >> (8 * i));
  return s;
}

// A file assembled by hand, independently of the writer.
std::string file_of(const std::string& header, const std::string& buffer) {
  return le64(header.size()) + header + buffer;
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s)); }
std::string string_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

class TempDir {
 public:
  TempDir() {
    std::string t = (fs::path(::testing::TempDir()) / "kitten_st_XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path_ = t;
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

std::string refusal(const std::string& bytes) {
  try {
    SafeTensorsFile::parse(bytes, "bad.safetensors");
  } catch (const SafeTensorsError& e) {
    return e.what();
  }
  return "accepted";
}

// ---- safetensors: reading and writing ---------------------------------------------------

TEST(SafeTensors, ReadsAFileLaidOutAsTheFormatSays) {
  float a[2] = {1.5f, -2.0f};
  int16_t b[3] = {7, -300, 12345};
  std::string buffer(reinterpret_cast<const char*>(a), 8);
  buffer += std::string(reinterpret_cast<const char*>(b), 6);
  std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I16","shape":[3],"data_offsets":[8,14]},)"
      R"("a":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}}    )";  // padded
  SafeTensorsFile f = SafeTensorsFile::parse(file_of(header, buffer));
  ASSERT_EQ(f.tensors().size(), 2u);
  const SafeTensor& tb = f.tensors()[0];  // header order, not offset order
  EXPECT_EQ(tb.name, "b");
  EXPECT_EQ(tb.dtype, dtypes::int16);
  EXPECT_EQ(tb.shape, (std::vector<int64_t>{3}));
  int16_t got_b[3];
  std::memcpy(got_b, tb.data.data(), 6);
  EXPECT_EQ(got_b[1], -300);
  const SafeTensor* ta = f.find("a");
  ASSERT_NE(ta, nullptr);
  EXPECT_EQ(ta, &f.tensors()[1]);
  EXPECT_EQ(ta->dtype, dtypes::float32);
  EXPECT_EQ(ta->shape, (std::vector<int64_t>{2, 1}));
  float got_a[2];
  std::memcpy(got_a, ta->data.data(), 8);
  EXPECT_EQ(got_a[0], 1.5f);
  EXPECT_EQ(got_a[1], -2.0f);
  EXPECT_EQ(f.find("c"), nullptr);
  EXPECT_EQ(f.metadata(), (SafeTensorsMetadata{{"format", "pt"}}));
  EXPECT_EQ(f.buffer().size(), 14u);
  EXPECT_EQ(f.path(), "<memory>");
}

TEST(SafeTensors, AcceptsZeroSizeTensorsAnywhereAndAnEmptyFile) {
  std::string header = R"({"e0":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
                       R"("x":{"dtype":"U8","shape":[4],"data_offsets":[0,4],"extra":"ignored"},)"
                       R"("e4":{"dtype":"I64","shape":[2,0,3],"data_offsets":[4,4]},)"
                       R"("e4b":{"dtype":"BOOL","shape":[0],"data_offsets":[4,4]},)"
                       R"("s":{"dtype":"U8","shape":[],"data_offsets":[4,5]},)"
                       R"("end":{"dtype":"F16","shape":[0,1],"data_offsets":[5,5]}})";
  SafeTensorsFile f = SafeTensorsFile::parse(file_of(header, "abcdZ"));
  ASSERT_EQ(f.tensors().size(), 6u);
  EXPECT_EQ(string_of(f.find("x")->data), "abcd");
  EXPECT_EQ(string_of(f.find("s")->data), "Z");  // a scalar: shape [], one element
  EXPECT_TRUE(f.find("s")->shape.empty());
  for (const char* name : {"e0", "e4", "e4b", "end"}) EXPECT_TRUE(f.find(name)->data.empty());
  EXPECT_EQ(f.find("e4")->data.data(), f.buffer().data() + 4);

  SafeTensorsFile empty = SafeTensorsFile::parse(file_of("{}", ""));
  EXPECT_TRUE(empty.tensors().empty());
  EXPECT_TRUE(empty.metadata().empty());
}

TEST(SafeTensors, RoundTripsEveryDTypeAndShape) {
  uint64_t seed = seed_from("KITTEN_TEST_SEED");
  SCOPED_TRACE("KITTEN_TEST_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::vector<std::vector<int64_t>> shapes = {{},     {0},       {1},      {7},
                                                    {2, 3}, {3, 0, 2}, {5, 1, 3}};
  std::vector<std::string> storage;
  storage.reserve(std::size(dtypes::kScalars) * shapes.size());
  std::vector<SafeTensor> tensors;
  for (DType dt : dtypes::kScalars)
    for (size_t s = 0; s < shapes.size(); ++s) {
      int64_t numel = 1;
      for (int64_t d : shapes[s]) numel *= d;
      std::string bytes(size_t(numel * dt.itemsize()), '\0');
      for (char& c : bytes) c = char(dt.is_bool() ? rng() % 2 : rng());
      storage.push_back(std::move(bytes));
      std::string name = std::string(dt.name()) + "/" + std::to_string(s);
      tensors.push_back({name, dt, shapes[s], bytes_of(storage.back())});
    }
  std::string odd_bytes = "12345678";
  tensors.push_back({"layer.0/\"w\"\\\xc3\xa9\n", dtypes::float64, {1}, bytes_of(odd_bytes)});
  SafeTensorsMetadata metadata = {{"format", "pt"}, {"note", "\xc3\xa9 \"q\"\n"}, {"", ""}};

  TempDir dir;
  std::string path = dir / "model.safetensors";
  save_safetensors(path, tensors, metadata);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  SafeTensorsFile f = SafeTensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafeTensor &want = tensors[i], &got = f.tensors()[i];
    SCOPED_TRACE(want.name);
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.dtype, want.dtype);
    EXPECT_EQ(got.shape, want.shape);
    EXPECT_EQ(string_of(got.data), string_of(want.data));
    EXPECT_EQ(f.find(want.name), &got);
  }
  EXPECT_EQ(f.metadata(), metadata);
  // The data buffer starts 8-byte aligned in the file.
  EXPECT_EQ(uintptr_t(f.buffer().data()) % 8, 0u);
}

TEST(SafeTensors, WritesExactlyTheBytesTheFormatDescribes) {
  float b[2] = {1.0f, 2.0f};
  std::string a = "xyz";
  std::vector<SafeTensor> tensors = {
      {"b", dtypes::float32, {2}, std::as_bytes(std::span(b))},
      {"a", dtypes::int8, {3}, bytes_of(a)},
  };
  TempDir dir;
  std::string path = dir / "t.safetensors";
  save_safetensors(path, tensors, {{"k", "v"}});
  std::string header =
      R"({"__metadata__":{"k":"v"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"I8","shape":[3],"data_offsets":[8,11]}})";
  header += std::string((8 - header.size() % 8) % 8, ' ');
  EXPECT_EQ(slurp(path), file_of(header, string_of(std::as_bytes(std::span(b))) + a));
}

TEST(SafeTensors, FilesAreMoveOnlyAndSpansSurviveAMove) {
  static_assert(!std::is_copy_constructible_v<SafeTensorsFile>);
  static_assert(std::is_move_constructible_v<SafeTensorsFile>);
  std::string header = R"({"t":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})";
  std::vector<SafeTensorsFile> files;
  for (int i = 0; i < 5; ++i)  // the vector reallocates, moving the files
    files.push_back(SafeTensorsFile::parse(file_of(header, "ab" + std::to_string(i))));
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(string_of(files[i].find("t")->data), "ab" + std::to_string(i));
  TempDir dir;
  std::string path = dir / "m.safetensors";
  std::ofstream(path, std::ios::binary) << file_of(header, "xyz");
  SafeTensorsFile a = SafeTensorsFile::open(path);
  SafeTensorsFile b = std::move(a);
  a = SafeTensorsFile::parse(file_of("{}", ""));
  EXPECT_EQ(string_of(b.tensors()[0].data), "xyz");
}

TEST(SafeTensors, EachBrokenRuleIsNamed) {
  auto t = [](const std::string& body) { return "{\"w\":{" + body + "}}"; };
  const std::string ok_dtype = R"("dtype":"F32",)";
  struct Case {
    const char* rule;
    std::string bytes;
    std::vector<std::string> says;
  };
  const Case cases[] = {
      {"short file", "abc", {"the file is 3 bytes, shorter than the 8-byte header length"}},
      {"header past the end", le64(100) + "{}", {"header length 100 runs past the end"}},
      {"header one byte past the end",
       le64(3) + "{}",
       {"header length 3 runs past the end of the file (2 bytes follow the length)"}},
      {"absurd header", le64(1ull << 40) + "{}", {"header length 1099511627776", "100 MB"}},
      {"absurd header, top bit", le64(~0ull) + "{}", {"100 MB"}},
      {"not JSON", file_of("{\"w\":", ""), {"not valid JSON", "JSON error at byte 5"}},
      {"trailing garbage", file_of("{}x", ""), {"not valid JSON", "end of the document"}},
      {"not an object", file_of("[]", ""), {"the header is an array, not a JSON object"}},
      {"entry not an object", file_of(R"({"w":3})", ""), {"tensor \"w\"", "found a number"}},
      {"no dtype",
       file_of(t(R"("shape":[1],"data_offsets":[0,4])"), "1234"),
       {"tensor \"w\"", "missing \"dtype\""}},
      {"no shape",
       file_of(t(ok_dtype + R"("data_offsets":[0,4])"), "1234"),
       {"tensor \"w\"", "missing \"shape\""}},
      {"no data_offsets",
       file_of(t(ok_dtype + R"("shape":[1])"), "1234"),
       {"tensor \"w\"", "missing \"data_offsets\""}},
      {"dtype not a string",
       file_of(t(R"("dtype":32,"shape":[1],"data_offsets":[0,4])"), "1234"),
       {"tensor \"w\"", "\"dtype\" must be a string, found a number"}},
      {"unknown dtype",
       file_of(t(R"("dtype":"C64","shape":[1],"data_offsets":[0,8])"), "12345678"),
       {"tensor \"w\"", "unknown dtype \"C64\"", "F8_E5M2"}},
      {"shape not an array",
       file_of(t(ok_dtype + R"("shape":4,"data_offsets":[0,4])"), "1234"),
       {"tensor \"w\"", "\"shape\" must be an array of integers"}},
      {"shape of floats",
       file_of(t(ok_dtype + R"("shape":[1.0],"data_offsets":[0,4])"), "1234"),
       {"tensor \"w\"", "\"shape\" must be an array of integers"}},
      {"shape beyond int64",
       file_of(t(ok_dtype + R"("shape":[9223372036854775808],"data_offsets":[0,4])"), "1234"),
       {"tensor \"w\"", "\"shape\" must be an array of integers in int64"}},
      {"negative dimension",
       file_of(t(ok_dtype + R"("shape":[-1,-4],"data_offsets":[0,16])"), std::string(16, 'x')),
       {"tensor \"w\"", "shape [-1, -4] has a negative dimension"}},
      {"element count overflows",
       file_of(t(ok_dtype + R"("shape":[4294967296,4294967296],"data_offsets":[0,4])"), "1234"),
       {"tensor \"w\"", "shape [4294967296, 4294967296] of F32 has a byte size beyond int64"}},
      {"byte size overflows",
       file_of(t(ok_dtype + R"("shape":[4611686018427387904],"data_offsets":[0,4])"), "1234"),
       {"tensor \"w\"", "beyond int64"}},
      {"offsets not a pair",
       file_of(t(ok_dtype + R"("shape":[1],"data_offsets":[4])"), "1234"),
       {"tensor \"w\"", "data_offsets [4] must be [begin, end]"}},
      {"offsets not integers",
       file_of(t(ok_dtype + R"("shape":[1],"data_offsets":"0-4")"), "1234"),
       {"tensor \"w\"", "\"data_offsets\" must be an array of integers"}},
      {"begin after end",
       file_of(t(ok_dtype + R"("shape":[0],"data_offsets":[4,0])"), "1234"),
       {"tensor \"w\"", "data_offsets [4, 0] must have 0 <= begin <= end"}},
      {"negative begin",
       file_of(t(ok_dtype + R"("shape":[1],"data_offsets":[-4,0])"), "1234"),
       {"tensor \"w\"", "0 <= begin <= end"}},
      {"end past the buffer",
       file_of(t(ok_dtype + R"("shape":[2],"data_offsets":[0,8])"), "1234"),
       {"tensor \"w\"", "data_offsets [0, 8] end past the 4-byte data buffer"}},
      {"size disagrees with shape",
       file_of(t(ok_dtype + R"("shape":[3],"data_offsets":[0,8])"), "12345678"),
       {"tensor \"w\"", "shape [3] of F32 needs 12 bytes but data_offsets [0, 8] hold 8"}},
      {"overlap",
       file_of(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
               std::string(12, 'x')),
       {"tensor \"b\" [4, 12) overlaps tensor \"a\" [0, 8)"}},
      {"empty tensor inside another",
       file_of(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
               R"("z":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}})",
               std::string(8, 'x')),
       {"tensor \"z\" [4, 4) overlaps tensor \"a\" [0, 8)"}},
      {"hole",
       file_of(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
               R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
               std::string(12, 'x')),
       {"bytes [4, 8) of the data buffer, before tensor \"b\", belong to no tensor"}},
      {"hole at the start",
       file_of(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", std::string(6, 'x')),
       {"bytes [0, 2)", "before tensor \"a\""}},
      {"bytes after the last tensor",
       file_of(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", std::string(7, 'x')),
       {"bytes [4, 7) at the end of the data buffer belong to no tensor"}},
      {"duplicate name",
       file_of(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
               R"("w":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})",
               ""),
       {"duplicate key \"w\""}},
      {"metadata not an object",
       file_of(R"({"__metadata__":[]})", ""),
       {"__metadata__ must be an object of strings, found an array"}},
      {"metadata value not a string",
       file_of(R"({"__metadata__":{"epoch":3}})", ""),
       {"__metadata__ \"epoch\" must be a string, found a number"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.rule);
    std::string m = refusal(c.bytes);
    EXPECT_EQ(m.rfind("bad.safetensors: ", 0), 0u) << m;
    for (const std::string& s : c.says) EXPECT_NE(m.find(s), std::string::npos) << m;
  }
}

TEST(SafeTensors, OpenNamesTheFileItCannotRead) {
  TempDir dir;
  auto message = [](const std::string& path) {
    try {
      SafeTensorsFile::open(path);
    } catch (const SafeTensorsError& e) {
      return std::string(e.what());
    }
    return std::string("opened");
  };
  std::string missing = dir / "missing.safetensors";
  EXPECT_EQ(message(missing), missing + ": cannot open: No such file or directory");
  std::string folder = dir / "folder";
  fs::create_directory(folder);
  EXPECT_EQ(message(folder), folder + ": not a regular file");
  std::string empty = dir / "empty.safetensors";
  std::ofstream(empty).close();
  EXPECT_EQ(message(empty), empty + ": the file is 0 bytes, shorter than the 8-byte header length");
  std::string bad = dir / "bad.safetensors";
  std::ofstream(bad, std::ios::binary) << file_of(R"({"w":{"dtype":"X"}})", "");
  EXPECT_NE(message(bad).find(bad + ": tensor \"w\": unknown dtype \"X\""), std::string::npos);
}

TEST(SafeTensors, WriterRefusalsLeaveTheOldFileAlone) {
  TempDir dir;
  std::string path = dir / "w.safetensors";
  std::string four = "abcd";
  save_safetensors(path, std::vector<SafeTensor>{{"ok", dtypes::uint8, {4}, bytes_of(four)}});
  const std::string before = slurp(path);
  struct Case {
    const char* rule;
    std::vector<SafeTensor> tensors;
    std::string says;
  };
  const Case cases[] = {
      {"vector dtype", {{"v", dtypes::float32.vec(4), {0}, {}}}, "no name for dtype float32x4"},
      {"pointer dtype", {{"p", dtypes::float32.ptr(), {0}, {}}}, "no name for dtype ptr<float32"},
      {"void dtype", {{"v", DType(), {0}, {}}}, "no name for dtype void"},
      {"byte count",
       {{"b", dtypes::float32, {2}, bytes_of(four)}},
       "shape [2] of F32 needs 8 bytes but the data holds 4"},
      {"negative dim", {{"n", dtypes::uint8, {-4}, bytes_of(four)}}, "negative dimension"},
      {"overflow", {{"o", dtypes::float64, {1ll << 62}, bytes_of(four)}}, "beyond int64"},
      {"duplicate",
       {{"d", dtypes::uint8, {4}, bytes_of(four)}, {"d", dtypes::uint8, {0}, {}}},
       "tensor \"d\": the name is given twice"},
      {"reserved name", {{"__metadata__", dtypes::uint8, {0}, {}}}, "reserved for the metadata"},
      {"name not UTF-8",
       {{"x", dtypes::uint8, {0}, {}}, {"bad\xff", dtypes::uint8, {0}, {}}},
       "the name of tensor #1 is not valid UTF-8"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.rule);
    try {
      save_safetensors(path, c.tensors);
      ADD_FAILURE() << "saved";
    } catch (const SafeTensorsError& e) {
      std::string m = e.what();
      EXPECT_EQ(m.rfind(path + ": ", 0), 0u) << m;
      EXPECT_NE(m.find(c.says), std::string::npos) << m;
    }
    EXPECT_EQ(slurp(path), before);
    EXPECT_FALSE(fs::exists(path + ".tmp"));
  }
  EXPECT_THROW(save_safetensors(path, {}, {{"k", "\xc0"}}), SafeTensorsError);
  EXPECT_EQ(slurp(path), before);
}

TEST(SafeTensors, AFailedWriteLeavesNoTemporaryFile) {
  TempDir dir;
  std::string four = "abcd";
  std::vector<SafeTensor> tensors = {{"t", dtypes::uint8, {4}, bytes_of(four)}};
  std::string folder = dir / "folder";  // rename cannot replace a non-empty directory
  fs::create_directories(fs::path(folder) / "inside");
  try {
    save_safetensors(folder, tensors);
    ADD_FAILURE() << "saved";
  } catch (const SafeTensorsError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot rename"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(folder + ".tmp"));
  EXPECT_TRUE(fs::is_directory(fs::path(folder) / "inside"));
  std::string nowhere = dir / "no/such/dir.safetensors";
  try {
    save_safetensors(nowhere, tensors);
    ADD_FAILURE() << "saved";
  } catch (const SafeTensorsError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot create " + nowhere + ".tmp"), std::string::npos)
        << e.what();
  }
}

// ---- safetensors: fuzz -------------------------------------------------------------------

// What every accepted file must satisfy, checked independently of the reader's code.
void expect_consistent(const SafeTensorsFile& f, size_t file_size) {
  std::span<const std::byte> buf = f.buffer();
  ASSERT_LE(buf.size() + 8, file_size);
  std::vector<std::pair<size_t, size_t>> ranges;
  for (const SafeTensor& t : f.tensors()) {
    auto begin = uintptr_t(t.data.data()) - uintptr_t(buf.data());
    ASSERT_LE(begin, buf.size()) << t.name;
    ASSERT_LE(t.data.size(), buf.size() - begin) << t.name;
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    ASSERT_TRUE(t.dtype.is_scalar()) << t.name;
    ASSERT_EQ(t.data.size(), uint64_t(numel * t.dtype.itemsize())) << t.name;
    ranges.emplace_back(begin, begin + t.data.size());
  }
  std::sort(ranges.begin(), ranges.end());
  size_t pos = 0;
  for (auto [b, e] : ranges) {
    ASSERT_EQ(b, pos);
    pos = e;
  }
  ASSERT_EQ(pos, buf.size());
}

std::string valid_file() {
  std::vector<std::string> data = {std::string(24, 'a'), std::string(6, 'b'), "", "c"};
  std::vector<SafeTensor> tensors = {
      {"emb.weight", dtypes::float32, {2, 3}, bytes_of(data[0])},
      {"ln.bias", dtypes::bfloat16, {3}, bytes_of(data[1])},
      {"empty", dtypes::int64, {0, 4}, bytes_of(data[2])},
      {"flag", dtypes::bool_, {}, bytes_of(data[3])},
  };
  TempDir dir;
  std::string path = dir / "v.safetensors";
  save_safetensors(path, tensors, {{"format", "pt"}});
  return slurp(path);
}

TEST(SafeTensorsFuzz, MutatedHeadersParseConsistentlyOrThrow) {
  const char* n = std::getenv("KITTEN_FUZZ_COUNT");
  uint64_t seed = seed_from("KITTEN_FUZZ_SEED");
  int64_t count = n ? std::atoll(n) : 4000;
  std::printf("safetensors fuzz: %lld cases, seed %llu (KITTEN_FUZZ_SEED replays it)\n",
              (long long)count, (unsigned long long)seed);
  SCOPED_TRACE("KITTEN_FUZZ_SEED=" + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::string file = valid_file();
  const size_t header_len = file.size() - 31 - 8;  // the data buffer is 31 bytes
  ASSERT_NO_FATAL_FAILURE(expect_consistent(SafeTensorsFile::parse(file), file.size()));

  int accepted = 0, refused = 0;
  auto attempt = [&](const std::string& bytes) {
    try {
      SafeTensorsFile f = SafeTensorsFile::parse(bytes, "fuzz");
      expect_consistent(f, bytes.size());
      ++accepted;
    } catch (const SafeTensorsError&) {
      ++refused;
    }
  };
  // Every truncation loses bytes the header promised.
  for (size_t len = 0; len < file.size(); ++len)
    EXPECT_THROW(SafeTensorsFile::parse(file.substr(0, len)), SafeTensorsError) << len;
  // Length fields near and far from the true one.
  std::vector<uint64_t> lengths = {0, 1, 2, 7, 8, ~0ull, 1ull << 63, 100'000'001, file.size()};
  for (int d = -16; d <= 16; ++d) lengths.push_back(header_len + d);
  for (int i = 0; i < 32; ++i) lengths.push_back(rng() >> (rng() % 64));
  for (uint64_t len : lengths) attempt(le64(len) + file.substr(8));
  // Bytes of the header replaced, 1 to 4 at a time, half of them by JSON's own characters.
  const std::string json_chars = "{}[]\":,-+.eE0123456789 \\utrfaln";
  for (int64_t i = 0; i < count; ++i) {
    std::string bytes = file;
    for (int k = 1 + int(rng() % 4); k > 0; --k) {
      size_t at = 8 + rng() % header_len;
      bytes[at] = rng() % 2 ? json_chars[rng() % json_chars.size()] : char(rng());
    }
    attempt(bytes);
  }
  std::printf("safetensors fuzz: %d accepted, %d refused\n", accepted, refused);
  EXPECT_GT(accepted, 0);  // both outcomes were exercised
  EXPECT_GT(refused, 0);
}

}  // namespace
}  // namespace kitten
