// GGUF metadata under llama.cpp's keys: the hyper-parameters of a ModelSpec,
// and a Hugging Face tokenizer as tokenizer.ggml.* (gpt2 = byte-level BPE).
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "kiln/convert/parts.h"
#include "kiln/core/error.h"
#include "kiln/io/json_file.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::convert {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// GGUF token types (llama.cpp's llama_token_type).
enum : int32_t { kNormal = 1, kControl = 3, kUserDefined = 4, kUnused = 5 };

// Added tokens that are not flagged special but are control tokens all the
// same (llama.cpp's converter treats them so: "<|fim_prefix|>" and the like).
bool looks_special(const std::string& t) {
  auto wrapped = [&](std::string_view open, std::string_view close) {
    return t.size() >= open.size() + close.size() && t.compare(0, open.size(), open) == 0 &&
           t.compare(t.size() - close.size(), close.size(), close) == 0;
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xef\xbd\x9c", "\xef\xbd\x9c>");
}

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::string config_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return "";
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Periodic NoPE layouts: every k-th layer (k-1, 2k-1, ...) skips RoPE.
int64_t nope_interval(const ModelSpec& s) {
  for (int64_t k = 1; k <= s.n_layers + 1; ++k) {
    bool match = true;
    for (int64_t i = 0; i < s.n_layers && match; ++i)
      match = s.layer_uses_rope[size_t(i)] == ((i + 1) % k != 0);
    if (match) return k;
  }
  return 0;
}

}  // namespace

void write_model_metadata(GgufWriter& w, const ModelSpec& s, FileType ft,
                          const std::string& model_name) {
  const ConvertArch& arch = require_convert_arch(s.arch);
  const std::string a = std::string(arch.gguf_name) + ".";
  w.set_string("general.architecture", std::string(arch.gguf_name));
  w.set_string("general.type", "model");
  if (!model_name.empty()) w.set_string("general.name", model_name);
  w.set_u32(a + "block_count", uint32_t(s.n_layers));
  w.set_u32(a + "context_length", uint32_t(s.max_context));
  w.set_u32(a + "embedding_length", uint32_t(s.hidden));
  w.set_u32(a + "feed_forward_length", uint32_t(s.ffn_hidden));
  w.set_u32(a + "attention.head_count", uint32_t(s.n_heads));
  w.set_u32(a + "attention.head_count_kv", uint32_t(s.n_kv_heads));
  w.set_f32(a + "rope.freq_base", s.rope_theta);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", s.norm_eps);
  if (s.is_moe()) {
    w.set_u32(a + "expert_count", uint32_t(s.n_experts));
    w.set_u32(a + "expert_used_count", uint32_t(s.n_experts_used));
  }
  w.set_u32(a + "attention.key_length", uint32_t(s.head_dim));
  w.set_u32(a + "attention.value_length", uint32_t(s.head_dim));
  w.set_u32("general.file_type", uint32_t(ft));
  if (s.is_moe()) {
    w.set_u32(a + "expert_feed_forward_length", uint32_t(s.expert_ffn_hidden));
    // llama.cpp assumes Qwen3-MoE renormalises; say so only when it does not.
    if (!s.expert_weights_norm) w.set_bool(a + "expert_weights_norm", false);
    for (int64_t i = 0; i < s.n_layers; ++i)
      KILN_CHECK(s.layer_is_moe[size_t(i)], "converting ", s.arch,
                 " with dense layers among the MoE ones (mlp_only_layers, decoder_sparse_step) "
                 "is not supported yet");
  }
  w.set_u32(a + "vocab_size", uint32_t(s.vocab_size));
  w.set_u32(a + "rope.dimension_count", uint32_t(s.rope_dims));
  if (s.rope_scaling.kind == RopeScaling::Kind::Linear) {
    w.set_string(a + "rope.scaling.type", "linear");
    w.set_f32(a + "rope.scaling.factor", s.rope_scaling.factor);
  }
  if (s.arch == "smollm3") {
    const int64_t k = nope_interval(s);
    KILN_CHECK(k > 0, "smollm3: this no_rope_layers pattern is not periodic; a GGUF can only say "
                      "\"every k-th layer skips RoPE\"");
    // llama.cpp hard-codes 4; kiln reads the key when another interval is used.
    if (k != 4) w.set_u32(a + "no_rope_layer_interval", uint32_t(k));
  }
  w.set_u32("general.quantization_version", 2);
}

bool write_hf_tokenizer(GgufWriter& w, const std::string& dir, const json& config,
                        int64_t vocab_size) {
  const fs::path tok_path = fs::path(dir) / "tokenizer.json";
  std::error_code ec;
  if (!fs::exists(tok_path, ec)) return false;
  // Validates that kiln itself can run this tokenizer, and names its pre-tokenizer.
  const auto tok = Tokenizer::from_hf(tok_path.string());
  const std::string kind = tok->kind();
  KILN_CHECK(kind.rfind("bpe/", 0) == 0, tok_path.string(), ": only byte-level BPE tokenizers can be written");

  const json root = read_json_file(tok_path.string());
  const json& model = root["model"];
  const json& vocab = model["vocab"];
  const json added = root.value("added_tokens", json::array());
  int64_t n = vocab_size;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) n = std::max<int64_t>(n, it.value().get<int64_t>() + 1);
  for (const json& t : added) n = std::max<int64_t>(n, t.value("id", int64_t(-1)) + 1);
  // The embedding has vocab_size rows: a token past them could never be
  // looked up (llama.cpp refuses such a file).
  KILN_CHECK(vocab_size <= 0 || n <= vocab_size, tok_path.string(), ": ", n,
             " tokens, more than the model's vocab_size ", vocab_size);
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<int32_t> types(static_cast<size_t>(n), kUnused);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const size_t id = it.value().get<size_t>();
    tokens[id] = it.key();
    types[id] = kNormal;
  }
  for (const json& t : added) {
    const size_t id = t.value("id", size_t(0));
    const std::string content = t.value("content", "");
    tokens[id] = content;
    types[id] = t.value("special", false) || looks_special(content) ? kControl : kUserDefined;
  }
  // Ids the vocabulary leaves unused (the embedding is often padded).
  for (int64_t i = 0; i < n; ++i)
    if (types[size_t(i)] == kUnused) tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";

  std::vector<std::string> merges;
  for (const json& m : model.value("merges", json::array())) {
    if (m.is_string())
      merges.push_back(m.get<std::string>());
    else if (m.is_array() && m.size() == 2)
      merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    else
      fail(tok_path.string(), ": malformed merge ", m.dump());
  }

  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", kind.substr(4));
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_string_array("tokenizer.ggml.merges", merges);

  // Special ids as llama.cpp finds them: tokenizer_config.json's token names
  // first, then config.json's *_token_id.
  json tc = json::object();
  const fs::path tc_path = fs::path(dir) / "tokenizer_config.json";
  if (fs::exists(tc_path, ec)) tc = read_json_file(tc_path.string());
  std::map<std::string, int64_t> by_text;
  for (int64_t i = 0; i < n; ++i) by_text.emplace(tokens[size_t(i)], i);
  for (const char* which : {"bos", "eos", "unk", "sep", "pad"}) {
    int64_t id = -1;
    const std::string text = config_token(tc, (std::string(which) + "_token").c_str());
    if (!text.empty())
      if (auto it = by_text.find(text); it != by_text.end()) id = it->second;
    const std::string id_key = std::string(which) + "_token_id";
    if (id < 0 && config.contains(id_key) && config[id_key].is_number_integer())
      id = config[id_key].get<int64_t>();
    if (id < 0 || id >= n) continue;
    // gguf-py's spellings, "seperator" included.
    const std::string w_name = which;
    const std::string key = w_name == "pad" ? "padding" : w_name == "unk" ? "unknown"
                            : w_name == "sep" ? "seperator" : w_name;
    w.set_u32("tokenizer.ggml." + key + "_token_id", uint32_t(id));
  }
  for (const char* which : {"add_bos_token", "add_eos_token"})
    if (tc.contains(which) && tc[which].is_boolean())
      w.set_bool(std::string("tokenizer.ggml.") + which, tc[which].get<bool>());

  std::string tmpl;
  if (tc.contains("chat_template")) {
    const json& ct = tc["chat_template"];
    if (ct.is_string()) {
      tmpl = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const json& e : ct)
        if (e.value("name", "") == "default") tmpl = e.value("template", "");
    }
  }
  if (tmpl.empty() && fs::exists(fs::path(dir) / "chat_template.jinja", ec))
    tmpl = read_text(fs::path(dir) / "chat_template.jinja");
  if (!tmpl.empty()) w.set_string("tokenizer.chat_template", tmpl);
  return true;
}

}  // namespace kiln::convert
