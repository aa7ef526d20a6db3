#include "kiln/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace kiln {

// Greedy decoding calls this once per token over the whole vocabulary
// (151936 logits for Qwen3): std::max_element's compare-and-branch chain
// took ~0.6 ms there, as long as a GPU decode step's host work and more
// than a seventh of the step. Two passes instead: the maximum by 16-wide
// vector max (NaNs skipped), then the first index
// holding it. NaNs never win.
int32_t argmax(const float* logits, int64_t vocab) {
  if (vocab <= 0) return 0;
  float best = -INFINITY;
  int64_t i = 0;
#if defined(__SSE2__)
  __m128 m0 = _mm_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
  for (; i + 16 <= vocab; i += 16) {
    // max(x, m) keeps m when x is NaN.
    m0 = _mm_max_ps(_mm_loadu_ps(logits + i), m0);
    m1 = _mm_max_ps(_mm_loadu_ps(logits + i + 4), m1);
    m2 = _mm_max_ps(_mm_loadu_ps(logits + i + 8), m2);
    m3 = _mm_max_ps(_mm_loadu_ps(logits + i + 12), m3);
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3)));
  for (float v : lanes) best = v > best ? v : best;
#endif
  for (; i < vocab; ++i) best = logits[i] > best ? logits[i] : best;
  for (int64_t j = 0; j < vocab; ++j)
    if (logits[j] == best) return int32_t(j);
  return 0;  // all NaN (or all -inf): the first, as max_element gives
}

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
