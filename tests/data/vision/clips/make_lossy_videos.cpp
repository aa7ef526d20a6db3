// Writes the lossy clips of tests/data/vision/clips: the kind of file a user
// gives (H.264 in MP4, VP9 in WebM, 4:2:0 chroma), so that the test compares
// kiln's decode, frame sampling and pixel_values with what transformers'
// processor makes of the very same file (make_clip_reference.py beside it).
// A one-off tool, not part of the build:
//   g++ -O1 tests/data/vision/clips/make_lossy_videos.cpp -o /tmp/make_lossy_videos \
//       $(pkg-config --cflags --libs libavformat libavcodec libavutil libswscale)
//   /tmp/make_lossy_videos tests/data/vision/clips
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/opt.h>
}

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "make_lossy_videos: %s failed\n", what);
    std::exit(1);
  }
}

// Moving colour gradients and a disc: detail for the codec to round, and a
// clear change from frame to frame so that taking a wrong frame shows.
void fill_frame(AVFrame* f, int index) {
  const int w = f->width, h = f->height;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const double r = std::fmod(x * 2.3 + index * 17.0, 256.0);
      const double g = std::fmod(y * 3.1 + x * 0.7 + index * 29.0, 256.0);
      const double dx = x - (w * 0.3 + index * 3.0), dy = y - h * 0.5;
      const double b = (dx * dx + dy * dy < h * h * 0.09) ? 230.0 : std::fmod(index * 11.0, 90.0);
      const double luma = 0.257 * r + 0.504 * g + 0.098 * b + 16;
      f->data[0][y * f->linesize[0] + x] = uint8_t(std::lround(std::fmin(luma, 235.0)));
    }
  for (int y = 0; y < h / 2; ++y)
    for (int x = 0; x < w / 2; ++x) {
      const int sx = 2 * x, sy = 2 * y;
      const double r = std::fmod(sx * 2.3 + index * 17.0, 256.0);
      const double g = std::fmod(sy * 3.1 + sx * 0.7 + index * 29.0, 256.0);
      const double dx = sx - (w * 0.3 + index * 3.0), dy = sy - h * 0.5;
      const double b = (dx * dx + dy * dy < h * h * 0.09) ? 230.0 : std::fmod(index * 11.0, 90.0);
      const double cb = -0.148 * r - 0.291 * g + 0.439 * b + 128;
      const double cr = 0.439 * r - 0.368 * g - 0.071 * b + 128;
      f->data[1][y * f->linesize[1] + x] = uint8_t(std::lround(std::fmin(std::fmax(cb, 16), 240)));
      f->data[2][y * f->linesize[2] + x] = uint8_t(std::lround(std::fmin(std::fmax(cr, 16), 240)));
    }
}

void write_clip(const std::string& path, const char* encoder, int width, int height, int fps,
                int frames) {
  AVFormatContext* fmt = nullptr;
  check(avformat_alloc_output_context2(&fmt, nullptr, nullptr, path.c_str()) >= 0, "container");
  const AVCodec* codec = avcodec_find_encoder_by_name(encoder);
  check(codec != nullptr, encoder);
  AVStream* st = avformat_new_stream(fmt, nullptr);
  AVCodecContext* enc = avcodec_alloc_context3(codec);
  enc->width = width;
  enc->height = height;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->time_base = AVRational{1, fps};
  enc->framerate = AVRational{fps, 1};
  enc->gop_size = 12;
  enc->thread_count = 1;  // the same bytes every run
  if (fmt->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  check(avcodec_open2(enc, codec, nullptr) >= 0, "encoder");
  check(avcodec_parameters_from_context(st->codecpar, enc) >= 0, "parameters");
  st->time_base = enc->time_base;
  st->avg_frame_rate = enc->framerate;
  check(avio_open(&fmt->pb, path.c_str(), AVIO_FLAG_WRITE) >= 0, "open");
  check(avformat_write_header(fmt, nullptr) >= 0, "header");

  AVFrame* f = av_frame_alloc();
  f->format = enc->pix_fmt;
  f->width = width;
  f->height = height;
  check(av_frame_get_buffer(f, 0) >= 0, "frame");
  AVPacket* pkt = av_packet_alloc();
  auto send = [&](AVFrame* frame) {
    check(avcodec_send_frame(enc, frame) >= 0, "encode");
    while (avcodec_receive_packet(enc, pkt) == 0) {
      av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
      pkt->stream_index = st->index;
      check(av_interleaved_write_frame(fmt, pkt) >= 0, "write");
    }
  };
  for (int i = 0; i < frames; ++i) {
    check(av_frame_make_writable(f) >= 0, "writable");
    fill_frame(f, i);
    f->pts = i;
    send(f);
  }
  send(nullptr);
  check(av_write_trailer(fmt) >= 0, "trailer");
  av_packet_free(&pkt);
  av_frame_free(&f);
  avcodec_free_context(&enc);
  avio_closep(&fmt->pb);
  avformat_free_context(fmt);
}

}  // namespace

int main(int argc, char** argv) {
  check(argc == 2, "usage: make_lossy_videos OUT_DIR");
  const std::string dir = argv[1];
  // 23 frames at 10 fps: 2-per-second sampling takes 4 of them (0, 7, 15, 22).
  write_clip(dir + "/h264_160x90_10fps.mp4", "libx264", 160, 90, 10, 23);
  // 13 frames at 6 fps: 4 taken, an odd frame height after resizing.
  write_clip(dir + "/vp9_96x64_6fps.webm", "libvpx-vp9", 96, 64, 6, 13);
  return 0;
}
