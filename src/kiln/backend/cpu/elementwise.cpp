// Norms, rotary embeddings, activations and the mixture-of-experts plumbing.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/core/moe_route.h"
#include "kiln/quant/gemm.h"

namespace kiln {

void CpuBackend::rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps,
                         float* y) {
  auto body = [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      // In double (see sum_squares_f64_simd): an f32 sum of a few thousand
      // squares is off by ~1e-6, and the hybrids' DeltaNet layers amplify
      // that to ~2e-5 in the logits (see Backend::matmul_sum_f64).
      const float mean_sq = sum_squares_f64_simd(xr, dim) / float(dim);
      const float inv = 1.0f / std::sqrt(mean_sq + eps);
      if (w)
        for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * w[i];
      else
        for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv;
    }
  };
  if (rows * dim < 16384)
    body(0, rows, 0);
  else
    pool_.parallel_for(rows, body);
}

bool CpuBackend::RopeAngles::covers(int64_t last, const float* inv_freq, int64_t half) const {
  return half == int64_t(freq.size()) && std::equal(freq.begin(), freq.end(), inv_freq) &&
         last < int64_t(cos_sin.size()) / (2 * half);
}

void CpuBackend::RopeAngles::fill(int64_t last, const float* inv_freq, int64_t half) {
  if (half != int64_t(freq.size()) || !std::equal(freq.begin(), freq.end(), inv_freq)) {
    freq.assign(inv_freq, inv_freq + half);  // another model, or other dimensions
    cos_sin.clear();
  }
  const int64_t filled = int64_t(cos_sin.size()) / (2 * half);
  if (last < filled) return;
  cos_sin.resize(size_t((last + 1) * 2 * half));
  for (int64_t p = filled; p <= last; ++p)
    for (int64_t i = 0; i < half; ++i) {
      // The angle is rounded to f32 before cos/sin, as the reference does.
      const float angle = float(p) * inv_freq[i];
      cos_sin[size_t((2 * p) * half + i)] = float(std::cos(double(angle)));
      cos_sin[size_t((2 * p + 1) * half + i)] = float(std::sin(double(angle)));
    }
}

void CpuBackend::rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                      int64_t rot_dims, const int32_t* positions, const float* inv_freq,
                      RopeStyle style) {
  const int64_t half = rot_dims / 2;
  if (half <= 0) return;
  // The positions' angles come from the table (positions past its end are
  // computed in place). It is filled as calls come, under the exclusive
  // lock, and read under the shared one: a step's parts rotate from two
  // threads at once, and once the table holds their positions they do not
  // wait on each other.
  int64_t last = -1;
  for (int64_t t = 0; t < n_tokens; ++t)
    if (positions[t] < RopeAngles::kMaxPositions) last = std::max<int64_t>(last, positions[t]);
  std::shared_lock read(lazy_);
  while (last >= 0 && !rope_angles_.covers(last, inv_freq, half)) {
    read.unlock();
    {
      std::unique_lock write(lazy_);
      rope_angles_.fill(last, inv_freq, half);
    }
    read.lock();  // and check again: another model's call may have refilled it
  }
  const float* table = rope_angles_.cos_sin.data();
  auto body = [&](int64_t t0, int64_t t1, int) {
    thread_local std::vector<float> own;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t pos = positions[t];
      const float* cs = table + 2 * pos * half;
      if (pos < 0 || pos > last) {
        own.resize(size_t(2 * half));
        for (int64_t i = 0; i < half; ++i) {
          const float angle = float(positions[t]) * inv_freq[i];
          own[size_t(i)] = float(std::cos(double(angle)));
          own[size_t(half + i)] = float(std::sin(double(angle)));
        }
        cs = own.data();
      }
      const float* cos_t = cs;
      const float* sin_t = cs + half;
      for (int64_t h = 0; h < n_heads; ++h) {
        float* v = x + (t * n_heads + h) * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const int64_t a = style == RopeStyle::Halves ? i : 2 * i;
          const int64_t b = style == RopeStyle::Halves ? i + half : 2 * i + 1;
          const float x0 = v[a], x1 = v[b];
          v[a] = x0 * cos_t[i] - x1 * sin_t[i];
          v[b] = x1 * cos_t[i] + x0 * sin_t[i];
        }
      }
    }
  };
  if (n_tokens * n_heads * rot_dims < (int64_t(1) << 15))
    body(0, n_tokens, 0);
  else
    pool_.parallel_for(n_tokens, body);
}

namespace {
// Element-wise loops over n values: split over the pool in blocks of 4096
// once a prefill makes them long (a scalar exp per element is ~2-3% of a
// prefill, and single-threaded it caps the speed-up from a second core).
template <class Fn>
void elementwise(ThreadPool& pool, int64_t n, Fn&& fn) {
  constexpr int64_t kBlock = 4096;
  if (n < 4 * kBlock) return fn(int64_t(0), n);
  pool.parallel_for((n + kBlock - 1) / kBlock, [&](int64_t b0, int64_t b1, int) {
    fn(b0 * kBlock, std::min(n, b1 * kBlock));
  });
}
}  // namespace

void CpuBackend::silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  elementwise(pool_, n, [&](int64_t i0, int64_t i1) {
    silu_mul_f32_simd(gate + i0, up + i0, i1 - i0, out + i0);
  });
}

void CpuBackend::add(float* x, const float* y, int64_t n) {
  elementwise(pool_, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] += y[i];
  });
}

void CpuBackend::moe_route(const float* logits, int64_t n_tokens, int64_t n_experts, int64_t k,
                           bool renormalise, int32_t* ids, float* weights) {
  route_experts(logits, n_tokens, n_experts, k, renormalise, ids, weights);
}

void CpuBackend::gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t dim,
                             float* out) {
  for (int64_t i = 0; i < n; ++i) std::copy_n(x + int64_t(rows[i]) * dim, dim, out + i * dim);
}

void CpuBackend::scatter_add_rows(float* y, const float* x, const int32_t* rows,
                                  const float* scales, int64_t n, int64_t dim) {
  for (int64_t i = 0; i < n; ++i) {
    float* yr = y + int64_t(rows[i]) * dim;
    const float* xr = x + i * dim;
    for (int64_t d = 0; d < dim; ++d) yr[d] += scales[i] * xr[d];
  }
}

}  // namespace kiln
