// Tokenizer::from_gguf: the tokenizer.ggml.* metadata llama.cpp's converter
// writes, for byte-level BPE (gpt2) and SentencePiece (llama) vocabularies.
#include "kiln/core/error.h"
#include "kiln/io/gguf.h"
#include "kiln/tokenizer/bpe.h"
#include "kiln/tokenizer/spm.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

namespace {

// An id key, or -1 when absent or out of range (converters write 2^32-1 or -1
// for "none").
int32_t optional_id(const GgufFile& gguf, const char* key, size_t n_tokens) {
  const GgufValue* v = gguf.find(key);
  if (!v || !v->is_integer()) return -1;
  const int64_t id = v->as_int();
  return id >= 0 && static_cast<size_t>(id) < n_tokens ? static_cast<int32_t>(id) : -1;
}

std::vector<GgufTokenType> token_types(const GgufFile& gguf, size_t n_tokens) {
  std::vector<GgufTokenType> types(n_tokens, GgufTokenType::kNormal);
  if (!gguf.has("tokenizer.ggml.token_type")) return types;
  const std::vector<int64_t> raw = gguf.get_int_array("tokenizer.ggml.token_type");
  KILN_CHECK(raw.size() == n_tokens, gguf.path(), ": tokenizer.ggml.token_type has ", raw.size(),
             " entries for ", n_tokens, " tokens");
  for (size_t i = 0; i < n_tokens; ++i) {
    KILN_CHECK(raw[i] >= 0 && raw[i] <= 6, gguf.path(), ": token ", i, " has unknown type ",
               raw[i]);
    types[i] = static_cast<GgufTokenType>(raw[i]);
  }
  return types;
}

std::unique_ptr<Tokenizer> load_bpe(const GgufFile& gguf, std::vector<std::string> tokens) {
  BpeSpec spec;
  spec.source = gguf.path();
  const std::string pre = gguf.get_string_or("tokenizer.ggml.pre", "default");
  const auto kind = pre_tokenizer_from_gguf_name(pre);
  KILN_CHECK(kind.has_value(), gguf.path(), ": tokenizer.ggml.pre '", pre,
             "' is not supported (qwen2, qwen35, llama-bpe, smollm, gpt-2)");
  spec.pre = *kind;
  // Qwen's tokenizer.json declares an NFC normalizer; the GGUF does not carry
  // it, so it is applied here to tokenize as the model was trained.
  spec.nfc = spec.pre == PreTokenizer::kQwen2 || spec.pre == PreTokenizer::kQwen35;
  spec.ignore_merges = spec.pre == PreTokenizer::kLlama3;
  const auto types = token_types(gguf, tokens.size());
  spec.special.assign(tokens.size(), 0);
  spec.raw_text.assign(tokens.size(), 0);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto t = types[i];
    if (t != GgufTokenType::kControl && t != GgufTokenType::kUserDefined &&
        t != GgufTokenType::kUnknown)
      continue;
    const bool special = t != GgufTokenType::kUserDefined;
    spec.special[i] = special;
    spec.raw_text[i] = 1;
    spec.added.push_back({tokens[i], static_cast<int32_t>(i), special});
  }
  KILN_CHECK(gguf.has("tokenizer.ggml.merges"), gguf.path(),
             ": tokenizer.ggml.merges is missing (needed for a gpt2 tokenizer)");
  for (const std::string& m : gguf.get_string_array("tokenizer.ggml.merges")) {
    const size_t sp = m.find(' ', 1);
    KILN_CHECK(sp != std::string::npos, gguf.path(), ": malformed merge '", m, "'");
    spec.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }
  spec.bos_id = optional_id(gguf, "tokenizer.ggml.bos_token_id", tokens.size());
  spec.eos_id = optional_id(gguf, "tokenizer.ggml.eos_token_id", tokens.size());
  // llama.cpp's defaults: Llama 3 prompts start with BOS, other BPE ones not.
  spec.add_bos =
      gguf.get_bool_or("tokenizer.ggml.add_bos_token", spec.pre == PreTokenizer::kLlama3);
  spec.tokens = std::move(tokens);
  return make_bpe_tokenizer(std::move(spec));
}

std::unique_ptr<Tokenizer> load_spm(const GgufFile& gguf, std::vector<std::string> tokens) {
  SpmSpec spec;
  spec.source = gguf.path();
  spec.types = token_types(gguf, tokens.size());
  KILN_CHECK(gguf.has("tokenizer.ggml.scores"), gguf.path(),
             ": tokenizer.ggml.scores is missing (needed for a llama tokenizer)");
  spec.scores = gguf.get_float_array("tokenizer.ggml.scores");
  KILN_CHECK(spec.scores.size() == tokens.size(), gguf.path(), ": tokenizer.ggml.scores has ",
             spec.scores.size(), " entries for ", tokens.size(), " tokens");
  spec.bos_id = optional_id(gguf, "tokenizer.ggml.bos_token_id", tokens.size());
  spec.eos_id = optional_id(gguf, "tokenizer.ggml.eos_token_id", tokens.size());
  spec.unk_id = optional_id(gguf, "tokenizer.ggml.unknown_token_id", tokens.size());
  spec.add_bos = gguf.get_bool_or("tokenizer.ggml.add_bos_token", true);
  spec.add_space_prefix = gguf.get_bool_or("tokenizer.ggml.add_space_prefix", true);
  spec.tokens = std::move(tokens);
  return make_spm_tokenizer(std::move(spec));
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& gguf) {
  KILN_CHECK(gguf.has("tokenizer.ggml.model"), gguf.path(),
             ": no tokenizer in this GGUF (tokenizer.ggml.model is missing)");
  const std::string model = gguf.get_string("tokenizer.ggml.model");
  std::vector<std::string> tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  KILN_CHECK(!tokens.empty(), gguf.path(), ": tokenizer.ggml.tokens is empty");
  if (model == "gpt2") return load_bpe(gguf, std::move(tokens));
  if (model == "llama") return load_spm(gguf, std::move(tokens));
  fail(gguf.path(), ": tokenizer.ggml.model '", model,
       "' is not supported (gpt2: byte-level BPE, llama: SentencePiece)");
}

}  // namespace kiln
