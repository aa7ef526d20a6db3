// The pieces each pre-tokenizer pattern makes, worked out by hand from the
// regular expressions (the golden id tests check the same against HF).
#include "kiln/tokenizer/pretokenizer.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

std::vector<std::string> pieces(PreTokenizer kind, std::string_view text) {
  std::vector<Piece> out;
  pre_tokenize(kind, text, out);
  std::vector<std::string> s;
  for (const Piece& p : out) s.emplace_back(text.substr(p.begin, p.end - p.begin));
  return s;
}

using V = std::vector<std::string>;

TEST(PreTokenizer, Qwen2Whitespace) {
  // \s+(?!\S) leaves the last space to the word; \s*[\r\n]+ ends at the last newline.
  EXPECT_EQ(pieces(PreTokenizer::kQwen2, "Hello  world\n\n  x"),
            (V{"Hello", " ", " world", "\n\n", " ", " x"}));
  EXPECT_EQ(pieces(PreTokenizer::kQwen2, "a   "), (V{"a", "   "}));
  EXPECT_EQ(pieces(PreTokenizer::kQwen2, "\ttab"), (V{"\ttab"}));
  EXPECT_EQ(pieces(PreTokenizer::kQwen2, " ...\n\nx"), (V{" ...\n\n", "x"}));
}

TEST(PreTokenizer, Contractions) {
  EXPECT_EQ(pieces(PreTokenizer::kQwen2, "DON'T it's"), (V{"DON", "'T", " it", "'s"}));
  // GPT-2's contractions are case-sensitive.
  EXPECT_EQ(pieces(PreTokenizer::kGpt2, "DON'T it's"), (V{"DON", "'", "T", " it", "'s"}));
}

TEST(PreTokenizer, Digits) {
  EXPECT_EQ(pieces(PreTokenizer::kQwen2, "12345"), (V{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(pieces(PreTokenizer::kLlama3, "12345"), (V{"123", "45"}));
  EXPECT_EQ(pieces(PreTokenizer::kGpt2, "a 12345"), (V{"a", " 12345"}));
  // SmolLM isolates digits first, so the space before them stands alone.
  EXPECT_EQ(pieces(PreTokenizer::kSmollm, "a 12"), (V{"a", " ", "1", "2"}));
}

TEST(PreTokenizer, MarksJoinLettersOnlyForQwen35) {
  const std::string namaste = "नमस्ते";  // na ma sa virama(Mn) ta e-sign(Mc)
  EXPECT_EQ(pieces(PreTokenizer::kQwen35, namaste), (V{namaste}));
  EXPECT_EQ(pieces(PreTokenizer::kQwen2, namaste), (V{"नमस", "्त", "े"}));
}

TEST(PreTokenizer, NamesAndPatterns) {
  EXPECT_EQ(pre_tokenizer_from_gguf_name("qwen35"), PreTokenizer::kQwen35);
  EXPECT_EQ(pre_tokenizer_from_gguf_name("llama-bpe"), PreTokenizer::kLlama3);
  EXPECT_FALSE(pre_tokenizer_from_gguf_name("falcon").has_value());
  EXPECT_FALSE(pre_tokenizer_from_regex(R"(\w+)").has_value());
}

}  // namespace
}  // namespace kiln
