// The vision tower against transformers' get_image_features on the fixture
// image, from the safetensors checkpoint and from llama.cpp's mmproj GGUF.
//
// Tolerance: max |x - ref| / max |ref| <= 1e-4 for image_embeds and each
// DeepStack feature. The weights are the reference's exactly (bf16 widens to
// f32 exactly; the f32 mmproj holds the same values); what remains is f32
// summation order and erf/tanh/exp rounding, ~1e-6 relative, while a wrong
// layout or op shows up above 1e-2.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kiln/backend/backend.h"
#include "kiln/core/error.h"
#include "kiln/io/gguf.h"
#include "kiln/io/json_file.h"
#include "kiln/io/safetensors.h"
#include "kiln/vision/vision_tower.h"

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

double rel_error(const float* got, const TensorView& ref) {
  const float* r = static_cast<const float*>(ref.data);
  double diff = 0, mag = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    diff = std::max(diff, double(std::fabs(got[i] - r[i])));
    mag = std::max(mag, double(std::fabs(r[i])));
  }
  return diff / mag;
}

struct Case {
  std::string arch;
  bool gguf;
};

class TowerTest : public ::testing::TestWithParam<Case> {};

TEST_P(TowerTest, MatchesTransformers) {
  const auto& c = GetParam();
  const std::string dir = kData + "/hf/" + c.arch;
  auto backend = make_cpu_backend({});
  auto st = SafetensorsModel::open(dir + "/model.safetensors");
  std::unique_ptr<GgufFile> mmproj;
  std::unique_ptr<VisionTower> tower;
  if (c.gguf) {
    mmproj = GgufFile::open(dir + "/gguf/mmproj-" + c.arch + "-f32.gguf");
    tower = VisionTower::from_gguf(*mmproj, *backend);
  } else {
    tower = VisionTower::from_safetensors(*st, read_json_file(dir + "/config.json"), *backend);
  }
  const VisionPreprocessConfig cfg = load_preprocess_config(dir);
  const PixelValues px = preprocess_image(decode_image_file(dir + "/image.png"), cfg);
  const VisionOutput out = tower->encode(px);
  auto ref = SafetensorsModel::open(dir + "/ref.safetensors");
  const TensorView* emb = ref->find_tensor("image_embeds");
  ASSERT_TRUE(emb);
  ASSERT_EQ(emb->shape, (std::vector<int64_t>{out.n_tokens, out.dim}));
  const double e = rel_error(out.embeds.data(), *emb);
  EXPECT_LE(e, 1e-4);
  RecordProperty("image_embeds_rel_error", std::to_string(e));
  const TensorView* ds = ref->find_tensor("deepstack_embeds");
  if (ds) {
    ASSERT_EQ(ds->shape, (std::vector<int64_t>{out.n_deepstack, out.n_tokens, out.dim}));
    const double d = rel_error(out.deepstack.data(), *ds);
    EXPECT_LE(d, 1e-4);
    std::printf("%s %s: image_embeds %.2e, deepstack %.2e\n", c.arch.c_str(),
                c.gguf ? "gguf" : "safetensors", e, d);
  } else {
    EXPECT_EQ(out.n_deepstack, 0);
    std::printf("%s %s: image_embeds %.2e\n", c.arch.c_str(), c.gguf ? "gguf" : "safetensors", e);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TowerTest,
                         ::testing::Values(Case{"qwen3_vl", false}, Case{"qwen3_vl", true},
                                           Case{"qwen3_5_vl", false}, Case{"qwen3_5_vl", true}),
                         [](const auto& info) {
                           return info.param.arch + (info.param.gguf ? "_gguf" : "_safetensors");
                         });

TEST(TowerErrors, AModelWithoutVisionSaysSo) {
  auto backend = make_cpu_backend({});
  auto st = SafetensorsModel::open(kData + "/hf/qwen3/model.safetensors");
  EXPECT_THROW(VisionTower::from_safetensors(*st, read_json_file(kData + "/hf/qwen3/config.json"),
                                             *backend),
               Error);
  auto text_gguf = GgufFile::open(kData + "/hf/qwen3_vl/gguf/qwen3_vl-f32.gguf");
  EXPECT_THROW(VisionTower::from_gguf(*text_gguf, *backend), Error);
}

}  // namespace
}  // namespace kiln
