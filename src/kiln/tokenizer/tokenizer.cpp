#include "kiln/tokenizer/tokenizer.h"

#include "kiln/core/error.h"
#include "kiln/tokenizer/unicode.h"

namespace kiln {

Tokenizer::~Tokenizer() = default;

void Tokenizer::check_id(int32_t id) const {
  KILN_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the vocabulary (0..",
             vocab_size() - 1, ")");
}

void Tokenizer::index_tokens() {
  ids_.clear();
  ids_.reserve(tokens_.size());
  // The first id wins when a text repeats (padding entries in some vocabs).
  // Ids no token uses (gaps before added tokens) have empty text and no entry.
  for (size_t i = 0; i < tokens_.size(); ++i)
    if (!tokens_[i].empty()) ids_.emplace(tokens_[i], static_cast<int32_t>(i));
  special_.resize(tokens_.size(), 0);
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[static_cast<size_t>(id)] != 0;
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token_text) const {
  auto it = ids_.find(std::string(token_text));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const std::string& Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return tokens_[static_cast<size_t>(id)];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    std::string piece = token_bytes(id);
    if (first && strip_leading_space() && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    first = false;
    out += piece;
  }
  return out;
}

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string StreamingDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_.is_special(id)) return {};
  pending_ += tokenizer_.token_bytes(id);
  return take_complete(false);
}

std::string StreamingDecoder::flush() { return take_complete(true); }

std::string StreamingDecoder::take_complete(bool final) {
  const unicode::Utf8Split split = unicode::split_incomplete_utf8(pending_);
  const size_t upto = final ? pending_.size() : split.valid;
  std::string out;
  out.reserve(upto);
  // Re-encode so a byte that is not part of any character reads as U+FFFD.
  for (size_t i = 0; i < upto;) {
    const unicode::Decoded d = unicode::decode_utf8(pending_, i);
    if (d.cp == 0xFFFD && d.len == 1)
      unicode::append_utf8(out, 0xFFFD);
    else
      out.append(pending_, i, d.len);
    i += d.len;
  }
  pending_.erase(0, upto);
  return out;
}

}  // namespace kiln
