#include "kiln/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

namespace kiln {

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

double Sampler::uniform() { return double(rng_() >> 11) * 0x1.0p-53; }

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
  candidates_.resize(size_t(vocab));
  for (int64_t i = 0; i < vocab; ++i) candidates_[i] = {logits[i], int32_t(i)};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = candidates_.size();
  if (p.top_k > 0 && size_t(p.top_k) < keep) {
    keep = size_t(p.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  candidates_.resize(keep);

  // Probabilities at temperature 1 for the filters (as top-p and min-p are defined).
  std::vector<double> probs(keep);
  const double max_logit = candidates_[0].first;
  double total = 0;
  for (size_t i = 0; i < keep; ++i) total += probs[i] = std::exp(double(candidates_[i].first) - max_logit);
  for (double& q : probs) q /= total;

  if (p.top_p < 1.0f) {
    double cumulative = 0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += probs[i];
      if (cumulative >= p.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
  }
  if (p.min_p > 0.0f) {
    const double floor = probs[0] * p.min_p;
    size_t cut = 1;
    while (cut < keep && probs[cut] >= floor) ++cut;
    keep = cut;
  }

  // Temperature, then a draw.
  std::vector<double> weights(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i)
    sum += weights[i] = std::exp((double(candidates_[i].first) - max_logit) / p.temperature);
  double r = uniform() * sum;
  for (size_t i = 0; i < keep; ++i) {
    r -= weights[i];
    if (r < 0) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

}  // namespace kiln
