// The 32-element formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0. The quantizers
// reproduce GGML's reference ones operation for operation (same divisions,
// same truncations), because their output must be byte-identical to what
// llama-quantize writes: a GGUF we produce is then indistinguishable.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kiln/core/half.h"
#include "kiln/quant/blocks.h"
#include "kiln/quant/quant_math.h"
#include "kiln/quant/simd.h"

namespace kiln::quant {
namespace {

void min_max(const float* x, int n, float* lo, float* hi) {
  float mn = 3.402823466e+38f, mx = -3.402823466e+38f;
  for (int j = 0; j < n; ++j) {
    if (x[j] < mn) mn = x[j];
    if (x[j] > mx) mx = x[j];
  }
  *lo = mn;
  *hi = mx;
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

// The vector paths below compute the same single multiply per value as the
// scalar ones, so they give identical results.
void dequant_q4_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
#if defined(__AVX512F__)
    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs)));
    const __m512i eight = _mm512_set1_epi32(8), mask = _mm512_set1_epi32(0xF);
    const __m512 vd = _mm512_set1_ps(d);
    const __m512i lo = _mm512_sub_epi32(_mm512_and_si512(q, mask), eight);
    const __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight);
    _mm512_storeu_ps(y, _mm512_mul_ps(_mm512_cvtepi32_ps(lo), vd));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(hi), vd));
    continue;
#endif
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = float((b[i].qs[j] & 0xF) - 8) * d;
      y[j + kQK / 2] = float((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequant_q4_1(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = float(b[i].qs[j] & 0xF) * d + m;
      y[j + kQK / 2] = float(b[i].qs[j] >> 4) * d + m;
    }
  }
}

void dequant_q5_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = (b[i].qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (b[i].qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      y[j] = float(lo - 16) * d;
      y[j + kQK / 2] = float(hi - 16) * d;
    }
  }
}

void dequant_q5_1(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_1*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
    const uint32_t qh = load_u32(b[i].qh);
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = (b[i].qs[j] & 0xF) | int(((qh >> j) & 1) << 4);
      const int hi = (b[i].qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
      y[j] = float(lo) * d + m;
      y[j + kQK / 2] = float(hi) * d + m;
    }
  }
}

void dequant_q8_0(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(src);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(b[i].d);
#if defined(__AVX512F__)
    const __m512 vd = _mm512_set1_ps(d);
    for (int h = 0; h < 2; ++h) {
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs + 16 * h));
      _mm512_storeu_ps(y + 16 * h, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), vd));
    }
    continue;
#endif
    for (int j = 0; j < kQK; ++j) y[j] = float(b[i].qs[j]) * d;
  }
}

// Symmetric 4 bits: the largest-magnitude element maps to -8 exactly.
void quant_q4_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      // Truncation after +8.5 (not rounding) is what the reference does.
      const int lo = std::min(15, int(x[j] * id + 8.5f));
      const int hi = std::min(15, int(x[j + kQK / 2] * id + 8.5f));
      b[i].qs[j] = uint8_t(lo | (hi << 4));
    }
  }
}

void quant_q4_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float lo_v, hi_v;
    min_max(x, kQK, &lo_v, &hi_v);
    const float d = (hi_v - lo_v) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(lo_v);
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(15, int((x[j] - lo_v) * id + 0.5f));
      const int hi = std::min(15, int((x[j + kQK / 2] - lo_v) * id + 0.5f));
      b[i].qs[j] = uint8_t(lo | (hi << 4));
    }
  }
}

void quant_q5_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -16.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const int lo = std::min(31, int(x[j] * id + 16.5f));
      const int hi = std::min(31, int(x[j + kQK / 2] * id + 16.5f));
      b[i].qs[j] = uint8_t((lo & 0xF) | ((hi & 0xF) << 4));
      qh |= uint32_t(lo >> 4) << j;
      qh |= uint32_t(hi >> 4) << (j + kQK / 2);
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

void quant_q5_1(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_1*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float lo_v, hi_v;
    min_max(x, kQK, &lo_v, &hi_v);
    const float d = (hi_v - lo_v) / 31.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(lo_v);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      // The reference does not clamp here: (max - min) * id cannot exceed 31.5.
      const int lo = uint8_t((x[j] - lo_v) * id + 0.5f);
      const int hi = uint8_t((x[j + kQK / 2] - lo_v) * id + 0.5f);
      b[i].qs[j] = uint8_t((lo & 0xF) | ((hi & 0xF) << 4));
      qh |= uint32_t((lo & 0x10) >> 4) << j;
      qh |= uint32_t((hi & 0x10) >> 4) << (j + kQK / 2);
    }
    std::memcpy(b[i].qh, &qh, 4);
  }
}

void quant_q8_0(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_0*>(dst);
  for (int64_t i = 0; i < n / kQK; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) b[i].qs[j] = int8_t(std::round(x[j] * id));
  }
}

}  // namespace kiln::quant
