// The ops a vision transformer needs beyond the language model's: LayerNorm
// with bias, bias rows, GELU, and bidirectional attention within segments
// (one segment per image or video frame).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kiln/backend/cpu/cpu_backend.h"

namespace kiln {

void CpuBackend::layernorm(const float* x, const float* w, const float* b, int64_t rows,
                           int64_t dim, float eps, float* y) {
  pool_.parallel_for(rows, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      double sum = 0;
      for (int64_t i = 0; i < dim; ++i) sum += xr[i];
      const float mean = float(sum / double(dim));
      double var = 0;
      for (int64_t i = 0; i < dim; ++i) var += double(xr[i] - mean) * double(xr[i] - mean);
      const float inv = float(1.0 / std::sqrt(var / double(dim) + double(eps)));
      for (int64_t i = 0; i < dim; ++i) {
        const float n = (xr[i] - mean) * inv;
        yr[i] = (w ? n * w[i] : n) + (b ? b[i] : 0.0f);
      }
    }
  });
}

void CpuBackend::add_bias(float* x, const float* bias, int64_t rows, int64_t dim) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < dim; ++i) x[r * dim + i] += bias[i];
}

void CpuBackend::gelu(float* x, int64_t n, bool tanh_approx) {
  pool_.parallel_for(n, [&](int64_t i0, int64_t i1, int) {
    if (tanh_approx) {
      constexpr float k = 0.7978845608028654f;  // sqrt(2 / pi)
      for (int64_t i = i0; i < i1; ++i) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
      }
    } else {
      for (int64_t i = i0; i < i1; ++i)
        x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
    }
  });
}

void CpuBackend::attention_segments(const float* q, const float* k, const float* v,
                                    int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                                    const int32_t* bounds, int64_t n_segments, float scale,
                                    float* out) {
  (void)n_tokens;
  // One work item per (segment, head, query): independent rows of softmax(qK^T)V.
  std::vector<int32_t> seg_of(static_cast<size_t>(bounds[n_segments]));
  for (int64_t s = 0; s < n_segments; ++s)
    for (int32_t t = bounds[s]; t < bounds[s + 1]; ++t) seg_of[size_t(t)] = int32_t(s);
  const int64_t items = int64_t(seg_of.size()) * n_heads;
  const int64_t stride = n_heads * head_dim;
  pool_.parallel_for(items, [&](int64_t i0, int64_t i1, int) {
    std::vector<float> scores;
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t t = item / n_heads, h = item % n_heads;
      const int32_t s = seg_of[size_t(t)];
      const int64_t lo = bounds[s], hi = bounds[s + 1];
      scores.resize(size_t(hi - lo));
      const float* qv = q + t * stride + h * head_dim;
      float mx = -INFINITY;
      for (int64_t j = lo; j < hi; ++j) {
        const float sc = dot_f32(qv, k + j * stride + h * head_dim, head_dim) * scale;
        scores[size_t(j - lo)] = sc;
        mx = std::max(mx, sc);
      }
      double sum = 0;
      for (float& sc : scores) {
        sc = std::exp(sc - mx);
        sum += sc;
      }
      float* o = out + t * stride + h * head_dim;
      std::fill(o, o + head_dim, 0.0f);
      const float inv = float(1.0 / sum);
      for (int64_t j = lo; j < hi; ++j) {
        const float p = scores[size_t(j - lo)] * inv;
        const float* vv = v + j * stride + h * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) o[d] += p * vv[d];
      }
    }
  });
}

}  // namespace kiln
