// Matrix products of weights in their file's block format with activations,
// the CPU's hot loop. Quantized weights meet activations quantized to int8
// (blocks of 32 with an f32 scale, once per matmul input, shared by every
// output row), as GGML does; the products are exact integer dot products
// (VNNI dpbusd where the CPU has it) scaled in f32. Float weights (F32, F16,
// BF16) meet f32 activations, so their results stay within float rounding.
// Kernels are compiled per instruction set and chosen at startup
// (cpu_features.h); anything without a kernel falls back to dot.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kiln/core/dtype.h"

namespace kiln {

// Activations [T, K] as int8 blocks of 32 (K a multiple of 32): per block the
// scale d, and the sum of its int8 values (as is, and times d), also per half
// block of 16 for formats with 16-element scales.
struct QuantizedRows {
  int64_t n_tokens = 0, K = 0;
  int8_t* q = nullptr;     // [T][K]
  float* d32 = nullptr;    // [T][K/32]
  float* s32 = nullptr;    // [T][K/32] d * sum(q)
  int32_t* i32 = nullptr;  // [T][K/32] sum(q)
  float* d16 = nullptr;    // [T][K/16]
  float* s16 = nullptr;    // [T][K/16]
  int32_t* i16 = nullptr;  // [T][K/16]
  // Each token gets the same bits whatever the batch (serving: a greedy
  // request's output must not depend on who else is served). The AVX-512
  // VNNI kernels always keep one order for every token count (strips and
  // tiles); the AMX level, whose tiles for 16 tokens and more sum in
  // another, leaves them to the VNNI tiles when this is set; the AVX2 and
  // AVX-VNNI levels then take their strips for 1-3 tokens (in their 8-row
  // tiles' order) instead of their faster row kernels.
  bool batch_invariant = false;
};

size_t quantized_rows_bytes(int64_t n_tokens, int64_t K);
// Lays out a QuantizedRows in mem (quantized_rows_bytes, 64-byte aligned).
QuantizedRows quantized_rows_view(void* mem, int64_t n_tokens, int64_t K);
// Quantizes tokens [t0, t1) of x [T, K] into q.
void quantize_rows_q8(const float* x, int64_t t0, int64_t t1, const QuantizedRows& q);

enum class GemmPath { kNone, kInt8, kFloat };
// Which kernel gemm_rows uses for weights of type t with K columns here.
GemmPath gemm_path(DType t, int64_t K);
// Rows of output per unit of work the kernels like to be split into.
int64_t gemm_row_granule(int64_t n_tokens);
// Scratch per thread for gemm_int8 / gemm_float with K columns.
size_t gemm_scratch_bytes(int64_t K);

// y[t * y_stride + r] = dot(W[r], x[t]) for rows r in [r0, r1) of W (row_bytes
// apart) and every token t of x. scratch: gemm_scratch_bytes(K), 64-aligned.
void gemm_int8(DType t, const void* w, size_t row_bytes, int64_t r0, int64_t r1,
               const QuantizedRows& x, float* y, int64_t y_stride, void* scratch);
void gemm_float(DType t, const void* w, size_t row_bytes, int64_t r0, int64_t r1, const float* x,
                int64_t n_tokens, int64_t K, float* y, int64_t y_stride, void* scratch);
// gemm_float with every output summed in double and rounded once (the
// products of float weights and f32 activations are exact in double), the
// same bits at every kernel level and for every n_tokens. False, with
// nothing written, for weights that are not F32, F16 or BF16.
bool gemm_float_sum_f64(DType t, const void* w, size_t row_bytes, int64_t r0, int64_t r1,
                        const float* x, int64_t n_tokens, int64_t K, float* y, int64_t y_stride);
// A thread's scratch of at least n doubles, kept from call to call (the
// kernels of gemm_float_sum_f64 widen their input into it). Defined in
// gemm.cpp, which is built without the kernel levels' flags: a standard
// container used in a per-level file is instantiated there with those
// flags, and the linker keeps one copy for every caller, so an AVX-512
// file's copy can run on an AVX2-only machine (an AddressSanitizer build,
// which inlines less, crashed so).
double* thread_scratch_f64(size_t n);

// Float weights of few columns (F32, F16 or BF16, at most kFloatColsMaxK
// columns, and no more than kFloatColsMaxElems values), as the CPU backend
// keeps them: converted to f32 and transposed into tiles of 16 rows, [K][16]
// each (rows past the end zero). Then 16 rows' outputs fill a register and
// each sums its products in column order, one fma at a time, where
// gemm_float's lanes over the columns need a reduction across lanes per
// output that, for rows of 64-256 columns, costs about as much as the
// products (the tiny models' every weight). A different order from
// gemm_float's, and the same for every token count and at every kernel
// level: a weight takes one layout or the other for good.
constexpr int64_t kFloatColsMaxK = 256, kFloatColsMaxElems = int64_t(1) << 22;
bool float_cols_layout(DType t, int64_t rows, int64_t K);
// Floats from one tile to the next: a row of 16 more than the tile's K, so
// that the tiles a kernel reads side by side (4 KB apart at K = 64) do not
// all fall in the same sets of the L1 cache.
constexpr int64_t float_cols_tile_floats(int64_t K) { return (K + 1) * 16; }
size_t float_cols_bytes(int64_t rows, int64_t K);
// Packs all of w ({rows, K}, row_bytes apart) into out (float_cols_bytes,
// 64-byte aligned).
void pack_float_cols(DType t, const void* w, size_t row_bytes, int64_t rows, int64_t K,
                     float* out);
// y[t * y_stride + r] for rows r in [r0, r1) (r0 a multiple of 16) of the
// packed tiles and every token t of x [n_tokens, K].
void gemm_float_cols(const float* tiles, int64_t r0, int64_t r1, int64_t K, const float* x,
                     int64_t n_tokens, float* y, int64_t y_stride);

// Kept tiles: a weight packed once into the int8 tiles that gemm_int8
// otherwise packs on every call with more than 3 tokens (most of a serving
// step's cost on the CPU), read in place afterwards with the same bits.
// Rows per kept tile at this CPU's kernel level (16 on the 512-bit levels,
// 8 on the AVX2 ones).
int64_t kept_tile_rows();
// Bytes for a {rows, K} weight of type t at this CPU's kernel level; 0 when
// the level has no kept tiles (the scalar fallback) or t has none.
size_t kept_tiles_bytes(DType t, int64_t rows, int64_t K);
// Packs tiles [tile0, tile1) (rows kept_tile_rows() * tile0 ..) of w into out
// (64-aligned, kept_tiles_bytes). scratch: gemm_scratch_bytes(K), 64-aligned.
void pack_kept_tiles(DType t, const void* w, size_t row_bytes, int64_t rows, int64_t K,
                     int64_t tile0, int64_t tile1, void* out, void* scratch);
// gemm_int8 for rows [r0, r1) (r0 a multiple of kept_tile_rows()) from kept
// tiles. False, with nothing written, when these tokens take another kernel
// (1-3 tokens, or the AMX tiles outside batch_invariant): the caller uses
// gemm_int8.
bool gemm_int8_kept(DType t, const void* tiles, int64_t r0, int64_t r1, const QuantizedRows& x,
                    float* y, int64_t y_stride);

// sum a[i] * b[i], vectorised for the running CPU.
float dot_f32_simd(const float* a, const float* b, int64_t n);
// y[i] += s * x[i]
void axpy_f32_simd(float* y, const float* x, float s, int64_t n);
// Attention over a run of cache rows (stride floats apart):
// out[j] = scale * dot(k[j], q) for j < rows;
void dot_rows_f32_simd(const float* k, int64_t stride, int64_t rows, const float* q, int64_t n,
                       float scale, float* out);
// y[i] = sum over j < rows of p[j] * v[j][i], summed in row order;
void wsum_rows_f32_simd(const float* v, int64_t stride, int64_t rows, const float* p, int64_t n,
                        float* y);
// x[i] = exp(x[i] - sub) for x[i] <= sub (softmax), returning their sum.
float exp_sum_f32_simd(float* x, int64_t n, float sub);
// dst[i] = src[i] from IEEE half: exact (every half is a float), as
// kiln/core/half.h's f16_to_f32, the CPU's F16C conversion where it has one.
void f16_to_f32_simd(const uint16_t* src, int64_t n, float* dst);
// One step of attention's online softmax (flash-attention style) for
// several queries, each over its own run of key and value rows (head_dim
// floats apart; `visible` >= 1 of them). For query g, with m and l its
// running max and sum (m = -inf before its first step) and o its output:
//   s = scale * K q (as dot_rows_f32_simd), m' = max(m, max s),
//   p = exp(s - m') (as exp_sum_f32_simd), r = exp(m - m') (the same exp),
//   o = o * r + V^T p,  l = l * r + sum p  (each a fused multiply-add;
//   o = V^T p and l = sum p at the first step), m = m'.
// V^T p sums the rows in row order, as wsum_rows_f32_simd. A query's bits
// are the same whichever queries share the call: short heads (a multiple
// of 8 below 64 columns) interleave several queries' value sums only so
// that their chains of dependent fmas overlap.
//
// The rows lie together at k and v, or, for short heads only (a paged
// cache read in place), in runs of `run` rows (a multiple of 8): rows
// [i * run, (i + 1) * run) at k_runs[i] and v_runs[i]. The queries of one
// call all have runs of one length, or none. Either way, the same bits.
struct AttentionRows {
  const float* q;
  const float* k;
  const float* v;
  int64_t visible;
  float* out;
  float* max;
  float* sum;
  int64_t run = 0;
  const float* const* k_runs = nullptr;
  const float* const* v_runs = nullptr;
};
// The head widths the short-head kernels take (and so the only ones whose
// rows may come in runs): a multiple of 8 below 64 columns.
constexpr bool attention_short_head(int64_t head_dim) {
  return head_dim % 8 == 0 && head_dim < 64;
}
// Row j of a query's keys or values (head_dim hd).
inline const float* attention_key_row(const AttentionRows& a, int64_t j, int64_t hd) {
  return a.run ? a.k_runs[j / a.run] + (j % a.run) * hd : a.k + j * hd;
}
inline const float* attention_value_row(const AttentionRows& a, int64_t j, int64_t hd) {
  return a.run ? a.v_runs[j / a.run] + (j % a.run) * hd : a.v + j * hd;
}
// Scratch floats for attention_rows_f32_simd: every query's scores and one
// head of partial sums.
constexpr int64_t attention_rows_scratch_floats(int64_t n_queries, int64_t max_visible,
                                             int64_t head_dim) {
  return n_queries * max_visible + head_dim;
}
void attention_rows_f32_simd(const AttentionRows* queries, int64_t n_queries, int64_t head_dim,
                             float scale, float* scratch);
// out[i] = silu(gate[i]) * up[i], exp as in exp_sum_f32_simd.
void silu_mul_f32_simd(const float* gate, const float* up, int64_t n, float* out);

// sum x[i]^2 for RMSNorm, in double: four running sums (x[i] into sum
// i % 4, by fma, the last n % 4 into sum 0), added as (0 + 1) + (2 + 3) and
// rounded once; the same bits at every level.
float sum_squares_f64_simd(const float* x, int64_t n);

// Double precision, for the delta rule (backend/cpu/deltanet.cpp).
// y[i] += s * x[i] with x f32, in double.
void axpy_f64_f32_simd(double* y, const float* x, double s, int64_t n);
// One row of the delta rule's recurrent step on an f32 state row:
// v = row * decay + k * delta (in double), row = v rounded, o += q * v.
void decay_update_f32_simd(float* row, const double* delta, double decay, double k, double q,
                           double* o, int64_t n);
// acc[i] += a[i] * b[i] in double.
void mul_add_f64_simd(double* acc, const float* a, const float* b, int64_t n);
// C[M x N] += alpha A[M x K] B[K x N], row-major with leading dimensions.
void gemm_f64_simd(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                   const double* B, int64_t ldb, double* C, int64_t ldc);

// Name of the kernel level in use ("avx512vnni", ...).
const char* gemm_kernel_level();

}  // namespace kiln
