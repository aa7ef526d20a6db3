// The merge of flash-decoding's split partials, shared by the combine
// kernel (attention.cu) and by the products that merge them in their own
// prologue (matvec_fused.cu, MatvecPrologue::AttnCombine), so that both
// give the same bits.
//
// A (query, head)'s S partials are S * (head_dim + 2) floats: per split its
// running maximum m, its sum of exponentials l, then its head_dim weighted
// value sums. A split with no keys (past the end of a short cache) has
// m = -inf and adds nothing.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

namespace kiln::cuda {

// out[i] = the merged value of dimension d + i of the head whose partials
// start at pp (N consecutive dimensions), for S splits of stride hd + 2.
// Every output's sum runs over the splits in order, with the same
// operations whatever N is.
template <int N>
__device__ __forceinline__ void combine_splits(const float* __restrict__ pp, int hd, int S,
                                               int d, float (&out)[N]) {
  const int stride = hd + 2;
  float M = -INFINITY;
#pragma unroll 8
  for (int s = 0; s < S; ++s) M = fmaxf(M, pp[s * stride]);
  float L = 0.0f, a[N];
#pragma unroll
  for (int i = 0; i < N; ++i) a[i] = 0.0f;
#pragma unroll 4
  for (int s = 0; s < S; ++s) {
    const float ms = pp[s * stride];
    // An empty split's sums are not read at all: at short caches most of
    // the splits a capacity gets are empty.
    if (ms == -INFINITY) continue;
    const float f = expf(ms - M);
    L += pp[s * stride + 1] * f;
#pragma unroll
    for (int i = 0; i < N; ++i) a[i] += pp[s * stride + 2 + d + i] * f;
  }
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = a[i] / L;
}

}  // namespace kiln::cuda
