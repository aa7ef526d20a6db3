// Helpers shared by the quant tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

#include "kiln/quant/gemm.h"

namespace kiln::test {

// n bytes (rounded up to 64) at a 64-byte boundary, as the kernels' scratch
// and quantized activations want them.
struct Aligned {
  explicit Aligned(size_t n) : p(static_cast<uint8_t*>(std::aligned_alloc(64, (n + 63) / 64 * 64))) {}
  ~Aligned() { std::free(p); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  uint8_t* p;
};

inline std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// The exact dot of a dequantized row w[K] with token tk of the quantized
// activations q (their int8 values times their block scales), in double,
// and sum |w x| beside it: the int8 products' reference.
struct RefDot {
  double dot = 0, mag = 0;
};
inline RefDot quantized_ref_dot(const float* w, const QuantizedRows& q, int64_t tk) {
  RefDot r;
  const int64_t K = q.K;
  for (int64_t k = 0; k < K; ++k) {
    const double xv = double(q.q[tk * K + k]) * double(q.d32[tk * (K / 32) + k / 32]);
    r.dot += double(w[k]) * xv;
    r.mag += std::fabs(double(w[k]) * xv);
  }
  return r;
}

inline double rmse(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(a[i] - b[i]) * double(a[i] - b[i]);
  return std::sqrt(s / double(n));
}

inline double rms(const float* a, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(a[i]) * a[i];
  return std::sqrt(s / double(n));
}

}  // namespace kiln::test
