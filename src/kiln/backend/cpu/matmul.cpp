// Matrix products on weights in their block format. Rows of W are split over
// the threads; each thread dequantizes a few rows at a time into a small
// scratch buffer and reuses them for every token of the batch, so prefill
// pays the dequantization once per row, not once per token.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/quant/dequantize.h"

namespace kiln {

float dot_f32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i + 16 <= n; i += 16)
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  if (i < n) {
    const __mmask16 m = __mmask16((1u << (n - i)) - 1);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
    i = n;
  }
  sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  lo = _mm_hadd_ps(lo, lo);
  lo = _mm_hadd_ps(lo, lo);
  sum = _mm_cvtss_f32(lo);
#endif
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void CpuBackend::matmul(const Weight& w, const float* x, int64_t n_tokens, float* y) {
  const int64_t N = w.rows(), K = w.cols();
  const DType dtype = w.view.dtype;
  const size_t row_bytes = w.view.row_bytes();
  const auto* base = static_cast<const uint8_t*>(w.data);
  constexpr int64_t kRowsPerStep = 8;

  // Split into row groups with enough groups per thread to balance.
  const int64_t groups = (N + kRowsPerStep - 1) / kRowsPerStep;
  pool_.parallel_for(groups, [&](int64_t g0, int64_t g1, int) {
    thread_local std::vector<float> scratch;
    if (dtype != DType::F32) scratch.resize(size_t(kRowsPerStep * K));
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t r0 = g * kRowsPerStep, r1 = std::min(N, r0 + kRowsPerStep);
      const float* rows[kRowsPerStep];
      for (int64_t r = r0; r < r1; ++r) {
        if (dtype == DType::F32) {
          rows[r - r0] = reinterpret_cast<const float*>(base + r * row_bytes);
        } else {
          float* dst = scratch.data() + (r - r0) * K;
          dequantize_row(dtype, base + r * row_bytes, dst, K);
          rows[r - r0] = dst;
        }
      }
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * K;
        float* yt = y + t * N;
        for (int64_t r = r0; r < r1; ++r) yt[r] = dot_f32(rows[r - r0], xt, K);
      }
    }
  });
}

void CpuBackend::embed(const Weight& table, const int32_t* ids, int64_t n, float* out) {
  const int64_t dim = table.cols();
  const auto* base = static_cast<const uint8_t*>(table.data);
  const size_t row_bytes = table.view.row_bytes();
  for (int64_t i = 0; i < n; ++i)
    dequantize_row(table.view.dtype, base + int64_t(ids[i]) * row_bytes, out + i * dim, dim);
}

}  // namespace kiln
