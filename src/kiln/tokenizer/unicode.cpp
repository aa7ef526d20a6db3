#include "kiln/tokenizer/unicode.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <vector>

#include "kiln/core/error.h"

namespace kiln::unicode {

namespace {

// How many bytes a sequence starting with lead byte b has (0: not a lead).
inline uint32_t sequence_length(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Whether byte c may follow lead byte `lead` at position k (1-based) of its
// sequence: rules out overlongs, surrogates and code points past U+10FFFF.
inline bool valid_continuation(uint8_t lead, uint32_t k, uint8_t c) {
  if ((c & 0xC0) != 0x80) return false;
  if (k != 1) return true;
  if (lead == 0xE0) return c >= 0xA0;
  if (lead == 0xED) return c <= 0x9F;
  if (lead == 0xF0) return c >= 0x90;
  if (lead == 0xF4) return c <= 0x8F;
  return true;
}

uint8_t compute_properties(char32_t cp) {
  uint8_t p = 0;
  const uint32_t mask = U_GET_GC_MASK(static_cast<UChar32>(cp));
  if (mask & U_GC_L_MASK) p |= kLetter;
  if (mask & U_GC_N_MASK) p |= kNumber;
  if (mask & U_GC_M_MASK) p |= kMark;
  if (u_isUWhiteSpace(static_cast<UChar32>(cp))) p |= kWhitespace;
  return p;
}

// The Basic Multilingual Plane is looked up in a table built once from ICU;
// the other planes ask ICU each time (they are rare in text).
const std::vector<uint8_t>& bmp_table() {
  static const std::vector<uint8_t> table = [] {
    std::vector<uint8_t> t(0x10000);
    for (char32_t cp = 0; cp < 0x10000; ++cp) t[cp] = compute_properties(cp);
    return t;
  }();
  return table;
}

}  // namespace

Decoded decode_utf8(std::string_view s, size_t i) {
  const uint8_t b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) return {b, 1};
  const uint32_t n = sequence_length(b);
  if (n == 0 || i + n > s.size()) return {0xFFFD, 1};
  char32_t cp = b & (0xFF >> (n + 1));
  for (uint32_t k = 1; k < n; ++k) {
    const uint8_t c = static_cast<uint8_t>(s[i + k]);
    if (!valid_continuation(b, k, c)) return {0xFFFD, 1};
    cp = (cp << 6) | (c & 0x3F);
  }
  return {cp, n};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

uint8_t properties(char32_t cp) {
  if (cp < 0x10000) return bmp_table()[cp];
  return compute_properties(cp);
}

Utf8Split split_incomplete_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const uint8_t b = static_cast<uint8_t>(s[i]);
    const uint32_t n = sequence_length(b);
    if (n <= 1) {  // ASCII, or a byte that can never start a character
      ++i;
      continue;
    }
    uint32_t k = 1;
    while (k < n && i + k < s.size() && valid_continuation(b, k, static_cast<uint8_t>(s[i + k])))
      ++k;
    if (k == n) {
      i += n;
    } else if (i + k == s.size()) {
      return {i, s.size() - i};  // a prefix that the next bytes may complete
    } else {
      ++i;  // broken sequence: its lead byte stands alone
    }
  }
  return {s.size(), 0};
}

std::string nfc(std::string_view s) {
  // Below U+0300 every character is NFC and none combines with what precedes
  // it, so text without a lead byte of U+0300 or above (0xCC) is left as is.
  bool below_combining = true;
  for (char c : s) {
    if (static_cast<uint8_t>(c) >= 0xCC) {
      below_combining = false;
      break;
    }
  }
  if (below_combining) return std::string(s);
  // ICU would replace invalid bytes with U+FFFD; such text is left untouched
  // so that every input byte still reaches the byte-level model.
  for (size_t i = 0; i < s.size();) {
    const Decoded d = decode_utf8(s, i);
    if (d.cp == 0xFFFD && d.len == 1) return std::string(s);
    i += d.len;
  }
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = icu::Normalizer2::getNFCInstance(status);
  KILN_CHECK(U_SUCCESS(status), "ICU NFC normalizer unavailable: ", u_errorName(status));
  const icu::UnicodeString in =
      icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<int32_t>(s.size())));
  if (norm->isNormalized(in, status) && U_SUCCESS(status)) return std::string(s);
  status = U_ZERO_ERROR;
  const icu::UnicodeString out = norm->normalize(in, status);
  KILN_CHECK(U_SUCCESS(status), "NFC normalization failed: ", u_errorName(status));
  std::string result;
  out.toUTF8String(result);
  return result;
}

}  // namespace kiln::unicode
