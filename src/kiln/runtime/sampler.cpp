#include "kiln/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace kiln {

Sampler::Sampler(const SamplingParams& params) : params_(params) {}

int32_t Sampler::sample(float* logits, int64_t vocab, const std::vector<int32_t>& history) {
  const SamplingParams& p = params_;
  // Penalties over the recent window.
  if (p.repeat_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> counts;
    const size_t n = std::min(history.size(), size_t(std::max(p.repeat_last_n, 0)));
    for (size_t i = history.size() - n; i < history.size(); ++i) ++counts[history[i]];
    for (const auto& [id, count] : counts) {
      if (id < 0 || id >= vocab) continue;
      float& l = logits[id];
      if (p.repeat_penalty != 1.0f) l = l > 0 ? l / p.repeat_penalty : l * p.repeat_penalty;
      l -= p.presence_penalty + p.frequency_penalty * float(count);
    }
  }
  if (p.temperature <= 0.0f) return argmax(logits, vocab);

  // Candidates sorted by logit, highest first, cut by top-k.
  if (p.top_k > 0 && p.top_k < vocab) {
    top_k_candidates(logits, vocab, size_t(p.top_k), candidates_);
  } else {
    candidates_.clear();
    for (int64_t i = 0; i < vocab; ++i)
      if (!std::isnan(logits[i])) candidates_.push_back({logits[i], int32_t(i)});
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  if (candidates_.empty()) return argmax(logits, vocab);  // every logit NaN
  return draw(candidates_);
}

int64_t Sampler::model_top_k(int64_t vocab) const {
  const SamplingParams& p = params_;
  const bool penalties =
      p.repeat_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  if (p.temperature <= 0.0f || penalties || p.top_k <= 0 || p.top_k >= vocab ||
      p.top_k > kMaxModelTopK)
    return 0;
  return p.top_k;
}

int32_t Sampler::sample_candidates(std::vector<Candidate>& given) {
  sort_candidates(given);
  if (given.size() > size_t(params_.top_k)) given.resize(size_t(params_.top_k));
  if (given.empty()) return 0;  // every logit NaN: what argmax gives
  return draw(given);
}

DrawSpec Sampler::next_draw() {
  DrawSpec d;
  d.temperature = params_.temperature;
  d.top_p = params_.top_p;
  d.min_p = params_.min_p;
  d.top_k = params_.top_k;
  d.seed = params_.seed;
  d.index = draws_++;
  return d;
}

int32_t Sampler::draw(const std::vector<Candidate>& c) {
  return draw_candidates(c.data(), c.size(), next_draw());
}

}  // namespace kiln
