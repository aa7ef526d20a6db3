#include "kiln/quant/dot.h"

#include <algorithm>

#include "kiln/core/error.h"
#include "kiln/quant/blocks.h"
#include "kiln/quant/simd.h"

namespace kiln {
namespace {

// Elements dequantized at a time: one K-quant super-block, eight 32-blocks.
constexpr int kChunk = 256;
// Weight rows that share each load of the activations in matmul_rows.
constexpr int kRowTile = 4;

#if defined(__AVX512F__)
inline float hsum512(__m512 v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__)
inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// sum a[i] * b[i], i < n.
float dot_f32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  if (i < n) {
    const __mmask16 m0 = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, a + i), _mm512_maskz_loadu_ps(m0, b + i), acc0);
    if (n - i > 16) {
      const __mmask16 m1 = __mmask16((1u << (n - i - 16)) - 1);
      acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, a + i + 16),
                             _mm512_maskz_loadu_ps(m1, b + i + 16), acc1);
    }
    i = n;
  }
  sum = hsum512(_mm512_add_ps(acc0, acc1));
#elif defined(__AVX2__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  sum = hsum256(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// out[r] = sum w[r][i] * x[i] for R <= kRowTile rows of one chunk (n <= kChunk,
// a multiple of 16 in the vector path): each x load feeds every row.
template <int R>
void dot_tile(const float* const* w, const float* x, int n, float* out) {
  int i = 0;
  float sums[R] = {};
#if defined(__AVX512F__)
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m512 xv = _mm512_loadu_ps(x + i);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w[r] + i), xv, acc[r]);
  }
  for (int r = 0; r < R; ++r) sums[r] = hsum512(acc[r]);
#elif defined(__AVX2__)
  __m256 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(w[r] + i), xv, acc[r]);
  }
  for (int r = 0; r < R; ++r) sums[r] = hsum256(acc[r]);
#endif
  for (; i < n; ++i)
    for (int r = 0; r < R; ++r) sums[r] += w[r][i] * x[i];
  for (int r = 0; r < R; ++r) out[r] = sums[r];
}

void dot_tile_any(int rows, const float* const* w, const float* x, int n, float* out) {
  switch (rows) {
    case 1: return dot_tile<1>(w, x, n, out);
    case 2: return dot_tile<2>(w, x, n, out);
    case 3: return dot_tile<3>(w, x, n, out);
    default: return dot_tile<4>(w, x, n, out);
  }
}

struct RowKernel {
  quant::DequantFn dequant;
  int64_t chunk;  // elements per dequantized chunk: whole blocks, <= kChunk
};

RowKernel row_kernel(DType t, int64_t n) {
  const quant::DequantFn fn = quant::dequant_fn(t);
  if (!fn) fail("no dot product for tensor type ", dtype_name(t), " (id ", uint32_t(t), ")");
  const int64_t bs = dtype_info(t).block_size;
  KILN_CHECK(n >= 0 && n % bs == 0, "a row of ", n, " elements is not a whole number of ",
             dtype_name(t), " blocks of ", bs);
  return {fn, kChunk / bs * bs};
}

}  // namespace

float dot_row(DType t, const void* row, const float* x, int64_t n) {
  if (t == DType::F32) return dot_f32(static_cast<const float*>(row), x, n);
  const RowKernel k = row_kernel(t, n);
  const auto* src = static_cast<const uint8_t*>(row);
  const size_t chunk_bytes = dtype_row_bytes(t, k.chunk);
  alignas(64) float buf[kChunk];
  float sum = 0.0f;
  for (int64_t c0 = 0; c0 < n; c0 += k.chunk, src += chunk_bytes) {
    const int64_t len = std::min(k.chunk, n - c0);
    k.dequant(src, buf, len);
    sum += dot_f32(buf, x + c0, len);
  }
  return sum;
}

void matmul_rows_strided(DType t, const void* w, size_t row_bytes, int64_t n_rows, const float* x,
                         int64_t n_cols, int64_t n_tokens, float* y, int64_t y_stride) {
  const RowKernel k = row_kernel(t, n_cols);
  KILN_CHECK(row_bytes >= dtype_row_bytes(t, n_cols), "matmul_rows: row stride of ", row_bytes,
             " bytes is shorter than a ", dtype_name(t), " row of ", n_cols, " elements");
  KILN_CHECK(y_stride >= n_rows, "matmul_rows: output stride ", y_stride, " < ", n_rows, " rows");
  const auto* base = static_cast<const uint8_t*>(w);
  if (n_tokens == 1) {
    for (int64_t r = 0; r < n_rows; ++r) y[r] = dot_row(t, base + r * row_bytes, x, n_cols);
    return;
  }
  const size_t chunk_bytes = dtype_row_bytes(t, k.chunk);
  alignas(64) float buf[kRowTile][kChunk];
  for (int64_t r0 = 0; r0 < n_rows; r0 += kRowTile) {
    const int rows = int(std::min<int64_t>(kRowTile, n_rows - r0));
    for (int64_t tok = 0; tok < n_tokens; ++tok)
      for (int r = 0; r < rows; ++r) y[tok * y_stride + r0 + r] = 0.0f;
    for (int64_t c0 = 0; c0 < n_cols; c0 += k.chunk) {
      const int len = int(std::min(k.chunk, n_cols - c0));
      const float* wr[kRowTile];
      for (int r = 0; r < rows; ++r) {
        const uint8_t* src = base + (r0 + r) * row_bytes + (c0 / k.chunk) * chunk_bytes;
        if (t == DType::F32) {
          wr[r] = reinterpret_cast<const float*>(src);
        } else {
          k.dequant(src, buf[r], len);
          wr[r] = buf[r];
        }
      }
      for (int64_t tok = 0; tok < n_tokens; ++tok) {
        float part[kRowTile];
        dot_tile_any(rows, wr, x + tok * n_cols + c0, len, part);
        float* yt = y + tok * y_stride + r0;
        for (int r = 0; r < rows; ++r) yt[r] += part[r];
      }
    }
  }
}

void matmul_rows(DType t, const void* w, size_t row_bytes, int64_t n_rows, const float* x,
                 int64_t n_cols, int64_t n_tokens, float* y) {
  matmul_rows_strided(t, w, row_bytes, n_rows, x, n_cols, n_tokens, y, n_rows);
}

}  // namespace kiln
