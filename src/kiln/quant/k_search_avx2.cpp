// The K-quants' scale searches (fit_scale_min, fit_symmetric) for eight
// sub-blocks at once on AVX2 (compile flags set in CMakeLists.txt: -mavx2,
// and -ffp-contract=off so that no multiply and add are fused). Lane j runs
// sub-block j's search exactly as the scalar code (k_quants.cpp) runs it,
// trial after trial, a mask standing for each branch; min and max take
// their operands in std::min / std::max's order, so signed zeros come out
// alike too.
#include "kiln/quant/k_search.h"

#if defined(__AVX2__)
#include <immintrin.h>

namespace kiln::quant {
namespace {

// round half to even (the default rounding mode's nearbyint), clamped to [0, nmax]
inline __m256i level(__m256 v, __m256i nmax) {
  const __m256i l = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  return _mm256_min_epi32(_mm256_max_epi32(l, _mm256_setzero_si256()), nmax);
}

inline __m256 blend(__m256 a, __m256 b, __m256 take_b) { return _mm256_blendv_ps(a, b, take_b); }

}  // namespace

void fit_scale_min_x8_avx2(int n, int nmax, const float* x, const float* w, uint8_t* L,
                           float* scale_out, float* neg_min_out, float rmin, float rdelta,
                           int nstep, bool abs_error) {
  // Element i of every lane's sub-block side by side.
  alignas(32) float xt[32][8], wt[32][8];
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < n; ++i) xt[i][j] = x[j * n + i], wt[i][j] = w[j * n + i];
  const auto X = [&](int i) { return _mm256_load_ps(xt[i]); };
  const auto W = [&](int i) { return _mm256_load_ps(wt[i]); };
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i vmax = _mm256_set1_epi32(nmax);
  const auto err_of = [&](__m256 d) {
    return abs_error ? _mm256_andnot_ps(sign, d) : _mm256_mul_ps(d, d);
  };

  __m256 lo = X(0), hi = X(0), sum_w = W(0), sum_x = _mm256_mul_ps(W(0), X(0));
  for (int i = 1; i < n; ++i) {
    lo = _mm256_min_ps(X(i), lo);  // std::min(lo, x): x only where x < lo
    hi = _mm256_max_ps(X(i), hi);  // std::max(hi, x): x only where hi < x
    sum_w = _mm256_add_ps(sum_w, W(i));
    sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(W(i), X(i)));
  }
  lo = blend(lo, zero, _mm256_cmp_ps(lo, zero, _CMP_GT_OQ));
  const __m256 flat = _mm256_cmp_ps(hi, lo, _CMP_EQ_OQ);  // all levels 0, scale 0

  __m256 iscale = _mm256_div_ps(_mm256_set1_ps(float(nmax)), _mm256_sub_ps(hi, lo));
  __m256 scale = _mm256_div_ps(_mm256_set1_ps(1.0f), iscale);
  __m256i best_l[32], trial[32];
  __m256 best = zero;
  for (int i = 0; i < n; ++i) {
    best_l[i] = level(_mm256_mul_ps(iscale, _mm256_sub_ps(X(i), lo)), vmax);
    const __m256 d = _mm256_sub_ps(
        _mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(best_l[i])), lo), X(i));
    best = _mm256_add_ps(best, _mm256_mul_ps(W(i), err_of(d)));
  }
  for (int is = 0; is <= nstep; ++is) {
    const float stretch = rmin + rdelta * float(is) + float(nmax);
    iscale = _mm256_div_ps(_mm256_set1_ps(stretch), _mm256_sub_ps(hi, lo));
    __m256 sum_l = zero, sum_l2 = zero, sum_xl = zero;
    for (int i = 0; i < n; ++i) {
      trial[i] = level(_mm256_mul_ps(iscale, _mm256_sub_ps(X(i), lo)), vmax);
      const __m256 l = _mm256_cvtepi32_ps(trial[i]);
      const __m256 wl = _mm256_mul_ps(W(i), l);
      sum_l = _mm256_add_ps(sum_l, wl);
      sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, l));
      sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, X(i)));
    }
    const __m256 det =
        _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
    const __m256 tried = _mm256_cmp_ps(det, zero, _CMP_NLE_UQ);  // the scalar's !(det <= 0)
    __m256 this_scale = _mm256_div_ps(
        _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)), det);
    __m256 this_min = _mm256_div_ps(
        _mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)), det);
    const __m256 positive = _mm256_cmp_ps(this_min, zero, _CMP_GT_OQ);
    this_min = blend(this_min, zero, positive);
    this_scale = blend(this_scale, _mm256_div_ps(sum_xl, sum_l2), positive);
    __m256 err = zero;
    for (int i = 0; i < n; ++i) {
      const __m256 d = _mm256_sub_ps(
          _mm256_add_ps(_mm256_mul_ps(this_scale, _mm256_cvtepi32_ps(trial[i])), this_min), X(i));
      err = _mm256_add_ps(err, _mm256_mul_ps(W(i), err_of(d)));
    }
    const __m256 take = _mm256_and_ps(tried, _mm256_cmp_ps(err, best, _CMP_LT_OQ));
    if (_mm256_movemask_ps(take) == 0) continue;
    const __m256i take_i = _mm256_castps_si256(take);
    for (int i = 0; i < n; ++i) best_l[i] = _mm256_blendv_epi8(best_l[i], trial[i], take_i);
    best = blend(best, err, take);
    scale = blend(scale, this_scale, take);
    lo = blend(lo, this_min, take);
  }
  // Flat sub-blocks (the scalar search returns early): levels 0, scale 0,
  // and the min as found, which no trial changed (their levels are all 0
  // there, so det is 0 and none is taken).
  scale = blend(scale, zero, flat);
  alignas(32) int32_t lt[32][8];
  const __m256i keep = _mm256_castps_si256(_mm256_xor_ps(flat, _mm256_castsi256_ps(_mm256_set1_epi32(-1))));
  for (int i = 0; i < n; ++i)
    _mm256_store_si256(reinterpret_cast<__m256i*>(lt[i]), _mm256_and_si256(best_l[i], keep));
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < n; ++i) L[j * n + i] = uint8_t(lt[i][j]);
  _mm256_storeu_ps(scale_out, scale);
  _mm256_storeu_ps(neg_min_out, _mm256_xor_ps(lo, sign));
}

void fit_symmetric_x8_avx2(int n, int nmax, const float* x, int8_t* L, float* scale_out) {
  alignas(32) float xt[32][8];
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < n; ++i) xt[i][j] = x[j * n + i];
  const auto X = [&](int i) { return _mm256_load_ps(xt[i]); };
  const __m256 zero = _mm256_setzero_ps();
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i lmin = _mm256_set1_epi32(-nmax), lmax = _mm256_set1_epi32(nmax - 1);
  const auto quant = [&](__m256 iscale, int i) {
    const __m256 v = _mm256_round_ps(_mm256_mul_ps(iscale, X(i)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(v), lmin), lmax);
  };

  // signed_absmax: the first element of the largest magnitude.
  __m256 amax = zero, max = zero;
  for (int i = 0; i < n; ++i) {
    const __m256 a = _mm256_andnot_ps(sign, X(i));
    const __m256 larger = _mm256_cmp_ps(amax, a, _CMP_LT_OQ);
    amax = blend(amax, a, larger);
    max = blend(max, X(i), larger);
  }
  const __m256 flat = _mm256_cmp_ps(_mm256_andnot_ps(sign, max), _mm256_set1_ps(kGroupMaxEps), _CMP_LT_OQ);

  // The levels of an inverse scale, and their x^2-weighted sums.
  __m256 sumlx, suml2;
  const auto levels = [&](__m256 iscale, __m256i* out) {
    sumlx = suml2 = zero;
    for (int i = 0; i < n; ++i) {
      out[i] = quant(iscale, i);
      const __m256 l = _mm256_cvtepi32_ps(out[i]);
      const __m256 w = _mm256_mul_ps(X(i), X(i));
      sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(w, X(i)), l));
      suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w, l), l));
    }
  };
  __m256i best_l[32], trial[32];
  levels(_mm256_div_ps(_mm256_set1_ps(float(-nmax)), max), best_l);
  __m256 scale = blend(_mm256_div_ps(sumlx, suml2), zero, _mm256_cmp_ps(suml2, zero, _CMP_EQ_OQ));
  __m256 best = _mm256_mul_ps(scale, sumlx);
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float stretch = -(float(nmax) + 0.1f * float(is));
    levels(_mm256_div_ps(_mm256_set1_ps(stretch), max), trial);
    const __m256 take = _mm256_and_ps(
        _mm256_cmp_ps(suml2, zero, _CMP_GT_OQ),
        _mm256_cmp_ps(_mm256_mul_ps(sumlx, sumlx), _mm256_mul_ps(best, suml2), _CMP_GT_OQ));
    if (_mm256_movemask_ps(take) == 0) continue;
    const __m256i take_i = _mm256_castps_si256(take);
    for (int i = 0; i < n; ++i) best_l[i] = _mm256_blendv_epi8(best_l[i], trial[i], take_i);
    scale = blend(scale, _mm256_div_ps(sumlx, suml2), take);
    best = blend(best, _mm256_mul_ps(scale, sumlx), take);
  }
  // Sub-blocks of (nearly) zeros: levels 0 (not the offset zero), scale 0.
  scale = blend(scale, zero, flat);
  const __m256i keep = _mm256_castps_si256(_mm256_xor_ps(flat, _mm256_castsi256_ps(_mm256_set1_epi32(-1))));
  const __m256i offset = _mm256_set1_epi32(nmax);
  alignas(32) int32_t lt[32][8];
  for (int i = 0; i < n; ++i)
    _mm256_store_si256(reinterpret_cast<__m256i*>(lt[i]),
                       _mm256_and_si256(_mm256_add_epi32(best_l[i], offset), keep));
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < n; ++i) L[j * n + i] = int8_t(lt[i][j]);
  _mm256_storeu_ps(scale_out, scale);
}

}  // namespace kiln::quant
#endif
