#include "kiln/tokenizer/spm.h"

#include <array>
#include <cstdio>
#include <queue>

#include "kiln/core/error.h"

namespace kiln {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 ▁

std::string escape_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  for (char c : text) {
    if (c == ' ')
      out += kSpace;
    else
      out += c;
  }
  return out;
}

std::string unescape_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, kSpace.size(), kSpace) == 0) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += text[i++];
    }
  }
  return out;
}

// Bytes in the UTF-8 sequence a lead byte starts, as llama.cpp counts them
// (a stray continuation byte counts as one).
inline size_t utf8_len(uint8_t lead) {
  static const uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return lookup[lead >> 4];
}

class SpmTokenizer final : public Tokenizer {
 public:
  explicit SpmTokenizer(SpmSpec spec);
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& opt) const override;
  std::string token_bytes(int32_t id) const override {
    check_id(id);
    return bytes_[static_cast<size_t>(id)];
  }

 protected:
  bool strip_leading_space() const override { return add_space_prefix_; }

 private:
  void encode_text(const std::string& text, std::vector<int32_t>& out) const;
  void byte_fallback(std::string_view bytes, std::vector<int32_t>& out) const;

  std::vector<float> scores_;
  std::vector<std::string> bytes_;
  std::array<int32_t, 256> byte_id_{};
  AddedTokenMatcher added_;
  int32_t unk_id_;
  bool add_space_prefix_;
};

SpmTokenizer::SpmTokenizer(SpmSpec spec)
    : scores_(std::move(spec.scores)),
      unk_id_(spec.unk_id),
      add_space_prefix_(spec.add_space_prefix) {
  kind_ = "spm";
  tokens_ = std::move(spec.tokens);
  scores_.resize(tokens_.size(), 0.0f);
  spec.types.resize(tokens_.size(), GgufTokenType::kNormal);
  index_tokens();
  bos_id_ = spec.bos_id;
  eos_id_ = spec.eos_id;
  add_bos_default_ = spec.add_bos;

  bytes_.resize(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) {
    const std::string& text = tokens_[id];
    const GgufTokenType type = spec.types[id];
    const int32_t i = static_cast<int32_t>(id);
    switch (type) {
      case GgufTokenType::kByte: {
        unsigned value = 0;
        KILN_CHECK(text.size() == 6 && std::sscanf(text.c_str(), "<0x%2X>", &value) == 1,
                   spec.source, ": byte token ", id, " is '", text, "', expected <0xXX>");
        bytes_[id] = std::string(1, static_cast<char>(value));
        break;
      }
      case GgufTokenType::kControl:
      case GgufTokenType::kUnknown:
        special_[id] = 1;
        bytes_[id] = text;
        added_.add({text, i, /*special=*/true});
        break;
      case GgufTokenType::kUserDefined:
        bytes_[id] = text;
        added_.add({text, i, /*special=*/false});
        break;
      case GgufTokenType::kUnused:
        break;
      default:
        bytes_[id] = unescape_spaces(text);
    }
  }
  // Byte fallback looks tokens up by name, as llama.cpp does: <0xXX>, then the
  // byte itself.
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = ids_.find(name);
    if (it == ids_.end()) it = ids_.find(std::string(1, static_cast<char>(b)));
    byte_id_[b] = it != ids_.end() ? it->second : unk_id_;
  }
}

std::vector<int32_t> SpmTokenizer::encode(std::string_view text, const EncodeOptions& opt) const {
  std::vector<int32_t> out;
  if (opt.add_bos && bos_id_ >= 0) out.push_back(bos_id_);
  std::vector<Fragment> fragments;
  added_.split(text, opt.parse_special, fragments);
  // The space goes before text that starts the input or follows a special
  // token, never before text that follows text.
  bool after_special = true;
  for (const Fragment& f : fragments) {
    if (f.id >= 0) {
      out.push_back(f.id);
      after_special = true;
      continue;
    }
    std::string piece;
    if (add_space_prefix_ && after_special) piece = " ";
    piece += text.substr(f.begin, f.end - f.begin);
    encode_text(escape_spaces(piece), out);
    after_special = false;
  }
  return out;
}

void SpmTokenizer::byte_fallback(std::string_view bytes, std::vector<int32_t>& out) const {
  for (char c : bytes) {
    const int32_t id = byte_id_[static_cast<uint8_t>(c)];
    if (id >= 0) out.push_back(id);
  }
}

void SpmTokenizer::encode_text(const std::string& text, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t prev, next;
    uint32_t begin, len;
  };
  struct Bigram {
    int32_t left, right;
    float score;
    uint32_t size;
    // Highest score first; on a tie the leftmost pair.
    bool operator<(const Bigram& o) const {
      return score < o.score || (score == o.score && left > o.left);
    }
  };
  std::vector<Symbol> sym;
  for (size_t i = 0; i < text.size();) {
    const size_t n = std::min(utf8_len(static_cast<uint8_t>(text[i])), text.size() - i);
    const int32_t k = static_cast<int32_t>(sym.size());
    sym.push_back({k - 1, k + 1, static_cast<uint32_t>(i), static_cast<uint32_t>(n)});
    i += n;
  }
  if (sym.empty()) return;
  sym.back().next = -1;

  std::priority_queue<Bigram> queue;
  std::string key;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    key.assign(text, sym[left].begin, sym[left].len + sym[right].len);
    auto it = ids_.find(key);
    if (it == ids_.end()) return;
    queue.push(
        {left, right, scores_[static_cast<size_t>(it->second)], static_cast<uint32_t>(key.size())});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(sym.size()); ++i) try_add(i - 1, i);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& left = sym[b.left];
    Symbol& right = sym[b.right];
    // Skip a pair one of whose sides has been merged into something else.
    if (left.len == 0 || right.len == 0 || left.len + right.len != b.size) continue;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = b.left;
    try_add(left.prev, b.left);
    try_add(b.left, left.next);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) {
    key.assign(text, sym[i].begin, sym[i].len);
    auto it = ids_.find(key);
    // Every merge result is a vocabulary entry, so only single characters the
    // vocabulary lacks get here: they become their bytes.
    if (it != ids_.end())
      out.push_back(it->second);
    else
      byte_fallback(key, out);
  }
}

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(SpmSpec spec) {
  return std::make_unique<SpmTokenizer>(std::move(spec));
}

}  // namespace kiln
