// BitNet b1.58 on the CPU: ternary weights against int8 activations. Each
// token's activations are quantized once (absmax, as BitLinear does); rows of
// W are split over the threads, each decoded once to {-1, 0, 1} and reused
// for every token. A weight only selects: the inner loop adds or subtracts
// the int8 activation into an int32 sum, and the scales apply once at the end.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/core/error.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace {

// sum_i sign(w[i]) * q[i] with w in {-1, 0, 1}: masks and adds only, in a
// form the compiler vectorizes.
int32_t ternary_dot(const int8_t* __restrict w, const int8_t* __restrict q, int64_t n) {
  int32_t acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t v = q[i];
    const int32_t plus = -int32_t(w[i] > 0), minus = -int32_t(w[i] < 0);
    acc += (v & plus) - (v & minus);
  }
  return acc;
}

// BitLinear's activation quantization of one token: returns the scale a
// (q = round(x * a)); torch.round rounds half to even, as nearbyint does.
float quantize_activations(const float* x, int64_t n, int8_t* q) {
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float a = 127.0f / std::max(amax, 1e-5f);
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::nearbyint(x[i] * a);
    q[i] = int8_t(std::clamp(v, -128.0f, 127.0f));
  }
  return a;
}

}  // namespace

void CpuBackend::ternary_matmul(const Weight& w, const float* x, int64_t n_tokens, float* y) {
  const DType dtype = w.view.dtype;
  KILN_CHECK(is_ternary_type(dtype), "ternary_matmul: tensor ", w.view.name, " is ",
             dtype_name(dtype), ", not a ternary format");
  const int64_t N = w.rows(), K = w.cols();
  if (dtype != DType::I2_S)
    KILN_CHECK(K % 256 == 0, "ternary_matmul: ", w.view.name, " rows of ", K,
               " are not whole 256-value blocks");

  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> act_scale;
  q.resize(size_t(n_tokens * K));
  act_scale.resize(size_t(n_tokens));
  int8_t* qd = q.data();
  float* ad = act_scale.data();
  pool_.parallel_for(n_tokens, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t) ad[t] = quantize_activations(x + t * K, K, qd + t * K);
  });

  constexpr int64_t kRowsPerStep = 4;
  const int64_t groups = (N + kRowsPerStep - 1) / kRowsPerStep;
  pool_.parallel_for(groups, [&](int64_t g0, int64_t g1, int) {
    std::vector<int8_t> codes(size_t(kRowsPerStep * K));
    std::vector<float> scales(size_t(kRowsPerStep * (K / 256 + 1)));
    const int64_t max_blocks = K / 256 + 1;
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t r0 = g * kRowsPerStep, r1 = std::min(N, r0 + kRowsPerStep);
      int64_t block = K;
      for (int64_t r = r0; r < r1; ++r)
        block = decode_ternary_row(dtype, w.data, r, K, N, codes.data() + (r - r0) * K,
                                   scales.data() + (r - r0) * max_blocks);
      const int64_t nb = K / block;
      for (int64_t t = 0; t < n_tokens; ++t) {
        const int8_t* qt = qd + t * K;
        for (int64_t r = r0; r < r1; ++r) {
          const int8_t* c = codes.data() + (r - r0) * K;
          const float* s = scales.data() + (r - r0) * max_blocks;
          float sum = 0.0f;
          for (int64_t b = 0; b < nb; ++b)
            sum += s[b] * float(ternary_dot(c + b * block, qt + b * block, block));
          y[t * N + r] = sum / ad[t];
        }
      }
    }
  });
}

void CpuBackend::relu2_mul(const float* gate, const float* up, int64_t n, float* out) {
  pool_.parallel_for(n, [&](int64_t i0, int64_t i1, int) {
    for (int64_t i = i0; i < i1; ++i) {
      const float r = std::max(gate[i], 0.0f);
      out[i] = r * r * up[i];
    }
  });
}

}  // namespace kiln
