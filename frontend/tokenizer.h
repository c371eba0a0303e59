// WordPiece tokenizer of BERT-style text encoders (all-MiniLM-L6-v2 and other uncased BERT
// vocabularies): UTF-8 text to the token ids HuggingFace `tokenizers` gives with its
// BertNormalizer (lower-casing, accent stripping), BertPreTokenizer and WordPiece model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kitten {

struct TokenizerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class WordPieceTokenizer {
 public:
  // Reads a vocab.txt: one token per line, its id the 0-based line number. Throws
  // TokenizerError naming the file (and the line) when it cannot be read, a line is empty,
  // not UTF-8 or a duplicate, or [UNK], [CLS] or [SEP] is missing.
  static WordPieceTokenizer from_file(const std::string& vocab_path);
  // The same from the tokens themselves; `source` names them in error messages.
  explicit WordPieceTokenizer(std::vector<std::string> vocab, std::string source = "vocab");

  // [CLS], the word pieces of `text`, [SEP]: at most max_tokens ids (>= 2), the pieces cut
  // at the end to fit, as sentence-transformers' truncation does. Bytes that are not UTF-8
  // are dropped (like U+FFFD). The special tokens [PAD] [UNK] [CLS] [SEP] [MASK] written in
  // the text are kept as such, as HF does.
  std::vector<int32_t> encode(std::string_view text, size_t max_tokens = 256) const;
  // The word pieces of `text` ("un", "##aff", "##able"), without [CLS]/[SEP] or truncation.
  std::vector<std::string> tokenize(std::string_view text) const;

  size_t vocab_size() const { return vocab_.size(); }
  std::optional<int32_t> find(std::string_view token) const;
  const std::string& token(int32_t id) const { return vocab_.at(static_cast<size_t>(id)); }
  int32_t unk_id() const { return unk_; }
  int32_t cls_id() const { return cls_; }
  int32_t sep_id() const { return sep_; }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Append the ids of `text` to `out`, stopping at `limit` ids.
  void encode_into(std::string_view text, std::vector<int32_t>& out, size_t limit) const;
  void encode_segment(std::string_view text, std::vector<int32_t>& out, size_t limit) const;
  void word_pieces(std::string_view word, size_t chars, std::vector<int32_t>& out) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int32_t, Hash, std::equal_to<>> ids_;
  std::vector<std::pair<std::string, int32_t>> specials_;  // matched in the raw text
  int32_t unk_ = -1, cls_ = -1, sep_ = -1;
};

}  // namespace kitten
