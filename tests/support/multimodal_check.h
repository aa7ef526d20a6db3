// The multimodal fixtures end to end (media through the processor and
// tower, embeddings at the pads, M-RoPE positions, DeepStack, one prefill's
// logits, the greedy continuation), shared by the CPU tests
// (tests/runtime/multimodal_test.cpp) and the GPU tests (tests/cuda).
//
// Tolerances: position_ids identical; pixel_values max abs <= 1e-5 (the
// resize and normalisation in f32); video_embeds / deepstack max |x - ref| /
// max |ref| <= 1e-4 (f32 summation order); logits max |x - ref| / max |ref| <= 1e-4
// (bf16 weights widen exactly; what remains is f32 summation order, ~1e-6 for
// Qwen3-VL and ~2e-5 for the Qwen3.5 hybrid's delta rule); greedy ids equal.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kiln/io/safetensors.h"
#include "kiln/runtime/engine.h"
#include "kiln/runtime/multimodal.h"
#include "support/reference.h"

namespace kiln::test {

inline double max_rel_error(const float* got, const TensorView& want) {
  const float* w = static_cast<const float*>(want.data);
  double diff = 0, mag = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    diff = std::max(diff, double(std::fabs(got[i] - w[i])));
    mag = std::max(mag, double(std::fabs(w[i])));
  }
  return diff / mag;
}

// The image prompt of the fixture `arch` (its ref.safetensors) through the
// model file `model` (relative to the fixture folder, "" = the checkpoint).
// quantized_floor > 0: the text model's weights are quantized (the tower's
// mmproj is f32, so media checks stand), and its logits are judged as the
// golden tests judge q8_0 files: at least that share of positions with
// cosine >= 0.99; the greedy ids are not compared.
inline void check_image_prompt(const std::string& data, const std::string& arch,
                               const std::string& model, const LoadOptions& lo,
                               double quantized_floor = 0) {
  const std::string dir = data + "/hf/" + arch;
  auto ref = SafetensorsModel::open(dir + "/ref.safetensors");
  auto tensor = [&](const char* name) {
    const TensorView* t = ref->find_tensor(name);
    EXPECT_TRUE(t) << name;
    return t;
  };
  const TensorView* ids_t = tensor("input_ids");
  const int32_t* ip = static_cast<const int32_t*>(ids_t->data);
  const std::vector<int32_t> ids(ip, ip + ids_t->numel());
  const int64_t T = int64_t(ids.size());

  auto engine = Engine::load(dir + (model.empty() ? "" : "/" + model), lo);
  auto vision = VisionRuntime::open(engine->file(), "", engine->backend());
  std::vector<MediaItem> media{vision->encode_image(dir + "/image.png")};
  const MediaItem& image = media[0];
  const TensorView* px = tensor("pixel_values");
  ASSERT_EQ(int64_t(image.pixels.data.size()), px->numel());
  EXPECT_LE(max_abs_error(image.pixels.data.data(), *px), 1e-5);
  const TensorView* emb = tensor("image_embeds");
  ASSERT_EQ(emb->shape, (std::vector<int64_t>{image.out.n_tokens, image.out.dim}));
  EXPECT_LE(max_rel_error(image.out.embeds.data(), *emb), 1e-4);
  if (const TensorView* ds = ref->find_tensor("deepstack_embeds")) {
    ASSERT_EQ(ds->shape,
              (std::vector<int64_t>{image.out.n_deepstack, image.out.n_tokens, image.out.dim}));
    EXPECT_LE(max_rel_error(image.out.deepstack.data(), *ds), 1e-4);
  } else {
    EXPECT_EQ(image.out.n_deepstack, 0);
  }
  const MultimodalPrompt mm =
      build_multimodal_prompt(ids, media, vision_token_ids(engine->require_tokenizer()), 0);
  const int32_t* pos = static_cast<const int32_t*>(tensor("position_ids")->data);
  EXPECT_EQ(mm.positions, std::vector<int32_t>(pos, pos + 3 * T));

  StateOptions so;
  so.context = 128;
  auto state = engine->model().new_state(so);
  const int64_t V = engine->spec().vocab_size;
  std::vector<float> logits(size_t(T * V));
  prefill_multimodal(engine->model(), *state, mm, logits.data(), true);
  if (quantized_floor > 0) {
    const TensorView* want = tensor("logits");
    const float* w = static_cast<const float*>(want->data);
    const int n = positions_with_cosine(logits, std::vector<float>(w, w + want->numel()), T, V, 0.99);
    EXPECT_GE(n, int(std::ceil(quantized_floor * double(T))));
    std::printf("%s %s: positions with cosine >= 0.99: %d of %lld\n", arch.c_str(), model.c_str(), n,
                (long long)T);
    return;
  }
  const double e = max_rel_error(logits.data(), *tensor("logits"));
  EXPECT_LE(e, 1e-4);
  std::printf("%s %s: logits rel error %.2e\n", arch.c_str(),
              model.empty() ? "safetensors" : model.c_str(), e);

  const TensorView* greedy_t = tensor("greedy_ids");
  const int32_t* g = static_cast<const int32_t*>(greedy_t->data);
  std::vector<int32_t> got;
  std::vector<float> last(logits.end() - V, logits.end());
  for (int64_t i = 0; i < greedy_t->numel(); ++i) {
    const int32_t next = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
    got.push_back(next);
    engine->model().forward(*state, &next, 1, last.data(), false);
  }
  EXPECT_EQ(got, std::vector<int32_t>(g, g + greedy_t->numel()));
}

// The video prompt (ref_video.safetensors, the frames under vision/video_frames).
inline void check_video_prompt(const std::string& data, const std::string& arch,
                               const std::string& model, const LoadOptions& lo) {
  const std::string dir = data + "/hf/" + arch;
  auto ref = SafetensorsModel::open(dir + "/ref_video.safetensors");
  auto tensor = [&](const char* name) {
    const TensorView* t = ref->find_tensor(name);
    EXPECT_TRUE(t) << name;
    return t;
  };
  const TensorView* ids_t = tensor("input_ids");
  const int32_t* ip = static_cast<const int32_t*>(ids_t->data);
  const std::vector<int32_t> ids(ip, ip + ids_t->numel());
  const int64_t T = int64_t(ids.size());

  auto engine = Engine::load(dir + (model.empty() ? "" : "/" + model), lo);
  auto vision = VisionRuntime::open(engine->file(), "", engine->backend());
  VideoOptions vo;  // the defaults: 2 frames per second
  std::vector<MediaItem> media{vision->encode_video(data + "/vision/video_frames", vo)};
  const MediaItem& video = media[0];

  const TensorView* grid = tensor("video_grid_thw");
  const int32_t* g = static_cast<const int32_t*>(grid->data);
  EXPECT_EQ(std::vector<int64_t>({video.pixels.grid_t, video.pixels.grid_h, video.pixels.grid_w}),
            std::vector<int64_t>({g[0], g[1], g[2]}));
  const TensorView* px = tensor("pixel_values");
  ASSERT_EQ(int64_t(video.pixels.data.size()), px->numel());
  const double px_diff = max_abs_error(video.pixels.data.data(), *px);
  EXPECT_LE(px_diff, 1e-5);

  const TensorView* emb = tensor("video_embeds");
  ASSERT_EQ(emb->shape, (std::vector<int64_t>{video.out.n_tokens, video.out.dim}));
  EXPECT_LE(max_rel_error(video.out.embeds.data(), *emb), 1e-4);
  if (const TensorView* ds = ref->find_tensor("deepstack_embeds")) {
    ASSERT_EQ(ds->shape,
              (std::vector<int64_t>{video.out.n_deepstack, video.out.n_tokens, video.out.dim}));
    EXPECT_LE(max_rel_error(video.out.deepstack.data(), *ds), 1e-4);
  } else {
    EXPECT_EQ(video.out.n_deepstack, 0);
  }

  // The prompt kiln writes around the video is the one the processor wrote.
  const Tokenizer& tok = engine->require_tokenizer();
  const VisionTokenIds v = vision_token_ids(tok);
  const std::vector<int32_t> template_ids =
      tok.encode("<|vision_start|><|video_pad|><|vision_end|>What happens?");
  EXPECT_EQ(expand_media_pads(template_ids, media, tok, v), ids);

  const MultimodalPrompt mm = build_multimodal_prompt(ids, media, v, 0);
  const int32_t* pos = static_cast<const int32_t*>(tensor("position_ids")->data);
  EXPECT_EQ(mm.positions, std::vector<int32_t>(pos, pos + 3 * T));

  StateOptions so;
  so.context = 128;
  auto state = engine->model().new_state(so);
  std::vector<float> logits(size_t(T * engine->spec().vocab_size));
  prefill_multimodal(engine->model(), *state, mm, logits.data(), true);
  const double e = max_rel_error(logits.data(), *tensor("logits"));
  EXPECT_LE(e, 1e-4);
  std::printf("%s %s: video pixels %.1e, logits rel error %.2e\n", arch.c_str(),
              model.empty() ? "safetensors" : model.c_str(), px_diff, e);
}

}  // namespace kiln::test
