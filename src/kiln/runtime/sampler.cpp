#include "kiln/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include "kiln/quant/gemm.h"

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
  } else if (p.top_p < 1.0f || p.min_p > 0.0f) {
    return sample_head(logits, vocab);
  } else {
    candidates_.clear();
    for (int64_t i = 0; i < vocab; ++i)
      if (!std::isnan(logits[i])) candidates_.push_back({logits[i], int32_t(i)});
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  if (candidates_.empty()) return argmax(logits, vocab);  // every logit NaN
  return draw(candidates_);
}

// Top-k off with a filter on: sorting the whole vocabulary (~12 ms for
// Qwen3's 151936 logits) would cost more than a GPU's decode step, while
// top-p and min-p keep the head alone. So the temperature-1 total over every
// logit is made in one vector pass, and the sorted head grows (64, 128, ...
// candidates) until the filters' cut falls within it.
int32_t Sampler::sample_head(const float* logits, int64_t vocab) {
  const int32_t top = argmax(logits, vocab);
  const float l0 = logits[top];
  if (std::isnan(l0)) return top;  // every logit NaN
  scratch_.resize(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i)
    scratch_[size_t(i)] = std::isnan(logits[i]) ? -INFINITY : logits[i];
  const double total = exp_sum_f32_simd(scratch_.data(), vocab, l0);
  const DrawSpec d = next_draw();
  for (size_t k = 64;; k *= 2) {
    top_k_candidates(logits, vocab, k, candidates_);
    const int32_t id = draw_head_candidates(candidates_.data(), candidates_.size(), total, d);
    if (id >= 0) return id;
    // Every candidate kept (a total rounded past top-p's reach): drawn from all.
    if (candidates_.size() < k || int64_t(k) >= vocab)
      return draw_candidates(candidates_.data(), candidates_.size(), d);
  }
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
