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

#include "kiln/vision/video.h"
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

// A video file the way a user gives it (H.264 / VP9, see
// tests/vision/video_file_test.cpp): the prompt kiln writes for it (sampled
// frames' timestamps, pads per temporal patch) and its pixel_values equal
// what transformers' processor made of the same file for this model, from
// the checkpoint and from GGUF + mmproj (which finds the checkpoint's
// processor config a folder up).
TEST_P(MultimodalTest, VideoFilePromptMatchesTheProcessor) {
  if (!have_video_decoder()) GTEST_SKIP() << "built without video support";
  const std::string suffix =
      GetParam().arch == "qwen3_vl" ? ".ref.safetensors" : "." + GetParam().arch + ".ref.safetensors";
  const std::string dir = kData + "/hf/" + GetParam().arch;
  auto engine = Engine::load(dir + (GetParam().model.empty() ? "" : "/" + GetParam().model),
                             cpu_options());
  auto vision = VisionRuntime::open(engine->file(), "", engine->backend());
  const Tokenizer& tok = engine->require_tokenizer();
  const VisionTokenIds v = vision_token_ids(tok);
  const std::vector<int32_t> template_ids =
      tok.encode("<|vision_start|><|video_pad|><|vision_end|>What happens?");
  for (const char* clip : {"h264_160x90_10fps.mp4", "vp9_96x64_6fps.webm"}) {
    SCOPED_TRACE(clip);
    const std::string path = kData + "/vision/clips/" + clip;
    auto ref = SafetensorsModel::open(path + suffix);
    const std::vector<MediaItem> media{vision->encode_video(path, VideoOptions{})};
    const TensorView* ids = ref->find_tensor("input_ids");
    const int32_t* ip = static_cast<const int32_t*>(ids->data);
    EXPECT_EQ(expand_media_pads(template_ids, media, tok, v),
              std::vector<int32_t>(ip, ip + ids->numel()));
    const TensorView* px = ref->find_tensor("pixel_values");
    ASSERT_EQ(int64_t(media[0].pixels.data.size()), px->numel());
    EXPECT_LE(test::max_abs_error(media[0].pixels.data.data(), *px), 1e-5);
  }
}

// The q8_0 text models beside their f32 mmproj: the media and positions as
// exactly as from f32, the logits by cosine (the golden tests' floors: 90%
// for the dense model, 60% for the hybrid, whose random weights swing).
TEST(MultimodalQuantized, Q8_0TextModelsWithAnImage) {
  test::check_image_prompt(kData, "qwen3_vl", "gguf/qwen3_vl-q8_0.gguf", cpu_options(), 0.9);
  test::check_image_prompt(kData, "qwen3_5_vl", "gguf/qwen3_5_vl-q8_0.gguf", cpu_options(), 0.6);
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
