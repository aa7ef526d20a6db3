#include "kiln/core/argmax.h"

#include <cmath>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace kiln {

// Greedy decoding calls this once per token over the whole vocabulary
// (151936 logits for Qwen3): std::max_element's compare-and-branch chain
// took ~0.6 ms there, as long as a GPU decode step's host work and more
// than a seventh of the step. Two passes instead, both 16 wide: the maximum
// (NaNs skipped), then the first index holding it. NaNs never win.
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
  // The first index holding it, 16 at a time (a scalar compare-and-branch
  // loop took ~25 us over half of Qwen3's vocabulary, a tenth of a GPU
  // step's host time).
  int64_t j = 0;
#if defined(__SSE2__)
  const __m128 b = _mm_set1_ps(best);
  for (; j + 16 <= vocab; j += 16) {
    const int m = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(logits + j), b)) |
                  _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(logits + j + 4), b)) << 4 |
                  _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(logits + j + 8), b)) << 8 |
                  _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(logits + j + 12), b)) << 12;
    if (m) return int32_t(j + __builtin_ctz(unsigned(m)));
  }
#endif
  for (; j < vocab; ++j)
    if (logits[j] == best) return int32_t(j);
  return 0;  // all NaN (or all -inf): the first, as max_element gives
}

}  // namespace kiln
