// The CPU backend: activations in host memory, weights used in place from
// the file mapping, every op split over one thread pool.
#pragma once

#include <cstdlib>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/core/thread_pool.h"

namespace kiln {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& options) : pool_(options.threads) {}

  std::string name() const override;
  ThreadPool& pool() { return pool_; }

  void* alloc(size_t bytes) override;
  void free(void* p) override;
  void to_device(void* dst, const void* host, size_t bytes) override;
  void to_host(void* host, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;
  void argmax_rows(const float* src, int64_t rows, int64_t cols, int32_t* const* outs) override;
  Weight load_weight(const TensorView& view) override;

  void matmul(const Weight& w, const float* x, int64_t n_tokens, float* y) override;
  void matmul_sum_f64(const Weight& w, const float* x, int64_t n_tokens, float* y) override;
  void set_batch_invariant(bool on) override { batch_invariant_ = on; }
  int step_parts(int64_t n_rows, size_t weight_bytes) const override;
  void run_parts(int parts, const std::function<void(int)>& fn) override;
  void keep_weight_tiles(size_t budget_bytes) override;
  // Bytes of weights kept in tiles so far (keep_weight_tiles).
  size_t kept_tile_bytes() const { return kept_used_; }
  void embed(const Weight& table, const int32_t* ids, int64_t n, float* out) override;
  void rmsnorm(const float* x, const float* w, int64_t rows, int64_t dim, float eps,
               float* y) override;
  void rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t rot_dims,
            const int32_t* positions, const float* inv_freq, RopeStyle style) override;
  bool paged_kv() const override { return true; }
  void store_kv(const KvLayer& cache, const float* k, const float* v, int64_t n_tokens,
                int64_t start) override;
  void attention(const float* q, const KvLayer& cache, const AttentionParams& p,
                 float* out) override;
  void attention_decode_batch(const float* q, const float* k, const float* v,
                              const KvLayer* caches, const int64_t* starts, int64_t n,
                              int64_t n_heads, float scale, float* out) override;
  void silu_mul(const float* gate, const float* up, int64_t n, float* out) override;
  void add(float* x, const float* y, int64_t n) override;
  void moe_route(const float* logits, int64_t n_tokens, int64_t n_experts, int64_t k,
                 bool renormalise, int32_t* ids, float* weights) override;
  void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t dim,
                   float* out) override;
  void scatter_add_rows(float* y, const float* x, const int32_t* rows, const float* scales,
                        int64_t n, int64_t dim) override;

  // Hybrid models (deltanet.cpp)
  void conv1d_silu(const float* x, int64_t n_tokens, int64_t channels, const float* weight,
                   int64_t kernel, float* state, float* out) override;
  void deltanet_gates(const float* a, const float* b, const float* A, const float* dt_bias,
                      int64_t n_tokens, int64_t n_heads, float* g, float* beta) override;
  void gated_delta_rule(const float* qkv, const float* g, const float* beta, float* state,
                        const DeltaRuleParams& p, float* out) override;
  void rmsnorm_gated(const float* x, const float* w, const float* z, int64_t rows, int64_t dim,
                     float eps, float* y) override;
  void sigmoid_mul(float* x, const float* gate, int64_t rows, int64_t dim,
                   bool per_row) override;

  // BitNet (ternary.cpp)
  void ternary_matmul(const Weight& w, const float* x, int64_t n_tokens, float* y) override;
  void relu2_mul(const float* gate, const float* up, int64_t n, float* out) override;

  // Vision encoders (vision_ops.cpp)
  void layernorm(const float* x, const float* w, const float* b, int64_t rows, int64_t dim,
                 float eps, float* y) override;
  void add_bias(float* x, const float* bias, int64_t rows, int64_t dim) override;
  void gelu(float* x, int64_t n, bool tanh_approx) override;
  void attention_segments(const float* q, const float* k, const float* v, int64_t n_tokens,
                          int64_t n_heads, int64_t head_dim, const int32_t* bounds,
                          int64_t n_segments, float scale, float* out) override;

 private:
  // The weight's tiles packed once (kiln/quant/gemm.h, kept tiles), packed
  // at its first product of more than 3 tokens while the budget allows;
  // null when it has none or they did not fit.
  const void* kept_tiles(const Weight& w);
  // The weight transposed into 16-row tiles (kiln/quant/gemm.h,
  // float_cols_layout), packed at its first product whatever its token
  // count, so that every product of the weight sums in one order.
  const float* float_cols(const Weight& w);

  ThreadPool pool_;
  bool batch_invariant_ = false;  // set_batch_invariant
  // Guards what ops fill in lazily (kept_, float_cols_, rope_angles_): a
  // step's parts (run_parts) call the ops from several threads at once.
  // Once filled they are only read, every op of every part: shared while
  // reading, so that the parts do not wait on each other's lookups (with
  // one exclusive lock, a served tiny model's two parts collided on it at
  // nearly every product and rotation).
  std::shared_mutex lazy_;
  // cos and sin of the rotary angles, per position: every layer's q and k
  // of a step rotate by the same ones. [position][cos half, sin half].
  struct RopeAngles {
    static constexpr int64_t kMaxPositions = 1 << 14;  // past it: computed per call
    // Rows up to position last (< kMaxPositions) for these frequencies.
    void fill(int64_t last, const float* inv_freq, int64_t half);
    // Whether it holds rows up to position last for these frequencies.
    bool covers(int64_t last, const float* inv_freq, int64_t half) const;
    std::vector<float> freq, cos_sin;
  };
  RopeAngles rope_angles_;
  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };
  size_t kept_budget_ = 0, kept_used_ = 0;
  // Both by the weight's bytes' address: the weights stay mapped as long as
  // the backend lives (an Engine makes a backend for its one model).
  std::unordered_map<const void*, std::unique_ptr<void, FreeDeleter>> kept_;
  std::unordered_map<const void*, std::unique_ptr<void, FreeDeleter>> float_cols_;
};

// f32 dot product, vectorised where the CPU allows.
float dot_f32(const float* a, const float* b, int64_t n);

}  // namespace kiln
