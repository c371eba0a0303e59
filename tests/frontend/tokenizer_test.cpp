#include "frontend/tokenizer.h"

#include "frontend/minilm.h"
#include "tests/frontend/frontend_test_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace kitten {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<int32_t>;
using Pieces = std::vector<std::string>;

// all-MiniLM-L6-v2's vocab against the ids HF tokenizers gave (tools/minilm/make_token_ids.py).
TEST(WordPieceTokenizer, MatchesHuggingFaceOnMiniLmSentences) {
  std::string vocab = minilm_dir() + "/vocab.txt";  // fetched on first use
  WordPieceTokenizer tok = WordPieceTokenizer::from_file(vocab);
  EXPECT_EQ(tok.vocab_size(), 30522u);
  std::vector<std::string> sentences = read_lines(kFrontendData + "minilm_sentences.txt");
  std::vector<std::string> id_lines = read_lines(kFrontendData + "minilm_token_ids.txt");
  ASSERT_EQ(sentences.size(), id_lines.size());
  ASSERT_GE(sentences.size(), 10u);
  for (size_t i = 0; i < sentences.size(); ++i) {
    Ids want;
    std::istringstream ids(id_lines[i]);
    for (int32_t id; ids >> id;) want.push_back(id);
    EXPECT_EQ(tok.encode(sentences[i]), want) << "sentence " << i + 1 << ": " << sentences[i];
  }
}

WordPieceTokenizer tiny() {
  return WordPieceTokenizer(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "u",  "##n",
       "##na",  "hello", "world", ",",     "!",      "a",  "##a",   "cafe",   "中", "##é"},
      "tiny");
}

TEST(WordPieceTokenizer, GreedyLongestMatchWithContinuations) {
  WordPieceTokenizer tok = tiny();
  EXPECT_EQ(tok.tokenize("unaffable"), (Pieces{"un", "##aff", "##able"}));
  EXPECT_EQ(tok.tokenize("una"), (Pieces{"un", "##a"}));  // "un" before "u" + "##na"
  EXPECT_EQ(tok.tokenize("aaa"), (Pieces{"a", "##a", "##a"}));
  EXPECT_EQ(tok.encode("unaffable"), (Ids{2, 5, 6, 7, 3}));
}

TEST(WordPieceTokenizer, UnmatchedOrOverlongWordIsOneUnk) {
  WordPieceTokenizer tok = tiny();
  EXPECT_EQ(tok.tokenize("hello unaffablex world"), (Pieces{"hello", "[UNK]", "world"}));
  EXPECT_EQ(tok.tokenize("b"), (Pieces{"[UNK]"}));
  EXPECT_EQ(tok.tokenize(std::string(100, 'a')).size(), 100u);
  EXPECT_EQ(tok.tokenize(std::string(101, 'a')), (Pieces{"[UNK]"}));
}

TEST(WordPieceTokenizer, NormalisesLikeBert) {
  WordPieceTokenizer tok = tiny();
  EXPECT_EQ(tok.tokenize("HeLLo,WORLD!"), (Pieces{"hello", ",", "world", "!"}));
  EXPECT_EQ(tok.tokenize("Café CAFE\xCC\x81"), (Pieces{"cafe", "cafe"}));  // NFC and NFD é
  EXPECT_EQ(tok.tokenize("a中a"), (Pieces{"a", "中", "a"}));               // CJK split off
  EXPECT_EQ(tok.tokenize("\thello\r\n\x01world\xC2\xA0"), (Pieces{"hello", "world"}));
  EXPECT_EQ(tok.tokenize("hel\x7Flo"), (Pieces{"hello"}));  // controls are dropped
}

TEST(WordPieceTokenizer, InvalidUtf8IsDropped) {
  WordPieceTokenizer tok = tiny();
  EXPECT_EQ(tok.tokenize("hel\xFFlo"), (Pieces{"hello"}));
  EXPECT_EQ(tok.tokenize("hel\xC0\x80lo wor\xED\xA0\x80ld"), (Pieces{"hello", "world"}));
  EXPECT_EQ(tok.tokenize("hello\xE4\xB8"), (Pieces{"hello"}));  // cut short at the end
  EXPECT_EQ(tok.tokenize("\x80\xBF\xF8\xF5\x80\x80\x80"), (Pieces{}));
}

TEST(WordPieceTokenizer, EmptyTextIsClsSep) {
  WordPieceTokenizer tok = tiny();
  EXPECT_EQ(tok.encode(""), (Ids{2, 3}));
  EXPECT_EQ(tok.encode(" \t\n\x01"), (Ids{2, 3}));
}

TEST(WordPieceTokenizer, TruncationKeepsSepLast) {
  WordPieceTokenizer tok = tiny();
  EXPECT_EQ(tok.encode("hello world hello", 4), (Ids{2, 11, 12, 3}));
  EXPECT_EQ(tok.encode("unaffable world", 4), (Ids{2, 5, 6, 3}));  // cuts inside a word
  EXPECT_EQ(tok.encode("hello", 2), (Ids{2, 3}));
  EXPECT_EQ(tok.encode("hello world", 4), (Ids{2, 11, 12, 3}));
  EXPECT_THROW(tok.encode("hello", 1), std::invalid_argument);
}

TEST(WordPieceTokenizer, SpecialTokensInTextAreKept) {
  WordPieceTokenizer tok = tiny();
  EXPECT_EQ(tok.encode("hello[MASK]world"), (Ids{2, 11, 4, 12, 3}));
  EXPECT_EQ(tok.tokenize("[mask]"), (Pieces{"[UNK]", "[UNK]", "[UNK]"}));  // only as written
}

TEST(WordPieceTokenizer, BadVocabNamesFileAndLine) {
  fs::path dir = fs::temp_directory_path() / ("kitten_tokenizer_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  auto error_of = [&](const std::string& text) -> std::string {
    std::string path = (dir / "vocab.txt").string();
    std::ofstream(path, std::ios::binary) << text;
    try {
      WordPieceTokenizer::from_file(path);
    } catch (const TokenizerError& e) {
      return e.what();
    }
    return "no error";
  };
  std::string path = (dir / "vocab.txt").string();
  EXPECT_EQ(error_of("[UNK]\n[CLS]\n\n[SEP]\n"),
            path + ":3: empty token (a vocab has one token per line)");
  EXPECT_EQ(error_of("[UNK]\n[CLS]\n[SEP]\nab\r\nab\n"),
            path + ":5: duplicate token 'ab' (first on line 4)");
  EXPECT_EQ(error_of("[UNK]\n[CLS]\n[SEP]\na\xFF\n"), path + ":4: token is not valid UTF-8");
  EXPECT_EQ(error_of("[UNK]\n[SEP]\n"), path + ": the vocab has no [CLS] token");
  EXPECT_EQ(error_of("[UNK]\r\n[CLS]\r\n[SEP]"), "no error");
  std::string missing = (dir / "missing.txt").string();
  try {
    WordPieceTokenizer::from_file(missing);
    ADD_FAILURE() << "no error for a missing file";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("'" + missing + "'"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kitten
