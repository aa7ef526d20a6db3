// Text <-> token ids for the models kiln runs: byte-level BPE (GPT-2 family:
// Qwen, Llama 3, SmolLM) from a Hugging Face tokenizer.json or GGUF metadata,
// and SentencePiece (tokenizer.ggml.model = llama) from GGUF metadata.
//
//   auto tok = Tokenizer::from_hf("Qwen3-0.6B/");
//   std::vector<int32_t> ids = tok->encode("<|im_start|>user\nHi<|im_end|>");
//   StreamingDecoder dec(*tok);
//   for (int32_t id : generated) std::fputs(dec.push(id).c_str(), stdout);
//   std::fputs(dec.flush().c_str(), stdout);
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kiln {

class GgufFile;

struct EncodeOptions {
  bool add_bos = false;       // put bos_id() first (if the model has one)
  bool parse_special = true;  // special-token text ("<|im_end|>") becomes its id;
                              // false: it is tokenized as plain text
};

class Tokenizer {
 public:
  virtual ~Tokenizer();

  // From GGUF metadata (tokenizer.ggml.*). Throws kiln::Error naming the key
  // that is missing or the tokenizer kind that is not supported.
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& gguf);
  // From a tokenizer.json (or tokenizer.json.gz), or a folder holding one; a
  // tokenizer_config.json beside it supplies the bos/eos names.
  static std::unique_ptr<Tokenizer> from_hf(const std::string& path);

  virtual std::vector<int32_t> encode(std::string_view text,
                                      const EncodeOptions& opt = {}) const = 0;
  // The raw bytes this token stands for (possibly part of a UTF-8 character);
  // a special token gives its text. Throws for an id out of range.
  virtual std::string token_bytes(int32_t id) const = 0;

  // The bytes of all tokens, concatenated; skip_special leaves special tokens
  // out. Not checked for UTF-8 validity: see StreamingDecoder for text.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }  // -1 if none
  int32_t eos_id() const { return eos_id_; }  // -1 if none
  // What the model was trained with: whether prompts start with bos_id().
  bool add_bos_by_default() const { return add_bos_default_; }
  // Control tokens and added tokens marked special.
  bool is_special(int32_t id) const;
  // The id of a token by its vocabulary text ("<|im_end|>", "</think>", "Ġthe").
  std::optional<int32_t> token_id(std::string_view token_text) const;
  // The token's text as the vocabulary stores it (byte-level or "▁" form).
  const std::string& token_text(int32_t id) const;
  // "bpe" or "spm", and the pre-tokenizer for BPE (e.g. "qwen2").
  const std::string& kind() const { return kind_; }

 protected:
  Tokenizer() = default;
  // For decode(): SentencePiece drops the space it put before the first word.
  virtual bool strip_leading_space() const { return false; }
  void check_id(int32_t id) const;
  // Fills the id lookup from tokens_; derived loaders call it once.
  void index_tokens();

  std::string kind_;
  std::vector<std::string> tokens_;
  std::vector<uint8_t> special_;  // 1 if is_special
  std::unordered_map<std::string, int32_t> ids_;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  bool add_bos_default_ = false;
};

// Turns a stream of token ids into text as it is generated: a token that ends
// inside a UTF-8 character is held until the character is complete, so every
// returned string is valid UTF-8 (bytes that can never form a character come
// out as U+FFFD, as Hugging Face's decoders do).
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  // The text that becomes complete with this token (often empty mid-character).
  std::string push(int32_t id);
  // Whatever is still held, with U+FFFD for an unfinished character.
  std::string flush();

 private:
  std::string take_complete(bool final);
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace kiln
