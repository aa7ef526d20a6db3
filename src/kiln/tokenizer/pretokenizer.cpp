#include "kiln/tokenizer/pretokenizer.h"

#include "kiln/tokenizer/unicode.h"

namespace kiln {

namespace {

using namespace kiln::unicode;

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen35Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N})"
    R"(| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The text as code points with their properties; off[i] is the byte offset
// of code point i and off[n] the end of the text.
struct Chars {
  std::vector<char32_t> cp;
  std::vector<uint8_t> prop;
  std::vector<uint32_t> off;
  size_t n = 0;

  void assign(std::string_view text, uint32_t base) {
    cp.clear();
    prop.clear();
    off.clear();
    for (size_t i = 0; i < text.size();) {
      const Decoded d = decode_utf8(text, i);
      cp.push_back(d.cp);
      prop.push_back(properties(d.cp));
      off.push_back(static_cast<uint32_t>(base + i));
      i += d.len;
    }
    n = cp.size();
    off.push_back(static_cast<uint32_t>(base + text.size()));
  }
};

inline bool is_crlf(char32_t c) { return c == '\r' || c == '\n'; }

// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, 0 if none. With
// ignore_case the letters match as Unicode simple case folding does, which
// also folds U+017F LATIN SMALL LETTER LONG S to s.
size_t contraction(const Chars& t, size_t i, bool ignore_case) {
  if (t.cp[i] != '\'' || i + 1 >= t.n) return 0;
  auto fold = [&](char32_t c) -> char32_t {
    if (!ignore_case) return c;
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's';
    return c;
  };
  const char32_t a = fold(t.cp[i + 1]);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= t.n) return 0;
  const char32_t b = fold(t.cp[i + 2]);
  if ((a == 'r' || a == 'v') && b == 'e') return 3;
  if (a == 'l' && b == 'l') return 3;
  return 0;
}

// Length of the run of characters starting at i that have any of `bits`.
inline size_t run_with(const Chars& t, size_t i, uint8_t bits) {
  size_t j = i;
  while (j < t.n && (t.prop[j] & bits)) ++j;
  return j - i;
}
// ...that have none of `bits`.
inline size_t run_without(const Chars& t, size_t i, uint8_t bits) {
  size_t j = i;
  while (j < t.n && !(t.prop[j] & bits)) ++j;
  return j - i;
}

// \s+(?!\S) then \s+, for a whitespace run of length ws at i: the run, less
// its last character when a non-space follows (that one joins the next piece).
inline size_t trailing_space_rule(const Chars& t, size_t i, size_t ws) {
  if (i + ws == t.n || ws < 2) return ws;
  return ws - 1;
}

// The Qwen2 / Qwen3.5 / Llama 3 family; `word` is the class of \p{L}+ (letters,
// plus marks for Qwen3.5) and max_digits the repetition of \p{N}.
size_t match_qwen_family(const Chars& t, size_t i, uint8_t word, size_t max_digits) {
  if (size_t c = contraction(t, i, /*ignore_case=*/true)) return c;
  const char32_t c0 = t.cp[i];
  const uint8_t p0 = t.prop[i];
  // [^\r\n\p{L}\p{N}]?WORD+
  if (!is_crlf(c0) && !(p0 & (kLetter | kNumber))) {
    if (size_t w = run_with(t, i + 1, word)) return 1 + w;
  }
  if (p0 & word) return run_with(t, i, word);
  // \p{N}{1,max}
  if (p0 & kNumber) {
    size_t k = 1;
    while (k < max_digits && i + k < t.n && (t.prop[i + k] & kNumber)) ++k;
    return k;
  }
  // ' '?[^\s WORD \p{N}]+[\r\n]*
  const uint8_t not_other = kWhitespace | word | kNumber | kLetter;
  size_t start = i;
  if (c0 == ' ' && i + 1 < t.n && !(t.prop[i + 1] & not_other)) start = i + 1;
  if (!(t.prop[start] & not_other)) {
    size_t j = start + run_without(t, start, not_other);
    while (j < t.n && is_crlf(t.cp[j])) ++j;
    return j - i;
  }
  // Whitespace from here on: \s*[\r\n]+ ends after the run's last CR/LF.
  const size_t ws = run_with(t, i, kWhitespace);
  for (size_t k = ws; k > 0; --k) {
    if (is_crlf(t.cp[i + k - 1])) return k;
  }
  return trailing_space_rule(t, i, ws);
}

size_t match_gpt2(const Chars& t, size_t i, size_t end) {
  if (size_t c = contraction(t, i, /*ignore_case=*/false)) return std::min(c, end - i);
  const size_t start = (t.cp[i] == ' ' && i + 1 < end) ? i + 1 : i;
  auto run = [&](size_t from, auto pred) {
    size_t j = from;
    while (j < end && pred(t.prop[j])) ++j;
    return j - from;
  };
  auto letter = [](uint8_t p) { return (p & kLetter) != 0; };
  auto number = [](uint8_t p) { return (p & kNumber) != 0; };
  auto other = [](uint8_t p) { return !(p & (kWhitespace | kLetter | kNumber)); };
  for (auto pred : {+letter, +number, +other}) {
    if (start != i) {
      if (size_t r = run(start, pred)) return 1 + r;
    }
    if (size_t r = run(i, pred)) return r;
  }
  size_t ws = run(i, [](uint8_t p) { return (p & kWhitespace) != 0; });
  if (i + ws == end || ws < 2) return ws;
  return ws - 1;
}

}  // namespace

std::string_view pre_tokenizer_name(PreTokenizer kind) {
  switch (kind) {
    case PreTokenizer::kGpt2:
      return "gpt-2";
    case PreTokenizer::kQwen2:
      return "qwen2";
    case PreTokenizer::kQwen35:
      return "qwen35";
    case PreTokenizer::kLlama3:
      return "llama-bpe";
    case PreTokenizer::kSmollm:
      return "smollm";
  }
  return "?";
}

std::optional<PreTokenizer> pre_tokenizer_from_gguf_name(std::string_view name) {
  if (name == "gpt-2" || name == "gpt2" || name == "default") return PreTokenizer::kGpt2;
  if (name == "qwen2" || name == "deepseek-r1-qwen") return PreTokenizer::kQwen2;
  if (name == "qwen35") return PreTokenizer::kQwen35;
  if (name == "llama-bpe" || name == "llama3") return PreTokenizer::kLlama3;
  if (name == "smollm") return PreTokenizer::kSmollm;
  return std::nullopt;
}

std::optional<PreTokenizer> pre_tokenizer_from_regex(std::string_view pattern) {
  if (pattern == kQwen2Regex) return PreTokenizer::kQwen2;
  if (pattern == kQwen35Regex) return PreTokenizer::kQwen35;
  if (pattern == kLlama3Regex) return PreTokenizer::kLlama3;
  if (pattern == kGpt2Regex) return PreTokenizer::kGpt2;
  return std::nullopt;
}

void pre_tokenize(PreTokenizer kind, std::string_view text, std::vector<Piece>& out) {
  thread_local Chars t;
  t.assign(text, 0);
  auto emit = [&](size_t a, size_t b) { out.push_back({t.off[a], t.off[b]}); };
  switch (kind) {
    case PreTokenizer::kQwen2:
    case PreTokenizer::kQwen35:
    case PreTokenizer::kLlama3: {
      const uint8_t word = kind == PreTokenizer::kQwen35 ? (kLetter | kMark) : kLetter;
      const size_t digits = kind == PreTokenizer::kLlama3 ? 3 : 1;
      for (size_t i = 0; i < t.n;) {
        const size_t len = match_qwen_family(t, i, word, digits);
        emit(i, i + len);
        i += len;
      }
      break;
    }
    case PreTokenizer::kGpt2:
    case PreTokenizer::kSmollm: {
      // SmolLM isolates each digit first; the GPT-2 pattern then runs on
      // every stretch between digits as a text of its own (its lookahead
      // cannot see past the stretch).
      const bool digits = kind == PreTokenizer::kSmollm;
      for (size_t s = 0; s < t.n;) {
        if (digits && (t.prop[s] & kNumber)) {
          emit(s, s + 1);
          ++s;
          continue;
        }
        size_t end = s;
        while (end < t.n && !(digits && (t.prop[end] & kNumber))) ++end;
        for (size_t i = s; i < end;) {
          const size_t len = match_gpt2(t, i, end);
          emit(i, i + len);
          i += len;
        }
        s = end;
      }
      break;
    }
  }
}

}  // namespace kiln
