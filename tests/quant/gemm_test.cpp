// gemm_int8 (kiln/quant/gemm.h) at the level picked for this CPU (KILN_CPU
// caps it) against the same product in double: weights dequantized, the
// activations as their int8 values times their block scales. The integer
// part of every kernel is exact, so what remains is f32 rounding of the
// per-block scales and sums: 2e-6 of sum |w x| bounds it (measured ~1e-7),
// while a wrong lane, scale or offset shows up at 1e-2 and more. Covers
// matvec (1-3 tokens), every tile width's remainder (16-token AMX tiles and
// their 128-token blocks included), and row counts that
// leave partial tiles. Both with and without batch_invariant; with it,
// where the kernels promise it (same_bits_alone), each token of a call also
// equals, bit for bit, the same token alone. Kept tiles (packed once, for
// serving) give the same bits as tiles packed per call.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <random>
#include <vector>

#include "kiln/core/half.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/gemm.h"
#include "kiln/quant/quantize.h"
#include "quant/test_util.h"

namespace kiln {
namespace {

using test::Aligned;

std::vector<uint8_t> make_weights(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  const size_t rb = dtype_row_bytes(t, cols);
  std::vector<uint8_t> w(rb * size_t(rows));
  std::mt19937 rng(seed);
  if (can_quantize(t)) {
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<float> row = test::gaussian(size_t(cols), seed + uint32_t(r), 0.05f);
      quantize_row(t, row.data(), w.data() + size_t(r) * rb, cols);
    }
    return w;
  }
  // IQ4_NL / IQ4_XS: random codes and scales, the f16 block scale kept sane.
  for (auto& b : w) b = uint8_t(rng());
  const size_t block = t == DType::IQ4_NL ? 18 : 136;
  const uint16_t d = f32_to_f16(0.01f);
  for (size_t off = 0; off < w.size(); off += block) std::memcpy(&w[off], &d, 2);
  return w;
}

// Whether this CPU's kernels promise a token of a T-token product the same
// bits as the token alone: the AVX-512 VNNI strips (1-3 tokens) and tiles
// share one order of operations (gemm_kernels_tiles512.inc, "Strip
// order"), so a greedy request's output does not depend on the serving
// batch it is in;
// the AMX level keeps to them when asked (batch_invariant), and so do the
// AVX2 / AVX-VNNI levels (their strips and 8-row tiles).
bool same_bits_alone(bool invariant) {
  const std::string level = gemm_kernel_level();
  return level == "avx512vnni" || (invariant && level != "scalar");
}

double check(DType t, int64_t rows, int64_t K, int64_t T, bool invariant) {
  const std::vector<uint8_t> w = make_weights(t, rows, K, 11);
  const size_t rb = dtype_row_bytes(t, K);
  std::vector<float> x = test::gaussian(size_t(T * K), 5);
  for (int64_t i = 0; i < T * K; i += 97) x[size_t(i)] *= 8.0f;  // uneven block scales
  Aligned qmem(quantized_rows_bytes(T, K)), scratch(gemm_scratch_bytes(K));
  QuantizedRows q = quantized_rows_view(qmem.p, T, K);
  q.batch_invariant = invariant;
  quantize_rows_q8(x.data(), 0, T, q);
  const int64_t ys = rows + 3;
  std::vector<float> y(size_t(T * ys), -7.0f);
  gemm_int8(t, w.data(), rb, 0, rows, q, y.data(), ys, scratch.p);

  std::vector<float> wf(static_cast<size_t>(K));
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(t, w.data() + size_t(r) * rb, wf.data(), K);
    for (int64_t tk = 0; tk < T; ++tk) {
      const test::RefDot rd = test::quantized_ref_dot(wf.data(), q, tk);
      const double ref = rd.dot, mag = rd.mag;
      const double err = std::fabs(double(y[size_t(tk * ys + r)]) - ref) / (mag + 1e-30);
      worst = std::max(worst, err);
      EXPECT_LE(err, 2e-6) << dtype_name(t) << " row " << r << " token " << tk << " of " << T
                           << ": " << y[size_t(tk * ys + r)] << " vs " << ref;
      if (err > 2e-6) return worst;
    }
    for (int64_t tk = 0; tk < T; ++tk)  // the stride's gap is never written
      for (int64_t c = rows; c < ys; ++c) EXPECT_EQ(y[size_t(tk * ys + c)], -7.0f);
  }
  // Kept tiles (16 rows, or 8 at the AVX2 levels): packed once, then the same bits as
  // gemm_int8 for every call they take, split at a tile boundary as the
  // backend's threads split it; the calls they leave to other kernels are
  // 1-3 tokens and, at the AMX level outside batch_invariant, 16 and more.
  if (const size_t kept = kept_tiles_bytes(t, rows, K); kept > 0) {
    Aligned tiles(kept);
    const int64_t tr = kept_tile_rows();
    pack_kept_tiles(t, w.data(), rb, rows, K, 0, (rows + tr - 1) / tr, tiles.p, scratch.p);
    std::vector<float> yk(size_t(T * ys), -7.0f);
    const int64_t split = std::min<int64_t>(tr, rows);
    const bool used = gemm_int8_kept(t, tiles.p, 0, split, q, yk.data(), ys);
    const bool amx_own = std::string(gemm_kernel_level()) == "amx" && !invariant && T >= 16;
    EXPECT_EQ(used, T > 3 && !amx_own) << dtype_name(t) << " " << T << " tokens";
    if (used) {
      EXPECT_TRUE(split == rows || gemm_int8_kept(t, tiles.p, split, rows, q, yk.data(), ys));
      for (int64_t tk = 0; tk < T; ++tk)
        for (int64_t c = 0; c < ys; ++c)
          if (std::memcmp(&yk[size_t(tk * ys + c)], &y[size_t(tk * ys + c)], 4) != 0) {
            ADD_FAILURE() << dtype_name(t) << " K " << K << " row " << c << " token " << tk
                          << " of " << T << ": " << yk[size_t(tk * ys + c)] << " from kept tiles, "
                          << y[size_t(tk * ys + c)] << " packed per call";
            return worst;
          }
    }
  }
  if (same_bits_alone(invariant)) {  // every token as if it came alone (decode)
    Aligned q1mem(quantized_rows_bytes(1, K));
    QuantizedRows q1 = quantized_rows_view(q1mem.p, 1, K);
    q1.batch_invariant = invariant;
    std::vector<float> alone(static_cast<size_t>(rows));
    for (int64_t tk = 0; tk < T; ++tk) {
      quantize_rows_q8(x.data() + tk * K, 0, 1, q1);
      gemm_int8(t, w.data(), rb, 0, rows, q1, alone.data(), rows, scratch.p);
      for (int64_t r = 0; r < rows; ++r)
        if (y[size_t(tk * ys + r)] != alone[size_t(r)]) {
          ADD_FAILURE() << dtype_name(t) << " K " << K << " row " << r << " token " << tk << " of " << T
                        << ": " << y[size_t(tk * ys + r)] << " batched, " << alone[size_t(r)] << " alone";
          return worst;
        }
    }
  }
  return worst;
}

class GemmInt8 : public testing::TestWithParam<DType> {};

TEST_P(GemmInt8, MatchesDoubleReference) {
  const DType t = GetParam();
  if (gemm_path(t, 256) != GemmPath::kInt8) GTEST_SKIP() << "no int8 kernel here";
  double worst = 0;
  const bool k256 = t == DType::Q2_K || t == DType::Q3_K || t == DType::Q4_K || t == DType::Q5_K ||
                    t == DType::Q6_K || t == DType::IQ4_XS;
  for (int64_t K : k256 ? std::vector<int64_t>{256, 768} : std::vector<int64_t>{96, 512, 1312})
    for (int64_t T : {1, 3, 4, 5, 8, 11, 16, 19, 33, 140})
      for (int64_t rows : {5, 16, 37})
        for (bool invariant : {false, true}) {
          worst = std::max(worst, check(t, rows, K, T, invariant));
          if (HasFailure()) return;
        }
  std::printf("[ measured ] %s (%s kernels): worst relative error %.3g\n",
              std::string(dtype_name(t)).c_str(), gemm_kernel_level(), worst);
}

INSTANTIATE_TEST_SUITE_P(Formats, GemmInt8,
                         testing::Values(DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                                         DType::Q5_1, DType::IQ4_NL, DType::Q2_K, DType::Q3_K,
                                         DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::IQ4_XS),
                         [](const testing::TestParamInfo<DType>& i) {
                           return std::string(dtype_name(i.param));
                         });

// gemm_float (f32, f16 and bf16 weights, f32 activations): against double
// within 1e-6 of sum |w x| (f32 sums over at most a thousand products), and
// every token of a call equal, bit for bit, to the same token alone: decode
// and prefill (and a serving step, whose sequences share a call) must not
// round differently, so that greedy outputs do not depend on the batch.
// Column counts that leave a partial 16-lane chunk (BF16 at the AVX-512
// level: 32 columns a chunk, one an odd count), row and token counts that
// leave partial 4 x 4 tiles, and more tokens than one call's split takes at
// once (BF16: 32).
// Random {rows, K} weights of float type t, and the same values as f32.
struct FloatWeights {
  std::vector<uint8_t> bytes;
  std::vector<float> widened;
};
FloatWeights float_weights(DType t, int64_t rows, int64_t K) {
  const size_t rb = dtype_row_bytes(t, K);
  FloatWeights fw{std::vector<uint8_t>(rb * size_t(rows)), std::vector<float>(size_t(rows * K))};
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> row = test::gaussian(size_t(K), 40 + uint32_t(r), 0.05f);
    quantize_row(t, row.data(), fw.bytes.data() + size_t(r) * rb, K);
    dequantize_row(t, fw.bytes.data() + size_t(r) * rb, fw.widened.data() + r * K, K);
  }
  return fw;
}

class GemmFloat : public testing::TestWithParam<DType> {};

TEST_P(GemmFloat, MatchesDoubleAndEachTokenAlone) {
  const DType t = GetParam();
  if (gemm_path(t, 64) != GemmPath::kFloat) GTEST_SKIP() << "no float kernel here";
  for (int64_t K : {33, 64, 172, 1000})
    for (int64_t rows : {1, 3, 4, 7, 37}) {
      const size_t rb = dtype_row_bytes(t, K);
      const FloatWeights fw = float_weights(t, rows, K);
      const std::vector<uint8_t>& w = fw.bytes;
      const std::vector<float>& wf = fw.widened;
      Aligned scratch(gemm_scratch_bytes(K));
      for (int64_t T : {1, 2, 4, 5, 13, 37}) {
        const std::vector<float> x = test::gaussian(size_t(T * K), 9);
        const int64_t ys = rows + 2;
        std::vector<float> y(size_t(T * ys), -7.0f), alone(static_cast<size_t>(rows));
        gemm_float(t, w.data(), rb, 0, rows, x.data(), T, K, y.data(), ys, scratch.p);
        for (int64_t tk = 0; tk < T; ++tk) {
          gemm_float(t, w.data(), rb, 0, rows, x.data() + tk * K, 1, K, alone.data(), rows, scratch.p);
          for (int64_t r = 0; r < rows; ++r) {
            double ref = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              ref += double(wf[size_t(r * K + k)]) * double(x[size_t(tk * K + k)]);
              mag += std::fabs(double(wf[size_t(r * K + k)]) * double(x[size_t(tk * K + k)]));
            }
            const float got = y[size_t(tk * ys + r)];
            ASSERT_LE(std::fabs(double(got) - ref), 1e-6 * mag)
                << dtype_name(t) << " K " << K << " row " << r << " token " << tk << " of " << T;
            ASSERT_EQ(got, alone[size_t(r)])
                << dtype_name(t) << " K " << K << " row " << r << " token " << tk << " of " << T;
          }
          for (int64_t c = rows; c < ys; ++c) ASSERT_EQ(y[size_t(tk * ys + c)], -7.0f);
        }
      }
    }
}

INSTANTIATE_TEST_SUITE_P(Formats, GemmFloat, testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const testing::TestParamInfo<DType>& i) {
                           return std::string(dtype_name(i.param));
                         });

// gemm_float_sum_f64: every output is the double sum of exact products,
// rounded once, so it is within half an f32 ulp (plus the double sum's own
// ~1e-16 of sum |w x|) of the exact dot product, here computed in long
// double; and its bits are those of the documented order (eight lanes of
// columns k mod 8 by fma, then lanes i + 4, i + 2, i + 1), written out below,
// so every kernel level (this test runs at each, see CMakeLists.txt) and
// every token count give the same bits. K = 3 leaves only a tail; the others
// whole and partial 8-column steps.
float sum_f64_in_documented_order(const float* w, const float* x, int64_t K) {
  double lane[8] = {};
  for (int64_t k = 0; k < K; ++k) lane[k % 8] = std::fma(double(w[k]), double(x[k]), lane[k % 8]);
  for (int i = 0; i < 4; ++i) lane[i] += lane[i + 4];
  for (int i = 0; i < 2; ++i) lane[i] += lane[i + 2];
  return float(lane[0] + lane[1]);
}

class GemmFloatSumF64 : public testing::TestWithParam<DType> {};

TEST_P(GemmFloatSumF64, RoundsTheExactSumOnceInOneOrder) {
  const DType t = GetParam();
  for (int64_t K : {3, 64, 172, 1000})
    for (int64_t rows : {1, 3, 4, 7, 37}) {
      const size_t rb = dtype_row_bytes(t, K);
      const FloatWeights fw = float_weights(t, rows, K);
      const std::vector<uint8_t>& w = fw.bytes;
      const std::vector<float>& wf = fw.widened;
      for (int64_t T : {1, 2, 4, 5, 13, 37}) {
        const std::vector<float> x = test::gaussian(size_t(T * K), 9);
        const int64_t ys = rows + 2;
        std::vector<float> y(size_t(T * ys), -7.0f);
        ASSERT_TRUE(gemm_float_sum_f64(t, w.data(), rb, 0, rows, x.data(), T, K, y.data(), ys));
        for (int64_t tk = 0; tk < T; ++tk) {
          for (int64_t r = 0; r < rows; ++r) {
            const float* wr = wf.data() + r * K;
            const float* xt = x.data() + tk * K;
            long double exact = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              exact += (long double)wr[k] * xt[k];
              mag += std::fabs((long double)wr[k] * xt[k]);
            }
            const float got = y[size_t(tk * ys + r)];
            const double half_ulp = 0.5 * double(std::nextafter(std::fabs(got), INFINITY) - std::fabs(got));
            ASSERT_LE(std::fabs(double((long double)got - exact)), half_ulp + 1e-15 * double(mag))
                << dtype_name(t) << " K " << K << " row " << r << " token " << tk << " of " << T;
            ASSERT_EQ(got, sum_f64_in_documented_order(wr, xt, K))
                << dtype_name(t) << " K " << K << " row " << r << " token " << tk << " of " << T
                << " at level " << gemm_kernel_level();
          }
          for (int64_t c = rows; c < ys; ++c) ASSERT_EQ(y[size_t(tk * ys + c)], -7.0f);
        }
      }
    }
  // Quantized weights are not its kind.
  std::vector<uint8_t> q(dtype_row_bytes(DType::Q8_0, 32));
  float out = 0;
  const std::vector<float> x(32, 1.0f);
  EXPECT_FALSE(gemm_float_sum_f64(DType::Q8_0, q.data(), q.size(), 0, 1, x.data(), 1, 32, &out, 1));
}

INSTANTIATE_TEST_SUITE_P(Formats, GemmFloatSumF64, testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const testing::TestParamInfo<DType>& i) {
                           return std::string(dtype_name(i.param));
                         });

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// gemm_f64_simd (the delta rule's products) against the plain triple loop,
// with sizes that leave partial 4-row and 8-column blocks and leading
// dimensions wider than the matrices (the gaps must stay untouched), to
// double rounding (1e-13 per term).
TEST(GemmF64, MatchesTheTripleLoop) {
  std::mt19937 rng(3);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (int64_t M : {1, 4, 7, 64})
    for (int64_t N : {1, 8, 13, 128})
      for (int64_t K : {1, 16, 33}) {
        const int64_t lda = K + 1, ldb = N + 3, ldc = N + 2;
        std::vector<double> A(size_t(M * lda)), B(size_t(K * ldb)), C(size_t(M * ldc));
        for (auto* v : {&A, &B, &C})
          for (double& x : *v) x = nd(rng);
        std::vector<double> want = C;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double s = 0;
            for (int64_t k = 0; k < K; ++k) s += A[size_t(i * lda + k)] * B[size_t(k * ldb + j)];
            want[size_t(i * ldc + j)] += -0.5 * s;
          }
        gemm_f64_simd(M, N, K, -0.5, A.data(), lda, B.data(), ldb, C.data(), ldc);
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < ldc; ++j)
            ASSERT_NEAR(C[size_t(i * ldc + j)], want[size_t(i * ldc + j)],
                        1e-13 * (1.0 + std::fabs(want[size_t(i * ldc + j)])) * double(K))
                << M << "x" << N << "x" << K << " at " << i << ", " << j;
      }
}

}  // namespace
}  // namespace kiln
