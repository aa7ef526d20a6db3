// Against GGML itself, on the zoo: one small llama model quantized by
// llama-quantize into every format (tests/data/quant/zoo-*.gguf), with the
// first 8192 values of each tensor as GGML dequantizes them
// (zoo-*.ref.safetensors, "dequant.<tensor>") and the same 8192 values of
// the float32 original (zoo-f32.sample.safetensors, "orig.<tensor>").
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/io/gguf.h"
#include "kiln/io/safetensors.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/dot.h"
#include "kiln/quant/gemm.h"
#include "kiln/quant/quantize.h"
#include "quant/test_util.h"

namespace kiln {
namespace {

constexpr int64_t kRefValues = 8192;

const char* const kZoo[] = {"Q8_0", "Q4_0", "Q4_1", "Q5_0",   "Q5_1",   "Q2_K",
                            "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS"};

std::string data(const std::string& name) { return std::string(KILN_TEST_DATA) + "/quant/" + name; }

bool is_block_type(DType t) { return t != DType::F32 && dtype_info(t).block_size > 1; }

// The first rows of a tensor covering its first kRefValues values, dequantized.
std::vector<float> head_dequantized(const TensorView& t) {
  const int64_t n = std::min(kRefValues, t.numel());
  const int64_t rows = (n + t.cols() - 1) / t.cols();
  std::vector<float> out(size_t(rows * t.cols()));
  for (int64_t r = 0; r < rows; ++r) dequantize_row(t.dtype, t.row(r), &out[r * t.cols()], t.cols());
  out.resize(size_t(n));
  return out;
}

const float* f32_data(const SafetensorsModel& st, const std::string& name, int64_t n) {
  const TensorView* v = st.find_tensor(name);
  EXPECT_NE(v, nullptr) << name;
  if (!v) return nullptr;
  EXPECT_EQ(v->dtype, DType::F32) << name;
  EXPECT_GE(v->numel(), n) << name;
  return static_cast<const float*>(v->data);
}

class Zoo : public ::testing::TestWithParam<const char*> {};

// Acceptance: every quantized tensor of every file, within 1e-6 of the
// largest reference value (our arithmetic matches GGML's operation for
// operation; the slack covers a compiler fusing a multiply-add there).
TEST_P(Zoo, DequantizeMatchesGgml) {
  const std::string stem = std::string("zoo-") + GetParam();
  const auto gguf = GgufFile::open(data(stem + ".gguf"));
  const auto ref = SafetensorsModel::open(data(stem + ".ref.safetensors"));
  int checked = 0;
  double worst = 0;
  std::string types;
  for (const TensorView& t : gguf->tensors()) {
    if (!is_block_type(t.dtype)) continue;
    if (types.find(dtype_name(t.dtype)) == std::string::npos)
      types += " " + std::string(dtype_name(t.dtype));
    const auto got = head_dequantized(t);
    const float* want = f32_data(*ref, "dequant." + t.name, int64_t(got.size()));
    if (!want) continue;
    float max_ref = 0, max_diff = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      max_ref = std::max(max_ref, std::fabs(want[i]));
      max_diff = std::max(max_diff, std::fabs(got[i] - want[i]));
    }
    EXPECT_LE(max_diff, 1e-6f * max_ref) << t.name << " (" << dtype_name(t.dtype) << ")";
    worst = std::max(worst, double(max_diff) / max_ref);
    ++checked;
  }
  EXPECT_GE(checked, 7) << stem;
  std::printf("%-12s %d tensors (%s ): max |diff| / max |ref| = %.3g\n", stem.c_str(), checked,
              types.c_str(), worst);
}

// dot_row over a real tensor equals the dot of its dequantized rows.
TEST_P(Zoo, DotRowOnRealRows) {
  const auto gguf = GgufFile::open(data(std::string("zoo-") + GetParam() + ".gguf"));
  for (const TensorView& t : gguf->tensors()) {
    if (!is_block_type(t.dtype)) continue;
    const auto x = test::gaussian(size_t(t.cols()), 5);
    std::vector<float> w(size_t(t.cols()));
    for (int64_t r = 0; r < std::min<int64_t>(t.rows(), 4); ++r) {
      dequantize_row(t.dtype, t.row(r), w.data(), t.cols());
      double ref = 0, mag = 0;
      for (int64_t i = 0; i < t.cols(); ++i) {
        ref += double(w[i]) * x[i];
        mag += std::fabs(double(w[i]) * x[i]);
      }
      EXPECT_NEAR(dot_row(t.dtype, t.row(r), x.data(), t.cols()), ref, 1e-5 * mag) << t.name;
    }
  }
}

// The int8 products on real rows, as llama-quantize wrote them: each row
// against each of 1 (decode) and 9 tokens (the tiles) of activations
// quantized as the kernels take them, within 2e-6 of sum |w x| of the
// double dot of the dequantized row with those activations (as GemmInt8
// holds the kernels on rows kiln quantized; these rows tie them to GGML's
// layout, every block format of the zoo).
TEST_P(Zoo, GemmInt8OnRealRows) {
  const auto gguf = GgufFile::open(data(std::string("zoo-") + GetParam() + ".gguf"));
  int checked = 0;
  std::string types;
  for (const TensorView& t : gguf->tensors()) {
    if (!is_block_type(t.dtype) || gemm_path(t.dtype, t.cols()) != GemmPath::kInt8) continue;
    const int64_t K = t.cols(), rows = std::min<int64_t>(t.rows(), 21);
    for (int64_t T : {int64_t(1), int64_t(9)}) {
      const auto x = test::gaussian(size_t(T * K), 7);
      test::Aligned qmem(quantized_rows_bytes(T, K)), scratch(gemm_scratch_bytes(K));
      QuantizedRows q = quantized_rows_view(qmem.p, T, K);
      quantize_rows_q8(x.data(), 0, T, q);
      std::vector<float> y(static_cast<size_t>(T * rows)), w(static_cast<size_t>(K));
      gemm_int8(t.dtype, t.data, t.row_bytes(), 0, rows, q, y.data(), rows, scratch.p);
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(t.dtype, t.row(r), w.data(), K);
        for (int64_t tk = 0; tk < T; ++tk) {
          const test::RefDot ref = test::quantized_ref_dot(w.data(), q, tk);
          ASSERT_LE(std::fabs(double(y[size_t(tk * rows + r)]) - ref.dot), 2e-6 * ref.mag)
              << t.name << " (" << dtype_name(t.dtype) << ") row " << r << " token " << tk << " of " << T;
        }
      }
    }
    ++checked;
    types += " " + std::string(dtype_name(t.dtype));
  }
  if (gemm_path(DType::Q8_0, 256) == GemmPath::kInt8) {
    EXPECT_GE(checked, 7) << GetParam();
  }
  std::printf("%-12s %d tensors through the int8 kernels (%s )\n", GetParam(), checked,
              types.c_str());
}

// Quantizing the float32 original: the legacy formats must give exactly
// llama-quantize's bytes; the K-quants an RMSE within 5% of GGML's on the
// same values (the bytes usually agree too: the fraction is printed).
TEST_P(Zoo, QuantizeMatchesGgml) {
  const std::string stem = std::string("zoo-") + GetParam();
  const auto gguf = GgufFile::open(data(stem + ".gguf"));
  const auto ref = SafetensorsModel::open(data(stem + ".ref.safetensors"));
  const auto orig = SafetensorsModel::open(data("zoo-f32.sample.safetensors"));
  double sum_ours = 0, sum_ggml = 0;
  int64_t same_rows = 0, rows_total = 0;
  for (const TensorView& t : gguf->tensors()) {
    if (!is_block_type(t.dtype) || !can_quantize(t.dtype)) continue;
    const int64_t n = std::min(kRefValues, t.numel());
    const int64_t rows = n / t.cols();
    ASSERT_EQ(rows * t.cols(), n) << t.name;
    const float* x = f32_data(*orig, "orig." + t.name, n);
    const float* ggml = f32_data(*ref, "dequant." + t.name, n);
    if (!x || !ggml) continue;
    std::vector<uint8_t> q(t.row_bytes());
    std::vector<float> ours(static_cast<size_t>(n));
    for (int64_t r = 0; r < rows; ++r) {
      quantize_row(t.dtype, x + r * t.cols(), q.data(), t.cols());
      dequantize_row(t.dtype, q.data(), &ours[r * t.cols()], t.cols());
      const bool same = std::memcmp(q.data(), t.row(r), t.row_bytes()) == 0;
      same_rows += same;
      ++rows_total;
      if (!dtype_info(t.dtype).name.ends_with("_K")) {
        EXPECT_TRUE(same) << t.name << " row " << r << " (" << dtype_name(t.dtype) << ")";
      }
    }
    const double e_ours = test::rmse(x, ours.data(), size_t(n));
    const double e_ggml = test::rmse(x, ggml, size_t(n));
    EXPECT_LE(e_ours, 1.05 * e_ggml) << t.name << " (" << dtype_name(t.dtype) << ")";
    sum_ours += e_ours;
    sum_ggml += e_ggml;
  }
  if (rows_total > 0)
    std::printf("%-12s RMSE ours/GGML %.4f, rows byte-identical %lld/%lld\n", stem.c_str(),
                sum_ours / sum_ggml, (long long)same_rows, (long long)rows_total);
}

INSTANTIATE_TEST_SUITE_P(Quant, Zoo, ::testing::ValuesIn(kZoo),
                         [](const auto& info) { return std::string(info.param); });

// A row that is already a GGML Q8_0 / Q4_0 dequantization re-quantizes to
// the very same bytes: its largest-magnitude element pins the scale.
TEST(ZooRequantize, DequantizedRowsRoundTripExactly) {
  for (const char* name : {"Q8_0", "Q4_0"}) {
    const auto gguf = GgufFile::open(data(std::string("zoo-") + name + ".gguf"));
    int rows = 0;
    for (const TensorView& t : gguf->tensors()) {
      if (t.dtype != DType::Q8_0 && t.dtype != DType::Q4_0) continue;
      std::vector<float> w(size_t(t.cols()));
      std::vector<uint8_t> q(t.row_bytes());
      for (int64_t r = 0; r < t.rows(); ++r, ++rows) {
        dequantize_row(t.dtype, t.row(r), w.data(), t.cols());
        quantize_row(t.dtype, w.data(), q.data(), t.cols());
        ASSERT_EQ(std::memcmp(q.data(), t.row(r), q.size()), 0) << t.name << " row " << r;
      }
    }
    EXPECT_GT(rows, 0) << name;
  }
}

// Writes zoo-f32.sample.safetensors from the full float32 zoo model:
//   KILN_ZOO_F32=/path/zoo-f32.gguf test_quant --gtest_also_run_disabled_tests
//     --gtest_filter='ZooSample.*'
TEST(ZooSample, DISABLED_Write) {
  const char* src = std::getenv("KILN_ZOO_F32");
  ASSERT_NE(src, nullptr) << "set KILN_ZOO_F32 to zoo-f32.gguf";
  const auto gguf = GgufFile::open(src);
  std::vector<SafetensorsEntry> entries;
  for (const TensorView& t : gguf->tensors()) {
    if (t.dtype != DType::F32 || t.shape.size() < 2) continue;
    const int64_t n = std::min(kRefValues, t.numel());
    entries.push_back({"orig." + t.name, DType::F32, {n}, t.data, size_t(n) * 4});
  }
  write_safetensors(data("zoo-f32.sample.safetensors"), entries,
                    {{"source", "first 8192 values of each matrix of zoo-f32.gguf"}});
}

}  // namespace
}  // namespace kiln
