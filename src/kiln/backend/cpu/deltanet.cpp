// Gated DeltaNet on the CPU: the causal depthwise convolution in front of it,
// its gates, the delta rule itself and the gated norm behind it.
//
// The delta rule runs in one of two forms that compute the same thing:
// - recurrent, one token at a time: O(1) per token, used for decoding;
// - chunked, for prefill: within a chunk of L tokens the sequential updates
//   are folded into an L x L lower-triangular solve (the "WY" form of
//   flash-linear-attention and transformers' torch_chunk_gated_delta_rule),
//   so the state is touched once per chunk instead of once per token.
// Each value head has its own state and is one unit of work for the pool.
//
// Precision: interface values are f32, the arithmetic inside is double. A
// value head whose output nearly cancels (fast decay, q almost orthogonal to
// k) is blown up by the gated RMSNorm behind it (eps 1e-6 against a tiny
// rms), so f32 rounding inside the rule reaches the logits at ~1e-4; in
// double the two forms agree to ~1e-9 and only the f32 inputs' rounding is
// left. The same holds for the convolution, the gates and the gated norm.
// The inputs themselves come from projections summed in double
// (Backend::matmul_sum_f64): f32 sums there moved the fixtures' logits by
// ~1e-4, as far from the exact result as transformers' float32 run is.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/core/error.h"
#include "kiln/quant/gemm.h"

namespace kiln {
namespace {

inline double silu(double x) { return x / (1.0 + std::exp(-x)); }
inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// torch.nn.functional.softplus with beta 1 and threshold 20.
inline double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

// dst = src / sqrt(|src|^2 + 1e-6) * scale, as the reference's l2norm.
void l2_normalise(const float* src, int64_t n, double scale, double* dst) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(src[i]) * double(src[i]);
  const double inv = 1.0 / std::sqrt(sum + 1e-6);
  for (int64_t i = 0; i < n; ++i) dst[i] = double(src[i]) * inv * scale;
}

struct HeadView {
  const float* qkv;
  int64_t stride;    // floats per token in qkv
  int64_t q_off, k_off, v_off;
};

// The vector steps (kiln/quant/gemm.h's double helpers, one build per
// kernel level) work in double on every level.

// One token at a time, on the f32 state S [dk][dv] itself: each row is
// widened, updated and the output summed in double, then rounded back,
// the same values as a double copy of the state would give for one token.
void recurrent_head(const HeadView& hv, const float* g, const float* beta, int64_t g_stride,
                    const DeltaRuleParams& p, float* S, float* out, int64_t out_stride) {
  const int64_t dk = p.head_k_dim, dv = p.head_v_dim;
  thread_local std::vector<double> q, k, delta, o;
  q.resize(size_t(dk)), k.resize(size_t(dk)), delta.resize(size_t(dv)), o.resize(size_t(dv));
  const double scale = 1.0 / std::sqrt(double(dk));
  for (int64_t t = 0; t < p.n_tokens; ++t) {
    const float* row = hv.qkv + t * hv.stride;
    l2_normalise(row + hv.q_off, dk, scale, q.data());
    l2_normalise(row + hv.k_off, dk, 1.0, k.data());
    const float* v = row + hv.v_off;
    const double decay = std::exp(double(g[t * g_stride]));
    const double b = beta[t * g_stride];
    // delta = (v - decay S^T k) b; S = decay S + k delta^T; o = S^T q.
    std::fill(delta.begin(), delta.end(), 0.0);
    for (int64_t i = 0; i < dk; ++i) axpy_f64_f32_simd(delta.data(), S + i * dv, k[size_t(i)], dv);
    for (int64_t j = 0; j < dv; ++j) delta[size_t(j)] = (v[j] - decay * delta[size_t(j)]) * b;
    std::fill(o.begin(), o.end(), 0.0);
    for (int64_t i = 0; i < dk; ++i)
      decay_update_f32_simd(S + i * dv, delta.data(), decay, k[size_t(i)], q[size_t(i)], o.data(), dv);
    float* dst = out + t * out_stride;
    for (int64_t j = 0; j < dv; ++j) dst[j] = float(o[size_t(j)]);
  }
}

// Chunks of p.chunk tokens (the last may be shorter: the reference pads it
// with zeros, which changes nothing for the real tokens). Within a chunk of
// L tokens every step is a matrix product (gemm_f64_simd) except the L x L
// triangular solve.
void chunked_head(const HeadView& hv, const float* g, const float* beta, int64_t g_stride,
                  const DeltaRuleParams& p, double* S, float* out, int64_t out_stride) {
  const int64_t dk = p.head_k_dim, dv = p.head_v_dim, C = std::max<int64_t>(1, p.chunk);
  const double scale = 1.0 / std::sqrt(double(dk));
  // Per-thread scratch, kept between calls: a fresh allocation per head and
  // call would be a new mapping (and its page faults) for every one.
  thread_local std::vector<double> Q, K, Kt, V, W, U, O, G, QK, T, Tb, row, gc, b;
  for (auto [v, n] : {std::pair{&Q, C * dk}, {&K, C * dk}, {&Kt, dk * C}, {&V, C * dv},
                      {&W, C * dk}, {&U, C * dv}, {&O, C * dv}, {&G, C * C}, {&QK, C * C},
                      {&T, C * C}, {&Tb, C * C}, {&row, C}, {&gc, C}, {&b, C}})
    v->resize(size_t(n));
  for (int64_t t0 = 0; t0 < p.n_tokens; t0 += C) {
    const int64_t L = std::min(C, p.n_tokens - t0);
    // The cumulative log-decay reaches hundreds over a chunk: in f32 it
    // would shift every decay factor exp(gc_i - gc_j) by ~1e-5.
    double acc = 0;
    for (int64_t i = 0; i < L; ++i) {
      const float* r = hv.qkv + (t0 + i) * hv.stride;
      l2_normalise(r + hv.q_off, dk, scale, &Q[i * dk]);
      l2_normalise(r + hv.k_off, dk, 1.0, &K[i * dk]);
      const float* v = r + hv.v_off;
      for (int64_t d = 0; d < dv; ++d) V[i * dv + d] = v[d];
      acc += g[(t0 + i) * g_stride];
      gc[i] = acc;
      b[i] = beta[(t0 + i) * g_stride];
    }
    for (int64_t i = 0; i < L; ++i)
      for (int64_t d = 0; d < dk; ++d) Kt[d * L + i] = K[i * dk + d];
    // G = K K^T and QK = Q K^T, then masked and decayed:
    // T (strictly below the diagonal) = -(beta_i k_i . k_j) exp(gc_i - gc_j),
    // QK (on and below it) = (q_i . k_j) exp(gc_i - gc_j).
    std::fill(G.begin(), G.begin() + L * L, 0.0);
    std::fill(QK.begin(), QK.begin() + L * L, 0.0);
    gemm_f64_simd(L, L, dk, 1.0, K.data(), dk, Kt.data(), L, G.data(), L);
    gemm_f64_simd(L, L, dk, 1.0, Q.data(), dk, Kt.data(), L, QK.data(), L);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = 0; j < L; ++j) {
        const double decay = j <= i ? std::exp(gc[i] - gc[j]) : 0.0;
        T[i * L + j] = j < i ? -(b[i] * G[i * L + j]) * decay : 0.0;
        QK[i * L + j] *= decay;
      }
    // T = (I - T)^-1 by forward substitution, row by row.
    for (int64_t i = 1; i < L; ++i) {
      for (int64_t j = 0; j < i; ++j) row[j] = T[i * L + j];
      for (int64_t j = 0; j < i; ++j) {
        double s = row[j];
        for (int64_t m = j + 1; m < i; ++m) s += row[m] * T[m * L + j];
        T[i * L + j] = s;
      }
    }
    for (int64_t i = 0; i < L; ++i) T[i * L + i] = 1.0;
    // U = T diag(beta) V, W = T diag(beta exp(gc)) K
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = 0; j < L; ++j) Tb[i * L + j] = T[i * L + j] * b[j];
    std::fill(U.begin(), U.begin() + L * dv, 0.0);
    gemm_f64_simd(L, dv, L, 1.0, Tb.data(), L, V.data(), dv, U.data(), dv);
    for (int64_t j = 0; j < L; ++j) row[j] = std::exp(gc[j]);
    for (int64_t i = 0; i < L; ++i)
      for (int64_t j = 0; j < L; ++j) Tb[i * L + j] *= row[j];
    std::fill(W.begin(), W.begin() + L * dk, 0.0);
    gemm_f64_simd(L, dk, L, 1.0, Tb.data(), L, K.data(), dk, W.data(), dk);
    // New values against the state carried in: U -= W S.
    gemm_f64_simd(L, dv, dk, -1.0, W.data(), dk, S, dv, U.data(), dv);
    // O = diag(exp(gc)) Q S + QK U
    for (int64_t i = 0; i < L; ++i) {
      const double e = std::exp(gc[i]);
      for (int64_t d = 0; d < dk; ++d) Q[i * dk + d] *= e;
    }
    std::fill(O.begin(), O.begin() + L * dv, 0.0);
    gemm_f64_simd(L, dv, dk, 1.0, Q.data(), dk, S, dv, O.data(), dv);
    gemm_f64_simd(L, dv, L, 1.0, QK.data(), L, U.data(), dv, O.data(), dv);
    for (int64_t i = 0; i < L; ++i) {
      float* o = out + (t0 + i) * out_stride;
      for (int64_t d = 0; d < dv; ++d) o[d] = float(O[i * dv + d]);
    }
    // S = exp(gc_last) S + K^T diag(exp(gc_last - gc)) U
    const double g_last = gc[L - 1];
    const double e_last = std::exp(g_last);
    for (int64_t x = 0; x < dk * dv; ++x) S[x] *= e_last;
    for (int64_t i = 0; i < L; ++i) {
      const double e = std::exp(g_last - gc[i]);
      for (int64_t d = 0; d < dk; ++d) Kt[d * L + i] *= e;
    }
    gemm_f64_simd(dk, dv, L, 1.0, Kt.data(), L, U.data(), dv, S, dv);
  }
}

}  // namespace

void CpuBackend::conv1d_silu(const float* x, int64_t n_tokens, int64_t channels,
                             const float* weight, int64_t kernel, float* state, float* out) {
  const int64_t hist = kernel - 1;
  // Channels [c0, c1) for every token: a tap at a time over the channel run
  // (contiguous in x and in the state), the sums in double.
  auto body = [&](int64_t c0, int64_t c1, int) {
    const int64_t n = c1 - c0;
    thread_local std::vector<float> taps;  // [kernel][n]: weight transposed
    thread_local std::vector<double> acc;
    taps.resize(size_t(kernel * n));
    acc.resize(size_t(n));
    for (int64_t c = 0; c < n; ++c)
      for (int64_t j = 0; j < kernel; ++j) taps[size_t(j * n + c)] = weight[(c0 + c) * kernel + j];
    // Window position i: state row i before the call's tokens, then x's rows.
    auto window = [&](int64_t i) {
      return i < hist ? state + i * channels + c0 : x + (i - hist) * channels + c0;
    };
    for (int64_t t = 0; t < n_tokens; ++t) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < kernel; ++j) mul_add_f64_simd(acc.data(), taps.data() + j * n, window(t + j), n);
      float* o = out + t * channels + c0;
      for (int64_t c = 0; c < n; ++c) o[c] = float(silu(acc[size_t(c)]));
    }
    // The new state: the window's last hist rows, in ascending order (each
    // read is of a later row than the one written).
    for (int64_t k = 0; k < hist; ++k)
      std::copy_n(window(n_tokens + k), n, state + k * channels + c0);
  };
  if (n_tokens * channels * kernel < 32768)
    body(0, channels, 0);
  else
    pool_.parallel_for(channels, body);
}

void CpuBackend::deltanet_gates(const float* a, const float* b, const float* A,
                                const float* dt_bias, int64_t n_tokens, int64_t n_heads,
                                float* g, float* beta) {
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t i = t * n_heads + h;
      g[i] = float(A[h] * softplus(double(a[i]) + dt_bias[h]));
      beta[i] = sigmoid(b[i]);
    }
}

void CpuBackend::gated_delta_rule(const float* qkv, const float* g, const float* beta,
                                  float* state, const DeltaRuleParams& p, float* out) {
  KILN_CHECK(p.n_k_heads > 0 && p.n_v_heads % p.n_k_heads == 0, "gated delta rule: ",
             p.n_v_heads, " value heads are not a multiple of ", p.n_k_heads, " key heads");
  const int64_t dk = p.head_k_dim, dv = p.head_v_dim;
  const int64_t key_dim = p.n_k_heads * dk;
  const int64_t group = p.n_v_heads / p.n_k_heads;
  const int64_t stride = 2 * key_dim + p.n_v_heads * dv;
  pool_.parallel_for(p.n_v_heads, [&](int64_t h0, int64_t h1, int) {
    for (int64_t h = h0; h < h1; ++h) {
      const int64_t kh = p.tiled_heads ? h % p.n_k_heads : h / group;
      HeadView hv{qkv, stride, kh * dk, key_dim + kh * dk, 2 * key_dim + h * dv};
      float* S = state + h * dk * dv;
      float* o = out + h * dv;
      const int64_t os = p.n_v_heads * dv;
      if (p.n_tokens == 1) {
        recurrent_head(hv, g + h, beta + h, p.n_v_heads, p, S, o, os);
        continue;
      }
      thread_local std::vector<double> Sd;  // the state in double for the chunks
      Sd.assign(S, S + dk * dv);
      chunked_head(hv, g + h, beta + h, p.n_v_heads, p, Sd.data(), o, os);
      for (int64_t i = 0; i < dk * dv; ++i) S[i] = float(Sd[i]);
    }
  });
}

void CpuBackend::rmsnorm_gated(const float* x, const float* w, const float* z, int64_t rows,
                               int64_t dim, float eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const float* zr = z + r * dim;
    float* yr = y + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * xr[i];
    const double inv = 1.0 / std::sqrt(ss / double(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) {
      yr[i] = float(w[i] * (xr[i] * inv) * silu(zr[i]));
    }
  }
}

void CpuBackend::sigmoid_mul(float* x, const float* gate, int64_t rows, int64_t dim,
                             bool per_row) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * dim;
    if (per_row) {
      const float s = sigmoid(gate[r]);
      for (int64_t i = 0; i < dim; ++i) xr[i] *= s;
    } else {
      const float* gr = gate + r * dim;
      for (int64_t i = 0; i < dim; ++i) xr[i] *= sigmoid(gr[i]);
    }
  }
}

}  // namespace kiln
