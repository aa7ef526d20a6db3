// Exact ids against Hugging Face tokenizers' own output for the full Qwen3 and
// Llama 3 tokenizers (50 hard strings each): no tolerance, ids must be equal.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "kiln/tokenizer/tokenizer.h"

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

const Tokenizer& full(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& t = cache[name];
  if (!t) t = Tokenizer::from_hf(kData + "/tokenizers/" + name + ".tokenizer.json.gz");
  return *t;
}

void check_goldens(const std::string& name) {
  const Tokenizer& tok = full(name);
  const auto cases = load_json(kData + "/tokenizers/" + name + ".tokenize.json");
  int passed = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = tok.encode(text);
    EXPECT_EQ(got, want) << "text: " << nlohmann::json(text).dump();
    EXPECT_EQ(tok.decode(want), c["decoded"].get<std::string>())
        << "decoding ids of " << nlohmann::json(text).dump();
    passed += got == want;
  }
  std::printf("%s: %d/%zu golden strings exact\n", name.c_str(), passed, cases.size());
  EXPECT_EQ(passed, static_cast<int>(cases.size()));
}

TEST(HfGolden, Qwen3AllStrings) { check_goldens("qwen3"); }
TEST(HfGolden, Llama3AllStrings) { check_goldens("llama3"); }

TEST(HfGolden, Qwen3Metadata) {
  const Tokenizer& tok = full("qwen3");
  EXPECT_EQ(tok.vocab_size(), 151669);
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_EQ(tok.eos_id(), 151645);  // <|im_end|> per tokenizer_config.json
  EXPECT_FALSE(tok.add_bos_by_default());
  EXPECT_EQ(tok.token_id("<|im_start|>"), 151644);
  EXPECT_EQ(tok.token_id("</think>"), 151668);
  EXPECT_TRUE(tok.is_special(151644));
  EXPECT_FALSE(tok.is_special(151668));  // <think> tags are added but not special
  EXPECT_FALSE(tok.is_special(9707));
  EXPECT_EQ(tok.token_text(9707), "Hello");
  EXPECT_EQ(tok.token_bytes(220), " ");
  EXPECT_FALSE(tok.token_id("no such token").has_value());
}

TEST(HfGolden, Llama3Metadata) {
  const Tokenizer& tok = full("llama3");
  EXPECT_EQ(tok.vocab_size(), 128256);
  EXPECT_EQ(tok.bos_id(), 128000);
  EXPECT_EQ(tok.eos_id(), 128001);
  EXPECT_EQ(tok.encode("Hi", {.add_bos = true}).front(), 128000);
}

TEST(HfGolden, PlainTextLeavesSpecialTokensAlone) {
  const Tokenizer& tok = full("qwen3");
  const std::string text = "<|im_start|>user";
  EXPECT_EQ(tok.encode(text).front(), 151644);
  const auto plain = tok.encode(text, {.parse_special = false});
  EXPECT_GT(plain.size(), 2u);
  for (int32_t id : plain) EXPECT_FALSE(tok.is_special(id));
  EXPECT_EQ(tok.decode(plain), text);
  // Added tokens that are not special (<think>) are still matched, as in HF.
  EXPECT_EQ(tok.encode("<think>", {.parse_special = false}), std::vector<int32_t>{151667});
}

// Qwen declares an NFC normalizer: a decomposed accent tokenizes as the
// composed character; Llama 3 has none and keeps the combining mark.
TEST(HfGolden, NormalizerIsApplied) {
  EXPECT_EQ(full("qwen3").encode("cafe\u0301"), full("qwen3").encode("caf\u00e9"));
  EXPECT_NE(full("llama3").encode("cafe\u0301"), full("llama3").encode("caf\u00e9"));
}

TEST(HfGolden, DecodeSkipsSpecial) {
  const Tokenizer& tok = full("qwen3");
  const auto ids = tok.encode("<|im_start|>user\nHi<|im_end|>");
  EXPECT_EQ(tok.decode(ids, /*skip_special=*/true), "user\nHi");
}

}  // namespace
}  // namespace kiln
