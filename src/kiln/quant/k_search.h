// The K-quants' per-sub-block scale search (GGML's reference search, as
// llama-quantize runs it without an importance matrix), and the same search
// for eight sub-blocks at once, one a vector lane. Internal to the quant area.
#pragma once

#include <cstdint>

namespace kiln::quant {

// Below this largest magnitude a symmetric sub-block or block is all zeros.
constexpr float kGroupMaxEps = 1e-15f;

// Asymmetric fit x ~ scale * L - min with L in [0, nmax] for one sub-block of
// n values weighted by w: start from the min/max grid, then try nstep + 1
// stretched grids, solving the weighted least-squares scale and offset for
// each and keeping the best (abs_error: by absolute rather than squared
// error). Returns the scale; *neg_min receives the (non-negative) min.
float fit_scale_min(int n, int nmax, const float* x, const float* w, uint8_t* L, float* neg_min,
                    float rmin, float rdelta, int nstep, bool abs_error);

// The search for eight sub-blocks j = 0..7 of n <= 32 values each, at x + j * n
// (weights w + j * n, levels to L + j * n), their scales and mins to scale[j]
// and neg_min[j]. Every lane makes the scalar search's operations in its
// order (no fused multiply-adds), so the results are the same bits. Where
// the CPU lacks AVX2, the scalar search eight times.
void fit_scale_min_x8(int n, int nmax, const float* x, const float* w, uint8_t* L, float* scale,
                      float* neg_min, float rmin, float rdelta, int nstep, bool abs_error);

// The AVX2 body of fit_scale_min_x8 (k_search_avx2.cpp), for x86-64 builds.
void fit_scale_min_x8_avx2(int n, int nmax, const float* x, const float* w, uint8_t* L,
                           float* scale, float* neg_min, float rmin, float rdelta, int nstep,
                           bool abs_error);

// Symmetric fit x ~ scale * (L - nmax), L - nmax in [-nmax, nmax - 1],
// weighted by x^2: the sign of the scale follows the largest-magnitude
// element so that it lands on -nmax; then 18 perturbed inverse scales are
// tried. Used by Q6_K.
float fit_symmetric(int n, int nmax, const float* x, int8_t* L);

// fit_symmetric for eight sub-blocks j = 0..7 of n <= 32 values at x + j * n
// (levels to L + j * n, scales to scale[j]), the same bits as the scalar
// search, as fit_scale_min_x8.
void fit_symmetric_x8(int n, int nmax, const float* x, int8_t* L, float* scale);
void fit_symmetric_x8_avx2(int n, int nmax, const float* x, int8_t* L, float* scale);

}  // namespace kiln::quant
