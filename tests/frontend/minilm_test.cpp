// all-MiniLM-L6-v2 end to end with its real weights (fetched into the cache on first use)
// against reference embeddings from an independent plain-torch implementation
// (tools/gpu/minilm_reference.py, run on the GPU machine from the same float16 weights,
// computed in float32).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "frontend/minilm.h"
#include "tests/frontend/frontend_test_util.h"

namespace kitten {
namespace {

std::vector<std::vector<double>> reference() {
  std::vector<std::vector<double>> out;
  for (const std::string& l : read_lines(kFrontendData + "minilm_embeddings.txt")) {
    std::istringstream s(l);
    out.emplace_back();
    for (double v; s >> v;) out.back().push_back(v);
  }
  return out;
}

double cosine(const double* a, const std::vector<double>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

class MiniLMEmbeddings : public testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { skip_unavailable(GetParam()); }
};

TEST_P(MiniLMEmbeddings, MatchTheTorchReference) {
  MiniLM model = MiniLM::load(minilm_dir(), GetParam(), dtypes::float16);
  std::vector<std::string> sentences = read_lines(kFrontendData + "minilm_sentences.txt");
  auto want = reference();
  ASSERT_EQ(want.size(), sentences.size());
  // The emulator runs one short sentence; the others every sentence in one padded batch.
  size_t n = GetParam() == "emu" ? 1 : sentences.size();
  sentences.resize(n);
  Tensor e = model.encode(sentences);
  ASSERT_EQ(e.shape(), (Shape{int64_t(n), 384}));
  std::vector<double> got = e.to_doubles();
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(want[i].size(), 384u);
    EXPECT_GE(cosine(got.data() + i * 384, want[i]), 0.99999)
        << "sentence " << i + 1 << ": " << sentences[i];
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, MiniLMEmbeddings, testing::ValuesIn(frontend_devices()));

#ifndef KITTEN_CUDA_TESTS
TEST(BertConfig, ReadsTheHuggingFaceConfig) {
  BertConfig c = BertConfig::from_json(minilm_dir() + "/config.json");
  EXPECT_EQ(c.layers, 6);
  EXPECT_EQ(c.hidden, 384);
  EXPECT_EQ(c.heads, 12);
  EXPECT_EQ(c.intermediate, 1536);
  EXPECT_DOUBLE_EQ(c.eps, 1e-12);
}
#endif

}  // namespace
}  // namespace kitten
