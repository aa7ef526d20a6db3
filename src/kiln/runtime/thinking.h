// Thinking mode: splitting a reasoning model's output into its thought
// (between <think> and </think>) and its answer, and bounding the thought.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kiln/runtime/chat_format.h"

namespace kiln {

// Follows generated tokens and says, for each, whether it is part of the
// thought. The markers themselves count as thought.
class ThoughtTracker {
 public:
  ThoughtTracker(const ChatFormat& format, bool starts_inside_thought);
  // Call once per generated token, in order; true if it belongs to the thought.
  bool push(int32_t id);
  bool inside() const { return inside_; }
  bool closed() const { return closed_; }
  int64_t thought_tokens() const { return thought_tokens_; }

 private:
  int32_t start_id_, end_id_;
  bool inside_;
  bool closed_ = false;
  int64_t thought_tokens_ = 0;
};

// True when the prompt leaves the model inside an open <think> block (some
// templates open it for the model).
bool prompt_opens_thought(const std::vector<int32_t>& prompt, const ChatFormat& format);

// A GenerateRequest::force hook that bounds the thought to `budget` tokens:
// it opens the thought if the model has not, and once the budget is spent
// it injects a short closing sentence and </think> (the method Qwen
// recommends), after which the model writes its answer.
struct ThinkingBudget {
  ThinkingBudget(const ChatFormat& format, const Tokenizer& tokenizer, int64_t budget,
                 bool starts_inside_thought);
  std::vector<int32_t> operator()(const std::vector<int32_t>& generated);

 private:
  ThoughtTracker tracker_;
  std::vector<int32_t> open_, close_;
  int64_t budget_;
  int64_t opener_thought_tokens_ = 0;  // tokens of open_ after <think>: not the model's
  size_t seen_ = 0;
  bool done_ = false;
};

}  // namespace kiln
