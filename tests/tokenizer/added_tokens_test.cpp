// Added-token splitting details and the `kiln tokenize` command.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "kiln/tokenizer/tokenizer.h"
#include "test_util.h"

namespace kiln {
namespace {

using test::kData;

// lstrip/rstrip: the token swallows the whitespace beside it (HF semantics).
TEST(AddedTokens, StripFlagsSwallowWhitespace) {
  auto tj = test::load_json(kData + "/hf/qwen3/tokenizer.json");
  for (auto& t : tj["added_tokens"])
    if (t["content"] == "<|im_end|>") t["lstrip"] = t["rstrip"] = true;
  test::TempFile file("strip.tokenizer.json", tj.dump());
  const auto tok = Tokenizer::from_hf(file.path);
  const auto plain = Tokenizer::from_hf(kData + "/hf/qwen3");
  const int32_t end = *tok->token_id("<|im_end|>");
  std::vector<int32_t> want = plain->encode("a");
  want.push_back(end);
  for (int32_t id : plain->encode("b")) want.push_back(id);
  EXPECT_EQ(tok->encode("a \t <|im_end|>\n b"), want);
  // Without the flags the whitespace stays with the text around the token.
  EXPECT_NE(plain->encode("a \t <|im_end|>\n b"), want);
}

TEST(AddedTokens, LongestMatchWins) {
  const auto tok = Tokenizer::from_hf(kData + "/hf/qwen3");
  // "<tool_call>" and "</tool_call>" share no prefix with a shorter token, but
  // "<|im_start|>" must not be cut at any shorter added token either.
  const auto ids = tok->encode("x<|im_start|><tool_call></tool_call>y");
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[1], *tok->token_id("<|im_start|>"));
  EXPECT_EQ(ids[2], *tok->token_id("<tool_call>"));
  EXPECT_EQ(ids[3], *tok->token_id("</tool_call>"));
}

std::string run_command(const std::string& args) {
  const std::string cmd = std::string(KILN_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

TEST(Command, TokenizePrintsJsonIds) {
  if (!std::filesystem::exists(KILN_BINARY)) GTEST_SKIP() << "kiln not built";
  EXPECT_EQ(run_command("tokenize " + kData +
                        "/../../models/stories260K.gguf --bos --text 'Once upon a time'"),
            "[1, 403, 407, 261, 378]\n");
  EXPECT_EQ(run_command("tokenize " + kData +
                        "/tokenizers/qwen3.tokenizer.json.gz --text "
                        "'<|im_start|>Hello world'"),
            "[151644, 9707, 1879]\n");
  const std::string plain =
      run_command("tokenize " + kData + "/hf/qwen3 --plain --text '<|im_start|>'");
  EXPECT_EQ(plain.find("998"), std::string::npos) << plain;
  test::TempFile text("prompt.txt", "Hello world");
  EXPECT_EQ(
      run_command("tokenize " + kData + "/tokenizers/qwen3.tokenizer.json.gz --file " + text.path),
      "[9707, 1879]\n");
  EXPECT_NE(run_command("tokenize " + kData + "/hf/qwen3").find("exactly one of"),
            std::string::npos);
  EXPECT_NE(run_command("tokenize /no/such/model --text x").find("not found"), std::string::npos);
}

}  // namespace
}  // namespace kiln
