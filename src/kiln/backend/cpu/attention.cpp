// Causal attention over the KV cache. Each (query token, head) pair is one
// unit of work: scores against every visible key, a numerically safe
// softmax (max subtracted), then the weighted sum of values.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/quant/gemm.h"

namespace kiln {
namespace {

// Pointer to one position of one head in a cache plane (either layout).
template <class T>
const T* cache_row(const void* plane, const KvLayer& c, int64_t head, int64_t pos) {
  return static_cast<const T*>(plane) + kv_offset(c, head, pos);
}

float dot_f16(const uint16_t* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += f16_to_f32(a[i]) * b[i];
  return s;
}

}  // namespace

void CpuBackend::store_kv(const KvLayer& c, const float* k, const float* v, int64_t n_tokens,
                          int64_t start) {
  KILN_CHECK(start + n_tokens <= c.capacity, "context full: ", start + n_tokens,
             " positions needed, the cache holds ", c.capacity, " (raise --ctx-size)");
  const int64_t hd = c.head_dim;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t h = 0; h < c.n_kv_heads; ++h) {
      const float* ks = k + (t * c.n_kv_heads + h) * hd;
      const float* vs = v + (t * c.n_kv_heads + h) * hd;
      const int64_t off = kv_offset(c, h, start + t);
      if (c.dtype == DType::F32) {
        std::memcpy(static_cast<float*>(c.k) + off, ks, hd * sizeof(float));
        std::memcpy(static_cast<float*>(c.v) + off, vs, hd * sizeof(float));
      } else {
        auto* kd = static_cast<uint16_t*>(c.k) + off;
        auto* vd = static_cast<uint16_t*>(c.v) + off;
        for (int64_t i = 0; i < hd; ++i) {
          kd[i] = f32_to_f16(ks[i]);
          vd[i] = f32_to_f16(vs[i]);
        }
      }
    }
  }
}

void CpuBackend::attention(const float* q, const KvLayer& c, const AttentionParams& p,
                           float* out) {
  const int64_t hd = c.head_dim;
  const int64_t group = p.n_heads / c.n_kv_heads;  // query heads per key/value head
  const bool f16 = c.dtype == DType::F16;
  pool_.parallel_for(p.n_tokens * p.n_heads, [&](int64_t w0, int64_t w1, int) {
    thread_local std::vector<float> scores;
    thread_local std::vector<float> acc;
    acc.resize(size_t(hd));
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t t = w / p.n_heads, h = w % p.n_heads, kvh = h / group;
      const int64_t n_keys = p.start + t + 1;
      scores.resize(size_t(n_keys));
      const float* qv = q + (t * p.n_heads + h) * hd;
      float* o = out + (t * p.n_heads + h) * hd;
      if (!f16) {
        // The f32 cache: scores, softmax and the value sum each one call
        // per run of the head's rows that lie together (the whole context
        // when contiguous, a block when paged).
        float* sc = scores.data();
        for (int64_t j = 0; j < n_keys;) {
          const int64_t run = std::min(kv_run(c, j), n_keys - j);
          dot_rows_f32_simd(cache_row<float>(c.k, c, kvh, j), hd, run, qv, hd, p.scale, sc + j);
          j += run;
        }
        float max_score = -INFINITY;
        for (int64_t j = 0; j < n_keys; ++j) max_score = std::max(max_score, sc[j]);
        const float inv = 1.0f / exp_sum_f32_simd(sc, n_keys, max_score);
        float* a = acc.data();
        for (int64_t j = 0; j < n_keys;) {
          const int64_t run = std::min(kv_run(c, j), n_keys - j);
          if (j == 0) {
            wsum_rows_f32_simd(cache_row<float>(c.v, c, kvh, 0), hd, run, sc, hd, o);
          } else {
            wsum_rows_f32_simd(cache_row<float>(c.v, c, kvh, j), hd, run, sc + j, hd, a);
            for (int64_t i = 0; i < hd; ++i) o[i] += a[i];
          }
          j += run;
        }
        for (int64_t i = 0; i < hd; ++i) o[i] *= inv;
        continue;
      }
      float max_score = -INFINITY;
      for (int64_t j = 0; j < n_keys; ++j) {
        const float s = dot_f16(cache_row<uint16_t>(c.k, c, kvh, j), qv, hd) * p.scale;
        scores[j] = s;
        max_score = std::max(max_score, s);
      }
      float total = 0;
      for (int64_t j = 0; j < n_keys; ++j) {
        scores[j] = std::exp(scores[j] - max_score);
        total += scores[j];
      }
      // Local pointers: through the thread_local vectors the compiler
      // reloads them every element and cannot vectorise.
      float* a = acc.data();
      const float* sc = scores.data();
      std::fill(a, a + hd, 0.0f);
      for (int64_t j = 0; j < n_keys; ++j) {
        const float pj = sc[j];
        const uint16_t* vr = cache_row<uint16_t>(c.v, c, kvh, j);
        for (int64_t i = 0; i < hd; ++i) a[i] += pj * f16_to_f32(vr[i]);
      }
      const float inv = 1.0f / total;
      for (int64_t i = 0; i < hd; ++i) o[i] = a[i] * inv;
    }
  });
}

}  // namespace kiln
