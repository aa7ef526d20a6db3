// Dequantization of hand-built blocks, whose expected values follow directly
// from GGML's documented layouts. Values are exact (small integers times
// powers of two), so comparisons are exact.
#include "kiln/quant/dequantize.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kiln/core/error.h"
#include "kiln/core/half.h"

namespace kiln {
namespace {

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

std::vector<float> deq(DType t, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> out(n);
  dequantize_row(t, bytes.data(), out.data(), n);
  return out;
}

TEST(Dequantize, Q4_0LowNibblesFirstHalf) {
  std::vector<uint8_t> b(18);
  put_f16(&b[0], 0.5f);
  for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
  const auto y = deq(DType::Q4_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f);
    EXPECT_EQ(y[j + 16], (15 - j - 8) * 0.5f);
  }
}

TEST(Dequantize, Q4_1AddsMin) {
  std::vector<uint8_t> b(20);
  put_f16(&b[0], 0.25f);
  put_f16(&b[2], -1.0f);
  for (int j = 0; j < 16; ++j) b[4 + j] = uint8_t(j | (3 << 4));
  const auto y = deq(DType::Q4_1, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.25f - 1.0f);
    EXPECT_EQ(y[j + 16], 3 * 0.25f - 1.0f);
  }
}

TEST(Dequantize, Q5_0HighBitsFromQh) {
  std::vector<uint8_t> b(22);
  put_f16(&b[0], 2.0f);
  const uint32_t qh = 0x80000001u;  // element 0 and element 31 get bit 4
  std::memcpy(&b[2], &qh, 4);
  for (int j = 0; j < 16; ++j) b[6 + j] = uint8_t(0xF0 | 1);
  const auto y = deq(DType::Q5_0, b, 32);
  EXPECT_EQ(y[0], (17 - 16) * 2.0f);
  EXPECT_EQ(y[1], (1 - 16) * 2.0f);
  EXPECT_EQ(y[16], (15 - 16) * 2.0f);
  EXPECT_EQ(y[31], (31 - 16) * 2.0f);
}

TEST(Dequantize, Q5_1) {
  std::vector<uint8_t> b(24);
  put_f16(&b[0], 1.0f);
  put_f16(&b[2], 0.5f);
  const uint32_t qh = 1u << 20;  // element 20
  std::memcpy(&b[4], &qh, 4);
  for (int j = 0; j < 16; ++j) b[8 + j] = uint8_t(2 | (4 << 4));
  const auto y = deq(DType::Q5_1, b, 32);
  EXPECT_EQ(y[0], 2.5f);
  EXPECT_EQ(y[19], 4.5f);
  EXPECT_EQ(y[20], 20.5f);
}

TEST(Dequantize, Q8_0) {
  std::vector<uint8_t> b(34);
  put_f16(&b[0], 0.125f);
  for (int j = 0; j < 32; ++j) b[2 + j] = uint8_t(int8_t(j - 16));
  const auto y = deq(DType::Q8_0, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j - 16) * 0.125f);
}

TEST(Dequantize, Q4_KSixBitScalesAndMins) {
  // Layout: d, dmin, scales[12], qs[128]. Sub-block j < 4: scale = s[j] & 63,
  // min = s[j+4] & 63; j >= 4: low 4 bits in s[j+4], high 2 bits in the top
  // bits of s[j-4] (scale) and s[j] (min).
  std::vector<uint8_t> b(144, 0);
  put_f16(&b[0], 1.0f);
  put_f16(&b[2], 0.5f);
  uint8_t* s = &b[4];
  const int sc[8] = {1, 2, 3, 63, 17, 33, 48, 5};
  const int mn[8] = {0, 1, 2, 3, 60, 20, 40, 63};
  for (int j = 0; j < 4; ++j) {
    s[j] = uint8_t(sc[j]);
    s[j + 4] = uint8_t(mn[j]);
  }
  for (int j = 4; j < 8; ++j) {
    s[j + 4] = uint8_t((sc[j] & 0xF) | ((mn[j] & 0xF) << 4));
    s[j - 4] |= uint8_t((sc[j] >> 4) << 6);
    s[j] |= uint8_t((mn[j] >> 4) << 6);
  }
  // qs: 4 groups of 32 bytes; group g holds sub-block 2g (low) and 2g+1 (high).
  for (int l = 0; l < 128; ++l) b[16 + l] = uint8_t((l % 16) | ((15 - l % 16) << 4));
  const auto y = deq(DType::Q4_K, b, 256);
  for (int g = 0; g < 4; ++g) {
    for (int l = 0; l < 32; ++l) {
      const int q = (g * 32 + l) % 16;
      EXPECT_EQ(y[64 * g + l], 1.0f * sc[2 * g] * q - 0.5f * mn[2 * g]);
      EXPECT_EQ(y[64 * g + 32 + l], 1.0f * sc[2 * g + 1] * (15 - q) - 0.5f * mn[2 * g + 1]);
    }
  }
}

TEST(Dequantize, Q6_KSignedScales) {
  // Layout: ql[128], qh[64], scales[16] (int8), d. Element e of 128-half h:
  // quarter k = e / 32, l = e % 32; low nibble from ql[64h + l + 32 (k&1)]
  // (high nibble when k >= 2), two high bits from qh[32h + l] >> 2k.
  std::vector<uint8_t> b(210, 0);
  for (int i = 0; i < 128; ++i) b[i] = 0x21;     // low nibble 1, high nibble 2
  for (int i = 0; i < 64; ++i) b[128 + i] = 0xE4;  // 2-bit fields 0,1,2,3
  for (int i = 0; i < 16; ++i) b[192 + i] = uint8_t(int8_t(i % 2 ? -i : i));
  put_f16(&b[208], 0.25f);
  const auto y = deq(DType::Q6_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int k = (e % 128) / 32;
    const int lo = k < 2 ? 1 : 2;
    const int q = (lo | (k << 4)) - 32;
    const int is = e / 16;
    const int scale = is % 2 ? -is : is;
    EXPECT_EQ(y[e], 0.25f * scale * q) << e;
  }
}

TEST(Dequantize, IQ4_NLCodebook) {
  static const int kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                             1,    13,   25,  38,  53,  69,  89,  113};
  std::vector<uint8_t> b(18);
  put_f16(&b[0], 0.5f);
  for (int j = 0; j < 16; ++j) b[2 + j] = uint8_t(j | ((15 - j) << 4));
  const auto y = deq(DType::IQ4_NL, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.5f * kv[j]);
    EXPECT_EQ(y[j + 16], 0.5f * kv[15 - j]);
  }
}

TEST(Dequantize, IQ4_XSSubScales) {
  static const int kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                             1,    13,   25,  38,  53,  69,  89,  113};
  // Layout: d, scales_h (u16, 2 bits per sub-block), scales_l[4] (4 bits
  // each, even sub-blocks in low nibbles), qs[128]. Sub-scale = ls - 32.
  std::vector<uint8_t> b(136, 0);
  put_f16(&b[0], 1.0f);
  const int ls[8] = {0, 31, 32, 33, 63, 16, 40, 1};
  uint16_t sh = 0;
  for (int ib = 0; ib < 8; ++ib) {
    b[4 + ib / 2] |= uint8_t((ls[ib] & 0xF) << (4 * (ib % 2)));
    sh |= uint16_t((ls[ib] >> 4) << (2 * ib));
  }
  std::memcpy(&b[2], &sh, 2);
  for (int i = 0; i < 128; ++i) b[8 + i] = uint8_t((i % 16) | (7 << 4));
  const auto y = deq(DType::IQ4_XS, b, 256);
  for (int ib = 0; ib < 8; ++ib) {
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[32 * ib + j], float(ls[ib] - 32) * kv[(16 * ib + j) % 16]);
      EXPECT_EQ(y[32 * ib + 16 + j], float(ls[ib] - 32) * kv[7]);
    }
  }
}

TEST(Dequantize, PlainTypes) {
  const uint16_t h[2] = {f32_to_f16(1.5f), f32_to_bf16(-2.0f)};
  float y[2];
  dequantize_row(DType::F16, &h[0], y, 1);
  EXPECT_EQ(y[0], 1.5f);
  dequantize_row(DType::BF16, &h[1], y, 1);
  EXPECT_EQ(y[0], -2.0f);
  const int8_t i8[2] = {-3, 7};
  dequantize_row(DType::I8, i8, y, 2);
  EXPECT_EQ(y[0], -3.0f);
  EXPECT_EQ(y[1], 7.0f);
}

TEST(Dequantize, UnsupportedTypeNamesIt) {
  uint8_t b[66] = {};
  float y[256];
  try {
    dequantize_row(DType::IQ2_XXS, b, y, 256);
    FAIL() << "expected kiln::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("iq2_xxs"), std::string::npos) << e.what();
  }
  EXPECT_THROW(dequantize_row(DType::Q4_0, b, y, 31), Error);
  EXPECT_FALSE(can_dequantize(DType::Q8_1));
  EXPECT_TRUE(can_dequantize(DType::IQ4_XS));
}

}  // namespace
}  // namespace kiln
