#include "kiln/tokenizer/added_tokens.h"

#include <algorithm>

#include "kiln/tokenizer/unicode.h"

namespace kiln {

void AddedTokenMatcher::add(const AddedToken& token) {
  if (token.content.empty()) return;
  tokens_.push_back(token);
  auto& list = by_first_byte_[static_cast<uint8_t>(token.content[0])];
  list.push_back(static_cast<uint32_t>(tokens_.size() - 1));
  std::stable_sort(list.begin(), list.end(), [&](uint32_t a, uint32_t b) {
    return tokens_[a].content.size() > tokens_[b].content.size();
  });
}

namespace {

// Whitespace (Unicode White_Space) that ends at byte `end` of s, in bytes.
size_t whitespace_before(std::string_view s, size_t floor, size_t end) {
  size_t i = end;
  while (i > floor) {
    size_t j = i - 1;
    while (j > floor && (static_cast<uint8_t>(s[j]) & 0xC0) == 0x80) --j;
    const unicode::Decoded d = unicode::decode_utf8(s, j);
    if (j + d.len != i || !(unicode::properties(d.cp) & unicode::kWhitespace)) break;
    i = j;
  }
  return end - i;
}

size_t whitespace_after(std::string_view s, size_t begin) {
  size_t i = begin;
  while (i < s.size()) {
    const unicode::Decoded d = unicode::decode_utf8(s, i);
    if (!(unicode::properties(d.cp) & unicode::kWhitespace)) break;
    i += d.len;
  }
  return i - begin;
}

}  // namespace

void AddedTokenMatcher::split(std::string_view text, bool parse_special,
                              std::vector<Fragment>& out) const {
  size_t text_start = 0;  // start of the text not yet emitted
  size_t i = 0;
  while (i < text.size()) {
    const auto& candidates = by_first_byte_[static_cast<uint8_t>(text[i])];
    const AddedToken* hit = nullptr;
    for (uint32_t k : candidates) {
      const AddedToken& t = tokens_[k];
      if (t.special && !parse_special) continue;
      if (text.compare(i, t.content.size(), t.content) == 0) {
        hit = &t;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    size_t begin = i;
    size_t end = i + hit->content.size();
    if (hit->lstrip) begin -= whitespace_before(text, text_start, begin);
    if (hit->rstrip) end += whitespace_after(text, end);
    if (begin > text_start)
      out.push_back({-1, static_cast<uint32_t>(text_start), static_cast<uint32_t>(begin)});
    out.push_back({hit->id, static_cast<uint32_t>(begin), static_cast<uint32_t>(end)});
    i = text_start = end;
  }
  if (text.size() > text_start)
    out.push_back({-1, static_cast<uint32_t>(text_start), static_cast<uint32_t>(text.size())});
}

}  // namespace kiln
