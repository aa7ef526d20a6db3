// Shared by the CUDA backend's translation units: error checks that end in a
// kiln::Error, and the kernel launchers each .cu file provides.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kiln/core/dtype.h"
#include "kiln/core/error.h"
#include "kiln/core/rope_style.h"

namespace kiln {
struct DrawSpec;  // kiln/core/draw.h
}

namespace kiln::cuda {

[[noreturn]] void fail_cuda(cudaError_t e, const char* what);
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail_cuda(e, what);
}
// After a kernel launch: a bad configuration shows up here, a fault in the
// kernel at the next synchronisation.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// The backend's switches (KILN_CUDA_*, to compare code paths): whether
// variable `name` is set to `value`.
inline bool env_is(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e && std::strcmp(e, value) == 0;
}
// Variable `name` as an integer in [lo, hi]; `fallback` when it is unset or
// out of range.
inline int env_int(const char* name, int fallback, int lo, int hi) {
  const char* e = std::getenv(name);
  const int v = e ? std::atoi(e) : fallback;
  return v >= lo && v <= hi ? v : fallback;
}

// Programmatic dependent launch (Hopper): a kernel launched with launch()
// may start while the kernel before it on the stream is still running, so
// that its blocks are resident and its weight loads in flight the moment the
// earlier kernel's results are ready; a decode step is ~10 small kernels per
// layer, and without this each pays a launch and a DRAM round trip in turn.
// The contract, kept by every kernel of the backend: call pdl_wait() before
// touching any memory an earlier kernel writes or reads (activations,
// caches, scratch), and read only immutable memory (weights) before it;
// prefetch_l2 (below) may name any memory there, since it only warms L2.
// pdl_trigger() lets the next kernel be scheduled; calling it first thing is
// safe because the next kernel waits in pdl_wait() for this one to finish.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Asks L2 for the 128-byte line holding p. Only warms L2, so it may run
// before pdl_wait() on memory an earlier kernel writes: a line still being
// written is read again after the wait all the same. For data a kernel
// reads after its wait that was written long before (a cache's old rows, a
// recurrent state), which a step's streamed weights have pushed out of L2.
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// One key and one value element into their cache planes at element offset
// off, as f16 (rounded to nearest) or f32.
__device__ __forceinline__ void store_kv_element(void* kc, void* vc, bool f16, int64_t off,
                                                 float k, float v) {
  if (f16) {
    static_cast<__half*>(kc)[off] = __float2half_rn(k);
    static_cast<__half*>(vc)[off] = __float2half_rn(v);
  } else {
    static_cast<float*>(kc)[off] = k;
    static_cast<float*>(vc)[off] = v;
  }
}

// 1 / rms of the row xr[0, dim) over a block of kThreads threads (part:
// kThreads / 32 floats of shared memory), returned to every thread: thread i
// sums the squares of elements i, i + kThreads, ..., each warp adds its
// lanes' sums in a butterfly, then the warps' sums are added in order. The
// rmsnorm kernel and the products' rmsnorm prologues all use it, so a row
// one of them normalizes is bit-identical to the others'. A block of more
// than kThreads threads gets the same bits: its threads past kThreads take
// no part in the sums (all of them must call it, for the barriers).
//
// A thread's elements are loaded kRmsBatch at a time before any is summed,
// so that their trips from L2 overlap: the loop of dependent sums, unrolled
// by 4, waited on L2 about once per four elements (ten a thread for a
// 2560-wide row over 256 threads: now two waits). The sums, and their
// order, are the same. (12 would make it one wait there, but costs the
// Q6_K one-token products a register spill.) kBatch: another batch, the
// same sums (the self-preparing products' one-pass prologue takes 12,
// which fits their registers).
constexpr int kRmsBatch = 8;

template <int kThreads, int kBatch = kRmsBatch>
__device__ __forceinline__ float block_inv_rms(const float* xr, int64_t dim, float eps,
                                               float* part) {
  if (threadIdx.x < kThreads) {
    float s = 0.0f;
    for (int64_t i0 = threadIdx.x; i0 < dim; i0 += int64_t(kBatch) * kThreads) {
      float v[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) {
        const int64_t i = i0 + int64_t(j) * kThreads;
        v[j] = i < dim ? xr[i] : 0.0f;
      }
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
        if (i0 + int64_t(j) * kThreads < dim) s = fmaf(v[j], v[j], s);
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = s;
  }
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) total += part[i];
  __syncthreads();  // part may be written again
  return 1.0f / sqrtf(total / float(dim) + eps);
}

// Whether launch() asks for programmatic dependent launch (KILN_CUDA_PDL=0
// turns it off, to compare; it needs compute capability 9.0).
bool pdl_enabled();
void set_pdl_enabled(bool on);

// kernel<<<grid, block, smem, s>>>(args...), as a programmatic dependent
// launch where enabled. Checks the launch.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
            const char* what, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  check(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...), what);
}

// Every block format the kernels decode (all that kiln computes on).
bool format_supported(DType t);

// y[t, :] = W x[t, :] for t < T (T <= kMaxMatvecTokens), one warp per row,
// weight bytes staged through shared memory with 16-byte loads. x must be
// 16-byte aligned.
inline constexpr int kMaxMatvecTokens = 8;
// The fused products' bulk-copy kernels (Hopper) take up to this many: a
// serving step of 32 sequences reads each weight once, and each token's
// sums keep the order they have alone (see matvec_fused.cu).
inline constexpr int kMaxBulkMatvecTokens = 32;
void matvec(DType t, const void* w, size_t row_bytes, int64_t N, int64_t K, const float* x,
            int64_t T, float* y, cudaStream_t s);
// The decode path's fused products (matvec_fused.cu): up to kMaxMatvecSegs
// weights of one format and width that share an input, computed in one
// launch over their concatenated rows, with an optional op folded in front
// (rmsnorm of x with weight x2, or silu(x) * x2, or the merge of attention's
// split partials in x; its result also written to mat unless null) and an
// optional residual add behind (add_to += y, one weight only).
inline constexpr int kMaxMatvecSegs = 4;
enum class MatvecPrologue : int { None = 0, Rmsnorm = 1, SiluMul = 2, AttnCombine = 3 };
struct MatvecJob {
  DType dtype = DType::F32;
  size_t row_bytes = 0;
  int64_t K = 0, T = 0;
  const void* w[kMaxMatvecSegs] = {};
  float* y[kMaxMatvecSegs] = {};
  int64_t n[kMaxMatvecSegs] = {};
  int nseg = 0;
  MatvecPrologue pro = MatvecPrologue::None;
  const float* x = nullptr;
  const float* x2 = nullptr;
  float eps = 0.0f;
  float* mat = nullptr;
  float* add_to = nullptr;
  // AttnCombine: x holds the partials of attention (cuda::attention with
  // combine = false) over heads of attn_head_dim in attn_splits splits,
  // and mat (required) takes the merged row, attention's output.
  int64_t attn_head_dim = 0;
  int attn_splits = 0;
  // The scratch already holds this product's prepared input: the product
  // before it on the stream took the Hopper path (matvec_fused_prepares)
  // for the same values, width and token count and for weights of the same
  // kind (int8 inputs for block formats, f32 for plain ones).
  bool input_ready = false;
  // Where row_bytes2 > 0, the last weight (w[nseg - 1]) is of format dtype2
  // with rows of row_bytes2 (matvec_mixed_ok).
  DType dtype2 = DType::F32;
  size_t row_bytes2 = 0;
};
// Device scratch the fused products share on a stream: counter, one zeroed
// word; input, where the Hopper path prepares each product's input once.
struct MatvecScratch {
  unsigned* counter = nullptr;
  uint8_t* input = nullptr;
  size_t input_bytes = 0;
};
// Whether matvec_fused takes this format, width and token count.
bool matvec_fused_ok(DType t, int64_t K, int64_t T, size_t row_bytes, size_t scratch_bytes);
void matvec_fused(const MatvecJob& job, const MatvecScratch& scratch, cudaStream_t s);
// Whether a product of format t (rows of row_bytes) may take a last weight
// of format t2 (rows of row_bytes2) in the same launch: one token, the
// formats of a Q4_K_M / Q5_K_M file's q/k and v.
bool matvec_mixed_ok(DType t, DType t2, int64_t K, int64_t T, size_t row_bytes, size_t row_bytes2,
                     MatvecPrologue pro, size_t scratch_bytes);
// Whether matvec_fused prepares this product's input into the scratch.
bool matvec_fused_prepares(DType t, int64_t K, int64_t T, size_t scratch_bytes);
// Prefill of block formats: rows row0.. of W as f16 (exact for every block
// format's values up to f16's rounding of the scale products), and x as f16,
// for f16 tensor-core products with f32 accumulation.
void dequant_rows_f16(DType t, const void* w, size_t row_bytes, int64_t row0, int64_t rows,
                      int64_t K, __half* out, cudaStream_t s);
void to_half(const float* x, int64_t n, __half* y, cudaStream_t s);
// x as the sum of n_parts bf16 values (parts[k * n + i], largest first;
// three carry all of f32's 24 significand bits, kBf16Parts): activations
// for bf16 tensor-core products as exact as f32 ones (one product per part
// with the exact bf16 weights, f32 accumulation). Fewer parts round them:
// two keep 16 bits (more than f16's 11), one bf16's 8.
constexpr int kBf16Parts = 3;
void split_bf16(const float* x, int64_t n, int n_parts, __nv_bfloat16* parts, cudaStream_t s);
// out[i, :] = row (ids ? ids[i] : row0 + i) of W as f32, for i < rows.
void dequant_rows(DType t, const void* w, size_t row_bytes, int64_t row0, int64_t rows,
                  int64_t K, const int32_t* ids, float* out, cudaStream_t s);

// Element-wise and small ops. Arrays named *_dev live in device memory.
void rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* y,
             cudaStream_t s);
void rope(float* x, int64_t T, int64_t n_heads, int64_t head_dim, int64_t rot_dims,
          const int32_t* positions_dev, const float* inv_freq, RopeStyle style, cudaStream_t s);
void store_kv(void* kc, void* vc, bool f16, int64_t n_kv_heads, int64_t head_dim,
              int64_t capacity, const float* k, const float* v, int64_t T,
              const int32_t* start_dev, cudaStream_t s);
void silu_mul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t s);
// out[j] = the first index of the largest value of row j (NaN never; 0 for
// a row of NaN only), rows of cols floats.
void argmax_rows(const float* x, int64_t rows, int64_t cols, int32_t* out, cudaStream_t s);
// A logit and its index, as the host's Candidate (kiln/core/top_k.h).
struct LogitId {
  float logit;
  int32_t id;
};
// out[j * k, (j + 1) * k) = row j's k candidates (the highest logits, the
// lower index among equal ones), in no order; NaN logits (a NaN's own
// index) past a row's non-NaN ones. k <= cols and k <= kTopKMax; scratch:
// top_k_rows_scratch(rows, cols, k) entries (none for rows under 4096).
constexpr int64_t kTopKMax = 2048;
size_t top_k_rows_scratch(int64_t rows, int64_t cols, int64_t k);
void top_k_rows(const float* x, int64_t rows, int64_t cols, int64_t k, LogitId* out,
                LogitId* scratch, cudaStream_t s);
// out[j] = the token drawn for row j from its k candidates (top_k_rows'
// out) with specs[j] (device memory; kiln/core/draw.h), the token the host's
// draw_candidates gives for them; 0 for a row of NaN only. k <= 1024.
void draw_rows(const LogitId* candidates, int64_t rows, int64_t k, const DrawSpec* specs,
               int32_t* out, cudaStream_t s);
void add(float* x, const float* y, int64_t n, cudaStream_t s);
void gather_rows(const float* x, const int32_t* rows_dev, int64_t n, int64_t dim, float* out,
                 cudaStream_t s);
void scatter_add_rows(float* y, const float* x, const int32_t* rows_dev,
                      const float* scales_dev, int64_t n, int64_t dim, cudaStream_t s);

// The per-head ops between the q/k/v products and attention, in one launch
// (elementwise.cu): q and k rows rms-normed in place with q_norm / k_norm
// (if not null), rotated (if rope_half > 0: the first 2 * rope_half of each
// head, positions[t] per token), and k and v stored into the cache at
// *start + t (if kc is not null). Same results as rmsnorm, rope and store_kv.
inline constexpr int kMaxHeadDim = 256;
struct HeadOps {
  float* q = nullptr;
  float* k = nullptr;
  const float* v = nullptr;
  const float* q_norm = nullptr;
  const float* k_norm = nullptr;
  int64_t T = 0;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  float eps = 0.0f;
  int rope_half = 0;
  bool halves = false;
  const int32_t* positions = nullptr;
  const float* inv_freq = nullptr;
  void* kc = nullptr;
  void* vc = nullptr;
  bool f16 = false;
  int64_t capacity = 0;
  const int32_t* start = nullptr;
};
void head_ops(const HeadOps& a, cudaStream_t s);

// BitNet b1.58 (ternary.cu): y = W x with W ternary (I2_S with K % 128 == 0,
// or TQ2_0), x quantized per token to int8 into q [T, K] with scales
// act_scale [T], as the CPU backend's ternary_matmul (same results).
bool ternary_supported(DType t, int64_t K);
void ternary_matmul(DType t, const void* w, int64_t N, int64_t K, const float* x, int64_t T,
                    int8_t* q, float* act_scale, float* y, cudaStream_t s);
void relu2_mul(const float* gate, const float* up, int64_t n, float* out, cudaStream_t s);

// Gated DeltaNet (deltanet.cu): the ops of the same names in backend.h.
void conv1d_silu(const float* x, int64_t T, int64_t C, const float* weight, int64_t kernel,
                 float* state, float* out, cudaStream_t s);
void deltanet_gates(const float* a, const float* b, const float* A, const float* dt_bias,
                    int64_t T, int64_t H, float* g, float* beta, cudaStream_t s);
// Prompts of kChunkMinTokens or more with head dims <= 128 take the chunked
// form when given scratch of delta_rule_scratch_bytes (0: the recurrent form
// only); otherwise, and for decoding, the recurrent form.
size_t delta_rule_scratch_bytes(int64_t T, int64_t nv, int64_t dk, int64_t dv);
void gated_delta_rule(const float* qkv, const float* g, const float* beta, float* state,
                      int64_t T, int64_t nk, int64_t nv, int64_t dk, int64_t dv, bool tiled,
                      float* out, void* scratch, size_t scratch_bytes, cudaStream_t s);
void rmsnorm_gated(const float* x, const float* w, const float* z, int64_t rows, int64_t dim,
                   float eps, float* y, cudaStream_t s);
void sigmoid_mul(float* x, const float* gate, int64_t rows, int64_t dim, bool per_row,
                 cudaStream_t s);

// Vision encoders (vision.cu): the ops of the same names in backend.h;
// bounds_dev, n_segments + 1 entries, in device memory; head_dim <= 128.
void layernorm(const float* x, const float* w, const float* b, int64_t rows, int64_t dim,
               float eps, float* y, cudaStream_t s);
void add_bias(float* x, const float* bias, int64_t rows, int64_t dim, cudaStream_t s);
void gelu(float* x, int64_t n, bool tanh_approx, cudaStream_t s);
void attention_segments(const float* q, const float* k, const float* v, int64_t T,
                        int64_t n_heads, int64_t head_dim, const int32_t* bounds_dev,
                        int64_t n_segments, float scale, float* out, cudaStream_t s);

// Attention over the cache with the first query at *start_dev. splits > 1
// spreads each (query, head)'s keys over that many blocks (flash-decoding)
// and needs partial = splits * T * n_heads * (head_dim + 2) floats; they
// are merged into out, unless combine is false: then the caller merges
// them (attention_combine, or a product's MatvecPrologue::AttnCombine).
void attention(const float* q, const void* kc, const void* vc, bool f16, int64_t n_kv_heads,
               int64_t head_dim, int64_t capacity, int64_t T, int64_t n_heads, float scale,
               const int32_t* start_dev, int splits, float* partial, float* out, cudaStream_t s,
               bool combine = true);
// out (rows x head_dim) = the merge of the splits' partials of `rows`
// (query, head) rows.
void attention_combine(const float* partial, int64_t rows, int64_t head_dim, int splits,
                       float* out, cudaStream_t s);
// One sequence of a batched decode step: its cache planes (contiguous,
// [n_kv_heads][capacity][head_dim]) and the position its token takes.
struct KvItem {
  void* k;
  void* v;
  int64_t start;
};
// Whether attention_decode_batch has a kernel for the shape.
bool decode_batch_supported(int64_t head_dim, int64_t group);
// n sequences, one token each (rows of q, k, v): k and v stored at
// items[i].start of their caches (all of one capacity), then attention over
// positions 0 .. items[i].start; items_dev in device memory, partial as for
// attention with T = n.
void attention_decode_batch(const float* q, const float* k, const float* v, bool f16,
                            int64_t n_kv_heads, int64_t head_dim, int64_t capacity, int64_t n,
                            int64_t n_heads, float scale, const KvItem* items_dev, int splits,
                            float* partial, float* out, cudaStream_t s);
// Tiled prefill attention: a block shares each K/V tile among a group of queries.
void attention_prefill(const float* q, const void* kc, const void* vc, bool f16,
                       int64_t n_kv_heads, int64_t head_dim, int64_t capacity, int64_t T,
                       int64_t n_heads, float scale, const int32_t* start_dev, float* out,
                       cudaStream_t s);

}  // namespace kiln::cuda
