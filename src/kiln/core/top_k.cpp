#include "kiln/core/top_k.h"

#include <algorithm>
#include <cmath>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace kiln {

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

void sort_candidates(std::vector<Candidate>& c) {
  c.erase(std::remove_if(c.begin(), c.end(), [](const Candidate& x) { return std::isnan(x.first); }),
          c.end());
  std::sort(c.begin(), c.end(), by_logit);
}

void write_candidates(const std::vector<Candidate>& in_order, size_t k, Candidate* out) {
  const size_t n = std::min(k, in_order.size());
  std::copy_n(in_order.begin(), n, out);
  std::fill(out + n, out + k, Candidate{NAN, -1});
}

}  // namespace kiln
