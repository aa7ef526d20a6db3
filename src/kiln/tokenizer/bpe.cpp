#include "kiln/tokenizer/bpe.h"

#include <algorithm>
#include <unordered_map>

#include "kiln/core/error.h"
#include "kiln/tokenizer/unicode.h"

namespace kiln {

const std::array<std::string, 256>& byte_level_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      unicode::append_utf8(t[b], printable ? static_cast<char32_t>(b) : next++);
    }
    return t;
  }();
  return table;
}

std::string byte_level_decode(std::string_view text) {
  static const std::unordered_map<char32_t, uint8_t> to_byte = [] {
    std::unordered_map<char32_t, uint8_t> m;
    const auto& chars = byte_level_chars();
    for (int b = 0; b < 256; ++b) m[unicode::decode_utf8(chars[b], 0).cp] = static_cast<uint8_t>(b);
    return m;
  }();
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const unicode::Decoded d = unicode::decode_utf8(text, i);
    auto it = to_byte.find(d.cp);
    if (it != to_byte.end() && !(d.cp == 0xFFFD && d.len == 1))
      out += static_cast<char>(it->second);
    else
      out.append(text, i, d.len);
    i += d.len;
  }
  return out;
}

namespace {

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeSpec spec);
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& opt) const override;
  std::string token_bytes(int32_t id) const override {
    check_id(id);
    return bytes_[static_cast<size_t>(id)];
  }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  void encode_text(std::string_view text, std::vector<int32_t>& out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  std::vector<std::string> bytes_;  // by id: the raw bytes
  std::array<int32_t, 256> byte_id_{};
  std::unordered_map<uint64_t, Merge> merges_;
  std::unordered_map<std::string, int32_t> by_bytes_;  // model tokens by raw bytes
  AddedTokenMatcher added_;
  PreTokenizer pre_;
  bool nfc_;
  bool ignore_merges_;
};

BpeTokenizer::BpeTokenizer(BpeSpec spec)
    : pre_(spec.pre), nfc_(spec.nfc), ignore_merges_(spec.ignore_merges) {
  kind_ = "bpe/" + std::string(pre_tokenizer_name(pre_));
  tokens_ = std::move(spec.tokens);
  special_ = std::move(spec.special);
  special_.resize(tokens_.size(), 0);
  spec.raw_text.resize(tokens_.size(), 0);
  index_tokens();
  bos_id_ = spec.bos_id;
  eos_id_ = spec.eos_id;
  add_bos_default_ = spec.add_bos;

  bytes_.resize(tokens_.size());
  by_bytes_.reserve(tokens_.size());
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (spec.raw_text[id]) {
      bytes_[id] = tokens_[id];
    } else {
      bytes_[id] = byte_level_decode(tokens_[id]);
      by_bytes_.emplace(bytes_[id], static_cast<int32_t>(id));
    }
  }
  byte_id_.fill(-1);
  const auto& chars = byte_level_chars();
  for (int b = 0; b < 256; ++b) {
    auto it = ids_.find(chars[b]);
    if (it != ids_.end()) byte_id_[b] = it->second;
  }

  merges_.reserve(spec.merges.size());
  for (size_t r = 0; r < spec.merges.size(); ++r) {
    const auto& [a, b] = spec.merges[r];
    auto ia = ids_.find(a), ib = ids_.find(b), im = ids_.find(a + b);
    KILN_CHECK(ia != ids_.end() && ib != ids_.end() && im != ids_.end(), spec.source, ": merge ", r,
               " ('", a, "' '", b, "') names a token that is not in the vocabulary");
    merges_.emplace(pair_key(ia->second, ib->second),
                    Merge{static_cast<int32_t>(r), im->second});  // first rank wins
  }
  for (const AddedToken& t : spec.added) added_.add(t);
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, const EncodeOptions& opt) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (opt.add_bos && bos_id_ >= 0) out.push_back(bos_id_);
  if (added_.empty()) {
    encode_text(text, out);
    return out;
  }
  std::vector<Fragment> fragments;
  added_.split(text, opt.parse_special, fragments);
  for (const Fragment& f : fragments) {
    if (f.id >= 0)
      out.push_back(f.id);
    else
      encode_text(text.substr(f.begin, f.end - f.begin), out);
  }
  return out;
}

void BpeTokenizer::encode_text(std::string_view text, std::vector<int32_t>& out) const {
  std::string normalized;
  if (nfc_) {
    normalized = unicode::nfc(text);
    text = normalized;
  }
  thread_local std::vector<Piece> pieces;
  pieces.clear();
  pre_tokenize(pre_, text, pieces);
  for (const Piece& p : pieces) encode_piece(text.substr(p.begin, p.end - p.begin), out);
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (ignore_merges_ || piece.size() == 1) {
    auto it = by_bytes_.find(std::string(piece));
    if (it != by_bytes_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id, prev, next;
  };
  struct Candidate {
    int32_t rank, pos, left, right, merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Symbol> sym;
  thread_local std::vector<Candidate> heap;
  sym.clear();
  heap.clear();
  for (char c : piece) {
    const int32_t id = byte_id_[static_cast<uint8_t>(c)];
    if (id < 0) continue;  // a byte the vocabulary lacks is dropped, as HF does without unk
    const int32_t n = static_cast<int32_t>(sym.size());
    sym.push_back({id, n - 1, n + 1});
  }
  if (sym.empty()) return;
  sym.back().next = -1;

  auto candidate = [&](int32_t pos) {
    if (pos < 0) return false;
    const int32_t nx = sym[pos].next;
    if (nx < 0) return false;
    auto it = merges_.find(pair_key(sym[pos].id, sym[nx].id));
    if (it == merges_.end()) return false;
    heap.push_back({it->second.rank, pos, sym[pos].id, sym[nx].id, it->second.merged});
    return true;
  };
  auto consider = [&](int32_t pos) {
    if (candidate(pos)) std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) candidate(i);
  std::make_heap(heap.begin(), heap.end(), std::greater<>());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = sym[c.pos];
    // Stale entries (a side was merged away or changed since) are skipped.
    if (left.id != c.left || left.next < 0 || sym[left.next].id != c.right) continue;
    const int32_t right = left.next;
    left.id = c.merged;
    left.next = sym[right].next;
    if (left.next >= 0) sym[left.next].prev = c.pos;
    sym[right].id = -1;
    consider(left.prev);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeSpec spec) {
  return std::make_unique<BpeTokenizer>(std::move(spec));
}

}  // namespace kiln
