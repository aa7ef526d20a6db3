// `kiln run` and `kiln logits` as a user calls them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "e2e/cli_runner.h"
#include "kiln/io/safetensors.h"

namespace kiln {
namespace {

using test::run_kiln;
const std::string kData = KILN_TEST_DATA;
const std::string kStories = std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf";

// llama.cpp's greedy output on the real stories260K model: all four prompts,
// 64 tokens each, must match id for id (prompt ids with BOS too).
TEST(RunCommand, StoriesGreedyMatchesLlamaCpp) {
  std::ifstream in(kData + "/tokenizers/stories260K.greedy.json");
  ASSERT_TRUE(in.good());
  const auto golden = nlohmann::json::parse(in);
  ASSERT_EQ(golden["cases"].size(), 4u);
  for (const auto& c : golden["cases"]) {
    const std::string prompt = c["prompt"];
    auto r = run_kiln({"run", kStories, "--greedy", "-n", "64", "-p", prompt, "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto got = nlohmann::json::parse(r.out);
    EXPECT_EQ(got["prompt_ids"], c["prompt_ids"]) << prompt;
    EXPECT_EQ(got["ids"], c["greedy_ids"]) << prompt;
  }
}

TEST(RunCommand, BundledModelTellsAStory) {
  auto r = run_kiln({"run", "-n", "24", "--seed", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time", 0), 0u) << r.out;
  EXPECT_GT(r.out.size(), std::string("Once upon a time").size() + 20);
}

TEST(RunCommand, SameSeedSameOutput) {
  std::vector<std::string> args = {"run", kStories, "-p", "Lily", "-n", "40", "--temp", "1.0",
                                   "--seed", "42", "--json"};
  auto a = run_kiln(args), b = run_kiln(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const auto ja = nlohmann::json::parse(a.out), jb = nlohmann::json::parse(b.out);
  EXPECT_EQ(ja["ids"], jb["ids"]);  // (the timings differ)
  EXPECT_EQ(ja["text"], jb["text"]);
  args[args.size() - 2] = "43";
  auto c = run_kiln(args);
  EXPECT_NE(nlohmann::json::parse(a.out)["ids"], nlohmann::json::parse(c.out)["ids"]);
}

TEST(RunCommand, IdsAreUsedAsGiven) {
  auto r = run_kiln({"run", kStories, "--ids", "1 403 407 261 378", "-n", "5", "--greedy", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto got = nlohmann::json::parse(r.out);
  EXPECT_EQ(got["prompt_ids"], nlohmann::json::parse("[1,403,407,261,378]"));
  EXPECT_EQ(got["ids"], nlohmann::json::parse("[432,383,286,261,376]"));
  // The timings count what was fed and generated.
  const auto& t = got["timings"];
  EXPECT_EQ(t["prompt_n"], 5);
  EXPECT_EQ(t["predicted_n"], 5);
  EXPECT_GT(t["predicted_ms"].get<double>(), 0.0);
  EXPECT_GT(t["predicted_per_second"].get<double>(), 0.0);
  EXPECT_NEAR(t["predicted_per_second"].get<double>(),
              5e3 / t["predicted_ms"].get<double>(), 1e-6 * t["predicted_per_second"].get<double>());
}

TEST(LogitsCommand, WritesLogitsOfEveryPosition) {
  const auto out = std::filesystem::temp_directory_path() / "kiln_e2e_logits.safetensors";
  std::filesystem::remove(out);
  auto r = run_kiln({"logits", kData + "/hf/qwen3/gguf/qwen3-f32.gguf", "--ids", "1 2 3 4 5",
                     "--out", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto st = SafetensorsModel::open(out.string());
  const TensorView* logits = st->find_tensor("logits");
  ASSERT_NE(logits, nullptr);
  EXPECT_EQ(logits->dtype, DType::F32);
  EXPECT_EQ(logits->shape, (std::vector<int64_t>{5, 1024}));
  std::filesystem::remove(out);
}

}  // namespace
}  // namespace kiln
