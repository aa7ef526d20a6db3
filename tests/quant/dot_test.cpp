// dot_row and matmul_rows against dequantize-then-multiply in double.
// Tolerance: float32 accumulation over n terms in a different order than
// the double reference; 1e-5 relative to sum |w x| is far above that noise
// and far below any indexing mistake (which moves results by O(1)).
#include "kiln/quant/dot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kiln/core/error.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/quantize.h"
#include "quant/test_util.h"

namespace kiln {
namespace {

const DType kTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0,
                        DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K, DType::Q3_K,
                        DType::Q4_K, DType::Q5_K, DType::Q6_K};

struct Matrix {
  std::vector<uint8_t> bytes;
  std::vector<float> dense;  // dequantized, for the reference
  size_t row_bytes;
};

Matrix make_matrix(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  const auto x = test::gaussian(size_t(rows * cols), seed);
  Matrix m;
  m.row_bytes = dtype_row_bytes(t, cols);
  m.bytes.resize(m.row_bytes * rows);
  m.dense.resize(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    quantize_row(t, &x[r * cols], &m.bytes[r * m.row_bytes], cols);
    dequantize_row(t, &m.bytes[r * m.row_bytes], &m.dense[r * cols], cols);
  }
  return m;
}

void expect_close(double got, const float* w, const float* x, int64_t n, const char* what) {
  double ref = 0, mag = 0;
  for (int64_t i = 0; i < n; ++i) {
    ref += double(w[i]) * x[i];
    mag += std::fabs(double(w[i]) * x[i]);
  }
  EXPECT_NEAR(got, ref, 1e-5 * mag + 1e-30) << what;
}

TEST(Dot, DotRowMatchesDequantized) {
  for (DType t : kTypes) {
    // 768: three super-blocks; 2304 + 32 style tails only for 32-blocks.
    const int64_t n = dtype_info(t).block_size == 256 ? 768 : 800;
    const Matrix m = make_matrix(t, 1, n, 7);
    const auto x = test::gaussian(size_t(n), 8);
    expect_close(dot_row(t, m.bytes.data(), x.data(), n), m.dense.data(), x.data(), n,
                 std::string(dtype_name(t)).c_str());
  }
}

TEST(Dot, MatmulRowsMatchesDequantized) {
  for (DType t : kTypes) {
    const int64_t cols = dtype_info(t).block_size == 256 ? 512 : 352;
    for (int64_t tokens : {1, 3, 8}) {
      const int64_t rows = 7;  // not a multiple of the row tile
      const Matrix m = make_matrix(t, rows, cols, 11);
      const auto x = test::gaussian(size_t(tokens * cols), 12);
      std::vector<float> y(size_t(tokens * rows), -1.0f);
      matmul_rows(t, m.bytes.data(), m.row_bytes, rows, x.data(), cols, tokens, y.data());
      for (int64_t tok = 0; tok < tokens; ++tok)
        for (int64_t r = 0; r < rows; ++r)
          expect_close(y[tok * rows + r], &m.dense[r * cols], &x[tok * cols], cols,
                       std::string(dtype_name(t)).c_str());
    }
  }
}

TEST(Dot, StridedOutputLeavesOtherColumnsAlone) {
  const int64_t rows = 5, cols = 256, tokens = 2, stride = 9;
  const Matrix m = make_matrix(DType::Q4_K, rows, cols, 3);
  const auto x = test::gaussian(size_t(tokens * cols), 4);
  std::vector<float> y(size_t(tokens * stride), 123.0f);
  matmul_rows_strided(DType::Q4_K, m.bytes.data(), m.row_bytes, rows, x.data(), cols, tokens,
                      y.data(), stride);
  for (int64_t tok = 0; tok < tokens; ++tok) {
    for (int64_t r = 0; r < stride; ++r) {
      if (r < rows)
        expect_close(y[tok * stride + r], &m.dense[r * cols], &x[tok * cols], cols, "q4_K");
      else
        EXPECT_EQ(y[tok * stride + r], 123.0f);
    }
  }
}

TEST(Dot, UnsupportedTypeThrows) {
  uint8_t w[256] = {};
  float x[256] = {};
  EXPECT_THROW(dot_row(DType::IQ2_XS, w, x, 256), Error);
  EXPECT_THROW(dot_row(DType::Q8_0, w, x, 33), Error);
}

}  // namespace
}  // namespace kiln
