// Video input: frames sampled from a video file (FFmpeg), or given as a list
// of images or a folder of them (sorted by name).
#pragma once

#include <string>
#include <vector>

#include "kiln/vision/image.h"

namespace kiln {

// How a video processor picks frames (VideoOptions::sampling).
enum class FrameSampling {
  // Qwen3-VL's video processor: n = total / video_fps * fps frames, clamped to
  // [min_frames, max_frames] and the total, at round(linspace(0, total - 1, n)).
  kLinspace,
  // Qwen2-VL's (what transformers picks for a checkpoint without its own
  // video_preprocessor_config.json): n as above but kept a multiple of the
  // temporal patch, at int(arange(0, total, total / n)).
  kArange,
};

struct VideoOptions {
  double fps = 2.0;      // frames sampled per second of video
  int max_frames = 768;  // at most this many
  int min_frames = 4;    // at least this many (when the video has them)
  FrameSampling sampling = FrameSampling::kLinspace;  // the model's processor sets it
  int temporal = 2;      // frames per temporal patch (kArange keeps whole patches)
};

struct VideoFrames {
  std::vector<Image> frames;
  std::vector<double> seconds;  // time of each sampled frame
};

// A folder of images (sorted by name), a video file, or a single image taken
// as a one-frame video. Frames of a folder are taken as sampled at opt.fps.
VideoFrames load_video(const std::string& path, const VideoOptions& opt);
// Images given one by one, taken as sampled at opt.fps.
VideoFrames video_from_images(const std::vector<std::string>& paths, const VideoOptions& opt);
// Whether this build reads video files (FFmpeg was found at configure time).
bool have_video_decoder();

// Which of `total` frames (at `video_fps`) the video processor samples (see
// FrameSampling).
std::vector<int64_t> sample_frame_indices(int64_t total, double video_fps,
                                          const VideoOptions& opt);
// One timestamp per temporal patch: the mean of the first and last frame
// times of each group of `temporal` frames (the last frame repeated to fill).
std::vector<double> temporal_patch_seconds(std::vector<double> seconds, int temporal);

}  // namespace kiln
