// The multimodal fixtures on the GPU: the vision tower and the language model
// both on the CUDA backend, image and video prompts against transformers
// (tests/support/multimodal_check.h, the CPU's tolerances: the tower's
// products are f32 SGEMM and its attention f32, ~1e-6 relative apart from
// the CPU's summation order).
#include <gtest/gtest.h>

#include <string>

#include "kiln/runtime/engine.h"
#include "support/multimodal_check.h"

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

struct Case {
  std::string arch, model;
};

LoadOptions gpu_options() {
  LoadOptions lo;
  lo.device = 0;  // the GPU or an error, never a silent CPU fallback
  return lo;
}

class CudaMultimodal : public ::testing::TestWithParam<Case> {};

TEST_P(CudaMultimodal, ImagePromptMatches) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  test::check_image_prompt(kData, GetParam().arch, GetParam().model, gpu_options());
}

TEST_P(CudaMultimodal, VideoPromptMatches) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  test::check_video_prompt(kData, GetParam().arch, GetParam().model, gpu_options());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaMultimodal,
                         ::testing::Values(Case{"qwen3_vl", ""},
                                           Case{"qwen3_vl", "gguf/qwen3_vl-f32.gguf"},
                                           Case{"qwen3_5_vl", ""},
                                           Case{"qwen3_5_vl", "gguf/qwen3_5_vl-f32.gguf"}),
                         [](const auto& info) {
                           return info.param.arch + (info.param.model.empty() ? "_safetensors"
                                                                              : "_gguf");
                         });

}  // namespace
}  // namespace kiln
