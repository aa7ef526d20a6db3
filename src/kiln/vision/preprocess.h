// The Qwen2-VL / Qwen3-VL image and video processor: smart resize to
// multiples of patch x merge within a pixel budget, bicubic resampling,
// rescale and mean/std normalisation, then patches in the order the vision
// tower's Conv3d reads them.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/vision/image.h"

namespace kiln {

// The transformers video processor a checkpoint gets (load_preprocess_config).
enum class VideoProcessorKind {
  kQwen3VL,  // one pixel budget for all the frames; frames at linspace
  kQwen2VL,  // the budget per frame; frames at arange, whole temporal patches
};

struct VisionPreprocessConfig {
  int patch = 16;
  int merge = 2;
  int temporal = 2;
  std::array<float, 3> mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> std{0.5f, 0.5f, 0.5f};
  double rescale = 1.0 / 255.0;
  // Pixel budget of one image (size.shortest_edge / size.longest_edge, or the
  // older min_pixels / max_pixels keys), and of a whole video (all frames).
  int64_t min_pixels = 65536;
  int64_t max_pixels = 16777216;
  int64_t video_min_pixels = 4096;
  int64_t video_max_pixels = 25165824;
  VideoProcessorKind video = VideoProcessorKind::kQwen3VL;
  int factor() const { return patch * merge; }
};

// Reads preprocessor_config.json (and video_preprocessor_config.json when
// present) from `dir`; keeps the defaults (Qwen3-VL's) for absent keys or files.
// As transformers' AutoVideoProcessor: video_preprocessor_config.json names
// the video processor (video_processor_type) and its pixel budget; without
// one, the image processor's config stands for the video processor too, and
// a Qwen2VLImageProcessor's is a Qwen2VLVideoProcessor's (kQwen2VL, with
// the image budget per frame).
VisionPreprocessConfig load_preprocess_config(const std::string& dir,
                                              VisionPreprocessConfig defaults = {});

// Patches [grid_t * grid_h * grid_w, 3 * temporal * patch * patch], rows in
// merge-window order (t, h / m, w / m, m, m), columns (channel, frame, y, x).
struct PixelValues {
  std::vector<float> data;
  int64_t grid_t = 0, grid_h = 0, grid_w = 0;
  int64_t cols = 0;
  int64_t rows() const { return grid_t * grid_h * grid_w; }
};

// Height and width after the smart resize of transformers' Qwen2-VL
// processor (Python rounding, budget in pixels). frames > 0: the video
// processor's form, whose budget covers all frames.
std::pair<int, int> smart_resize(int height, int width, int factor, int64_t min_pixels,
                                 int64_t max_pixels, int frames = 0, int temporal = 2);

// One image, duplicated along time to fill the temporal patch.
PixelValues preprocess_image(const Image& image, const VisionPreprocessConfig& cfg);
// Video frames (already sampled): all resized to one size, an odd count padded
// with the last frame, consecutive frames paired along time.
PixelValues preprocess_video(const std::vector<Image>& frames, const VisionPreprocessConfig& cfg);

}  // namespace kiln
