// Tokenizers read from GGUF metadata: SentencePiece (stories260K) against
// llama.cpp's prompt ids, and byte-level BPE GGUFs against the same model's
// tokenizer.json. Exact ids, no tolerance.
#include "kiln/io/gguf.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "kiln/tokenizer/tokenizer.h"
#include "test_util.h"

namespace kiln {
namespace {

using test::kData;

std::unique_ptr<Tokenizer> from_gguf_file(const std::string& path) {
  return Tokenizer::from_gguf(*GgufFile::open(path));
}

const std::string kStories = kData + "/../../models/stories260K.gguf";

TEST(Spm, Stories260KPromptIdsMatchLlamaCpp) {
  const auto tok = from_gguf_file(kStories);
  EXPECT_EQ(tok->kind(), "spm");
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_TRUE(tok->add_bos_by_default());
  const auto golden = test::load_json(kData + "/tokenizers/stories260K.greedy.json");
  ASSERT_EQ(golden["cases"].size(), 4u);
  for (const auto& c : golden["cases"]) {
    const std::string prompt = c["prompt"];
    EXPECT_EQ(tok->encode(prompt, {.add_bos = true}), c["prompt_ids"].get<std::vector<int32_t>>())
        << prompt;
  }
}

TEST(Spm, Stories260KDecodesLikeLlamaCpp) {
  const auto tok = from_gguf_file(kStories);
  const auto golden = test::load_json(kData + "/tokenizers/stories260K.greedy.json");
  for (const auto& c : golden["cases"]) {
    auto ids = c["prompt_ids"].get<std::vector<int32_t>>();
    for (int32_t id : c["greedy_ids"]) ids.push_back(id);
    // llama.cpp ended its printout with a newline of its own.
    std::string want = c["greedy_text"];
    ASSERT_EQ(want.back(), '\n');
    want.pop_back();
    EXPECT_EQ(tok->decode(ids), want);
    // Without BOS the first word's leading space is dropped, as SentencePiece does.
    const auto prompt = tok->encode(c["prompt"].get<std::string>());
    EXPECT_EQ(tok->decode(prompt), c["prompt"].get<std::string>());
  }
}

TEST(Spm, ByteFallbackAndSpecialTokens) {
  const auto tok = from_gguf_file(kStories);
  // A character outside the 512-token vocabulary becomes its UTF-8 bytes.
  const auto ids = tok->encode("日\n", {});
  const auto e6 = tok->token_id("<0xE6>");  // 日 is E6 97 A5
  ASSERT_TRUE(e6.has_value());
  EXPECT_NE(std::find(ids.begin(), ids.end(), *e6), ids.end());
  EXPECT_EQ(tok->decode(ids), "日\n");
  EXPECT_EQ(tok->token_bytes(*tok->token_id("<0x0A>")), "\n");
  // <s> in the text is the BOS id only when special tokens are parsed.
  EXPECT_EQ(tok->encode("<s>Hi").front(), 1);
  const auto plain = tok->encode("<s>Hi", {.parse_special = false});
  EXPECT_NE(plain.front(), 1);
  EXPECT_EQ(tok->decode(plain), "<s>Hi");
  EXPECT_TRUE(tok->is_special(1));
  EXPECT_EQ(tok->decode({1, 403}, /*skip_special=*/true), "Once");
  EXPECT_TRUE(tok->encode("").empty());
  EXPECT_EQ(tok->encode("", {.add_bos = true}), std::vector<int32_t>{1});
}

// Every golden string, with and without special-token parsing.
std::vector<std::string> corpus() {
  std::vector<std::string> out;
  // The document is kept in a variable: a range-for over a member of the
  // temporary load_json returns would walk it after it is destroyed.
  const auto doc = test::load_json(kData + "/tokenizers/variants.tokenize.json");
  for (const auto& s : doc["strings"]) out.push_back(s);
  return out;
}

void expect_same(const Tokenizer& a, const Tokenizer& b) {
  for (const std::string& text : corpus()) {
    EXPECT_EQ(a.encode(text), b.encode(text)) << nlohmann::json(text).dump();
    EXPECT_EQ(a.encode(text, {.parse_special = false}), b.encode(text, {.parse_special = false}))
        << nlohmann::json(text).dump();
  }
}

TEST(GgufBpe, Qwen3MatchesTokenizerJson) {
  const auto g = from_gguf_file(kData + "/tokenizers/qwen3.tiny.tokenizer.gguf");
  const auto h = Tokenizer::from_hf(kData + "/hf/qwen3");
  EXPECT_EQ(g->kind(), "bpe/qwen2");
  EXPECT_EQ(g->eos_id(), h->eos_id());
  EXPECT_EQ(g->token_id("<|im_start|>"), h->token_id("<|im_start|>"));
  EXPECT_TRUE(g->is_special(*g->token_id("<|im_end|>")));
  expect_same(*g, *h);
}

TEST(GgufBpe, Qwen35MatchesTokenizerJson) {
  const auto g = from_gguf_file(kData + "/tokenizers/qwen35.tiny.tokenizer.gguf");
  EXPECT_EQ(g->kind(), "bpe/qwen35");
  expect_same(*g, *Tokenizer::from_hf(kData + "/hf/qwen3_5_text"));
}

TEST(GgufBpe, Llama3MatchesTokenizerJson) {
  const auto g = from_gguf_file(kData + "/tokenizers/llama.tiny.tokenizer.gguf");
  const auto h = Tokenizer::from_hf(kData + "/hf/llama");
  EXPECT_EQ(g->kind(), "bpe/llama-bpe");
  EXPECT_EQ(g->bos_id(), h->bos_id());
  EXPECT_TRUE(g->add_bos_by_default());
  expect_same(*g, *h);
}

TEST(GgufBpe, MissingTokenizerIsAClearError) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  test::TempFile file("no_tokenizer.gguf", "");
  w.write(file.path);
  try {
    from_gguf_file(file.path);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.model"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kiln
