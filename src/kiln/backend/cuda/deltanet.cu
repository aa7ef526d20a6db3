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
#include <cstdlib>
#include <string>

#include "kiln/backend/cuda/cuda_common.cuh"

namespace kiln::cuda {
namespace {

unsigned grid_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

__device__ __forceinline__ double silu_d(double x) { return x / (1.0 + exp(-x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

constexpr int kMaxConvKernel = 8;

__global__ void conv1d_silu_kernel(const float* __restrict__ x, int64_t T, int64_t C,
                                   const float* __restrict__ weight, int kernel, float* state,
                                   float* __restrict__ out) {
  pdl_trigger();
  pdl_wait();
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int hist = kernel - 1;
  float w[kMaxConvKernel], win[kMaxConvKernel];
#pragma unroll
  for (int j = 0; j < kMaxConvKernel; ++j) {
    w[j] = j < kernel ? weight[c * kernel + j] : 0.0f;
    win[j] = j < hist ? state[j * C + c] : 0.0f;
  }
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
  pdl_wait();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * H) return;
  const int64_t h = i % H;
  const double x = double(a[i]) + double(dt_bias[h]);
  const double sp = x > 20.0 ? x : log1p(exp(x));
  const float bb = b[i];
  g[i] = float(double(A[h]) * sp);
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
};

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
  const int64_t kh = a.tiled ? h % a.nk : h / (a.nv / a.nk);
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
  pdl_wait();
  __shared__ double part_k[2][kRuleWarps][32], part_o[2][kRuleWarps][32];
  __shared__ double part_q2[2][kRuleWarps], part_k2[2][kRuleWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t dk = a.dk, dv = a.dv;
  const int64_t h = blockIdx.x;
  const int64_t j = int64_t(blockIdx.y) * 32 + lane;
  const bool col = j < dv;
  const int64_t key_dim = a.nk * dk;
  const int64_t kh = a.tiled ? h % a.nk : h / (a.nv / a.nk);
  const int64_t stride = 2 * key_dim + a.nv * dv;
  const int64_t r0 = int64_t(warp) * kRuleRows;
  const bool my_row = r0 + lane < dk;  // lane holds q, k of row r0 + lane
  float* Sg = a.state + h * dk * dv;
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
  pdl_wait();
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
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

// KILN_CUDA_DELTA=smem keeps the shared-memory kernel, to compare.
bool registers_rule_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("KILN_CUDA_DELTA");
    return !(e && std::string(e) == "smem");
  }();
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
         x, T, C, weight, int(kernel), state, out);
}

void deltanet_gates(const float* a, const float* b, const float* A, const float* dt_bias,
                    int64_t T, int64_t H, float* g, float* beta, cudaStream_t s) {
  if (T * H <= 0) return;
  launch(gates_kernel, grid_for(T * H, 256), 256, 0, s, "deltanet_gates",
         a, b, A, dt_bias, T, H, g, beta);
}

void gated_delta_rule(const float* qkv, const float* g, const float* beta, float* state,
                      int64_t T, int64_t nk, int64_t nv, int64_t dk, int64_t dv, bool tiled,
                      float* out, cudaStream_t s) {
  KILN_CHECK(nk > 0 && nv % nk == 0, "gated delta rule: ", nv,
             " value heads are not a multiple of ", nk, " key heads");
  const size_t smem = size_t(dk) * 34 * sizeof(double);
  KILN_CHECK(smem <= 200 * 1024, "gated delta rule: head_k_dim ", dk,
             " is over the CUDA backend's limit");
  if (T <= 0) return;
  if (dk <= kRuleWarps * kRuleRows && registers_rule_enabled()) {
    RuleArgs a{qkv, g, beta, state, out, T, nk, nv, dk, dv, tiled};
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
