#include "kiln/vision/video.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "kiln/core/error.h"

#ifdef KILN_HAVE_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/log.h>
#include <libavutil/imgutils.h>
#include <libswscale/swscale.h>
}
#endif

namespace kiln {
namespace {

bool is_image_name(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp";
}

#ifdef KILN_HAVE_FFMPEG
std::string av_message(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, buf, sizeof buf);
  return buf;
}

// Owns the FFmpeg objects of one decode.
struct Decoder {
  AVFormatContext* fmt = nullptr;
  AVCodecContext* codec = nullptr;
  AVFrame* frame = nullptr;
  AVPacket* packet = nullptr;
  SwsContext* sws = nullptr;
  ~Decoder() {
    sws_freeContext(sws);
    av_packet_free(&packet);
    av_frame_free(&frame);
    avcodec_free_context(&codec);
    avformat_close_input(&fmt);
  }
};

VideoFrames decode_video_file(const std::string& path, const VideoOptions& opt) {
  // FFmpeg's own log lines ("File ended prematurely", probe hints) would come
  // before and instead of kiln's one-line error; its failures reach us as
  // return codes anyway.
  if (!std::getenv("KILN_FFMPEG_LOG")) av_log_set_level(AV_LOG_QUIET);
  Decoder d;
  auto open = [&] {
    int rc = avformat_open_input(&d.fmt, path.c_str(), nullptr, nullptr);
    KILN_CHECK(rc >= 0, path, ": cannot open as a video (", av_message(rc), ")");
    rc = avformat_find_stream_info(d.fmt, nullptr);
    KILN_CHECK(rc >= 0, path, ": cannot read the video's streams (", av_message(rc), ")");
  };
  open();
  int rc = 0;
  const AVCodec* codec = nullptr;
  const int si = av_find_best_stream(d.fmt, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
  KILN_CHECK(si >= 0 && codec, path, ": no decodable video stream");
  AVStream* st = d.fmt->streams[si];
  d.codec = avcodec_alloc_context3(codec);
  KILN_CHECK(d.codec && avcodec_parameters_to_context(d.codec, st->codecpar) >= 0, path,
             ": cannot set up the video decoder");
  rc = avcodec_open2(d.codec, codec, nullptr);
  KILN_CHECK(rc >= 0, path, ": cannot open the video decoder (", av_message(rc), ")");

  double video_fps = av_q2d(st->avg_frame_rate);
  if (!(video_fps > 0)) video_fps = av_q2d(st->r_frame_rate);
  KILN_CHECK(video_fps > 0, path, ": the video has no frame rate");
  int64_t total = st->nb_frames;
  if (total <= 0) {
    // No count in the header (Matroska, WebM): count the stream's packets,
    // one a frame, as a decoder's exact scan does (a duration times the rate
    // can be a frame off), then read the file again from its start.
    total = 0;
    d.packet = av_packet_alloc();
    KILN_CHECK(d.packet, path, ": out of memory");
    while (av_read_frame(d.fmt, d.packet) >= 0) {
      if (d.packet->stream_index == si) ++total;
      av_packet_unref(d.packet);
    }
    avformat_close_input(&d.fmt);
    open();
    st = d.fmt->streams[si];
  }
  if (total <= 0) {
    const double seconds = st->duration != AV_NOPTS_VALUE ? st->duration * av_q2d(st->time_base)
                                                          : d.fmt->duration / double(AV_TIME_BASE);
    total = int64_t(std::llround(seconds * video_fps));
  }
  KILN_CHECK(total > 0, path, ": the video has no frames");
  const std::vector<int64_t> wanted = sample_frame_indices(total, video_fps, opt);

  VideoFrames out;
  d.frame = av_frame_alloc();
  if (!d.packet) d.packet = av_packet_alloc();
  int64_t index = 0;
  size_t next = 0;
  Image last;
  auto take = [&](AVFrame* f) {
    const int w = f->width, h = f->height;
    // swscale as the decoders transformers reads video with call it (PyAV,
    // torchcodec: SWS_BILINEAR; OpenCV: SWS_BICUBIC, the same same-size
    // path): 4:2:0 chroma as they upsample it, byte for byte. Accurate
    // rounding or full chroma interpolation would move edges by up to ~90
    // levels (tests/vision/video_file_test.cpp, the lossy clips).
    d.sws = sws_getCachedContext(d.sws, w, h, AVPixelFormat(f->format), w, h, AV_PIX_FMT_RGB24,
                                 SWS_BILINEAR, nullptr,
                                 nullptr, nullptr);
    KILN_CHECK(d.sws, path, ": cannot convert the video's pixel format");
    Image img;
    img.width = w;
    img.height = h;
    img.rgb.resize(size_t(w) * h * 3);
    uint8_t* dst[1] = {img.rgb.data()};
    int stride[1] = {w * 3};
    sws_scale(d.sws, f->data, f->linesize, 0, h, dst, stride);
    return img;
  };
  auto drain = [&]() {
    while (avcodec_receive_frame(d.codec, d.frame) == 0) {
      if (next < wanted.size() && wanted[next] == index) {
        last = take(d.frame);
        while (next < wanted.size() && wanted[next] == index) {
          out.frames.push_back(last);
          out.seconds.push_back(double(index) / video_fps);
          ++next;
        }
      }
      ++index;
      av_frame_unref(d.frame);
    }
  };
  while (next < wanted.size() && av_read_frame(d.fmt, d.packet) >= 0) {
    if (d.packet->stream_index == si) {
      rc = avcodec_send_packet(d.codec, d.packet);
      av_packet_unref(d.packet);
      KILN_CHECK(rc >= 0 || rc == AVERROR(EAGAIN), path, ": corrupt video data (", av_message(rc),
                 ")");
      drain();
    } else {
      av_packet_unref(d.packet);
    }
  }
  avcodec_send_packet(d.codec, nullptr);
  drain();
  KILN_CHECK(!out.frames.empty(), path, ": no frame could be decoded");
  // The header's frame count can overstate what the stream holds.
  while (next < wanted.size()) {
    out.frames.push_back(out.frames.back());
    out.seconds.push_back(double(wanted[next++]) / video_fps);
  }
  return out;
}
#endif

}  // namespace

bool have_video_decoder() {
#ifdef KILN_HAVE_FFMPEG
  return true;
#else
  return false;
#endif
}

std::vector<int64_t> sample_frame_indices(int64_t total, double video_fps,
                                          const VideoOptions& opt) {
  KILN_CHECK(opt.fps > 0 && opt.max_frames > 0, "--fps and --max-frames must be positive");
  if (opt.sampling == FrameSampling::kArange) {
    // transformers' Qwen2VLVideoProcessor.sample_frames: the count in double,
    // floored to whole temporal patches; torch.arange(0, total, step) in
    // double, its values rounded to float32 and truncated (.int()).
    const int64_t tp = std::max(opt.temporal, 1);
    const int64_t most = std::min<int64_t>(opt.max_frames, total) / tp * tp;
    double n = double(total) / video_fps * opt.fps;
    n = std::min({std::max(n, double(opt.min_frames)), double(most), double(total)});
    int64_t count = int64_t(std::floor(n / double(tp))) * tp;
    if (count < 1) count = std::min<int64_t>(total, tp);  // (transformers divides by zero)
    const double step = double(total) / double(count);
    const int64_t size = int64_t(std::ceil(double(total) / step));
    std::vector<int64_t> idx(static_cast<size_t>(size));
    for (int64_t i = 0; i < size; ++i) idx[size_t(i)] = int64_t(float(double(i) * step));
    return idx;
  }
  int64_t n = int64_t(double(total) / video_fps * opt.fps);
  n = std::min<int64_t>({std::max<int64_t>(n, opt.min_frames), opt.max_frames, total});
  n = std::max<int64_t>(n, 1);
  std::vector<int64_t> idx(static_cast<size_t>(n), 0);
  // torch.linspace in float32, then numpy's round-half-even.
  const float step = n > 1 ? float(total - 1) / float(n - 1) : 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = i < n / 2 ? float(i) * step : float(total - 1) - float(n - 1 - i) * step;
    idx[size_t(i)] = int64_t(std::nearbyint(n > 1 ? v : 0.0f));
  }
  return idx;
}

std::vector<double> temporal_patch_seconds(std::vector<double> seconds, int temporal) {
  while (!seconds.empty() && seconds.size() % size_t(temporal) != 0)
    seconds.push_back(seconds.back());
  std::vector<double> out;
  for (size_t i = 0; i < seconds.size(); i += size_t(temporal))
    out.push_back((seconds[i] + seconds[i + size_t(temporal) - 1]) / 2);
  return out;
}

VideoFrames video_from_images(const std::vector<std::string>& paths, const VideoOptions& opt) {
  KILN_CHECK(!paths.empty(), "a video needs at least one frame");
  KILN_CHECK(opt.fps > 0, "--fps must be positive");
  VideoFrames v;
  for (size_t i = 0; i < paths.size() && int(i) < opt.max_frames; ++i) {
    v.frames.push_back(decode_image_file(paths[i]));
    v.seconds.push_back(double(i) / opt.fps);
  }
  return v;
}

VideoFrames load_video(const std::string& path, const VideoOptions& opt) {
  namespace fs = std::filesystem;
  KILN_CHECK(fs::exists(path), path, ": no such file or folder");
  if (fs::is_directory(path)) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && is_image_name(e.path())) names.push_back(e.path().string());
    std::sort(names.begin(), names.end());
    KILN_CHECK(!names.empty(), path, ": the folder holds no .jpg, .png or .webp frames");
    return video_from_images(names, opt);
  }
  if (is_image_name(path)) return video_from_images({path}, opt);
#ifdef KILN_HAVE_FFMPEG
  return decode_video_file(path, opt);
#else
  fail(path, ": kiln was built without video support (FFmpeg's libavformat, libavcodec, "
       "libswscale and libavutil were not found); give the frames as images or a folder");
#endif
}

}  // namespace kiln
