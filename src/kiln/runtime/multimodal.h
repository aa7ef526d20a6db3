// Images and video in a prompt: the vision tower of a model (its own
// checkpoint's, or an mmproj GGUF beside it), media encoded into embeddings,
// and the prompt built around them: image pads expanded to the right count,
// embeddings placed at the pads, M-RoPE (t, h, w) positions for every token.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kiln/model/model.h"
#include "kiln/model/model_file.h"
#include "kiln/tokenizer/tokenizer.h"
#include "kiln/vision/preprocess.h"
#include "kiln/vision/video.h"
#include "kiln/vision/vision_tower.h"

namespace kiln {

struct MediaItem {
  bool video = false;
  PixelValues pixels;
  VisionOutput out;
  std::vector<double> seconds;  // video: one timestamp per temporal patch
  int64_t merged_h() const;
  int64_t merged_w() const;
  int64_t merge = 2;
};

struct VisionTokenIds {
  int32_t start = -1, end = -1, image_pad = -1, video_pad = -1;
};
VisionTokenIds vision_token_ids(const Tokenizer& tok);

class VisionRuntime {
 public:
  // A safetensors model uses its own model.visual.* tensors; a GGUF needs
  // `mmproj` or an mmproj-*.gguf file in the model's folder.
  static std::unique_ptr<VisionRuntime> open(const ModelFile& model, const std::string& mmproj,
                                             Backend& backend);
  const VisionPreprocessConfig& config() const { return cfg_; }
  VisionTower& tower() { return *tower_; }
  MediaItem encode_image(const std::string& path);
  MediaItem encode_video(const std::string& path, const VideoOptions& opt);

 private:
  std::unique_ptr<GgufFile> mmproj_;
  std::unique_ptr<SafetensorsModel> st_;
  std::unique_ptr<VisionTower> tower_;
  VisionPreprocessConfig cfg_;
};

// Replaces each lone image/video pad in `ids` by the media's full span, in
// order: an image by its n pads; a video by, per temporal patch,
// "<t.t seconds>" <|vision_start|> pads <|vision_end|> (inside the
// template's own start/end, as transformers' processor writes it).
std::vector<int32_t> expand_media_pads(const std::vector<int32_t>& ids,
                                       const std::vector<MediaItem>& media, const Tokenizer& tok,
                                       const VisionTokenIds& v);

struct MultimodalPrompt {
  std::vector<int32_t> ids;
  std::vector<int32_t> positions;  // [3, T]
  std::vector<int32_t> rows;
  std::vector<float> embeds, deepstack;
  int64_t n_deepstack = 0;
  int64_t next_position = 0;  // M-RoPE position of the token after the prompt
  ForwardInputs inputs() const;
};

// ids with every pad already expanded; media in the order their pads appear.
// Positions start at `start` (the state's next text position).
MultimodalPrompt build_multimodal_prompt(const std::vector<int32_t>& ids,
                                         const std::vector<MediaItem>& media,
                                         const VisionTokenIds& v, int64_t start);

// Runs the prompt through the model and leaves the state's rope offset where
// the text that follows must continue.
void prefill_multimodal(Model& model, SequenceState& state, const MultimodalPrompt& prompt,
                        float* logits, bool all_logits);

}  // namespace kiln
