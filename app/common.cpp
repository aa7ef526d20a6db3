#include "common.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "kiln/core/error.h"

namespace kiln::app {

void add_runtime_flags(ArgParser& p, RuntimeFlags* f) {
  p.option("-t,--threads", "N", "CPU threads (default: physical cores)", &f->threads);
  p.flag("--cpu", "run on the CPU even if a GPU is present", &f->cpu);
  p.option("--device", "N", "GPU to use (default: the first)", &f->device);
  p.option("-c,--ctx-size", "N", "context length in tokens (default: the model's, at most 4096)",
           &f->ctx_size);
  p.option("--cache-type", "T", "KV cache element type: f32 (default) or f16", &f->cache_type);
}

std::unique_ptr<Engine> load_engine(const std::string& model, const RuntimeFlags& f,
                                    bool need_tokenizer) {
  KILN_CHECK(f.threads >= 0, "--threads must be positive");
  KILN_CHECK(f.ctx_size >= 0, "--ctx-size must be positive");
  LoadOptions o;
  o.threads = f.threads;
  o.force_cpu = f.cpu;
  o.device = f.device;
  o.context = f.ctx_size;
  if (f.cache_type == "f16") o.kv_dtype = DType::F16;
  o.need_tokenizer = need_tokenizer;
  return Engine::load(model, o);
}

StateOptions state_options(const RuntimeFlags& f) {
  StateOptions o;
  o.context = f.ctx_size;
  if (f.cache_type == "f16")
    o.kv_dtype = DType::F16;
  else if (f.cache_type != "f32")
    fail("--cache-type must be f32 or f16, not '", f.cache_type, "'");
  return o;
}

void add_sampling_flags(ArgParser& p, SamplingFlags* f) {
  p.flag("--greedy", "always pick the most likely token (same as --temp 0)", &f->greedy);
  p.option("--temp", "T", "temperature (default 0.8; 0 = greedy)", &f->temp);
  p.option("--top-k", "K", "sample from the K most likely tokens (default 40; 0 = off)",
           &f->top_k);
  p.option("--top-p", "P", "nucleus: smallest set with probability >= P (default 0.95)",
           &f->top_p);
  p.option("--min-p", "M", "drop tokens below M x the top probability (default 0.05)",
           &f->min_p);
  p.option("--repeat-penalty", "R", "divide logits of recent tokens by R (default 1 = off)",
           &f->repeat_penalty);
  p.option("--repeat-last-n", "N", "recent tokens the penalties look at (default 64)",
           &f->repeat_last_n);
  p.option("--presence-penalty", "A", "subtract A from recent tokens' logits (default 0)",
           &f->presence_penalty);
  p.option("--frequency-penalty", "A", "subtract A per occurrence (default 0)",
           &f->frequency_penalty);
  p.option("--seed", "S", "random seed; the same seed gives the same output (default: random)",
           &f->seed);
}

SamplingParams sampling_params(const SamplingFlags& f, SamplingParams s) {
  if (f.temp) s.temperature = *f.temp;
  if (f.greedy) s.temperature = 0;
  if (f.top_k) s.top_k = *f.top_k;
  if (f.top_p) s.top_p = *f.top_p;
  if (f.min_p) s.min_p = *f.min_p;
  KILN_CHECK(s.temperature >= 0, "--temp must be >= 0");
  KILN_CHECK(s.top_p > 0 && s.top_p <= 1, "--top-p must be in (0, 1]");
  KILN_CHECK(s.min_p >= 0 && s.min_p <= 1, "--min-p must be in [0, 1]");
  KILN_CHECK(f.repeat_penalty > 0, "--repeat-penalty must be positive");
  s.repeat_penalty = f.repeat_penalty;
  s.repeat_last_n = f.repeat_last_n;
  s.presence_penalty = f.presence_penalty;
  s.frequency_penalty = f.frequency_penalty;
  s.seed = f.seed ? uint64_t(uint32_t(*f.seed))
                  : uint64_t(std::chrono::high_resolution_clock::now().time_since_epoch().count());
  return s;
}

void add_chat_flags(ArgParser& p, ChatFlags* f) {
  p.option("--system", "TEXT", "system prompt", &f->system);
  p.flag("--think", "ask a reasoning model to think first (the template's enable_thinking)",
         &f->think);
  p.flag("--no-think", "ask a reasoning model to answer directly", &f->no_think);
  p.option("--think-budget", "N",
           "end the thought after N tokens: a closing sentence and </think> are injected, "
           "then the model answers",
           &f->think_budget);
  p.flag("--show-think", "print the thinking on stderr (by default only the answer is printed)",
         &f->show_think);
  p.option("--stop", "STR", "stop when the output contains STR (repeatable)", &f->stop);
}

void add_media_flags(ArgParser& p, MediaFlags* f) {
  p.option("--image", "PATH", "attach an image (JPEG, PNG, WebP; repeatable)", &f->images);
  p.option("--video", "PATH", "attach a video file (mp4/mkv/webm) or a folder of frames (repeatable)",
           &f->videos);
  p.option("--mmproj", "FILE", "vision tower of a GGUF model (default: mmproj-*.gguf beside it)",
           &f->mmproj);
  p.option("--fps", "F", "video frames sampled per second (default 2)", &f->fps);
  p.option("--max-frames", "N", "at most this many video frames (default 768)", &f->max_frames);
}

TurnMedia MediaFlags::media() const {
  KILN_CHECK(fps > 0, "--fps must be positive");
  KILN_CHECK(max_frames > 0, "--max-frames must be positive");
  TurnMedia m;
  m.images = images;
  m.videos = videos;
  m.video.fps = fps;
  m.video.max_frames = max_frames;
  return m;
}

std::optional<bool> ChatFlags::enable_thinking() const {
  KILN_CHECK(!(think && no_think), "give --think or --no-think, not both");
  if (think) return true;
  if (no_think) return false;
  return std::nullopt;
}

std::vector<int32_t> parse_ids(const std::string& text) {
  std::string s = text;
  for (char& c : s)
    if (c == ',' || c == '[' || c == ']') c = ' ';
  std::istringstream in(s);
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (...) {
      used = 0;
    }
    KILN_CHECK(used == word.size() && v >= 0 && v <= INT32_MAX, "--ids: '", word,
               "' is not a token id");
    ids.push_back(int32_t(v));
  }
  KILN_CHECK(!ids.empty(), "--ids: no token ids given");
  return ids;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", b, units[u]);
  return buf;
}

std::string human_count(double n) {
  char buf[32];
  if (n >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f B", n / 1e9);
  else if (n >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f M", n / 1e6);
  else if (n >= 1e3)
    std::snprintf(buf, sizeof buf, "%.2f K", n / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", n);
  return buf;
}

std::string bundled_model_path() {
  // Next to the binary's source tree (a build), or installed beside it.
  std::string p = KILN_BUNDLED_MODEL;
  if (std::filesystem::exists(p)) return p;
  return "models/stories260K.gguf";
}

}  // namespace kiln::app
