// Default bodies of the ops a backend may not have yet: each names itself and
// the backend, so a model that needs a missing op fails with a clear line
// instead of computing garbage.
#include "kiln/backend/backend.h"
#include "kiln/core/argmax.h"
#include "kiln/core/error.h"

#include <vector>

namespace kiln {
namespace {

[[noreturn]] void missing(const Backend& b, const char* op) {
  fail(op, " is not implemented on the ", b.name(), " backend");
}

// fn(j, row) for each row j of a device matrix [rows, cols], brought to the
// host in turn: the defaults below that choose from a row of logits there.
template <class Fn>
void each_row_on_host(Backend& b, const float* src, int64_t rows, int64_t cols, Fn&& fn) {
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t j = 0; j < rows; ++j) {
    b.to_host(row.data(), src + j * cols, row.size() * sizeof(float));
    fn(j, row.data());
  }
}

}  // namespace

void Backend::conv1d_silu(const float*, int64_t, int64_t, const float*, int64_t, float*, float*) {
  missing(*this, "conv1d_silu");
}
void Backend::deltanet_gates(const float*, const float*, const float*, const float*, int64_t,
                             int64_t, float*, float*) {
  missing(*this, "deltanet_gates");
}
void Backend::gated_delta_rule(const float*, const float*, const float*, float*,
                               const DeltaRuleParams&, float*) {
  missing(*this, "gated_delta_rule");
}
void Backend::rmsnorm_gated(const float*, const float*, const float*, int64_t, int64_t, float,
                            float*) {
  missing(*this, "rmsnorm_gated");
}
void Backend::sigmoid_mul(float*, const float*, int64_t, int64_t, bool) {
  missing(*this, "sigmoid_mul");
}

void* Backend::alloc_host(size_t bytes) { return ::operator new(bytes); }
void Backend::free_host(void* p) { ::operator delete(p); }

void Backend::to_host_rows(void* const* hosts, const void* src, size_t row_bytes, int64_t rows) {
  for (int64_t j = 0; j < rows; ++j)
    to_host(hosts[j], static_cast<const uint8_t*>(src) + size_t(j) * row_bytes, row_bytes);
}

void Backend::argmax_rows(const float* src, int64_t rows, int64_t cols, int32_t* const* outs) {
  each_row_on_host(*this, src, rows, cols,
                   [&](int64_t j, const float* row) { *outs[j] = argmax(row, cols); });
  if (rows > 0) last_pick_ = *outs[0];
}

void Backend::embed_last_pick(const Weight& table, float* out) {
  const int32_t id = last_pick_;  // embed reads its ids as it is called
  embed(table, &id, 1, out);
}

void Backend::top_k_rows(const float* src, int64_t rows, int64_t cols, int64_t k,
                         Candidate* const* outs) {
  std::vector<Candidate> top;
  each_row_on_host(*this, src, rows, cols, [&](int64_t j, const float* row) {
    top_k_candidates(row, cols, size_t(k), top);
    write_candidates(top, size_t(k), outs[j]);
  });
}

void Backend::draw_rows(const float* src, int64_t rows, int64_t cols, const DrawSpec* draws,
                        int32_t* const* outs) {
  each_row_on_host(*this, src, rows, cols, [&](int64_t j, const float* row) {
    *outs[j] = draw_from_logits(row, cols, draws[j]);
  });
  if (rows > 0) last_pick_ = *outs[0];
}

void Backend::attention_decode_batch(const float* q, const float* k, const float* v,
                                     const KvLayer* caches, const int64_t* starts, int64_t n,
                                     int64_t n_heads, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const KvLayer& c = caches[i];
    const int64_t kv_row = c.n_kv_heads * c.head_dim, q_row = n_heads * c.head_dim;
    store_kv(c, k + i * kv_row, v + i * kv_row, 1, starts[i]);
    AttentionParams p;
    p.n_tokens = 1;
    p.start = starts[i];
    p.n_heads = n_heads;
    p.scale = scale;
    attention(q + i * q_row, c, p, out + i * q_row);
  }
}

void Backend::ternary_matmul(const Weight&, const float*, int64_t, float*) {
  missing(*this, "ternary_matmul");
}
void Backend::relu2_mul(const float*, const float*, int64_t, float*) {
  missing(*this, "relu2_mul");
}

}  // namespace kiln
