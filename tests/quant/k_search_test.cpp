// The K-quants' scale search eight sub-blocks a vector (AVX2) against the
// scalar search it stands for: the same levels, and the same bits of every
// scale and min, on data of many shapes (gaussian, outliers, one sign,
// constant, zero, signed zeros, tiny and large magnitudes).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kiln/core/cpu_features.h"
#include "kiln/quant/k_search.h"

#if defined(__x86_64__) || defined(_M_X64)
namespace kiln::quant {
namespace {

struct Search {
  int n, nmax;
  float rmin, rdelta;
  int nstep;
  bool abs_error;
  const char* name;
};

// The searches the quantizers run: Q4_K, Q5_K (squared error, the Q4_K
// weights av|x| + |x|) and Q2_K (absolute error, weights |x|).
constexpr Search kSearches[] = {{32, 15, -1.0f, 0.1f, 20, false, "q4_K"},
                                {32, 31, -0.5f, 0.1f, 15, false, "q5_K"},
                                {16, 3, -0.5f, 0.1f, 15, true, "q2_K"}};

// Eight sub-blocks of n values, of the given kind.
std::vector<float> sub_blocks(int n, int kind, std::mt19937& rng) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(size_t(8 * n));
  for (float& v : x) v = g(rng);
  for (int j = 0; j < 8; ++j) {
    float* b = x.data() + j * n;
    switch ((kind + j) % 9) {
      case 0: break;  // gaussian
      case 1: b[rng() % n] *= 40.0f; break;  // an outlier
      case 2: for (int i = 0; i < n; ++i) b[i] = std::fabs(b[i]) + 0.5f; break;  // all positive
      case 3: for (int i = 0; i < n; ++i) b[i] = -std::fabs(b[i]); break;  // all negative
      case 4: for (int i = 0; i < n; ++i) b[i] = 0.75f; break;  // constant
      case 5: for (int i = 0; i < n; ++i) b[i] = (i % 2) ? 0.0f : -0.0f; break;  // signed zeros
      case 6: for (int i = 0; i < n; ++i) b[i] *= 1e-30f; break;  // tiny
      case 7: for (int i = 0; i < n; ++i) b[i] *= 1e12f; break;  // large
      case 8: for (int i = 0; i < n; ++i) b[i] = float(int(b[i] * 2)) / 4; break;  // ties
    }
  }
  return x;
}

std::vector<float> weights(const Search& s, const std::vector<float>& x) {
  std::vector<float> w(x.size());
  for (int j = 0; j < 8; ++j) {
    const float* b = x.data() + j * s.n;
    float sum_x2 = 0;
    for (int i = 0; i < s.n; ++i) sum_x2 += b[i] * b[i];
    const float av = std::sqrt(sum_x2 / float(s.n));
    for (int i = 0; i < s.n; ++i) w[size_t(j * s.n + i)] = s.abs_error ? std::fabs(b[i]) : av + std::fabs(b[i]);
  }
  return w;
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// The AVX2 searches exist in x86-64 builds and run where the CPU has AVX2.
class KSearch : public testing::Test {
 protected:
  void SetUp() override {
    if (!cpu_features().avx2) GTEST_SKIP() << "no AVX2 here";
  }
};

TEST_F(KSearch, EightLanesEqualTheScalarSearch) {
  std::mt19937 rng(7);
  for (const Search& s : kSearches) {
    for (int round = 0; round < 400; ++round) {
      const std::vector<float> x = sub_blocks(s.n, round, rng);
      const std::vector<float> w = weights(s, x);
      std::vector<uint8_t> want_l(x.size()), got_l(x.size(), 0xAB);
      float want_scale[8], want_min[8], got_scale[8], got_min[8];
      for (int j = 0; j < 8; ++j)
        want_scale[j] = fit_scale_min(s.n, s.nmax, x.data() + j * s.n, w.data() + j * s.n,
                                      want_l.data() + j * s.n, &want_min[j], s.rmin, s.rdelta,
                                      s.nstep, s.abs_error);
      fit_scale_min_x8_avx2(s.n, s.nmax, x.data(), w.data(), got_l.data(), got_scale, got_min,
                            s.rmin, s.rdelta, s.nstep, s.abs_error);
      ASSERT_EQ(got_l, want_l) << s.name << " round " << round;
      for (int j = 0; j < 8; ++j) {
        ASSERT_EQ(bits(got_scale[j]), bits(want_scale[j]))
            << s.name << " round " << round << " lane " << j << ": " << got_scale[j] << " vs "
            << want_scale[j];
        ASSERT_EQ(bits(got_min[j]), bits(want_min[j]))
            << s.name << " round " << round << " lane " << j << ": " << got_min[j] << " vs "
            << want_min[j];
      }
    }
  }
}

// Q6_K's symmetric search, the same way (16-value sub-blocks, nmax 32).
TEST_F(KSearch, EightLanesEqualTheScalarSymmetricSearch) {
  std::mt19937 rng(11);
  const int n = 16, nmax = 32;
  for (int round = 0; round < 600; ++round) {
    std::vector<float> x = sub_blocks(n, round, rng);
    if (round % 9 == 3) x[size_t(rng() % x.size())] = 1e-16f;  // below the zero threshold
    std::vector<int8_t> want_l(x.size()), got_l(x.size(), int8_t(0x55));
    float want[8], got[8];
    for (int j = 0; j < 8; ++j) want[j] = fit_symmetric(n, nmax, x.data() + j * n, want_l.data() + j * n);
    fit_symmetric_x8_avx2(n, nmax, x.data(), got_l.data(), got);
    ASSERT_EQ(got_l, want_l) << "round " << round;
    for (int j = 0; j < 8; ++j)
      ASSERT_EQ(bits(got[j]), bits(want[j]))
          << "round " << round << " lane " << j << ": " << got[j] << " vs " << want[j];
  }
}

}  // namespace
}  // namespace kiln::quant
#endif
