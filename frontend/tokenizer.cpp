#include "frontend/tokenizer.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>

namespace kitten {
namespace {

// How BertNormalizer and BertPreTokenizer treat a code point: dropped (controls, format,
// private use, nonspacing marks, U+FFFD), whitespace, punctuation (split off as a word of
// its own) or a CJK ideograph (surrounded by spaces, hence a word of its own).
enum CharClass : uint8_t { kWord, kDrop, kSpace, kPunct, kCjk };

struct ClassRun {
  char32_t first;
  CharClass cls;
};
struct StripPair {
  char32_t cp, to;
};
struct StripMulti {
  char32_t cp;
  char32_t to[3];  // 0-terminated when shorter
};
struct LowerRun {
  char32_t first, last;
  int32_t delta;
  uint8_t stride;
};

#include "frontend/tokenizer_unicode.inc"

constexpr size_t kMaxWordChars = 100;  // longer words are [UNK], as in BERT

CharClass char_class(char32_t cp) {
  auto it = std::upper_bound(std::begin(kClassRuns), std::end(kClassRuns), cp,
                             [](char32_t c, const ClassRun& r) { return c < r.first; });
  return std::prev(it)->cls;
}

char32_t to_lower(char32_t cp) {
  if (cp < 0x80) return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
  auto it = std::lower_bound(std::begin(kLowerRuns), std::end(kLowerRuns), cp,
                             [](const LowerRun& r, char32_t c) { return r.last < c; });
  if (it == std::end(kLowerRuns) || cp < it->first || (cp - it->first) % it->stride) return cp;
  return static_cast<char32_t>(static_cast<int32_t>(cp) + it->delta);
}

// Appends cp after NFD without nonspacing marks, then lower-cased (BertNormalizer's order).
void append_stripped_lower(char32_t cp, std::u32string& out) {
  if (cp >= 0xAC00 && cp <= 0xD7A3) {  // Hangul syllables decompose algorithmically
    char32_t s = cp - 0xAC00;
    out += static_cast<char32_t>(0x1100 + s / 588);
    out += static_cast<char32_t>(0x1161 + s % 588 / 28);
    if (s % 28) out += static_cast<char32_t>(0x11A7 + s % 28);
    return;
  }
  if (cp >= 0xC0) {
    auto p = std::lower_bound(std::begin(kStrip), std::end(kStrip), cp,
                              [](const StripPair& e, char32_t c) { return e.cp < c; });
    if (p != std::end(kStrip) && p->cp == cp) {
      out += to_lower(p->to);
      return;
    }
    auto m = std::lower_bound(std::begin(kStripMulti), std::end(kStripMulti), cp,
                              [](const StripMulti& e, char32_t c) { return e.cp < c; });
    if (m != std::end(kStripMulti) && m->cp == cp) {
      for (char32_t c : m->to)
        if (c) out += to_lower(c);
      return;
    }
  }
  out += to_lower(cp);
}

constexpr char32_t kInvalid = 0x110000;  // not a code point: bytes that are not UTF-8

// Decodes the code point at text[i] and advances i; a byte that does not start a
// well-formed UTF-8 sequence (overlong, surrogate, beyond U+10FFFF, cut short) is kInvalid.
char32_t next_code_point(std::string_view text, size_t& i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned char b = byte(i++);
  if (b < 0x80) return b;
  size_t len = b >= 0xF0 ? 3 : b >= 0xE0 ? 2 : b >= 0xC0 ? 1 : 0;
  if (len == 0 || b > 0xF4 || i + len > text.size()) return kInvalid;
  char32_t cp = b & (0x3F >> len);
  for (size_t k = 0; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return kInvalid;
    cp = cp << 6 | (byte(i + k) & 0x3F);
  }
  static constexpr char32_t kMin[] = {0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return kInvalid;
  i += len;
  return cp;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();)
    if (next_code_point(s, i) == kInvalid) return false;
  return true;
}

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
    return;
  }
  static constexpr unsigned char kLead[] = {0, 0xC0, 0xE0, 0xF0};
  int len = cp < 0x800 ? 1 : cp < 0x10000 ? 2 : 3;
  out += static_cast<char>(kLead[len] | (cp >> 6 * len));
  for (int k = len - 1; k >= 0; --k) out += static_cast<char>(0x80 | ((cp >> 6 * k) & 0x3F));
}

// BertNormalizer: clean text, pad CJK ideographs, strip accents, lower-case.
std::u32string normalize(std::string_view text) {
  std::u32string out;
  for (size_t i = 0; i < text.size();) {
    char32_t cp = next_code_point(text, i);
    if (cp == kInvalid) continue;  // dropped, as U+FFFD is
    switch (char_class(cp)) {
      case kDrop:
        break;
      case kSpace:
        out += U' ';
        break;
      case kCjk:
        out += U' ';
        append_stripped_lower(cp, out);
        out += U' ';
        break;
      default:
        append_stripped_lower(cp, out);
    }
  }
  return out;
}

}  // namespace

WordPieceTokenizer WordPieceTokenizer::from_file(const std::string& vocab_path) {
  std::ifstream in(vocab_path, std::ios::binary);
  if (!in)
    throw TokenizerError("cannot read the vocab file '" + vocab_path +
                         "' (a BERT vocab.txt; tools/fetch_minilm.sh fetches the MiniLM one)");
  std::vector<std::string> vocab;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    vocab.push_back(std::move(line));
  }
  if (in.bad()) throw TokenizerError("error reading the vocab file '" + vocab_path + "'");
  return WordPieceTokenizer(std::move(vocab), vocab_path);
}

WordPieceTokenizer::WordPieceTokenizer(std::vector<std::string> vocab, std::string source)
    : vocab_(std::move(vocab)) {
  auto fail = [&](size_t line, const std::string& what) {
    throw TokenizerError(source + ":" + std::to_string(line + 1) + ": " + what);
  };
  ids_.reserve(vocab_.size());
  for (size_t i = 0; i < vocab_.size(); ++i) {
    const std::string& tok = vocab_[i];
    if (tok.empty()) fail(i, "empty token (a vocab has one token per line)");
    if (!valid_utf8(tok)) fail(i, "token is not valid UTF-8");
    auto [it, fresh] = ids_.emplace(tok, static_cast<int32_t>(i));
    if (!fresh)
      fail(i,
           "duplicate token '" + tok + "' (first on line " + std::to_string(it->second + 1) + ")");
  }
  auto require = [&](const char* name) {
    auto id = find(name);
    if (!id) throw TokenizerError(source + ": the vocab has no " + name + " token");
    return *id;
  };
  unk_ = require("[UNK]");
  cls_ = require("[CLS]");
  sep_ = require("[SEP]");
  for (const char* name : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
    if (auto id = find(name)) specials_.emplace_back(name, *id);
}

std::optional<int32_t> WordPieceTokenizer::find(std::string_view token) const {
  auto it = ids_.find(token);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

// Greedy longest-match-first over the word's characters; a word longer than kMaxWordChars
// characters, or with a part that matches nothing, is one [UNK].
void WordPieceTokenizer::word_pieces(std::string_view word, size_t chars,
                                     std::vector<int32_t>& out) const {
  size_t mark = out.size();
  std::string piece;
  for (size_t start = 0; start < word.size();) {
    std::optional<int32_t> id;
    size_t end = word.size();
    for (; end > start; --end) {
      if (end < word.size() && (static_cast<unsigned char>(word[end]) & 0xC0) == 0x80) continue;
      piece.assign(start > 0 ? "##" : "").append(word.substr(start, end - start));
      if ((id = find(piece))) break;
    }
    if (!id || chars > kMaxWordChars) {
      out.resize(mark);
      out.push_back(unk_);
      return;
    }
    out.push_back(*id);
    start = end;
  }
}

// Pre-tokenizes the normalised text of one segment (BertPreTokenizer: split on whitespace,
// punctuation characters alone) and appends the pieces of each word.
void WordPieceTokenizer::encode_segment(std::string_view text, std::vector<int32_t>& out,
                                        size_t limit) const {
  std::string word;
  size_t chars = 0;
  auto flush = [&] {
    if (!word.empty() && out.size() < limit) word_pieces(word, chars, out);
    word.clear();
    chars = 0;
  };
  for (char32_t cp : normalize(text)) {
    CharClass cls = char_class(cp);
    if (cls == kSpace || cls == kPunct) flush();
    if (cls == kSpace) continue;
    append_utf8(cp, word);
    ++chars;
    if (cls == kPunct) flush();
  }
  flush();
}

// Splits the raw text at the special tokens written in it (HF matches its added tokens
// before normalising), encoding the segments between them.
void WordPieceTokenizer::encode_into(std::string_view text, std::vector<int32_t>& out,
                                     size_t limit) const {
  size_t begin = 0;
  for (size_t i = text.find('['); i != std::string_view::npos && out.size() < limit;
       i = text.find('[', i + 1)) {
    for (const auto& [name, id] : specials_) {
      if (!text.substr(i).starts_with(name)) continue;
      encode_segment(text.substr(begin, i - begin), out, limit);
      out.push_back(id);
      begin = i + name.size();
      break;
    }
  }
  if (out.size() < limit) encode_segment(text.substr(begin), out, limit);
  if (out.size() > limit) out.resize(limit);
}

std::vector<int32_t> WordPieceTokenizer::encode(std::string_view text, size_t max_tokens) const {
  if (max_tokens < 2)
    throw std::invalid_argument("WordPieceTokenizer::encode: max_tokens is " +
                                std::to_string(max_tokens) + ", needs 2 for [CLS] and [SEP]");
  std::vector<int32_t> ids{cls_};
  encode_into(text, ids, max_tokens - 1);
  ids.push_back(sep_);
  return ids;
}

std::vector<std::string> WordPieceTokenizer::tokenize(std::string_view text) const {
  std::vector<int32_t> ids;
  encode_into(text, ids, SIZE_MAX);
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (int32_t id : ids) pieces.push_back(token(id));
  return pieces;
}

}  // namespace kitten
