// kiln's public API: embed an LLM in a program the way the kiln command does.
//
//   auto llm = kiln::Llm::open("Qwen3-0.6B-Q8_0.gguf");
//   auto chat = llm->chat("You are terse.");
//   chat->say("Why is the sky blue?", {}, [](std::string_view piece) {
//     std::cout << piece << std::flush;
//     return true;  // false stops the answer
//   });
//
// Everything here throws kiln::Error (a std::runtime_error) with a message a
// user can act on. One Llm may serve several Chat/Session objects, used from
// one thread at a time each.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

class Engine;
class Conversation;
class SequenceState;

struct OpenOptions {
  int threads = 0;         // CPU threads; 0 = physical cores
  bool cpu = false;        // never use a GPU
  int device = -1;         // GPU index; -1 = the first
  int64_t context = 0;     // positions per sequence; 0 = the model's, at most 4096
};

struct GenerateOptions {
  int max_tokens = 256;
  float temperature = 0.8f;  // 0 = greedy
  int top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  uint64_t seed = 0;
  std::vector<std::string> stop;          // stop strings
  std::optional<bool> enable_thinking;    // chat: the template's enable_thinking
  int64_t think_budget = -1;              // chat: < 0 unbounded
};

// Receives text as it is generated; return false to stop.
using TextCallback = std::function<bool(std::string_view piece)>;

// Raw access: feed token ids, read logits, sample. For scoring and custom loops.
class Session {
 public:
  ~Session();
  // Feeds ids at the next positions; returns the logits [vocab] of the last one.
  const std::vector<float>& feed(const std::vector<int32_t>& ids);
  // Continues from what was fed, returns the generated ids.
  std::vector<int32_t> generate(const GenerateOptions& options, const TextCallback& on_text = {});
  int64_t position() const;
  void reset();

 private:
  friend class Llm;
  Session(Engine& engine, int64_t context);
  Engine& engine_;
  std::unique_ptr<SequenceState> state_;
  std::vector<float> logits_;
  std::vector<int32_t> history_;
};

// A multi-turn conversation with the model's chat template; turns reuse the
// cache of earlier ones.
class Chat {
 public:
  ~Chat();
  // Returns the answer (the thought, if any, goes to on_thought).
  std::string say(const std::string& user_text, const GenerateOptions& options = {},
                  const TextCallback& on_answer = {}, const TextCallback& on_thought = {});
  void reset();

 private:
  friend class Llm;
  explicit Chat(std::unique_ptr<Conversation> c);
  std::unique_ptr<Conversation> conversation_;
};

class Llm {
 public:
  // A .gguf file, or a safetensors model (file or folder with config.json).
  static std::unique_ptr<Llm> open(const std::string& path, const OpenOptions& options = {});
  ~Llm();

  std::vector<int32_t> tokenize(std::string_view text, bool add_bos = false) const;
  std::string detokenize(const std::vector<int32_t>& ids) const;
  int64_t vocab_size() const;
  std::string architecture() const;
  std::string device() const;  // "CPU (8 threads)", "CUDA ..."

  std::unique_ptr<Session> session();
  std::unique_ptr<Chat> chat(const std::string& system_prompt = "");

 private:
  Llm() = default;
  std::unique_ptr<Engine> engine_;
  OpenOptions options_;
};

}  // namespace kiln
