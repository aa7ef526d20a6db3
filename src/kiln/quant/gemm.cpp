// Picks the gemm kernels for the running CPU once, and the portable fallbacks.
#include "kiln/quant/gemm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kiln/core/cpu_features.h"
#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/quant/dequantize.h"

namespace kiln {

// One namespace per compiled level (gemm_<level>.cpp).
#define KILN_DECLARE_LEVEL(ns)                                                                 \
  namespace ns {                                                                               \
  void quantize_rows(const float* x, int64_t t0, int64_t t1, const QuantizedRows& q);         \
  bool gemm_int8(DType t, const void* w, size_t rb, int64_t r0, int64_t r1,                  \
                 const QuantizedRows& x, float* y, int64_t ys, void* scratch);                 \
  bool gemm_float(DType t, const void* w, size_t rb, int64_t r0, int64_t r1, const float* x, \
                  int64_t n_tokens, int64_t K, float* y, int64_t ys, void* scratch);           \
  bool gemm_float_sum_f64(DType t, const void* w, size_t rb, int64_t r0, int64_t r1,           \
                          const float* x, int64_t n_tokens, int64_t K, float* y, int64_t ys);  \
  void gemm_float_cols(const float* tiles, int64_t r0, int64_t r1, int64_t K, const float* x,  \
                       int64_t n_tokens, float* y, int64_t ys);                                \
  int kept_tile_rows();                                                                         \
  size_t kept_tile_bytes(DType t, int64_t K);                                                  \
  bool pack_kept_tiles(DType t, const void* w, size_t rb, int64_t n_rows, int64_t K,           \
                       int64_t tile0, int64_t tile1, void* out, void* scratch);                \
  bool gemm_int8_kept(DType t, const void* tiles, int64_t r0, int64_t r1,                      \
                      const QuantizedRows& x, float* y, int64_t ys);                           \
  float dot_f32(const float* a, const float* b, int64_t n);                                    \
  void axpy_f32(float* y, const float* x, float s, int64_t n);                                 \
  void dot_rows_f32(const float* k, int64_t stride, int64_t rows, const float* q, int64_t n,   \
                    float scale, float* out);                                                  \
  void wsum_rows_f32(const float* v, int64_t stride, int64_t rows, const float* p, int64_t n,  \
                     float* y);                                                                \
  float exp_sum_f32(float* x, int64_t n, float sub);                                           \
  void f16_to_f32_rows(const uint16_t* src, int64_t n, float* dst);                            \
  void attention_rows_f32(const AttentionRows* qs, int64_t n_q, int64_t hd, float scale,       \
                          float* scratch);                                                     \
  void silu_mul_f32(const float* gate, const float* up, int64_t n, float* out);               \
  void mul_add_f64(double* acc, const float* a, const float* b, int64_t n);                    \
  float sum_squares_f64(const float* x, int64_t n);                                            \
  void axpy_f64_f32(double* y, const float* x, double s, int64_t n);                           \
  void decay_update_f32(float* row, const double* delta, double decay, double k, double q,    \
                        double* o, int64_t n);                                                 \
  void gemm_f64(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,   \
                const double* B, int64_t ldb, double* C, int64_t ldc);                         \
  }
KILN_DECLARE_LEVEL(k_avx2)
KILN_DECLARE_LEVEL(k_avx2vnni)
KILN_DECLARE_LEVEL(k_avx512vnni)
KILN_DECLARE_LEVEL(k_amx)

namespace {

float dot_scalar(const float* a, const float* b, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
void axpy_scalar(float* y, const float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += s * x[i];
}
void dot_rows_scalar(const float* k, int64_t stride, int64_t rows, const float* q, int64_t n,
                     float scale, float* out) {
  for (int64_t j = 0; j < rows; ++j) out[j] = dot_scalar(k + j * stride, q, n) * scale;
}
void wsum_rows_scalar(const float* v, int64_t stride, int64_t rows, const float* p, int64_t n,
                      float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = 0;
  for (int64_t j = 0; j < rows; ++j) axpy_scalar(y, v + j * stride, p[j], n);
}
void silu_mul_scalar(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}
void f16_to_f32_scalar(const uint16_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
float exp_sum_scalar(float* x, int64_t n, float sub) {
  float total = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - sub);
    total += x[i];
  }
  return total;
}

// attention_rows_f32_simd with the scalar kernels above, merged by fma.
void attention_rows_scalar(const AttentionRows* qs, int64_t n_q, int64_t hd, float scale,
                           float* scratch) {
  for (int64_t g = 0; g < n_q; ++g) {
    const AttentionRows& a = qs[g];
    float* s = scratch;
    float* part = scratch + a.visible;
    for (int64_t j = 0; j < a.visible; ++j)  // dot_rows_scalar, a row at a time
      s[j] = dot_scalar(attention_key_row(a, j, hd), a.q, hd) * scale;
    float step_max = s[0];
    for (int64_t i = 1; i < a.visible; ++i) step_max = std::max(step_max, s[i]);
    const float m = *a.max;
    const float new_max = std::max(m, step_max);
    const float step_sum = exp_sum_scalar(s, a.visible, new_max);
    *a.max = new_max;
    // wsum_rows_scalar, a row at a time.
    float* y = m == -INFINITY ? a.out : part;
    for (int64_t i = 0; i < hd; ++i) y[i] = 0;
    for (int64_t j = 0; j < a.visible; ++j) axpy_scalar(y, attention_value_row(a, j, hd), s[j], hd);
    if (m == -INFINITY) {
      *a.sum = step_sum;
      continue;
    }
    float r = m - new_max;
    exp_sum_scalar(&r, 1, 0.0f);
    for (int64_t i = 0; i < hd; ++i) a.out[i] = std::fma(a.out[i], r, part[i]);
    *a.sum = std::fma(*a.sum, r, step_sum);
  }
}

void axpy_f64_f32_scalar(double* y, const float* x, double s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::fma(s, double(x[i]), y[i]);
}
void decay_update_f32_scalar(float* row, const double* delta, double decay, double k, double q,
                             double* o, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = std::fma(k, delta[i], double(row[i]) * decay);
    row[i] = float(v);
    o[i] = std::fma(q, v, o[i]);
  }
}
float sum_squares_f64_scalar(const float* x, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) s[k] = std::fma(double(x[i + k]), double(x[i + k]), s[k]);
  for (; i < n; ++i) s[0] = std::fma(double(x[i]), double(x[i]), s[0]);
  return float((s[0] + s[1]) + (s[2] + s[3]));
}
void mul_add_f64_scalar(double* acc, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] = std::fma(double(a[i]), double(b[i]), acc[i]);
}
void gemm_f64_scalar(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                     const double* B, int64_t ldb, double* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double sum = 0;
      for (int64_t k = 0; k < K; ++k) sum = std::fma(A[i * lda + k], B[k * ldb + j], sum);
      C[i * ldc + j] = std::fma(alpha, sum, C[i * ldc + j]);
    }
}

// gemm_float_cols without SIMD: the same chain of fmas per output.
void gemm_float_cols_scalar(const float* tiles, int64_t r0, int64_t r1, int64_t K,
                            const float* x, int64_t n_tokens, float* y, int64_t ys) {
  for (int64_t t = 0; t < n_tokens; ++t)
    for (int64_t r = r0; r < r1; ++r) {
      const float* w = tiles + (r / 16) * float_cols_tile_floats(K) + r % 16;
      float acc = 0.0f;
      for (int64_t k = 0; k < K; ++k) acc = std::fma(w[k * 16], x[t * K + k], acc);
      y[t * ys + r] = acc;
    }
}

// gemm_float_sum_f64 without SIMD: the kernels' order (eight lanes of
// columns i mod 8, fma in column order, then lanes i + 4, i + 2, i + 1), so
// the bits are those of every other level.
bool gemm_float_sum_f64_scalar(DType t, const void* w, size_t rb, int64_t r0, int64_t r1,
                               const float* x, int64_t n_tokens, int64_t K, float* y, int64_t ys) {
  if (t != DType::F32 && t != DType::F16 && t != DType::BF16) return false;
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t r = r0; r < r1; ++r) {
    dequantize_row(t, static_cast<const uint8_t*>(w) + r * rb, row.data(), K);
    for (int64_t tok = 0; tok < n_tokens; ++tok) {
      const float* xt = x + tok * K;
      double lane[8] = {};
      for (int64_t k = 0; k < K; ++k)
        lane[k % 8] = std::fma(double(row[size_t(k)]), double(xt[k]), lane[k % 8]);
      for (int i = 0; i < 4; ++i) lane[i] += lane[i + 4];
      for (int i = 0; i < 2; ++i) lane[i] += lane[i + 2];
      y[tok * ys + r] = float(lane[0] + lane[1]);
    }
  }
  return true;
}

struct Kernels {
  const char* level = "scalar";
  decltype(&k_avx2::quantize_rows) quantize = nullptr;
  decltype(&k_avx2::gemm_int8) int8 = nullptr;
  decltype(&k_avx2::gemm_float) fl = nullptr;
  decltype(&k_avx2::gemm_float_sum_f64) fl_sum_f64 = gemm_float_sum_f64_scalar;
  decltype(&k_avx2::gemm_float_cols) fl_cols = gemm_float_cols_scalar;
  decltype(&k_avx2::dot_f32) dot = dot_scalar;
  decltype(&k_avx2::axpy_f32) axpy = axpy_scalar;
  decltype(&k_avx2::dot_rows_f32) dot_rows = dot_rows_scalar;
  decltype(&k_avx2::wsum_rows_f32) wsum_rows = wsum_rows_scalar;
  decltype(&k_avx2::exp_sum_f32) exp_sum = exp_sum_scalar;
  decltype(&k_avx2::f16_to_f32_rows) f16_to_f32 = f16_to_f32_scalar;
  decltype(&k_avx2::attention_rows_f32) attention_rows = attention_rows_scalar;
  decltype(&k_avx2::silu_mul_f32) silu_mul = silu_mul_scalar;
  decltype(&k_avx2::gemm_f64) gemm64 = gemm_f64_scalar;
  decltype(&k_avx2::mul_add_f64) mul_add64 = mul_add_f64_scalar;
  decltype(&k_avx2::sum_squares_f64) sum_squares64 = sum_squares_f64_scalar;
  decltype(&k_avx2::axpy_f64_f32) axpy64_32 = axpy_f64_f32_scalar;
  decltype(&k_avx2::decay_update_f32) decay_update = decay_update_f32_scalar;
  bool tiled = false;  // 16-row tiles for several tokens (else 8-row ones)
  decltype(&k_avx2::kept_tile_rows) kept_rows = nullptr;
  decltype(&k_avx2::kept_tile_bytes) kept_bytes = nullptr;
  decltype(&k_avx2::pack_kept_tiles) pack_kept = nullptr;
  decltype(&k_avx2::gemm_int8_kept) int8_kept = nullptr;
};

#define KILN_LEVEL(ns, name, tiles) \
  Kernels{name,        ns::quantize_rows,    ns::gemm_int8,      ns::gemm_float, \
          ns::gemm_float_sum_f64, ns::gemm_float_cols,                           \
          ns::dot_f32, ns::axpy_f32,         ns::dot_rows_f32,   ns::wsum_rows_f32, \
          ns::exp_sum_f32, ns::f16_to_f32_rows, ns::attention_rows_f32, ns::silu_mul_f32, ns::gemm_f64, \
          ns::mul_add_f64, ns::sum_squares_f64, ns::axpy_f64_f32,  ns::decay_update_f32, tiles, \
          ns::kept_tile_rows, ns::kept_tile_bytes, ns::pack_kept_tiles, ns::gemm_int8_kept}

Kernels pick() {
#if defined(__x86_64__)
  const CpuFeatures& f = cpu_features();
  if (f.amx_int8) return KILN_LEVEL(k_amx, "amx", true);
  if (f.avx512_vnni) return KILN_LEVEL(k_avx512vnni, "avx512vnni", true);
  if (f.avx_vnni) return KILN_LEVEL(k_avx2vnni, "avx2vnni", false);
  if (f.avx2) return KILN_LEVEL(k_avx2, "avx2", false);
#endif
  return Kernels{};
}

const Kernels& kernels() {
  static const Kernels k = pick();
  return k;
}

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

}  // namespace

double* thread_scratch_f64(size_t n) {
  thread_local std::vector<double> scratch;
  if (scratch.size() < n) scratch.resize(n);
  return scratch.data();
}

size_t quantized_rows_bytes(int64_t T, int64_t K) {
  const size_t t = size_t(T);
  return align64(t * size_t(K)) + 3 * align64(t * size_t(K / 32) * 4) +
         3 * align64(t * size_t(K / 16) * 4);
}

QuantizedRows quantized_rows_view(void* mem, int64_t T, int64_t K) {
  auto* p = static_cast<uint8_t*>(mem);
  const size_t t = size_t(T);
  QuantizedRows q;
  q.n_tokens = T;
  q.K = K;
  q.q = reinterpret_cast<int8_t*>(p);
  p += align64(t * size_t(K));
  const size_t b32 = align64(t * size_t(K / 32) * 4), b16 = align64(t * size_t(K / 16) * 4);
  q.d32 = reinterpret_cast<float*>(p);
  q.s32 = reinterpret_cast<float*>(p + b32);
  q.i32 = reinterpret_cast<int32_t*>(p + 2 * b32);
  p += 3 * b32;
  q.d16 = reinterpret_cast<float*>(p);
  q.s16 = reinterpret_cast<float*>(p + b16);
  q.i16 = reinterpret_cast<int32_t*>(p + 2 * b16);
  return q;
}

void quantize_rows_q8(const float* x, int64_t t0, int64_t t1, const QuantizedRows& q) {
  KILN_CHECK(q.K % 32 == 0, "quantize_rows_q8: ", q.K, " columns are not blocks of 32");
  if (kernels().quantize) return kernels().quantize(x, t0, t1, q);
  const int64_t K = q.K, nb = K / 32;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = x + t * K + 32 * b;
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
      const float d = f16_to_f32(f32_to_f16(amax / 127.0f)), id = amax != 0 ? 127.0f / amax : 0.0f;
      int32_t s[2] = {0, 0};
      for (int i = 0; i < 32; ++i) {
        const int v = int(std::nearbyint(xb[i] * id));
        q.q[t * K + 32 * b + i] = int8_t(v);
        s[i / 16] += v;
      }
      const int64_t i32 = t * nb + b;
      q.d32[i32] = d;
      q.i32[i32] = s[0] + s[1];
      q.s32[i32] = d * float(s[0] + s[1]);
      for (int h = 0; h < 2; ++h) {
        q.d16[2 * i32 + h] = d;
        q.i16[2 * i32 + h] = s[h];
        q.s16[2 * i32 + h] = d * float(s[h]);
      }
    }
}

GemmPath gemm_path(DType t, int64_t K) {
  const Kernels& k = kernels();
  if (!k.int8) return GemmPath::kNone;
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16: return GemmPath::kFloat;
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::IQ4_NL: return K % 32 == 0 ? GemmPath::kInt8 : GemmPath::kNone;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::IQ4_XS: return K % 256 == 0 ? GemmPath::kInt8 : GemmPath::kNone;
    default: return GemmPath::kNone;
  }
}

int64_t gemm_row_granule(int64_t n_tokens) {
  if (kernels().tiled) return 16;             // 512-bit tiles
  return kernels().int8 && n_tokens >= 4 ? 8 : 4;  // 256-bit tiles, or row blocks of 4
}

// The largest of the kernels' needs: the AMX tiles' 232 bytes per column
// (weights, interleaved activations of 128 tokens, their scales).
size_t gemm_scratch_bytes(int64_t K) { return size_t(256 * K + 4096); }

void gemm_int8(DType t, const void* w, size_t rb, int64_t r0, int64_t r1, const QuantizedRows& x,
               float* y, int64_t ys, void* scratch) {
  KILN_CHECK(kernels().int8 && kernels().int8(t, w, rb, r0, r1, x, y, ys, scratch),
             "no int8 kernel for ", dtype_name(t));
}

int64_t kept_tile_rows() { return kernels().kept_rows ? kernels().kept_rows() : 16; }

size_t kept_tiles_bytes(DType t, int64_t rows, int64_t K) {
  if (!kernels().kept_bytes || K % 32 != 0) return 0;
  const int64_t tr = kept_tile_rows();
  return size_t((rows + tr - 1) / tr) * kernels().kept_bytes(t, K);
}

void pack_kept_tiles(DType t, const void* w, size_t row_bytes, int64_t rows, int64_t K,
                     int64_t tile0, int64_t tile1, void* out, void* scratch) {
  KILN_CHECK(kernels().pack_kept &&
                 kernels().pack_kept(t, w, row_bytes, rows, K, tile0, tile1, out, scratch),
             "no kept tiles for ", dtype_name(t), " at the ", kernels().level, " level");
}

bool gemm_int8_kept(DType t, const void* tiles, int64_t r0, int64_t r1, const QuantizedRows& x,
                    float* y, int64_t y_stride) {
  return kernels().int8_kept && kernels().int8_kept(t, tiles, r0, r1, x, y, y_stride);
}

void gemm_float(DType t, const void* w, size_t rb, int64_t r0, int64_t r1, const float* x,
                int64_t n_tokens, int64_t K, float* y, int64_t ys, void* scratch) {
  KILN_CHECK(kernels().fl && kernels().fl(t, w, rb, r0, r1, x, n_tokens, K, y, ys, scratch),
             "no float kernel for ", dtype_name(t));
}

bool gemm_float_sum_f64(DType t, const void* w, size_t rb, int64_t r0, int64_t r1, const float* x,
                        int64_t n_tokens, int64_t K, float* y, int64_t ys) {
  return kernels().fl_sum_f64(t, w, rb, r0, r1, x, n_tokens, K, y, ys);
}

bool float_cols_layout(DType t, int64_t rows, int64_t K) {
  return (t == DType::F32 || t == DType::F16 || t == DType::BF16) && K <= kFloatColsMaxK &&
         rows * K <= kFloatColsMaxElems;
}

size_t float_cols_bytes(int64_t rows, int64_t K) {
  return size_t((rows + 15) / 16) * size_t(float_cols_tile_floats(K)) * sizeof(float);
}

void pack_float_cols(DType t, const void* w, size_t rb, int64_t rows, int64_t K, float* out) {
  std::vector<float> row(static_cast<size_t>(K));
  const int64_t n_tiles = (rows + 15) / 16;
  std::fill(out, out + n_tiles * float_cols_tile_floats(K), 0.0f);
  for (int64_t r = 0; r < n_tiles * 16; ++r) {
    if (r < rows)
      dequantize_row(t, static_cast<const uint8_t*>(w) + size_t(r) * rb, row.data(), K);
    else
      std::fill(row.begin(), row.end(), 0.0f);
    float* tile = out + (r / 16) * float_cols_tile_floats(K) + r % 16;
    for (int64_t k = 0; k < K; ++k) tile[k * 16] = row[size_t(k)];
  }
}

void gemm_float_cols(const float* tiles, int64_t r0, int64_t r1, int64_t K, const float* x,
                     int64_t n_tokens, float* y, int64_t ys) {
  KILN_CHECK(r0 % 16 == 0, "gemm_float_cols: rows from ", r0, ", not a tile's first");
  kernels().fl_cols(tiles, r0, r1, K, x, n_tokens, y, ys);
}

float dot_f32_simd(const float* a, const float* b, int64_t n) { return kernels().dot(a, b, n); }
void axpy_f32_simd(float* y, const float* x, float s, int64_t n) { kernels().axpy(y, x, s, n); }
void axpy_f64_f32_simd(double* y, const float* x, double s, int64_t n) {
  kernels().axpy64_32(y, x, s, n);
}
void decay_update_f32_simd(float* row, const double* delta, double decay, double k, double q,
                           double* o, int64_t n) {
  kernels().decay_update(row, delta, decay, k, q, o, n);
}
float sum_squares_f64_simd(const float* x, int64_t n) { return kernels().sum_squares64(x, n); }
void mul_add_f64_simd(double* acc, const float* a, const float* b, int64_t n) {
  kernels().mul_add64(acc, a, b, n);
}
void gemm_f64_simd(int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                   const double* B, int64_t ldb, double* C, int64_t ldc) {
  kernels().gemm64(M, N, K, alpha, A, lda, B, ldb, C, ldc);
}
void dot_rows_f32_simd(const float* k, int64_t stride, int64_t rows, const float* q, int64_t n,
                       float scale, float* out) {
  kernels().dot_rows(k, stride, rows, q, n, scale, out);
}
void wsum_rows_f32_simd(const float* v, int64_t stride, int64_t rows, const float* p, int64_t n,
                        float* y) {
  kernels().wsum_rows(v, stride, rows, p, n, y);
}
float exp_sum_f32_simd(float* x, int64_t n, float sub) { return kernels().exp_sum(x, n, sub); }
void f16_to_f32_simd(const uint16_t* src, int64_t n, float* dst) { kernels().f16_to_f32(src, n, dst); }
void attention_rows_f32_simd(const AttentionRows* queries, int64_t n_queries, int64_t head_dim,
                             float scale, float* scratch) {
  kernels().attention_rows(queries, n_queries, head_dim, scale, scratch);
}
void silu_mul_f32_simd(const float* gate, const float* up, int64_t n, float* out) {
  kernels().silu_mul(gate, up, n, out);
}
const char* gemm_kernel_level() { return kernels().level; }

}  // namespace kiln
