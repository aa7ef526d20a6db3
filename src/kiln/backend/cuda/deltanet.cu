// Gated DeltaNet on the GPU: the causal depthwise convolution in front of
// it, its gates, the delta rule and the gated norm behind it, plus the
// sigmoid gate of the hybrids' attention layers.
//
// As on the CPU (src/kiln/backend/cpu/deltanet.cpp, whose comment says why)
// the arithmetic inside is double: a value head whose output nearly cancels
// is scaled up ~1000x by the gated RMSNorm behind it, so f32 rounding inside
// the rule would reach the logits.
//
// The delta rule: one warp owns 32 value columns of one head's state,
// S[:, j] in shared memory as double, for the whole call; column j of the
// update depends only on S[:, j], q and k, so the heads' columns run in
// parallel blocks and the tokens of a prompt run in order inside each
// (the recurrent form, for prefill too).
#include <cuda_runtime.h>

#include <algorithm>

#include "kiln/backend/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

unsigned grid_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

__device__ __forceinline__ double silu_d(double x) { return x / (1.0 + exp(-x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

constexpr int kMaxConvKernel = 8;

__global__ void conv1d_silu_kernel(const float* __restrict__ x, int64_t T, int64_t C,
                                   const float* __restrict__ weight, int kernel, float* state,
                                   float* __restrict__ out, bool prefetch) {
  pdl_trigger();
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int hist = kernel - 1;
  // The weights before the wait (immutable), and the state's rows asked of
  // L2 (last written a step ago, so long out of it): after the wait the
  // state's loads would queue behind the next products' weight copies.
  float w[kMaxConvKernel], win[kMaxConvKernel];
  if (c < C) {
#pragma unroll
    for (int j = 0; j < kMaxConvKernel; ++j) w[j] = j < kernel ? weight[c * kernel + j] : 0.0f;
    if (prefetch && threadIdx.x % 32 == 0)
      for (int j = 0; j < hist; ++j) prefetch_l2(state + j * C + c);
  }
  pdl_wait();
  if (c >= C) return;
#pragma unroll
  for (int j = 0; j < kMaxConvKernel; ++j) win[j] = j < hist ? state[j * C + c] : 0.0f;
  for (int64_t t = 0; t < T; ++t) {
    win[hist] = x[t * C + c];
    double s = 0;
#pragma unroll
    for (int j = 0; j < kMaxConvKernel; ++j)
      if (j < kernel) s += double(w[j]) * win[j];
    out[t * C + c] = float(silu_d(s));
#pragma unroll
    for (int j = 0; j < kMaxConvKernel - 1; ++j)
      if (j < hist) win[j] = win[j + 1];
  }
#pragma unroll
  for (int j = 0; j < kMaxConvKernel; ++j)
    if (j < hist) state[j * C + c] = win[j];
}

// A prompt's convolution with every (token, channel) in its own thread (the
// kernel above walks the tokens in order, one thread per channel: 512
// dependent steps for a 512-token prompt). The same sum in the same order,
// so the results are identical; the state advances in a second launch,
// once every thread has read the old one.
__global__ void conv1d_silu_tokens_kernel(const float* __restrict__ x, int64_t T, int64_t C,
                                          const float* __restrict__ weight, int kernel,
                                          const float* __restrict__ state,
                                          float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * C) return;
  const int64_t t = i / C, c = i % C;
  const int hist = kernel - 1;
  double s = 0;
#pragma unroll
  for (int j = 0; j < kMaxConvKernel; ++j) {
    if (j >= kernel) break;
    const int64_t tau = t - hist + j;  // input position; < 0: from the state
    const float v = tau >= 0 ? x[tau * C + c] : state[(hist + tau) * C + c];
    s += double(weight[c * kernel + j]) * v;
  }
  out[i] = float(silu_d(s));
}

// state <- the last kernel - 1 inputs (from x, or the old state if T is shorter).
__global__ void conv1d_state_kernel(const float* __restrict__ x, int64_t T, int64_t C, int kernel,
                                    float* state) {
  pdl_trigger();
  pdl_wait();
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int hist = kernel - 1;
  float win[kMaxConvKernel];
#pragma unroll
  for (int j = 0; j < kMaxConvKernel; ++j) {
    if (j >= hist) break;
    const int64_t tau = T - hist + j;
    win[j] = tau >= 0 ? x[tau * C + c] : state[(hist + tau) * C + c];
  }
#pragma unroll
  for (int j = 0; j < kMaxConvKernel; ++j) {
    if (j >= hist) break;
    state[j * C + c] = win[j];
  }
}

__global__ void gates_kernel(const float* a, const float* b, const float* __restrict__ A,
                             const float* __restrict__ dt_bias, int64_t T, int64_t H, float* g,
                             float* beta) {
  pdl_trigger();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t h = i % H;
  const bool in = i < T * H;
  // The head's constants (weights) before the wait.
  const float bias = in ? dt_bias[h] : 0.0f, Ah = in ? A[h] : 0.0f;
  pdl_wait();
  if (!in) return;
  const double x = double(a[i]) + double(bias);
  const double sp = x > 20.0 ? x : log1p(exp(x));
  const float bb = b[i];
  g[i] = float(double(Ah) * sp);
  beta[i] = sigmoid_f(bb);
}

struct RuleArgs {
  const float* qkv;
  const float* g;
  const float* beta;
  float* state;
  float* out;
  int64_t T, nk, nv, dk, dv;
  bool tiled;
  bool prefetch = false;  // ask L2 for the state before the wait (state_prefetch_enabled)
};

// The key head a value head reads: tiled (value head h -> h % nk, llama.cpp's
// GGUF order) or grouped (consecutive value heads share one, transformers').
__device__ __forceinline__ int64_t key_head(const RuleArgs& a, int64_t h) {
  return a.tiled ? h % a.nk : h / (a.nv / a.nk);
}

// Block (32 threads) = value head blockIdx.x, columns 32 * blockIdx.y ...
__global__ void __launch_bounds__(32) delta_rule_kernel(const __grid_constant__ RuleArgs a) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ double sm[];
  const int64_t dk = a.dk, dv = a.dv;
  double* S = sm;             // [dk][32]
  double* qn = sm + dk * 32;  // [dk]
  double* kn = qn + dk;       // [dk]
  const int lane = threadIdx.x;
  const int64_t h = blockIdx.x;
  const int64_t j = int64_t(blockIdx.y) * 32 + lane;
  const bool col = j < dv;
  const int64_t key_dim = a.nk * dk;
  const int64_t kh = key_head(a, h);
  const int64_t stride = 2 * key_dim + a.nv * dv;
  float* Sg = a.state + h * dk * dv;
  for (int64_t i = 0; i < dk; ++i) S[i * 32 + lane] = col ? double(Sg[i * dv + j]) : 0.0;
  const double scale = 1.0 / sqrt(double(dk));
  for (int64_t t = 0; t < a.T; ++t) {
    const float* row = a.qkv + t * stride;
    const float* q = row + kh * dk;
    const float* k = row + key_dim + kh * dk;
    double sq = 0, sk = 0;
    for (int64_t i = lane; i < dk; i += 32) {
      const double qv = q[i], kv = k[i];
      sq += qv * qv;
      sk += kv * kv;
    }
    for (int o = 16; o > 0; o >>= 1) {
      sq += __shfl_xor_sync(0xffffffffu, sq, o);
      sk += __shfl_xor_sync(0xffffffffu, sk, o);
    }
    const double iq = 1.0 / sqrt(sq + 1e-6), ik = 1.0 / sqrt(sk + 1e-6);
    __syncwarp();  // the previous token's readers of qn/kn are done
    for (int64_t i = lane; i < dk; i += 32) {
      qn[i] = double(q[i]) * iq * scale;
      kn[i] = double(k[i]) * ik;
    }
    __syncwarp();
    const double decay = exp(double(a.g[t * a.nv + h]));
    const double b = a.beta[t * a.nv + h];
    double acc = 0;
    for (int64_t i = 0; i < dk; ++i) {
      const double s = S[i * 32 + lane] * decay;
      S[i * 32 + lane] = s;
      acc += s * kn[i];
    }
    const double v = col ? double(row[2 * key_dim + h * dv + j]) : 0.0;
    const double delta = (v - acc) * b;
    double o = 0;
    for (int64_t i = 0; i < dk; ++i) {
      const double s = S[i * 32 + lane] + kn[i] * delta;
      S[i * 32 + lane] = s;
      o += s * qn[i];
    }
    if (col) a.out[t * a.nv * dv + h * dv + j] = float(o);
  }
  if (col)
    for (int64_t i = 0; i < dk; ++i) Sg[i * dv + j] = float(S[i * 32 + lane]);
}

// The same rule with the state in registers, for head_k_dim <= 128: four
// warps each hold 32 rows of the 32 columns (a double each), so a token's
// two passes over the state are 32 steps per lane instead of 128 through
// shared memory, and the next token's q, k, v, g and beta are loaded while
// this one is computed (in the kernel above every token waited on those
// loads, and its sums were one dependent chain of 128: ~6 us a token, 84%
// of a Qwen3.5-2B prefill). The norms and the per-column sums meet in
// shared memory, double-buffered by token parity, behind two barriers a
// token. Normalisation is factored out of the sums (k / |k| . S =
// (k . S) / |k|), so results differ from the kernel above by double
// rounding only.
constexpr int kRuleWarps = 4;
constexpr int kRuleRows = 32;  // state rows per warp

__global__ void __launch_bounds__(kRuleWarps * 32)
    delta_rule_regs_kernel(const __grid_constant__ RuleArgs a) {
  pdl_trigger();
  __shared__ double part_k[2][kRuleWarps][32], part_o[2][kRuleWarps][32];
  __shared__ double part_q2[2][kRuleWarps], part_k2[2][kRuleWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t dk = a.dk, dv = a.dv;
  const int64_t h = blockIdx.x;
  const int64_t j = int64_t(blockIdx.y) * 32 + lane;
  const bool col = j < dv;
  const int64_t key_dim = a.nk * dk;
  const int64_t kh = key_head(a, h);
  const int64_t stride = 2 * key_dim + a.nv * dv;
  const int64_t r0 = int64_t(warp) * kRuleRows;
  const bool my_row = r0 + lane < dk;  // lane holds q, k of row r0 + lane
  float* Sg = a.state + h * dk * dv;
  // The warp's 32 rows of the block's 32 columns, a 128-byte line a row
  // (lane i asks for row r0 + i), asked of L2 while the kernels before run:
  // the state was last written a step ago, and after the wait its loads
  // would queue behind the next products' weight copies.
  if (a.prefetch && my_row) prefetch_l2(Sg + (r0 + lane) * dv + int64_t(blockIdx.y) * 32);
  pdl_wait();
  double S[kRuleRows];
#pragma unroll
  for (int r = 0; r < kRuleRows; ++r)
    S[r] = col && r0 + r < dk ? double(Sg[(r0 + r) * dv + j]) : 0.0;
  const double scale = 1.0 / sqrt(double(dk));

  auto load = [&](int64_t t, float& qv, float& kv, float& vv, float& gv, float& bv) {
    const float* row = a.qkv + t * stride;
    qv = my_row ? row[kh * dk + r0 + lane] : 0.0f;
    kv = my_row ? row[key_dim + kh * dk + r0 + lane] : 0.0f;
    vv = col ? row[2 * key_dim + h * dv + j] : 0.0f;
    gv = a.g[t * a.nv + h];
    bv = a.beta[t * a.nv + h];
  };
  float qv, kv, vv, gv, bv;
  load(0, qv, kv, vv, gv, bv);
  for (int64_t t = 0; t < a.T; ++t) {
    const int par = int(t & 1);
    const float q_t = qv, k_t = kv, v_t = vv, g_t = gv, b_t = bv;
    if (t + 1 < a.T) load(t + 1, qv, kv, vv, gv, bv);  // in flight during this token

    // Pass 1: this warp's share of the norms and of k . S[:, j].
    double q2 = double(q_t) * q_t, k2 = double(k_t) * k_t;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      q2 += __shfl_xor_sync(0xffffffffu, q2, o);
      k2 += __shfl_xor_sync(0xffffffffu, k2, o);
    }
    double d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma unroll
    for (int r = 0; r < kRuleRows; r += 4) {
      d0 += S[r] * double(__shfl_sync(0xffffffffu, k_t, r));
      d1 += S[r + 1] * double(__shfl_sync(0xffffffffu, k_t, r + 1));
      d2 += S[r + 2] * double(__shfl_sync(0xffffffffu, k_t, r + 2));
      d3 += S[r + 3] * double(__shfl_sync(0xffffffffu, k_t, r + 3));
    }
    part_k[par][warp][lane] = (d0 + d1) + (d2 + d3);
    if (lane == 0) part_q2[par][warp] = q2, part_k2[par][warp] = k2;
    __syncthreads();

    // Pass 2: the delta, the update of this warp's rows, its share of q . S.
    double sq = 0, sk = 0, ks = 0;
#pragma unroll
    for (int w = 0; w < kRuleWarps; ++w) {
      sq += part_q2[par][w];
      sk += part_k2[par][w];
      ks += part_k[par][w][lane];
    }
    const double iq = 1.0 / sqrt(sq + 1e-6), ik = 1.0 / sqrt(sk + 1e-6);
    const double decay = exp(double(g_t));
    const double delta = (double(v_t) - decay * ks * ik) * double(b_t);
    const double kd = ik * delta;
    double o0 = 0, o1 = 0, o2 = 0, o3 = 0;
#pragma unroll
    for (int r = 0; r < kRuleRows; r += 4) {
      S[r] = S[r] * decay + double(__shfl_sync(0xffffffffu, k_t, r)) * kd;
      S[r + 1] = S[r + 1] * decay + double(__shfl_sync(0xffffffffu, k_t, r + 1)) * kd;
      S[r + 2] = S[r + 2] * decay + double(__shfl_sync(0xffffffffu, k_t, r + 2)) * kd;
      S[r + 3] = S[r + 3] * decay + double(__shfl_sync(0xffffffffu, k_t, r + 3)) * kd;
      o0 += S[r] * double(__shfl_sync(0xffffffffu, q_t, r));
      o1 += S[r + 1] * double(__shfl_sync(0xffffffffu, q_t, r + 1));
      o2 += S[r + 2] * double(__shfl_sync(0xffffffffu, q_t, r + 2));
      o3 += S[r + 3] * double(__shfl_sync(0xffffffffu, q_t, r + 3));
    }
    part_o[par][warp][lane] = (o0 + o1) + (o2 + o3);
    __syncthreads();
    if (warp == 0 && col) {
      double o = 0;
#pragma unroll
      for (int w = 0; w < kRuleWarps; ++w) o += part_o[par][w][lane];
      a.out[t * a.nv * dv + h * dv + j] = float(o * iq * scale);
    }
  }
#pragma unroll
  for (int r = 0; r < kRuleRows; ++r)
    if (col && r0 + r < dk) Sg[(r0 + r) * dv + j] = float(S[r]);
}

// One warp per row.
__global__ void rmsnorm_gated_kernel(const float* x, const float* __restrict__ w, const float* z,
                                     int64_t rows, int64_t dim, float eps, float* y) {
  pdl_trigger();
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  // The norm weight (immutable; a 128-byte line a lane) asked of L2 first.
  if (r < rows && lane * 32 < dim) prefetch_l2(w + lane * 32);
  pdl_wait();
  if (r >= rows) return;
  const float* xr = x + r * dim;
  const float* zr = z + r * dim;
  float* yr = y + r * dim;
  double ss = 0;
  for (int64_t i = lane; i < dim; i += 32) ss += double(xr[i]) * xr[i];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  const double inv = 1.0 / sqrt(ss / double(dim) + eps);
  for (int64_t i = lane; i < dim; i += 32)
    yr[i] = float(double(w[i]) * (double(xr[i]) * inv) * silu_d(zr[i]));
}

__global__ void sigmoid_mul_kernel(float* x, const float* __restrict__ gate, int64_t rows,
                                   int64_t dim, bool per_row) {
  pdl_trigger();
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * dim) return;
  x[i] *= sigmoid_f(gate[per_row ? i / dim : i]);
}

// The chunked form, for prompts (the CPU's chunked_head, same algebra): in
// chunks of kChunk tokens the sequential updates fold into a triangular
// solve, so a prompt is T / kChunk dependent steps instead of T. Two kernels:
//
// 1. chunk_prep, a block per (value head, chunk), all chunks in parallel:
//    the chunk's norms and cumulative log-decay gc; A = -beta_i (k_i . k_j)
//    exp(gc_i - gc_j) below the diagonal, T = (I - A)^-1 by forward
//    substitution (a column per 4 lanes, columns independent);
//    U = T beta V, W = T beta exp(gc) K, and the masked decayed scores
//    M_ij = (q_i . k_j) exp(gc_i - gc_j), j <= i, written to the scratch.
// 2. chunk_scan, a block per (value head, 16 value columns), chunks in order
//    with the state's columns in shared memory: new values V' = U - W S,
//    o = exp(gc) q S + M V', S = exp(gc_last) S + (exp(gc_last - gc) k)^T V'.
//
// q and k are kept raw (f32, as they arrive) with their inverse norms apart
// (k / |k| . x = (k . x) / |k|): products of f32 values are exact in double,
// so this differs from normalising first by double rounding only.
constexpr int kChunk = 64;
constexpr int64_t kChunkMinTokens = 64;  // shorter prompts: the recurrent form is as fast
constexpr int kChunkMaxDim = 128;
constexpr int kPrepThreads = 256;
constexpr int kScanThreads = 256;

struct ChunkArgs : RuleArgs {
  int n_chunks;
  // Scratch (double): U [nv][T][dv], W [nv][T][dk], M [nv][n_chunks][kChunk][kChunk],
  // gc, q_inv (1 / |q| / sqrt(dk)), k_inv (1 / |k|) [nv][T].
  double *U, *W, *M, *gc, *q_inv, *k_inv;
};


// Shared-memory rows padded so that lanes reading different rows of a
// column fall in different banks.
constexpr int kPad = kChunk + 1;

__global__ void __launch_bounds__(kPrepThreads)
    delta_chunk_prep_kernel(const __grid_constant__ ChunkArgs a) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ double smd[];
  const int dk = int(a.dk), dv = int(a.dv), dkp = dk + 1;
  double* A = smd;              // [kChunk][kPad]
  double* Tm = A + kChunk * kPad;  // [kChunk][kPad]
  double* gc = Tm + kChunk * kPad;
  double* bt = gc + kChunk;
  double* iq = bt + kChunk;
  double* ik = iq + kChunk;
  double* ek = ik + kChunk;     // exp(gc_j) / |k_j|
  float* Kf = reinterpret_cast<float*>(ek + kChunk);  // [kChunk][dkp]
  float* QVf = Kf + kChunk * dkp;  // q [kChunk][dkp], then v [kChunk][dv]
  const int64_t h = blockIdx.x, c = blockIdx.y, t0 = c * kChunk;
  const int L = int(a.T - t0 < kChunk ? a.T - t0 : int64_t(kChunk));
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t key_dim = a.nk * a.dk, stride = 2 * key_dim + a.nv * a.dv;
  const int64_t kh = key_head(a, h);
  const double scale = 1.0 / sqrt(double(dk));
  // Register tiles of 4 x 4 (scores) and 4 rows x 8 columns (U, W): thread
  // (ti, tj) = (tid / 16, tid % 16).
  const int ti = tid / 16, tj = tid % 16, i0 = ti * 4, j0 = tj * 4;

  for (int idx = tid; idx < kChunk * dk; idx += kPrepThreads) {
    const int i = idx / dk, d = idx % dk;
    const float* row = a.qkv + (t0 + i) * stride;
    QVf[i * dkp + d] = i < L ? row[kh * dk + d] : 0.0f;
    Kf[i * dkp + d] = i < L ? row[key_dim + kh * dk + d] : 0.0f;
  }
  __syncthreads();
  for (int i = warp; i < kChunk; i += kPrepThreads / 32) {
    double sq = 0, sk = 0;
    for (int d = lane; d < dk; d += 32) {
      sq += double(QVf[i * dkp + d]) * QVf[i * dkp + d];
      sk += double(Kf[i * dkp + d]) * Kf[i * dkp + d];
    }
    for (int o = 16; o > 0; o >>= 1) {
      sq += __shfl_xor_sync(0xffffffffu, sq, o);
      sk += __shfl_xor_sync(0xffffffffu, sk, o);
    }
    if (lane == 0) {
      iq[i] = 1.0 / sqrt(sq + 1e-6);
      ik[i] = 1.0 / sqrt(sk + 1e-6);
      bt[i] = i < L ? double(a.beta[(t0 + i) * a.nv + h]) : 0.0;
    }
  }
  if (tid == 0) {
    // The cumulative log-decay reaches hundreds over a chunk: kept in double.
    double acc = 0;
    for (int i = 0; i < kChunk; ++i) {
      if (i < L) acc += double(a.g[(t0 + i) * a.nv + h]);
      gc[i] = acc;
    }
  }
  __syncthreads();
  if (tid < kChunk) {
    ek[tid] = exp(gc[tid]) * ik[tid];
    if (tid < L) {
      const int64_t at = h * a.T + t0 + tid;
      a.gc[at] = gc[tid];
      a.q_inv[at] = iq[tid] * scale;
      a.k_inv[at] = ik[tid];
    }
  }
  // A below the diagonal and M on and below it, a 4 x 4 tile per thread
  // (tiles wholly above the diagonal are zeros).
  double* Mg = a.M + (h * a.n_chunks + c) * kChunk * kChunk;
  {
    double kk[4][4] = {}, qk[4][4] = {};
    if (j0 <= i0 + 3) {
      for (int d = 0; d < dk; ++d) {
        double ki[4], qi[4], kj[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          ki[r] = Kf[(i0 + r) * dkp + d];
          qi[r] = QVf[(i0 + r) * dkp + d];
          kj[r] = Kf[(j0 + r) * dkp + d];
        }
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            kk[r][q] = fma(ki[r], kj[q], kk[r][q]);
            qk[r][q] = fma(qi[r], kj[q], qk[r][q]);
          }
      }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int i = i0 + r, j = j0 + q;
        const double decay = j <= i && i < L ? exp(gc[i] - gc[j]) : 0.0;
        A[i * kPad + j] = j < i ? -(bt[i] * kk[r][q] * ik[i] * ik[j]) * decay : 0.0;
        Mg[i * kChunk + j] = qk[r][q] * iq[i] * scale * ik[j] * decay;
      }
  }
  __syncthreads();
  // V over q's buffer (q is done with).
  for (int idx = tid; idx < kChunk * dv; idx += kPrepThreads) {
    const int i = idx / dv, d = idx % dv;
    QVf[i * dv + d] = i < L ? a.qkv[(t0 + i) * stride + 2 * key_dim + h * dv + d] : 0.0f;
  }
  // T = (I - A)^-1: T_ij = sum_{j <= m < i} A_im T_mj (i > j), T_jj = 1. Column
  // j is four adjacent lanes' work (partial sums over m = r, r + 4, ...).
  {
    const int j = tid / 4, r = tid % 4;
    for (int i = 0; i < kChunk; ++i) {
      double part = 0;
      for (int m = j + r; m < i; m += 4) part += A[i * kPad + m] * Tm[m * kPad + j];
      part += __shfl_xor_sync(0xffffffffu, part, 1);
      part += __shfl_xor_sync(0xffffffffu, part, 2);
      if (r == 0) Tm[i * kPad + j] = i < j ? 0.0 : i == j ? 1.0 : part;
      __syncwarp();
    }
  }
  __syncthreads();
  // Tb = T diag(beta), then U = Tb v and W = Tb (exp(gc) k / |k|), rows i < L:
  // 4 rows x 8 columns (tj, tj + 16, ...) per thread and pass.
  for (int idx = tid; idx < kChunk * kChunk; idx += kPrepThreads)
    Tm[(idx / kChunk) * kPad + idx % kChunk] *= bt[idx % kChunk];
  __syncthreads();
  const int j_end = min(i0 + 4, L);
  for (int pass = 0; pass < 2; ++pass) {
    const bool is_w = pass == 1;
    const int width = is_w ? dk : dv;
    double* dst = is_w ? a.W + (h * a.T + t0) * dk : a.U + (h * a.T + t0) * dv;
    for (int c0 = 0; c0 < width; c0 += 128) {
      double acc[4][8] = {};
      for (int j = 0; j < j_end; ++j) {
        double t[4], x[8];
#pragma unroll
        for (int r = 0; r < 4; ++r) t[r] = Tm[(i0 + r) * kPad + j];
#pragma unroll
        for (int m = 0; m < 8; ++m) {
          const int col = c0 + tj + 16 * m;
          x[m] = col < width ? (is_w ? double(Kf[j * dkp + col]) * ek[j] : double(QVf[j * dv + col]))
                             : 0.0;
        }
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
          for (int m = 0; m < 8; ++m) acc[r][m] = fma(t[r], x[m], acc[r][m]);
      }
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int m = 0; m < 8; ++m) {
          const int col = c0 + tj + 16 * m;
          if (i0 + r < L && col < width) dst[(i0 + r) * width + col] = acc[r][m];
        }
    }
  }
}

// A block per (value head, kScanCols value columns); thread (grp, c) =
// (tid / kScanCols, tid % kScanCols) takes column c and rows of the chunk
// (4 per group) or of the state (dk / 16 per group). Each chunk's W, q, k
// and M are staged in shared memory first, with coalesced loads.
constexpr int kScanCols = 16;
constexpr int kScanGroups = kScanThreads / kScanCols;  // 16

__global__ void __launch_bounds__(kScanThreads)
    delta_chunk_scan_kernel(const __grid_constant__ ChunkArgs a) {
  pdl_trigger();
  pdl_wait();
  extern __shared__ double smd[];
  const int dk = int(a.dk), dv = int(a.dv), wst = dk + 2;  // even: 16-byte rows of pairs
  double* S = smd;                         // [dk][kScanCols]
  double* Vn = S + dk * kScanCols;         // [kChunk][kScanCols]: the chunk's new values
  double* Vk = Vn + kChunk * kScanCols;    // the same, times exp(gc_last - gc_i) / |k_i|
  double* Wc = Vk + kChunk * kScanCols;    // [kChunk][wst]
  double* Mc = Wc + kChunk * wst;          // [kChunk][kPad]
  float* Qc = reinterpret_cast<float*>(Mc + kChunk * kPad);  // [kChunk][wst]
  float* Kc = Qc + kChunk * wst;                               // [kChunk][dk]
  const int tid = threadIdx.x, c = tid % kScanCols, grp = tid / kScanCols;
  const int64_t h = blockIdx.x, col = int64_t(blockIdx.y) * kScanCols + c;
  const bool in = col < dv;
  const int64_t key_dim = a.nk * a.dk, stride = 2 * key_dim + a.nv * a.dv;
  const int64_t kh = key_head(a, h);
  const int rows_per_grp = dk / kScanGroups, d0 = grp * rows_per_grp;
  const int i0 = grp * (kChunk / kScanGroups);  // 4 chunk rows per group
  float* Sg = a.state + h * a.dk * a.dv;
  for (int d = grp; d < dk; d += kScanGroups)
    S[d * kScanCols + c] = in ? double(Sg[d * dv + col]) : 0.0;

  for (int ch = 0; ch < a.n_chunks; ++ch) {
    const int64_t t0 = int64_t(ch) * kChunk;
    const int L = int(a.T - t0 < kChunk ? a.T - t0 : int64_t(kChunk));
    const double* Ug = a.U + (h * a.T + t0) * dv;
    const double* Wg = a.W + (h * a.T + t0) * dk;
    const double* Mg = a.M + (h * a.n_chunks + ch) * kChunk * kChunk;
    const int64_t at0 = h * a.T + t0;
    __syncthreads();  // the previous chunk's readers are done
#pragma unroll 4
    for (int idx = tid; idx < kChunk * dk; idx += kScanThreads) {
      const int i = idx / dk, d = idx % dk;
      const bool v = i < L;
      const float* row = a.qkv + (t0 + i) * stride;
      Wc[i * wst + d] = v ? Wg[idx] : 0.0;
      Qc[i * wst + d] = v ? row[kh * dk + d] : 0.0f;
      Kc[i * dk + d] = v ? row[key_dim + kh * dk + d] : 0.0f;
    }
#pragma unroll 4
    for (int idx = tid; idx < kChunk * kChunk; idx += kScanThreads)
      Mc[(idx / kChunk) * kPad + idx % kChunk] = idx / kChunk < L ? Mg[idx] : 0.0;
    __syncthreads();

    // V' = U - W S, and the inter-chunk part of o: exp(gc_i) q_i S.
    double ws[4] = {}, qs[4] = {};
    for (int d = 0; d < dk; d += 2) {
      const double s0 = S[d * kScanCols + c], s1 = S[(d + 1) * kScanCols + c];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const double2 w = *reinterpret_cast<const double2*>(&Wc[(i0 + r) * wst + d]);
        const float2 q = *reinterpret_cast<const float2*>(&Qc[(i0 + r) * wst + d]);
        ws[r] = fma(w.x, s0, ws[r]);
        ws[r] = fma(w.y, s1, ws[r]);
        qs[r] = fma(double(q.x), s0, qs[r]);
        qs[r] = fma(double(q.y), s1, qs[r]);
      }
    }
    const double g_last = a.gc[at0 + L - 1];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = i0 + r;
      double v = 0, vk = 0;
      if (i < L) {
        v = (in ? Ug[int64_t(i) * dv + col] : 0.0) - ws[r];
        vk = v * exp(g_last - a.gc[at0 + i]) * a.k_inv[at0 + i];
        qs[r] *= a.q_inv[at0 + i] * exp(a.gc[at0 + i]);
      }
      Vn[i * kScanCols + c] = v;
      Vk[i * kScanCols + c] = vk;
    }
    __syncthreads();  // Vn, Vk complete; every read of S above is done

    // o_i = exp(gc_i) q_i S + sum_{j <= i} M_ij V'_j (M is zero above the diagonal).
    {
      double o[4] = {qs[0], qs[1], qs[2], qs[3]};
      const int j_end = min(i0 + 4, L);
      for (int j = 0; j < j_end; ++j) {
        const double vj = Vn[j * kScanCols + c];
#pragma unroll
        for (int r = 0; r < 4; ++r) o[r] = fma(Mc[(i0 + r) * kPad + j], vj, o[r]);
      }
#pragma unroll
      for (int r = 0; r < 4; ++r)
        if (i0 + r < L && in) a.out[(t0 + i0 + r) * a.nv * dv + h * dv + col] = float(o[r]);
    }
    // S = exp(gc_last) S + sum_i (exp(gc_last - gc_i) k_i / |k_i|) V'_i^T.
    {
      const double e_last = exp(g_last);
      double st[kChunkMaxDim / kScanGroups];
#pragma unroll
      for (int m = 0; m < kChunkMaxDim / kScanGroups; ++m)
        if (m < rows_per_grp) st[m] = S[(d0 + m) * kScanCols + c] * e_last;
      for (int i = 0; i < L; ++i) {
        const double v = Vk[i * kScanCols + c];
        const float* kr = Kc + i * dk + d0;
#pragma unroll
        for (int m = 0; m < kChunkMaxDim / kScanGroups; ++m)
          if (m < rows_per_grp) st[m] = fma(double(kr[m]), v, st[m]);
      }
#pragma unroll
      for (int m = 0; m < kChunkMaxDim / kScanGroups; ++m)
        if (m < rows_per_grp) S[(d0 + m) * kScanCols + c] = st[m];
    }
  }
  __syncthreads();
  for (int d = grp; d < dk; d += kScanGroups)
    if (in) Sg[d * dv + col] = float(S[d * kScanCols + c]);
}

size_t chunk_prep_smem(int64_t dk, int64_t dv) {
  return size_t(2 * kChunk * kPad + 5 * kChunk) * sizeof(double) +
         size_t(kChunk * (dk + 1) + kChunk * std::max(dk + 1, dv)) * sizeof(float);
}
size_t chunk_scan_smem(int64_t dk) {
  return size_t(dk * kScanCols + 2 * kChunk * kScanCols + kChunk * (dk + 2) + kChunk * kPad) *
             sizeof(double) +
         size_t(kChunk * (dk + 2) + kChunk * dk) * sizeof(float);
}

// KILN_CUDA_DELTA=recurrent keeps prompts in the recurrent form, to compare.
bool chunked_rule_enabled() {
  static const bool on =
      !env_is("KILN_CUDA_DELTA", "recurrent") && !env_is("KILN_CUDA_DELTA", "smem");
  return on;
}

bool registers_rule_enabled() {
  static const bool on = !env_is("KILN_CUDA_DELTA", "smem");
  return on;
}

// KILN_CUDA_DELTA_PREFETCH=0: the convolution and the rule read their
// states after the wait only, to compare.
bool state_prefetch_enabled() {
  static const bool on = env_int("KILN_CUDA_DELTA_PREFETCH", 1, 0, 1) != 0;
  return on;
}

}  // namespace

void conv1d_silu(const float* x, int64_t T, int64_t C, const float* weight, int64_t kernel,
                 float* state, float* out, cudaStream_t s) {
  KILN_CHECK(kernel >= 1 && kernel <= kMaxConvKernel, "conv1d_silu: kernel ", kernel,
             " is over the CUDA backend's limit of ", kMaxConvKernel);
  if (T <= 0 || C <= 0) return;
  if (T >= 8) {  // a prompt: every token in parallel
    launch(conv1d_silu_tokens_kernel, grid_for(T * C, 256), 256, 0, s, "conv1d_silu", x, T, C,
           weight, int(kernel), state, out);
    launch(conv1d_state_kernel, grid_for(C, 128), 128, 0, s, "conv1d_silu (state)", x, T, C,
           int(kernel), state);
    return;
  }
  launch(conv1d_silu_kernel, grid_for(C, 128), 128, 0, s, "conv1d_silu",
         x, T, C, weight, int(kernel), state, out, state_prefetch_enabled());
}

void deltanet_gates(const float* a, const float* b, const float* A, const float* dt_bias,
                    int64_t T, int64_t H, float* g, float* beta, cudaStream_t s) {
  if (T * H <= 0) return;
  launch(gates_kernel, grid_for(T * H, 256), 256, 0, s, "deltanet_gates",
         a, b, A, dt_bias, T, H, g, beta);
}

size_t delta_rule_scratch_bytes(int64_t T, int64_t nv, int64_t dk, int64_t dv) {
  if (T < kChunkMinTokens || dk > kChunkMaxDim || dv > kChunkMaxDim || dk % 16 != 0 ||
      !chunked_rule_enabled())
    return 0;
  const int64_t chunks = (T + kChunk - 1) / kChunk;
  return size_t(nv * T * (dv + dk + 3) + nv * chunks * kChunk * kChunk) * sizeof(double);
}

void gated_delta_rule(const float* qkv, const float* g, const float* beta, float* state,
                      int64_t T, int64_t nk, int64_t nv, int64_t dk, int64_t dv, bool tiled,
                      float* out, void* scratch, size_t scratch_bytes, cudaStream_t s) {
  KILN_CHECK(nk > 0 && nv % nk == 0, "gated delta rule: ", nv,
             " value heads are not a multiple of ", nk, " key heads");
  const size_t smem = size_t(dk) * 34 * sizeof(double);
  KILN_CHECK(smem <= 200 * 1024, "gated delta rule: head_k_dim ", dk,
             " is over the CUDA backend's limit");
  if (T <= 0) return;
  const size_t need = delta_rule_scratch_bytes(T, nv, dk, dv);
  if (need > 0 && scratch && scratch_bytes >= need) {
    static bool raised = false;
    if (!raised) {
      check(cudaFuncSetAttribute(delta_chunk_prep_kernel,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 int(chunk_prep_smem(kChunkMaxDim, kChunkMaxDim))),
            "delta rule shared memory");
      check(cudaFuncSetAttribute(delta_chunk_scan_kernel,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 int(chunk_scan_smem(kChunkMaxDim))),
            "delta rule shared memory");
      raised = true;
    }
    ChunkArgs a;
    static_cast<RuleArgs&>(a) = RuleArgs{qkv, g, beta, state, out, T, nk, nv, dk, dv, tiled};
    a.n_chunks = int((T + kChunk - 1) / kChunk);
    auto* base = static_cast<double*>(scratch);
    a.U = base;
    a.W = a.U + nv * T * dv;
    a.M = a.W + nv * T * dk;
    a.gc = a.M + nv * a.n_chunks * kChunk * kChunk;
    a.q_inv = a.gc + nv * T;
    a.k_inv = a.q_inv + nv * T;
    launch(delta_chunk_prep_kernel, dim3(unsigned(nv), unsigned(a.n_chunks)), kPrepThreads,
           chunk_prep_smem(dk, dv), s, "gated_delta_rule (chunks)", a);
    launch(delta_chunk_scan_kernel, dim3(unsigned(nv), unsigned((dv + kScanCols - 1) / kScanCols)), kScanThreads,
           chunk_scan_smem(dk), s, "gated_delta_rule (scan)", a);
    return;
  }
  if (dk <= kRuleWarps * kRuleRows && registers_rule_enabled()) {
    RuleArgs a{qkv, g, beta, state, out, T, nk, nv, dk, dv, tiled, state_prefetch_enabled()};
    launch(delta_rule_regs_kernel, dim3(unsigned(nv), unsigned((dv + 31) / 32)),
           kRuleWarps * 32, 0, s, "gated_delta_rule", a);
    return;
  }
  static bool raised = false;
  if (!raised) {
    check(cudaFuncSetAttribute(delta_rule_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               200 * 1024),
          "delta rule shared memory");
    raised = true;
  }
  RuleArgs a{qkv, g, beta, state, out, T, nk, nv, dk, dv, tiled};
  launch(delta_rule_kernel, dim3(unsigned(nv), unsigned((dv + 31) / 32)), 32, smem, s,
         "gated_delta_rule", a);
}

void rmsnorm_gated(const float* x, const float* w, const float* z, int64_t rows, int64_t dim,
                   float eps, float* y, cudaStream_t s) {
  if (rows <= 0) return;
  launch(rmsnorm_gated_kernel, grid_for(rows, 8), 256, 0, s, "rmsnorm_gated",
         x, w, z, rows, dim, eps, y);
}

void sigmoid_mul(float* x, const float* gate, int64_t rows, int64_t dim, bool per_row,
                 cudaStream_t s) {
  if (rows * dim <= 0) return;
  launch(sigmoid_mul_kernel, grid_for(rows * dim, 256), 256, 0, s, "sigmoid_mul",
         x, gate, rows, dim, per_row);
}

}  // namespace kiln::cuda
