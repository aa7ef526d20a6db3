// gemm_float_cols (kiln/quant/gemm.h): float weights of few columns kept
// transposed in 16-row tiles. Every output must be exactly the chain of
// f32 fmas over its columns in order, from 0 (the order the layout
// promises, at every kernel level and for every token count), so each
// token of a batch equals itself alone and any split of the rows over
// threads changes nothing. Shapes with partial tiles, row counts the
// kernel's blocks of tiles do not divide, and 1 to 33 tokens (each width of
// the kernel's token blocks, and 16: a served step's part).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <vector>

#include "kiln/core/half.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/gemm.h"
#include "kiln/quant/quantize.h"

namespace kiln {
namespace {

struct ColsCase {
  int64_t rows, cols;
  DType dtype;
};

class GemmFloatCols : public ::testing::TestWithParam<ColsCase> {};

TEST_P(GemmFloatCols, EveryOutputIsItsColumnOrderFmaChain) {
  const ColsCase cs = GetParam();
  const int64_t N = cs.rows, K = cs.cols;
  ASSERT_TRUE(float_cols_layout(cs.dtype, N, K));
  std::mt19937 rng(static_cast<uint32_t>(N * 31 + K));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t rb = dtype_row_bytes(cs.dtype, K);
  std::vector<uint8_t> w(rb * size_t(N));
  std::vector<float> row(static_cast<size_t>(K));
  for (int64_t r = 0; r < N; ++r) {
    for (float& v : row) v = nd(rng);
    quantize_row(cs.dtype, row.data(), w.data() + size_t(r) * rb, K);
  }
  std::vector<float> wf(static_cast<size_t>(N * K));  // what the tiles hold
  for (int64_t r = 0; r < N; ++r) dequantize_row(cs.dtype, w.data() + size_t(r) * rb, &wf[size_t(r * K)], K);
  void* mem = std::aligned_alloc(64, (float_cols_bytes(N, K) + 63) / 64 * 64);
  auto* tiles = static_cast<float*>(mem);
  pack_float_cols(cs.dtype, w.data(), rb, N, K, tiles);

  for (int64_t T : {1, 2, 3, 4, 5, 6, 7, 8, 13, 16, 33}) {
    std::vector<float> x(static_cast<size_t>(T * K));
    for (float& v : x) v = nd(rng);
    std::vector<float> y(static_cast<size_t>(T * N), NAN), split(y.size(), NAN);
    gemm_float_cols(tiles, 0, N, K, x.data(), T, y.data(), N);
    // The rows in pieces of whole tiles, as threads take them.
    for (int64_t r0 = 0; r0 < N; r0 += 32)
      gemm_float_cols(tiles, r0, std::min(N, r0 + 32), K, x.data(), T, split.data(), N);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t r = 0; r < N; ++r) {
        float want = 0.0f;
        for (int64_t k = 0; k < K; ++k) want = std::fma(wf[size_t(r * K + k)], x[size_t(t * K + k)], want);
        const size_t at = size_t(t * N + r);
        ASSERT_EQ(y[at], want) << T << " tokens, token " << t << " row " << r;
        ASSERT_EQ(split[at], want) << T << " tokens, token " << t << " row " << r << " (split)";
      }
  }
  std::free(mem);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmFloatCols,
    ::testing::Values(ColsCase{64, 64, DType::F32}, ColsCase{172, 64, DType::F32},
                      ColsCase{64, 172, DType::F32}, ColsCase{512, 64, DType::F32},
                      ColsCase{33, 40, DType::F16}, ColsCase{300, 7, DType::BF16},
                      ColsCase{5, 256, DType::F32}, ColsCase{16 * 19 + 1, 24, DType::F16}));

TEST(GemmFloatCols, LayoutOnlyForSmallFloatWeights) {
  EXPECT_TRUE(float_cols_layout(DType::F32, 512, 64));
  EXPECT_TRUE(float_cols_layout(DType::BF16, 4096, 256));
  EXPECT_FALSE(float_cols_layout(DType::F32, 64, 257));     // long rows: gemm_float's lanes
  EXPECT_FALSE(float_cols_layout(DType::Q8_0, 64, 64));     // integer products
  EXPECT_FALSE(float_cols_layout(DType::F16, 151936, 64));  // a copy too large to keep
}

}  // namespace
}  // namespace kiln
