#include "kiln/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace kiln {

namespace {

// The sampling order: higher logit first, the lower id on ties. An object,
// not a function, so that the sorts inline it rather than call through a
// pointer (a fifth of a tiny model's serving time went to those calls).
struct ByLogit {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  }
};
constexpr ByLogit by_logit;

}  // namespace

// The same list as sorting the vocabulary and keeping its head, without
// sorting it: a default top-k of 40 over Qwen3's 151936 logits took ~215 us
// that way on the development VM (a tenth of a 4B model's GPU decode step),
// ~21 us this way. Once k candidates are held, a logit must beat the k-th's
// to enter (an equal one comes later, so has the higher id and ranks below
// it); the scan tests 16 logits at a time against that floor, and few pass.
void top_k_candidates(const float* logits, int64_t vocab, size_t k, std::vector<Candidate>& out) {
  out.clear();
  if (k == 0) return;
  const size_t prune_at = std::max<size_t>(4 * k, 1024);
  float floor = -INFINITY;  // the k-th's logit once k are held
  auto prune = [&] {
    std::nth_element(out.begin(), out.begin() + std::ptrdiff_t(k - 1), out.end(), by_logit);
    out.resize(k);
    floor = out[k - 1].first;  // the lowest logit held
  };
  // Until k are held, every logit but NaN is one.
  int64_t i = 0;
  for (; i < vocab && out.size() < k; ++i)
    if (!std::isnan(logits[i])) out.push_back({logits[i], int32_t(i)});
  if (out.size() < k) return std::sort(out.begin(), out.end(), by_logit);
  prune();
  auto take = [&](int64_t j) {
    if (logits[j] > floor) {
      out.push_back({logits[j], int32_t(j)});
      if (out.size() >= prune_at) prune();
    }
  };
  for (; i < vocab && i % 16 != 0; ++i) take(i);
#if defined(__SSE2__)
  for (; i + 16 <= vocab; i += 16) {
    const __m128 f = _mm_set1_ps(floor);
    const int m = _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(logits + i), f)) |
                  _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(logits + i + 4), f)) << 4 |
                  _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(logits + i + 8), f)) << 8 |
                  _mm_movemask_ps(_mm_cmpgt_ps(_mm_loadu_ps(logits + i + 12), f)) << 12;
    if (m)
      for (int j = 0; j < 16; ++j) take(i + j);  // against the floor as it moves
  }
#endif
  for (; i < vocab; ++i) take(i);
  if (out.size() > k) prune();
  std::sort(out.begin(), out.end(), by_logit);
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
  if (p.top_k > 0 && p.top_k < vocab) {
    top_k_candidates(logits, vocab, size_t(p.top_k), candidates_);
  } else {
    candidates_.clear();
    for (int64_t i = 0; i < vocab; ++i)
      if (!std::isnan(logits[i])) candidates_.push_back({logits[i], int32_t(i)});
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  if (candidates_.empty()) return argmax(logits, vocab);  // every logit NaN
  size_t keep = candidates_.size();

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
