#include "frontend/minilm.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>

#include "frontend/json.h"
#include "frontend/safetensors.h"

namespace kitten {

std::string minilm_dir() {
  if (const char* d = std::getenv("KITTEN_MINILM_DIR"); d && *d) return d;
  std::string cmd = std::string("bash '") + KITTEN_SOURCE_DIR + "/tools/fetch_minilm.sh' 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  if (!p) throw std::runtime_error("minilm: cannot run tools/fetch_minilm.sh");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p.get())) out.append(buf.data(), n);
  int rc = pclose(p.release());
  while (!out.empty() && out.back() == '\n') out.pop_back();
  if (rc != 0) throw std::runtime_error("minilm: fetching the model failed:\n" + out);
  return out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
}

BertConfig BertConfig::from_json(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::string text;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), f)) text.append(buf.data(), n);
  std::fclose(f);
  JsonValue j = JsonValue::parse(text);
  BertConfig c;
  auto get = [&](const char* key, int64_t& v) {
    if (const JsonValue* x = j.find(key)) v = x->as_int();
  };
  get("num_hidden_layers", c.layers);
  get("hidden_size", c.hidden);
  get("num_attention_heads", c.heads);
  get("intermediate_size", c.intermediate);
  get("vocab_size", c.vocab);
  get("max_position_embeddings", c.max_positions);
  get("type_vocab_size", c.type_vocab);
  if (const JsonValue* x = j.find("layer_norm_eps")) c.eps = x->as_double();
  if (const JsonValue* x = j.find("hidden_act"); x && x->as_string() != "gelu")
    throw std::runtime_error(path + ": hidden_act " + x->as_string() + " (only gelu is supported)");
  if (c.hidden % c.heads)
    throw std::runtime_error(path + ": hidden_size is not a multiple of num_attention_heads");
  return c;
}

MiniLM MiniLM::load(const std::string& dir, const std::string& device, DType weight_dtype) {
  MiniLM m(BertConfig::from_json(dir + "/config.json"),
           WordPieceTokenizer::from_file(dir + "/vocab.txt"));
  m.device_ = device;
  SafeTensorsFile file = SafeTensorsFile::open(dir + "/model.safetensors");
  for (const SafeTensor& t : file.tensors()) {
    if (!t.dtype.is_float()) continue;  // position_ids
    Tensor x = Tensor::from_bytes(t.data, t.shape, t.dtype, "cpu");
    if (t.dtype != weight_dtype) x = x.cast(weight_dtype);
    m.weights_[t.name] = x.to(device);
  }
  return m;
}

const Tensor& MiniLM::w(const std::string& name) const {
  auto it = weights_.find(name);
  if (it == weights_.end()) throw std::runtime_error("minilm: no weight " + name);
  return it->second;
}

Tensor MiniLM::linear(const Tensor& x, const std::string& prefix) const {
  return x.matmul(w(prefix + ".weight").transpose()) + w(prefix + ".bias");
}

Tensor MiniLM::norm(const Tensor& x, const std::string& prefix) const {
  return x.layernorm(w(prefix + ".weight"), w(prefix + ".bias"), config_.eps);
}

Tensor MiniLM::embed(const std::vector<std::vector<int32_t>>& ids) const {
  const BertConfig& c = config_;
  int64_t b = int64_t(ids.size()), t = 0;
  for (const auto& s : ids) t = std::max<int64_t>(t, int64_t(s.size()));
  if (b == 0 || t == 0) throw std::invalid_argument("minilm: no tokens to embed");
  if (t > c.max_positions)
    throw std::invalid_argument("minilm: " + std::to_string(t) + " tokens (at most " +
                                std::to_string(c.max_positions) + ")");
  std::vector<double> flat(size_t(b * t), 0), mask(size_t(b * t), 0);
  for (int64_t i = 0; i < b; ++i)
    for (size_t j = 0; j < ids[size_t(i)].size(); ++j) {
      flat[size_t(i * t) + j] = ids[size_t(i)][j];
      mask[size_t(i * t) + j] = 1;
    }
  Tensor tok = Tensor::from_doubles(flat, {b, t}, dtypes::int32, device_);
  Tensor keep = Tensor::from_doubles(mask, {b, t}, dtypes::float32, device_);
  int64_t h = c.hidden, heads = c.heads, d = h / heads;

  Tensor x = w("embeddings.word_embeddings.weight").embedding(tok) +
             w("embeddings.position_embeddings.weight").slice(0, 0, t) +
             w("embeddings.token_type_embeddings.weight").slice(0, 0, 1);
  x = norm(x, "embeddings.LayerNorm");
  Tensor key_mask = keep.reshape({b, 1, 1, t}).gt(keep.scalar(0));
  for (int64_t l = 0; l < c.layers; ++l) {
    std::string p = "encoder.layer." + std::to_string(l) + ".";
    auto heads_of = [&](const Tensor& y) {
      return y.reshape({b, t, heads, d}).permute({0, 2, 1, 3});
    };
    Tensor q = heads_of(linear(x, p + "attention.self.query"));
    Tensor k = heads_of(linear(x, p + "attention.self.key"));
    Tensor v = heads_of(linear(x, p + "attention.self.value"));
    Tensor a = Tensor::scaled_dot_product_attention(q, k, v, key_mask)
                   .permute({0, 2, 1, 3})
                   .reshape({b, t, h});
    x = norm(linear(a, p + "attention.output.dense") + x, p + "attention.output.LayerNorm");
    Tensor f = linear(linear(x, p + "intermediate.dense").gelu(), p + "output.dense");
    x = norm(f + x, p + "output.LayerNorm");
  }
  // Mean over the unmasked tokens, then L2 normalisation.
  Tensor m = keep.reshape({b, t, 1});
  Tensor pooled = (x * m).sum({1}) / m.sum({1}).maximum(m.scalar(1e-9));
  Tensor len = (pooled * pooled).sum({1}, true).sqrt().maximum(pooled.scalar(1e-12));
  return pooled / len;
}

Tensor MiniLM::encode(const std::vector<std::string>& sentences) const {
  std::vector<std::vector<int32_t>> ids;
  for (const std::string& s : sentences) ids.push_back(tokenizer_.encode(s));
  return embed(ids);
}

}  // namespace kitten
