// Decode-path matrix-vector products: one launch for one to four weights
// that share an input (q/k/v, gate/up), with the op in front folded in
// (rmsnorm, or silu(gate) * up) and a residual add in the epilogue. Inputs
// are f32 for plain weights (F32/F16/BF16, so f32/bf16 models keep full f32
// products) and int8 per 32-element block with an f32 scale for the block
// formats, which take integer dot products (dp4a), as the CPU backend and
// llama.cpp do. Each lane takes a pair of 32-element units (64 consecutive
// weights of a row, or Q6_K's units j and j + 2 of a 128-element half;
// pair_dot), so that the K-quants decode the bytes two units share once,
// and the int8 input is laid out in planes (xq_at) that the lanes read
// without bank conflicts.
//
// Two implementations:
// - Hopper (compute capability 9.0, the default there): the product's
//   warps stream their weights through the copy engine into shared memory
//   (mv_bulk_kernel; see the section's comment). A one-token product's
//   blocks (one an SM) make the int8 input themselves from the row in L2;
//   others take it from a small kernel that prepares it once
//   (prepare_input_kernel), with the same arithmetic.
// - Elsewhere, or with KILN_CUDA_MV=stage: every block builds the input in
//   shared memory itself and its warps stage weight rows through registers
//   with 16-byte loads (mv_q8_kernel, mv_plain_kernel); the folded op's own
//   output (the normed row, silu(gate) * up) is written by the last block
//   to finish (an atomic ticket), since in-place ops (silu_mul into gate)
//   must not overwrite an input other blocks are still reading.
//
// A token's sums are made in the same order whatever T is (each lane keeps
// one accumulator per token over the same units, and the warp reduces them
// alike), so a token gets the same bits alone or among up to 8 (staged) or
// 32 (bulk-copy) others: a serving step's sequences get what they get when
// decoded alone. Backend::set_batch_invariant extends that to any T
// (cuda_backend.cu: larger products in chunks through these kernels).
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include "kiln/backend/cuda/attention_combine.cuh"
#include "kiln/backend/cuda/cuda_common.cuh"
#include "kiln/backend/cuda/formats.cuh"
#include "kiln/quant/k_scales.h"

namespace kiln::cuda {
namespace {

constexpr int kW = 8;  // warps per block
constexpr int kThreads = kW * 32;
constexpr int kStage = 2048;     // bytes of blocks staged per warp per step
constexpr int kStageSlack = 48;  // aligned-down head (< 16) + one word read past the end
constexpr int kMaxT = kMaxMatvecTokens;  // the register-staged kernels' tokens
constexpr int kMaxBulkT = kMaxBulkMatvecTokens;
constexpr size_t kMaxSmem = 160 * 1024;
// The bulk-copy kernels may take more (32 tokens' int8 input of a 3072-wide
// product is 132 KB beside the 66 KB of weight buffers): under the 227 KB a
// Hopper block can opt into, less the kernel's static barriers.
constexpr size_t kMaxBulkSmem = 220 * 1024;

// The int8 input of a product: T * K values, then an f32 scale per
// 32-value block, then per block its sums (XSum): those of its two 16-value
// halves as two int16 in one word (Q6_K scales each half), and the whole
// block's as a float (formats with an offset or a minimum subtract minimum
// x sum). Made once with the input instead of eight dp4a per weight unit;
// the float saves each unit's unpacking and conversion. The sums start and
// end 16-byte aligned: a pair's two blocks are one 16-byte load, and the
// stages after them stay aligned.
struct XSum {
  int halves;  // the low half's sum in the low 16 bits, the high half's above
  float sum;   // the block's sum, exact (at most 32 x 127)
};
__host__ __device__ constexpr int64_t xsum_offset(int64_t K, int64_t T) {
  return (T * K + T * (K / 32) * 4 + 15) / 16 * 16;
}
__host__ __device__ constexpr int64_t xq_bytes(int64_t K, int64_t T) {
  return xsum_offset(K, T) + T * (K / 32) * int64_t(sizeof(XSum));
}

// A pair's two XSum are one 16-byte load: the sums start 16-byte aligned,
// and every token's K / 32 of them are whole pairs (K % 64 == 0); the
// weight buffers after the input stay aligned.
static_assert(sizeof(XSum) == 8);
static_assert(xsum_offset(64, 1) % 16 == 0 && xsum_offset(2560, 3) % 16 == 0);
static_assert(xq_bytes(64, 1) % 16 == 0 && xq_bytes(192, 7) % 16 == 0);

__device__ __forceinline__ XSum block_sums(int lo, int hi) {
  return {int((uint32_t(lo) & 0xFFFFu) | (uint32_t(hi) << 16)), float(lo + hi)};
}

// Bytes of a bulk-copy product's prepared input: f32 for plain weights,
// else the int8 layout above.
__host__ __device__ constexpr int64_t input_bytes(bool plain, int64_t K, int64_t T) {
  return plain ? T * K * int64_t(sizeof(float)) : xq_bytes(K, T);
}

struct Args {
  const uint8_t* w[kMaxMatvecSegs];
  float* y[kMaxMatvecSegs];
  int64_t n[kMaxMatvecSegs];
  int nseg;
  int64_t total;
  size_t row_bytes;
  // A last weight of another block format (v in Q6_K after q/k in Q4_K, as
  // Q4_K_M files have it): its row bytes and rows a piece; R2 == 0: none.
  size_t row_bytes2;
  int R2;
  int64_t K;
  int T;
  int pro;  // MatvecPrologue
  int attn_hd, attn_splits;  // MatvecPrologue::AttnCombine: x holds attention's split partials
  const float* x;
  const float* x2;
  float eps;
  float* mat;
  float* add_to;
  unsigned* counter;
  // Bulk-copy path: rows per work item (R), pieces per row (P, > 1 only
  // when R == 1), blocks per piece and the number of work items.
  int R, P;
  int64_t piece_blocks, groups;
  // The first work item of each weight (plan_pieces; past the last weight:
  // groups), so that a piece is found without dividing.
  int64_t group0[kMaxMatvecSegs];
  uint8_t* xprep;  // the prepared input (prepare_input_kernel), in device memory
  int buf_bytes;   // weight bytes a buffer holds (the largest piece, rounded up to 16)
  int nbuf;        // buffers (pieces in flight) per warp
  int x_threads;   // the block's threads load the prepared input (else the copy engine)
  int self_prep;   // every block prepares the input itself (no preparation kernel)
  // ... in one pass where it may: one token, the rmsnorm prologue or none,
  // x and x2 16-byte aligned (see mv_bulk_kernel)
  int one_pass;
  int early;       // pieces a warp asks for before the wait (at most nbuf)
  int flat;        // one token's rows of a piece as one sequence of pairs (plan_pieces)
  int aligned;     // pieces found 16-byte aligned skip the pairs' alignment tests (aligned_blocks)
};

__device__ __forceinline__ uint4 load_stream(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// The prologue's value of input element (t, k); inv is token t's 1/rms.
__device__ __forceinline__ float pro_value(const Args& a, int t, int64_t k, float inv) {
  const int64_t i = int64_t(t) * a.K + k;
  if (a.pro == int(MatvecPrologue::Rmsnorm)) {
    const float v = __fmul_rn(a.x[i], inv);
    return a.x2 ? __fmul_rn(v, a.x2[k]) : v;
  }
  if (a.pro == int(MatvecPrologue::SiluMul)) {
    const float g = a.x[i];
    return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), a.x2[i]);
  }
  return a.x[i];
}

// 1/rms of each token's row for the rmsnorm prologue, with exactly the
// standalone rmsnorm kernel's order of operations (same block width), so the
// row it materializes is bit-identical.
__device__ void row_inv_rms(const Args& a, float* inv) {
  __shared__ float part[kW];
  for (int t = 0; t < a.T; ++t) {
    const float r = block_inv_rms<kThreads>(a.x + int64_t(t) * a.K, a.K, a.eps, part);
    if (threadIdx.x == 0) inv[t] = r;
  }
  __syncthreads();
}

// The last block to finish writes the prologue's output to a.mat.
__device__ void materialize(const Args& a, const float* inv) {
  if (!a.mat) return;
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(a.counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  for (int t = 0; t < a.T; ++t)
    for (int64_t k = threadIdx.x; k < a.K; k += kThreads)
      a.mat[int64_t(t) * a.K + k] = pro_value(a, t, k, inv[t]);
  if (threadIdx.x == 0) *a.counter = 0;
}

__device__ __forceinline__ void find_row(const Args& a, int64_t row, int* seg, int64_t* local) {
  int s = 0;
  int64_t l = row;
#pragma unroll
  for (int i = 0; i < kMaxMatvecSegs - 1; ++i)
    if (s < a.nseg - 1 && l >= a.n[s]) l -= a.n[s], ++s;
  *seg = s;
  *local = l;
}

__device__ __forceinline__ void store_row(const Args& a, int seg, int64_t local, int t, float s) {
  float* y = seg == 0 ? a.y[0] : seg == 1 ? a.y[1] : seg == 2 ? a.y[2] : a.y[3];
  const int64_t n = seg == 0 ? a.n[0] : seg == 1 ? a.n[1] : seg == 2 ? a.n[2] : a.n[3];
  y[int64_t(t) * n + local] = s;
  if (a.add_to) {
    float* r = a.add_to + int64_t(t) * n + local;
    *r = *r + s;
  }
}

__device__ __forceinline__ const uint8_t* seg_w(const Args& a, int seg) {
  return seg == 0 ? a.w[0] : seg == 1 ? a.w[1] : seg == 2 ? a.w[2] : a.w[3];
}

// ---------------------------------------------------------------- int8 path

// Where input element (t, k) of an int8 product's input sits. Each token's
// K values are kept in four planes: plane c holds elements 16c .. 16c + 15
// of every 64-element group, so a lane taking a group reads its four
// 16-byte pieces from four planes, and the lanes of a warp, taking
// consecutive groups, read consecutive 16 bytes of a plane (no bank
// conflicts, no per-lane reordering). K % 64 == 0.
__host__ __device__ __forceinline__ int64_t xq_at(int64_t t, int64_t k, int64_t K) {
  return t * K + ((k >> 4) & 3) * (K >> 2) + ((k >> 6) << 4) + (k & 15);
}

// A lane's work item: a pair of 32-element units, 64 consecutive elements
// of a row, as packed int8 values v (element 4i + j of the pair in byte j
// of v[i]) with what each unit's scale needs. Taking two units at once lets
// the K-quants read their shared bytes (the 32 bytes of nibbles whose low
// and high halves are the two units, the scales, d and dmin) once.
struct Pair {
  int v[16];
  float d[2], m[2];  // per unit: scale, and minimum (K-quants)
  int sc[4];         // Q6_K: the four 16-element scales
};

// Per format: pair<kAligned>(row, p, w) decodes pair p of a row whose first
// block is at row (kAligned: row is 16-byte aligned, for formats whose
// blocks are a multiple of 16 bytes); value(w, h, i, s) is unit h's product
// with its int8 activations before their block scale, from the integer dot
// product i over the unit and the activations' sums s (XSum). Q6_K, whose
// scales are per 16 elements, has kHalves and takes the two halves' dot
// products i0, i1 instead: value(w, h, i0, i1, s). Integers are combined
// exactly before the one or two float roundings (a float holds every
// integer here exactly), so the value does not depend on how it was summed.
__device__ __forceinline__ int half_lo(int xs) { return int(int16_t(xs & 0xFFFF)); }

// N bytes (N % 4 == 0) of a staged piece in shared memory, at any
// alignment. The words around them are funnel-shifted without a branch (a
// shift of 0 keeps the low word), so lanes whose units sit at different
// alignments (Q8_0's 34-byte blocks, Q6_K's 210) do not diverge; reads one
// word past the end, which the buffers' slack covers. kUniform: the format's
// blocks are a multiple of 16 bytes (Q4_K, Q5_K), so every lane of a piece
// has the same alignment and a 16-byte aligned unit takes vector loads.
// kAligned: p is known to be 16-byte aligned (the caller checked its piece
// once), so no lane tests it. Only pointer arithmetic on p, never a round
// trip through an integer, so that the compiler keeps these shared-memory
// loads (a generic load costs an address-space check and 64-bit address
// arithmetic per word).
template <int N, bool kUniform, bool kAligned = false>
__device__ __forceinline__ void smem_words(const uint8_t* p, uint32_t (&out)[N / 4]) {
  const int mis = kAligned ? 0 : int(uint32_t(__cvta_generic_to_shared(p)) & 15);
  if constexpr (kUniform && N % 16 == 0) {
    if (kAligned || mis == 0) {
      const uint4* v = reinterpret_cast<const uint4*>(p);
#pragma unroll
      for (int i = 0; i < N / 16; ++i) {
        const uint4 q = v[i];
        out[4 * i] = q.x, out[4 * i + 1] = q.y, out[4 * i + 2] = q.z, out[4 * i + 3] = q.w;
      }
      return;
    }
  }
  const uint32_t* w = reinterpret_cast<const uint32_t*>(p - (mis & 3));
  const uint32_t sh = uint32_t(mis & 3) * 8;
  funnel_words<N>(w, sh, out);
}

template <DType DT>
struct Dp4a {
  static constexpr bool kHas = false;
};

template <>
struct Dp4a<DType::Q8_0> {
  static constexpr bool kHas = true, kHalves = false, kSpread = false;
  template <bool kAligned>
  __device__ static void pair(const uint8_t* row, int p, Pair& w) {
    const uint8_t* b = row + 68 * p;
    w.d[0] = half_at(b);
    w.d[1] = half_at(b + 34);
    smem_words<32, false>(b + 2, reinterpret_cast<uint32_t(&)[8]>(w.v[0]));
    smem_words<32, false>(b + 36, reinterpret_cast<uint32_t(&)[8]>(w.v[8]));
  }
  __device__ static float value(const Pair& w, int h, int i, XSum) {
    return __fmul_rn(w.d[h], float(i));
  }
};
template <>
struct Dp4a<DType::Q4_0> {
  static constexpr bool kHas = true, kHalves = false, kSpread = false;
  template <bool kAligned>
  __device__ static void pair(const uint8_t* row, int p, Pair& w) {
    const uint8_t* b = row + 36 * p;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      w.d[h] = half_at(b + 18 * h);
      uint32_t q[4];
      smem_words<16, false>(b + 18 * h + 2, q);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        w.v[8 * h + i] = int(q[i] & 0x0F0F0F0Fu);
        w.v[8 * h + 4 + i] = int(q[i] & 0xF0F0F0F0u);  // see high_nibbles_in_place
      }
    }
  }
  __device__ static float value(const Pair& w, int h, int i, XSum s) {
    // (q - 8) . x: both terms and their difference are integers a float
    // holds exactly, so the one fma rounds nothing.
    return __fmul_rn(w.d[h], __fmaf_rn(-8.0f, s.sum, float(i)));
  }
};

template <DType DT>
struct Dp4aK {  // Q4_K and Q5_K: d * sc * (q . x) - dmin * m * sum(x) per unit
  static constexpr bool kHas = true, kHalves = false, kSpread = false;
  template <bool kAligned>
  __device__ static void pair(const uint8_t* row, int p, Pair& w) {
    using F = Fmt<DT>;
    const uint8_t* b = row + (p >> 2) * F::kBytes;
    const int j = p & 3;
    // d, dmin and the 12 scale bytes: the block's first 16 bytes, one
    // vector load where the piece is 16-byte aligned (Q4_K / Q5_K blocks
    // are a multiple of 16 bytes, so then every block is).
    uint32_t head[4];
    smem_words<16, true, kAligned>(b, head);
    const float d = __half2float(__ushort_as_half(uint16_t(head[0] & 0xFFFFu)));
    const float dmin = __half2float(__ushort_as_half(uint16_t(head[0] >> 16)));
    // The pair's two scales and minimums as the bytes of one word, without
    // branches: neighbouring lanes take different pairs of a block (their
    // if / else on j < 2 diverged every pair).
    const uint32_t sm = quant::k4_scale_min_pair(head + 1, j);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      w.d[h] = __fmul_rn(d, float((sm >> (8 * h)) & 0xFFu));
      w.m[h] = __fmul_rn(dmin, float((sm >> (16 + 8 * h)) & 0xFFu));
    }
    uint32_t q[8];
    constexpr int kQs = DT == DType::Q5_K ? 48 : 16;
    smem_words<32, true, kAligned>(b + kQs + 32 * j, q);
    if constexpr (DT == DType::Q5_K) {
      uint32_t qh[8];
      smem_words<32, true, kAligned>(b + 16, qh);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        w.v[i] = int((q[i] & 0x0F0F0F0Fu) | (((qh[i] >> (2 * j)) & 0x01010101u) << 4));
        w.v[8 + i] =
            int(((q[i] >> 4) & 0x0F0F0F0Fu) | (((qh[i] >> (2 * j + 1)) & 0x01010101u) << 4));
      }
    } else {
      // The second unit's nibbles stay in the high halves of their bytes
      // (16 times their value, unsigned): see high_nibbles_in_place.
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        w.v[i] = int(q[i] & 0x0F0F0F0Fu);
        w.v[8 + i] = int(q[i] & 0xF0F0F0F0u);
      }
    }
  }
  __device__ static float value(const Pair& w, int h, int i, XSum s) {
    return __fmaf_rn(w.d[h], float(i), -__fmul_rn(w.m[h], s.sum));
  }
};
template <>
struct Dp4a<DType::Q4_K> : Dp4aK<DType::Q4_K> {};
template <>
struct Dp4a<DType::Q5_K> : Dp4aK<DType::Q5_K> {};

// Q6_K: d * sum over halves of sc * ((q - 32) . x). A pair is units j and
// j + 2 of a 128-element half (kSpread; j = p & 1), not two neighbours:
// those two take the low and the high nibbles of the same 32 bytes of ql
// and two bits each of the same 32 bytes of qh, so a pair reads 64 bytes
// of weights instead of 96 (each word assembled from two, 210-byte blocks
// sitting at 2-byte alignment). The Q6_K products are bound by their
// instructions more than their bytes. pair_dot takes the second unit's
// input from the next 64-element group.
template <>
struct Dp4a<DType::Q6_K> {
  static constexpr bool kHas = true, kHalves = true, kSpread = true;
  template <bool kAligned>
  __device__ static void pair(const uint8_t* row, int p, Pair& w) {
    const uint8_t* b = row + (p >> 2) * 210;
    const int half = (p & 3) >> 1, j = p & 1;
    w.d[0] = half_at(b + 208);
    uint32_t ql[8], qh[8], sc[2];
    smem_words<32, false>(b + 64 * half + 32 * j, ql);
    smem_words<32, false>(b + 128 + 32 * half, qh);
    smem_words<8, false>(b + 192 + 8 * half, sc);  // the half's eight 16-element scales
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      w.v[i] = int((ql[i] & 0x0F0F0F0Fu) | (((qh[i] >> (2 * j)) & 0x03030303u) << 4));
      w.v[8 + i] = int(((ql[i] >> 4) & 0x0F0F0F0Fu) | (((qh[i] >> (2 * j + 4)) & 0x03030303u) << 4));
    }
    // Unit j's scales are bytes 2j, 2j + 1 of the half's eight; unit j + 2's
    // bytes 2j + 4, 2j + 5.
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      w.sc[2 * u] = int(int8_t(sc[u] >> (16 * j)));
      w.sc[2 * u + 1] = int(int8_t(sc[u] >> (16 * j + 8)));
    }
  }
  __device__ static float value(const Pair& w, int h, int i0, int i1, XSum s) {
    const int x0 = half_lo(s.halves), x1 = s.halves >> 16;
    return __fmul_rn(w.d[0], float(w.sc[2 * h] * (i0 - 32 * x0) + w.sc[2 * h + 1] * (i1 - 32 * x1)));
  }
};

// Formats whose pair() leaves some 4-bit values in the high nibbles of
// their bytes (a shift a word fewer, 8 a pair): Q4_K the second unit's,
// Q4_0 each unit's second 16. Their products with the input are taken
// unsigned x signed (dp4a.u32.s32) and are exactly 16 times the values',
// so an arithmetic shift by 4 gives the same integers as before, and the
// same bits after. Whether dot product i (0: the unit's first 16 values,
// 1: its second) of unit h is one of them:
template <DType DT>
__host__ __device__ constexpr bool high_nibbles_in_place(int h, int i) {
  return (DT == DType::Q4_K && h == 1) || (DT == DType::Q4_0 && i == 1);
}

// Four int8 products summed onto c, the first operand's bytes unsigned.
__device__ __forceinline__ int dp4a_us(int a, int b, int c) {
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// One dp4a; kUnsigned: the weight bytes are unsigned (high nibbles).
template <bool kUnsigned>
__device__ __forceinline__ int dp4a_step(int v, int x, int s) {
  if constexpr (kUnsigned) return dp4a_us(v, x, s);
  return __dp4a(v, x, s);
}

// The weight words v[0 .. 4N) . N sixteen-input groups x, as one chain of
// dp4a; kHigh: the weights sit in the high nibbles (16 times their value,
// unsigned), and the sum is divided back exactly.
template <bool kHigh, int N>
__device__ __forceinline__ int dot_chain(const int* v, const int4 (&x)[N]) {
  int s = 0;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    s = dp4a_step<kHigh>(v[4 * i], x[i].x, s);
    s = dp4a_step<kHigh>(v[4 * i + 1], x[i].y, s);
    s = dp4a_step<kHigh>(v[4 * i + 2], x[i].z, s);
    s = dp4a_step<kHigh>(v[4 * i + 3], x[i].w, s);
  }
  return kHigh ? s >> 4 : s;
}

// 16 weights (four words) . 16 int8 inputs.
template <bool kHigh>
__device__ __forceinline__ int dot16(const int* v, const int4& x) {
  const int4 xs[1] = {x};
  return dot_chain<kHigh, 1>(v, xs);
}

// A unit's 32 weights (v: its eight words) . its two 16-input halves a, c
// as one integer. Halves stored alike are one chain of eight dp4a (one
// shift back for high nibbles); Q4_0's, stored unlike, are two sums added.
// The same integer either way. (Two chains of four, added, then one
// shift measured the same a 4B step on an H100: -0.2% Q4_K_M, +0.2% Q8_0.)
template <bool kHigh0, bool kHigh1>
__device__ __forceinline__ int dot32(const int* v, const int4& a, const int4& c) {
  if constexpr (kHigh0 != kHigh1) {
    return dot16<kHigh0>(v, a) + dot16<kHigh1>(v + 4, c);
  } else {
    const int4 xs[2] = {a, c};
    return dot_chain<kHigh0, 2>(v, xs);
  }
}

// acc[t] += pair p of a row (first block at row) . the input at element k,
// for t < T. k and K are 32-bit (a product's input, T * K int8 values, fits
// in shared memory), which keeps the index arithmetic 32-bit. kAligned:
// row is 16-byte aligned (see Dp4a's pair).
template <DType DT, int MAXT, bool kAligned = false>
__device__ __forceinline__ void pair_dot(const uint8_t* row, int p, const int8_t* xq,
                                         const float* xd, const XSum* xsum, int k, int K, int T,
                                         float (&acc)[MAXT]) {
  const int plane = K >> 2;
  if constexpr (Dp4a<DT>::kHas) {
    using D = Dp4a<DT>;
    Pair w;
    D::template pair<kAligned>(row, p, w);
#pragma unroll
    for (int t = 0; t < MAXT; ++t) {
      if (t >= T) break;
      // Unit h's two 16-byte input planes are xg + h * hstep and that +
      // plane; its block scale xdv[h], its sums xs[h].
      const int8_t* xg;
      int hstep;
      float xdv[2];
      XSum xs[2];
      if constexpr (D::kSpread) {
        // Units j and j + 2 of the 128-element half at kh: planes 2j and
        // 2j + 1 of the half's two 64-element groups, its blocks j, j + 2.
        const int j = (k >> 6) & 1, kh = k - 64 * j;
        xg = xq + t * K + ((kh >> 6) << 4) + 2 * j * plane;
        hstep = 16;
        const int blk = ((t * K + kh) >> 5) + j;
        xdv[0] = xd[blk], xdv[1] = xd[blk + 2];
        const int2 s0 = *reinterpret_cast<const int2*>(xsum + blk);
        const int2 s1 = *reinterpret_cast<const int2*>(xsum + blk + 2);
        xs[0] = {s0.x, __int_as_float(s0.y)}, xs[1] = {s1.x, __int_as_float(s1.y)};
      } else {
        xg = xq + t * K + ((k >> 6) << 4);  // plane 0 of this group
        hstep = 2 * plane;
        const int blk = (t * K + k) >> 5;  // the pair's first block in xd, xsum
        const float2 xds = *reinterpret_cast<const float2*>(xd + blk);
        const int4 both = *reinterpret_cast<const int4*>(xsum + blk);  // blk is even
        xdv[0] = xds.x, xdv[1] = xds.y;
        xs[0] = {both.x, __int_as_float(both.y)}, xs[1] = {both.z, __int_as_float(both.w)};
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int4 a = *reinterpret_cast<const int4*>(xg + h * hstep);
        const int4 c = *reinterpret_cast<const int4*>(xg + h * hstep + plane);
        // (h is a constant once the loop unrolls: each call folds to one.)
        float s;
        if constexpr (D::kHalves) {
          const int i0 = h == 0 ? dot16<high_nibbles_in_place<DT>(0, 0)>(w.v, a)
                                : dot16<high_nibbles_in_place<DT>(1, 0)>(w.v + 8, a);
          const int i1 = h == 0 ? dot16<high_nibbles_in_place<DT>(0, 1)>(w.v + 4, c)
                                : dot16<high_nibbles_in_place<DT>(1, 1)>(w.v + 12, c);
          s = D::value(w, h, i0, i1, xs[h]);
        } else {
          const int i = h == 0 ? dot32<high_nibbles_in_place<DT>(0, 0),
                                       high_nibbles_in_place<DT>(0, 1)>(w.v, a, c)
                               : dot32<high_nibbles_in_place<DT>(1, 0),
                                       high_nibbles_in_place<DT>(1, 1)>(w.v + 8, a, c);
          s = D::value(w, h, i, xs[h]);
        }
        acc[t] = __fmaf_rn(xdv[h], s, acc[t]);
      }
    }
  } else {
    using F = Fmt<DT>;
#pragma unroll 1
    for (int h = 0; h < 2; ++h) {
      const int u = 2 * p + h;  // unit of the row
      float w[32];
      F::unit(row + (u / F::kUnits) * F::kBytes, u % F::kUnits, w);
#pragma unroll
      for (int t = 0; t < MAXT; ++t) {
        if (t >= T) break;
        const int8_t* xg = xq + t * K + ((k >> 6) << 4);
        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int4 a = *reinterpret_cast<const int4*>(xg + (2 * h + c) * plane);
          const int xv[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
          for (int i = 0; i < 16; ++i)
            s = __fmaf_rn(w[16 * c + i], float(int8_t(xv[i / 4] >> (8 * (i % 4)))), s);
        }
        acc[t] = __fmaf_rn(xd[((t * K + k) >> 5) + h], s, acc[t]);
      }
    }
  }
}

// Pairs in n blocks of a row (n even for 32-element blocks).
template <DType DT>
__host__ __device__ constexpr int pairs_in(int64_t n) {
  return int(n * Fmt<DT>::kUnits / 2);
}

// Blocks per piece for 32-element formats stay even, so no pair straddles two.
template <DType DT>
__host__ __device__ constexpr int64_t even_blocks(int64_t n) {
  return Fmt<DT>::kUnits == 1 ? n & ~int64_t(1) : n;
}

template <DType DT, int MAXT>
__global__ void __launch_bounds__(kThreads, 3)
    mv_q8_kernel(const __grid_constant__ Args a) {
  using F = Fmt<DT>;
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float inv[kMaxT];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t K = a.K;
  const int T = a.T;
  int8_t* xq = reinterpret_cast<int8_t*>(smem);
  float* xd = reinterpret_cast<float*>(smem + T * K);
  XSum* xsum = reinterpret_cast<XSum*>(smem + xsum_offset(K, T));
  uint8_t* stage = smem + xq_bytes(K, T) + warp * (kStage + kStageSlack);

  // The first piece of every warp's weights is requested before anything
  // else (weights are never written, so this may run while the kernel
  // before is still finishing), then the input is awaited and quantized.
  pdl_trigger();
  const int64_t nblocks = K / F::kBlock;
  constexpr int kPerStage = int(even_blocks<DT>(kStage / F::kBytes));
  constexpr int kNV = kStage / 16 / 32 + 1;
  const int64_t stride = int64_t(gridDim.x) * kW;
  int64_t row = int64_t(blockIdx.x) * kW + warp, b0 = 0;
  uint4 v[kNV];
  int head = 0, nb = 0;
  auto issue = [&](int64_t r, int64_t first) {
    int seg;
    int64_t local;
    find_row(a, r, &seg, &local);
    const uint8_t* sg = seg_w(a, seg) + local * int64_t(a.row_bytes) + first * F::kBytes;
    nb = int(min(int64_t(kPerStage), nblocks - first));
    const uintptr_t aligned = reinterpret_cast<uintptr_t>(sg) & ~uintptr_t(15);
    head = int(reinterpret_cast<uintptr_t>(sg) - aligned);
    const int nvec = (head + nb * F::kBytes + 15) / 16;
    const uint4* src = reinterpret_cast<const uint4*>(aligned);
#pragma unroll
    for (int i = 0; i < kNV; ++i) {
      const int idx = lane + 32 * i;
      if (idx < nvec) v[i] = load_stream(src + idx);
    }
  };
  if (row < a.total) issue(row, 0);
  pdl_wait();

  if (a.pro == int(MatvecPrologue::Rmsnorm)) row_inv_rms(a, inv);
  // Quantize the input: each warp takes 32-element blocks in turn.
  for (int t = 0; t < T; ++t)
    for (int64_t blk = warp; blk < K / 32; blk += kW) {
      const float v = pro_value(a, t, blk * 32 + lane, inv[t]);
      float amax = fabsf(v);
      for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const int q = int(roundf(v * id));
      xq[xq_at(t, blk * 32 + lane, K)] = int8_t(q);
      int hs = q;  // the sum of this lane's 16-value half
      for (int o = 8; o > 0; o >>= 1) hs += __shfl_xor_sync(0xffffffffu, hs, o);
      const int hi = __shfl_sync(0xffffffffu, hs, 16);
      if (lane == 0) {
        xd[t * (K / 32) + blk] = d;
        xsum[t * (K / 32) + blk] = block_sums(hs, hi);
      }
    }
  __syncthreads();

  // Software-pipelined over (row, stage) pieces: the next piece's loads are
  // in flight while the current one is decoded from shared memory.
  float acc[MAXT];
#pragma unroll
  for (int t = 0; t < MAXT; ++t) acc[t] = 0.0f;
  while (row < a.total) {
    {
      const int nvec = (head + nb * F::kBytes + 15) / 16;
      uint4* dst = reinterpret_cast<uint4*>(stage);
#pragma unroll
      for (int i = 0; i < kNV; ++i) {
        const int idx = lane + 32 * i;
        if (idx < nvec) dst[idx] = v[i];
      }
    }
    __syncwarp();
    const int cur_head = head, cur_nb = nb;
    const int64_t cur_row = row, cur_b0 = b0;
    b0 += kPerStage;
    if (b0 >= nblocks) b0 = 0, row += stride;
    if (row < a.total) issue(row, b0);
    const uint8_t* sb = stage + cur_head;
    const int k0 = int(cur_b0 * F::kBlock);
    for (int u = lane; u < pairs_in<DT>(cur_nb); u += 32)
      pair_dot<DT, MAXT>(sb, u, xq, xd, xsum, k0 + 64 * u, int(K), T, acc);
    __syncwarp();
    if (b0 == 0) {  // cur_row is complete
      int seg;
      int64_t local;
      find_row(a, cur_row, &seg, &local);
      finish_row(a, seg, local, lane, acc);
    }
  }
  materialize(a, inv);
}

// ----------------------------------------------------------------- f32 path

template <DType DT>
__device__ __forceinline__ void unpack(const uint4& v, float* w) {
  if constexpr (DT == DType::F32) {
    w[0] = __uint_as_float(v.x), w[1] = __uint_as_float(v.y);
    w[2] = __uint_as_float(v.z), w[3] = __uint_as_float(v.w);
  } else {
    const uint32_t p[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (DT == DType::BF16) {
        w[2 * i] = __uint_as_float(p[i] << 16);
        w[2 * i + 1] = __uint_as_float(p[i] & 0xFFFF0000u);
      } else {
        w[2 * i] = __half2float(__ushort_as_half(uint16_t(p[i] & 0xFFFF)));
        w[2 * i + 1] = __half2float(__ushort_as_half(uint16_t(p[i] >> 16)));
      }
    }
  }
}

// acc[t] += the 16 weight bytes v (E elements) . x[t * K ..] for t < T;
// x points at the input element of v's first weight.
template <DType DT, int MAXT>
__device__ __forceinline__ void plain_dot16(const uint4& v, const float* x, int64_t K, int T,
                                            float (&acc)[MAXT]) {
  constexpr int E = DT == DType::F32 ? 4 : 8;  // elements per 16 bytes
  float w[E];
  unpack<DT>(v, w);
#pragma unroll
  for (int t = 0; t < MAXT; ++t) {
    if (t >= T) break;
    const float4* xp = reinterpret_cast<const float4*>(x + t * K);
    float s = acc[t];
#pragma unroll
    for (int e = 0; e < E / 4; ++e) {
      const float4 xv = xp[e];
      s = fmaf(w[4 * e], xv.x, s);
      s = fmaf(w[4 * e + 1], xv.y, s);
      s = fmaf(w[4 * e + 2], xv.z, s);
      s = fmaf(w[4 * e + 3], xv.w, s);
    }
    acc[t] = s;
  }
}

// Row `row` of weight `seg` is done: each token's sum over the warp,
// stored (and added where asked), acc cleared for the next row.
//
// One token: the butterfly, lane i adding lane i ^ o for o = 16, 8, .., 1.
// Several: the same additions, folded (a transposing reduction): at offset
// o a lane keeps half of its tokens (the upper half where bit o of its
// lane is set) and adds its partner's values of them, sending its own of
// the other half, so that 32 tokens take 31 shuffles instead of 160 and no
// token waits for another. Every sum is its own value plus its partner's at
// the same offsets in the same order as the butterfly (and a + b == b + a),
// so a token gets the bits it gets alone. Afterwards lane l holds token
// l >> (5 - log2 MAXT) (MAXT a power of two).
template <int MAXT>
__device__ __forceinline__ void finish_row(const Args& a, int seg, int64_t row, int lane,
                                           float (&acc)[MAXT]) {
  static_assert(MAXT >= 1 && MAXT <= 32 && (MAXT & (MAXT - 1)) == 0, "tokens per kernel");
#pragma unroll
  for (int level = 0; level < 5; ++level) {
    const int o = 16 >> level;
    const int n = MAXT >> level;  // values this lane holds before this level
    if (n > 1) {
      const bool upper = (lane & o) != 0;
      // A trip count known before the levels are unrolled (n / 2 is not),
      // so that this loop unrolls too: a loop left rolled indexes acc at
      // run time, which puts all of it in local memory (32 tokens: 128
      // bytes of stack, stored and reloaded around every row).
#pragma unroll
      for (int j = 0; j < MAXT / 2; ++j) {
        if (j >= n / 2) break;
        const float keep = upper ? acc[n / 2 + j] : acc[j];
        const float send = upper ? acc[j] : acc[n / 2 + j];
        acc[j] = keep + __shfl_xor_sync(0xffffffffu, send, o);
      }
    } else {
      acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], o);
    }
  }
  constexpr int kLanesPerToken = 32 / MAXT;
  const int t = lane / kLanesPerToken;
  if (lane % kLanesPerToken == 0 && t < a.T) store_row(a, seg, row, t, acc[0]);
#pragma unroll
  for (int i = 0; i < MAXT; ++i) acc[i] = 0.0f;
}

template <DType DT, int MAXT>
__global__ void __launch_bounds__(kThreads)
    mv_plain_kernel(const __grid_constant__ Args a) {
  constexpr int E = DT == DType::F32 ? 4 : 8;  // elements per 16 bytes
  constexpr int U = 8;                          // 16-byte loads in flight per lane
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float inv[kMaxT];
  float* xs = reinterpret_cast<float*>(smem);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t K = a.K;
  const int T = a.T;
  pdl_trigger();
  // The first rows' weights into L2 while the input is awaited.
  for (int64_t row = int64_t(blockIdx.x) * kW + warp; row < a.total && row < (blockIdx.x + 1) * kW;
       row += kW) {
    int seg;
    int64_t local;
    find_row(a, row, &seg, &local);
    const uint8_t* rp = seg_w(a, seg) + local * int64_t(a.row_bytes);
    for (int64_t off = int64_t(lane) * 128; off < int64_t(a.row_bytes); off += 32 * 128)
      prefetch_l2(rp + off);
  }
  pdl_wait();
  if (a.pro == int(MatvecPrologue::Rmsnorm)) row_inv_rms(a, inv);
  for (int t = 0; t < T; ++t)
    for (int64_t k = threadIdx.x; k < K; k += kThreads) xs[t * K + k] = pro_value(a, t, k, inv[t]);
  __syncthreads();

  const int nvec = int(K / E);
  for (int64_t row = int64_t(blockIdx.x) * kW + warp; row < a.total;
       row += int64_t(gridDim.x) * kW) {
    int seg;
    int64_t local;
    find_row(a, row, &seg, &local);
    const uint4* rp = reinterpret_cast<const uint4*>(seg_w(a, seg) + local * int64_t(a.row_bytes));
    float acc[MAXT];
#pragma unroll
    for (int t = 0; t < MAXT; ++t) acc[t] = 0.0f;
    for (int v0 = 0; v0 < nvec; v0 += 32 * U) {
      uint4 wv[U];
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const int idx = v0 + lane + 32 * j;
        if (idx < nvec) wv[j] = load_stream(rp + idx);
      }
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const int idx = v0 + lane + 32 * j;
        if (idx >= nvec) break;
        plain_dot16<DT, MAXT>(wv[j], xs + int64_t(idx) * E, K, T, acc);
      }
    }
    finish_row(a, seg, local, lane, acc);
  }
  materialize(a, inv);
}

__host__ __device__ constexpr bool is_plain(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

// ------------------------------------------------- bulk-copy path (Hopper)
//
// The products above keep each warp's next weights in registers, so a warp
// has ~2 KB in flight and a decode step's small matrices never reach the
// steady state that hides DRAM latency. Here the copy engine moves the
// weights instead: each warp owns two shared-memory buffers, and its first
// lane asks for a whole piece of weights (several consecutive rows, or a
// part of one long row) with one cp.async.bulk completing on an mbarrier.
// The next piece streams in while the current one is decoded, both pieces
// are requested before the kernel waits for its input, and no register
// holds a weight byte in flight.

// A piece holds at most 4096 bytes of weights (KILN_CUDA_MV_PIECE), and a
// warp's buffers are sized to the largest piece of the product (a.buf_bytes)
// plus 32 bytes for the aligned-down head and the rounded-up tail. Each warp
// has a.nbuf buffers (one token of a K-quant: 3, or 2 where shared memory
// holds no more; otherwise 2; KILN_CUDA_MV_BUFS says 2 to 4 for any), so as
// many pieces in flight.
constexpr int kBufSlack = 32;
constexpr int kMaxRowsPerPiece = 8;
constexpr int kMaxBufs = 4;
// Warps a block of the products that prepare their own input: one block an
// SM, so that each SM reads the input row from L2 once.
constexpr int kSelfW = 32;

[[maybe_unused]] __device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return uint32_t(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void bulk_to_smem(void* dst, const void* src, uint32_t bytes,
                                             uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
               "r"(bytes)
               : "memory");
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(smem_u32(dst)),
      "l"(src), "r"(bytes), "r"(smem_u32(bar))
      : "memory");
#else
  __trap();  // never launched below compute capability 9.0 (bulk_enabled)
#endif
}

// Orders this thread's earlier shared-memory accesses before the copy
// engine's next writes to the same buffer.
__device__ __forceinline__ void fence_proxy_async() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

__device__ __forceinline__ void bar_init(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(bar)));
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

__device__ __forceinline__ void bar_wait(uint64_t* bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}"
        : "=r"(done)
        : "r"(smem_u32(bar)), "r"(parity)
        : "memory");
  }
#endif
}

// Work item g (a group of a.R rows of one weight, or with a.P > 1 one row)
// as its weight, first row and row count. Compares and one product only:
// this runs for every piece, on every lane, and a 64-bit division costs
// ~70 instructions (as many as a pair of Q4_K units).
__device__ __forceinline__ void find_group(const Args& a, int64_t g, int* seg, int64_t* row0,
                                           int* rows) {
  const int s = int(g >= a.group0[1]) + int(g >= a.group0[2]) + int(g >= a.group0[3]);
  const int64_t first = s == 0 ? 0 : s == 1 ? a.group0[1] : s == 2 ? a.group0[2] : a.group0[3];
  const int R = a.R2 && s == a.nseg - 1 ? a.R2 : a.R;
  *seg = s;
  *row0 = (g - first) * R;
  const int64_t n = s == 0 ? a.n[0] : s == 1 ? a.n[1] : s == 2 ? a.n[2] : a.n[3];
  *rows = int(min(int64_t(R), n - *row0));
}

// The row bytes of weight seg (the last one may be of another format).
__device__ __forceinline__ int64_t seg_row_bytes(const Args& a, int seg) {
  return int64_t(a.R2 && seg == a.nseg - 1 ? a.row_bytes2 : a.row_bytes);
}

// Piece i of this warp: its source bytes (16-byte aligned start and rounded
// size), where the weights begin within them, and what it covers.
struct Piece {
  const uint8_t* src;
  uint32_t bytes;
  int head, seg, rows, part;
  int64_t row0, b0, nb;
};

template <DType DT>
__device__ __forceinline__ void piece_of(const Args& a, int64_t g, int part, Piece& pc) {
  using F = Fmt<DT>;
  pc.part = part;
  find_group(a, g, &pc.seg, &pc.row0, &pc.rows);
  const int64_t nblocks = a.K / F::kBlock;
  pc.b0 = int64_t(pc.part) * a.piece_blocks;
  pc.nb = min(int64_t(a.piece_blocks), nblocks - pc.b0);
  // (With a last weight of another format, P == 1 and b0 == 0: only its
  // row bytes differ.)
  const int64_t rb = seg_row_bytes(a, pc.seg);
  const uint8_t* start = seg_w(a, pc.seg) + pc.row0 * rb + pc.b0 * F::kBytes;
  const int64_t len = a.P == 1 ? int64_t(pc.rows) * rb : pc.nb * F::kBytes;
  const uintptr_t aligned = reinterpret_cast<uintptr_t>(start) & ~uintptr_t(15);
  pc.head = int(reinterpret_cast<uintptr_t>(start) - aligned);
  pc.src = reinterpret_cast<const uint8_t*>(aligned);
  pc.bytes = uint32_t((pc.head + len + 15) / 16 * 16);
}

// Where a warp's pieces are: part `part` of work item g. A warp takes
// parts 0 .. P - 1 of item gw, then of gw + nw, and so on.
struct Cursor {
  int64_t g;
  int part;
};

__device__ __forceinline__ void advance(const Args& a, int64_t nw, Cursor& c) {
  if (++c.part == a.P) c.part = 0, c.g += nw;
}

// The input of a bulk-copy product, made once per product rather than once
// per block (the products' blocks each re-reading and re-quantizing a
// 10-40 KB row cost more than their weights): the prologue applied, written
// to a.mat when asked, and stored as the products read it, int8 per 32
// elements with an f32 scale and half sums (the layout of xq_bytes) or f32 for plain
// weights. Each thread makes 4 elements (a group of 8 threads one 32-element
// block), and a row is spread over as many blocks as that takes, so every
// load is in flight at once; with the rmsnorm prologue each block first sums
// the squares of the whole row (an L2-resident 10 KB), in the rmsnorm
// kernel's order of operations.
constexpr int kPrepThreads = 256;
constexpr int kPrepPerBlock = kPrepThreads * 4;

// The values v of four consecutive input elements k0 .. k0 + 3 of token t
// (of an input of K values a token, T tokens), stored into the layout at
// `out` (device memory or a block's shared memory). Called by groups of 8
// consecutive threads for each 32-element block, every thread of a group
// present (K % 32 == 0 keeps whole groups together).
template <bool kInt8>
__device__ __forceinline__ void quantize_four(const float (&v)[4], int t, int64_t k0, int64_t K,
                                              int T, uint8_t* out) {
  if constexpr (kInt8) {
    const unsigned group = 0xFFu << (threadIdx.x % 32 / 8 * 8);
    float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
    for (int o = 1; o < 8; o <<= 1) amax = fmaxf(amax, __shfl_xor_sync(group, amax, o));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t packed = 0;
    int sum = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int q = int(roundf(v[e] * id));
      sum += q;
      packed |= uint32_t(uint8_t(int8_t(q))) << (8 * e);
    }
    // Each half of the block is four threads' values.
    sum += __shfl_xor_sync(group, sum, 1);
    sum += __shfl_xor_sync(group, sum, 2);
    const int hi = __shfl_xor_sync(group, sum, 4);
    int8_t* xq = reinterpret_cast<int8_t*>(out);
    float* xd = reinterpret_cast<float*>(out + T * K);
    XSum* xsum = reinterpret_cast<XSum*>(out + xsum_offset(K, T));
    *reinterpret_cast<uint32_t*>(xq + xq_at(t, k0, K)) = packed;
    if (k0 % 32 == 0) {
      xd[(int64_t(t) * K + k0) / 32] = d;
      xsum[(int64_t(t) * K + k0) / 32] = block_sums(sum, hi);
    }
  } else {
    float* xs = reinterpret_cast<float*>(out);
    *reinterpret_cast<float4*>(xs + int64_t(t) * K + k0) = {v[0], v[1], v[2], v[3]};
  }
}

// The prologue's values of input elements k0 .. k0 + 3 of token t, made,
// written to a.mat where asked, and stored as above.
template <bool kInt8>
__device__ __forceinline__ void prepare_four(const Args& a, int t, int64_t k0, float inv,
                                             uint8_t* out, bool write_mat) {
  const int64_t K = a.K;
  float v[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) v[e] = pro_value(a, t, k0 + e, inv);
  if (write_mat) *reinterpret_cast<float4*>(a.mat + int64_t(t) * K + k0) = {v[0], v[1], v[2], v[3]};
  quantize_four<kInt8>(v, t, k0, K, a.T, out);
}

template <bool kInt8>
__global__ void __launch_bounds__(kPrepThreads) prepare_input_kernel(const __grid_constant__ Args a) {
  pdl_trigger();
  pdl_wait();
  const int64_t K = a.K;
  const int64_t per_row = (K + kPrepPerBlock - 1) / kPrepPerBlock;
  const int t = int(blockIdx.x / per_row);
  const int64_t k0 = (blockIdx.x % per_row) * kPrepPerBlock + int64_t(threadIdx.x) * 4;
  __shared__ float part[kPrepThreads / 32];
  float inv = 1.0f;
  if (a.pro == int(MatvecPrologue::Rmsnorm)) inv = block_inv_rms<kPrepThreads>(a.x + int64_t(t) * K, K, a.eps, part);
  if (k0 >= K) return;  // K % 32 == 0: whole groups of 8 threads leave together
  prepare_four<kInt8>(a, t, k0, inv, a.xprep, a.mat != nullptr);
}

// The lane that takes pair 0 of a row: rows are rotated by K / 64 lanes
// each, as if a weight's pairs were dealt to the lanes in one sequence, so
// that the lanes left over by one row (a 2560-wide row has 40 pairs: 8
// lanes take two) are not the same lanes in the next. Lane `lane` takes the
// row's pairs first_pair(..), + 32, ... . It depends only on the row and K,
// never on how rows are grouped into pieces or on T, so a token's sums are
// made alike in every instance.
__device__ __forceinline__ int first_pair(int lane, int64_t row, int64_t K) {
  const uint32_t shift = (uint32_t(row) * uint32_t(K >> 6)) & 31u;
  return int((uint32_t(lane) - shift) & 31u);
}

// Row r's running sum into done[r], and a fresh one for the next row. The
// unrolled compare keeps done[] in registers (an index into it would put it
// in local memory).
__device__ __forceinline__ void keep_row_sum(float (&done)[kMaxRowsPerPiece], int r,
                                             float (&run)[1]) {
#pragma unroll
  for (int i = 0; i < kMaxRowsPerPiece; ++i)
    if (i == r) done[i] = run[0];
  run[0] = 0.0f;
}

// One token, the int8 path: each lane goes on to its next row as soon as it
// has no pair left in the current one, rather than all lanes taking the
// rows in lockstep (which kept 37% of a warp's lanes idle on 2560-wide
// rows); with a.flat, the piece's pairs are one sequence dealt to the lanes
// in turn. A lane's sum of a row is still its pairs in ascending order, so
// each row gets the bits the lockstep loop of the several-token instances
// gives it. acc carries a long row's sum from one part to the next (P > 1,
// one row a piece). kAligned: w is 16-byte aligned and so is every block
// of the piece (see aligned_blocks).
template <DType DT, bool kAligned>
__device__ __forceinline__ void one_token_rows(const Args& a, const Piece& p, const uint8_t* w,
                                               int lane, const int8_t* xq, const float* xd,
                                               const XSum* xsum, float (&acc)[1]) {
  const int k0 = int(p.b0 * Fmt<DT>::kBlock), np = pairs_in<DT>(p.nb);
  // The row's bytes once a piece, its start once a row: worked out beside
  // every pair they were ~10 of its ~155 instructions.
  const int64_t row_bytes = seg_row_bytes(a, p.seg);
  const uint8_t* wr = w;
  float done[kMaxRowsPerPiece];  // each row's sum, once this lane is past it
  float run[1] = {acc[0]};
  int r = 0, u = first_pair(lane, p.row0, a.K);
  if (a.flat) {
    // The piece's pairs as one sequence, row after row, dealt to the lanes
    // in turn: lane l takes items l, l + 32, ... of it. first_pair rotates
    // each row by exactly the pairs of the rows before it (mod 32), so a
    // lane's next pair past the end of row r is pair u - np of row r + 1:
    // the pairs each lane takes, and their order, are first_pair's, and so
    // are the bits. Every pass of the loop decodes a pair on every lane,
    // and only the step to the next row is taken by some; the loop below
    // runs pair_dot on the lanes still in a row while the others step (two
    // 2560-wide rows a piece, 40 pairs each: 62.5% of the lanes busy).
    for (;;) {
      while (u >= np) {  // past this lane's last pair of row r
        keep_row_sum(done, r, run);
        u -= np;
        if (++r == p.rows) break;
        wr += row_bytes;
      }
      if (r == p.rows) break;
      pair_dot<DT, 1, kAligned>(wr, u, xq, xd, xsum, k0 + 64 * u, int(a.K), 1, run);
      u += 32;
    }
  } else {
    // One row a piece (or part of one), or rows of a multiple of 32 pairs,
    // where the loop above gains nothing (see plan_pieces).
    for (;;) {
      if (u >= np) {
        keep_row_sum(done, r, run);
        if (++r == p.rows) break;
        wr += row_bytes;
        u = first_pair(lane, p.row0 + r, a.K);
        continue;
      }
      pair_dot<DT, 1, kAligned>(wr, u, xq, xd, xsum, k0 + 64 * u, int(a.K), 1, run);
      u += 32;
    }
  }
  if (a.P > 1 && p.part < a.P - 1) {
    acc[0] = done[0];  // the row goes on in the next piece
    return;
  }
#pragma unroll
  for (int i = 0; i < kMaxRowsPerPiece; ++i) {
    if (i >= p.rows) break;
    float v[1] = {done[i]};
    finish_row(a, p.seg, p.row0 + i, lane, v);
  }
  acc[0] = 0.0f;
}

// Formats whose pairs can be decoded without testing their alignment where
// the piece starts 16-byte aligned: blocks of a multiple of 16 bytes (Q4_K,
// Q5_K), so that every block, row and part of a row after it is aligned
// too. The test is made once a piece rather than twice a pair (the
// weights' addresses are 256-byte aligned, so in practice it always holds).
template <DType DT>
__host__ __device__ constexpr bool aligned_blocks() {
  if constexpr (Dp4a<DT>::kHas) return Fmt<DT>::kBytes % 16 == 0;
  return false;
}

// One token of an integer-product format in 8-warp blocks: registers for
// four blocks an SM (62-64, no spills; Q4_K had 78 and three blocks). The
// float-decoded formats would spill under that cap.
//
// W warps a block: 8, or 32 (one block an SM, 64 registers at most) for
// the products that prepare their own input, so that each SM reads the
// input row from L2 once (16 warps, two blocks an SM: no faster).
//
// DT2: the format of the last weight (a.R2 > 0), when it differs from DT.
template <DType DT, int MAXT, int W, DType DT2 = DT>
__global__ void __launch_bounds__(W * 32, W == 8 && MAXT == 1 && Dp4a<DT>::kHas ? 4 : 1)
    mv_bulk_kernel(const __grid_constant__ Args a) {
  using F = Fmt<DT>;
  constexpr bool kPlain = is_plain(DT);
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ __align__(8) uint64_t bars[W][kMaxBufs];
  __shared__ __align__(8) uint64_t xbar;
  __shared__ float part[kPrepThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t K = a.K;
  const int T = a.T;
  const size_t xbytes = size_t(input_bytes(kPlain, K, T));
  const int stride = a.buf_bytes + kBufSlack;
  uint8_t* buf = smem + xbytes + size_t(warp) * a.nbuf * stride;
  const int64_t nw = int64_t(gridDim.x) * W, gw = int64_t(blockIdx.x) * W + warp;

  if (lane < a.nbuf) bar_init(&bars[warp][lane]);
  if (threadIdx.x == 0) bar_init(&xbar);
  __syncthreads();
  pdl_trigger();
  // Piece i of the warp goes to buffer i % nbuf. Weights are never written:
  // the first nbuf pieces are requested before the input is awaited, while
  // the kernel before may still be running. `next` is the next piece to
  // request (lane 0 alone requests), `cur` the next to decode.
  Cursor next{gw, 0}, cur{gw, 0};
  Piece p;
  // a.early of them before the wait (KILN_CUDA_MV_EARLY), the rest after.
  int requested = 0;
  if (lane == 0)
    for (; requested < a.early && next.g < a.groups; ++requested, advance(a, nw, next)) {
      piece_of<DT>(a, next.g, next.part, p);
      bulk_to_smem(buf + requested * stride, p.src, p.bytes, &bars[warp][requested]);
    }
  // A self-preparing block whose threads take the row's values in one pass
  // (K <= 4096, one token; the rmsnorm prologue or none): each thread's
  // four norm weights are loaded before the wait (weights: the kernel
  // before does not write them), and after it the row's values together
  // with the loads of its sum of squares, so that the prologue waits on
  // memory once rather than three times.
  const int64_t k4 = int64_t(threadIdx.x) * 4;
  const bool one_pass = W > kW && a.self_prep && a.one_pass && K <= W * 32 * 4;
  float4 norm_w = {1.0f, 1.0f, 1.0f, 1.0f};
  if (one_pass && a.pro == int(MatvecPrologue::Rmsnorm) && a.x2 && k4 < K)
    norm_w = __ldg(reinterpret_cast<const float4*>(a.x2 + k4));
  pdl_wait();
  if (lane == 0)
    for (; requested < a.nbuf && next.g < a.groups; ++requested, advance(a, nw, next)) {
      piece_of<DT>(a, next.g, next.part, p);
      bulk_to_smem(buf + requested * stride, p.src, p.bytes, &bars[warp][requested]);
    }

  if (W > kW && a.self_prep) {
    // The input made here, exactly as the preparation kernel makes it; the
    // first block also leaves it in a.xprep (a product after this one may
    // take the same input, MatvecJob::input_ready) and writes a.mat.
    if (one_pass) {
      float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (a.pro == int(MatvecPrologue::AttnCombine)) {
        // Attention's output merged from its splits here (four dimensions
        // of one head a thread), as the combine kernel merges them.
        if (k4 < K) {
          const int head = int(k4) / a.attn_hd;
          combine_splits<4>(a.x + int64_t(head) * a.attn_splits * (a.attn_hd + 2), a.attn_hd,
                            a.attn_splits, int(k4) - head * a.attn_hd, v);
        }
      } else if (k4 < K) {
        const float4 xv = *reinterpret_cast<const float4*>(a.x + k4);
        v[0] = xv.x, v[1] = xv.y, v[2] = xv.z, v[3] = xv.w;
      }
      if (a.pro == int(MatvecPrologue::Rmsnorm)) {
        // The preparation kernel's sums (its block width), so the same bits;
        // one batch of loads for rows of up to 3072 (12 a thread; 16 made
        // the Q5_K and Q6_K instances spill).
        const float inv = block_inv_rms<kPrepThreads, 12>(a.x, K, a.eps, part);
        const float nv[4] = {norm_w.x, norm_w.y, norm_w.z, norm_w.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {  // pro_value's arithmetic
          v[e] = __fmul_rn(v[e], inv);
          if (a.x2) v[e] = __fmul_rn(v[e], nv[e]);
        }
      }
      if (k4 < K) {
        if (a.mat && blockIdx.x == 0)
          *reinterpret_cast<float4*>(a.mat + k4) = {v[0], v[1], v[2], v[3]};
        quantize_four<!kPlain>(v, 0, k4, K, 1, smem);
      }
    } else {
      for (int t = 0; t < T; ++t) {
        // The preparation kernel's sums (its block width), so the same bits.
        const float inv = a.pro == int(MatvecPrologue::Rmsnorm)
                              ? block_inv_rms<kPrepThreads>(a.x + int64_t(t) * K, K, a.eps, part)
                              : 1.0f;
        for (int64_t k0 = int64_t(threadIdx.x) * 4; k0 < K; k0 += W * 32 * 4)
          prepare_four<!kPlain>(a, t, k0, inv, smem, a.mat && blockIdx.x == 0);
      }
    }
    __syncthreads();
    if (blockIdx.x == 0) {
      const uint4* src = reinterpret_cast<const uint4*>(smem);
      uint4* dst = reinterpret_cast<uint4*>(a.xprep);
      for (int i = threadIdx.x; i < int(xbytes / 16); i += W * 32) dst[i] = src[i];
    }
  } else if (a.x_threads) {
    // The prepared input, one copy for the block: each thread's loads (4
    // of 16 bytes for up to 16 KB in 8 warps) issued before any store, so
    // that the block waits on memory once.
    const uint4* src = reinterpret_cast<const uint4*>(a.xprep);
    uint4* dst = reinterpret_cast<uint4*>(smem);
    constexpr int kPer = 4;
    const int n = int(xbytes / 16);
    for (int i0 = threadIdx.x; i0 < n; i0 += kPer * W * 32) {
      uint4 v[kPer];
#pragma unroll
      for (int j = 0; j < kPer; ++j)
        if (i0 + j * W * 32 < n) v[j] = src[i0 + j * W * 32];
#pragma unroll
      for (int j = 0; j < kPer; ++j)
        if (i0 + j * W * 32 < n) dst[i0 + j * W * 32] = v[j];
    }
    __syncthreads();
  } else {
    if (threadIdx.x == 0) bulk_to_smem(smem, a.xprep, uint32_t(xbytes), &xbar);
    bar_wait(&xbar, 0);
  }
  const int8_t* xq = reinterpret_cast<const int8_t*>(smem);
  const float* xd = reinterpret_cast<const float*>(smem + T * K);
  const XSum* xsum = reinterpret_cast<const XSum*>(smem + xsum_offset(K, T));
  const float* xs = reinterpret_cast<const float*>(smem);

  float acc[MAXT];
#pragma unroll
  for (int t = 0; t < MAXT; ++t) acc[t] = 0.0f;
  for (int b = 0, parity = 0; cur.g < a.groups; advance(a, nw, cur)) {
    piece_of<DT>(a, cur.g, cur.part, p);
    bar_wait(&bars[warp][b], uint32_t(parity));
    const uint8_t* w = buf + b * stride + p.head;
    for (int r = 0; r < p.rows; ++r) {
      const uint8_t* wr = w + int64_t(r) * int64_t(a.row_bytes);
      if constexpr (kPlain) {
        constexpr int E = DT == DType::F32 ? 4 : 8;  // elements per 16 bytes
        const int nvec = int(p.nb * F::kBytes / 16);
        const int64_t k0 = p.b0 * F::kBlock;
        for (int c = lane; c < nvec; c += 32)
          plain_dot16<DT, MAXT>(*reinterpret_cast<const uint4*>(wr + 16 * c),
                                xs + k0 + int64_t(c) * E, K, T, acc);
      } else if constexpr (MAXT > 1) {
        // A row of at most 16 pairs (K <= 1024), whole in its piece, leaves
        // at least half of the lanes without one: first_pair deals them to
        // consecutive lanes (mod 32), so lane l and lane l ^ 16 never both
        // have one. Then the lane without takes its partner's pair for the
        // upper half of the tokens and hands those sums over (below). Each
        // lane's sums are still its own pair's, made the same way, half of
        // them on the other lane, and a lane without a pair holds zeros as
        // before: the same bits, with no lane idle.
        constexpr int H = MAXT / 2;
        const int k0 = int(p.b0 * F::kBlock), np = pairs_in<DT>(p.nb);
        const bool split = a.P == 1 && np <= 16 && T > H;
        int u = first_pair(lane, p.row0 + r, K), t0 = 0, tn = T;
        const bool helper = split && u >= np;
        if (split) {
          if (helper) u ^= 16, t0 = H;  // first_pair(lane ^ 16, ..) == u ^ 16
          tn = helper ? T - H : H;
        }
        for (; u < np; u += 32)
          pair_dot<DT, MAXT>(wr, u, xq + t0 * int(K), xd + t0 * int(K / 32),
                             xsum + t0 * int(K / 32), k0 + 64 * u, int(K), tn, acc);
        if (split) {
#pragma unroll
          for (int j = 0; j < H; ++j) {
            const float upper = __shfl_xor_sync(0xffffffffu, acc[j], 16);
            acc[H + j] = helper ? 0.0f : upper;
            if (helper) acc[j] = 0.0f;
          }
        }
      } else {
        if (DT2 != DT && a.R2 && p.seg == a.nseg - 1)
          one_token_rows<DT2, false>(a, p, w, lane, xq, xd, xsum, acc);
        else if (aligned_blocks<DT>() && a.aligned && (smem_u32(w) & 15) == 0)
          one_token_rows<DT, aligned_blocks<DT>()>(a, p, w, lane, xq, xd, xsum, acc);
        else
          one_token_rows<DT, false>(a, p, w, lane, xq, xd, xsum, acc);
        break;  // every row of the piece is done (and finished where it ends)
      }
      if (a.P == 1 || p.part == a.P - 1) finish_row(a, p.seg, p.row0 + r, lane, acc);
    }
    // Every lane is done with this buffer before the copy engine refills it
    // with the piece nbuf further on.
    __syncwarp();
    if (lane == 0 && next.g < a.groups) {
      Piece q;
      piece_of<DT>(a, next.g, next.part, q);
      fence_proxy_async();
      bulk_to_smem(buf + b * stride, q.src, q.bytes, &bars[warp][b]);
      advance(a, nw, next);
    }
    if (++b == a.nbuf) b = 0, parity ^= 1;
  }
}

size_t smem_bytes(DType t, int64_t K, int64_t T) {
  if (is_plain(t)) return size_t(T * K) * sizeof(float);
  return size_t(xq_bytes(K, T)) + size_t(kW) * (kStage + kStageSlack);
}

int sm_count() {
  static int n = [] {
    int dev = 0, c = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, dev);
    return c > 0 ? c : 100;
  }();
  return n;
}

// KILN_CUDA_MV_BLOCKS: the products' blocks per SM, to compare (0: unset).
int blocks_cap() {
  static const int n = env_int("KILN_CUDA_MV_BLOCKS", 0, 1, 16);
  return n;
}

template <class Kernel>
void launch_matvec(Kernel k, const Args& a, size_t smem, cudaStream_t s) {
  static std::unordered_set<const void*> raised;  // kernels allowed kMaxSmem
  if (raised.insert(reinterpret_cast<const void*>(k)).second)
    check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kMaxSmem)),
          "matvec shared memory");
  // A few resident blocks per SM (KILN_CUDA_MV_BLOCKS, default 4): rows
  // beyond that loop within a warp.
  const int per_sm = blocks_cap() > 0 ? blocks_cap() : 4;
  const int64_t blocks = std::min<int64_t>((a.total + kW - 1) / kW, int64_t(sm_count()) * per_sm);
  cuda::launch(k, unsigned(blocks), kThreads, smem, s, "matvec_fused", a);
}

// The bulk-copy kernels need compute capability 9.0; KILN_CUDA_MV=stage
// keeps the register-staged ones, to compare.
bool bulk_enabled() {
  static const bool on = [] {
    int dev = 0, major = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    return major >= 9 && !env_is("KILN_CUDA_MV", "stage");
  }();
  return on;
}

// KILN_CUDA_MV_TOKENS: the most tokens a bulk-copy product takes (8 to 32,
// default 32; more go to the tiled prefill path), to compare.
int bulk_tokens() {
  static const int n = env_int("KILN_CUDA_MV_TOKENS", kMaxBulkT, kMaxT, kMaxBulkT);
  return n;
}

// The most weight bytes a piece holds: 4096 (kPieceBytes), and up to 8192
// for one token of a plain format (F32/F16/BF16), whose rows are 2-5x a
// K-quant's bytes and whose decoding is a shift a weight, where a row of
// more than 4096 bytes then takes fewer, larger pieces (plan_pieces):
// Qwen3-4B BF16 decode 228.4 -> 238.7 tok/s on an H100, while the block
// formats measured slower with larger pieces (Qwen3-4B Q4_K_M -3.6%).
// Plain pieces are whole multiples of 512 bytes, so a lane takes the same
// 16-byte chunks of a row, in the same order, whatever the piece size: a
// token's bits do not depend on T. KILN_CUDA_MV_PIECE sets one size for
// every product, to compare.
constexpr int kPieceBytes = 4096;
int piece_env() {
  static const int n = [] {
    const int v = env_int("KILN_CUDA_MV_PIECE", 0, 512, 16384);
    return v % 16 == 0 ? v : 0;
  }();
  return n;
}
int piece_bytes(DType t, int64_t T) {
  if (piece_env()) return piece_env();
  return is_plain(t) && T == 1 ? 2 * kPieceBytes : kPieceBytes;
}

// KILN_CUDA_MV_ROWS: the most rows a piece holds (1 to 8), to compare.
int piece_rows() {
  static const int n = env_int("KILN_CUDA_MV_ROWS", kMaxRowsPerPiece, 1, kMaxRowsPerPiece);
  return n;
}

// How a bulk-copy product's blocks load a prepared input of `bytes`: by
// their threads, with 16-byte loads, when it is small (one token's: the
// copy engine's request would queue behind the weights' requested before
// it; 2-3% of a 4B decode step on the H100), else by the copy engine.
// KILN_CUDA_MV_XLOAD=threads or bulk takes one way always, to compare.
bool input_by_threads(int64_t bytes) {
  static const int mode = env_is("KILN_CUDA_MV_XLOAD", "threads") ? 1
                          : env_is("KILN_CUDA_MV_XLOAD", "bulk")  ? 2
                                                                  : 0;
  return mode == 1 || (mode == 0 && bytes <= 16 * 1024);
}

// KILN_CUDA_MV_BUFS: buffers (pieces in flight) per warp, 2 to 4. For one
// token of a K-quant, three measured 1.2-1.3% faster a decode step than two
// (Qwen3-4B and Qwen3.5-2B Q4_K_M on an H100); Q8_0 measured 0.3% slower
// with three (Qwen3-4B), and the several-token products of serving steps
// keep two, as measured there.
int buffers_wanted(DType t, int64_t T) {
  static const int n = env_int("KILN_CUDA_MV_BUFS", 0, 2, kMaxBufs);
  const bool k_quant = t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
  return n ? n : T == 1 && k_quant ? 3 : 2;
}

// Shared memory of a bulk-copy product with nbuf buffers of buf_bytes a
// warp, + a word read past the last buffer.
size_t bulk_smem_bytes(DType t, int64_t K, int64_t T, int nbuf, int buf_bytes, int warps = kW) {
  return size_t(input_bytes(is_plain(t), K, T)) + size_t(warps) * nbuf * (buf_bytes + kBufSlack) +
         16;
}

// The most a product may need: two buffers of the largest piece every
// product may take (plan_pieces takes larger plain pieces only where they
// fit too).
size_t bulk_smem_bytes(DType t, int64_t K, int64_t T) {
  return bulk_smem_bytes(t, K, T, 2, piece_env() ? piece_env() : kPieceBytes);
}

// Whether the bulk-copy path takes this product: Hopper, whole 32-element
// blocks, and its input fits the scratch area and shared memory.
bool bulk_ok(DType t, int64_t K, int64_t T, size_t scratch_bytes) {
  return bulk_enabled() && K % (is_plain(t) ? 32 : 64) == 0 && T <= bulk_tokens() &&
         size_t(input_bytes(is_plain(t), K, T)) <= scratch_bytes &&
         bulk_smem_bytes(t, K, T) <= kMaxBulkSmem;
}

// KILN_CUDA_MV_EARLY: how many of its pieces a warp asks for before the
// wait for the kernel before (0 to kMaxBufs; default all of its buffers),
// to compare.
int early_pieces() {
  static const int n = env_int("KILN_CUDA_MV_EARLY", kMaxBufs, 0, kMaxBufs);
  return n;
}

// How the rows are cut into pieces of at most piece_bytes(): several whole
// rows per piece when they fit, else each row in P near-equal parts; then
// the buffers, as large as the largest piece and as many as asked that the
// shared memory holds.
template <DType DT>
void plan_pieces(Args& a, int warps) {
  using F = Fmt<DT>;
  const int64_t nblocks = a.K / F::kBlock;
  int64_t limit = piece_bytes(DT, a.T);
  // The larger plain pieces only where rows are split anyway, and only
  // while there are at least as many pieces as the 32 warps an SM fields
  // (one block of 32 or four of 8): several rows a piece, or too few
  // pieces, left warps idle (Qwen3.5-2B BF16 decode -2.5% with 8192-byte
  // pieces everywhere). And only where two of them a warp fit an 8-warp
  // block beside the input (a self-preparing product of 32 warps that they
  // do not fit goes the 8-warp way, see matvec_fused).
  if (limit > kPieceBytes && !piece_env()) {
    const int64_t items = a.total * ((int64_t(a.row_bytes) + limit - 1) / limit);
    if (int64_t(a.row_bytes) <= kPieceBytes || items < int64_t(sm_count()) * 32 ||
        bulk_smem_bytes(DT, a.K, a.T, 2, int(limit), kW) > kMaxBulkSmem)
      limit = kPieceBytes;
  }
  // An output head (one token, at least 8 rows for each of the 32 warps an
  // SM fields), whose rows are each just over half a piece and whose pairs
  // do not come out even on the lanes: two rows a piece, dealt flat (see
  // one_token_rows), instead of one whose last pass leaves most lanes idle
  // (Q6_K's 2560-wide rows: 40 pairs, the second pass 8 lanes of 32; the
  // Q6_K head is bound by its instructions, not its bytes). Such pieces
  // take the 8-warp blocks (32 warps' buffers would not fit), and only
  // where two such blocks fit an SM (Q8_0's 2720-byte rows would leave one
  // block of 8 warps an SM: not measured). The Q6_K head 2560 -> 151936
  // alone: 148 -> 130 us on an H100. Row sums do not depend on the rows
  // beside them in a piece, so the bits stay.
  if constexpr (Dp4a<DT>::kHas) {
    const int64_t two = (2 * int64_t(a.row_bytes) + 15) / 16 * 16;
    if (a.T == 1 && a.nseg == 1 && !piece_env() && 2 * int64_t(a.row_bytes) > limit &&
        int64_t(a.row_bytes) <= limit && pairs_in<DT>(nblocks) % 32 != 0 &&
        a.total >= int64_t(sm_count()) * 32 * 8 &&
        bulk_smem_bytes(DT, a.K, a.T, buffers_wanted(DT, a.T), int(two), kW) <= kMaxBulkSmem / 2)
      limit = two;
  }
  if (int64_t(a.row_bytes) <= limit) {
    a.P = 1;
    a.R = int(std::min<int64_t>(piece_rows(), limit / int64_t(a.row_bytes)));
    // Several tokens on a small matrix (a serving step of a small model):
    // fewer rows a piece, so that every warp the GPU holds gets one, rather
    // than a few warps walking many rows with 32 tokens each. A row's sums
    // do not depend on the rows beside it in its piece.
    // (Rows chosen instead for the fewest passes over the lanes, e.g. two
    // a piece for Qwen3-4B's q/k/v, measured no faster there and 2.5%
    // slower a Qwen3.5-2B step.)
    if (a.T > 1 || warps > kW)
      a.R = int(std::clamp<int64_t>(a.total / (int64_t(sm_count()) * warps), 1, a.R));
    a.piece_blocks = nblocks;
  } else {
    a.R = 1;
    a.P = int((int64_t(a.row_bytes) + limit - 1) / limit);
    // Pieces of an even number of 32-element blocks: a lane's pair never
    // straddles two. Plain formats: pieces of whole 512 bytes (32 lanes'
    // 16-byte chunks), so that the lanes' chunks of a row are the same
    // whatever the number of pieces (see piece_bytes).
    auto per_piece = [&](int64_t parts) {
      const int64_t n = (nblocks + parts - 1) / parts;
      if constexpr (is_plain(DT)) {
        constexpr int64_t m = 512 / F::kBytes;
        return (n + m - 1) / m * m;
      }
      return F::kUnits == 1 ? (n + 1) & ~int64_t(1) : n;
    };
    while (per_piece(a.P) * F::kBytes > limit) ++a.P;
    a.piece_blocks = per_piece(a.P);
    a.P = int((nblocks + a.piece_blocks - 1) / a.piece_blocks);
  }
  int64_t most = a.P == 1 ? int64_t(a.R) * int64_t(a.row_bytes) : a.piece_blocks * F::kBytes;
  if (a.R2) {  // the last weight's rows, as many as fit a piece too
    a.R2 = int(std::min<int64_t>({int64_t(piece_rows()), limit / int64_t(a.row_bytes2),
                                  std::max<int64_t>(1, a.n[a.nseg - 1] / (int64_t(sm_count()) * warps))}));
    a.R2 = std::max(a.R2, 1);
    most = std::max(most, int64_t(a.R2) * int64_t(a.row_bytes2));
  }
  // Pieces of several rows whose pairs do not come out even on the lanes
  // take one token's pairs as one sequence (one_token_rows). Elsewhere
  // that gains nothing and its extra test per pair costs: ~1.5% for Q8_0's
  // 2560-wide rows (one a piece), and Qwen3.5-2B, whose 2048-wide rows are
  // 32 pairs, ran 1.4% slower a step with it. KILN_CUDA_MV_FLAT=0: never,
  // to compare.
  static const bool flat_on = !env_is("KILN_CUDA_MV_FLAT", "0");
  const bool uneven = pairs_in<DT>(nblocks) % 32 != 0;
  a.flat = flat_on && a.P == 1 && (a.R > 1 || a.R2 > 1) && uneven ? 1 : 0;
  // KILN_CUDA_MV_ALIGNED=0: every pair tests its alignment, to compare.
  static const bool aligned_on = !env_is("KILN_CUDA_MV_ALIGNED", "0");
  a.aligned = aligned_on ? 1 : 0;
  a.buf_bytes = int((most + 15) / 16 * 16);
  a.nbuf = buffers_wanted(DT, a.T);
  while (a.nbuf > 2 && bulk_smem_bytes(DT, a.K, a.T, a.nbuf, a.buf_bytes, warps) > kMaxBulkSmem)
    --a.nbuf;
  a.early = std::min(a.nbuf, early_pieces());
  a.groups = 0;
  for (int i = 0; i < kMaxMatvecSegs; ++i) {
    a.group0[i] = a.groups;  // weights past nseg start at groups: never found
    const int R = a.R2 && i == a.nseg - 1 ? a.R2 : a.R;
    if (i < a.nseg) a.groups += (a.n[i] + R - 1) / R;
  }
}

template <int W, class Kernel>
void launch_bulk(Kernel k, const Args& a, size_t smem, cudaStream_t s) {
  struct Fit {
    const void* kernel;
    size_t smem;
    int blocks;
  };
  static std::vector<Fit> fits;  // resident blocks per SM, by kernel and shared memory
  int per_sm = 0;
  for (const Fit& f : fits)
    if (f.kernel == reinterpret_cast<const void*>(k) && f.smem == smem) per_sm = f.blocks;
  if (!per_sm) {
    check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kMaxBulkSmem)),
          "matvec shared memory");
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k, W * 32, smem),
          "matvec occupancy");
    per_sm = std::max(per_sm, 1);
    fits.push_back({reinterpret_cast<const void*>(k), smem, per_sm});
  }
  // Every block resident at once (KILN_CUDA_MV_BLOCKS lowers the cap):
  // warps loop over work items, and the next kernel's blocks can start in
  // what the last ones leave.
  if (blocks_cap() > 0) per_sm = std::min(per_sm, blocks_cap());
  const int64_t blocks = std::min<int64_t>((a.groups + W - 1) / W, int64_t(sm_count()) * per_sm);
  cuda::launch(k, unsigned(blocks), W * 32, smem, s, "matvec_fused", a);
}

// KILN_CUDA_MV_ONEPASS=0: self-preparing blocks make their input as
// before the one-pass prologue, to compare.
bool one_pass_off() {
  static const bool off = env_is("KILN_CUDA_MV_ONEPASS", "0");
  return off;
}

// KILN_CUDA_MV_SELF: which one-token products prepare their own input in
// every block instead of after a preparation kernel: 0 none, all (the
// silu_mul ones too, whose two wide inputs each block then reads), else
// (the default) those with the rmsnorm prologue or none.
bool self_prepares(MatvecPrologue pro) {
  static const int mode = env_is("KILN_CUDA_MV_SELF", "0")     ? 0
                          : env_is("KILN_CUDA_MV_SELF", "all") ? 2
                                                               : 1;
  return mode == 2 || (mode == 1 && pro != MatvecPrologue::SiluMul);
}

// The format a product of format DT may take its last weight in
// (matvec_mixed_ok), F32 for none: v in Q6_K after q/k in Q4_K or Q5_K.
template <DType DT>
constexpr DType mixed_tail() {
  return DT == DType::Q4_K || DT == DType::Q5_K ? DType::Q6_K : DType::F32;
}

}  // namespace

bool matvec_mixed_ok(DType t, DType t2, int64_t K, int64_t T, size_t row_bytes, size_t row_bytes2,
                     MatvecPrologue pro, size_t scratch_bytes) {
  DType tail = DType::F32;
  dispatch_format(t, [&]<DType DT>() { tail = mixed_tail<DT>(); });
  if (!(T == 1 && t2 == tail && tail != DType::F32 && self_prepares(pro) &&
        bulk_ok(t, K, T, scratch_bytes) && K % 256 == 0 &&
        int64_t(row_bytes) <= piece_bytes(t, T) && int64_t(row_bytes2) <= piece_bytes(t, T)))
    return false;
  // The shared memory of the largest pieces plan_pieces may make.
  auto piece = [&](size_t rb) {
    return int64_t(std::min<int64_t>(piece_rows(), piece_bytes(t, T) / int64_t(rb)) * int64_t(rb));
  };
  const int64_t most = std::max(piece(row_bytes), piece(row_bytes2));
  return bulk_smem_bytes(t, K, T, 2, int((most + 15) / 16 * 16), kSelfW) <= kMaxBulkSmem;
}

bool matvec_fused_ok(DType t, int64_t K, int64_t T, size_t row_bytes, size_t scratch_bytes) {
  if (T < 1 || T > kMaxBulkT || K < 32) return false;
  const bool bulk = bulk_ok(t, K, T, scratch_bytes);
  if (!bulk && (T > kMaxT || smem_bytes(t, K, T) > kMaxSmem)) return false;
  bool ok = false;
  dispatch_format(t, [&]<DType DT>() {
    if constexpr (is_plain(DT)) {
      const int E = DT == DType::F32 ? 4 : 8;
      ok = K % E == 0 && row_bytes % 16 == 0;
    } else {
      ok = K % Fmt<DT>::kBlock == 0 && K % 64 == 0;  // whole pairs of units (pair_dot)
    }
  });
  return ok;
}

bool matvec_fused_prepares(DType t, int64_t K, int64_t T, size_t scratch_bytes) {
  return bulk_ok(t, K, T, scratch_bytes);
}

void matvec_fused(const MatvecJob& j, const MatvecScratch& scratch, cudaStream_t s) {
  unsigned* counter = scratch.counter;
  KILN_CHECK(j.nseg >= 1 && j.nseg <= kMaxMatvecSegs, "matvec: ", j.nseg, " weights");
  // Attention's splits merged by the product's one-pass prologue (one
  // token, blocks that prepare their own input); any other way, by the
  // combine kernel first, then the product of its output.
  const bool combine = j.pro == MatvecPrologue::AttnCombine;
  auto combine_first = [&] {
    attention_combine(j.x, j.T * (j.K / j.attn_head_dim), j.attn_head_dim, j.attn_splits, j.mat,
                      s);
    MatvecJob plain = j;
    plain.pro = MatvecPrologue::None;
    plain.x = j.mat;
    plain.mat = nullptr;
    matvec_fused(plain, scratch, s);
  };
  if (combine && (j.T != 1 || j.input_ready || j.K % j.attn_head_dim != 0 ||
                  j.K > kSelfW * 32 * 4 || one_pass_off()))
    return combine_first();
  Args a{};
  a.total = 0;
  for (int i = 0; i < j.nseg; ++i) {
    a.w[i] = static_cast<const uint8_t*>(j.w[i]);
    a.y[i] = j.y[i];
    a.n[i] = j.n[i];
    a.total += j.n[i];
  }
  a.nseg = j.nseg;
  a.row_bytes = j.row_bytes;
  a.row_bytes2 = j.row_bytes2;
  a.R2 = j.row_bytes2 > 0 ? 1 : 0;  // plan_pieces sets it
  a.K = j.K;
  a.T = int(j.T);
  a.pro = int(j.pro);
  a.attn_hd = int(j.attn_head_dim);
  a.attn_splits = j.attn_splits;
  a.x = j.x;
  a.x2 = j.x2;
  a.eps = j.eps;
  a.mat = j.mat;
  a.add_to = j.nseg == 1 ? j.add_to : nullptr;
  a.counter = counter;
  const size_t smem = smem_bytes(j.dtype, j.K, j.T);
  const bool ok = dispatch_format(j.dtype, [&]<DType DT>() {
    if (bulk_ok(j.dtype, j.K, j.T, scratch.input_bytes)) {
      a.xprep = scratch.input;
      a.x_threads = input_by_threads(input_bytes(is_plain(DT), j.K, j.T)) ? 1 : 0;
      // One token whose input is not ready: the product's blocks (one an
      // SM) make it themselves, which saves the preparation kernel and the
      // wait for it (~3 us a product).
      if constexpr (Dp4a<DT>::kHas || DT == DType::BF16 || DT == DType::F16) {
        if (j.T == 1 && !j.input_ready && self_prepares(j.pro)) {
          constexpr int W = kSelfW;
          plan_pieces<DT>(a, W);
          const size_t self_smem = bulk_smem_bytes(DT, j.K, j.T, a.nbuf, a.buf_bytes, W);
          auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
          const bool one_pass = j.pro != MatvecPrologue::SiluMul && aligned16(j.x) &&
                                aligned16(j.x2) && aligned16(j.mat) && !one_pass_off();
          if (combine && !(self_smem <= kMaxBulkSmem && one_pass)) return combine_first();
          if (self_smem <= kMaxBulkSmem) {  // else (the widest pieces) the usual way
            a.self_prep = 1;
            a.one_pass = one_pass ? 1 : 0;
            if (j.row_bytes2 == 0) {
              launch_bulk<W>(mv_bulk_kernel<DT, 1, W>, a, self_smem, s);
              return;
            }
            if constexpr (mixed_tail<DT>() != DType::F32) {
              KILN_CHECK(j.dtype2 == mixed_tail<DT>(), "matvec: a last weight in ",
                         dtype_name(j.dtype2), " beside ", dtype_name(j.dtype));
              launch_bulk<W>(mv_bulk_kernel<DT, 1, W, mixed_tail<DT>()>, a, self_smem, s);
              return;
            }
          }
        }
      }
      if (combine) return combine_first();
      KILN_CHECK(j.row_bytes2 == 0, "matvec: a last weight of another format, not one token");
      const int64_t per_row = (j.K + kPrepPerBlock - 1) / kPrepPerBlock;
      if (!j.input_ready)
        launch(prepare_input_kernel<!is_plain(DT)>, unsigned(j.T * per_row), kPrepThreads, 0, s,
               "matvec input", a);
      plan_pieces<DT>(a, kW);
      const size_t bulk_smem = bulk_smem_bytes(DT, j.K, j.T, a.nbuf, a.buf_bytes);
      if (j.T == 1)
        launch_bulk<kW>(mv_bulk_kernel<DT, 1, kW>, a, bulk_smem, s);
      else if (j.T <= kMaxT)
        launch_bulk<kW>(mv_bulk_kernel<DT, kMaxT, kW>, a, bulk_smem, s);
      else
        launch_bulk<kW>(mv_bulk_kernel<DT, kMaxBulkT, kW>, a, bulk_smem, s);
      return;
    }
    if (combine) return combine_first();
    if constexpr (is_plain(DT)) {
      if (j.T == 1)
        launch_matvec(mv_plain_kernel<DT, 1>, a, smem, s);
      else
        launch_matvec(mv_plain_kernel<DT, kMaxT>, a, smem, s);
    } else {
      if (j.T == 1)
        launch_matvec(mv_q8_kernel<DT, 1>, a, smem, s);
      else
        launch_matvec(mv_q8_kernel<DT, kMaxT>, a, smem, s);
    }
  });
  KILN_CHECK(ok, "the CUDA backend cannot compute with ", dtype_name(j.dtype), " weights");
  check_launch("matvec_fused");
}

}  // namespace kiln::cuda
