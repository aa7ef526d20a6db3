// The CPU backend's attention against a direct double-precision softmax(qK^T)V
// over random caches: contiguous and paged (blocks out of order), f32 and
// f16, grouped-query heads, queries that start mid-context and blocks of
// queries and keys that do not divide the lengths.
//
// Tolerance 2e-6 of the output's largest magnitude: the kernel is f32 with
// an online softmax (the running sum and output rescaled as the max grows),
// a different order of f32 operations than the reference, nothing more. A
// masking or block-table mistake is an O(1) difference.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/core/dtype.h"
#include "kiln/core/half.h"

namespace kiln {
namespace {

struct Case {
  int64_t n_tokens, start, block;  // block 0: contiguous cache
  DType dtype;
};

// A cache of `capacity` positions, contiguous (block 0) or paged with its
// blocks in reverse order, as a pool hands them out (spare: an unused
// block 0 below them), its planes zeroed.
struct TestCache {
  KvLayer layer;
  std::vector<int32_t> table;
  std::vector<uint8_t> k, v;
};

TestCache make_cache(DType dtype, int64_t n_kv, int64_t hd, int64_t capacity, int64_t block,
                     bool spare) {
  TestCache t;
  KvLayer& c = t.layer;
  c.dtype = dtype;
  c.n_kv_heads = n_kv;
  c.head_dim = hd;
  c.capacity = capacity;
  int64_t rows = n_kv * capacity;
  if (block > 0) {
    const int64_t n_blocks = (capacity + block - 1) / block;
    for (int64_t b = 0; b < n_blocks; ++b) t.table.push_back(int32_t(n_blocks - 1 - b + spare));
    c.block = block;
    c.blocks = t.table.data();
    rows = (n_blocks + spare) * n_kv * block;
  }
  const size_t elem = dtype == DType::F16 ? 2 : 4;
  t.k.assign(size_t(rows * hd) * elem, 0);
  t.v.assign(t.k.size(), 0);
  c.k = t.k.data();
  c.v = t.v.data();
  return t;
}

class CpuAttention : public ::testing::TestWithParam<Case> {};

TEST_P(CpuAttention, MatchesDirectSoftmax) {
  const Case cs = GetParam();
  const int64_t n_heads = 6, n_kv = 2, hd = 40;
  const int64_t capacity = cs.start + cs.n_tokens;
  std::mt19937 rng(uint32_t(cs.n_tokens * 131 + cs.start * 7 + cs.block));
  std::normal_distribution<float> nd(0.0f, 1.0f);

  TestCache cache = make_cache(cs.dtype, n_kv, hd, capacity, cs.block, true);
  KvLayer& c = cache.layer;
  // What the cache holds, as the kernel will read it (f16-rounded for f16).
  std::vector<double> kref(size_t(n_kv * capacity * hd)), vref(kref.size());
  for (int64_t h = 0; h < n_kv; ++h)
    for (int64_t pos = 0; pos < capacity; ++pos)
      for (int64_t i = 0; i < hd; ++i) {
        const size_t at = size_t(kv_offset(c, h, pos) + i), r = size_t((h * capacity + pos) * hd + i);
        float kv[2] = {nd(rng), nd(rng)};
        for (int m = 0; m < 2; ++m) {
          uint8_t* plane = m == 0 ? cache.k.data() : cache.v.data();
          double& ref = m == 0 ? kref[r] : vref[r];
          if (cs.dtype == DType::F16) {
            const uint16_t bits = f32_to_f16(kv[m]);
            reinterpret_cast<uint16_t*>(plane)[at] = bits;
            ref = f16_to_f32(bits);
          } else {
            reinterpret_cast<float*>(plane)[at] = kv[m];
            ref = kv[m];
          }
        }
      }
  std::vector<float> q(size_t(cs.n_tokens * n_heads * hd));
  for (float& x : q) x = 2.0f * nd(rng);  // peaked softmaxes, so rescaling matters

  AttentionParams p;
  p.n_tokens = cs.n_tokens;
  p.start = cs.start;
  p.n_heads = n_heads;
  p.scale = 1.0f / std::sqrt(float(hd));
  BackendOptions bo;
  bo.threads = 2;
  auto cpu = make_cpu_backend(bo);
  std::vector<float> out(q.size(), NAN);
  cpu->attention(q.data(), c, p, out.data());

  double worst = 0, largest = 0;
  for (int64_t t = 0; t < cs.n_tokens; ++t)
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t kvh = h / (n_heads / n_kv), keys = cs.start + t + 1;
      const float* qv = q.data() + (t * n_heads + h) * hd;
      std::vector<double> s(static_cast<size_t>(keys));
      double mx = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        double d = 0;
        for (int64_t i = 0; i < hd; ++i) d += double(qv[i]) * kref[size_t((kvh * capacity + j) * hd + i)];
        s[size_t(j)] = d * p.scale;
        mx = std::max(mx, s[size_t(j)]);
      }
      double total = 0;
      for (double& x : s) total += (x = std::exp(x - mx));
      for (int64_t i = 0; i < hd; ++i) {
        double want = 0;
        for (int64_t j = 0; j < keys; ++j)
          want += s[size_t(j)] * vref[size_t((kvh * capacity + j) * hd + i)];
        want /= total;
        const double got = out[size_t((t * n_heads + h) * hd + i)];
        ASSERT_TRUE(std::isfinite(got)) << "t " << t << " h " << h << " i " << i;
        worst = std::max(worst, std::fabs(got - want));
        largest = std::max(largest, std::fabs(want));
      }
    }
  EXPECT_LE(worst, 2e-6 * largest) << "worst " << worst << " of " << largest;
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, CpuAttention,
    ::testing::Values(Case{1, 0, 0, DType::F32},     // first decode step
                      Case{1, 200, 0, DType::F32},   // decode over several key steps
                      Case{37, 0, 0, DType::F32},    // a prompt: partial query blocks
                      Case{37, 90, 0, DType::F32},   // a prompt chunk after cached positions
                      Case{1, 150, 32, DType::F32},  // paged decode
                      Case{21, 70, 16, DType::F32},  // paged chunk
                      Case{1, 129, 0, DType::F16},   // f16 cache, decode
                      Case{19, 45, 8, DType::F16})); // f16, paged chunk

// A serving step's batched decode (one op for every sequence) against each
// sequence stored and attended on its own: the same cache writes and the
// same outputs bit for bit (both run the same per-head work unit; only how
// the units are spread over the threads differs). Sequences of very
// different lengths, so the split by keys is uneven; paged and contiguous
// caches, f32 and f16.
void decode_batch_equals_each_alone(int64_t n_heads, int64_t n_kv, int64_t hd);

TEST(CpuAttentionDecodeBatch, EqualsEachSequenceAlone) {
  // Heads of 24 dims (a unit a sequence) and of 128 (a unit a group of
  // query heads sharing a key/value head, 3 of them here).
  for (const auto& [n_heads, n_kv, hd] : {std::tuple<int64_t, int64_t, int64_t>{4, 2, 24},
                                          std::tuple<int64_t, int64_t, int64_t>{6, 2, 128}})
    decode_batch_equals_each_alone(n_heads, n_kv, hd);
}

void decode_batch_equals_each_alone(int64_t n_heads, int64_t n_kv, int64_t hd) {
  const std::vector<int64_t> starts = {0, 1, 63, 64, 300, 5, 129};
  BackendOptions bo;
  bo.threads = 2;
  auto cpu = make_cpu_backend(bo);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (DType dtype : {DType::F32, DType::F16}) {
    const size_t elem = dtype == DType::F16 ? 2 : 4;
    const int64_t n = int64_t(starts.size());
    // Two copies of every cache: one for the batched op, one for the reference.
    std::vector<std::vector<uint8_t>> mem[2][2];  // [copy][k or v][sequence]
    std::vector<std::vector<int32_t>> tables(static_cast<size_t>(n));
    std::vector<KvLayer> caches[2];
    for (int64_t i = 0; i < n; ++i) {
      KvLayer c;
      c.dtype = dtype;
      c.n_kv_heads = n_kv;
      c.head_dim = hd;
      c.capacity = starts[size_t(i)] + 1;
      int64_t rows = n_kv * c.capacity;
      if (i % 2 == 1) {  // paged, blocks in reverse order
        c.block = 16;
        const int64_t n_blocks = (c.capacity + 15) / 16;
        for (int64_t b = 0; b < n_blocks; ++b) tables[size_t(i)].push_back(int32_t(n_blocks - 1 - b));
        c.blocks = tables[size_t(i)].data();
        rows = n_blocks * n_kv * 16;
      }
      std::vector<uint8_t> k(size_t(rows * hd) * elem), v(k.size());
      for (auto* plane : {&k, &v})
        for (size_t e = 0; e < plane->size() / elem; ++e) {
          const float x = nd(rng);
          if (dtype == DType::F16)
            reinterpret_cast<uint16_t*>(plane->data())[e] = f32_to_f16(x);
          else
            reinterpret_cast<float*>(plane->data())[e] = x;
        }
      for (int copy = 0; copy < 2; ++copy) {
        mem[copy][0].push_back(k);
        mem[copy][1].push_back(v);
      }
      for (int copy = 0; copy < 2; ++copy) caches[copy].push_back(c);
    }
    for (int copy = 0; copy < 2; ++copy)
      for (int64_t i = 0; i < n; ++i) {
        caches[copy][size_t(i)].k = mem[copy][0][size_t(i)].data();
        caches[copy][size_t(i)].v = mem[copy][1][size_t(i)].data();
      }
    std::vector<float> q(size_t(n * n_heads * hd)), k(size_t(n * n_kv * hd)), v(k.size());
    for (auto* x : {&q, &k, &v})
      for (float& e : *x) e = 2.0f * nd(rng);

    std::vector<float> got(q.size(), NAN), want(q.size(), NAN);
    cpu->attention_decode_batch(q.data(), k.data(), v.data(), caches[0].data(), starts.data(), n,
                                n_heads, 0.2f, got.data());
    for (int64_t i = 0; i < n; ++i) {
      const KvLayer& c = caches[1][size_t(i)];
      cpu->store_kv(c, k.data() + i * n_kv * hd, v.data() + i * n_kv * hd, 1, starts[size_t(i)]);
      AttentionParams p;
      p.n_tokens = 1;
      p.start = starts[size_t(i)];
      p.n_heads = n_heads;
      p.scale = 0.2f;
      cpu->attention(q.data() + i * n_heads * hd, c, p, want.data() + i * n_heads * hd);
    }
    for (size_t e = 0; e < got.size(); ++e)
      ASSERT_EQ(got[e], want[e]) << "sequence " << e / size_t(n_heads * hd) << ", " << dtype_name(dtype);
    for (int m = 0; m < 2; ++m)
      for (int64_t i = 0; i < n; ++i)
        EXPECT_EQ(mem[0][m][size_t(i)], mem[1][m][size_t(i)]) << "sequence " << i << "'s cache";
  }
}

// A token decoded alone (for heads below 64 dimensions, one unit of all its
// heads) against the same token as one query of a prompt (per-head units of
// up to 16 queries, split over the threads): bit for bit, so that how a
// prompt is chunked, or whether a token is decoded or prefilled, changes
// nothing. Short heads of every width the kernel specialises, one it does
// not (40 dims is a multiple of 8: 72 is not short), paged and contiguous,
// f32 and f16.
struct DecodeCase {
  int64_t head_dim, block;
  DType dtype;
};

class CpuAttentionDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(CpuAttentionDecode, EqualsTheSameQueryInAPrompt) {
  const DecodeCase cs = GetParam();
  const int64_t n_heads = 8, n_kv = 4, hd = cs.head_dim, start = 45, n_tokens = 70;
  const int64_t capacity = start + n_tokens;
  std::mt19937 rng(uint32_t(hd * 17 + cs.block));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  TestCache cache = make_cache(cs.dtype, n_kv, hd, capacity, cs.block, false);
  KvLayer& c = cache.layer;
  BackendOptions bo;
  bo.threads = 2;
  auto cpu = make_cpu_backend(bo);
  std::vector<float> q(size_t(capacity * n_heads * hd)), k(size_t(capacity * n_kv * hd)),
      v(k.size());
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = 2.0f * nd(rng);
  cpu->store_kv(c, k.data(), v.data(), capacity, 0);

  AttentionParams p;
  p.n_heads = n_heads;
  p.scale = 1.0f / std::sqrt(float(hd));
  p.n_tokens = n_tokens;
  p.start = start;
  const int64_t q_row = n_heads * hd;
  std::vector<float> prompt(size_t(n_tokens * q_row), NAN), alone(prompt.size(), NAN);
  cpu->attention(q.data() + start * q_row, c, p, prompt.data());
  p.n_tokens = 1;
  for (int64_t t = 0; t < n_tokens; ++t) {
    p.start = start + t;
    cpu->attention(q.data() + (start + t) * q_row, c, p, alone.data() + t * q_row);
  }
  for (size_t e = 0; e < prompt.size(); ++e)
    ASSERT_EQ(alone[e], prompt[e]) << "token " << e / size_t(q_row) << " head "
                                   << e % size_t(q_row) / size_t(hd);
}

INSTANTIATE_TEST_SUITE_P(
    Heads, CpuAttentionDecode,
    ::testing::Values(DecodeCase{8, 0, DType::F32}, DecodeCase{8, 32, DType::F32},
                      DecodeCase{16, 16, DType::F32}, DecodeCase{24, 0, DType::F16},
                      DecodeCase{32, 32, DType::F32}, DecodeCase{56, 0, DType::F32},
                      DecodeCase{20, 32, DType::F32}, DecodeCase{72, 0, DType::F32},
                      DecodeCase{8, 8, DType::F16}, DecodeCase{128, 32, DType::F32},
                      DecodeCase{128, 0, DType::F16}));

// A paged cache against a contiguous one holding the same rows, bit for
// bit: short heads take 128-key steps whose pages the kernels read in place
// one by one (blocks of 8, 16 and 32 positions), 24-position blocks are
// gathered, and 72-dim heads take 32-key steps; a decode over several
// steps and a prompt chunk that starts mid-step. A block-table mistake is
// an O(1) difference, a changed order of additions a last-bit one.
TEST(CpuAttentionPaged, EqualsAContiguousCacheBitForBit) {
  BackendOptions bo;
  bo.threads = 2;
  auto cpu = make_cpu_backend(bo);
  for (int64_t hd : {8, 32, 40, 72})
    for (int64_t block : {8, 16, 24, 32})
      for (const auto& [n_tokens, start] : {std::pair<int64_t, int64_t>{1, 300}, {21, 150}}) {
        const int64_t n_heads = 4, n_kv = 2, capacity = start + n_tokens;
        std::mt19937 rng(uint32_t(hd * 31 + block * 7 + n_tokens));
        std::normal_distribution<float> nd(0.0f, 1.0f);
        TestCache flat = make_cache(DType::F32, n_kv, hd, capacity, 0, false);
        TestCache paged = make_cache(DType::F32, n_kv, hd, capacity, block, true);
        for (int64_t h = 0; h < n_kv; ++h)
          for (int64_t pos = 0; pos < capacity; ++pos)
            for (int64_t i = 0; i < hd; ++i)
              for (int m = 0; m < 2; ++m) {
                const float x = nd(rng);
                TestCache* caches[2] = {&flat, &paged};
                for (TestCache* t : caches) {
                  uint8_t* plane = m == 0 ? t->k.data() : t->v.data();
                  reinterpret_cast<float*>(plane)[kv_offset(t->layer, h, pos) + i] = x;
                }
              }
        std::vector<float> q(size_t(n_tokens * n_heads * hd));
        for (float& x : q) x = 2.0f * nd(rng);
        AttentionParams p;
        p.n_tokens = n_tokens;
        p.start = start;
        p.n_heads = n_heads;
        p.scale = 1.0f / std::sqrt(float(hd));
        std::vector<float> want(q.size(), NAN), got(q.size(), NAN);
        cpu->attention(q.data(), flat.layer, p, want.data());
        cpu->attention(q.data(), paged.layer, p, got.data());
        for (size_t e = 0; e < got.size(); ++e)
          ASSERT_EQ(got[e], want[e]) << "head_dim " << hd << ", blocks of " << block << ", "
                                     << n_tokens << " tokens, element " << e;
      }
}

}  // namespace
}  // namespace kiln
