#include "kiln/vision/preprocess.h"

#include <cmath>
#include <filesystem>

#include "kiln/core/error.h"
#include "kiln/io/json_file.h"
#include "kiln/vision/resize.h"

namespace kiln {
namespace {

// Python's round(): halves to even.
int64_t py_round(double x) { return int64_t(std::nearbyint(x)); }

void read_size(const nlohmann::json& j, int64_t& min_px, int64_t& max_px) {
  if (j.contains("size") && j["size"].is_object()) {
    const auto& s = j["size"];
    if (s.contains("shortest_edge") && s["shortest_edge"].is_number_integer())
      min_px = s["shortest_edge"].get<int64_t>();
    if (s.contains("longest_edge") && s["longest_edge"].is_number_integer())
      max_px = s["longest_edge"].get<int64_t>();
  }
  if (j.contains("min_pixels") && j["min_pixels"].is_number_integer())
    min_px = j["min_pixels"].get<int64_t>();
  if (j.contains("max_pixels") && j["max_pixels"].is_number_integer())
    max_px = j["max_pixels"].get<int64_t>();
}

// Writes `image` as time slot `frame` of every patch.
void patchify_frame(const Image& img, const VisionPreprocessConfig& cfg, int64_t tgrid, int frame,
                    PixelValues& pv) {
  const int p = cfg.patch, m = cfg.merge, tp = cfg.temporal;
  const int64_t gh = pv.grid_h, gw = pv.grid_w;
  float lut[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) {
      const float scaled = float(double(v) * cfg.rescale);
      lut[c][v] = (scaled - cfg.mean[size_t(c)]) / cfg.std[size_t(c)];
    }
  for (int64_t bh = 0; bh < gh / m; ++bh)
    for (int64_t bw = 0; bw < gw / m; ++bw)
      for (int mh = 0; mh < m; ++mh)
        for (int mw = 0; mw < m; ++mw) {
          const int64_t row = ((tgrid * (gh / m) + bh) * (gw / m) + bw) * m * m + mh * m + mw;
          float* out = pv.data.data() + row * pv.cols;
          const int y0 = int((bh * m + mh) * p), x0 = int((bw * m + mw) * p);
          for (int c = 0; c < 3; ++c)
            for (int y = 0; y < p; ++y)
              for (int x = 0; x < p; ++x)
                out[((c * tp + frame) * p + y) * p + x] = lut[c][img.at(x0 + x, y0 + y, c)];
        }
}

}  // namespace

VisionPreprocessConfig load_preprocess_config(const std::string& dir,
                                              VisionPreprocessConfig cfg) {
  namespace fs = std::filesystem;
  auto names_qwen2 = [](const nlohmann::json& j, const char* key) {
    return j.contains(key) && j[key].is_string() &&
           j[key].get<std::string>().rfind("Qwen2VL", 0) == 0;
  };
  const fs::path image_cfg = fs::path(dir) / "preprocessor_config.json";
  bool image_qwen2 = false;  // a Qwen2VLImageProcessor's config
  if (fs::exists(image_cfg)) {
    const nlohmann::json j = read_json_file(image_cfg.string());
    if (j.contains("patch_size")) cfg.patch = j["patch_size"].get<int>();
    if (j.contains("merge_size")) cfg.merge = j["merge_size"].get<int>();
    if (j.contains("temporal_patch_size")) cfg.temporal = j["temporal_patch_size"].get<int>();
    if (j.contains("rescale_factor")) cfg.rescale = j["rescale_factor"].get<double>();
    if (j.contains("do_rescale") && !j["do_rescale"].get<bool>()) cfg.rescale = 1.0;
    for (int c = 0; c < 3; ++c) {
      if (j.contains("image_mean")) cfg.mean[size_t(c)] = j["image_mean"][size_t(c)].get<float>();
      if (j.contains("image_std")) cfg.std[size_t(c)] = j["image_std"][size_t(c)].get<float>();
    }
    read_size(j, cfg.min_pixels, cfg.max_pixels);
    image_qwen2 = names_qwen2(j, "image_processor_type");
  }
  const fs::path video_cfg = fs::path(dir) / "video_preprocessor_config.json";
  if (fs::exists(video_cfg)) {
    const nlohmann::json j = read_json_file(video_cfg.string());
    read_size(j, cfg.video_min_pixels, cfg.video_max_pixels);
    cfg.video = names_qwen2(j, "video_processor_type") ? VideoProcessorKind::kQwen2VL
                                                       : VideoProcessorKind::kQwen3VL;
  } else if (image_qwen2) {
    cfg.video = VideoProcessorKind::kQwen2VL;
    cfg.video_min_pixels = cfg.min_pixels;
    cfg.video_max_pixels = cfg.max_pixels;
  }
  KILN_CHECK(cfg.patch > 0 && cfg.merge > 0 && cfg.temporal > 0, image_cfg.string(),
             ": patch_size, merge_size and temporal_patch_size must be positive");
  return cfg;
}

std::pair<int, int> smart_resize(int height, int width, int factor, int64_t min_pixels,
                                 int64_t max_pixels, int frames, int temporal) {
  KILN_CHECK(height > 0 && width > 0, "image of ", width, "x", height, " pixels");
  KILN_CHECK(double(std::max(height, width)) / std::min(height, width) <= 200,
             "image of ", width, "x", height, ": the aspect ratio must be below 200");
  int64_t h = py_round(double(height) / factor) * factor;
  int64_t w = py_round(double(width) / factor) * factor;
  const int64_t t = frames > 0 ? py_round(double(frames) / temporal) * temporal : 1;
  const double area = double(std::max(frames, 1)) * height * width;
  if (t * h * w > max_pixels) {
    const double beta = std::sqrt(area / double(max_pixels));
    h = std::max<int64_t>(factor, int64_t(std::floor(height / beta / factor)) * factor);
    w = std::max<int64_t>(factor, int64_t(std::floor(width / beta / factor)) * factor);
  } else if (t * h * w < min_pixels) {
    const double beta = std::sqrt(double(min_pixels) / area);
    h = int64_t(std::ceil(height * beta / factor)) * factor;
    w = int64_t(std::ceil(width * beta / factor)) * factor;
  }
  KILN_CHECK(h > 0 && w > 0, "image of ", width, "x", height, " pixels is too small to resize");
  return {int(h), int(w)};
}

PixelValues preprocess_image(const Image& image, const VisionPreprocessConfig& cfg) {
  auto [h, w] = smart_resize(image.height, image.width, cfg.factor(), cfg.min_pixels,
                             cfg.max_pixels);
  const Image resized = resize_bicubic(image, w, h);
  PixelValues pv;
  pv.grid_t = 1;
  pv.grid_h = h / cfg.patch;
  pv.grid_w = w / cfg.patch;
  pv.cols = int64_t(3) * cfg.temporal * cfg.patch * cfg.patch;
  pv.data.assign(size_t(pv.rows() * pv.cols), 0.0f);
  for (int f = 0; f < cfg.temporal; ++f) patchify_frame(resized, cfg, 0, f, pv);
  return pv;
}

PixelValues preprocess_video(const std::vector<Image>& frames, const VisionPreprocessConfig& cfg) {
  KILN_CHECK(!frames.empty(), "a video needs at least one frame");
  const Image& first = frames.front();
  // Qwen3-VL's budget covers every frame; Qwen2-VL's is per frame.
  const int budget_frames = cfg.video == VideoProcessorKind::kQwen3VL
                                ? std::max<int>(int(frames.size()), cfg.temporal)
                                : 0;
  auto [h, w] = smart_resize(first.height, first.width, cfg.factor(), cfg.video_min_pixels,
                             cfg.video_max_pixels, budget_frames, cfg.temporal);
  PixelValues pv;
  const int64_t n = int64_t(frames.size());
  pv.grid_t = (n + cfg.temporal - 1) / cfg.temporal;
  pv.grid_h = h / cfg.patch;
  pv.grid_w = w / cfg.patch;
  pv.cols = int64_t(3) * cfg.temporal * cfg.patch * cfg.patch;
  pv.data.assign(size_t(pv.rows() * pv.cols), 0.0f);
  for (int64_t i = 0; i < pv.grid_t * cfg.temporal; ++i) {
    const Image& src = frames[size_t(std::min(i, n - 1))];  // pad with the last frame
    const Image resized = resize_bicubic(src, w, h);
    patchify_frame(resized, cfg, i / cfg.temporal, int(i % cfg.temporal), pv);
  }
  return pv;
}

}  // namespace kiln
