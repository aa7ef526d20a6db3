#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "kiln/runtime/sampler.h"

namespace kiln {
namespace {

std::vector<float> logits_of(std::vector<float> v) { return v; }

TEST(Sampler, ZeroTemperatureIsArgmax) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  auto l = logits_of({0.1f, 2.0f, 1.9f, -1.0f});
  EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
}

// The vectorised argmax against std::max_element (first of equal maxima) at
// sizes around its 16-wide steps, with the maximum in the vector part, in
// the scalar tail, repeated, and beside NaNs.
TEST(Sampler, ArgmaxMatchesMaxElement) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-20.0f, 20.0f);
  for (int64_t n : {1, 2, 15, 16, 17, 31, 33, 100, 151936}) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = u(rng);
    const auto want = [&] { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); };
    EXPECT_EQ(argmax(v.data(), n), want()) << n;
    v[size_t(n - 1)] = 100.0f;  // in the tail
    EXPECT_EQ(argmax(v.data(), n), n - 1) << n;
    v[size_t(n / 2)] = 100.0f;  // an earlier equal wins
    EXPECT_EQ(argmax(v.data(), n), want()) << n;
    if (n > 3) {
      v[1] = std::numeric_limits<float>::quiet_NaN();
      EXPECT_EQ(argmax(v.data(), n), n / 2) << n;
    }
  }
  // Two equal maxima in one 16-wide step of the index search: the lower.
  std::vector<float> w(100, 0.0f);
  w[21] = w[19] = 5.0f;
  EXPECT_EQ(argmax(w.data(), 100), 19);
  const float neg_inf[3] = {-INFINITY, -INFINITY, -INFINITY};
  EXPECT_EQ(argmax(neg_inf, 3), 0);
  const float nan_then_neg_inf[3] = {std::numeric_limits<float>::quiet_NaN(), -INFINITY, -INFINITY};
  EXPECT_EQ(argmax(nan_then_neg_inf, 3), 1);
}

// The maximum is found per block of 1024 logits, then searched for in the
// first block holding it: equal maxima in two blocks, maxima either side of
// a block's edge, a last block of one value, and NaN filling a block.
TEST(Sampler, ArgmaxAcrossItsBlocks) {
  for (int64_t n : {1023, 1024, 1025, 2048, 2049, 5000}) {
    std::vector<float> v(static_cast<size_t>(n), 1.0f);
    const auto want = [&] { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); };
    EXPECT_EQ(argmax(v.data(), n), 0) << n;  // all equal: the first
    for (int64_t at : {int64_t(0), int64_t(1023), int64_t(1024), n - 1}) {
      if (at >= n) continue;
      std::fill(v.begin(), v.end(), 1.0f);
      v[size_t(at)] = 3.0f;
      EXPECT_EQ(argmax(v.data(), n), at) << n << " " << at;
      v[size_t(n - 1)] = 3.0f;  // an equal one later, maybe in a later block
      EXPECT_EQ(argmax(v.data(), n), want()) << n << " " << at;
    }
    if (n > 1024) {  // a block of NaN before the maximum
      std::fill(v.begin(), v.end(), 1.0f);
      std::fill(v.begin(), v.begin() + 1024, std::numeric_limits<float>::quiet_NaN());
      v[size_t(n - 1)] = 2.0f;
      EXPECT_EQ(argmax(v.data(), n), n - 1) << n;
    }
  }
}

// The top-k selection against sorting every candidate and keeping the head:
// the same ids in the same order, with ties (logits from a few values, so
// the lower id must win), -inf, NaNs (never candidates), k above the count
// of non-NaN logits, and sizes around the 16-wide scan.
TEST(Sampler, TopKCandidatesAreTheSortedHead) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(-4, 4);
  std::normal_distribution<float> wide(0.0f, 3.0f);
  std::vector<Candidate> got;
  for (int64_t n : {1, 5, 15, 16, 17, 33, 1000, 5003, 151936}) {
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<float> v(static_cast<size_t>(n));
      for (auto& x : v) x = kind == 0 ? float(small(rng)) : wide(rng);
      if (kind == 2)
        for (size_t i = 0; i < v.size(); i += 7)
          v[i] = i % 3 == 0 ? std::numeric_limits<float>::quiet_NaN() : -INFINITY;
      std::vector<Candidate> all;
      for (int64_t i = 0; i < n; ++i)
        if (!std::isnan(v[size_t(i)])) all.push_back({v[size_t(i)], int32_t(i)});
      std::sort(all.begin(), all.end(), [](const Candidate& a, const Candidate& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      for (int64_t k : {int64_t(1), int64_t(2), int64_t(40), int64_t(300), n - 1, n, n + 3}) {
        if (k <= 0) continue;
        top_k_candidates(v.data(), n, size_t(k), got);
        std::vector<Candidate> want(all.begin(), all.begin() + std::min<int64_t>(k, int64_t(all.size())));
        ASSERT_EQ(got.size(), want.size()) << "n=" << n << " k=" << k << " kind=" << kind;
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_EQ(got[i].second, want[i].second) << "n=" << n << " k=" << k << " kind=" << kind
                                                   << " rank " << i;
      }
    }
  }
}

TEST(Sampler, TopKOfOneIsGreedyAtAnyTemperature) {
  SamplingParams p;
  p.temperature = 5;
  p.top_k = 1;
  Sampler s(p);
  for (int i = 0; i < 20; ++i) {
    auto l = logits_of({0.1f, 2.0f, 1.9f, -1.0f});
    EXPECT_EQ(s.sample(l.data(), 4, {}), 1);
  }
}

TEST(Sampler, SameSeedSameDraws) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  p.seed = 1234;
  Sampler a(p), b(p);
  int differ = 0;
  p.seed = 999;
  Sampler c(p);
  for (int i = 0; i < 50; ++i) {
    auto l1 = logits_of({1, 1, 1, 1, 1, 1, 1, 1});
    auto l2 = l1, l3 = l1;
    const int32_t x = a.sample(l1.data(), 8, {});
    EXPECT_EQ(x, b.sample(l2.data(), 8, {}));
    differ += x != c.sample(l3.data(), 8, {});
  }
  EXPECT_GT(differ, 10);
}

TEST(Sampler, DrawsFollowTheDistribution) {
  // p = softmax([0, ln 3]) = [0.25, 0.75]
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  p.seed = 7;
  Sampler s(p);
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto l = logits_of({0.0f, std::log(3.0f)});
    ones += s.sample(l.data(), 2, {});
  }
  EXPECT_NEAR(double(ones) / n, 0.75, 0.015);  // ~5 standard deviations
}

TEST(Sampler, TopPAndMinPCutTheTail) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.min_p = 0;
  p.top_p = 0.5f;  // the first token alone has p > 0.5
  p.seed = 3;
  Sampler s(p);
  for (int i = 0; i < 100; ++i) {
    auto l = logits_of({3.0f, 1.0f, 1.0f, 1.0f});
    EXPECT_EQ(s.sample(l.data(), 4, {}), 0);
  }
  p.top_p = 1;
  p.min_p = 0.5f;  // tokens 1..3 have p/p0 = e^-2 < 0.5
  Sampler m(p);
  for (int i = 0; i < 100; ++i) {
    auto l = logits_of({3.0f, 1.0f, 1.0f, 1.0f});
    EXPECT_EQ(m.sample(l.data(), 4, {}), 0);
  }
}

// Top-k off with top-p or min-p on takes the sorted head only as far as the
// filters reach (sample_head): the same tokens as a draw from the whole row
// sorted, over rows whose nucleus is a few candidates and thousands (the
// head grown many times), with NaN among them.
TEST(Sampler, TopKOffDrawsAsFromTheWholeSortedRow) {
  std::mt19937 rng(11);
  const int64_t vocab = 5000;
  struct Setting {
    float spread, top_p, min_p, temperature;
  };
  for (const Setting& set : {Setting{5.0f, 0.95f, 0.05f, 0.8f}, Setting{0.5f, 0.95f, 0.0f, 1.0f},
                             Setting{0.5f, 1.0f, 0.3f, 1.5f}, Setting{2.0f, 0.5f, 0.0f, 0.7f}}) {
    std::normal_distribution<float> d(0.0f, set.spread);
    SamplingParams p;
    p.top_k = 0;
    p.top_p = set.top_p;
    p.min_p = set.min_p;
    p.temperature = set.temperature;
    p.seed = 5;
    Sampler s(p);
    for (uint64_t draw = 0; draw < 60; ++draw) {
      std::vector<float> l(static_cast<size_t>(vocab));
      for (auto& x : l) x = d(rng);
      for (int64_t i = 0; i < vocab; i += 97) l[size_t(i)] = std::nanf("");
      std::vector<Candidate> all;
      for (int64_t i = 0; i < vocab; ++i)
        if (!std::isnan(l[size_t(i)])) all.push_back({l[size_t(i)], int32_t(i)});
      std::sort(all.begin(), all.end(), by_logit);
      DrawSpec spec;
      spec.temperature = p.temperature;
      spec.top_p = p.top_p;
      spec.min_p = p.min_p;
      spec.seed = p.seed;
      spec.index = draw;
      const int32_t want = draw_candidates(all.data(), all.size(), spec);
      EXPECT_EQ(s.sample(l.data(), vocab, {}), want)
          << "spread " << set.spread << " top-p " << set.top_p << " min-p " << set.min_p
          << " draw " << draw;
    }
  }
}

TEST(Sampler, PenaltiesPushRecentTokensDown) {
  SamplingParams p;
  p.temperature = 0;
  p.repeat_penalty = 2.0f;  // 2.0 / 2 = 1.0 < 1.5
  Sampler s(p);
  auto l = logits_of({2.0f, 1.5f});
  EXPECT_EQ(s.sample(l.data(), 2, {0}), 1);
  EXPECT_FLOAT_EQ(l[0], 1.0f);

  SamplingParams q;
  q.temperature = 0;
  q.presence_penalty = 0.3f;
  q.frequency_penalty = 0.2f;
  Sampler t(q);
  auto m = logits_of({2.0f, 1.5f});
  EXPECT_EQ(t.sample(m.data(), 2, {0, 0}), 1);  // 2 - 0.3 - 2 * 0.2 = 1.3
  EXPECT_FLOAT_EQ(m[0], 1.3f);
}

}  // namespace
}  // namespace kiln
