// attention_rows_f32_simd (kiln/quant/gemm.h) against the step it stands
// for, composed from the row kernels one query at a time: scores by
// dot_rows_f32_simd, their max, exp_sum_f32_simd, wsum_rows_f32_simd, then
// the output and running sum rescaled by fma (the rescale's exp that of
// exp_sum_f32_simd). Bit for bit, for every head width the kernel
// specialises (multiples of 8 below 64) and others, with queries of
// different visible row counts (a prompt's causal step) and groups of
// queries that do not fill the kernel's interleaved sums.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kiln/core/half.h"
#include "kiln/quant/gemm.h"

namespace kiln {
namespace {

struct State {
  std::vector<float> out, max, sum;
};

// Two steps (the first from an empty state, the second rescaling it), each
// query with its own q, K and V.
void run_steps(bool composed, int64_t hd, const std::vector<int64_t>& visible,
               const std::vector<float>& data, State& st) {
  const int64_t n_q = int64_t(visible.size()), rows = 40;
  st.out.assign(size_t(n_q * hd), 0.0f);
  st.max.assign(size_t(n_q), -INFINITY);
  st.sum.assign(size_t(n_q), 0.0f);
  std::vector<float> scratch(static_cast<size_t>(attention_rows_scratch_floats(n_q, rows, hd)));
  for (int step = 0; step < 2; ++step) {
    std::vector<AttentionRows> qs;
    for (int64_t g = 0; g < n_q; ++g) {
      const float* base = data.data() + ((step * n_q + g) * (2 * rows + 1)) * hd;
      qs.push_back(AttentionRows{base, base + hd, base + (rows + 1) * hd, visible[size_t(g)],
                                 st.out.data() + g * hd, &st.max[size_t(g)], &st.sum[size_t(g)]});
    }
    if (!composed) {
      attention_rows_f32_simd(qs.data(), n_q, hd, 0.37f, scratch.data());
      continue;
    }
    for (const AttentionRows& a : qs) {
      std::vector<float> s(static_cast<size_t>(a.visible)), part(static_cast<size_t>(hd));
      dot_rows_f32_simd(a.k, hd, a.visible, a.q, hd, 0.37f, s.data());
      const float new_max = std::max(*a.max, *std::max_element(s.begin(), s.end()));
      const float step_sum = exp_sum_f32_simd(s.data(), a.visible, new_max);
      wsum_rows_f32_simd(a.v, hd, a.visible, s.data(), hd, part.data());
      if (*a.max == -INFINITY) {
        std::copy(part.begin(), part.end(), a.out);
        *a.sum = step_sum;
      } else {
        float r = *a.max - new_max;
        exp_sum_f32_simd(&r, 1, 0.0f);
        for (int64_t i = 0; i < hd; ++i) a.out[i] = std::fma(a.out[i], r, part[size_t(i)]);
        *a.sum = std::fma(*a.sum, r, step_sum);
      }
      *a.max = new_max;
    }
  }
}

class AttentionRowsKernel : public ::testing::TestWithParam<int64_t> {};

TEST_P(AttentionRowsKernel, EqualsTheRowKernelsQueryByQuery) {
  const int64_t hd = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(hd));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // 19 queries: more than one pass of 16, groups left partly empty.
  std::vector<int64_t> visible;
  for (int64_t g = 0; g < 19; ++g) visible.push_back(g % 3 == 0 ? 40 : 1 + (g * 7) % 40);
  std::vector<float> data(static_cast<size_t>(2 * 19 * (2 * 40 + 1) * hd));
  for (float& x : data) x = 2.0f * nd(rng);
  State fused, composed;
  run_steps(false, hd, visible, data, fused);
  run_steps(true, hd, visible, data, composed);
  for (size_t e = 0; e < fused.out.size(); ++e)
    ASSERT_EQ(fused.out[e], composed.out[e]) << "query " << e / size_t(hd) << " column " << e % size_t(hd);
  EXPECT_EQ(fused.sum, composed.sum);
  EXPECT_EQ(fused.max, composed.max);
}

INSTANTIATE_TEST_SUITE_P(HeadDims, AttentionRowsKernel,
                         ::testing::Values(8, 16, 24, 32, 40, 48, 56, 12, 64, 72, 128, 256));

// The row kernels against their definitions, bit for bit: for heads of 64
// dims and up a score is dot_f32_simd of its row times the scale, however
// many rows are taken together (eight at a time, the last group short;
// shorter heads have sums of their own, sum8x8's); a value sum's column is
// one fma chain over the rows in order, whatever the register width.
TEST(AttentionRowKernels, ScoresAreDotF32AndValueSumsAreFmaChains) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t hd : {8, 24, 64, 72, 96, 128, 192, 256}) {
    for (int64_t rows : {1, 5, 8, 13, 16, 33}) {
      const int64_t stride = hd + 8;  // rows apart, as in a cache of wider rows
      std::vector<float> k(static_cast<size_t>(rows * stride)), q(static_cast<size_t>(hd)),
          p(static_cast<size_t>(rows));
      for (float& x : k) x = nd(rng);
      for (float& x : q) x = nd(rng);
      for (float& x : p) x = nd(rng);
      std::vector<float> s(static_cast<size_t>(rows)), y(static_cast<size_t>(hd));
      dot_rows_f32_simd(k.data(), stride, rows, q.data(), hd, 0.37f, s.data());
      wsum_rows_f32_simd(k.data(), stride, rows, p.data(), hd, y.data());
      for (int64_t j = 0; j < rows && hd >= 64; ++j)
        ASSERT_EQ(s[size_t(j)], dot_f32_simd(k.data() + j * stride, q.data(), hd) * 0.37f)
            << "head dim " << hd << ", " << rows << " rows, row " << j;
      for (int64_t i = 0; i < hd; ++i) {
        float want = 0.0f;
        for (int64_t j = 0; j < rows; ++j) want = std::fma(p[size_t(j)], k[size_t(j * stride + i)], want);
        ASSERT_EQ(y[size_t(i)], want) << "head dim " << hd << ", " << rows << " rows, column " << i;
      }
    }
  }
}

// An f16 cache's rows reach attention through f16_to_f32_simd: every one of
// the 65536 halves as half.h's exact conversion gives it (NaNs as NaNs),
// at lengths that leave each of its loops a tail.
TEST(AttentionRowKernels, HalfRowsConvertExactly) {
  std::vector<uint16_t> all(65536 + 23);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  for (int64_t n : {int64_t(all.size()), int64_t(7), int64_t(15), int64_t(16), int64_t(31)}) {
    std::vector<float> got(static_cast<size_t>(n));
    f16_to_f32_simd(all.data(), n, got.data());
    for (int64_t i = 0; i < n; ++i) {
      const float want = f16_to_f32(all[size_t(i)]);
      if (std::isnan(want))
        ASSERT_TRUE(std::isnan(got[size_t(i)])) << "half " << all[size_t(i)];
      else
        ASSERT_EQ(f32_to_bits(got[size_t(i)]), f32_to_bits(want)) << "half " << all[size_t(i)];
    }
  }
}

}  // namespace
}  // namespace kiln
