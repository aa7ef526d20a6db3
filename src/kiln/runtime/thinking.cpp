#include "kiln/runtime/thinking.h"

#include "kiln/core/error.h"

namespace kiln {

ThoughtTracker::ThoughtTracker(const ChatFormat& f, bool starts_inside)
    : start_id_(f.think_start_id), end_id_(f.think_end_id), inside_(starts_inside) {}

bool ThoughtTracker::push(int32_t id) {
  if (closed_) return false;
  if (!inside_ && id == start_id_ && start_id_ >= 0) {
    inside_ = true;
    return true;
  }
  if (inside_ && id == end_id_) {
    inside_ = false;
    closed_ = true;
    return true;
  }
  if (inside_) ++thought_tokens_;
  return inside_;
}

bool prompt_opens_thought(const std::vector<int32_t>& prompt, const ChatFormat& f) {
  if (f.think_start_id < 0) return false;
  for (auto it = prompt.rbegin(); it != prompt.rend(); ++it) {
    if (*it == f.think_end_id) return false;
    if (*it == f.think_start_id) return true;
  }
  return false;
}

ThinkingBudget::ThinkingBudget(const ChatFormat& f, const Tokenizer& tok, int64_t budget,
                               bool starts_inside)
    : tracker_(f, starts_inside), budget_(budget) {
  KILN_CHECK(f.think_start_id >= 0 && f.think_end_id >= 0,
             "--think-budget: this model has no <think> and </think> tokens");
  KILN_CHECK(budget >= 0, "--think-budget must be >= 0");
  EncodeOptions special;
  special.parse_special = true;
  if (!starts_inside) {
    open_ = tok.encode("<think>\n", special);
    opener_thought_tokens_ = int64_t(open_.size()) - 1;
  }
  close_ = tok.encode(
      "\n\nConsidering the limited time by the user, I have to give the solution based on the "
      "thinking directly now.\n</think>\n\n",
      special);
}

std::vector<int32_t> ThinkingBudget::operator()(const std::vector<int32_t>& generated) {
  for (; seen_ < generated.size(); ++seen_) tracker_.push(generated[seen_]);
  if (done_ || tracker_.closed()) return {};
  if (generated.empty() && !open_.empty()) return open_;  // think first, as the model would
  if (tracker_.inside() && tracker_.thought_tokens() - opener_thought_tokens_ >= budget_) {
    done_ = true;
    return close_;
  }
  return {};
}

}  // namespace kiln
