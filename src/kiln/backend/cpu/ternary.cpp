// BitNet b1.58 on the CPU: ternary weights against int8 activations. Each
// token's activations are quantized once (absmax, as BitLinear does); rows of
// W are split over the threads. A weight only selects: every level sums the
// int8 activations it selects into int32 (ternary_kernels.h says how the SIMD
// levels keep that exact), and the scales apply once at the end, in the same
// order on every level, so all levels give the same bits.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/backend/cpu/ternary_kernels.h"
#include "kiln/core/cpu_features.h"
#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/core/thread_pool.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace ternary {

#if defined(__x86_64__)
namespace k_avx2 { extern const Kernels table; }
namespace k_avx2vnni { extern const Kernels table; }
namespace k_avx512vnni { extern const Kernels table; }
#endif

namespace {

// sum_i sign(w[i]) * q[i] with w in {-1, 0, 1}: masks and adds only.
int32_t dot_scalar(const int8_t* __restrict w, const int8_t* __restrict q, int64_t n) {
  int32_t acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int32_t v = q[i];
    const int32_t plus = -int32_t(w[i] > 0), minus = -int32_t(w[i] < 0);
    acc += (v & plus) - (v & minus);
  }
  return acc;
}

const Kernels kScalar = {"scalar", nullptr, nullptr, nullptr, dot_scalar, nullptr, nullptr};

const Kernels& pick() {
#if defined(__x86_64__)
  const CpuFeatures& f = cpu_features();
  if (f.avx512_vnni) return k_avx512vnni::table;
  if (f.avx_vnni) return k_avx2vnni::table;
  if (f.avx2) return k_avx2::table;
#endif
  return kScalar;
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

// Bytes of a 256-value block, its f16 d last: TQ2_0 64 bytes of codes,
// TQ1_0 52.
constexpr int64_t tq_block_bytes(DType t) { return t == DType::TQ1_0 ? 54 : 66; }

}  // namespace

const Kernels& kernels() {
  static const Kernels& k = pick();
  return k;
}

const Kernels& scalar_kernels() { return kScalar; }

int available_levels(const Kernels** out, int max) {
  int n = 0;
  auto add = [&](const Kernels& k) {
    if (n < max) out[n++] = &k;
  };
  add(kScalar);
#if defined(__x86_64__)
  const CpuFeatures& f = cpu_features();
  if (f.avx2) add(k_avx2::table);
  if (f.avx_vnni) add(k_avx2vnni::table);
  if (f.avx512_vnni) add(k_avx512vnni::table);
#endif
  return n;
}

void matmul(ThreadPool& pool, const Kernels& k, DType dtype, const void* data, int64_t N,
            int64_t K, const float* x, int64_t n_tokens, float* y) {
  const int64_t T = n_tokens, ns = (K + 127) / 128;
  thread_local std::vector<int8_t> q, qa;
  thread_local std::vector<float> act_scale;
  thread_local std::vector<int32_t> sums;
  q.resize(size_t(T * K));
  act_scale.resize(size_t(T));
  sums.resize(size_t(T * (ns + 1)));
  const bool arranged = k.arrange != nullptr;
  if (arranged) qa.resize(size_t(T * K));
  int8_t* qd = q.data();
  int8_t* qad = arranged ? qa.data() : qd;
  float* ad = act_scale.data();
  int32_t* sd = sums.data();
  pool.parallel_for(T, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t) {
      int8_t* qt = qd + t * K;
      if (k.quantize) {
        ad[t] = k.quantize(x + t * K, K, qt, sd + t * ns, sd + T * ns + t);
      } else {
        ad[t] = quantize_activations(x + t * K, K, qt);
        int32_t all = 0;
        for (int64_t b = 0; b < ns; ++b) {
          int32_t s = 0;
          for (int64_t i = b * 128; i < std::min(K, b * 128 + 128); ++i) s += qt[i];
          sd[t * ns + b] = s;
          all += s;
        }
        sd[T * ns + t] = all;
      }
      if (arranged) k.arrange(qt, K, qad + t * K);
    }
  });
  Acts acts;
  acts.n_tokens = T;
  acts.K = K;
  acts.q = qd;
  acts.qa = qad;
  acts.sum128 = sd;
  acts.sum_all = sd + T * ns;

  const auto* base = static_cast<const uint8_t*>(data);
  RowsFn rows_fn = nullptr;
  if (dtype == DType::I2_S && K % 128 == 0) rows_fn = k.i2s;
  if (dtype == DType::TQ2_0) rows_fn = k.tq2;
  if (dtype == DType::TQ1_0) rows_fn = k.tq1;
  const float i2s_scale_all = dtype == DType::I2_S ? i2s_scale(data, N * K) : 0.0f;

  constexpr int64_t kRowsPerStep = 4;   // the unit of the thread split
  constexpr int64_t kRowsPerBatch = 16;  // rows whose integer dots are held at once
  const int64_t groups = (N + kRowsPerStep - 1) / kRowsPerStep;
  pool.parallel_for(groups, [&](int64_t g0, int64_t g1, int) {
    const int64_t row_begin = g0 * kRowsPerStep, row_end = std::min(N, g1 * kRowsPerStep);
    const int64_t max_blocks = K / 256 + 1;
    std::vector<float> scales(size_t(kRowsPerBatch * max_blocks));
    std::vector<int32_t> dots(size_t(kRowsPerBatch * T * max_blocks));
    std::vector<int8_t> codes(rows_fn ? 0 : size_t(K));
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kRowsPerBatch) {
      const int64_t r1 = std::min(row_end, r0 + kRowsPerBatch);
      int64_t nb = 1;  // scale blocks a row
      if (rows_fn) {
        rows_fn(base, r0, r1, acts, dots.data());
        if (dtype == DType::I2_S) {
          for (int64_t r = r0; r < r1; ++r) scales[(r - r0) * max_blocks] = i2s_scale_all;
        } else {
          nb = K / 256;
          const int64_t bb = tq_block_bytes(dtype);
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t b = 0; b < nb; ++b) {
              uint16_t d;
              std::memcpy(&d, base + (r * nb + b) * bb + bb - 2, sizeof(d));
              scales[(r - r0) * max_blocks + b] = f16_to_f32(d);
            }
        }
      } else {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t block = decode_ternary_row(dtype, data, r, K, N, codes.data(),
                                                   scales.data() + (r - r0) * max_blocks);
          nb = K / block;
          for (int64_t t = 0; t < T; ++t)
            for (int64_t b = 0; b < nb; ++b)
              dots[((r - r0) * T + t) * nb + b] =
                  k.dot(codes.data() + b * block, qd + t * K + b * block, block);
        }
      }
      for (int64_t r = r0; r < r1; ++r) {
        const float* s = scales.data() + (r - r0) * max_blocks;
        for (int64_t t = 0; t < T; ++t) {
          const int32_t* d = dots.data() + ((r - r0) * T + t) * nb;
          float sum = 0.0f;
          for (int64_t b = 0; b < nb; ++b) sum += s[b] * float(d[b]);
          y[t * N + r] = sum / ad[t];
        }
      }
    }
  });
}

}  // namespace ternary

void CpuBackend::ternary_matmul(const Weight& w, const float* x, int64_t n_tokens, float* y) {
  const DType dtype = w.view.dtype;
  KILN_CHECK(is_ternary_type(dtype), "ternary_matmul: tensor ", w.view.name, " is ",
             dtype_name(dtype), ", not a ternary format");
  const int64_t N = w.rows(), K = w.cols();
  if (dtype != DType::I2_S)
    KILN_CHECK(K % 256 == 0, "ternary_matmul: ", w.view.name, " rows of ", K,
               " are not whole 256-value blocks");
  ternary::matmul(pool_, ternary::kernels(), dtype, w.data, N, K, x, n_tokens, y);
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
