// The vision encoder's ops beyond the language model's: LayerNorm with bias,
// bias rows, GELU, and bidirectional attention within segments (one segment
// per image or video frame). The same arithmetic as the CPU backend's
// (kiln/backend/cpu/vision_ops.cpp), except where noted.
#include <cuda_runtime.h>

#include <cmath>

#include "kiln/backend/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

unsigned grid_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

// Sum over a block of kThreads threads, returned to every thread (part:
// kThreads / 32 doubles of shared memory).
template <int kThreads>
__device__ double block_sum(double v, double* part) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) total += part[i];
  __syncthreads();  // part may be written again
  return total;
}

// One block per row. Mean and variance in double, as the CPU does, so that
// a row with a large mean loses nothing to cancellation.
constexpr int kLayerNormThreads = 256;
__global__ void __launch_bounds__(kLayerNormThreads)
    layernorm_kernel(const float* __restrict__ x, const float* __restrict__ w,
                     const float* __restrict__ b, int64_t dim, float eps, float* y) {
  pdl_trigger();
  pdl_wait();
  __shared__ double part[kLayerNormThreads / 32];
  const float* xr = x + int64_t(blockIdx.x) * dim;
  float* yr = y + int64_t(blockIdx.x) * dim;
  double s = 0;
  for (int64_t i = threadIdx.x; i < dim; i += kLayerNormThreads) s += xr[i];
  const float mean = float(block_sum<kLayerNormThreads>(s, part) / double(dim));
  double var = 0;
  for (int64_t i = threadIdx.x; i < dim; i += kLayerNormThreads) {
    const double d = __fsub_rn(xr[i], mean);
    var += d * d;
  }
  var = block_sum<kLayerNormThreads>(var, part);
  const float inv = float(1.0 / sqrt(var / double(dim) + double(eps)));
  for (int64_t i = threadIdx.x; i < dim; i += kLayerNormThreads) {
    const float n = __fmul_rn(__fsub_rn(xr[i], mean), inv);
    yr[i] = __fadd_rn(w ? __fmul_rn(n, w[i]) : n, b ? b[i] : 0.0f);
  }
}

__global__ void add_bias_kernel(float* x, const float* __restrict__ bias, int64_t n,
                                int64_t dim) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = __fadd_rn(x[i], bias[i % dim]);
}

__global__ void gelu_kernel(float* x, int64_t n, bool tanh_approx) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  if (tanh_approx) {
    constexpr float k = 0.7978845608028654f;  // sqrt(2 / pi)
    const float inner = __fmul_rn(k, __fadd_rn(v, __fmul_rn(__fmul_rn(__fmul_rn(0.044715f, v), v), v)));
    x[i] = __fmul_rn(__fmul_rn(0.5f, v), __fadd_rn(1.0f, tanhf(inner)));
  } else {
    x[i] = __fmul_rn(__fmul_rn(0.5f, v), __fadd_rn(1.0f, erff(__fmul_rn(v, 0.70710678118654752f))));
  }
}

// Attention within segments, flash-style: a block takes kSegQueries queries
// of one head (four per warp) and walks the keys of their segments in tiles
// of 32 staged in shared memory, so every key and value row is read once per
// 16 queries. Lane j scores key j of a tile against the warp's four queries;
// the softmax is online (running max and sum per query, the same in every
// lane); lane d accumulates output dims d, d + 32, ... (kSlots of them).
// Keys outside a query's own segment (a block straddling two frames) score
// -inf. Differs from the CPU only in summation order (the CPU takes the
// exact row max first): ~1e-7 relative.
constexpr int kSegQueries = 16, kSegKeys = 32, kSegThreads = 128;
constexpr int kSegQueriesPerWarp = kSegQueries / (kSegThreads / 32);

__device__ __forceinline__ void segment_of(int64_t t, const int32_t* bounds, int n_segments,
                                           int* lo, int* hi) {
  int s = 0;
  while (s + 1 < n_segments && bounds[s + 1] <= t) ++s;
  *lo = bounds[s];
  *hi = bounds[s + 1];
}

template <int kSlots>
__global__ void __launch_bounds__(kSegThreads)
    attention_segments_kernel(const float* __restrict__ q, const float* __restrict__ k,
                              const float* __restrict__ v, int64_t T, int n_heads, int hd,
                              const int32_t* __restrict__ bounds, int n_segments, float scale,
                              float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float smem[];
  float* qs = smem;                          // [kSegQueries][hd]
  float* ks = qs + kSegQueries * hd;         // [kSegKeys][hd + 1]: lanes read rows, padded
  float* vs = ks + kSegKeys * (hd + 1);      // [kSegKeys][hd]
  const int h = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t q0 = int64_t(blockIdx.x) * kSegQueries;
  const int64_t stride = int64_t(n_heads) * hd, last = min(q0 + kSegQueries, T) - 1;

  int klo, khi, unused;
  segment_of(q0, bounds, n_segments, &klo, &unused);
  segment_of(last, bounds, n_segments, &unused, &khi);
  int lo[kSegQueriesPerWarp], hi[kSegQueriesPerWarp];
#pragma unroll
  for (int i = 0; i < kSegQueriesPerWarp; ++i) {
    const int64_t t = q0 + warp * kSegQueriesPerWarp + i;
    if (t < T) segment_of(t, bounds, n_segments, &lo[i], &hi[i]);
    else lo[i] = hi[i] = 0;
  }
  for (int idx = threadIdx.x; idx < kSegQueries * hd; idx += kSegThreads) {
    const int64_t t = q0 + idx / hd;
    qs[idx] = t < T ? q[t * stride + int64_t(h) * hd + idx % hd] : 0.0f;
  }

  float m[kSegQueriesPerWarp], l[kSegQueriesPerWarp], o[kSegQueriesPerWarp][kSlots];
#pragma unroll
  for (int i = 0; i < kSegQueriesPerWarp; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int sl = 0; sl < kSlots; ++sl) o[i][sl] = 0.0f;
  }
  for (int kb = klo; kb < khi; kb += kSegKeys) {
    __syncthreads();  // the previous tile is consumed (and qs written, the first time)
    for (int idx = threadIdx.x; idx < kSegKeys * hd; idx += kSegThreads) {
      const int j = idx / hd, d = idx % hd;
      const bool in = kb + j < khi;
      const int64_t at = int64_t(kb + j) * stride + int64_t(h) * hd + d;
      ks[j * (hd + 1) + d] = in ? k[at] : 0.0f;
      vs[j * hd + d] = in ? v[at] : 0.0f;
    }
    __syncthreads();
    const int key = kb + lane;
    float p[kSegQueriesPerWarp];
#pragma unroll
    for (int i = 0; i < kSegQueriesPerWarp; ++i) {
      const float* qr = qs + (warp * kSegQueriesPerWarp + i) * hd;
      const float* kr = ks + lane * (hd + 1);
      float dot = 0.0f;
      for (int d = 0; d < hd; ++d) dot = fmaf(qr[d], kr[d], dot);
      const float sc = key >= lo[i] && key < hi[i] ? dot * scale : -INFINITY;
      float mx = sc;
      for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m[i], mx);
      float corr = 1.0f;
      p[i] = 0.0f;
      if (m_new != -INFINITY) {  // else no key of this query's segment seen yet
        p[i] = expf(sc - m_new);
        corr = expf(m[i] - m_new);
      }
      float ps = p[i];
      for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
      l[i] = fmaf(l[i], corr, ps);
      m[i] = m_new;
#pragma unroll
      for (int sl = 0; sl < kSlots; ++sl) o[i][sl] *= corr;
    }
    for (int j = 0; j < kSegKeys; ++j) {
      const float* vr = vs + j * hd;
#pragma unroll
      for (int i = 0; i < kSegQueriesPerWarp; ++i) {
        const float pj = __shfl_sync(0xffffffffu, p[i], j);
#pragma unroll
        for (int sl = 0; sl < kSlots; ++sl) {
          const int d = lane + 32 * sl;
          if (d < hd) o[i][sl] = fmaf(pj, vr[d], o[i][sl]);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kSegQueriesPerWarp; ++i) {
    const int64_t t = q0 + warp * kSegQueriesPerWarp + i;
    if (t >= T) continue;
    const float inv = 1.0f / l[i];
#pragma unroll
    for (int sl = 0; sl < kSlots; ++sl) {
      const int d = lane + 32 * sl;
      if (d < hd) out[t * stride + int64_t(h) * hd + d] = o[i][sl] * inv;
    }
  }
}

}  // namespace

void layernorm(const float* x, const float* w, const float* b, int64_t rows, int64_t dim,
               float eps, float* y, cudaStream_t s) {
  if (rows <= 0) return;
  launch(layernorm_kernel, unsigned(rows), kLayerNormThreads, 0, s, "layernorm",
         x, w, b, dim, eps, y);
}

void add_bias(float* x, const float* bias, int64_t rows, int64_t dim, cudaStream_t s) {
  const int64_t n = rows * dim;
  if (n <= 0) return;
  launch(add_bias_kernel, grid_for(n, 256), 256, 0, s, "add_bias", x, bias, n, dim);
}

void gelu(float* x, int64_t n, bool tanh_approx, cudaStream_t s) {
  if (n <= 0) return;
  launch(gelu_kernel, grid_for(n, 256), 256, 0, s, "gelu", x, n, tanh_approx);
}

void attention_segments(const float* q, const float* k, const float* v, int64_t T,
                        int64_t n_heads, int64_t head_dim, const int32_t* bounds_dev,
                        int64_t n_segments, float scale, float* out, cudaStream_t s) {
  if (T <= 0) return;
  const dim3 grid(grid_for(T, kSegQueries), unsigned(n_heads));
  const int hd = int(head_dim);
  const size_t smem = size_t(kSegQueries * hd + kSegKeys * (hd + 1) + kSegKeys * hd) * sizeof(float);
  const int slots = (hd + 31) / 32;
  auto run = [&](auto kernel) {
    launch(kernel, grid, kSegThreads, smem, s, "attention_segments", q, k, v, T, int(n_heads),
           hd, bounds_dev, int(n_segments), scale, out);
  };
  switch (slots) {
    case 1: run(attention_segments_kernel<1>); break;
    case 2: run(attention_segments_kernel<2>); break;
    case 3: run(attention_segments_kernel<3>); break;
    case 4: run(attention_segments_kernel<4>); break;
    default: fail("attention_segments: head_dim ", head_dim, " is over the CUDA backend's 128");
  }
}

}  // namespace kiln::cuda
