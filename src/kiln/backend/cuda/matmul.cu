// Matrix-vector products on weights in their file block format, and row
// dequantization (embeddings, and the tiles prefill hands to cuBLAS).
//
// Decode is bound by weight bandwidth: each warp owns one row and streams
// it through a private shared-memory stage with 16-byte loads (rows of most
// formats are not 16-byte aligned, so the stage starts at the aligned
// address below the row and decoding skips the head). Every weight byte is
// read from HBM once; the activations are small and stay in L1/L2.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kiln/backend/cuda/cuda_common.cuh"
#include "kiln/backend/cuda/formats.cuh"

namespace kiln::cuda {
namespace {

constexpr int kWarps = 8;          // rows per block
constexpr int kStage = 2048;       // bytes of blocks staged per warp per step
constexpr int kStageSlack = 48;    // aligned-down head (< 16) + one word read past the end

__device__ __forceinline__ uint4 load_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

template <int MAXT>
__device__ __forceinline__ void accumulate(const float* w, const float* x, int64_t K, int64_t k,
                                           int T, bool vec, float (&acc)[MAXT]) {
#pragma unroll
  for (int t = 0; t < MAXT; ++t) {
    if (t >= T) break;
    const float* xt = x + t * K + k;
    float s = 0.0f;
    if (vec) {
#pragma unroll
      for (int i = 0; i < 32; i += 4) {
        const float4 xv = *reinterpret_cast<const float4*>(xt + i);
        s = fmaf(w[i], xv.x, s);
        s = fmaf(w[i + 1], xv.y, s);
        s = fmaf(w[i + 2], xv.z, s);
        s = fmaf(w[i + 3], xv.w, s);
      }
    } else {
#pragma unroll
      for (int i = 0; i < 32; ++i) s = fmaf(w[i], xt[i], s);
    }
    acc[t] += s;
  }
}

template <DType DT, int MAXT>
__global__ void __launch_bounds__(kWarps * 32)
    matvec_kernel(const uint8_t* __restrict__ W, size_t row_bytes, int64_t N, int64_t K,
                  const float* __restrict__ x, int T, bool vec, float* __restrict__ y) {
  pdl_trigger();
  pdl_wait();
  using F = Fmt<DT>;
  __shared__ __align__(16) uint8_t stage[kWarps][kStage + kStageSlack];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + warp;
  if (row >= N) return;  // no block-wide barriers below
  const uint8_t* rp = W + row * int64_t(row_bytes);
  const int64_t nblocks = K / F::kBlock;
  constexpr int kPerStage = kStage / F::kBytes;
  float acc[MAXT];
#pragma unroll
  for (int t = 0; t < MAXT; ++t) acc[t] = 0.0f;

  for (int64_t b0 = 0; b0 < nblocks; b0 += kPerStage) {
    const int nb = int(min(int64_t(kPerStage), int64_t(nblocks - b0)));
    const uint8_t* seg = rp + b0 * F::kBytes;
    const uintptr_t aligned = reinterpret_cast<uintptr_t>(seg) & ~uintptr_t(15);
    const int head = int(reinterpret_cast<uintptr_t>(seg) - aligned);
    const int nvec = (head + nb * F::kBytes + 15) / 16;
    const uint4* src = reinterpret_cast<const uint4*>(aligned);
    uint4* dst = reinterpret_cast<uint4*>(stage[warp]);
    // All of this lane's loads are issued before any is used.
    uint4 v[kStage / 16 / 32 + 1];
#pragma unroll
    for (int i = 0; i < kStage / 16 / 32 + 1; ++i) {
      const int idx = lane + 32 * i;
      if (idx < nvec) v[i] = load_stream(src + idx);
    }
#pragma unroll
    for (int i = 0; i < kStage / 16 / 32 + 1; ++i) {
      const int idx = lane + 32 * i;
      if (idx < nvec) dst[idx] = v[i];
    }
    __syncwarp();
    const uint8_t* sb = stage[warp] + head;
    for (int u = lane; u < nb * F::kUnits; u += 32) {
      const int blk = u / F::kUnits, uu = u % F::kUnits;
      float w[32];
      F::unit(sb + blk * F::kBytes, uu, w);
      accumulate<MAXT>(w, x, K, (b0 + blk) * F::kBlock + uu * 32, T, vec, acc);
    }
    __syncwarp();
  }
#pragma unroll
  for (int t = 0; t < MAXT; ++t) {
    if (t >= T) break;
    float s = acc[t];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) y[t * N + row] = s;
  }
}

// Plain types whose rows are not a whole number of 32-element units.
template <DType DT>
__device__ __forceinline__ float plain_at(const uint8_t* row, int64_t k) {
  if constexpr (DT == DType::F32) return reinterpret_cast<const float*>(row)[k];
  if constexpr (DT == DType::F16)
    return __half2float(__ushort_as_half(reinterpret_cast<const uint16_t*>(row)[k]));
  if constexpr (DT == DType::BF16)
    return __uint_as_float(uint32_t(reinterpret_cast<const uint16_t*>(row)[k]) << 16);
  return 0.0f;
}

template <DType DT>
__global__ void matvec_plain_kernel(const uint8_t* __restrict__ W, size_t row_bytes, int64_t N,
                                    int64_t K, const float* __restrict__ x, int T,
                                    float* __restrict__ y) {
  pdl_trigger();
  pdl_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarps + warp;
  if (row >= N) return;
  const uint8_t* rp = W + row * int64_t(row_bytes);
  for (int t = 0; t < T; ++t) {
    float s = 0.0f;
    for (int64_t k = lane; k < K; k += 32) s = fmaf(plain_at<DT>(rp, k), x[t * K + k], s);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) y[t * N + row] = s;
  }
}

// A warp decodes 32 consecutive units into shared memory and writes them
// out as 32 coalesced rows of 128 bytes (unit i of the output is at i * 32:
// rows are K = units_per_row * 32 wide), instead of each thread writing its
// own 128-byte unit, which split every store across 32 cache lines.
constexpr int kDequantThreads = 128;

__device__ __forceinline__ void store_as(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_as(__half* p, float v) { *p = __float2half_rn(v); }

template <DType DT, class OutT>
__global__ void __launch_bounds__(kDequantThreads)
    dequant_kernel(const uint8_t* __restrict__ W, size_t row_bytes, int64_t row0, int64_t rows,
                   int64_t K, const int32_t* __restrict__ ids, OutT* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  using F = Fmt<DT>;
  __shared__ float tile[kDequantThreads / 32][32][33];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t units_per_row = K / F::kBlock * F::kUnits;
  const int64_t total = rows * units_per_row;
  const int64_t first = (int64_t(blockIdx.x) * kDequantThreads) + warp * 32;
  const int64_t i = first + lane;
  if (i < total) {
    const int64_t r = i / units_per_row, u = i % units_per_row;
    const int64_t src_row = ids ? int64_t(ids[r]) : row0 + r;
    const uint8_t* blk = W + src_row * int64_t(row_bytes) + (u / F::kUnits) * F::kBytes;
    float w[32];
    F::unit(blk, int(u % F::kUnits), w);
#pragma unroll
    for (int j = 0; j < 32; ++j) tile[warp][lane][j] = w[j];
  }
  __syncwarp();
  const int64_t n = min(int64_t(32), total - first);  // units of this warp
  OutT* o = out + first * 32;
  for (int c = 0; c < n; ++c) store_as(o + c * 32 + lane, tile[warp][c][lane]);
}

template <DType DT>
__global__ void dequant_plain_kernel(const uint8_t* __restrict__ W, size_t row_bytes,
                                     int64_t row0, int64_t rows, int64_t K,
                                     const int32_t* __restrict__ ids, float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * K) return;
  const int64_t r = i / K, k = i % K;
  const int64_t src_row = ids ? int64_t(ids[r]) : row0 + r;
  out[i] = plain_at<DT>(W + src_row * int64_t(row_bytes), k);
}

constexpr bool is_plain(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

unsigned grid_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

}  // namespace

namespace {
struct NoOp {
  template <DType DT>
  void operator()() const {}
};
}  // namespace

bool format_supported(DType t) { return dispatch_format(t, NoOp{}); }

void matvec(DType t, const void* w, size_t row_bytes, int64_t N, int64_t K, const float* x,
            int64_t T, float* y, cudaStream_t s) {
  KILN_CHECK(T >= 1 && T <= kMaxMatvecTokens, "matvec: ", T, " tokens");
  const auto* W = static_cast<const uint8_t*>(w);
  const bool vec = reinterpret_cast<uintptr_t>(x) % 16 == 0 && K % 4 == 0;
  const unsigned grid = grid_for(N, kWarps);
  const bool ok = dispatch_format(t, [&]<DType DT>() {
    if (is_plain(DT) && K % 32 != 0) {
      if constexpr (is_plain(DT))
        launch(matvec_plain_kernel<DT>, grid, kWarps * 32, 0, s, "matvec", W, row_bytes, N, K, x,
               int(T), y);
      return;
    }
    if (T == 1)
      launch(matvec_kernel<DT, 1>, grid, kWarps * 32, 0, s, "matvec", W, row_bytes, N, K, x, 1, vec,
             y);
    else
      launch(matvec_kernel<DT, kMaxMatvecTokens>, grid, kWarps * 32, 0, s, "matvec", W, row_bytes,
             N, K, x, int(T), vec, y);
  });
  KILN_CHECK(ok, "the CUDA backend cannot compute with ", dtype_name(t), " weights");
  check_launch("matvec");
}

void dequant_rows(DType t, const void* w, size_t row_bytes, int64_t row0, int64_t rows,
                  int64_t K, const int32_t* ids, float* out, cudaStream_t s) {
  if (rows <= 0) return;
  const auto* W = static_cast<const uint8_t*>(w);
  const bool ok = dispatch_format(t, [&]<DType DT>() {
    if (is_plain(DT) && K % 32 != 0) {
      if constexpr (is_plain(DT))
        launch(dequant_plain_kernel<DT>, grid_for(rows * K, 256), 256, 0, s, "dequant_rows", W,
               row_bytes, row0, rows, K, ids, out);
      return;
    }
    const int64_t units = rows * (K / Fmt<DT>::kBlock) * Fmt<DT>::kUnits;
    launch(dequant_kernel<DT, float>, grid_for(units, kDequantThreads), kDequantThreads, 0, s,
           "dequant_rows", W, row_bytes, row0, rows, K, ids, out);
  });
  KILN_CHECK(ok, "the CUDA backend cannot decode ", dtype_name(t), " tensors");
  check_launch("dequant_rows");
}

void dequant_rows_f16(DType t, const void* w, size_t row_bytes, int64_t row0, int64_t rows,
                      int64_t K, __half* out, cudaStream_t s) {
  if (rows <= 0) return;
  const auto* W = static_cast<const uint8_t*>(w);
  bool ok = false;
  dispatch_format(t, [&]<DType DT>() {
    if constexpr (!is_plain(DT)) {
      const int64_t units = rows * (K / Fmt<DT>::kBlock) * Fmt<DT>::kUnits;
      launch(dequant_kernel<DT, __half>, grid_for(units, kDequantThreads), kDequantThreads, 0, s,
             "dequant_rows_f16", W, row_bytes, row0, rows, K, nullptr, out);
      ok = true;
    }
  });
  KILN_CHECK(ok, "dequant_rows_f16: ", dtype_name(t), " is not a block format");
}

namespace {
// Four elements a thread (16-byte loads) where n and the pointers allow.
__global__ void to_half_kernel(const float* __restrict__ x, int64_t n, __half* __restrict__ y) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2half_rn(x[i]);
}
__global__ void to_half4_kernel(const float4* __restrict__ x, int64_t n4, uint2* __restrict__ y) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n4) return;
  const float4 v = x[i];
  const __half2 a = __floats2half2_rn(v.x, v.y), b = __floats2half2_rn(v.z, v.w);
  y[i] = {*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b)};
}

__global__ void split_bf16_kernel(const float* __restrict__ x, int64_t n, int n_parts,
                                  __nv_bfloat16* __restrict__ parts) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float rest = x[i];
  for (int k = 0; k < n_parts; ++k) {
    const __nv_bfloat16 p = __float2bfloat16_rn(rest);
    parts[k * n + i] = p;
    rest -= __bfloat162float(p);  // exact in f32
  }
}
}  // namespace

void split_bf16(const float* x, int64_t n, int n_parts, __nv_bfloat16* parts, cudaStream_t s) {
  if (n <= 0) return;
  launch(split_bf16_kernel, grid_for(n, 256), 256, 0, s, "split_bf16", x, n, n_parts, parts);
}

void to_half(const float* x, int64_t n, __half* y, cudaStream_t s) {
  if (n <= 0) return;
  if (n % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(y) % 8 == 0) {
    launch(to_half4_kernel, grid_for(n / 4, 256), 256, 0, s, "to_half",
           reinterpret_cast<const float4*>(x), n / 4, reinterpret_cast<uint2*>(y));
    return;
  }
  launch(to_half_kernel, grid_for(n, 256), 256, 0, s, "to_half", x, n, y);
}

}  // namespace kiln::cuda
