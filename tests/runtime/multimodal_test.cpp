// A prompt with an image, and one with a short video, against transformers,
// end to end: the media through
// the processor and tower, embeddings at the pads, M-RoPE positions, DeepStack
// (Qwen3-VL), logits of one prefill and the greedy continuation (decoded with
// the KV cache, text positions continuing after the image's).
//
// The video is five synthetic 144x80 frames taken at 2 frames per second
// (tests/data/vision/video_frames, made with its reference by
// tests/vision/make_video_reference.py): an odd count, so the last frame is
// repeated to fill the temporal patch, a height that is not a multiple of 32,
// and three temporal patches whose timestamps are text between the pads.
//
// Tolerances: see tests/support/multimodal_check.h.
#include <gtest/gtest.h>

#include <string>

#include "support/multimodal_check.h"

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

struct Case {
  std::string arch, model;  // model: relative to the fixture folder ("" = the checkpoint)
};

LoadOptions cpu_options() {
  LoadOptions lo;
  lo.force_cpu = true;
  return lo;
}

class MultimodalTest : public ::testing::TestWithParam<Case> {};

TEST_P(MultimodalTest, LogitsPositionsAndGreedyIdsMatch) {
  test::check_image_prompt(kData, GetParam().arch, GetParam().model, cpu_options());
}

TEST_P(MultimodalTest, VideoMatches) {
  test::check_video_prompt(kData, GetParam().arch, GetParam().model, cpu_options());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, MultimodalTest,
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
