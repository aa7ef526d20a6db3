// A sampled token drawn where its logits are: a row's top-k candidates
// (top_k_rows) put in the host's candidate order, then the draw of
// kiln/core/draw.h, the same code as the host sampler's, so the same token
// for the same candidates. The weights are made one candidate a thread; the
// sums and the pick, whose order fixes their bits, by one thread in the
// host's order (a default top-k of 40: a few hundred dependent additions).
#include <cuda_runtime.h>

#include <climits>

#include "kiln/backend/cuda/cuda_common.cuh"
#include "kiln/core/draw.h"

namespace kiln::cuda {
namespace {

constexpr int kDrawMaxThreads = 1024;  // one candidate a thread
static_assert(kDrawMaxThreads >= kDrawMaxTopK);

// Whether candidate a comes before b in by_logit's order (the higher logit
// first, the lower id among equal ones), NaN after every other.
__device__ __forceinline__ bool before(float la, int32_t ia, float lb, int32_t ib) {
  if (la != la) return false;
  if (lb != lb) return true;
  return la > lb || (la == lb && ia < ib);
}

// Block j draws row j's token from its k candidates (any order, NaN logits
// past the row's others), with blockDim.x a power of two >= k.
__global__ void __launch_bounds__(kDrawMaxThreads)
    draw_rows_kernel(const LogitId* __restrict__ candidates, int k,
                     const DrawSpec* __restrict__ specs, int32_t* __restrict__ out) {
  pdl_trigger();
  __shared__ float logit[kDrawMaxThreads];
  __shared__ int32_t id[kDrawMaxThreads];
  __shared__ double e[kDrawMaxThreads], w[kDrawMaxThreads];
  __shared__ int valid;
  const int t = threadIdx.x, width = blockDim.x;
  pdl_wait();
  const DrawSpec spec = specs[blockIdx.x];
  const LogitId* row = candidates + int64_t(blockIdx.x) * k;
  logit[t] = t < k ? row[t].logit : __int_as_float(0x7fc00000);  // padding: NaN
  id[t] = t < k ? row[t].id : INT_MAX;
  if (t == 0) valid = 0;
  __syncthreads();
  // Bitonic sort into by_logit's order.
  for (int size = 2; size <= width; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      const int partner = t ^ stride;
      if (partner > t) {
        const bool in_order = (t & size) == 0;  // this run sorts forwards
        const bool swap = in_order ? before(logit[partner], id[partner], logit[t], id[t])
                                   : before(logit[t], id[t], logit[partner], id[partner]);
        if (swap) {
          const float l = logit[t];
          logit[t] = logit[partner];
          logit[partner] = l;
          const int32_t i = id[t];
          id[t] = id[partner];
          id[partner] = i;
        }
      }
      __syncthreads();
    }
  }
  if (t < k && logit[t] == logit[t]) atomicAdd(&valid, 1);
  __syncthreads();
  const int n = min(valid, spec.top_k);
  if (n == 0) {  // a row of NaN only: what the host's sampler gives
    if (t == 0) out[blockIdx.x] = 0;
    return;
  }
  const float l0 = logit[0];
  if (t < n) {
    e[t] = draw_weight_t1(logit[t], l0);
    w[t] = draw_weight(logit[t], l0, spec.temperature);
  }
  __syncthreads();
  if (t == 0) {
    const int64_t keep = draw_keep(e, n, spec.top_p, spec.min_p);
    out[blockIdx.x] = id[draw_pick(w, keep, draw_uniform(spec.seed, spec.index))];
  }
}

}  // namespace

void draw_rows(const LogitId* candidates, int64_t rows, int64_t k, const DrawSpec* specs,
               int32_t* out, cudaStream_t s) {
  if (rows <= 0) return;
  int threads = 32;
  while (threads < k) threads *= 2;
  KILN_CHECK(threads <= kDrawMaxThreads, "draw_rows: ", k, " candidates, at most ",
             kDrawMaxThreads);
  launch(draw_rows_kernel, unsigned(rows), unsigned(threads), 0, s, "draw_rows", candidates,
         int(k), specs, out);
}

}  // namespace kiln::cuda
