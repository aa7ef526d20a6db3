// Quantizers: round-trip error on gaussian data, exact re-quantization of
// already-quantized rows, and hand-checked blocks of the reference rules.
#include "kiln/quant/quantize.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/quant/dequantize.h"
#include "quant/test_util.h"

namespace kiln {
namespace {

std::vector<uint8_t> quant(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(dtype_row_bytes(t, int64_t(x.size())));
  quantize_row(t, x.data(), q.data(), int64_t(x.size()));
  return q;
}

std::vector<float> deq(DType t, const std::vector<uint8_t>& q, size_t n) {
  std::vector<float> y(n);
  dequantize_row(t, q.data(), y.data(), int64_t(n));
  return y;
}

struct Bound {
  DType type;
  double max_rel_rmse;  // RMSE / RMS(x) on unit gaussian data
};

// Bounds are ~10% above what these quantizers measure on this data (f16 2.1e-4,
// bf16 1.7e-3, q8_0 0.0054, q5_0 0.043, q5_1 0.038, q4_0 0.086, q4_1 0.078,
// q6_K 0.018, q5_K 0.036, q4_K 0.071, q3_K 0.151, q2_K 0.297), so a
// regression in a scale search shows while rounding noise does not. The
// comparison with GGML's own quantizer output is in zoo_test.cpp.
TEST(Quantize, GaussianRoundTripError) {
  const Bound bounds[] = {
      {DType::F32, 0.0},      {DType::F16, 2.4e-4},   {DType::BF16, 1.9e-3},
      {DType::Q8_0, 0.0060},  {DType::Q5_0, 0.047},   {DType::Q5_1, 0.042},
      {DType::Q4_0, 0.095},   {DType::Q4_1, 0.086},   {DType::Q6_K, 0.0195},
      {DType::Q5_K, 0.040},   {DType::Q4_K, 0.079},   {DType::Q3_K, 0.167},
      {DType::Q2_K, 0.327},
  };
  const auto x = test::gaussian(256 * 64, 42);
  for (const Bound& b : bounds) {
    const auto y = deq(b.type, quant(b.type, x), x.size());
    const double rel = test::rmse(x.data(), y.data(), x.size()) / test::rms(x.data(), x.size());
    std::printf("%-5s relative RMSE %.5f\n", std::string(dtype_name(b.type)).c_str(), rel);
    EXPECT_LE(rel, b.max_rel_rmse) << dtype_name(b.type);
  }
}

// A row that is already a Q8_0 / Q4_0 / Q5_0 dequantization re-quantizes to
// the same bytes: the largest-magnitude element pins the scale exactly.
TEST(Quantize, RequantizingADequantizedRowIsExact) {
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q5_0}) {
    for (uint32_t seed = 1; seed <= 5; ++seed) {
      const auto x = test::gaussian(32 * 64, seed, 0.02f * float(seed));
      const auto q1 = quant(t, x);
      const auto q2 = quant(t, deq(t, q1, x.size()));
      EXPECT_EQ(q1, q2) << dtype_name(t) << " seed " << seed;
    }
  }
}

TEST(Quantize, Q4_0ReferenceRules) {
  // Largest magnitude -4 -> d = -4 / -8 = 0.5, it maps to 0 (value -8 d).
  std::vector<float> x(32, 0.0f);
  x[0] = -4.0f;
  x[1] = 3.6f;    // id = 2: 7.2 + 8.5 = 15.7 -> 15
  x[17] = -0.75f;  // -1.5 + 8.5 = 7 -> 7: halves round up, not away from zero
  x[18] = 0.24f;   // 0.48 + 8.5 = 8.98 -> truncates to 8
  const auto q = quant(DType::Q4_0, x);
  uint16_t d;
  std::memcpy(&d, q.data(), 2);
  EXPECT_EQ(f16_to_f32(d), 0.5f);
  EXPECT_EQ(q[2 + 0] & 0xF, 0);
  EXPECT_EQ(q[2 + 1] & 0xF, 15);
  EXPECT_EQ(q[2 + 1] >> 4, 7);
  EXPECT_EQ(q[2 + 2] >> 4, 8);
  EXPECT_EQ(q[2 + 5] & 0xF, 8);  // zero -> 8
}

TEST(Quantize, Q8_0RoundsHalfAwayFromZero) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;  // d = 1
  x[1] = 2.5f;
  x[2] = -2.5f;
  x[3] = 0.5f;
  const auto q = quant(DType::Q8_0, x);
  EXPECT_EQ(int8_t(q[2 + 0]), 127);
  EXPECT_EQ(int8_t(q[2 + 1]), 3);
  EXPECT_EQ(int8_t(q[2 + 2]), -3);
  EXPECT_EQ(int8_t(q[2 + 3]), 1);
}

TEST(Quantize, AllZeroRowsStayZero) {
  const std::vector<float> x(512, 0.0f);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q2_K,
                  DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    const auto y = deq(t, quant(t, x), x.size());
    for (float v : y) ASSERT_EQ(v, 0.0f) << dtype_name(t);
  }
}

TEST(Quantize, UnsupportedTypeNamesIt) {
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> q(1024);
  try {
    quantize_row(DType::IQ4_XS, x.data(), q.data(), 256);
    FAIL() << "expected kiln::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("iq4_xs"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quantize_row(DType::Q4_K, x.data(), q.data(), 128), Error);
}

}  // namespace
}  // namespace kiln
