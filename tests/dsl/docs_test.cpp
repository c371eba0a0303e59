// docs/uops.md is generated from the registry: this fails when someone changed a spec and
// did not run `make docs`. Its own executable, so that no test-registered op is present.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "dsl/ops.h"
#include "tools/uops_doc.h"

namespace kitten {
namespace {

TEST(Docs, UopsMarkdownIsUpToDate) {
  std::ifstream in(std::string(KITTEN_SOURCE_DIR) + "/docs/uops.md");
  ASSERT_TRUE(in) << "docs/uops.md is missing: run `make docs`";
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_TRUE(ss.str() == ops_doc()) << "docs/uops.md is stale: run `make docs`";
}

TEST(Docs, EveryCoreOpIsDocumented) {
  std::string doc = ops_doc();
  for (int i = 0; i < kNumCoreOps; ++i)
    EXPECT_NE(doc.find("\n### " + op_name(Op(i)) + "\n"), std::string::npos) << op_name(Op(i));
}

}  // namespace
}  // namespace kitten
