// Byte-level BPE (GPT-2 family): the text is split by the added tokens, then
// by the pre-tokenizer pattern, and each piece's bytes are merged pair by pair
// in merge-rank order.
#pragma once

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "kiln/tokenizer/added_tokens.h"
#include "kiln/tokenizer/pretokenizer.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

// GPT-2's reversible byte <-> character map: printable bytes stand for
// themselves, the others for U+0100 onwards ("Ġ" is the space).
const std::array<std::string, 256>& byte_level_chars();
// The bytes a byte-level token text stands for; a character outside the map
// is kept as its UTF-8.
std::string byte_level_decode(std::string_view text);

// Everything a loader gathers for a byte-level BPE tokenizer.
struct BpeSpec {
  std::vector<std::string> tokens;  // by id; byte-level text ("Ġthe")
  std::vector<uint8_t> special;     // by id
  std::vector<uint8_t> raw_text;    // by id: 1 if the text is literal (added tokens)
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<AddedToken> added;
  PreTokenizer pre = PreTokenizer::kGpt2;
  bool nfc = false;            // normalize text to NFC first (Qwen)
  bool ignore_merges = false;  // a piece that is itself a token is not merged (Llama 3)
  int32_t bos_id = -1, eos_id = -1;
  bool add_bos = false;
  std::string source;  // for error messages
};

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeSpec spec);

}  // namespace kiln
