// A multi-turn chat with one model. Each turn renders the whole conversation
// with the model's template, keeps the part of the KV cache whose tokens are
// unchanged, and feeds only the rest: a new turn costs its own tokens, not
// the whole history again.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/runtime/chat_format.h"
#include "kiln/runtime/engine.h"
#include "kiln/runtime/generate.h"
#include "kiln/runtime/multimodal.h"

namespace kiln {

struct TurnOptions {
  int max_tokens = 1024;
  SamplingParams sampling;
  std::optional<bool> enable_thinking;  // the template's enable_thinking
  int64_t think_budget = -1;            // < 0: unbounded
  std::vector<std::string> stop_strings;
};

// Images and videos attached to a user turn.
struct TurnMedia {
  std::vector<std::string> images, videos;
  VideoOptions video;
  bool empty() const { return images.empty() && videos.empty(); }
};

struct TurnCallbacks {
  std::function<void(const std::string&)> on_answer;   // streamed answer text
  std::function<void(const std::string&)> on_thought;  // streamed thinking text
  std::function<bool()> cancelled;                     // polled each token
};

struct TurnResult {
  std::vector<int32_t> prompt_ids;  // the whole rendered prompt of this turn
  std::string answer, thought;
  GenerateResult generation;
  int64_t reused_tokens = 0;  // prompt tokens found already in the cache
};

class Conversation {
 public:
  Conversation(Engine& engine, ChatFormat format, const StateOptions& state_options);

  void set_system(const std::string& text);
  // Forgets the turns (the system prompt stays).
  void reset();
  TurnResult say(const std::string& user_text, const TurnOptions& options,
                 const TurnCallbacks& callbacks, const TurnMedia& media = {});
  // Where a GGUF model's vision tower is (default: mmproj-*.gguf beside it).
  void set_mmproj(const std::string& path) { mmproj_ = path; }
  const nlohmann::json& messages() const { return messages_; }
  bool has_template() const { return format_.chat_template.has_value(); }
  int64_t cached_tokens() const { return int64_t(cached_.size()); }

  // The prompt ids for the conversation so far plus the generation prompt.
  // User text never turns into control tokens, even if it spells one.
  std::vector<int32_t> render_prompt(const TurnOptions& options) const;

 private:
  Engine& engine_;
  ChatFormat format_;
  std::unique_ptr<SequenceState> state_;
  nlohmann::json messages_ = nlohmann::json::array();
  std::string system_;
  std::vector<int32_t> cached_;  // the ids whose keys/values are in the cache, in order
  std::vector<std::string> user_texts_;  // what the user wrote each turn (no media markers)
  std::string raw_text_;         // models without a template: the running text
  std::vector<std::string> special_texts_;  // control-token texts user input must not spell

  // Vision: the tower (opened on first use), every media item of the
  // conversation in prompt order, and where the last one ends in the cache
  // (a cached prefix is reused only past it: M-RoPE positions before it
  // depend on the media).
  std::string mmproj_;
  std::unique_ptr<VisionRuntime> vision_;
  std::vector<MediaItem> media_;
  int64_t media_end_ = 0;
  TurnResult say_unchecked(const std::string& user_text, const TurnOptions& options,
                           const TurnCallbacks& callbacks, const TurnMedia& media);
  nlohmann::json user_message(const std::string& text, size_t n_images, size_t n_videos) const;
};

}  // namespace kiln
