// The op set every model is written against, and the interface a compute
// device implements for it. Activations are f32, row-major, in the backend's
// own memory (host memory for the CPU, device memory for a GPU); weights stay
// in their file's block format. Model code never branches on the device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "kiln/core/draw.h"
#include "kiln/core/rope_style.h"
#include "kiln/core/tensor.h"
#include "kiln/core/top_k.h"

namespace kiln {

// A weight matrix {rows = outputs, cols = inputs} as resident on a backend.
struct Weight {
  TensorView view;            // file view (dtype, shape, host bytes)
  const void* data = nullptr;  // where the backend reads it (== view.data on the CPU)
  int64_t rows() const { return view.rows(); }
  int64_t cols() const { return view.cols(); }
  explicit operator bool() const { return data != nullptr; }
};

// One layer's key/value cache: [kv_head][position][head_dim] for K and V.
// One attention layer's keys and values for one sequence, in one of two
// layouts. Contiguous (blocks null): each plane is [n_kv_heads, capacity,
// head_dim]. Paged: the planes are a pool shared by many sequences, made of
// blocks [n_kv_heads, block, head_dim]; position p of this sequence lives in
// block blocks[p / block] (a host array), at row p % block.
struct KvLayer {
  void* k = nullptr;
  void* v = nullptr;
  DType dtype = DType::F32;  // F32 or F16
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t capacity = 0;  // positions this sequence can address
  int64_t block = 0;                // positions per block (paged only)
  const int32_t* blocks = nullptr;  // block of each run of `block` positions (paged only)
};

// Element offset of (head, position) within a K or V plane.
inline int64_t kv_offset(const KvLayer& c, int64_t head, int64_t pos) {
  if (!c.blocks) return (head * c.capacity + pos) * c.head_dim;
  return ((int64_t(c.blocks[pos / c.block]) * c.n_kv_heads + head) * c.block + pos % c.block) *
         c.head_dim;
}
// How many positions from pos on lie in consecutive rows of one head.
inline int64_t kv_run(const KvLayer& c, int64_t pos) {
  return c.blocks ? c.block - pos % c.block : c.capacity - pos;
}

// Shapes of one Gated DeltaNet (linear attention) layer for gated_delta_rule.
struct DeltaRuleParams {
  int64_t n_tokens = 0;
  int64_t n_k_heads = 0;   // query/key heads
  int64_t n_v_heads = 0;   // value heads, a multiple of n_k_heads; one recurrent state each
  int64_t head_k_dim = 0;
  int64_t head_v_dim = 0;
  // Which key head value head h reads: false = grouped, h / (n_v_heads / n_k_heads)
  // (Hugging Face's repeat_interleave); true = tiled, h % n_k_heads (llama.cpp's
  // Qwen3.5 GGUF files regroup the value heads that way).
  bool tiled_heads = false;
  // Chunk length of the parallel (chunked) form used when n_tokens > 1;
  // a single token always takes the O(1) recurrent form.
  int64_t chunk = 64;
};

struct AttentionParams {
  int64_t n_tokens = 0;   // queries, at positions start .. start + n_tokens - 1
  int64_t start = 0;      // position of the first query; keys 0 .. its own position are visible
  int64_t n_heads = 0;
  float scale = 1.0f;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Memory in the backend's space. Freed by free().
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p) = 0;
  virtual void to_device(void* dst, const void* host, size_t bytes) = 0;
  virtual void to_host(void* host, const void* src, size_t bytes) = 0;
  // Row j of src (device, row_bytes each) to hosts[j], for j < rows: the
  // logits of a batch's sequences, each to its own buffer, with one wait.
  virtual void to_host_rows(void* const* hosts, const void* src, size_t row_bytes, int64_t rows);
  // *outs[j] = the index of the largest of the cols floats of row j of src
  // (device), for j < rows: the first on ties, NaN never, 0 for a row of
  // NaN only, as a greedy sampler's argmax on the host. So a greedy serving
  // step brings back 4 bytes a sequence, not its logits. The default copies
  // each row to the host.
  virtual void argmax_rows(const float* src, int64_t rows, int64_t cols, int32_t* const* outs);
  // Row j's k candidates (kiln/core/top_k.h: the highest logits, the lower
  // id among equal ones) into outs[j][0, k), in any order; where the row
  // has fewer than k logits that are not NaN, the entries past them have
  // NaN logits. What a sampler's top-k needs of a sampled serving step's
  // logits, without them leaving the device. May complete only at the next
  // synchronize(). The default copies each row to the host.
  virtual void top_k_rows(const float* src, int64_t rows, int64_t cols, int64_t k,
                          Candidate* const* outs);
  // The fewest rows for which top_k_rows beats bringing the logits to the
  // host and choosing there; 0: never (logits already in host memory).
  virtual int64_t top_k_rows_from() const { return 0; }
  // *outs[j] = the token drawn for row j of src (device) with draws[j]
  // (kiln/core/draw.h: the row's first top_k candidates, filtered, one drawn
  // by weight), the token Sampler::sample() gives for those logits with the
  // same settings at the same draw; 0 for a row of NaN only. So a sampled
  // step, like a greedy one, brings back 4 bytes a sequence, and its pick
  // can feed a step launched ahead (step_ahead, embed_last_pick) as
  // argmax_rows' does. Ends a step as argmax_rows does; a step has either.
  // The default copies each row to the host and draws there.
  virtual void draw_rows(const float* src, int64_t rows, int64_t cols, const DrawSpec* draws,
                         int32_t* const* outs);

  // Decoding ahead (one sequence): a step that ends in argmax_rows or
  // draw_rows is launched without waiting for it, and the next step, fed
  // that pick where it was made (embed_last_pick), is recorded and launched
  // while it runs. The host's share of a step (running the model's code,
  // recording and launching its ops) then overlaps the device's work
  // instead of adding to it. Whether doing so gains anything here: a GPU; the CPU runs
  // each op as it is called, and the calls below then only keep the order.
  virtual bool decodes_ahead() const { return false; }
  // The next step to end in argmax_rows or draw_rows returns without
  // waiting for it: its picks land at await_step(). Two such steps may be
  // in flight; a third waits for the first.
  virtual void step_ahead() {}
  // Waits for the oldest step launched ahead and puts its picks in place
  // (nothing to do where every step has completed).
  virtual void await_step() {}
  // embed() of the one token the last argmax_rows or draw_rows picked for
  // its first row, read where it was made: on a GPU the pick of a step
  // still in flight.
  virtual void embed_last_pick(const Weight& table, float* out);
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  // Host memory that copies from the device land in directly (pinned on a
  // GPU, so a recorded step copies straight into it, no staging); plain
  // memory by default.
  virtual void* alloc_host(size_t bytes);
  virtual void free_host(void* p);

  // Makes a weight resident (the CPU uses the mapping as it is).
  virtual Weight load_weight(const TensorView& view) = 0;

  // y[t, :] = W x[t, :] for t < n_tokens; W {N, K}, x [T, K], y [T, N].
  virtual void matmul(const Weight& w, const float* x, int64_t n_tokens, float* y) = 0;
  // matmul with each output of float weights (F32, F16, BF16) summed in
  // double and rounded once. For the few products whose rounding a later op
  // amplifies: a Gated DeltaNet head whose output nearly cancels is scaled
  // up ~1000x by the gated norm behind it, so the f32 sums of its input
  // projections decide how far the logits land from the exact ones. Other
  // weight types, and backends without such a kernel, use matmul.
  virtual void matmul_sum_f64(const Weight& w, const float* x, int64_t n_tokens, float* y) {
    matmul(w, x, n_tokens, y);
  }
  // Asks products of BF16 weights to keep all of their f32 activations'
  // bits. Otherwise a backend may round the activations to bf16 where that
  // is much faster: the GPU does in prefill, whose bf16 tensor cores then
  // take one product instead of three (one per bf16 part of each f32 value),
  // ~1.7x the prompt speed. That is the rounding bf16 inference in PyTorch
  // applies to every product's input, with f32 sums and an f32 residual
  // stream here. Models whose later ops amplify their inputs' rounding turn
  // it on: the hybrids (see matmul_sum_f64), and the vision tower, whose
  // patch embeddings stand for an image in every later token.
  virtual void set_exact_bf16_products(bool on) {}
  // Asks matmul to give each token the same bits whatever n_tokens is (a
  // serving step's sequences, a prompt's chunks), where that costs speed
  // the single-stream path would rather keep. The serving scheduler turns
  // it on; backends whose products are invariant anyway ignore it.
  virtual void set_batch_invariant(bool on) {}
  // Lets matmul keep up to budget_bytes of weights in a second layout that
  // products of many tokens read faster (the CPU's packed int8 tiles: a
  // serving step repacks every weight otherwise). 0 turns it off. Backends
  // without such a layout ignore it.
  virtual void keep_weight_tiles(size_t budget_bytes) {}
  // A serving step of a small model can run as independent parts, a part of
  // its sequences on each thread (every op of a part on that thread), where
  // each op is too small to split over the threads for less than the
  // hand-off costs. How many parts for a step of n_rows rows of a model of
  // weight_bytes (1: one step, each op split as usual). Each sequence gets
  // the same bits either way: the ops are batch invariant.
  virtual int step_parts(int64_t n_rows, size_t weight_bytes) const { return 1; }
  // Calls fn(part) for every part in [0, parts), in parallel where the
  // backend can (each on one of its threads, the ops inside on it alone).
  virtual void run_parts(int parts, const std::function<void(int)>& fn) {
    for (int p = 0; p < parts; ++p) fn(p);
  }
  // out[i, :] = row ids[i] of table (any dtype), as f32; ids are host memory.
  virtual void embed(const Weight& table, const int32_t* ids, int64_t n, float* out) = 0;
  // y[r, :] = x[r, :] / rms(x[r, :]) * w; rows of length dim; w f32 [dim].
  virtual void rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps,
                       float* y) = 0;
  // Rotates the first rot_dims dims of each head of x [T, n_heads, head_dim]
  // in place, token t at positions[t] (host memory); inv_freq[rot_dims / 2].
  virtual void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                    int64_t rot_dims, const int32_t* positions, const float* inv_freq,
                    RopeStyle style) = 0;
  // Whether store_kv and attention read paged caches (KvLayer::blocks).
  virtual bool paged_kv() const { return false; }
  // Writes k, v [T, n_kv_heads, head_dim] into the cache at positions start...
  virtual void store_kv(const KvLayer& cache, const float* k, const float* v, int64_t n_tokens,
                        int64_t start) = 0;
  // Causal attention of q [T, n_heads, head_dim] over the cache; out like q.
  virtual void attention(const float* q, const KvLayer& cache, const AttentionParams& p,
                         float* out) = 0;
  // One decode step of n sequences at once (continuous batching): row i of k
  // and v [n, n_kv_heads, head_dim] is stored at position starts[i] of
  // caches[i], then row i of q [n, n_heads, head_dim] attends over that
  // cache's positions 0 .. starts[i]; out like q. The default stores and
  // attends sequence by sequence; a GPU does all of them in one launch each.
  virtual void attention_decode_batch(const float* q, const float* k, const float* v,
                                      const KvLayer* caches, const int64_t* starts, int64_t n,
                                      int64_t n_heads, float scale, float* out);
  // out = silu(gate) * up, element-wise over n.
  virtual void silu_mul(const float* gate, const float* up, int64_t n, float* out) = 0;
  // x += y over n.
  virtual void add(float* x, const float* y, int64_t n) = 0;

  // Mixture-of-experts routing: softmax over each token's expert logits,
  // top-k, optionally renormalised. ids/weights [T, k] are written to HOST memory.
  virtual void moe_route(const float* logits, int64_t n_tokens, int64_t n_experts, int64_t k,
                         bool renormalise, int32_t* ids, float* weights) = 0;
  // out[i, :] = x[rows[i], :]; rows host memory.
  virtual void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t dim,
                           float* out) = 0;
  // y[rows[i], :] += scales[i] * x[i, :]; rows and scales host memory.
  virtual void scatter_add_rows(float* y, const float* x, const int32_t* rows,
                                const float* scales, int64_t n, int64_t dim) = 0;
  // --- Hybrid (linear attention) models. Not every backend has these yet:
  // the defaults throw, naming the op and the backend.

  // Depthwise causal convolution over time, then SiLU: x [T, C]; weight f32
  // [C, kernel]; state [kernel - 1, C] holds the inputs that precede x (oldest
  // first) and is advanced to the last kernel - 1 inputs.
  // out[t, c] = silu(sum_j weight[c, j] * in[t - kernel + 1 + j, c]); out [T, C], not x.
  virtual void conv1d_silu(const float* x, int64_t n_tokens, int64_t channels,
                           const float* weight, int64_t kernel, float* state, float* out);
  // DeltaNet gates per token and value head, a, b [T, n_heads]:
  // g = A[h] * softplus(a + dt_bias[h]) (A = -exp(A_log), f32 [n_heads]),
  // beta = sigmoid(b). g and beta [T, n_heads] may alias a and b.
  virtual void deltanet_gates(const float* a, const float* b, const float* A,
                              const float* dt_bias, int64_t n_tokens, int64_t n_heads, float* g,
                              float* beta);
  // The gated delta rule. qkv [T, 2 * n_k_heads * head_k_dim + n_v_heads * head_v_dim]
  // holds q, k, v of each token back to back (q and k are L2-normalised here,
  // q scaled by 1/sqrt(head_k_dim)); g, beta [T, n_v_heads]; state f32
  // [n_v_heads, head_k_dim, head_v_dim], read and advanced; out [T, n_v_heads, head_v_dim].
  // Per token: S = exp(g) S; S += k (beta (v - S^T k))^T; o = S^T q.
  virtual void gated_delta_rule(const float* qkv, const float* g, const float* beta,
                                float* state, const DeltaRuleParams& p, float* out);
  // y[r, :] = x[r, :] / rms(x[r, :]) * w * silu(z[r, :]); w f32 [dim].
  virtual void rmsnorm_gated(const float* x, const float* w, const float* z, int64_t rows,
                             int64_t dim, float eps, float* y);
  // x[r, i] *= sigmoid(gate[r, i]) (gate [rows, dim]), or sigmoid(gate[r]) when per_row.
  virtual void sigmoid_mul(float* x, const float* gate, int64_t rows, int64_t dim,
                           bool per_row);

  // --- BitNet b1.58 (ternary weights). Not every backend has these yet: the
  // defaults throw, naming the op and the backend.

  // y[t, :] = W x[t, :] with W ternary (TQ1_0, TQ2_0 or I2_S) and x[t, :]
  // quantized to int8 per token as BitNet's BitLinear does: a = 127 /
  // max(max |x[t, :]|, 1e-5), q = clamp(round_half_even(x * a), -128, 127);
  // the products sum in int32, then y = sum * (the format's scales) / a.
  virtual void ternary_matmul(const Weight& w, const float* x, int64_t n_tokens, float* y);
  // out = max(gate, 0)^2 * up, element-wise over n (squared-ReLU feed-forward).
  virtual void relu2_mul(const float* gate, const float* up, int64_t n, float* out);

  // --- Vision encoders (ViT). Not every backend has these yet: the defaults
  // throw, naming the op and the backend.

  // y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * w + b; w, b f32 [dim].
  virtual void layernorm(const float* x, const float* w, const float* b, int64_t rows,
                         int64_t dim, float eps, float* y);
  // x[r, :] += bias for every row r; bias f32 [dim].
  virtual void add_bias(float* x, const float* bias, int64_t rows, int64_t dim);
  // x = gelu(x) element-wise over n: the tanh approximation or the exact erf form.
  virtual void gelu(float* x, int64_t n, bool tanh_approx);
  // Bidirectional attention within segments of the sequence: q, k, v, out
  // [T, n_heads, head_dim]; segment i holds tokens bounds[i] .. bounds[i + 1] - 1
  // (bounds: host memory, n_segments + 1 entries, bounds[n_segments] = T).
  virtual void attention_segments(const float* q, const float* k, const float* v,
                                  int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                                  const int32_t* bounds, int64_t n_segments, float scale,
                                  float* out);

  // Waits for queued work (a no-op on the CPU).
  virtual void synchronize() {}

 protected:
  // argmax_rows' or draw_rows' pick for its first row, where the picks are
  // made on the host (embed_last_pick's default reads it).
  int32_t last_pick_ = 0;
};

// Owns a block of backend memory.
template <void* (Backend::*Alloc)(size_t), void (Backend::*Free)(void*)>
class BackendBuffer {
 public:
  BackendBuffer() = default;
  BackendBuffer(Backend& backend, size_t bytes)
      : backend_(&backend), data_(bytes ? (backend.*Alloc)(bytes) : nullptr), bytes_(bytes) {}
  ~BackendBuffer() { release(); }
  BackendBuffer(BackendBuffer&& o) noexcept { *this = std::move(o); }
  BackendBuffer& operator=(BackendBuffer&& o) noexcept {
    if (this != &o) {
      release();
      backend_ = o.backend_;
      data_ = o.data_;
      bytes_ = o.bytes_;
      o.data_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  BackendBuffer(const BackendBuffer&) = delete;
  BackendBuffer& operator=(const BackendBuffer&) = delete;

  void* get() const { return data_; }
  float* f32() const { return static_cast<float*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void release() {
    if (data_) (backend_->*Free)(data_);
    data_ = nullptr;
  }
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};
using DeviceBuffer = BackendBuffer<&Backend::alloc, &Backend::free>;
// Host memory from Backend::alloc_host (pinned on a GPU).
using HostBuffer = BackendBuffer<&Backend::alloc_host, &Backend::free_host>;

struct BackendOptions {
  int threads = 0;  // CPU threads; 0 = physical cores
  int device = 0;   // GPU index (GPU backends)
};

std::unique_ptr<Backend> make_cpu_backend(const BackendOptions& options);

// The CUDA backend on GPU options.device. Throws kiln::Error when kiln was
// built without CUDA or the device cannot be used.
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options);
// CUDA devices this build can use: 0 without CUDA, without a driver or a GPU.
int cuda_device_count();
// Free and total memory of a CUDA device; false when it cannot be read.
bool cuda_memory_info(int device, size_t* free_bytes, size_t* total_bytes);
std::string cuda_device_name(int device);

}  // namespace kiln
