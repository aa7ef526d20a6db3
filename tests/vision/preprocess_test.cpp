// The image processor against transformers' Qwen2VLImageProcessor.
//
// Tolerance for pixel_values: 1e-5 absolute. The values are (v / 255 - mean)
// / std of 8-bit samples; the reference computes the same in a different
// association order, which differs by an ulp (~1e-7) at most. A wrong pixel,
// channel or patch order shows up at >1e-2.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kiln/core/error.h"
#include "kiln/io/safetensors.h"
#include "kiln/vision/image.h"
#include "kiln/vision/preprocess.h"
#include "kiln/vision/resize.h"
#include "kiln/vision/video.h"

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

class PixelValuesTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PixelValuesTest, MatchesTransformers) {
  const std::string dir = kData + "/hf/" + GetParam();
  const VisionPreprocessConfig cfg = load_preprocess_config(dir);
  const PixelValues pv = preprocess_image(decode_image_file(dir + "/image.png"), cfg);
  auto ref = SafetensorsModel::open(dir + "/ref.safetensors");
  const TensorView* want = ref->find_tensor("pixel_values");
  const TensorView* thw = ref->find_tensor("image_grid_thw");
  ASSERT_TRUE(want && thw);
  const int32_t* g = static_cast<const int32_t*>(thw->data);
  EXPECT_EQ(pv.grid_t, g[0]);
  EXPECT_EQ(pv.grid_h, g[1]);
  EXPECT_EQ(pv.grid_w, g[2]);
  ASSERT_EQ(want->shape, (std::vector<int64_t>{pv.rows(), pv.cols}));
  const float* w = static_cast<const float*>(want->data);
  double max_err = 0;
  for (size_t i = 0; i < pv.data.size(); ++i)
    max_err = std::max(max_err, double(std::fabs(pv.data[i] - w[i])));
  EXPECT_LE(max_err, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PixelValuesTest, ::testing::Values("qwen3_vl", "qwen3_5_vl"));

TEST(SmartResize, RoundsToTheFactorWithinTheBudget) {
  // Worked by hand from transformers' smart_resize (factor 32).
  EXPECT_EQ(smart_resize(96, 128, 32, 1024, 65536), std::make_pair(96, 128));
  EXPECT_EQ(smart_resize(100, 150, 32, 1024, 65536), std::make_pair(96, 160));
  // Python rounds halves to even: 80 / 32 = 2.5 -> 2; 112 / 32 = 3.5 -> 4.
  EXPECT_EQ(smart_resize(80, 112, 32, 1024, 1 << 20), std::make_pair(64, 128));
  // Over budget: beta = sqrt(1000 * 1000 / 65536) = 3.906..., floor(256 / 32) * 32.
  EXPECT_EQ(smart_resize(1000, 1000, 32, 1024, 65536), std::make_pair(256, 256));
  // Under budget: beta = sqrt(65536 / (20 * 40)) = 9.05..., ceil(181 / 32) * 32 = 192.
  EXPECT_EQ(smart_resize(20, 40, 32, 65536, 1 << 24), std::make_pair(192, 384));
  EXPECT_THROW(smart_resize(10, 3000, 32, 1024, 65536), Error);  // aspect ratio > 200
}

TEST(Resize, IdentityAndConstantImagesAreExact) {
  Image img;
  img.width = 37;
  img.height = 23;
  img.rgb.resize(size_t(37 * 23 * 3));
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t((i * 7) % 256);
  EXPECT_EQ(resize_bicubic(img, 37, 23).rgb, img.rgb);
  std::fill(img.rgb.begin(), img.rgb.end(), 200);
  for (auto [w, h] : {std::pair{64, 64}, std::pair{16, 8}, std::pair{37, 96}}) {
    const Image r = resize_bicubic(img, w, h);
    ASSERT_EQ(r.rgb.size(), size_t(w * h * 3));
    for (uint8_t v : r.rgb) ASSERT_EQ(v, 200);  // the weights sum to one
  }
}

TEST(Resize, PillowValuesOnARamp) {
  // A horizontal ramp 0, 10, ..., 70 (8 px) halved with Pillow 9.4's
  // Image.resize((4, 1), BICUBIC): [5, 25, 45, 65].
  Image img;
  img.width = 8;
  img.height = 1;
  for (int x = 0; x < 8; ++x)
    for (int c = 0; c < 3; ++c) img.rgb.push_back(uint8_t(10 * x));
  const Image r = resize_bicubic(img, 4, 1, ResampleArithmetic::Pillow);
  std::vector<int> got;
  for (int x = 0; x < 4; ++x) got.push_back(r.at(x, 0, 0));
  EXPECT_EQ(got, (std::vector<int>{5, 25, 45, 65}));
}

TEST(Resize, DecodeAndResizeEqualPillowBitForBit) {
  // tests/data/vision/make_resize_goldens.py: Pillow's decode, convert_to_rgb
  // and Image.resize(BICUBIC) of each file to its smart size. Exact.
  const std::string dir = kData + "/vision";
  auto golden = SafetensorsModel::open(dir + "/resize_goldens.safetensors");
  int checked = 0;
  for (const TensorView& want : golden->tensors()) {
    Image img = decode_image_file(dir + "/" + want.name);
    composite_alpha_on_white(img);  // the goldens' convert_to_rgb composites
    auto [h, w] = smart_resize(img.height, img.width, 32, 1024, 65536);
    ASSERT_EQ(want.shape, (std::vector<int64_t>{h, w, 3})) << want.name;
    const Image r = resize_bicubic(img, w, h, ResampleArithmetic::Pillow);
    const uint8_t* p = static_cast<const uint8_t*>(want.data);
    int64_t wrong = 0, worst = 0;
    for (size_t i = 0; i < r.rgb.size(); ++i) {
      wrong += r.rgb[i] != p[i];
      worst = std::max<int64_t>(worst, std::abs(int(r.rgb[i]) - int(p[i])));
    }
    EXPECT_EQ(wrong, 0) << want.name << ": worst difference " << worst;
    ++checked;
  }
  EXPECT_EQ(checked, 7);
}

TEST(Composite, AlphaOverWhiteAsPillow) {
  const uint8_t rgba[] = {0, 0, 0, 0, 10, 20, 30, 255, 0, 0, 0, 128, 200, 100, 50, 64};
  uint8_t rgb[12];
  composite_on_white(rgba, 4, rgb);
  const uint8_t want[] = {255, 255, 255, 10, 20, 30, 127, 127, 127, 241, 216, 204};
  for (int i = 0; i < 12; ++i) EXPECT_EQ(rgb[i], want[i]) << i;
}

TEST(Decode, CorruptFilesGiveErrors) {
  const std::string dir = ::testing::TempDir();
  const std::string bad = dir + "/kiln_bad.png";
  std::ifstream in(kData + "/hf/qwen3_vl/image.png", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(bad, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  EXPECT_THROW(decode_image_file(bad), Error);
  std::ofstream(dir + "/kiln_bad.jpg", std::ios::binary) << "\xFF\xD8\xFF\xE0garbage-garbage";
  EXPECT_THROW(decode_image_file(dir + "/kiln_bad.jpg"), Error);
  std::ofstream(dir + "/kiln_bad.txt") << "hello, not an image at all";
  EXPECT_THROW(decode_image_file(dir + "/kiln_bad.txt"), Error);
  EXPECT_THROW(decode_image_file(dir + "/does-not-exist.png"), Error);
  std::ofstream(dir + "/kiln_bad.mp4", std::ios::binary) << "not a video, just some bytes here";
  EXPECT_THROW(load_video(dir + "/kiln_bad.mp4", {}), Error);
}

TEST(Video, FrameSamplingAndTimestamps) {
  VideoOptions opt;
  // 10 s at 30 fps, sampled at 2 fps: 20 frames, round(linspace(0, 299, 20)).
  const auto idx = sample_frame_indices(300, 30.0, opt);
  ASSERT_EQ(idx.size(), 20u);
  EXPECT_EQ(idx.front(), 0);
  EXPECT_EQ(idx[1], 16);  // 299 / 19 = 15.74
  EXPECT_EQ(idx.back(), 299);
  EXPECT_EQ(temporal_patch_seconds({0.0, 0.5, 1.0}, 2), (std::vector<double>{0.25, 1.0}));
}

TEST(Video, OddFrameCountIsPaddedWithTheLast) {
  const std::string dir = kData + "/hf/qwen3_vl";
  const VisionPreprocessConfig cfg = load_preprocess_config(dir);
  const Image img = decode_image_file(dir + "/image.png");
  const PixelValues pv = preprocess_video({img, img, img}, cfg);
  EXPECT_EQ(pv.grid_t, 2);
  const PixelValues one = preprocess_image(img, cfg);
  EXPECT_EQ(pv.grid_h * pv.grid_w, pv.rows() / 2);
  (void)one;
}

// transformers 5.17's Qwen2VLImageProcessor (torchvision-backed) on images
// that need a resize (37x53 up, 70x33 gray) and one with transparency
// (45x41 RGBA): its resize is torch's uint8 antialias arithmetic, and it drops
// the alpha channel. tests/data/vision/make_hf_processor_goldens.py made them.
TEST(PixelValues, MatchTransformersProcessorOnResizedAndTransparentImages) {
  const std::string dir = kData + "/vision";
  const VisionPreprocessConfig cfg = load_preprocess_config(kData + "/hf/qwen3_vl");
  auto golden = SafetensorsModel::open(dir + "/hf_processor_goldens.safetensors");
  for (const char* name : {"hf_rgb_37x53.png", "hf_rgba_45x41.png", "hf_gray_70x33.png"}) {
    const TensorView* want = golden->find_tensor(std::string("pixel_values.") + name);
    const TensorView* grid = golden->find_tensor(std::string("grid.") + name);
    ASSERT_TRUE(want && grid) << name;
    const PixelValues pv = preprocess_image(decode_image_file(dir + "/" + name), cfg);
    const int32_t* g = static_cast<const int32_t*>(grid->data);
    EXPECT_EQ(pv.grid_h, g[1]) << name;
    EXPECT_EQ(pv.grid_w, g[2]) << name;
    ASSERT_EQ(want->shape, (std::vector<int64_t>{pv.rows(), pv.cols})) << name;
    const float* w = static_cast<const float*>(want->data);
    double max_err = 0;
    for (size_t i = 0; i < pv.data.size(); ++i)
      max_err = std::max(max_err, double(std::fabs(pv.data[i] - w[i])));
    EXPECT_LE(max_err, 1e-5) << name;
  }
}

}  // namespace
}  // namespace kiln
