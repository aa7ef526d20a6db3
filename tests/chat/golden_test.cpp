// Every rendering in the golden fixtures (made by transformers'
// apply_chat_template with each model's own template) must match byte for byte.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "kiln/chat/chat_template.h"

using namespace kiln;

namespace {

nlohmann::ordered_json load(const std::string& name) {
  std::ifstream in(std::string(KILN_TEST_DATA) + "/chat/" + name);
  if (!in) return nullptr;
  return nlohmann::ordered_json::parse(in);
}

struct GoldenCase {
  std::string model;
  size_t index;
};

std::vector<GoldenCase> all_cases() {
  std::vector<GoldenCase> out;
  for (const char* model : {"qwen3", "llama3"}) {
    auto cases = load(std::string(model) + ".chat.json");
    for (size_t i = 0; i < cases.size(); ++i) out.push_back({model, i});
  }
  return out;
}

void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.model << " case " << c.index; }

class Golden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(Golden, RendersExactly) {
  const auto& [model, index] = GetParam();
  auto config = load(model + ".tokenizer_config.json");
  auto plain = nlohmann::json::parse(config.dump());
  auto source = chat_template_from_config(plain);
  ASSERT_TRUE(source.has_value());
  ChatTemplate t = ChatTemplate::parse(*source);

  const auto cases = load(model + ".chat.json");
  const auto& c = cases[index];
  ChatTemplateOptions opt;
  opt.add_generation_prompt = c["options"].value("add_generation_prompt", false);
  if (c["options"].contains("enable_thinking"))
    opt.enable_thinking = c["options"]["enable_thinking"].get<bool>();
  opt.bos_token = special_token_from_config(plain, "bos_token");
  opt.eos_token = special_token_from_config(plain, "eos_token");
  EXPECT_EQ(t.render(c["messages"], opt), c["rendered"].get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Golden, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) {
                           return info.param.model + "_" + std::to_string(info.param.index);
                         });

TEST(Golden, FixturesArePresent) { EXPECT_EQ(all_cases().size(), 30u); }

}  // namespace
