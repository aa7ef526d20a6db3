// Pre-tokenizers: the regular expressions byte-level BPE models split text
// with before merging, written out as matchers over Unicode properties. Each
// follows its pattern's leftmost-first alternation and greedy repetition
// exactly, so pieces are the same as Hugging Face tokenizers produces.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

enum class PreTokenizer {
  // GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  // Qwen2 / Qwen3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
  //   ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kQwen2,
  // Qwen3.5: as Qwen2 with letters and marks together ([\p{L}\p{M}]+).
  kQwen35,
  // Llama 3: as Qwen2 with digits in groups of up to three (\p{N}{1,3}).
  kLlama3,
  // SmolLM: every digit on its own, then the GPT-2 pattern on what is between.
  kSmollm,
};

// The name llama.cpp writes in tokenizer.ggml.pre for each kind.
std::string_view pre_tokenizer_name(PreTokenizer kind);
// From a tokenizer.ggml.pre value; nullopt if none of ours.
std::optional<PreTokenizer> pre_tokenizer_from_gguf_name(std::string_view name);
// From the Split regex of a tokenizer.json; nullopt if none of ours.
std::optional<PreTokenizer> pre_tokenizer_from_regex(std::string_view pattern);

struct Piece {
  uint32_t begin, end;  // byte offsets into the text
};

// Appends the pieces of `text` to `out`; together they cover the text.
void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<Piece>& out);

}  // namespace kiln
