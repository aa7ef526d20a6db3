// The Qwen3.5, SmolLM and GPT-2 pre-tokenizers against Hugging Face
// tokenizers' ids (tests/tokenizer/gen_variant_goldens.py): the full Qwen3 and
// Llama 3 vocabularies with those patterns swapped in, and tiny fixtures.
// Exact ids, no tolerance.
#include <gtest/gtest.h>
#include <unistd.h>

#include "kiln/tokenizer/tokenizer.h"
#include "test_util.h"

namespace kiln {
namespace {

using test::kData;

constexpr const char* kQwen35Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N})"
    R"(| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The variant tokenizer.json, built as gen_variant_goldens.py builds it.
std::unique_ptr<Tokenizer> variant(const std::string& name) {
  using nlohmann::json;
  if (name == "qwen35_tiny") return Tokenizer::from_hf(kData + "/hf/qwen3_5_text/tokenizer.json");
  if (name == "smollm_tiny" || name == "gpt2_tiny") {
    const std::string base = name.substr(0, name.find('_'));
    return Tokenizer::from_hf(kData + "/tokenizers/" + base + ".tiny.tokenizer.json");
  }
  json tj;
  if (name == "qwen35_full") {
    tj = test::load_json(kData + "/tokenizers/qwen3.tokenizer.json.gz");
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = kQwen35Regex;
  } else {
    tj = test::load_json(kData + "/tokenizers/llama3.tokenizer.json.gz");
    const json byte_level = {{"type", "ByteLevel"},
                             {"add_prefix_space", false},
                             {"trim_offsets", true},
                             {"use_regex", true}};
    if (name == "smollm_full")
      tj["pre_tokenizer"] = {
          {"type", "Sequence"},
          {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level}}};
    else
      tj["pre_tokenizer"] = byte_level;
    tj["model"]["ignore_merges"] = false;
  }
  test::TempFile file(name + ".tokenizer.json", tj.dump());
  return Tokenizer::from_hf(file.path);
}

class Variant : public ::testing::TestWithParam<std::string> {};

TEST_P(Variant, MatchesHuggingFace) {
  const auto golden = test::load_json(kData + "/tokenizers/variants.tokenize.json");
  const auto tok = variant(GetParam());
  const auto& strings = golden["strings"];
  const auto& ids = golden["ids"][GetParam()];
  ASSERT_EQ(strings.size(), ids.size());
  int passed = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    const std::string text = strings[i];
    const auto want = ids[i].get<std::vector<int32_t>>();
    const auto got = tok->encode(text);
    EXPECT_EQ(got, want) << GetParam() << " text: " << nlohmann::json(text).dump();
    passed += got == want;
  }
  std::printf("%s: %d/%zu golden strings exact\n", GetParam().c_str(), passed, strings.size());
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, Variant,
                         ::testing::Values("qwen35_full", "smollm_full", "gpt2_full", "qwen35_tiny",
                                           "smollm_tiny", "gpt2_tiny"));

TEST(Variant, KindIsDetectedFromThePattern) {
  EXPECT_EQ(variant("qwen35_tiny")->kind(), "bpe/qwen35");
  EXPECT_EQ(variant("smollm_tiny")->kind(), "bpe/smollm");
  EXPECT_EQ(variant("gpt2_tiny")->kind(), "bpe/gpt-2");
  EXPECT_EQ(Tokenizer::from_hf(kData + "/hf/llama")->kind(), "bpe/llama-bpe");
  EXPECT_EQ(Tokenizer::from_hf(kData + "/hf/qwen3")->kind(), "bpe/qwen2");
}

TEST(Variant, UnknownPatternIsAClearError) {
  auto tj = test::load_json(kData + "/hf/qwen3/tokenizer.json");
  tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = R"(\w+|\s+)";
  test::TempFile file("unknown.tokenizer.json", tj.dump());
  try {
    Tokenizer::from_hf(file.path);
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("unknown pre-tokenizer pattern"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(R"(\\w+|\\s+)"), std::string::npos) << e.what();
  }
}

TEST(Variant, MissingFileIsAClearError) {
  EXPECT_THROW(Tokenizer::from_hf(kData + "/no/such/tokenizer.json"), std::exception);
  EXPECT_THROW(Tokenizer::from_hf(kData + "/tokenizers"), std::exception);  // no tokenizer.json
}

}  // namespace
}  // namespace kiln
