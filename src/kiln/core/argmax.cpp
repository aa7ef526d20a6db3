#include "kiln/core/argmax.h"

#include <algorithm>
#include <cmath>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace kiln {

// Greedy decoding calls this once per token over the whole vocabulary
// (151936 logits for Qwen3): std::max_element's compare-and-branch chain
// took ~0.6 ms there, as long as a GPU decode step's host work and more
// than a seventh of the step. One 16-wide pass instead keeps the maximum of
// each block of kBlock logits (NaNs skipped) and the first block holding
// the largest; then only that block is searched for the first index
// holding it: ~8 us for Qwen3's vocabulary on the development VM, where a
// second 16-wide pass over all of it for the index took ~25-30 us, ~1% of
// a GPU decode step. NaNs never win.
namespace {

constexpr int64_t kBlock = 1024;

// The largest of p[0, n), NaNs skipped; -inf if there is none.
float block_max(const float* p, int64_t n) {
  float best = -INFINITY;
  int64_t i = 0;
#if defined(__SSE2__)
  if (n >= 16) {
    __m128 m0 = _mm_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
    for (; i + 16 <= n; i += 16) {
      // max(x, m) keeps m when x is NaN.
      m0 = _mm_max_ps(_mm_loadu_ps(p + i), m0);
      m1 = _mm_max_ps(_mm_loadu_ps(p + i + 4), m1);
      m2 = _mm_max_ps(_mm_loadu_ps(p + i + 8), m2);
      m3 = _mm_max_ps(_mm_loadu_ps(p + i + 12), m3);
    }
    alignas(16) float lanes[4];
    _mm_store_ps(lanes, _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3)));
    for (float v : lanes) best = v > best ? v : best;
  }
#endif
  for (; i < n; ++i) best = p[i] > best ? p[i] : best;
  return best;
}

// The first index of p[0, n) holding v, or -1.
int64_t first_equal(const float* p, int64_t n, float v) {
  int64_t j = 0;
#if defined(__SSE2__)
  const __m128 b = _mm_set1_ps(v);
  for (; j + 16 <= n; j += 16) {
    const int m = _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(p + j), b)) |
                  _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(p + j + 4), b)) << 4 |
                  _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(p + j + 8), b)) << 8 |
                  _mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(p + j + 12), b)) << 12;
    if (m) return j + __builtin_ctz(unsigned(m));
  }
#endif
  for (; j < n; ++j)
    if (p[j] == v) return j;
  return -1;
}

}  // namespace

int32_t argmax(const float* logits, int64_t vocab) {
  if (vocab <= 0) return 0;
  float best = -INFINITY;
  int64_t best_block = -1;
  for (int64_t b = 0; b < vocab; b += kBlock) {
    const float m = block_max(logits + b, std::min(kBlock, vocab - b));
    if (m > best) best = m, best_block = b;  // strictly: the first block holding it
  }
  if (best_block < 0) {  // all NaN or -inf: the first -inf, as max_element gives
    const int64_t j = first_equal(logits, vocab, -INFINITY);
    return int32_t(j < 0 ? 0 : j);
  }
  return int32_t(best_block +
                 first_equal(logits + best_block, std::min(kBlock, vocab - best_block), best));
}

}  // namespace kiln
