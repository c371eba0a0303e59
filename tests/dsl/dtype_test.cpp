#include <gtest/gtest.h>

#include "dsl/dtype.h"

namespace kitten {
namespace {

TEST(DType, ScalarProperties) {
  EXPECT_EQ(dtypes::float32.name(), "float32");
  EXPECT_TRUE(dtypes::float16.is_float());
  EXPECT_FALSE(dtypes::float16.is_int());
  EXPECT_TRUE(dtypes::uint8.is_unsigned());
  EXPECT_FALSE(dtypes::int8.is_unsigned());
  EXPECT_FALSE(dtypes::bool_.is_int());
  EXPECT_TRUE(dtypes::bool_.is_bool());
  EXPECT_EQ(dtypes::bfloat16.bits(), 16);
  EXPECT_EQ(dtypes::float8_e4m3.itemsize(), 1);
  EXPECT_EQ(dtypes::int8.imin(), -128);
  EXPECT_EQ(dtypes::int8.imax(), 127);
  EXPECT_EQ(dtypes::uint16.imax(), 65535);
  EXPECT_EQ(dtypes::int64.imin(), INT64_MIN);
  EXPECT_EQ(dtypes::uint64.umax(), UINT64_MAX);
  EXPECT_EQ(dtypes::float8_e5m2.narrow_float(), &kFloat8E5M2);
  EXPECT_EQ(dtypes::float32.narrow_float(), nullptr);
  EXPECT_TRUE(dtypes::void_.is_void());
  EXPECT_EQ(dtypes::void_.itemsize(), 0);
  EXPECT_EQ(DType(), dtypes::void_);
}

TEST(DType, VectorsAndPointersAreInterned) {
  DType v = dtypes::bfloat16.vec(8);
  EXPECT_EQ(v, dtypes::bfloat16.vec(8));
  EXPECT_NE(v, dtypes::bfloat16.vec(4));
  EXPECT_EQ(v.name(), "bfloat16x8");
  EXPECT_EQ(v.count(), 8);
  EXPECT_EQ(v.itemsize(), 16);
  EXPECT_EQ(v.element(), dtypes::bfloat16);
  EXPECT_TRUE(v.is_float());
  DType p = dtypes::float32.ptr(AddrSpace::Local, 256);
  EXPECT_EQ(p, dtypes::float32.ptr(AddrSpace::Local, 256));
  EXPECT_NE(p, dtypes::float32.ptr(AddrSpace::Local));
  EXPECT_NE(p, dtypes::float32.ptr(AddrSpace::Reg, 256));
  EXPECT_EQ(p.name(), "ptr<float32,local,256>");
  EXPECT_EQ(p.pointee(), dtypes::float32);
  EXPECT_EQ(p.space(), AddrSpace::Local);
  EXPECT_EQ(p.size(), 256);
  EXPECT_EQ(p.itemsize(), 8);
  EXPECT_FALSE(p.is_float());
  EXPECT_EQ(v.ptr().name(), "ptr<bfloat16x8,global>");
}

TEST(DType, ParseReadsEveryCanonicalName) {
  std::vector<DType> all(std::begin(dtypes::kScalars), std::end(dtypes::kScalars));
  for (DType s : dtypes::kScalars) {
    all.push_back(s.vec(4));
    all.push_back(s.ptr());
    all.push_back(s.vec(2).ptr(AddrSpace::Reg, 3));
  }
  all.push_back(dtypes::void_);
  all.push_back(dtypes::token);
  for (DType d : all) {
    auto parsed = DType::parse(d.name());
    ASSERT_TRUE(parsed.has_value()) << d.name();
    EXPECT_EQ(*parsed, d) << d.name();
  }
  for (const char* bad : {"", "float", "float32x", "float32x1", "float32x300", "ptr<float32>",
                          "ptr<float32,heap>", "ptr<void,global>", "ptr<float32,local,0>", "x4"})
    EXPECT_FALSE(DType::parse(bad).has_value()) << bad;
}

TEST(DType, BadDerivedTypesThrowWithAMessage) {
  auto expect_throw = [](auto f, const char* needle) {
    try {
      f();
      ADD_FAILURE() << "no throw, expected " << needle;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_throw([] { dtypes::float32.vec(1); }, "lanes must be in 2..256");
  expect_throw([] { dtypes::float32.vec(257); }, "lanes must be in 2..256");
  expect_throw([] { dtypes::float32.vec(4).vec(2); }, "only a scalar has vectors");
  expect_throw([] { dtypes::float32.ptr().vec(2); }, "only a scalar has vectors");
  expect_throw([] { dtypes::void_.ptr(); }, "cannot point to void");
  expect_throw([] { dtypes::token.ptr(); }, "cannot point to token");
  expect_throw([] { dtypes::int32.ptr(AddrSpace::Reg, 0); }, "size must be positive");
}

struct TestTile : DTypeExtension {
  int rows = 16;
};

TEST(DType, ExtensionsRegisterOnceAndCarryTheirPayload) {
  DType t = DType::extension("test_tile<16>", std::make_unique<TestTile>());
  EXPECT_TRUE(t.is_extension());
  EXPECT_EQ(t, DType::extension("test_tile<16>", std::make_unique<TestTile>()));
  EXPECT_EQ(dynamic_cast<const TestTile*>(t.extension())->rows, 16);
  EXPECT_EQ(*DType::parse("test_tile<16>"), t);
  EXPECT_EQ(t.ptr(AddrSpace::Local, 1).pointee(), t);
  EXPECT_THROW(DType::extension("float32", nullptr), std::invalid_argument);
  EXPECT_THROW(DType::extension("", nullptr), std::invalid_argument);
}

TEST(DType, StableHashIsTheNameHash) {
  EXPECT_EQ(dtypes::float32.stable_hash(), fnv1a("float32"));
  EXPECT_EQ(dtypes::float32.vec(4).stable_hash(), fnv1a("float32x4"));
}

}  // namespace
}  // namespace kitten
