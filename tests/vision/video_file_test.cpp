// A video file through FFmpeg, end to end against transformers: the five
// reference frames of tests/data/vision/video_frames are written into a
// lossless FFV1/Matroska file at 4 frames per second, with other frames
// between them where the 2-per-second sampling must skip; kiln must pick
// exactly those five (round(linspace(0, 9, 5)) = 0, 2, 4, 7, 9), give each its
// time, and turn them into the processor's pixel_values of ref_video.
//
// Tolerances: the decoded frames equal the sources byte for byte (FFV1 is
// lossless and BGR0 -> RGB24 is a repack); pixel_values max abs <= 1e-5
// as for the folder of frames.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "kiln/core/error.h"
#include "kiln/io/safetensors.h"
#include "kiln/vision/preprocess.h"
#include "kiln/vision/video.h"
#include "support/reference.h"

#if __has_include(<libavformat/avformat.h>)
#define KILN_TEST_CAN_WRITE_VIDEO 1
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
}
#endif

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

#ifdef KILN_TEST_CAN_WRITE_VIDEO
// Writes `frames` (all the same size) as FFV1 in Matroska at `fps`.
void write_lossless_video(const std::string& path, const std::vector<Image>& frames, int fps) {
  AVFormatContext* fmt = nullptr;
  ASSERT_GE(avformat_alloc_output_context2(&fmt, nullptr, "matroska", path.c_str()), 0);
  const AVCodec* codec = avcodec_find_encoder(AV_CODEC_ID_FFV1);
  ASSERT_TRUE(codec);
  AVStream* st = avformat_new_stream(fmt, nullptr);
  AVCodecContext* enc = avcodec_alloc_context3(codec);
  enc->width = frames[0].width;
  enc->height = frames[0].height;
  enc->pix_fmt = AV_PIX_FMT_0RGB32;  // bytes B, G, R, 0 in memory
  enc->time_base = AVRational{1, fps};
  enc->framerate = AVRational{fps, 1};
  if (fmt->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  ASSERT_GE(avcodec_open2(enc, codec, nullptr), 0);
  ASSERT_GE(avcodec_parameters_from_context(st->codecpar, enc), 0);
  st->time_base = enc->time_base;
  st->avg_frame_rate = enc->framerate;
  ASSERT_GE(avio_open(&fmt->pb, path.c_str(), AVIO_FLAG_WRITE), 0);
  ASSERT_GE(avformat_write_header(fmt, nullptr), 0);

  AVFrame* f = av_frame_alloc();
  f->format = enc->pix_fmt;
  f->width = enc->width;
  f->height = enc->height;
  ASSERT_GE(av_frame_get_buffer(f, 0), 0);
  AVPacket* pkt = av_packet_alloc();
  auto flush = [&](AVFrame* frame) {
    ASSERT_GE(avcodec_send_frame(enc, frame), 0);
    while (avcodec_receive_packet(enc, pkt) == 0) {
      av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
      pkt->stream_index = st->index;
      ASSERT_GE(av_interleaved_write_frame(fmt, pkt), 0);
    }
  };
  for (size_t i = 0; i < frames.size(); ++i) {
    ASSERT_GE(av_frame_make_writable(f), 0);
    const Image& img = frames[i];
    for (int y = 0; y < img.height; ++y)
      for (int x = 0; x < img.width; ++x) {
        const uint8_t* p = &img.rgb[(size_t(y) * img.width + x) * 3];
        uint8_t* q = f->data[0] + y * f->linesize[0] + x * 4;
        q[0] = p[2], q[1] = p[1], q[2] = p[0], q[3] = 0;
      }
    f->pts = int64_t(i);
    flush(f);
  }
  flush(nullptr);
  ASSERT_GE(av_write_trailer(fmt), 0);
  av_packet_free(&pkt);
  av_frame_free(&f);
  avcodec_free_context(&enc);
  avio_closep(&fmt->pb);
  avformat_free_context(fmt);
}
#endif

TEST(VideoFile, SampledFramesAndPixelsMatchTransformers) {
#ifndef KILN_TEST_CAN_WRITE_VIDEO
  GTEST_SKIP() << "built without FFmpeg's headers";
#else
  if (!have_video_decoder()) GTEST_SKIP() << "built without video support";
  std::vector<Image> refs;
  for (int i = 0; i < 5; ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "/vision/video_frames/frame_%02d.png", i);
    refs.push_back(decode_image_file(kData + name));
  }
  // Ten frames at 4 fps; the ones 2-per-second sampling must skip are the
  // colour negatives of their neighbours, so taking one shows at once.
  const int kept[5] = {0, 2, 4, 7, 9};
  std::vector<Image> frames(10);
  for (int i = 0, r = 0; i < 10; ++i) {
    if (r < 5 && kept[r] == i) {
      frames[size_t(i)] = refs[size_t(r++)];
    } else {
      frames[size_t(i)] = refs[size_t(std::max(r - 1, 0))];
      for (uint8_t& b : frames[size_t(i)].rgb) b = uint8_t(255 - b);
    }
  }
  const std::string path = ::testing::TempDir() + "/kiln_lossless.mkv";
  write_lossless_video(path, frames, 4);
  if (HasFatalFailure()) return;

  const VideoFrames got = load_video(path, VideoOptions{});
  ASSERT_EQ(got.frames.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(got.frames[i].width, refs[i].width);
    EXPECT_EQ(got.frames[i].height, refs[i].height);
    EXPECT_TRUE(got.frames[i].rgb == refs[i].rgb) << "frame " << i << " is not source frame "
                                                  << kept[i];
    EXPECT_DOUBLE_EQ(got.seconds[i], kept[i] / 4.0);
  }
  // transformers: timestamps of the patches are the means of each pair.
  EXPECT_EQ(temporal_patch_seconds(got.seconds, 2),
            (std::vector<double>{0.25, (1.0 + 1.75) / 2, 2.25}));

  const std::string dir = kData + "/hf/qwen3_vl";
  const PixelValues px = preprocess_video(got.frames, load_preprocess_config(dir));
  auto ref = SafetensorsModel::open(dir + "/ref_video.safetensors");
  const TensorView* want = ref->find_tensor("pixel_values");
  ASSERT_TRUE(want);
  ASSERT_EQ(int64_t(px.data.size()), want->numel());
  EXPECT_LE(test::max_abs_error(px.data.data(), *want), 1e-5);
#endif
}

// Lossy clips as users give them (H.264 in MP4, VP9 in WebM: 4:2:0 chroma,
// see make_lossy_videos.cpp), against what transformers made of the same
// files (make_clip_reference.py: its processor for tests/data/hf/qwen3_vl,
// frames decoded by FFmpeg inside OpenCV, the decoder it had there). The
// fixture ships no video_preprocessor_config.json, so transformers gives it
// Qwen2-VL's video processor: frames at int(arange(0, total, total / n)),
// the image budget per frame. Each sampled frame must equal that decoder's
// frame byte for byte (both are FFmpeg's decoders and its swscale
// conversion to RGB), hence pixel_values within 1e-5.
TEST(VideoFile, LossyClipsDecodeAndSampleAsTransformers) {
  if (!have_video_decoder()) GTEST_SKIP() << "built without video support";
  struct Clip {
    const char* name;
    double fps;
  };
  const VisionPreprocessConfig cfg = load_preprocess_config(kData + "/hf/qwen3_vl");
  ASSERT_EQ(cfg.video, VideoProcessorKind::kQwen2VL);
  for (const Clip& c : {Clip{"h264_160x90_10fps.mp4", 10}, Clip{"vp9_96x64_6fps.webm", 6}}) {
    SCOPED_TRACE(c.name);
    const std::string path = kData + "/vision/clips/" + c.name;
    auto ref = SafetensorsModel::open(path + ".ref.safetensors");
    const TensorView* all = ref->find_tensor("frames");  // U8 [N, H, W, 3]
    ASSERT_TRUE(all);
    const int64_t total = all->shape[0], h = all->shape[1], w = all->shape[2];
    VideoOptions o;
    o.sampling = FrameSampling::kArange;
    o.temporal = cfg.temporal;
    const std::vector<int64_t> idx = sample_frame_indices(total, c.fps, o);
    const VideoFrames got = load_video(path, o);
    ASSERT_EQ(got.frames.size(), idx.size());
    for (size_t i = 0; i < idx.size(); ++i) {
      ASSERT_EQ(got.frames[i].width, w);
      ASSERT_EQ(got.frames[i].height, h);
      EXPECT_DOUBLE_EQ(got.seconds[i], double(idx[i]) / c.fps);
      const uint8_t* want = static_cast<const uint8_t*>(all->data) + idx[i] * h * w * 3;
      int worst = 0;
      for (int64_t k = 0; k < h * w * 3; ++k)
        worst = std::max(worst, std::abs(int(got.frames[i].rgb[size_t(k)]) - int(want[k])));
      EXPECT_EQ(worst, 0) << "frame " << idx[i] << " differs from transformers' decoder";
    }
    const PixelValues px = preprocess_video(got.frames, cfg);
    const TensorView* grid = ref->find_tensor("video_grid_thw");
    const int32_t* g = static_cast<const int32_t*>(grid->data);
    EXPECT_EQ(std::vector<int64_t>({px.grid_t, px.grid_h, px.grid_w}),
              std::vector<int64_t>({g[0], g[1], g[2]}));
    const TensorView* pv = ref->find_tensor("pixel_values");
    ASSERT_EQ(int64_t(px.data.size()), pv->numel());
    EXPECT_LE(test::max_abs_error(px.data.data(), *pv), 1e-5);
  }
}

// transformers' Qwen2-VL sampling, worked by hand: 23 frames at 10 fps, 2 a
// second: 4.6 frames, floored to whole pairs (4), at arange(0, 23, 5.75).
// Qwen3-VL's: int(4.6) = 4 at round(linspace(0, 22, 4)).
TEST(VideoFile, FrameSamplingOfBothProcessors) {
  VideoOptions o;
  EXPECT_EQ(sample_frame_indices(23, 10, o), (std::vector<int64_t>{0, 7, 15, 22}));
  o.sampling = FrameSampling::kArange;
  EXPECT_EQ(sample_frame_indices(23, 10, o), (std::vector<int64_t>{0, 5, 11, 17}));
  // 7 frames: max(1.4, 4) = 4 frames at steps of 1.75.
  EXPECT_EQ(sample_frame_indices(7, 10, o), (std::vector<int64_t>{0, 1, 3, 5}));
  // 100 frames at 25 fps, 2 a second: 8 at steps of 12.5.
  EXPECT_EQ(sample_frame_indices(100, 25, o), (std::vector<int64_t>{0, 12, 25, 37, 50, 62, 75, 87}));
  // 3 frames: the most whole pairs is one pair.
  EXPECT_EQ(sample_frame_indices(3, 10, o), (std::vector<int64_t>{0, 1}));
}

TEST(VideoFile, ATruncatedFileIsAClearError) {
#ifndef KILN_TEST_CAN_WRITE_VIDEO
  GTEST_SKIP() << "built without FFmpeg's headers";
#else
  if (!have_video_decoder()) GTEST_SKIP() << "built without video support";
  std::vector<Image> frames(4, decode_image_file(kData + "/vision/video_frames/frame_00.png"));
  const std::string path = ::testing::TempDir() + "/kiln_whole.mkv";
  write_lossless_video(path, frames, 4);
  if (HasFatalFailure()) return;
  std::string bytes;
  {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    ASSERT_TRUE(f);
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) bytes.append(buf, n);
    std::fclose(f);
  }
  const std::string cut = ::testing::TempDir() + "/kiln_cut.mkv";
  std::FILE* f = std::fopen(cut.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size() / 8, f);  // the header and not one whole frame
  std::fclose(f);
  try {
    const VideoFrames v = load_video(cut, VideoOptions{});
    // A demuxer may recover a frame or two; what it returns must be whole.
    for (const Image& img : v.frames) EXPECT_EQ(img.rgb.size(), size_t(img.width) * img.height * 3);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kiln_cut.mkv"), std::string::npos) << e.what();
  }
#endif
}

}  // namespace
}  // namespace kiln
