// The CPU ternary kernel against BitLinear's arithmetic written out plainly:
// per-token int8 absmax activations (round half to even), an integer sum
// per 256-value block (TQ) or row (I2_S), the scales, divided by the token's
// activation scale. Tolerance 1e-5 relative: only the f32 order of the final
// scale products differs.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kiln/backend/backend.h"
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

}  // namespace
}  // namespace kiln
