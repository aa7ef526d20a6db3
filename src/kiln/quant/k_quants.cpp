// K-quants: 256-element super-blocks of 16 or 32-element sub-blocks whose
// scales (and mins) are themselves quantized against one f16 super-scale.
// Dequantization evaluates each value with the same float operations, in the
// same order, as GGML, so results are bit-identical. The quantizers follow
// GGML's reference search (least-squares refinement of each sub-block's
// scale over a grid of candidate inverse scales), which is what
// llama-quantize uses when no importance matrix is given.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kiln/core/cpu_features.h"
#include "kiln/core/half.h"
#include "kiln/quant/blocks.h"
#include "kiln/quant/k_search.h"
#include "kiln/quant/k_scales.h"
#include "kiln/quant/quant_math.h"
#include "kiln/quant/simd.h"

namespace kiln::quant {
namespace {

// Round half to even, as the reference's float trick does.
inline int nearest(float v) { return int(std::nearbyint(v)); }

inline void pack_scale_min_k4(int j, int ls, int lm, uint8_t* q) {
  if (j < 4) {
    q[j] = uint8_t(ls);
    q[j + 4] = uint8_t(lm);
  } else {
    q[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
    q[j - 4] |= uint8_t((ls >> 4) << 6);
    q[j] |= uint8_t((lm >> 4) << 6);
  }
}

// Sixteen six-bit Q3_K scales, biased by 32, unpacked to signed ints.
inline void unpack_q3_scales(const uint8_t* s, int* out) {
  for (int j = 0; j < 16; ++j) {
    const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    out[j] = (lo | (hi << 4)) - 32;
  }
}

// Symmetric fit for Q3_K: start from the max-anchored grid, then move single
// elements to a better level while that raises the x^2-weighted fit.
float fit_symmetric_greedy(int n, int nmax, const float* x, int8_t* L) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kGroupMaxEps) {
    std::fill(L, L + n, int8_t(0));
    return 0.0f;
  }
  const float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::clamp(nearest(iscale * x[i]), -nmax, nmax - 1);
    L[i] = int8_t(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx <= 0) continue;
      float sl2 = suml2 - w * L[i] * L[i];
      const int nl = std::clamp(nearest(x[i] * sl2 / slx), -nmax, nmax - 1);
      if (nl == L[i]) continue;
      slx += w * x[i] * nl;
      sl2 += w * nl * nl;
      if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = int8_t(nl);
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = int8_t(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Packs 256 two-bit values: byte l of each 32-byte group holds elements
// l, l+32, l+64, l+96 of its 128-element half, lowest bits first.
void pack_2bit(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                              (L[j + l + 96] << 6));
}

}  // namespace

float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min,
                    float rmin, float rdelta, int nstep, bool abs_error) {
  float lo = x[0], hi = x[0];
  float sum_w = w[0], sum_x = w[0] * x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (lo > 0) lo = 0;
  if (hi == lo) {
    std::fill(L, L + n, uint8_t(0));
    *neg_min = -lo;
    return 0.0f;
  }
  auto err_of = [&](float d) { return abs_error ? std::fabs(d) : d * d; };
  float iscale = nmax / (hi - lo);
  float scale = 1 / iscale;
  float best = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = uint8_t(std::clamp(nearest(iscale * (x[i] - lo)), 0, nmax));
    best += w[i] * err_of(scale * L[i] + lo - x[i]);
  }
  uint8_t trial[32];
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (hi - lo);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(iscale * (x[i] - lo)), 0, nmax);
      trial[i] = uint8_t(l);
      sum_l += w[i] * l;
      sum_l2 += w[i] * l * l;
      sum_xl += w[i] * l * x[i];
    }
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (det <= 0) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float err = 0;
    for (int i = 0; i < n; ++i) err += w[i] * err_of(this_scale * trial[i] + this_min - x[i]);
    if (err < best) {
      std::copy(trial, trial + n, L);
      best = err;
      scale = this_scale;
      lo = this_min;
    }
  }
  *neg_min = -lo;
  return scale;
}

void fit_scale_min_x8(int n, int nmax, const float* x, const float* w, uint8_t* L, float* scale,
                      float* neg_min, float rmin, float rdelta, int nstep, bool abs_error) {
#if defined(__x86_64__) || defined(_M_X64)
  if (cpu_features().avx2)
    return fit_scale_min_x8_avx2(n, nmax, x, w, L, scale, neg_min, rmin, rdelta, nstep, abs_error);
#endif
  for (int j = 0; j < 8; ++j)
    scale[j] = fit_scale_min(n, nmax, x + j * n, w + j * n, L + j * n, &neg_min[j], rmin, rdelta,
                             nstep, abs_error);
}

float fit_symmetric(int n, int nmax, const float* x, int8_t* L) {
  const float max = signed_absmax(x, n);
  if (std::fabs(max) < kGroupMaxEps) {
    std::fill(L, L + n, int8_t(0));
    return 0.0f;
  }
  auto quant = [&](float iscale, int i) { return std::clamp(nearest(iscale * x[i]), -nmax, nmax - 1); };
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = quant(iscale, i);
    L[i] = int8_t(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 != 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = quant(iscale, i);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = int8_t(quant(iscale, i) + nmax);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

void fit_symmetric_x8(int n, int nmax, const float* x, int8_t* L, float* scale) {
#if defined(__x86_64__) || defined(_M_X64)
  if (cpu_features().avx2) return fit_symmetric_x8_avx2(n, nmax, x, L, scale);
#endif
  for (int j = 0; j < 8; ++j) scale[j] = fit_symmetric(n, nmax, x + j * n, L + j * n);
}

// ---------------------------------------------------------------- dequantize

void dequant_q2_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    int is = 0;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {
          const uint8_t sc = b[i].scales[is++];
          const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * float((q[l + 16 * part] >> shift) & 3) - ml;
        }
      }
    }
  }
}

void dequant_q3_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ3_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    int scales[16];
    unpack_q3_scales(b[i].scales, scales);
    const uint8_t* q = b[i].qs;
    const uint8_t* hm = b[i].hmask;
    int is = 0;
    uint8_t m = 1;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m <<= 1) {
        for (int part = 0; part < 2; ++part) {
          const float dl = d * float(scales[is++]);
          for (int l = 16 * part; l < 16 * part + 16; ++l) {
            const int v = ((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
            *y++ = dl * float(v);
          }
        }
      }
    }
  }
}

void dequant_q4_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    const uint8_t* q = b[i].qs;
    for (int is = 0; is < 8; is += 2, q += 32) {
      int sc, m;
      k4_scale_min(is, b[i].scales, &sc, &m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      k4_scale_min(is + 1, b[i].scales, &sc, &m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
#if defined(__AVX512F__)
      // Multiply, then subtract (never fused): the same two roundings as GGML.
      const __m512 vd1 = _mm512_set1_ps(d1), vm1 = _mm512_set1_ps(m1);
      const __m512 vd2 = _mm512_set1_ps(d2), vm2 = _mm512_set1_ps(m2);
      const __m512i mask = _mm512_set1_epi32(0xF);
      for (int h = 0; h < 2; ++h) {
        const __m512i v =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * h)));
        const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(v, mask));
        const __m512 hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
        _mm512_storeu_ps(y + 16 * h, _mm512_sub_ps(_mm512_mul_ps(vd1, lo), vm1));
        _mm512_storeu_ps(y + 32 + 16 * h, _mm512_sub_ps(_mm512_mul_ps(vd2, hi), vm2));
      }
      y += 64;
      continue;
#endif
      for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    }
  }
}

void dequant_q5_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    const uint8_t* ql = b[i].qs;
    const uint8_t* qh = b[i].qh;
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
      int sc, m;
      k4_scale_min(is, b[i].scales, &sc, &m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      k4_scale_min(is + 1, b[i].scales, &sc, &m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
  }
}

void dequant_q6_K(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const uint8_t* ql = b[i].ql;
    const uint8_t* qh = b[i].qh;
    const int8_t* sc = b[i].scales;
    for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
#if defined(__AVX512F__)
      // (d * scale) * q, as the scalar path: one rounding per multiply.
      const __m512i m4 = _mm512_set1_epi32(0xF), m2 = _mm512_set1_epi32(3);
      const __m512i bias = _mm512_set1_epi32(32);
      for (int g = 0; g < 2; ++g) {
        const int l = 16 * g;
        const auto load = [](const uint8_t* p) {
          return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        };
        const __m512i a = load(ql + l), c = load(ql + l + 32), h = load(qh + l);
        const __m512i q[4] = {
            _mm512_or_si512(_mm512_and_si512(a, m4), _mm512_slli_epi32(_mm512_and_si512(h, m2), 4)),
            _mm512_or_si512(_mm512_and_si512(c, m4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 2), m2), 4)),
            _mm512_or_si512(_mm512_srli_epi32(a, 4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(h, 4), m2), 4)),
            _mm512_or_si512(_mm512_srli_epi32(c, 4),
                            _mm512_slli_epi32(_mm512_srli_epi32(h, 6), 4)),
        };
        for (int k = 0; k < 4; ++k) {
          const __m512 ds = _mm512_set1_ps(d * float(sc[g + 2 * k]));
          const __m512 qf = _mm512_cvtepi32_ps(_mm512_sub_epi32(q[k], bias));
          _mm512_storeu_ps(y + 32 * k + l, _mm512_mul_ps(ds, qf));
        }
      }
      continue;
#endif
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * float(sc[is]) * float(q1);
        y[l + 32] = d * float(sc[is + 2]) * float(q2);
        y[l + 64] = d * float(sc[is + 4]) * float(q3);
        y[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
    }
  }
}

// ------------------------------------------------------------------ quantize

void quant_q2_K(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ2_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    float scales[16], mins[16], w[kQK_K];
    for (int l = 0; l < kQK_K; ++l) w[l] = std::fabs(x[l]);
    for (int h = 0; h < 2; ++h)  // sixteen sub-blocks of 16, eight at a time
      fit_scale_min_x8(16, 3, x + 128 * h, w + 128 * h, L + 128 * h, scales + 8 * h, mins + 8 * h,
                       -0.5f, 0.1f, 15, true);
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float q4scale = 15.0f;
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j) b[i].scales[j] = uint8_t(nearest(iscale * scales[j]));
      b[i].d = f32_to_f16(max_scale / q4scale);
    } else {
      std::memset(b[i].scales, 0, 16);
      b[i].d = f32_to_f16(0.0f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j) b[i].scales[j] |= uint8_t(nearest(iscale * mins[j]) << 4);
      b[i].dmin = f32_to_f16(max_min / q4scale);
    } else {
      b[i].dmin = f32_to_f16(0.0f);
    }
    // Requantize against the scales as stored.
    const float d_all = f16_to_f32(b[i].d), m_all = f16_to_f32(b[i].dmin);
    for (int j = 0; j < 16; ++j) {
      const float d = d_all * float(b[i].scales[j] & 0xF);
      if (d == 0) continue;
      const float dm = m_all * float(b[i].scales[j] >> 4);
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = uint8_t(std::clamp(nearest((x[16 * j + l] + dm) / d), 0, 3));
    }
    pack_2bit(L, b[i].qs);
  }
}

void quant_q3_K(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ3_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    int8_t L[kQK_K];
    float scales[16];
    for (int j = 0; j < 16; ++j) scales[j] = fit_symmetric_greedy(16, 4, x + 16 * j, L + 16 * j);
    const float max_scale = signed_absmax(scales, 16);
    std::memset(b[i].scales, 0, 12);
    if (max_scale != 0) {
      const float iscale = -32.0f / max_scale;
      for (int j = 0; j < 16; ++j) {
        const int l = std::clamp(int(int8_t(nearest(iscale * scales[j]))), -32, 31) + 32;
        if (j < 8)
          b[i].scales[j] = uint8_t(l & 0xF);
        else
          b[i].scales[j - 8] |= uint8_t((l & 0xF) << 4);
        b[i].scales[j % 4 + 8] |= uint8_t((l >> 4) << (2 * (j / 4)));
      }
      b[i].d = f32_to_f16(1 / iscale);
    } else {
      b[i].d = f32_to_f16(0.0f);
    }
    int sc[16];
    unpack_q3_scales(b[i].scales, sc);
    const float d_all = f16_to_f32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      const float d = d_all * float(sc[j]);
      if (d == 0) continue;
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = int8_t(std::clamp(nearest(x[16 * j + l] / d), -4, 3) + 4);
    }
    // The third bit of element j goes to hmask[j % 32], bit j / 32.
    std::memset(b[i].hmask, 0, 32);
    uint8_t low[kQK_K];
    for (int j = 0; j < kQK_K; ++j) {
      int v = L[j];
      if (v > 3) {
        b[i].hmask[j % 32] |= uint8_t(1 << (j / 32));
        v -= 4;
      }
      low[j] = uint8_t(v);
    }
    pack_2bit(low, b[i].qs);
  }
}

namespace {

// Shared by Q4_K (nmax 15) and Q5_K (nmax 31): 8 sub-blocks of 32 with
// their own scale and min, both quantized to 6 bits. Leaves the levels in L.
void quant_k_scale_min(const float* x, int nmax, float rmin, float rdelta, int nstep,
                       uint16_t* d_out, uint16_t* dmin_out, uint8_t* packed, uint8_t* L) {
  float scales[8], mins[8], w[kQK_K];
  for (int j = 0; j < 8; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) w[32 * j + l] = av_x + std::fabs(x[32 * j + l]);
  }
  fit_scale_min_x8(32, nmax, x, w, L, scales, mins, rmin, rdelta, nstep, false);
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  std::memset(packed, 0, 12);
  for (int j = 0; j < 8; ++j) {
    // uint8_t first, then clamp: the reference's order of truncation.
    const int ls = std::min(63, int(uint8_t(nearest(inv_scale * scales[j]))));
    const int lm = std::min(63, int(uint8_t(nearest(inv_min * mins[j]))));
    pack_scale_min_k4(j, ls, lm, packed);
  }
  *d_out = f32_to_f16(max_scale / 63.0f);
  *dmin_out = f32_to_f16(max_min / 63.0f);
  const float d_all = f16_to_f32(*d_out), m_all = f16_to_f32(*dmin_out);
  for (int j = 0; j < 8; ++j) {
    int sc, m;
    k4_scale_min(j, packed, &sc, &m);
    const float d = d_all * float(sc);
    if (d == 0) continue;
    const float dm = m_all * float(m);
    for (int l = 0; l < 32; ++l)
      L[32 * j + l] = uint8_t(std::clamp(nearest((x[32 * j + l] + dm) / d), 0, nmax));
  }
}

}  // namespace

void quant_q4_K(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ4_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    quant_k_scale_min(x, 15, -1.0f, 0.1f, 20, &b[i].d, &b[i].dmin, b[i].scales, L);
    uint8_t* q = b[i].qs;
    for (int j = 0; j < kQK_K; j += 64, q += 32)
      for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
  }
}

void quant_q5_K(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ5_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    uint8_t L[kQK_K];
    quant_k_scale_min(x, 31, -0.5f, 0.1f, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
    std::memset(b[i].qh, 0, 32);
    uint8_t* ql = b[i].qs;
    uint8_t m1 = 1, m2 = 2;
    for (int j = 0; j < kQK_K; j += 64, ql += 32, m1 <<= 2, m2 <<= 2) {
      for (int l = 0; l < 32; ++l) {
        int l1 = L[j + l], l2 = L[j + l + 32];
        if (l1 > 15) {
          l1 -= 16;
          b[i].qh[l] |= m1;
        }
        if (l2 > 15) {
          l2 -= 16;
          b[i].qh[l] |= m2;
        }
        ql[l] = uint8_t(l1 | (l2 << 4));
      }
    }
  }
}

void quant_q6_K(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ6_K*>(dst);
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    int8_t L[kQK_K];
    float scales[16];
    float max_scale = 0, max_abs = 0;
    for (int h = 0; h < 2; ++h)  // sixteen sub-blocks of 16, eight at a time
      fit_symmetric_x8(16, 32, x + 128 * h, L + 128 * h, scales + 8 * h);
    for (int j = 0; j < 16; ++j) {
      if (std::fabs(scales[j]) > max_abs) {
        max_abs = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    if (max_abs < kGroupMaxEps) {
      std::memset(&b[i], 0, sizeof(BlockQ6_K));
      continue;
    }
    const float iscale = -128.0f / max_scale;
    b[i].d = f32_to_f16(1 / iscale);
    for (int j = 0; j < 16; ++j) b[i].scales[j] = int8_t(std::min(127, nearest(iscale * scales[j])));
    const float d_all = f16_to_f32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      const float d = d_all * float(b[i].scales[j]);
      if (d == 0) continue;
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = int8_t(std::clamp(nearest(x[16 * j + l] / d), -32, 31) + 32);
    }
    uint8_t* ql = b[i].ql;
    uint8_t* qh = b[i].qh;
    for (int j = 0; j < kQK_K; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const int a = L[j + l], c = L[j + l + 32], e = L[j + l + 64], g = L[j + l + 96];
        ql[l] = uint8_t((a & 0xF) | ((e & 0xF) << 4));
        ql[l + 32] = uint8_t((c & 0xF) | ((g & 0xF) << 4));
        qh[l] = uint8_t((a >> 4) | ((c >> 4) << 2) | ((e >> 4) << 4) | ((g >> 4) << 6));
      }
    }
  }
}

}  // namespace kiln::quant
