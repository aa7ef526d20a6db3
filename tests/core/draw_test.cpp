// The sampled draw's own arithmetic (kiln/core/draw.h), which the host's
// sampler and the GPU share: its exp against the platform's, and its
// random numbers as a function of the seed and the draw's index.
// (tests/runtime/sampler_test.cpp: the draws' distribution and cuts;
// tests/cuda/ops_test.cpp: the GPU's draws against the host's.)
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "kiln/core/draw.h"

namespace kiln {
namespace {

TEST(DrawExp, WithinTwoUnitsInTheLastPlaceOfTheLibrarys) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> wide(-708.0, 0.0), narrow(-1.0, 0.0);
  for (int i = 0; i < 200000; ++i) {
    const double x = i % 2 ? wide(rng) : narrow(rng);
    const double want = std::exp(x);
    const double ulp = std::nextafter(want, INFINITY) - want;
    ASSERT_LE(std::fabs(draw_exp(x) - want), 2 * ulp) << "x = " << x;
  }
  // The reduction's edges: multiples of ln 2 and halfway between them.
  for (int k = 0; k <= 1021; ++k)
    for (double off : {0.0, 0.5, -0.5, 1e-9}) {
      const double x = -(k + off) * 0.69314718055994530942;
      if (x > 0 || x < -708) continue;
      const double want = std::exp(x);
      ASSERT_LE(std::fabs(draw_exp(x) - want), 2 * (std::nextafter(want, INFINITY) - want))
          << "x = " << x;
    }
  EXPECT_EQ(draw_exp(0.0), 1.0);
  EXPECT_EQ(draw_exp(-0.0), 1.0);
}

TEST(DrawExp, NothingBelowTheNormalDoubles) {
  EXPECT_GT(draw_exp(-708.0), 0.0);
  EXPECT_EQ(draw_exp(-708.5), 0.0);
  EXPECT_EQ(draw_exp(-INFINITY), 0.0);
  EXPECT_EQ(draw_exp(std::nan("")), 0.0);
}

TEST(DrawUniform, AFunctionOfTheSeedAndTheIndex) {
  double sum = 0;
  std::set<double> seen;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const double u = draw_uniform(42, uint64_t(i));
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ASSERT_EQ(u, draw_uniform(42, uint64_t(i)));
    sum += u;
    seen.insert(u);
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  EXPECT_EQ(seen.size(), size_t(n));
  // Nearby seeds, and seeds a step of the sequence apart, give unrelated
  // numbers (not the same sequence shifted).
  int same = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    same += draw_uniform(0, i) == draw_uniform(1, i);
    same += draw_uniform(0, i + 1) == draw_uniform(kSplitmixGamma, i);
  }
  EXPECT_EQ(same, 0);
}

// A draw over candidates of equal logits at any temperature picks each
// about equally often; top-k 1's one candidate always.
TEST(DrawCandidates, EqualLogitsDrawnAlike) {
  const Candidate c[4] = {{2.0f, 9}, {2.0f, 3}, {2.0f, 5}, {2.0f, 1}};
  DrawSpec d;
  d.top_p = 1.0f;
  d.min_p = 0.0f;
  int counts[10] = {};
  for (uint64_t i = 0; i < 40000; ++i) {
    d.index = i;
    ++counts[draw_candidates(c, 4, d)];
  }
  for (int id : {9, 3, 5, 1}) EXPECT_NEAR(counts[id], 10000, 400) << id;
  d.index = 17;
  EXPECT_EQ(draw_candidates(c + 2, 1, d), 5);
}

}  // namespace
}  // namespace kiln
