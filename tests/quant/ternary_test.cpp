// Ternary layouts against bytes worked out by hand from their definitions:
// I2_S (bitnet.cpp: blocks of 128 values in 32 bytes, value j of a block in
// byte j % 32 at bits 6 - 2 (j / 32), codes 0/1/2 = -1/0/+1, f32 scale after
// the data), TQ2_0 and TQ1_0 (GGML). Exact: the values are ternary.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/quantize.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace {

TEST(I2S, BytesAndRoundTripByHand) {
  const float s = 0.375f;
  std::vector<float> x(256, 0.0f);
  x[0] = s;          // block 0, byte 0, bits 6-7: code 2
  x[32] = -s;        // block 0, byte 0, bits 4-5: code 0
  x[97] = s;         // block 0, byte 1, bits 0-1: code 2
  x[128 + 31] = -s;  // block 1, byte 31, bits 6-7: code 0
  std::vector<uint8_t> q(i2s_tensor_bytes(256));
  ASSERT_EQ(q.size(), 64u + 32u);
  quantize_i2s(x.data(), 256, q.data());
  // A zero is code 1 in every 2-bit field: 0b01010101.
  EXPECT_EQ(q[0], (2 << 6) | (0 << 4) | (1 << 2) | 1);
  EXPECT_EQ(q[1], (1 << 6) | (1 << 4) | (1 << 2) | 2);
  EXPECT_EQ(q[2], 0x55);
  EXPECT_EQ(q[32 + 31], (0 << 6) | (1 << 4) | (1 << 2) | 1);
  float scale;
  std::memcpy(&scale, q.data() + 64, 4);
  EXPECT_EQ(scale, s);
  EXPECT_EQ(i2s_scale(q.data(), 256), s);
  std::vector<float> back(256);
  dequantize_i2s(q.data(), 256, back.data());
  EXPECT_EQ(back, x);
}

TEST(I2S, SignsScaledByTheTensorMax) {
  // quantize_i2s keeps signs only: every nonzero becomes +-max |x|.
  // One whole 128-value block; the rest of it is zeros.
  std::vector<float> x(128, 0.0f);
  const std::vector<float> head = {0.5f, -0.25f, 0.0f, 1e-7f, -2.0f, 0.1f, 0.0f, 0.0f};
  std::copy(head.begin(), head.end(), x.begin());
  std::vector<uint8_t> q(i2s_tensor_bytes(128));
  ASSERT_EQ(q.size(), 32u + 32u);
  quantize_i2s(x.data(), 128, q.data());
  std::vector<float> back(128);
  dequantize_i2s(q.data(), 128, back.data());
  std::vector<float> want(128, 0.0f);
  const std::vector<float> want_head = {2.0f, -2.0f, 0.0f, 0.0f, -2.0f, 2.0f, 0.0f, 0.0f};
  std::copy(want_head.begin(), want_head.end(), want.begin());
  EXPECT_EQ(back, want);
  // A partial block would put codes where the scale lives: refused.
  std::vector<uint8_t> small(i2s_tensor_bytes(8));
  EXPECT_THROW(quantize_i2s(x.data(), 8, small.data()), Error);
}

TEST(TQ2_0, BytesAndRoundTripByHand) {
  // Value i of a block: byte (i / 128) * 32 + i % 32, bits 2 ((i % 128) / 32).
  std::vector<float> x(256, 0.0f);
  x[0] = 0.5f;
  x[32] = -0.5f;
  x[200] = 0.5f;  // byte 32 + 8, bits 4-5
  std::vector<uint8_t> q(dtype_row_bytes(DType::TQ2_0, 256));
  ASSERT_EQ(q.size(), 66u);
  quantize_row(DType::TQ2_0, x.data(), q.data(), 256);
  EXPECT_EQ(q[0], (1 << 6) | (1 << 4) | (0 << 2) | 2);
  EXPECT_EQ(q[40], (1 << 6) | (2 << 4) | (1 << 2) | 1);
  EXPECT_EQ(q[1], 0x55);
  uint16_t d;
  std::memcpy(&d, q.data() + 64, 2);
  EXPECT_EQ(f16_to_f32(d), 0.5f);
  std::vector<float> back(256);
  dequantize_row(DType::TQ2_0, q.data(), back.data(), 256);
  EXPECT_EQ(back, x);
}

TEST(TQ1_0, BytesAndRoundTripByHand) {
  // Values 0..159: byte i % 32, trit i / 32 (the first the most significant);
  // 160..239: byte 32 + (i - 160) % 16; 240..255: qh byte (i - 240) % 4. A
  // byte stores ceil(q * 256 / 243) for the base-3 number q of its codes.
  std::vector<float> x(256, 0.0f);
  x[0] = 0.25f;     // codes 2,1,1,1,1 in byte 0: q = 202 -> 213
  x[245] = -0.25f;  // qh byte 1, trit 1: codes 1,0,1,1, then a 0 trit: q = 93 -> 98
  std::vector<uint8_t> q(dtype_row_bytes(DType::TQ1_0, 256));
  ASSERT_EQ(q.size(), 54u);
  quantize_row(DType::TQ1_0, x.data(), q.data(), 256);
  EXPECT_EQ(q[0], 213);
  EXPECT_EQ(q[1], 128);  // all zeros: q = 121
  EXPECT_EQ(q[32], 128);
  EXPECT_EQ(q[48 + 0], 127);  // all-zero qh: q = 40 * 3 = 120
  EXPECT_EQ(q[48 + 1], 98);
  std::vector<float> back(256);
  dequantize_row(DType::TQ1_0, q.data(), back.data(), 256);
  EXPECT_EQ(back, x);
}

TEST(Ternary, DecodedRowsMatchDequantized) {
  // The kernels' decoding (codes and scales) against the values themselves.
  const int64_t rows = 3, cols = 512;
  std::vector<float> w(size_t(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(int(i * 7 % 3) - 1) * 0.125f;
  for (DType t : {DType::TQ1_0, DType::TQ2_0, DType::I2_S}) {
    std::vector<uint8_t> data;
    if (t == DType::I2_S) {
      data.resize(i2s_tensor_bytes(rows * cols));
      quantize_i2s(w.data(), rows * cols, data.data());
    } else {
      const size_t rb = dtype_row_bytes(t, cols);
      data.resize(rb * rows);
      for (int64_t r = 0; r < rows; ++r)
        quantize_row(t, w.data() + r * cols, data.data() + r * rb, cols);
    }
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int8_t> codes(cols);
      std::vector<float> scales(cols);
      const int64_t block =
          decode_ternary_row(t, data.data(), r, cols, rows, codes.data(), scales.data());
      for (int64_t c = 0; c < cols; ++c)
        ASSERT_EQ(float(codes[c]) * scales[c / block], w[r * cols + c])
            << dtype_name(t) << " " << r << "," << c;
    }
  }
}

}  // namespace
}  // namespace kiln
