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

// bitnet.cpp's ARM packing (QK_I2_S 64): value j of a 64-value block in
// byte j % 16 at bits 6 - 2 (j / 16), 16 bytes a block; scale at numel / 4.
TEST(I2S, ArmLayoutBytesByHand) {
  const float s = 0.5f;
  std::vector<float> x(128, 0.0f);
  x[0] = s;        // block 0, byte 0, bits 6-7: code 2
  x[16] = -s;      // block 0, byte 0, bits 4-5: code 0
  x[63] = s;       // block 0, byte 15, bits 0-1: code 2
  x[64 + 5] = -s;  // block 1, byte 16 + 5, bits 6-7: code 0
  std::vector<uint8_t> q(i2s_tensor_bytes(128));
  ASSERT_EQ(q.size(), 32u + 32u);
  quantize_i2s(x.data(), 2, 64, I2sLayout::Arm, q.data());
  EXPECT_EQ(q[0], (2 << 6) | (0 << 4) | (1 << 2) | 1);
  EXPECT_EQ(q[1], 0x55);
  EXPECT_EQ(q[15], (1 << 6) | (1 << 4) | (1 << 2) | 2);
  EXPECT_EQ(q[21], (0 << 6) | (1 << 4) | (1 << 2) | 1);
  float scale;
  std::memcpy(&scale, q.data() + 32, 4);
  EXPECT_EQ(scale, s);
  std::vector<float> back(128);
  dequantize_i2s(q.data(), 2, 64, I2sLayout::Arm, back.data());
  EXPECT_EQ(back, x);
  // The same values in the x86 layout put x[16] in byte 16 (bits 6-7), not
  // in byte 0.
  std::vector<uint8_t> x86(i2s_tensor_bytes(128));
  quantize_i2s(x.data(), 128, x86.data());
  EXPECT_EQ(x86[0], (2 << 6) | (1 << 4) | (1 << 2) | 1);
  EXPECT_EQ(x86[16], (0 << 6) | (1 << 4) | (1 << 2) | 1);
}

// bitnet.cpp's x86 packing without ACT_PARALLEL ("1x4"): byte (r / 4) * cols
// + c holds column c of rows r..r+3 of a 4-row group, row r % 4 at bits
// 6 - 2 (r % 4); scale at numel / 4.
TEST(I2S, Rows4LayoutBytesByHand) {
  const float s = 0.25f;
  const int64_t rows = 8, cols = 4;
  std::vector<float> x(size_t(rows * cols), 0.0f);
  x[0 * cols + 0] = s;   // group 0, byte 0, bits 6-7: code 2
  x[1 * cols + 0] = -s;  // group 0, byte 0, bits 4-5: code 0
  x[3 * cols + 2] = s;   // group 0, byte 2, bits 0-1: code 2
  x[6 * cols + 3] = -s;  // group 1, byte 4 + 3, bits 2-3: code 0
  std::vector<uint8_t> q(i2s_tensor_bytes(rows * cols));
  ASSERT_EQ(q.size(), 8u + 32u);
  quantize_i2s(x.data(), rows, cols, I2sLayout::Rows4, q.data());
  EXPECT_EQ(q[0], (2 << 6) | (0 << 4) | (1 << 2) | 1);
  EXPECT_EQ(q[1], 0x55);
  EXPECT_EQ(q[2], (1 << 6) | (1 << 4) | (1 << 2) | 2);
  EXPECT_EQ(q[7], (1 << 6) | (1 << 4) | (0 << 2) | 1);
  float scale;
  std::memcpy(&scale, q.data() + 8, 4);
  EXPECT_EQ(scale, s);
  std::vector<float> back(x.size());
  dequantize_i2s(q.data(), rows, cols, I2sLayout::Rows4, back.data());
  EXPECT_EQ(back, x);
  // Rows not in whole groups of four do not fit.
  EXPECT_FALSE(i2s_layout_fits(I2sLayout::Rows4, 6, 4));
  EXPECT_THROW(quantize_i2s(x.data(), 6, 4, I2sLayout::Rows4, q.data()), Error);
}

TEST(I2S, RepackedToX86AsQuantizedThere) {
  // Each layout's bytes, repacked, are exactly the x86 quantization of the
  // same values (what the kernels then read); the x86 path is unchanged.
  const int64_t rows = 12, cols = 192;
  std::vector<float> w(size_t(rows * cols));
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(int(i * 11 % 7 % 3) - 1) * 0.75f;
  std::vector<uint8_t> want(i2s_tensor_bytes(rows * cols));
  quantize_i2s(w.data(), rows * cols, want.data());
  for (I2sLayout l : {I2sLayout::X86, I2sLayout::Arm, I2sLayout::Rows4}) {
    std::vector<uint8_t> q(want.size()), x86(want.size());
    quantize_i2s(w.data(), rows, cols, l, q.data());
    if (l == I2sLayout::X86) EXPECT_EQ(q, want);
    else EXPECT_NE(q, want) << i2s_layout_name(l);
    i2s_repack_to_x86(q.data(), rows, cols, l, x86.data());
    EXPECT_EQ(x86, want) << i2s_layout_name(l);
    std::vector<float> back(w.size());
    dequantize_i2s(q.data(), rows, cols, l, back.data());
    EXPECT_EQ(back, w) << i2s_layout_name(l);
    EXPECT_EQ(parse_i2s_layout(i2s_layout_name(l)), l);
  }
  EXPECT_THROW(parse_i2s_layout("4x1"), Error);
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
