// Causal attention over the KV cache, f32 arithmetic throughout (the cache
// may hold f16), online softmax.
//
// Decode (flash-decoding): each (query, head) spreads its keys over a fixed
// number of splits and a second kernel merges them. For head_dim 64/128/256
// and up to 8 query heads per KV head, attn_decode_kernel splits each key
// row over several lanes; other shapes (and KILN_CUDA_ATTN=split) take the
// older kernels, where a warp takes 32 keys at a time (a lane per key for
// the scores, a lane per dimension for the values). The grid depends only on
// the cache capacity and the first position is read from device memory, so
// the launch can be recorded once in a graph and replayed at every position.
//
// Prefill: head_dim 64/128/256 take attn_prefill_tiled_kernel (register tiles,
// 64 queries a block); others a block of 16 consecutive queries of one head
// walking the keys in tiles of 32 staged in shared memory.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "kiln/backend/cuda/attention_combine.cuh"
#include "kiln/backend/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

constexpr int kWarps = 4;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class KT>
__device__ __forceinline__ float dot_row(const float* q, const KT* k, int hd) {
  float s = 0.0f;
  if constexpr (sizeof(KT) == 4) {
    if ((hd & 3) == 0) {
#pragma unroll 8
      for (int d = 0; d < hd; d += 4) {
        const float4 kv = *reinterpret_cast<const float4*>(k + d);
        s = fmaf(q[d], kv.x, s);
        s = fmaf(q[d + 1], kv.y, s);
        s = fmaf(q[d + 2], kv.z, s);
        s = fmaf(q[d + 3], kv.w, s);
      }
      return s;
    }
  } else {
    if ((hd & 1) == 0) {
#pragma unroll 8
      for (int d = 0; d < hd; d += 2) {
        const float2 kv = __half22float2(*reinterpret_cast<const __half2*>(k + d));
        s = fmaf(q[d], kv.x, s);
        s = fmaf(q[d + 1], kv.y, s);
      }
      return s;
    }
  }
  for (int d = 0; d < hd; ++d) s = fmaf(q[d], to_f32(k[d]), s);
  return s;
}

// DPL: head dimensions per lane (head_dim <= 32 * DPL).
template <class KT, int DPL>
__global__ void __launch_bounds__(kWarps * 32)
    attn_split_kernel(const float* __restrict__ q, const KT* __restrict__ kc,
                      const KT* __restrict__ vc, int hd, int64_t capacity, int n_heads,
                      int group, float scale, const int32_t* __restrict__ start_dev, int S,
                      float* __restrict__ partial, float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float smem[];
  float* qs = smem;                    // [hd]
  float* wm = qs + hd;                 // [kWarps]
  float* wl = wm + kWarps;             // [kWarps]
  float* wacc = wl + kWarps;           // [kWarps][hd]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int bh = blockIdx.x, split = blockIdx.y;
  const int t = bh / n_heads, h = bh % n_heads, kvh = h / group;
  const int64_t n_keys = int64_t(*start_dev) + t + 1;
  const int64_t chunk = ((n_keys + S - 1) / S + 31) / 32 * 32;
  const int64_t k0 = split * chunk, k1 = min(k0 + chunk, n_keys);

  for (int d = threadIdx.x; d < hd; d += blockDim.x) qs[d] = q[int64_t(bh) * hd + d];
  __syncthreads();

  const KT* kb = kc + int64_t(kvh) * capacity * hd;
  const KT* vb = vc + int64_t(kvh) * capacity * hd;
  float m = -INFINITY, l = 0.0f, acc[DPL];
#pragma unroll
  for (int i = 0; i < DPL; ++i) acc[i] = 0.0f;
  for (int64_t base = k0 + warp * 32; base < k1; base += kWarps * 32) {
    const int64_t j = base + lane;
    float s = -INFINITY;
    if (j < k1) s = dot_row(qs, kb + j * hd, hd) * scale;
    const float m_new = fmaxf(m, warp_max(s));
    const float corr = expf(m - m_new);
    const float p = j < k1 ? expf(s - m_new) : 0.0f;
    l = l * corr + warp_sum(p);
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[i] *= corr;
    const int nvalid = int(min(int64_t(32), int64_t(k1 - base)));
#pragma unroll 4
    for (int jj = 0; jj < nvalid; ++jj) {
      const float pj = __shfl_sync(0xffffffffu, p, jj);
      const KT* vr = vb + (base + jj) * hd;
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) acc[i] = fmaf(pj, to_f32(vr[d]), acc[i]);
      }
    }
    m = m_new;
  }
  if (lane == 0) wm[warp] = m, wl[warp] = l;
#pragma unroll
  for (int i = 0; i < DPL; ++i) {
    const int d = lane + 32 * i;
    if (d < hd) wacc[warp * hd + d] = acc[i];
  }
  __syncthreads();
  float M = -INFINITY;
  for (int w = 0; w < kWarps; ++w) M = fmaxf(M, wm[w]);
  float f[kWarps], L = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    f[w] = wm[w] == -INFINITY ? 0.0f : expf(wm[w] - M);
    L += wl[w] * f[w];
  }
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0.0f;
    for (int w = 0; w < kWarps; ++w) a += wacc[w * hd + d] * f[w];
    if (S == 1) {
      out[int64_t(bh) * hd + d] = a / L;
    } else {
      float* pp = partial + (int64_t(bh) * S + split) * (hd + 2);
      pp[2 + d] = a;
      if (d == 0) pp[0] = M, pp[1] = L;
    }
  }
}

// The same split for the whole group of query heads that share a KV head
// (grouped-query attention): each key and value row is read once for all
// of them instead of once per query head. G <= MAXG query heads per block.
template <class KT, int DPL, int MAXG>
__global__ void __launch_bounds__(kWarps * 32)
    attn_split_gqa_kernel(const float* __restrict__ q, const KT* __restrict__ kc,
                          const KT* __restrict__ vc, int hd, int64_t capacity, int n_heads,
                          int n_kv_heads, int G, float scale, const int32_t* __restrict__ start_dev,
                          int S, float* __restrict__ partial, float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float smem[];
  float* qs = smem;                      // [G][hd]
  float* wm = qs + MAXG * hd;            // [kWarps][MAXG]
  float* wl = wm + kWarps * MAXG;        // [kWarps][MAXG]
  float* wacc = wl + kWarps * MAXG;      // [kWarps][MAXG][hd]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int t = blockIdx.x / n_kv_heads, kvh = blockIdx.x % n_kv_heads, split = blockIdx.y;
  const int h0 = kvh * G;  // first query head of the group
  const int64_t n_keys = int64_t(*start_dev) + t + 1;
  const int64_t chunk = ((n_keys + S - 1) / S + 31) / 32 * 32;
  const int64_t k0 = split * chunk, k1 = min(k0 + chunk, n_keys);

  for (int i = threadIdx.x; i < G * hd; i += blockDim.x)
    qs[i] = q[(int64_t(t) * n_heads + h0) * hd + i];
  __syncthreads();

  const KT* kb = kc + int64_t(kvh) * capacity * hd;
  const KT* vb = vc + int64_t(kvh) * capacity * hd;
  float m[MAXG], l[MAXG], acc[MAXG][DPL];
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[g][i] = 0.0f;
  }
  for (int64_t base = k0 + warp * 32; base < k1; base += kWarps * 32) {
    const int64_t j = base + lane;
    float sc[MAXG];
#pragma unroll
    for (int g = 0; g < MAXG; ++g) sc[g] = 0.0f;
    if (j < k1) {
      const KT* kr = kb + j * hd;
      // Eight 4-element loads in flight at a time: a lane's key row is
      // hd / 4 dependent-free loads, and waiting on each in turn made this
      // loop the kernel's cost.
      for (int d0 = 0; d0 < hd; d0 += 32) {
        float kv[8][4];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int d = d0 + 4 * u;
          if (d >= hd) {
            kv[u][0] = kv[u][1] = kv[u][2] = kv[u][3] = 0.0f;
          } else if constexpr (sizeof(KT) == 4) {
            const float4 v4 = *reinterpret_cast<const float4*>(kr + d);
            kv[u][0] = v4.x, kv[u][1] = v4.y, kv[u][2] = v4.z, kv[u][3] = v4.w;
          } else {
            const uint2 raw = *reinterpret_cast<const uint2*>(kr + d);
            const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
            const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
            kv[u][0] = a.x, kv[u][1] = a.y, kv[u][2] = b.x, kv[u][3] = b.y;
          }
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
          const int d = d0 + 4 * u;
          if (d >= hd) break;
#pragma unroll
          for (int g = 0; g < MAXG; ++g) {
            if (g >= G) break;
            const float* qg = qs + g * hd + d;
            float acc_s = sc[g];
            acc_s = fmaf(qg[0], kv[u][0], acc_s);
            acc_s = fmaf(qg[1], kv[u][1], acc_s);
            acc_s = fmaf(qg[2], kv[u][2], acc_s);
            acc_s = fmaf(qg[3], kv[u][3], acc_s);
            sc[g] = acc_s;
          }
        }
      }
    }
    float p[MAXG];
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
      if (g >= G) break;
      const float sg = j < k1 ? sc[g] * scale : -INFINITY;
      const float m_new = fmaxf(m[g], warp_max(sg));
      const float corr = expf(m[g] - m_new);
      p[g] = j < k1 ? expf(sg - m_new) : 0.0f;
      l[g] = l[g] * corr + warp_sum(p[g]);
#pragma unroll
      for (int i = 0; i < DPL; ++i) acc[g][i] *= corr;
      m[g] = m_new;
    }
    const int nvalid = int(min(int64_t(32), int64_t(k1 - base)));
#pragma unroll 4
    for (int jj = 0; jj < nvalid; ++jj) {
      const KT* vr = vb + (base + jj) * hd;
      float v[DPL];
#pragma unroll
      for (int i = 0; i < DPL; ++i) {
        const int d = lane + 32 * i;
        v[i] = d < hd ? to_f32(vr[d]) : 0.0f;
      }
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        if (g >= G) break;
        const float pj = __shfl_sync(0xffffffffu, p[g], jj);
#pragma unroll
        for (int i = 0; i < DPL; ++i) acc[g][i] = fmaf(pj, v[i], acc[g][i]);
      }
    }
  }
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (g >= G) break;
    if (lane == 0) wm[warp * MAXG + g] = m[g], wl[warp * MAXG + g] = l[g];
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) wacc[(warp * MAXG + g) * hd + d] = acc[g][i];
    }
  }
  __syncthreads();
  for (int g = 0; g < G; ++g) {
    float M = -INFINITY;
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, wm[w * MAXG + g]);
    float f[kWarps], L = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      const float mw = wm[w * MAXG + g];
      f[w] = mw == -INFINITY ? 0.0f : expf(mw - M);
      L += wl[w * MAXG + g] * f[w];
    }
    const int64_t bh = int64_t(t) * n_heads + h0 + g;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
      float a = 0.0f;
      for (int w = 0; w < kWarps; ++w) a += wacc[(w * MAXG + g) * hd + d] * f[w];
      if (S == 1) {
        out[bh * hd + d] = a / L;
      } else {
        float* pp = partial + (bh * S + split) * (hd + 2);
        pp[2 + d] = a;
        if (d == 0) pp[0] = M, pp[1] = L;
      }
    }
  }
}

// Decode attention for the common shapes (head_dim 8 to 256, powers of two,
// up to 8 query heads per KV head; a head narrower than a lane's share is
// one lane's): every lane of the block works on keys. A key
// row is split over LPK lanes, each holding DPL consecutive dimensions of
// it and of the group's G query heads (in registers), so a warp takes
// 32 / LPK keys per step with 16-byte loads and the block's 4 warps walk
// their keys side by side; each lane slot keeps its own online softmax,
// merged across the warp and then the block at the end. The kernel above
// gives each key one lane and one warp 32 keys: at short contexts (a
// split of ~32 keys) that left three of the block's four warps idle and a
// 128-step serial dot product per lane.
template <int HD, int G>
struct DecodeShape {
  static constexpr int kWide = (HD / 32 > (32 / G < 16 ? 32 / G : 16))
                                   ? HD / 32
                                   : (32 / G < 16 ? 32 / G : 16);
  static constexpr int DPL = kWide < HD ? kWide : HD;            // dims per lane
  static constexpr int LPK = HD / DPL;                           // lanes per key
  static constexpr int KPW = 32 / LPK;                           // keys per warp step
  static_assert(LPK >= 1 && LPK <= 32 && (LPK & (LPK - 1)) == 0, "lanes per key");
};

template <int N>
__device__ __forceinline__ void load_dims(const float* p, float (&v)[N]) {
#pragma unroll
  for (int i = 0; i < N; i += 4) {
    const float4 x = *reinterpret_cast<const float4*>(p + i);
    v[i] = x.x, v[i + 1] = x.y, v[i + 2] = x.z, v[i + 3] = x.w;
  }
}
template <int N>
__device__ __forceinline__ void load_dims(const __half* p, float (&v)[N]) {
  if constexpr (N % 8 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 8) {
      const uint4 raw = *reinterpret_cast<const uint4*>(p + i);
      const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 f = __half22float2(h[k]);
        v[i + 2 * k] = f.x, v[i + 2 * k + 1] = f.y;
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const uint2 raw = *reinterpret_cast<const uint2*>(p + i);
      const __half2* h = reinterpret_cast<const __half2*>(&raw);
      const float2 a = __half22float2(h[0]), b = __half22float2(h[1]);
      v[i] = a.x, v[i + 1] = a.y, v[i + 2] = b.x, v[i + 3] = b.y;
    }
  }
}

// Folds the softmax state (m, l, acc) of another lane slot into this one.
template <int DPL>
__device__ __forceinline__ void merge_state(float& m, float& l, float (&acc)[DPL], float m_o,
                                            float l_o, const float (&acc_o)[DPL]) {
  const float M = fmaxf(m, m_o);
  const float f = m == -INFINITY ? 0.0f : expf(m - M);
  const float f_o = m_o == -INFINITY ? 0.0f : expf(m_o - M);
  l = l * f + l_o * f_o;
#pragma unroll
  for (int i = 0; i < DPL; ++i) acc[i] = acc[i] * f + acc_o[i] * f_o;
  m = M;
}

// Warps a block of the decode kernel: 8, or fewer (down to 4) where their
// partial sums would take more than 32 KB of shared memory. Each step of a
// split's loop takes 8 warps' keys at once: at tg128's short contexts a
// split had 2-8 dependent steps of 8 keys with 4 warps (Qwen3-4B, 4 query
// heads a KV head). 8 warps measured 1.1% faster a 4B decode step than 4
// on an H100, 16 no faster than 8.
template <int HD, int G>
__host__ __device__ constexpr int decode_warps() {
  constexpr int fit = 32768 / (G * HD * int(sizeof(float)));
  return fit >= 8 ? 8 : fit < 4 ? 4 : fit;
}

template <class KT, int HD, int G>
__global__ void __launch_bounds__(decode_warps<HD, G>() * 32)
    attn_decode_kernel(const float* __restrict__ q, const KT* __restrict__ kc,
                       const KT* __restrict__ vc, int64_t capacity, int n_heads, int n_kv_heads,
                       float scale, const int32_t* __restrict__ start_dev, int S,
                       float* __restrict__ partial, float* __restrict__ out,
                       const KvItem* __restrict__ items, bool prefetch) {
  using Shape = DecodeShape<HD, G>;
  constexpr int DPL = Shape::DPL, LPK = Shape::LPK, KPW = Shape::KPW;
  constexpr int kWarps = decode_warps<HD, G>();
  pdl_trigger();
  __shared__ float wm[kWarps][G], wl[kWarps][G];
  __shared__ float wacc[kWarps][G][HD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sub = lane % LPK, slot = lane / LPK;
  const int t = blockIdx.x / n_kv_heads, kvh = blockIdx.x % n_kv_heads, split = blockIdx.y;
  // A batched step: query t is one token of sequence t, with its own cache.
  // The positions (the step's arguments, copied before its first kernel)
  // are read before the wait: their trip from memory then overlaps the
  // kernel before instead of following it.
  const KvItem* item = items ? items + t : nullptr;
  if (item) kc = static_cast<const KT*>(item->k), vc = static_cast<const KT*>(item->v);
  const int64_t n_keys = item ? item->start + 1 : int64_t(*start_dev) + t + 1;
  // At least 32 keys a split: fewer make the merge cost more than they save.
  const int64_t chunk = max(int64_t(32), ((n_keys + S - 1) / S + 31) / 32 * 32);
  const int64_t k0 = split * chunk, k1 = min(k0 + chunk, n_keys);
  // The split's keys and values asked of L2 while the kernel before (the
  // head ops) still runs: a decode step's cache rows were written steps
  // ago and left L2 behind a step's weights, so otherwise the loop's first
  // loads wait on memory after the wait. A prefetch only warms L2, so the
  // newest position, which the kernel before may still be storing, is read
  // after the wait all the same.
  if (prefetch && k0 < k1) {
    const int64_t row0 = int64_t(kvh) * capacity + k0;
    const uintptr_t bytes = uintptr_t(k1 - k0) * HD * sizeof(KT);
    const char* planes[2] = {reinterpret_cast<const char*>(kc + row0 * HD),
                             reinterpret_cast<const char*>(vc + row0 * HD)};
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const uintptr_t first = reinterpret_cast<uintptr_t>(planes[c]) & ~uintptr_t(127);
      const uintptr_t end = reinterpret_cast<uintptr_t>(planes[c]) + bytes;
      for (uintptr_t a = first + uintptr_t(threadIdx.x) * 128; a < end; a += uintptr_t(blockDim.x) * 128)
        prefetch_l2(reinterpret_cast<const void*>(a));
    }
  }
  pdl_wait();

  float qr[G][DPL];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    load_dims(q + (int64_t(t) * n_heads + kvh * G + g) * HD + sub * DPL, qr[g]);
#pragma unroll
    for (int i = 0; i < DPL; ++i) qr[g][i] *= scale;
  }
  float m[G], l[G], acc[G][DPL];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[g][i] = 0.0f;
  }
  const KT* kb = kc + int64_t(kvh) * capacity * HD + sub * DPL;
  const KT* vb = vc + int64_t(kvh) * capacity * HD + sub * DPL;
  constexpr int kStep = kWarps * KPW;  // keys the block takes per step
  // The loop bound is the same for the whole warp (the shuffles need every
  // lane); a slot past the split's end computes nothing. Each step's key
  // and value are loaded a step ahead, so that their trip from memory
  // overlaps the step before instead of following it (a split's handful
  // of steps were each a full memory latency). The arithmetic is the same.
  auto fetch = [&](int64_t at, float (&key)[DPL], float (&value)[DPL]) {
    const int64_t j = at + slot;
    if (j >= k1) return false;
    load_dims(kb + j * HD, key);
    load_dims(vb + j * HD, value);
    return true;
  };
  float kr[DPL], vr[DPL];
  bool valid = fetch(k0 + warp * KPW, kr, vr);
  for (int64_t base = k0 + warp * KPW; base < k1; base += kStep) {
    float kn[DPL], vn[DPL];
    const bool next_valid = fetch(base + kStep, kn, vn);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float sc = 0.0f;
      if (valid) {
#pragma unroll
        for (int i = 0; i < DPL; ++i) sc = fmaf(qr[g][i], kr[i], sc);
      }
#pragma unroll
      for (int o = LPK / 2; o > 0; o >>= 1) sc += __shfl_xor_sync(0xffffffffu, sc, o);
      if (valid) {
        const float m_new = fmaxf(m[g], sc);
        const float corr = expf(m[g] - m_new);  // m = -inf the first time: 0
        const float p = expf(sc - m_new);
        l[g] = l[g] * corr + p;
#pragma unroll
        for (int i = 0; i < DPL; ++i) acc[g][i] = fmaf(p, vr[i], acc[g][i] * corr);
        m[g] = m_new;
      }
    }
#pragma unroll
    for (int i = 0; i < DPL; ++i) kr[i] = kn[i], vr[i] = vn[i];
    valid = next_valid;
  }
  // Merge the warp's slots (lanes sub, sub + LPK, ...), then the warps.
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int o = LPK; o < 32; o <<= 1) {
      float acc_o[DPL];
#pragma unroll
      for (int i = 0; i < DPL; ++i) acc_o[i] = __shfl_xor_sync(0xffffffffu, acc[g][i], o);
      const float m_o = __shfl_xor_sync(0xffffffffu, m[g], o);
      const float l_o = __shfl_xor_sync(0xffffffffu, l[g], o);
      merge_state(m[g], l[g], acc[g], m_o, l_o, acc_o);
    }
    if (slot == 0) {
      if (sub == 0) wm[warp][g] = m[g], wl[warp][g] = l[g];
#pragma unroll
      for (int i = 0; i < DPL; ++i) wacc[warp][g][sub * DPL + i] = acc[g][i];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < G * HD; e += blockDim.x) {
    const int g = e / HD, d = e % HD;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, wm[w][g]);
    float L = 0.0f, a = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = wm[w][g] == -INFINITY ? 0.0f : expf(wm[w][g] - M);
      L += wl[w][g] * f;
      a += wacc[w][g][d] * f;
    }
    const int64_t bh = int64_t(t) * n_heads + kvh * G + g;
    if (S == 1) {
      out[bh * HD + d] = a / L;
    } else {
      float* pp = partial + (bh * S + split) * (HD + 2);
      pp[2 + d] = a;
      if (d == 0) pp[0] = M, pp[1] = L;
    }
  }
}

// KILN_CUDA_ATTN_PREFETCH=0: the decode kernel does not ask L2 for its
// split's keys and values before its wait, to compare.
bool attention_prefetch() {
  static const bool on = !env_is("KILN_CUDA_ATTN_PREFETCH", "0");
  return on;
}

template <class KT, int HD, int G>
void launch_decode(const float* q, const void* kc, const void* vc, int64_t capacity, int64_t T,
                   int64_t n_heads, float scale, const int32_t* start, int S, float* partial,
                   float* out, const KvItem* items, cudaStream_t s) {
  const int64_t n_kv = n_heads / G;
  launch(attn_decode_kernel<KT, HD, G>, dim3(unsigned(T * n_kv), unsigned(S)),
         decode_warps<HD, G>() * 32, 0,
         s, "attention", q, static_cast<const KT*>(kc), static_cast<const KT*>(vc), capacity,
         int(n_heads), int(n_kv), scale, start, S, partial, out, items, attention_prefetch());
}

// The decode kernel when the shape has an instance; false otherwise.
template <class KT>
bool try_decode(const float* q, const void* kc, const void* vc, int64_t hd, int64_t capacity,
                int64_t T, int64_t n_heads, int64_t group, float scale, const int32_t* start,
                int S, float* partial, float* out, cudaStream_t s,
                const KvItem* items = nullptr) {
  auto by_group = [&]<int HD>() {
    switch (group) {
      case 1: launch_decode<KT, HD, 1>(q, kc, vc, capacity, T, n_heads, scale, start, S, partial, out, items, s); return true;
      case 2: launch_decode<KT, HD, 2>(q, kc, vc, capacity, T, n_heads, scale, start, S, partial, out, items, s); return true;
      case 4: launch_decode<KT, HD, 4>(q, kc, vc, capacity, T, n_heads, scale, start, S, partial, out, items, s); return true;
      case 8: launch_decode<KT, HD, 8>(q, kc, vc, capacity, T, n_heads, scale, start, S, partial, out, items, s); return true;
      default: return false;
    }
  };
  switch (hd) {
    case 8: return by_group.template operator()<8>();
    case 16: return by_group.template operator()<16>();
    case 32: return by_group.template operator()<32>();
    case 64: return by_group.template operator()<64>();
    case 128: return by_group.template operator()<128>();
    case 256: return by_group.template operator()<256>();
    default: return false;
  }
}

__global__ void attn_combine_kernel(const float* __restrict__ partial, int hd, int S,
                                    float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  const int bh = blockIdx.x;
  const float* pp = partial + int64_t(bh) * S * (hd + 2);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float v[1];
    combine_splits<1>(pp, hd, S, d, v);
    out[int64_t(bh) * hd + d] = v[0];
  }
}

constexpr int kQPerWarp = 4;
constexpr int kQTile = kWarps * kQPerWarp;  // queries per block
constexpr int kKTile = 32;                  // keys per tile

template <class KT, int DPL>
__global__ void __launch_bounds__(kWarps * 32)
    attn_prefill_kernel(const float* __restrict__ q, const KT* __restrict__ kc,
                        const KT* __restrict__ vc, int hd, int64_t capacity, int T, int n_heads,
                        int group, float scale, const int32_t* __restrict__ start_dev,
                        float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ float smem[];
  const int kstride = hd + 1;             // padded: lane j reads row j conflict-free
  float* ks = smem;                       // [kKTile][hd + 1]
  float* vs = ks + kKTile * kstride;      // [kKTile][hd]
  float* qsm = vs + kKTile * hd;          // [kQTile][hd]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int h = blockIdx.y, kvh = h / group;
  const int t0 = blockIdx.x * kQTile;
  const int64_t start = *start_dev;
  const int t_last = min(T - 1, t0 + kQTile - 1);
  const int64_t n_keys = start + t_last + 1;

  for (int i = threadIdx.x; i < kQTile * hd; i += blockDim.x) {
    const int qi = i / hd, d = i % hd, t = t0 + qi;
    qsm[i] = t < T ? q[(int64_t(t) * n_heads + h) * hd + d] : 0.0f;
  }
  float m[kQPerWarp], l[kQPerWarp], acc[kQPerWarp][DPL];
#pragma unroll
  for (int a = 0; a < kQPerWarp; ++a) {
    m[a] = -INFINITY, l[a] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[a][i] = 0.0f;
  }
  const KT* kb = kc + int64_t(kvh) * capacity * hd;
  const KT* vb = vc + int64_t(kvh) * capacity * hd;
  for (int64_t base = 0; base < n_keys; base += kKTile) {
    const int nk = int(min(int64_t(kKTile), int64_t(n_keys - base)));
    __syncthreads();  // the previous tile is consumed (and q is staged)
    for (int i = threadIdx.x; i < nk * hd; i += blockDim.x) {
      const int j = i / hd, d = i % hd;
      ks[j * kstride + d] = to_f32(kb[(base + j) * hd + d]);
      vs[j * hd + d] = to_f32(vb[(base + j) * hd + d]);
    }
    __syncthreads();
#pragma unroll
    for (int a = 0; a < kQPerWarp; ++a) {
      const int qi = warp * kQPerWarp + a, t = t0 + qi;
      if (t >= T) break;
      const int64_t visible = start + t + 1;  // keys < visible
      if (base >= visible) continue;
      const int64_t j = base + lane;
      float s = -INFINITY;
      if (lane < nk && j < visible) {
        const float* qv = qsm + qi * hd;
        const float* kr = ks + lane * kstride;
        float d0 = 0.0f;
        for (int d = 0; d < hd; ++d) d0 = fmaf(qv[d], kr[d], d0);
        s = d0 * scale;
      }
      const float m_new = fmaxf(m[a], warp_max(s));
      const float corr = expf(m[a] - m_new);
      const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
      l[a] = l[a] * corr + warp_sum(p);
      const int nvalid = int(min(int64_t(nk), int64_t(visible - base)));
#pragma unroll
      for (int i = 0; i < DPL; ++i) acc[a][i] *= corr;
      for (int jj = 0; jj < nvalid; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
        for (int i = 0; i < DPL; ++i) {
          const int d = lane + 32 * i;
          if (d < hd) acc[a][i] = fmaf(pj, vs[jj * hd + d], acc[a][i]);
        }
      }
      m[a] = m_new;
    }
  }
#pragma unroll
  for (int a = 0; a < kQPerWarp; ++a) {
    const int t = t0 + warp * kQPerWarp + a;
    if (t >= T) break;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
      const int d = lane + 32 * i;
      if (d < hd) out[(int64_t(t) * n_heads + h) * hd + d] = acc[a][i] / l[a];
    }
  }
}

// Prefill attention in register tiles (head_dim 64, 128 or 256). A block takes 64
// consecutive queries of one head and walks the keys in tiles of 32. Its 128
// threads form a 16 x 8 grid: thread (ty, tx) owns queries 4ty..4ty+3, the
// scores of keys 4tx..4tx+3 of the tile (S = Q K^T, a 4 x 4 register tile fed
// by two 16-byte shared loads per dimension) and output dimensions
// 4tx + 32c.. (O += P V, a 4 x HD/8 register tile), so each shared value read
// feeds several multiply-adds; the online softmax of a query row is reduced
// over the 8 lanes of its tx. f32 arithmetic throughout, as the kernel above
// (which gave each query one warp and re-read the staged K and V for every
// query: 54% of a 512-token Qwen3-4B prefill went there).
namespace tiled {
constexpr int kQ = 64;          // queries per block
constexpr int kK = 32;          // keys per tile
constexpr int kPad = 4;         // row padding of the transposed K and of P
constexpr int kThreads = 128;   // 16 x 8
}  // namespace tiled

__device__ __forceinline__ float4 load4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ float4 load4(const __half* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
  return {a.x, a.y, b.x, b.y};
}

template <int HD>
constexpr size_t tiled_prefill_smem() {
  using namespace tiled;
  return size_t(HD * kQ + HD * (kK + kPad) + kK * HD + kQ * (kK + kPad)) * sizeof(float);
}

template <class KT, int HD>
__global__ void __launch_bounds__(tiled::kThreads)
    attn_prefill_tiled_kernel(const float* __restrict__ q, const KT* __restrict__ kc,
                              const KT* __restrict__ vc, int64_t capacity, int T, int n_heads,
                              int group, float scale, const int32_t* __restrict__ start_dev,
                              float* __restrict__ out) {
  using namespace tiled;
  constexpr int DV = HD / 32;       // float4s of output dims per thread
  constexpr int KS = kK + kPad;     // row stride of Ks and Ps
  extern __shared__ __align__(16) float sm[];
  float* Qs = sm;                   // [HD][kQ], scaled
  float* Ks = Qs + HD * kQ;         // [HD][KS]
  float* Vs = Ks + HD * KS;         // [kK][HD]
  float* Ps = Vs + kK * HD;         // [kQ][KS]
  pdl_trigger();
  pdl_wait();
  const int tid = threadIdx.x, ty = tid / 8, tx = tid % 8;
  const int h = blockIdx.y, kvh = h / group;
  const int t0 = blockIdx.x * kQ;
  const int64_t start = *start_dev;
  const int t_last = min(T - 1, t0 + kQ - 1);
  const int64_t n_keys = start + t_last + 1;

  for (int i = tid; i < kQ * HD / 4; i += kThreads) {
    const int qi = i % kQ, d4 = i / kQ, t = t0 + qi;
    float4 v = {0.0f, 0.0f, 0.0f, 0.0f};
    if (t < T) v = load4(q + (int64_t(t) * n_heads + h) * HD + 4 * d4);
    Qs[(4 * d4 + 0) * kQ + qi] = v.x * scale;
    Qs[(4 * d4 + 1) * kQ + qi] = v.y * scale;
    Qs[(4 * d4 + 2) * kQ + qi] = v.z * scale;
    Qs[(4 * d4 + 3) * kQ + qi] = v.w * scale;
  }
  // Keys a query row sees (a row past T sees key 0 only: finite, unused).
  int64_t visible[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = t0 + 4 * ty + i;
    visible[i] = t < T ? start + t + 1 : 1;
  }
  float m[4], l[4], o[4][4 * DV];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
    for (int e = 0; e < 4 * DV; ++e) o[i][e] = 0.0f;
  }
  const KT* kb = kc + int64_t(kvh) * capacity * HD;
  const KT* vb = vc + int64_t(kvh) * capacity * HD;
  for (int64_t base = 0; base < n_keys; base += kK) {
    const int nk = int(min(int64_t(kK), n_keys - base));
    __syncthreads();  // the previous tile is consumed (and Q is staged)
    for (int i = tid; i < kK * HD / 4; i += kThreads) {
      const int kj = i % kK, d4 = i / kK;
      float4 v = {0.0f, 0.0f, 0.0f, 0.0f};
      if (kj < nk) v = load4(kb + (base + kj) * HD + 4 * d4);
      Ks[(4 * d4 + 0) * KS + kj] = v.x;
      Ks[(4 * d4 + 1) * KS + kj] = v.y;
      Ks[(4 * d4 + 2) * KS + kj] = v.z;
      Ks[(4 * d4 + 3) * KS + kj] = v.w;
    }
    for (int i = tid; i < kK * HD / 4; i += kThreads) {
      const int kj = i / (HD / 4), d4 = i % (HD / 4);
      float4 v = {0.0f, 0.0f, 0.0f, 0.0f};
      if (kj < nk) v = load4(vb + (base + kj) * HD + 4 * d4);
      *reinterpret_cast<float4*>(Vs + kj * HD + 4 * d4) = v;
    }
    __syncthreads();

    float sc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) sc[i][j] = 0.0f;
#pragma unroll 8
    for (int d = 0; d < HD; ++d) {
      const float4 qv = *reinterpret_cast<const float4*>(Qs + d * kQ + 4 * ty);
      const float4 kv = *reinterpret_cast<const float4*>(Ks + d * KS + 4 * tx);
      const float qa[4] = {qv.x, qv.y, qv.z, qv.w}, ka[4] = {kv.x, kv.y, kv.z, kv.w};
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) sc[i][j] = fmaf(qa[i], ka[j], sc[i][j]);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float rmax = -INFINITY;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t key = base + 4 * tx + j;
        if (4 * tx + j >= nk || key >= visible[i]) sc[i][j] = -INFINITY;
        rmax = fmaxf(rmax, sc[i][j]);
      }
#pragma unroll
      for (int off = 1; off < 8; off <<= 1)
        rmax = fmaxf(rmax, __shfl_xor_sync(0xffffffffu, rmax, off));
      // Tile 0 holds key 0, which every row sees: m is finite from then on.
      const float m_new = fmaxf(m[i], rmax);
      const float corr = expf(m[i] - m_new);
      float rsum = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float p = sc[i][j] == -INFINITY ? 0.0f : expf(sc[i][j] - m_new);
        sc[i][j] = p;
        rsum += p;
      }
#pragma unroll
      for (int off = 1; off < 8; off <<= 1) rsum += __shfl_xor_sync(0xffffffffu, rsum, off);
      l[i] = l[i] * corr + rsum;
#pragma unroll
      for (int e = 0; e < 4 * DV; ++e) o[i][e] *= corr;
      m[i] = m_new;
      *reinterpret_cast<float4*>(Ps + (4 * ty + i) * KS + 4 * tx) = {sc[i][0], sc[i][1], sc[i][2],
                                                                    sc[i][3]};
    }
    __syncthreads();
#pragma unroll 4
    for (int kj = 0; kj < nk; ++kj) {
      float pa[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) pa[i] = Ps[(4 * ty + i) * KS + kj];
#pragma unroll
      for (int c = 0; c < DV; ++c) {
        const float4 v = *reinterpret_cast<const float4*>(Vs + kj * HD + 4 * tx + 32 * c);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          o[i][4 * c + 0] = fmaf(pa[i], v.x, o[i][4 * c + 0]);
          o[i][4 * c + 1] = fmaf(pa[i], v.y, o[i][4 * c + 1]);
          o[i][4 * c + 2] = fmaf(pa[i], v.z, o[i][4 * c + 2]);
          o[i][4 * c + 3] = fmaf(pa[i], v.w, o[i][4 * c + 3]);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = t0 + 4 * ty + i;
    if (t >= T) continue;
    const float inv = 1.0f / l[i];
    float* dst = out + (int64_t(t) * n_heads + h) * HD + 4 * tx;
#pragma unroll
    for (int c = 0; c < DV; ++c)
      *reinterpret_cast<float4*>(dst + 32 * c) = {o[i][4 * c] * inv, o[i][4 * c + 1] * inv,
                                                 o[i][4 * c + 2] * inv, o[i][4 * c + 3] * inv};
  }
}

template <class KT, int HD>
void launch_prefill_tiled(const float* q, const void* kc, const void* vc, int64_t capacity,
                          int64_t T, int64_t n_heads, int64_t group, float scale,
                          const int32_t* start, float* out, cudaStream_t s) {
  auto kernel = attn_prefill_tiled_kernel<KT, HD>;
  constexpr size_t smem = tiled_prefill_smem<HD>();
  static bool raised = false;
  if (!raised) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "attention shared memory");
    raised = true;
  }
  launch(kernel, dim3(unsigned((T + tiled::kQ - 1) / tiled::kQ), unsigned(n_heads)),
         tiled::kThreads, smem, s, "attention (prefill)", q, static_cast<const KT*>(kc),
         static_cast<const KT*>(vc), capacity, int(T), int(n_heads), int(group), scale, start,
         out);
}

// KILN_CUDA_ATTN_PREFILL=rows keeps the query-per-warp kernel, to compare.
bool tiled_prefill_enabled() {
  static const bool on = !env_is("KILN_CUDA_ATTN_PREFILL", "rows");
  return on;
}

template <class KT>
bool try_prefill_tiled(const float* q, const void* kc, const void* vc, int64_t hd,
                       int64_t capacity, int64_t T, int64_t n_heads, int64_t group, float scale,
                       const int32_t* start, float* out, cudaStream_t s) {
  if (!tiled_prefill_enabled()) return false;
  if (hd == 64)
    launch_prefill_tiled<KT, 64>(q, kc, vc, capacity, T, n_heads, group, scale, start, out, s);
  else if (hd == 128)
    launch_prefill_tiled<KT, 128>(q, kc, vc, capacity, T, n_heads, group, scale, start, out, s);
  else if (hd == 256)
    launch_prefill_tiled<KT, 256>(q, kc, vc, capacity, T, n_heads, group, scale, start, out, s);
  else
    return false;
  return true;
}

template <template <class, int> class Launch>
void by_head_dim(bool f16, int64_t hd, auto&&... args) {
  const int dpl = int((hd + 31) / 32);
  auto go = [&]<int D>() {
    if (f16)
      Launch<__half, D>::run(args...);
    else
      Launch<float, D>::run(args...);
  };
  if (dpl <= 1)
    go.template operator()<1>();
  else if (dpl <= 2)
    go.template operator()<2>();
  else if (dpl <= 4)
    go.template operator()<4>();
  else if (dpl <= 8)
    go.template operator()<8>();
  else
    fail("attention: head_dim ", hd, " is over the CUDA backend's limit of 256");
}

template <class KT, int DPL>
struct SplitLaunch {
  static void run(const float* q, const void* kc, const void* vc, int64_t hd, int64_t capacity,
                  int64_t T, int64_t n_heads, int64_t group, float scale, const int32_t* start,
                  int S, float* partial, float* out, cudaStream_t s) {
    constexpr int kMaxGroup = 8;
    if (group <= kMaxGroup && hd % 4 == 0) {
      const int64_t n_kv = n_heads / group;
      const size_t smem =
          size_t(kMaxGroup * hd + 2 * kWarps * kMaxGroup + kWarps * kMaxGroup * hd) * sizeof(float);
      auto kernel = attn_split_gqa_kernel<KT, DPL, kMaxGroup>;
      if (smem > 48 * 1024)
        check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
              "attention shared memory");
      launch(kernel, dim3(unsigned(T * n_kv), unsigned(S)), kWarps * 32, smem, s, "attention",
             q, static_cast<const KT*>(kc), static_cast<const KT*>(vc), int(hd), capacity,
             int(n_heads), int(n_kv), int(group), scale, start, S, partial, out);
      return;
    }
    const size_t smem = size_t(hd + 2 * kWarps + kWarps * hd) * sizeof(float);
    auto kernel = attn_split_kernel<KT, DPL>;
    if (smem > 48 * 1024)
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
            "attention shared memory");
    launch(kernel, dim3(unsigned(T * n_heads), unsigned(S)), kWarps * 32, smem, s, "attention", q,
           static_cast<const KT*>(kc), static_cast<const KT*>(vc), int(hd), capacity, int(n_heads),
           int(group), scale, start, S, partial, out);
  }
};

template <class KT, int DPL>
struct PrefillLaunch {
  static void run(const float* q, const void* kc, const void* vc, int64_t hd, int64_t capacity,
                  int64_t T, int64_t n_heads, int64_t group, float scale, const int32_t* start,
                  float* out, cudaStream_t s) {
    const size_t smem = size_t(kKTile * (hd + 1) + kKTile * hd + kQTile * hd) * sizeof(float);
    auto kernel = attn_prefill_kernel<KT, DPL>;
    if (smem > 48 * 1024)
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
            "attention shared memory");
    launch(kernel, dim3(unsigned((T + kQTile - 1) / kQTile), unsigned(n_heads)), kWarps * 32, smem,
           s, "attention (prefill)", q, static_cast<const KT*>(kc), static_cast<const KT*>(vc),
           int(hd), capacity, int(T), int(n_heads), int(group), scale, start, out);
  }
};

// KILN_CUDA_ATTN=split keeps the older lane-per-key kernel, for comparison.
bool decode_kernel_enabled() {
  static const bool on = !env_is("KILN_CUDA_ATTN", "split");
  return on;
}

}  // namespace

void attention(const float* q, const void* kc, const void* vc, bool f16, int64_t n_kv_heads,
               int64_t head_dim, int64_t capacity, int64_t T, int64_t n_heads, float scale,
               const int32_t* start_dev, int splits, float* partial, float* out,
               cudaStream_t s, bool combine) {
  if (T <= 0) return;
  const int64_t group = n_heads / n_kv_heads;
  const bool decoded =
      decode_kernel_enabled() &&
      (f16 ? try_decode<__half>(q, kc, vc, head_dim, capacity, T, n_heads, group, scale,
                                start_dev, splits, partial, out, s)
           : try_decode<float>(q, kc, vc, head_dim, capacity, T, n_heads, group, scale,
                               start_dev, splits, partial, out, s));
  if (!decoded)
    by_head_dim<SplitLaunch>(f16, head_dim, q, kc, vc, head_dim, capacity, T, n_heads, group,
                             scale, start_dev, splits, partial, out, s);
  check_launch("attention");
  if (splits > 1 && combine) attention_combine(partial, T * n_heads, head_dim, splits, out, s);
}

void attention_combine(const float* partial, int64_t rows, int64_t head_dim, int splits,
                       float* out, cudaStream_t s) {
  launch(attn_combine_kernel, unsigned(rows), 128, 0, s, "attention (combine)", partial,
         int(head_dim), splits, out);
}

// Row t of k and v (one token of sequence t) into that sequence's cache.
__global__ void store_kv_batch_kernel(bool f16, int64_t n_kv_heads, int64_t head_dim,
                                      int64_t capacity, const float* __restrict__ k,
                                      const float* __restrict__ v, int64_t n,
                                      const KvItem* __restrict__ items) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * n_kv_heads * head_dim) return;
  const int64_t d = i % head_dim, th = i / head_dim, h = th % n_kv_heads, t = th / n_kv_heads;
  const KvItem& it = items[t];
  store_kv_element(it.k, it.v, f16, (h * capacity + it.start) * head_dim + d, k[i], v[i]);
}

bool decode_batch_supported(int64_t head_dim, int64_t group) {
  return decode_kernel_enabled() &&
         (head_dim == 8 || head_dim == 16 || head_dim == 32 || head_dim == 64 ||
          head_dim == 128 || head_dim == 256) &&
         (group == 1 || group == 2 || group == 4 || group == 8);
}

void attention_decode_batch(const float* q, const float* k, const float* v, bool f16,
                            int64_t n_kv_heads, int64_t head_dim, int64_t capacity, int64_t n,
                            int64_t n_heads, float scale, const KvItem* items_dev, int splits,
                            float* partial, float* out, cudaStream_t s) {
  if (n <= 0) return;
  const int64_t group = n_heads / n_kv_heads, total = n * n_kv_heads * head_dim;
  launch(store_kv_batch_kernel, unsigned((total + 255) / 256), 256, 0, s, "store_kv (batch)",
         f16, n_kv_heads, head_dim, capacity, k, v, n, items_dev);
  const bool ok = f16 ? try_decode<__half>(q, nullptr, nullptr, head_dim, capacity, n, n_heads,
                                           group, scale, nullptr, splits, partial, out, s,
                                           items_dev)
                      : try_decode<float>(q, nullptr, nullptr, head_dim, capacity, n, n_heads,
                                          group, scale, nullptr, splits, partial, out, s,
                                          items_dev);
  KILN_CHECK(ok, "batched attention: no kernel for head_dim ", head_dim, ", group ", group);
  if (splits > 1) attention_combine(partial, n * n_heads, head_dim, splits, out, s);
}

void attention_prefill(const float* q, const void* kc, const void* vc, bool f16,
                       int64_t n_kv_heads, int64_t head_dim, int64_t capacity, int64_t T,
                       int64_t n_heads, float scale, const int32_t* start_dev, float* out,
                       cudaStream_t s) {
  if (T <= 0) return;
  const int64_t group = n_heads / n_kv_heads;
  const bool tiled =
      f16 ? try_prefill_tiled<__half>(q, kc, vc, head_dim, capacity, T, n_heads, group, scale,
                                      start_dev, out, s)
          : try_prefill_tiled<float>(q, kc, vc, head_dim, capacity, T, n_heads, group, scale,
                                     start_dev, out, s);
  if (!tiled)
    by_head_dim<PrefillLaunch>(f16, head_dim, q, kc, vc, head_dim, capacity, T, n_heads, group,
                               scale, start_dev, out, s);
  check_launch("attention (prefill)");
}

}  // namespace kiln::cuda
