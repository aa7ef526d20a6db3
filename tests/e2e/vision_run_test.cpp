// `kiln run --image` as a user calls it: generation after an image continues
// from the right M-RoPE position (the greedy ids of transformers' reference,
// which decodes with its cache after the image), and -p with --image puts the
// image where the model's template expects it.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "e2e/cli_runner.h"
#include "kiln/io/safetensors.h"

namespace kiln {
namespace {

using test::run_kiln;
const std::string kData = KILN_TEST_DATA;

std::vector<int32_t> ref_ids(const std::string& arch, const std::string& name) {
  auto st = SafetensorsModel::open(kData + "/hf/" + arch + "/ref.safetensors");
  const TensorView* t = st->find_tensor(name);
  const int32_t* p = static_cast<const int32_t*>(t->data);
  return std::vector<int32_t>(p, p + t->numel());
}

std::string join(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return s;
}

class VisionRun : public testing::TestWithParam<std::string> {};

TEST_P(VisionRun, GreedyAfterTheImageMatchesTransformers) {
  const std::string arch = "qwen3_vl";
  const std::string dir = kData + "/hf/" + arch;
  const std::string model = GetParam().empty() ? dir : dir + "/gguf/" + GetParam();
  const auto prompt = ref_ids(arch, "input_ids");
  const auto greedy = ref_ids(arch, "greedy_ids");
  auto r = run_kiln({"run", model, "--ids", join(prompt), "--image", dir + "/image.png", "--greedy",
                     "-n", std::to_string(greedy.size()), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["ids"].get<std::vector<int32_t>>(), greedy);
}

INSTANTIATE_TEST_SUITE_P(Qwen3Vl, VisionRun, testing::Values("", "qwen3_vl-f32.gguf"),
                         [](const auto& info) {
                           return info.param.empty() ? std::string("safetensors") : std::string("gguf");
                         });

TEST(VisionRun, PromptWithAnImageGetsItsPads) {
  const std::string dir = kData + "/hf/qwen3_vl";
  auto r = run_kiln({"run", dir, "--image", dir + "/image.png", "-p", "Describe it", "--greedy",
                     "-n", "4", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ids = nlohmann::json::parse(r.out)["prompt_ids"].get<std::vector<int32_t>>();
  // 128x96 pixels, 16-pixel patches merged 2x2: 4 x 3 = 12 image tokens.
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1010), 12);  // <|image_pad|>
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1007), 1);   // <|vision_start|>
}

TEST(VisionRun, BadImageIsAClearError) {
  const std::string dir = kData + "/hf/qwen3_vl";
  auto r = run_kiln({"run", dir, "--image", dir + "/config.json", "-p", "hi", "-n", "2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("config.json"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
}  // namespace kiln
