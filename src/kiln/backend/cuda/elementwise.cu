// Norms, rotary embeddings, the KV-cache write, activations and the
// mixture-of-experts row plumbing. Same arithmetic as the CPU backend.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <type_traits>

#include "kiln/backend/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

unsigned grid_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

// One block of kNormThreads per row: every load of the row is in flight at
// once (a warp looping over a 1024-wide row waits on each load in turn).
constexpr int kNormThreads = 256;
__global__ void __launch_bounds__(kNormThreads)
    rmsnorm_kernel(const float* __restrict__ x, const float* __restrict__ w, int64_t rows,
                   int64_t dim, float eps, float* y) {
  pdl_trigger();
  pdl_wait();
  __shared__ float part[kNormThreads / 32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * dim;
  float* yr = y + row * dim;
  const float inv = block_inv_rms<kNormThreads>(xr, dim, eps, part);
  if (w) {
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < dim; i += kNormThreads)
      yr[i] = __fmul_rn(__fmul_rn(xr[i], inv), w[i]);
  } else {
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < dim; i += kNormThreads) yr[i] = __fmul_rn(xr[i], inv);
  }
}

__global__ void rope_kernel(float* x, int64_t T, int64_t n_heads, int64_t head_dim,
                            int64_t half, const int32_t* __restrict__ positions,
                            const float* __restrict__ inv_freq, bool halves) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * n_heads * half) return;
  const int64_t f = i % half, th = i / half, t = th / n_heads;
  // The angle is rounded to f32 before cos/sin, as the reference does.
  const float angle = __fmul_rn(float(positions[t]), inv_freq[f]);
  double sd, cd;
  sincos(double(angle), &sd, &cd);
  const float c = float(cd), s = float(sd);
  float* v = x + th * head_dim;
  const int64_t a = halves ? f : 2 * f, b = halves ? f + half : 2 * f + 1;
  const float x0 = v[a], x1 = v[b];
  v[a] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
  v[b] = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
}

__global__ void store_kv_kernel(void* kc, void* vc, bool f16, int64_t n_kv_heads,
                                int64_t head_dim, int64_t capacity, const float* __restrict__ k,
                                const float* __restrict__ v, int64_t T,
                                const int32_t* __restrict__ start) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * n_kv_heads * head_dim) return;
  const int64_t d = i % head_dim, th = i / head_dim, h = th % n_kv_heads, t = th / n_kv_heads;
  store_kv_element(kc, vc, f16, (h * capacity + *start + t) * head_dim + d, k[i], v[i]);
}

__global__ void silu_mul_kernel(const float* gate, const float* up, int64_t n, float* out) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = gate[i];
  out[i] = __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[i]);
}

// A block per row: each thread keeps the best (value, first index) of its
// stride, then the block reduces them; a greater value wins, an equal one
// only at a lower index, NaN never (it compares false).
constexpr int kArgmaxThreads = 512;
__device__ __forceinline__ void keep_best(float& bv, int& bi, float v, int i) {
  if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
}
__global__ void __launch_bounds__(kArgmaxThreads)
    argmax_rows_kernel(const float* __restrict__ x, int64_t cols, int32_t* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  const float* row = x + int64_t(blockIdx.x) * cols;
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int64_t i = threadIdx.x; i < cols; i += kArgmaxThreads) keep_best(bv, bi, row[i], int(i));
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, bv, o);
    const int i = __shfl_xor_sync(0xffffffffu, bi, o);
    keep_best(bv, bi, v, i);
  }
  __shared__ float sv[kArgmaxThreads / 32];
  __shared__ int si[kArgmaxThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sv[warp] = bv, si[warp] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kArgmaxThreads / 32; ++w) keep_best(bv, bi, sv[w], si[w]);
    out[blockIdx.x] = bi == INT_MAX ? 0 : bi;
  }
}

// Top-k by radix selection. The k-th largest key T (a logit's bits made to
// sort as unsigned integers, -0 as +0 and NaN lowest) is found by four
// passes of 8-bit digit histograms; then every logit above T is taken, and
// of those equal to T the ones first in position, as many as k still needs.
//
// A row of Qwen3's 151936 logits in one block took ~0.3-0.5 ms on an H100
// (six passes over the row by one SM, the first histogram's digits, the
// logits' sign and exponent, piling onto a few bins), more than bringing
// the logits to the host. So a long row is cut into chunks of 2048 to 4095
// logits, a block each, which keep their chunk's k candidates (every one of
// the row's k is among its chunk's k); one block a row then selects the k
// from those. Both stages write what they take in position order, above T
// first, so that the logits equal to the row's T come to the second stage
// in index order and the lowest indices are taken, as one block would.
constexpr int kTopThreads = 1024;       // the block a row (the second stage)
constexpr int kTopChunkThreads = 256;   // a chunk's block (the first stage)
constexpr int64_t kTopChunk = 2048;     // a chunk's least logits (k <= 1024)
__device__ __forceinline__ uint32_t order_key(float v) {
  if (v != v) return 0u;
  uint32_t u = __float_as_uint(v);
  if (u == 0x80000000u) u = 0u;  // -0 equals +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// Exclusive prefix sum of v over the block; *total gets the sum.
template <int Threads>
__device__ int block_exclusive_scan(int v, int* total) {
  static_assert(Threads % 32 == 0 && Threads <= 1024);
  constexpr int kWarps = Threads / 32;
  __shared__ int warp_sums[kWarps];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = lane < kWarps ? warp_sums[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    if (lane < kWarps) warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  const int before = (warp > 0 ? warp_sums[warp - 1] : 0) + x - v;
  *total = warp_sums[kWarps - 1];
  __syncthreads();
  return before;
}
// The k-th largest of the n keys key_at(i) (k <= n) into *threshold, and
// into *need how many keys equal to it the k take.
template <int Threads, class KeyAt>
__device__ void radix_select(int n, int k, KeyAt key_at, uint32_t* threshold, int* need) {
  static_assert(Threads >= 256);
  __shared__ unsigned hist[256];
  __shared__ uint32_t s_digit;
  __shared__ int s_need;
  const int lane = threadIdx.x % 32;
  uint32_t prefix = 0, mask = 0;
  int want = k;  // how many of the keys matching prefix are still wanted
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += Threads) hist[i] = 0;
    __syncthreads();
    // A warp's lanes with the same digit add their count once (the first
    // pass's digits fall on a few bins, whose atomics would serialize).
    for (int base = 0; base < n; base += Threads) {
      const int i = base + int(threadIdx.x);
      const uint32_t key = i < n ? key_at(i) : 0u;
      const bool in = i < n && (key & mask) == prefix;
      const uint32_t digit = in ? (key >> shift) & 255u : 256u;
      const unsigned same = __match_any_sync(0xffffffffu, digit);
      if (in && lane == __ffs(int(same)) - 1) atomicAdd(&hist[digit], unsigned(__popc(int(same))));
    }
    __syncthreads();
    // Thread t counts digit 255 - t; the scan gives each digit how many
    // keys have a larger one. The digit is the one where want is reached.
    const int count = threadIdx.x < 256 ? int(hist[255 - threadIdx.x]) : 0;
    int total;
    const int larger = block_exclusive_scan<Threads>(count, &total);
    if (threadIdx.x < 256 && larger < want && larger + count >= want) {
      s_digit = 255u - threadIdx.x;
      s_need = want - larger;
    }
    __syncthreads();
    prefix |= s_digit << shift;
    mask |= 255u << shift;
    want = s_need;
    __syncthreads();
  }
  *threshold = prefix;
  *need = want;
}
// take(slot, i) for the k keys radix_select chose: those above threshold
// at slots [0, k - need), those equal to it (the first need) at [k - need,
// k), each kind in position order (each thread a contiguous stretch, block
// scans of their counts).
template <int Threads, class KeyAt, class Take>
__device__ void take_selected(int n, int k, uint32_t threshold, int need, KeyAt key_at,
                              Take take) {
  const int stretch = (n + Threads - 1) / Threads;
  const int lo = min(n, int(threadIdx.x) * stretch), hi = min(n, lo + stretch);
  int above = 0, equal = 0;
  for (int i = lo; i < hi; ++i) {
    const uint32_t key = key_at(i);
    above += key > threshold;
    equal += key == threshold;
  }
  int total;
  int a = block_exclusive_scan<Threads>(above, &total);
  int e = block_exclusive_scan<Threads>(equal, &total);
  const int base = k - need;
  for (int i = lo; i < hi; ++i) {
    const uint32_t key = key_at(i);
    if (key > threshold)
      take(a++, i);
    else if (key == threshold && e < need)
      take(base + e++, i);
  }
}
__host__ __device__ inline int64_t top_k_chunks(int64_t cols) {
  return cols >= 2 * kTopChunk ? cols / kTopChunk : 1;
}
// First stage: block (c, j) keeps the k candidates of chunk c of row j.
__global__ void __launch_bounds__(kTopChunkThreads)
    top_k_chunks_kernel(const float* __restrict__ x, int64_t cols, int k,
                        LogitId* __restrict__ mid) {
  pdl_trigger();
  pdl_wait();
  const int64_t chunks = gridDim.x, c = blockIdx.x, j = blockIdx.y;
  const int64_t lo = cols * c / chunks;
  const int n = int(cols * (c + 1) / chunks - lo);  // 2048 .. 4095
  __shared__ float vals[2 * kTopChunk];
  const float* src = x + j * cols + lo;
  for (int i = threadIdx.x; i < n; i += kTopChunkThreads) vals[i] = src[i];
  __syncthreads();
  const auto key_at = [&](int i) { return order_key(vals[i]); };
  uint32_t threshold;
  int need;
  radix_select<kTopChunkThreads>(n, k, key_at, &threshold, &need);
  LogitId* dst = mid + (j * chunks + c) * k;
  take_selected<kTopChunkThreads>(n, k, threshold, need, key_at, [&](int slot, int i) {
    dst[slot] = LogitId{vals[i], int32_t(lo + i)};
  });
}
// Second stage (or the only one, for a row of one chunk): block j selects
// row j's k from n entries, logits (their position their id) or the first
// stage's candidates.
template <class Entry>
__global__ void __launch_bounds__(kTopThreads)
    top_k_rows_kernel(const Entry* __restrict__ x, int64_t n, int k, LogitId* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  const Entry* row = x + int64_t(blockIdx.x) * n;
  LogitId* dst = out + int64_t(blockIdx.x) * k;
  const auto entry = [&](int i) {
    if constexpr (std::is_same_v<Entry, float>)
      return LogitId{row[i], int32_t(i)};
    else
      return row[i];
  };
  const auto key_at = [&](int i) { return order_key(entry(i).logit); };
  uint32_t threshold;
  int need;
  radix_select<kTopThreads>(int(n), k, key_at, &threshold, &need);
  take_selected<kTopThreads>(int(n), k, threshold, need, key_at,
                             [&](int slot, int i) { dst[slot] = entry(i); });
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void gather_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                              int64_t n, int64_t dim, float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * dim) return;
  out[i] = x[int64_t(rows[i / dim]) * dim + i % dim];
}

// Rows within one call are distinct (a token meets an expert once), so the
// adds do not race.
__global__ void scatter_add_kernel(float* y, const float* __restrict__ x,
                                   const int32_t* __restrict__ rows,
                                   const float* __restrict__ scales, int64_t n, int64_t dim) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * dim) return;
  const int64_t r = i / dim;
  float* yr = y + int64_t(rows[r]) * dim + i % dim;
  *yr = __fadd_rn(*yr, __fmul_rn(scales[r], x[i]));
}

}  // namespace

void rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* y,
             cudaStream_t s) {
  if (rows <= 0) return;
  launch(rmsnorm_kernel, unsigned(rows), kNormThreads, 0, s, "rmsnorm",
         x, w, rows, dim, eps, y);
}

void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t rot_dims,
          const int32_t* positions, const float* inv_freq, RopeStyle style, cudaStream_t s) {
  const int64_t half = rot_dims / 2, n = T * n_heads * half;
  if (n <= 0) return;
  launch(rope_kernel, grid_for(n, 256), 256, 0, s, "rope",
         x, T, n_heads, head_dim, half, positions, inv_freq, style == RopeStyle::Halves);
}

void store_kv(void* kc, void* vc, bool f16, int64_t n_kv_heads, int64_t head_dim,
              int64_t capacity, const float* k, const float* v, int64_t T, const int32_t* start,
              cudaStream_t s) {
  const int64_t n = T * n_kv_heads * head_dim;
  if (n <= 0) return;
  launch(store_kv_kernel, grid_for(n, 256), 256, 0, s, "store_kv",
         kc, vc, f16, n_kv_heads, head_dim, capacity, k, v, T, start);
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t s) {
  if (n <= 0) return;
  launch(silu_mul_kernel, grid_for(n, 256), 256, 0, s, "silu_mul",
         gate, up, n, out);
}

void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out, cudaStream_t s) {
  if (rows <= 0) return;
  launch(argmax_rows_kernel, unsigned(rows), kArgmaxThreads, 0, s, "argmax_rows", x, cols, out);
}

size_t top_k_rows_scratch(int64_t rows, int64_t cols, int64_t k) {
  const int64_t chunks = top_k_chunks(cols);
  return chunks > 1 ? size_t(rows * chunks * k) : 0;
}

void top_k_rows(const float* x, int64_t rows, int64_t cols, int64_t k, LogitId* out,
                LogitId* scratch, cudaStream_t s) {
  if (rows <= 0 || k <= 0) return;
  const int64_t chunks = top_k_chunks(cols);
  if (chunks == 1) {
    launch(top_k_rows_kernel<float>, unsigned(rows), kTopThreads, 0, s, "top_k_rows", x, cols,
           int(k), out);
    return;
  }
  launch(top_k_chunks_kernel, dim3(unsigned(chunks), unsigned(rows)), kTopChunkThreads, 0, s,
         "top_k_chunks", x, cols, int(k), scratch);
  launch(top_k_rows_kernel<LogitId>, unsigned(rows), kTopThreads, 0, s, "top_k_rows",
         static_cast<const LogitId*>(scratch), chunks * k, int(k), out);
}

void add(float* x, const float* y, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  launch(add_kernel, grid_for(n, 256), 256, 0, s, "add",
         x, y, n);
}

void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t dim, float* out,
                 cudaStream_t s) {
  if (n * dim <= 0) return;
  launch(gather_kernel, grid_for(n * dim, 256), 256, 0, s, "gather_rows",
         x, rows, n, dim, out);
}

void scatter_add_rows(float* y, const float* x, const int32_t* rows, const float* scales,
                      int64_t n, int64_t dim, cudaStream_t s) {
  if (n * dim <= 0) return;
  launch(scatter_add_kernel, grid_for(n * dim, 256), 256, 0, s, "scatter_add_rows",
         y, x, rows, scales, n, dim);
}

}  // namespace kiln::cuda

// ----------------------------------------------------- fused attention heads
namespace kiln::cuda {
namespace {

// One warp per head row: the q rows, then the k rows, then the v rows.
// q and k rows are rms-normed in place (if a weight is given) and rotated;
// k and v rows are stored into the cache at their position. Each step has
// exactly the arithmetic of its standalone kernel (rmsnorm_kernel's order of
// additions, rope_kernel's angle and rounding), so the result is the same
// bit for bit.
//
// What does not depend on the kernel before (the norm weight, and the
// rotation's cosines and sines: a chain of loads, then a double-precision
// sincos) is made before the wait for it, from weights and the step's
// arguments (the positions, copied before the step's first kernel), so
// that after the wait only the row's own trip from memory is left: 2.4%
// of a Qwen3-4B decode step on an H100.
constexpr int kHeadWarps = 4;

__global__ void __launch_bounds__(kHeadWarps * 32) head_ops_kernel(const __grid_constant__ HeadOps a) {
  pdl_trigger();
  __shared__ float rowbuf[kHeadWarps][kMaxHeadDim];
  __shared__ float normbuf[kHeadWarps][kMaxHeadDim];
  __shared__ float2 cosbuf[kHeadWarps][kMaxHeadDim / 2];  // (cos, sin) of each pair
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kHeadWarps + warp;
  const int64_t nq = a.T * a.n_heads, nk = a.T * a.n_kv_heads, nv = a.kc ? nk : 0;
  if (row >= nq + nk + nv) {
    pdl_wait();
    return;
  }
  const int hd = a.head_dim;
  const int seg = row < nq ? 0 : row < nq + nk ? 1 : 2;
  const int64_t r = seg == 0 ? row : seg == 1 ? row - nq : row - nq - nk;
  const int heads = seg == 0 ? a.n_heads : a.n_kv_heads;
  const int64_t t = r / heads, h = r % heads;
  const float* norm = seg == 0 ? a.q_norm : seg == 1 ? a.k_norm : nullptr;
  float* nbuf = normbuf[warp];
  float2* cs = cosbuf[warp];
  if (norm)
    for (int d = lane; d < hd; d += 32) nbuf[d] = norm[d];
  const bool rotate = seg < 2 && a.rope_half > 0;
  if (rotate) {
    const float pos = float(a.positions[t]);
    for (int f = lane; f < a.rope_half; f += 32) {
      const float angle = __fmul_rn(pos, a.inv_freq[f]);
      double sd, cd;
      sincos(double(angle), &sd, &cd);
      cs[f] = make_float2(float(cd), float(sd));
    }
  }
  pdl_wait();
  float* x = seg == 0 ? a.q + r * hd : seg == 1 ? a.k + r * hd : const_cast<float*>(a.v) + r * hd;
  float* buf = rowbuf[warp];
  for (int d = lane; d < hd; d += 32) buf[d] = x[d];
  __syncwarp();
  if (norm) {
    // rmsnorm_kernel's sum: element i in thread i of a 256-thread block, a
    // butterfly per warp of 32, then the warps' sums in order.
    float total = 0.0f;
    for (int w = 0; w * 32 < hd; ++w) {
      const int d = w * 32 + lane;
      float s = d < hd ? fmaf(buf[d], buf[d], 0.0f) : 0.0f;
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      total += s;
    }
    const float inv = 1.0f / sqrtf(total / float(hd) + a.eps);
    __syncwarp();
    for (int d = lane; d < hd; d += 32) buf[d] = __fmul_rn(__fmul_rn(buf[d], inv), nbuf[d]);
    __syncwarp();
  }
  if (rotate) {
    for (int f = lane; f < a.rope_half; f += 32) {
      const float c = cs[f].x, s = cs[f].y;
      const int i0 = a.halves ? f : 2 * f, i1 = a.halves ? f + a.rope_half : 2 * f + 1;
      const float x0 = buf[i0], x1 = buf[i1];
      buf[i0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
      buf[i1] = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
    }
    __syncwarp();
  }
  if (seg < 2)
    for (int d = lane; d < hd; d += 32) x[d] = buf[d];
  if (seg > 0 && a.kc) {
    const int64_t off = (h * a.capacity + *a.start + t) * hd;
    void* cache = seg == 1 ? a.kc : a.vc;
    for (int d = lane; d < hd; d += 32) {
      if (a.f16)
        static_cast<__half*>(cache)[off + d] = __float2half_rn(buf[d]);
      else
        static_cast<float*>(cache)[off + d] = buf[d];
    }
  }
}

}  // namespace

void head_ops(const HeadOps& a, cudaStream_t s) {
  KILN_CHECK(a.head_dim <= kMaxHeadDim, "head_ops: head_dim ", a.head_dim);
  const int64_t rows = a.T * (a.n_heads + (a.kc ? 2 : 1) * a.n_kv_heads);
  if (rows <= 0) return;
  launch(head_ops_kernel, grid_for(rows, kHeadWarps), kHeadWarps * 32, 0, s, "head_ops", a);
}

}  // namespace kiln::cuda
