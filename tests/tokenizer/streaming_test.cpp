// Streaming decoding, round trips and throughput.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>

#include "kiln/io/gguf.h"
#include "kiln/tokenizer/tokenizer.h"
#include "kiln/tokenizer/unicode.h"
#include "test_util.h"

namespace kiln {
namespace {

using test::kData;

const Tokenizer& qwen3() {
  static const auto t = Tokenizer::from_hf(kData + "/tokenizers/qwen3.tokenizer.json.gz");
  return *t;
}
const Tokenizer& llama3() {
  static const auto t = Tokenizer::from_hf(kData + "/tokenizers/llama3.tokenizer.json.gz");
  return *t;
}

bool valid_utf8(const std::string& s) {
  const auto split = unicode::split_incomplete_utf8(s);
  if (split.incomplete) return false;
  for (size_t i = 0; i < s.size();) {
    const auto d = unicode::decode_utf8(s, i);
    if (d.cp == 0xFFFD && d.len == 1) return false;
    i += d.len;
  }
  return true;
}

std::vector<std::string> golden_strings() {
  std::vector<std::string> out;
  for (const auto& c : test::load_json(kData + "/tokenizers/qwen3.tokenize.json"))
    out.push_back(c["text"]);
  return out;
}

TEST(Streaming, HoldsPartialCharactersUntilComplete) {
  for (const Tokenizer* tok : {&qwen3(), &llama3()}) {
    int held = 0;
    for (const std::string& text : golden_strings()) {
      StreamingDecoder dec(*tok);
      std::string streamed;
      for (int32_t id : tok->encode(text)) {
        const std::string piece = dec.push(id);
        EXPECT_TRUE(valid_utf8(piece)) << nlohmann::json(text).dump();
        held += piece.empty() && !tok->token_bytes(id).empty();
        streamed += piece;
      }
      streamed += dec.flush();
      EXPECT_EQ(streamed, text);
    }
    EXPECT_GT(held, 0) << "the corpus has emoji split across tokens";
  }
}

TEST(Streaming, BrokenBytesBecomeReplacementCharacters) {
  const Tokenizer& tok = qwen3();
  // Byte-level tokens for a lone lead byte (0xF0) and a stray continuation byte (0x80).
  const auto lead = tok.encode("\xF0", {.parse_special = false});
  ASSERT_EQ(lead.size(), 1u);
  StreamingDecoder dec(tok);
  EXPECT_EQ(dec.push(lead[0]), "");  // could still become a character
  EXPECT_EQ(dec.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.push(lead[0]), "");
  EXPECT_EQ(dec.push(*tok.token_id("a")),
            "\xEF\xBF\xBD"
            "a");  // 'a' cannot continue it
}

TEST(Streaming, SkipsSpecialTokensWhenAsked) {
  const Tokenizer& tok = qwen3();
  StreamingDecoder dec(tok, /*skip_special=*/true);
  std::string out;
  for (int32_t id : tok.encode("<|im_start|>assistant\nHi<|im_end|>")) out += dec.push(id);
  EXPECT_EQ(out + dec.flush(), "assistant\nHi");
}

TEST(Streaming, SentencePieceSpacesAndBytes) {
  const auto tok = Tokenizer::from_gguf(*GgufFile::open(kData + "/../../models/stories260K.gguf"));
  StreamingDecoder dec(*tok);
  std::string out;
  for (int32_t id : tok->encode("Once upon 日")) out += dec.push(id);
  // Streaming keeps the space SentencePiece put before the first word: a
  // continuation's first token needs its space.
  EXPECT_EQ(out + dec.flush(), " Once upon 日");
}

TEST(RoundTrip, DecodeOfEncodeIsTheText) {
  for (const Tokenizer* tok : {&qwen3(), &llama3()}) {
    for (const std::string& text : golden_strings()) {
      EXPECT_EQ(tok->decode(tok->encode(text)), text);
      EXPECT_EQ(tok->decode(tok->encode(text, {.parse_special = false})), text);
    }
  }
}

// One megabyte of mixed text must tokenize well under a second; the bound is
// generous (a sanity check on a shared, loaded machine, not a benchmark).
TEST(Throughput, OneMegabyteUnderASecond) {
  std::string text;
  const auto strings = golden_strings();
  while (text.size() < (1u << 20))
    for (const auto& s : strings) text += s + "\n";
  for (const Tokenizer* tok : {&qwen3(), &llama3()}) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto ids = tok->encode(text);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: %.2f MB -> %zu tokens in %.3f s (%.1f MB/s)\n", tok->kind().c_str(),
                text.size() / 1e6, ids.size(), s, text.size() / 1e6 / s);
    EXPECT_LT(s, 1.0);
    EXPECT_EQ(tok->decode(ids), text);
  }
}

// A long run of one character is a single piece: merging must stay close to
// linear in its length (about 0.2 s for these 256 KB here; a quadratic merge
// would take minutes), so 1 s leaves room for a loaded machine.
TEST(Throughput, LongSingleRunsStayFast) {
  constexpr size_t kSize = 256u << 10;
  for (const std::string& text :
       {std::string(kSize, 'a'), std::string(kSize, ' '), std::string(kSize, '7')}) {
    for (const Tokenizer* tok : {&qwen3(), &llama3()}) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto ids = tok->encode(text);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      EXPECT_LT(s, 1.0) << tok->kind() << " on 256 KB of '" << text[0] << "'";
      EXPECT_EQ(tok->decode(ids), text);
    }
  }
}

}  // namespace
}  // namespace kiln
