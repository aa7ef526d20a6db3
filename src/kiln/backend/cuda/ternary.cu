// BitNet b1.58 on the GPU: ternary weights (bitnet.cpp's I2_S, GGML's TQ2_0)
// against int8 activations, with exactly the CPU backend's results.
//
// Each token's activations are quantized once as BitLinear does (a = 127 /
// max(max |x|, 1e-5), q = round half to even, clamped to int8). A weight
// byte holds four 2-bit codes c in {0, 1, 2} for the values c - 1; a 32-bit
// word of codes shifted and masked gives four bytes of c, __vsub4 turns them
// into -1 / 0 / +1 and dp4a sums them against four activations, so every
// integer dot is exact. The scales apply once at the end in the CPU's order:
// I2_S has one per tensor (after the packed data), TQ2_0 one f16 per 256
// values, summed block by block.
//
// Layouts of a 128-value group of 32 bytes: I2_S puts value 32 g + i in
// byte i at bits 6 - 2 g; a TQ2_0 block is two such groups with value
// 32 l + m of a group in byte m at bits 2 l, then its f16 scale (66 bytes).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kiln/backend/cuda/cuda_common.cuh"
#include "kiln/backend/cuda/formats.cuh"

namespace kiln::cuda {
namespace {

constexpr int kQuantThreads = 256;
constexpr int kTokensPerPass = 8;  // tokens whose sums a lane holds at once
constexpr int kRowWarps = 4;

__global__ void __launch_bounds__(kQuantThreads)
    ternary_quantize_kernel(const float* __restrict__ x, int64_t K, int8_t* __restrict__ q,
                            float* __restrict__ scale) {
  pdl_trigger();
  pdl_wait();
  __shared__ float part[kQuantThreads / 32];
  const int64_t t = blockIdx.x;
  const float* xr = x + t * K;
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < K; i += kQuantThreads) amax = fmaxf(amax, fabsf(xr[i]));
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = amax;
  __syncthreads();
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < kQuantThreads / 32; ++i) m = fmaxf(m, part[i]);
  const float a = __fdiv_rn(127.0f, fmaxf(m, 1e-5f));
  for (int64_t i = threadIdx.x; i < K; i += kQuantThreads)
    q[t * K + i] = int8_t(fminf(fmaxf(rintf(__fmul_rn(xr[i], a)), -128.0f), 127.0f));
  if (threadIdx.x == 0) scale[t] = a;
}

// Four values c - 1 (as signed bytes) of the codes at bit `shift` of each
// byte of w.
__device__ __forceinline__ int signs_at(uint32_t w, int shift) {
  return int(__vsub4((w >> shift) & 0x03030303u, 0x01010101u));
}

// A pass's nt token sums of one I2_S row, a part in each lane: added over
// the warp, scaled, and stored by lane 0 at y[t * N] (token t of the pass).
__device__ __forceinline__ void store_i2s_row(const int (&acc)[kTokensPerPass], int nt, int lane,
                                              float w_scale, const float* act_scale, float* y,
                                              int64_t N) {
#pragma unroll
  for (int t = 0; t < kTokensPerPass; ++t) {
    if (t >= nt) break;
    int d = acc[t];
    for (int o = 16; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
    if (lane == 0) y[t * N] = __fdiv_rn(__fmul_rn(w_scale, float(d)), act_scale[t]);
  }
}

// I2_S: a warp per row, a lane a word of codes at a time.
// Whole groups (kNarrow false): the row is K / 4 bytes at row * K / 4, each
// word four values of each of the group's four 32-value runs.
// kNarrow: rows narrower than a group or ending inside one (K a multiple of
// 32, not of 128: the small test models). The flat value index row * K + k
// still places every 32 values of a row in one group's 32 bytes at one
// shift, so a lane takes a word of those bytes (four values) at a time. A
// word may hold values of up to four rows and is read once for each: a
// path for small matrices, not for speed.
template <bool kNarrow>
__global__ void __launch_bounds__(kRowWarps * 32)
    ternary_i2s_kernel(const uint8_t* __restrict__ W, int64_t N, int64_t K,
                       const int8_t* __restrict__ q, const float* __restrict__ act_scale,
                       int64_t T, float* __restrict__ y) {
  pdl_trigger();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kRowWarps + warp;
  const float w_scale = *reinterpret_cast<const float*>(W + N * K / 4);
  pdl_wait();
  if (row >= N) return;
  const uint32_t* rw = reinterpret_cast<const uint32_t*>(W + row * (K / 4));
  const int64_t words = kNarrow ? K / 4 : K / 16;
  for (int64_t t0 = 0; t0 < T; t0 += kTokensPerPass) {
    const int nt = int(min(int64_t(kTokensPerPass), T - t0));
    int acc[kTokensPerPass] = {};
    for (int64_t wi = lane; wi < words; wi += 32) {
      if constexpr (kNarrow) {
        const int64_t k0 = (wi / 8) * 32 + (wi % 8) * 4;  // the row's value in the word's byte 0
        const int64_t f = row * K + k0 - (wi % 8) * 4;     // flat index of its 32 values' first
        const uint32_t w = u32_at(W + (f / 128) * 32 + (wi % 8) * 4);
        const int s = signs_at(w, 6 - 2 * int((f / 32) % 4));
#pragma unroll
        for (int t = 0; t < kTokensPerPass; ++t) {
          if (t >= nt) break;
          const int xq = *reinterpret_cast<const int*>(q + (t0 + t) * K + k0);
          acc[t] = __dp4a(s, xq, acc[t]);
        }
      } else {
        const uint32_t w = rw[wi];
        const int64_t k0 = (wi / 8) * 128 + (wi % 8) * 4;  // value of byte 0, group 0
#pragma unroll
        for (int g = 0; g < 4; ++g) {
          const int s = signs_at(w, 6 - 2 * g);
#pragma unroll
          for (int t = 0; t < kTokensPerPass; ++t) {
            if (t >= nt) break;
            const int xq = *reinterpret_cast<const int*>(q + (t0 + t) * K + k0 + 32 * g);
            acc[t] = __dp4a(s, xq, acc[t]);
          }
        }
      }
    }
    store_i2s_row(acc, nt, lane, w_scale, act_scale + t0, y + t0 * N + row, N);
  }
}

// TQ2_0: a warp per row, two 256-value blocks at a time (16 lanes each, a
// word of codes per lane); the first lane adds the blocks' scaled sums in
// order, as the CPU does.
constexpr int kTq2Bytes = 66;

__global__ void __launch_bounds__(kRowWarps * 32)
    ternary_tq2_kernel(const uint8_t* __restrict__ W, int64_t N, int64_t K,
                       const int8_t* __restrict__ q, const float* __restrict__ act_scale,
                       int64_t T, float* __restrict__ y) {
  pdl_trigger();
  pdl_wait();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kRowWarps + warp;
  if (row >= N) return;
  const int64_t nb = K / 256;
  const uint8_t* rb = W + row * nb * kTq2Bytes;
  const int half = lane / 16, wi = lane % 16;  // block of the pair, word of the block
  for (int64_t t0 = 0; t0 < T; t0 += kTokensPerPass) {
    const int nt = int(min(int64_t(kTokensPerPass), T - t0));
    float sum[kTokensPerPass] = {};
    for (int64_t b0 = 0; b0 < nb; b0 += 2) {
      const int64_t b = b0 + half;
      int acc[kTokensPerPass] = {};
      float d = 0.0f;
      if (b < nb) {
        const uint8_t* blk = rb + b * kTq2Bytes;
        const uint32_t w = u32_at(blk + 4 * wi);
        d = half_at(blk + 64);
        // Byte m of group j (words 8 j ..) holds values 128 j + 32 l + m.
        const int64_t k0 = b * 256 + (wi / 8) * 128 + (wi % 8) * 4;
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          const int s = signs_at(w, 2 * l);
#pragma unroll
          for (int t = 0; t < kTokensPerPass; ++t) {
            if (t >= nt) break;
            const int xq = *reinterpret_cast<const int*>(q + (t0 + t) * K + k0 + 32 * l);
            acc[t] = __dp4a(s, xq, acc[t]);
          }
        }
      }
#pragma unroll
      for (int t = 0; t < kTokensPerPass; ++t) {
        if (t >= nt) break;
        int dot = acc[t];
        for (int o = 8; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        const int dot2 = __shfl_sync(0xffffffffu, dot, 16);
        const float d2 = __shfl_sync(0xffffffffu, d, 16);
        if (lane == 0) {
          sum[t] = __fadd_rn(sum[t], __fmul_rn(d, float(dot)));
          if (b0 + 1 < nb) sum[t] = __fadd_rn(sum[t], __fmul_rn(d2, float(dot2)));
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kTokensPerPass; ++t) {
      if (t >= nt) break;
      if (lane == 0) y[(t0 + t) * N + row] = __fdiv_rn(sum[t], act_scale[t0 + t]);
    }
  }
}

__global__ void relu2_mul_kernel(const float* __restrict__ gate, const float* __restrict__ up,
                                 int64_t n, float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float r = fmaxf(gate[i], 0.0f);
  out[i] = __fmul_rn(__fmul_rn(r, r), up[i]);
}

unsigned grid_of(int64_t n, int per) { return unsigned((n + per - 1) / per); }

}  // namespace

bool ternary_supported(DType t, int64_t K) {
  return (t == DType::I2_S && K % 32 == 0) || (t == DType::TQ2_0 && K % 256 == 0);
}

void ternary_matmul(DType t, const void* w, int64_t N, int64_t K, const float* x, int64_t T,
                    int8_t* q, float* act_scale, float* y, cudaStream_t s) {
  KILN_CHECK(ternary_supported(t, K), "the CUDA backend's ternary product takes I2_S rows of ",
             "whole 32-value runs and TQ2_0 rows of whole blocks, not ", dtype_name(t),
             " rows of ", K);
  if (T <= 0 || N <= 0) return;
  launch(ternary_quantize_kernel, unsigned(T), kQuantThreads, 0, s, "ternary activations", x, K,
         q, act_scale);
  const auto* W = static_cast<const uint8_t*>(w);
  if (t == DType::I2_S && K % 128 != 0)
    launch(ternary_i2s_kernel<true>, grid_of(N, kRowWarps), kRowWarps * 32, 0, s,
           "ternary_matmul", W, N, K, static_cast<const int8_t*>(q),
           static_cast<const float*>(act_scale), T, y);
  else if (t == DType::I2_S)
    launch(ternary_i2s_kernel<false>, grid_of(N, kRowWarps), kRowWarps * 32, 0, s, "ternary_matmul", W,
           N, K, static_cast<const int8_t*>(q), static_cast<const float*>(act_scale), T, y);
  else
    launch(ternary_tq2_kernel, grid_of(N, kRowWarps), kRowWarps * 32, 0, s, "ternary_matmul", W,
           N, K, static_cast<const int8_t*>(q), static_cast<const float*>(act_scale), T, y);
}

void relu2_mul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t s) {
  if (n <= 0) return;
  launch(relu2_mul_kernel, grid_of(n, 256), 256, 0, s, "relu2_mul", gate, up, n, out);
}

}  // namespace kiln::cuda
