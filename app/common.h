// Flags and helpers that several subcommands share: where the model is, how
// it runs (threads, device, context), how ids are given on the command line.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "args.h"
#include "kiln/runtime/conversation.h"
#include "kiln/runtime/engine.h"
#include "kiln/runtime/sampler.h"

namespace kiln::app {

struct RuntimeFlags {
  int threads = 0;
  bool cpu = false;
  int device = -1;
  int ctx_size = 0;
  std::string cache_type = "f32";
};

void add_runtime_flags(ArgParser& p, RuntimeFlags* f);
std::unique_ptr<Engine> load_engine(const std::string& model, const RuntimeFlags& f,
                                    bool need_tokenizer = true);
StateOptions state_options(const RuntimeFlags& f);

struct SamplingFlags {
  bool greedy = false;
  std::optional<float> temp, top_p, min_p;
  std::optional<int> top_k;
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  std::optional<int> seed;
};

void add_sampling_flags(ArgParser& p, SamplingFlags* f);
// The flags on top of base (the model's own defaults).
SamplingParams sampling_params(const SamplingFlags& f, SamplingParams base = {});

// Chat and thinking flags shared by run and chat.
struct ChatFlags {
  std::string system;
  bool think = false, no_think = false, show_think = false;
  int think_budget = -1;
  std::vector<std::string> stop;
  std::optional<bool> enable_thinking() const;
};
void add_chat_flags(ArgParser& p, ChatFlags* f);

// Images and video for vision-language models.
struct MediaFlags {
  std::vector<std::string> images, videos;
  std::string mmproj;
  float fps = 2.0f;
  int max_frames = 768;
  TurnMedia media() const;
};
void add_media_flags(ArgParser& p, MediaFlags* f);

// "1 2 3" or "1,2,3" -> ids; throws kiln::Error on anything else.
std::vector<int32_t> parse_ids(const std::string& text);

// The bundled model, for commands whose MODEL is optional.
std::string bundled_model_path();

// "512 B", "1.13 MiB", "2.32 GiB" (binary units).
std::string human_bytes(double bytes);
// "850", "292.80 K", "596.05 M", "4.02 B": a parameter count as llama-bench
// writes it.
std::string human_count(double n);

}  // namespace kiln::app
