// SentencePiece BPE as llama.cpp runs it from GGUF metadata
// (tokenizer.ggml.model = llama): spaces become "▁", a space is put before the
// text, adjacent pieces merge highest score first, and characters the
// vocabulary lacks fall back to <0xXX> byte tokens.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kiln/tokenizer/added_tokens.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

// GGUF token types (tokenizer.ggml.token_type).
enum class GgufTokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct SpmSpec {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<GgufTokenType> types;
  int32_t bos_id = -1, eos_id = -1, unk_id = -1;
  bool add_bos = true;
  bool add_space_prefix = true;
  std::string source;
};

std::unique_ptr<Tokenizer> make_spm_tokenizer(SpmSpec spec);

}  // namespace kiln
