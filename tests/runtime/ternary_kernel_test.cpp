// The CPU ternary kernel against BitLinear's arithmetic written out plainly:
// per-token int8 absmax activations (round half to even), an integer sum
// per 256-value block (TQ) or row (I2_S), the scales, divided by the token's
// activation scale. Tolerance 1e-5 relative: only the f32 order of the final
// scale products differs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/backend/cpu/ternary_kernels.h"
#include "kiln/core/thread_pool.h"
#include "kiln/quant/quantize.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace {

TEST(TernaryKernel, MatchesBitLinearArithmetic) {
  const int64_t N = 5, K = 512, T = 3;
  std::vector<float> w(size_t(N * K)), x(size_t(T * K));
  for (size_t i = 0; i < w.size(); ++i) w[i] = float(int(i * 2654435761u % 3) - 1) * 0.0625f;
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i) * 0.37f) * (1.0f + float(i % 7));
  auto backend = make_cpu_backend(BackendOptions{});
  for (DType t : {DType::TQ1_0, DType::TQ2_0, DType::I2_S}) {
    std::vector<uint8_t> data;
    if (t == DType::I2_S) {
      data.resize(i2s_tensor_bytes(N * K));
      quantize_i2s(w.data(), N * K, data.data());
    } else {
      const size_t rb = dtype_row_bytes(t, K);
      data.resize(rb * N);
      for (int64_t r = 0; r < N; ++r) quantize_row(t, w.data() + r * K, data.data() + r * rb, K);
    }
    TensorView v;
    v.name = "w";
    v.dtype = t;
    v.shape = {N, K};
    v.data = data.data();
    v.nbytes = data.size();
    Weight wt = backend->load_weight(v);
    std::vector<float> y(size_t(T * N));
    backend->ternary_matmul(wt, x.data(), T, y.data());
    for (int64_t tok = 0; tok < T; ++tok) {
      float amax = 0;
      for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(x[tok * K + k]));
      const float a = 127.0f / std::max(amax, 1e-5f);
      for (int64_t r = 0; r < N; ++r) {
        long sum = 0;
        for (int64_t k = 0; k < K; ++k) {
          const long q = long(std::nearbyint(x[tok * K + k] * a));
          const float wv = w[r * K + k];
          sum += wv > 0 ? q : (wv < 0 ? -q : 0);
        }
        const float want = float(sum) * 0.0625f / a;
        EXPECT_NEAR(y[tok * N + r], want, 1e-5f * std::fabs(want) + 1e-6f)
            << dtype_name(t) << " token " << tok << " row " << r;
      }
    }
  }
}

// Every SIMD level this CPU runs against the portable loop, bit for bit: the
// sums are exact integers and the scales apply in one order, so the outputs
// must be identical (tolerance 0). Shapes cover rows not a multiple of the
// 4-row tile or of 16, I2_S rows of an odd number of 128-value blocks (the
// 512-bit path's half chunk), rows that are not whole blocks (I2_S blocks
// straddling rows: the decoding path), and token counts around the 4-token tile.
TEST(TernaryKernel, SimdLevelsMatchScalarBitForBit) {
  const ternary::Kernels* levels[8];
  const int n_levels = ternary::available_levels(levels, 8);
  if (n_levels < 2) GTEST_SKIP() << "no SIMD level on this CPU";
  ThreadPool pool(2);
  std::mt19937 rng(1234);
  struct Shape {
    int64_t N, K;
  };
  const Shape shapes[] = {{1, 256}, {5, 512}, {7, 768}, {33, 1280}, {18, 2560}, {3, 128},
                          {9, 384}, {32, 100}, {32, 260}, {64, 1000}};
  for (DType t : {DType::I2_S, DType::TQ2_0, DType::TQ1_0}) {
    for (const Shape& sh : shapes) {
      // Rows need not be whole blocks, but an I2_S tensor is (its scale
      // follows the last block), and TQ rows are.
      if (t != DType::I2_S && sh.K % 256) continue;
      if (t == DType::I2_S && (sh.N * sh.K) % 128) continue;
      const int64_t N = sh.N, K = sh.K;
      std::vector<float> w(size_t(N * K));
      std::uniform_int_distribution<int> trit(-1, 1);
      std::uniform_real_distribution<float> mag(0.5f, 2.0f);
      for (auto& v : w) v = float(trit(rng)) * (t == DType::I2_S ? 1.0f : mag(rng));
      std::vector<uint8_t> data;
      if (t == DType::I2_S) {
        data.resize(i2s_tensor_bytes(N * K));
        quantize_i2s(w.data(), N * K, data.data());
      } else {
        const size_t rb = dtype_row_bytes(t, K);
        data.resize(rb * N);
        for (int64_t r = 0; r < N; ++r) quantize_row(t, w.data() + r * K, data.data() + r * rb, K);
      }
      for (int64_t T : {1, 2, 3, 4, 5, 9, 16}) {
        std::vector<float> x(size_t(T * K));
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (auto& v : x) v = nd(rng) * (1.0f + float(rng() % 5));
        if (T > 2) x[size_t(K + 3)] = 40.0f;  // one token with an outlier (small q elsewhere)
        if (T > 3) {  // a token whose scale is exactly 1 and x * a halfway: ties to even
          for (int64_t k = 0; k < K; ++k) x[size_t(3 * K + k)] = float(k % 11) - 5.5f;
          x[size_t(3 * K)] = 127.0f;
        }
        std::vector<float> want(size_t(T * N)), got(size_t(T * N));
        ternary::matmul(pool, *levels[0], t, data.data(), N, K, x.data(), T, want.data());
        for (int l = 1; l < n_levels; ++l) {
          std::fill(got.begin(), got.end(), -1.0f);
          ternary::matmul(pool, *levels[l], t, data.data(), N, K, x.data(), T, got.data());
          for (size_t i = 0; i < got.size(); ++i) {
            uint32_t a, b;
            std::memcpy(&a, &want[i], 4);
            std::memcpy(&b, &got[i], 4);
            ASSERT_EQ(a, b) << levels[l]->level << " " << dtype_name(t) << " N " << N << " K "
                            << K << " T " << T << " token " << i / size_t(N) << " row "
                            << i % size_t(N) << ": " << got[i] << " vs " << want[i];
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace kiln
