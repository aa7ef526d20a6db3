// UTF-8 decoding and the Unicode properties the pre-tokenizer patterns ask
// for. Categories come from ICU so they follow the Unicode tables exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::unicode {

// Properties a pattern tests, one bit each, computed once per code point.
enum : uint8_t {
  kLetter = 1,      // \p{L}
  kNumber = 2,      // \p{N}
  kMark = 4,        // \p{M}
  kWhitespace = 8,  // \s (Unicode White_Space)
};

// Decodes the code point at s[i]. An invalid or truncated sequence decodes as
// one byte (len 1) with cp = 0xFFFD so every byte still belongs to a piece.
struct Decoded {
  char32_t cp;
  uint32_t len;
};
Decoded decode_utf8(std::string_view s, size_t i);

void append_utf8(std::string& out, char32_t cp);

uint8_t properties(char32_t cp);

// Length of the longest prefix of s that is complete, valid UTF-8 and, if the
// rest is the start of a sequence that could still complete, how many bytes it
// has (0 when the tail is invalid or empty).
struct Utf8Split {
  size_t valid;       // bytes of complete characters (or invalid bytes) up front
  size_t incomplete;  // trailing bytes that may become a character later
};
Utf8Split split_incomplete_utf8(std::string_view s);

// NFC, the normalizer Qwen tokenizers declare.
std::string nfc(std::string_view s);

}  // namespace kiln::unicode
