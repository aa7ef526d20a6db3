// Matrix products on weights in their block format (kiln/quant/gemm.h).
// Quantized weights: the activations are quantized to int8 once per call,
// split over the threads by token, then the output rows are split over the
// threads (16-row tiles when several tokens share each weight load).
// Float weights take f32 activations as they are; those of few columns (the
// tiny models') are kept transposed in 16-row tiles, packed at their first
// product (gemm.h, float_cols_layout). Types without a kernel dequantize a
// few rows at a time and reuse them for every token.
#include <algorithm>
#include <cstdlib>
#include <vector>

#include "kiln/backend/cpu/cpu_backend.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/gemm.h"

namespace kiln {
namespace {

// A growable 64-byte aligned buffer, one per thread that needs it.
class Scratch {
 public:
  ~Scratch() { std::free(p_); }
  void* get(size_t bytes) {
    if (bytes > size_) {
      std::free(p_);
      size_ = (bytes + 4095) / 4096 * 4096;
      p_ = std::aligned_alloc(64, size_);
      if (!p_) throw std::bad_alloc();
    }
    return p_;
  }

 private:
  void* p_ = nullptr;
  size_t size_ = 0;
};

// Calls fn(r0, r1, scratch) over the rows of the output, split over the pool.
// A product this small (a few microseconds of work) runs on the calling
// thread: handing half of it to another costs about as much as it saves.
constexpr int64_t kInlineMacs = 1 << 16;

template <class Fn>
void split_rows(ThreadPool& pool, int64_t n_rows, int64_t n_tokens, int64_t K, Fn&& fn) {
  const int64_t g = gemm_row_granule(n_tokens);
  const int64_t units = (n_rows + g - 1) / g;
  const size_t scratch_bytes = gemm_scratch_bytes(K);
  if (n_rows * K * n_tokens < kInlineMacs) {
    thread_local Scratch scratch;
    fn(0, n_rows, scratch.get(scratch_bytes));
    return;
  }
  pool.parallel_for(units, [&](int64_t u0, int64_t u1, int) {
    thread_local Scratch scratch;
    fn(u0 * g, std::min(n_rows, u1 * g), scratch.get(scratch_bytes));
  });
}

}  // namespace

float dot_f32(const float* a, const float* b, int64_t n) { return dot_f32_simd(a, b, n); }

void CpuBackend::keep_weight_tiles(size_t budget_bytes) {
  std::unique_lock lock(lazy_);
  kept_budget_ = budget_bytes;
  if (budget_bytes == 0) kept_.clear(), kept_used_ = 0;
}

const void* CpuBackend::kept_tiles(const Weight& w) {
  {
    std::shared_lock read(lazy_);
    const auto found = kept_.find(w.data);
    if (found != kept_.end()) return found->second.get();
  }
  std::unique_lock lock(lazy_);
  const auto found = kept_.find(w.data);  // another part may have packed it meanwhile
  if (found != kept_.end()) return found->second.get();
  const int64_t N = w.rows(), K = w.cols();
  const size_t bytes = kept_tiles_bytes(w.view.dtype, N, K);
  void* tiles = nullptr;
  if (bytes > 0 && kept_used_ + bytes <= kept_budget_) tiles = std::aligned_alloc(64, bytes);
  kept_[w.data].reset(tiles);  // null: not asked again
  if (!tiles) return nullptr;
  kept_used_ += bytes;
  const int64_t n_tiles = (N + kept_tile_rows() - 1) / kept_tile_rows();
  const size_t scratch_bytes = gemm_scratch_bytes(K);
  pool_.parallel_for(n_tiles, [&](int64_t t0, int64_t t1, int) {
    thread_local Scratch scratch;
    pack_kept_tiles(w.view.dtype, w.data, w.view.row_bytes(), N, K, t0, t1, tiles,
                    scratch.get(scratch_bytes));
  });
  return tiles;
}

const float* CpuBackend::float_cols(const Weight& w) {
  {
    std::shared_lock read(lazy_);
    const auto found = float_cols_.find(w.data);
    if (found != float_cols_.end()) return static_cast<const float*>(found->second.get());
  }
  std::unique_lock lock(lazy_);
  const auto found = float_cols_.find(w.data);  // another part may have packed it meanwhile
  if (found != float_cols_.end()) return static_cast<const float*>(found->second.get());
  const int64_t N = w.rows(), K = w.cols();
  auto* tiles = static_cast<float*>(alloc(float_cols_bytes(N, K)));
  float_cols_[w.data].reset(tiles);
  pack_float_cols(w.view.dtype, w.data, w.view.row_bytes(), N, K, tiles);
  return tiles;
}

void CpuBackend::matmul(const Weight& w, const float* x, int64_t n_tokens, float* y) {
  const int64_t N = w.rows(), K = w.cols();
  const DType dtype = w.view.dtype;
  const size_t row_bytes = w.view.row_bytes();
  const auto* base = static_cast<const uint8_t*>(w.data);

  if (float_cols_layout(dtype, N, K)) {
    const float* tiles = float_cols(w);
    constexpr int64_t kTileRows = 16;
    const int64_t n_tiles = (N + kTileRows - 1) / kTileRows;
    if (N * K * n_tokens < kInlineMacs) {
      gemm_float_cols(tiles, 0, N, K, x, n_tokens, y, N);
      return;
    }
    pool_.parallel_for(n_tiles, [&](int64_t t0, int64_t t1, int) {
      gemm_float_cols(tiles, t0 * kTileRows, std::min(N, t1 * kTileRows), K, x, n_tokens, y, N);
    });
    return;
  }

  switch (gemm_path(dtype, K)) {
    case GemmPath::kInt8: {
      thread_local Scratch qbuf;
      QuantizedRows q =
          quantized_rows_view(qbuf.get(quantized_rows_bytes(n_tokens, K)), n_tokens, K);
      q.batch_invariant = batch_invariant_;
      if (n_tokens * K >= 32768)
        pool_.parallel_for(n_tokens, [&](int64_t t0, int64_t t1, int) {
          quantize_rows_q8(x, t0, t1, q);
        });
      else
        quantize_rows_q8(x, 0, n_tokens, q);
      const void* tiles = n_tokens > 3 && kept_budget_ > 0 ? kept_tiles(w) : nullptr;
      split_rows(pool_, N, n_tokens, K, [&](int64_t r0, int64_t r1, void* scratch) {
        if (!tiles || !gemm_int8_kept(dtype, tiles, r0, r1, q, y, N))
          gemm_int8(dtype, base, row_bytes, r0, r1, q, y, N, scratch);
      });
      return;
    }
    case GemmPath::kFloat:
      split_rows(pool_, N, n_tokens, K, [&](int64_t r0, int64_t r1, void* scratch) {
        gemm_float(dtype, base, row_bytes, r0, r1, x, n_tokens, K, y, N, scratch);
      });
      return;
    case GemmPath::kNone: break;
  }

  constexpr int64_t kRowsPerStep = 8;
  const int64_t groups = (N + kRowsPerStep - 1) / kRowsPerStep;
  pool_.parallel_for(groups, [&](int64_t g0, int64_t g1, int) {
    thread_local std::vector<float> rows_f32;
    if (dtype != DType::F32) rows_f32.resize(size_t(kRowsPerStep * K));
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t r0 = g * kRowsPerStep, r1 = std::min(N, r0 + kRowsPerStep);
      const float* rows[kRowsPerStep];
      for (int64_t r = r0; r < r1; ++r) {
        if (dtype == DType::F32) {
          rows[r - r0] = reinterpret_cast<const float*>(base + r * row_bytes);
        } else {
          float* dst = rows_f32.data() + (r - r0) * K;
          dequantize_row(dtype, base + r * row_bytes, dst, K);
          rows[r - r0] = dst;
        }
      }
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * K;
        float* yt = y + t * N;
        for (int64_t r = r0; r < r1; ++r) yt[r] = dot_f32(rows[r - r0], xt, K);
      }
    }
  });
}

void CpuBackend::matmul_sum_f64(const Weight& w, const float* x, int64_t n_tokens, float* y) {
  const DType dtype = w.view.dtype;
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    return matmul(w, x, n_tokens, y);
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t row_bytes = w.view.row_bytes();
  const int64_t N = w.rows(), K = w.cols();
  split_rows(pool_, N, n_tokens, K, [&](int64_t r0, int64_t r1, void*) {
    gemm_float_sum_f64(dtype, base, row_bytes, r0, r1, x, n_tokens, K, y, N);
  });
}

void CpuBackend::embed(const Weight& table, const int32_t* ids, int64_t n, float* out) {
  const int64_t dim = table.cols();
  const auto* base = static_cast<const uint8_t*>(table.data);
  const size_t row_bytes = table.view.row_bytes();
  for (int64_t i = 0; i < n; ++i)
    dequantize_row(table.view.dtype, base + int64_t(ids[i]) * row_bytes, out + i * dim, dim);
}

}  // namespace kiln
