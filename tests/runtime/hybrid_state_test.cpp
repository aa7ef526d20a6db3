// Hybrid models carry a recurrent state: decoding token by token (the O(1)
// recurrent form of the delta rule) must give what one chunked prefill gives,
// and feeding a prompt in pieces that cut through the 64-token chunks must
// too. Tolerance 1e-4 of the largest logit: both forms are exact algebra,
// computed in double inside the op, so they differ by rounding only (the
// inputs, f32, are the same for both).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/core/error.h"
#include "kiln/io/safetensors.h"
#include "kiln/runtime/engine.h"
#include "support/reference.h"

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

std::vector<int32_t> prompt_ids(const std::string& arch) {
  auto ref = SafetensorsModel::open(kData + "/hf/" + arch + "/ref.safetensors");
  return test::read_i32(*ref, "input_ids");
}

class HybridState : public testing::TestWithParam<std::string> {};

TEST_P(HybridState, DecodeMatchesChunkedPrefill) {
  const std::vector<int32_t> ids = prompt_ids(GetParam());
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto engine = Engine::load(kData + "/hf/" + GetParam(), lo);
  Model& model = engine->model();
  const int64_t T = int64_t(ids.size()), V = engine->spec().vocab_size;
  ASSERT_GE(T, 150);
  StateOptions so;
  so.context = T;

  std::vector<float> prefill(size_t(T * V));
  auto a = model.new_state(so);
  model.forward(*a, ids.data(), T, prefill.data(), true);

  std::vector<float> decode(size_t(T * V));
  auto b = model.new_state(so);
  for (int64_t t = 0; t < T; ++t) model.forward(*b, &ids[t], 1, &decode[t * V], false);
  EXPECT_LE(test::max_relative_error(decode, prefill), 1e-4);
  std::printf("[ measured ] %s: decode vs prefill %.3g\n", GetParam().c_str(),
              test::max_relative_error(decode, prefill));

  // Pieces of 37 tokens: chunks restart mid-way with a carried state.
  std::vector<float> pieces(size_t(T * V));
  b->reset();
  for (int64_t t = 0; t < T; t += 37) {
    const int64_t n = std::min<int64_t>(37, T - t);
    model.forward(*b, &ids[t], n, &pieces[t * V], true);
  }
  EXPECT_LE(test::max_relative_error(pieces, prefill), 1e-4);
}

TEST_P(HybridState, LinearLayersDoNotGrowWithContext) {
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto engine = Engine::load(kData + "/hf/" + GetParam(), lo);
  const ModelSpec& s = engine->spec();
  StateOptions small, large;
  small.context = 100;
  large.context = 1100;
  const size_t a = engine->model().new_state(small)->bytes();
  const size_t b = engine->model().new_state(large)->bytes();
  int64_t n_attn = 0;
  for (bool linear : s.layer_is_linear) n_attn += !linear;
  // Only the attention layers' K and V grow: 1000 positions more.
  EXPECT_EQ(b - a, size_t(n_attn * 2 * s.n_kv_heads * s.head_dim * 1000) * sizeof(float));
}

TEST_P(HybridState, TruncateKeepsAllOrNothing) {
  const std::vector<int32_t> ids = prompt_ids(GetParam());
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto engine = Engine::load(kData + "/hf/" + GetParam(), lo);
  StateOptions so;
  so.context = 64;
  auto st = engine->model().new_state(so);
  engine->model().forward(*st, ids.data(), 10, nullptr, false);
  // What the server and chat ask before they cut a cache back to a shared
  // head: only all or nothing is possible.
  EXPECT_TRUE(st->can_truncate(10));
  EXPECT_TRUE(st->can_truncate(0));
  EXPECT_FALSE(st->can_truncate(5));
  EXPECT_NO_THROW(st->truncate(10));
  EXPECT_THROW(st->truncate(5), Error);
  st->truncate(0);
  EXPECT_EQ(st->position(), 0);
}

INSTANTIATE_TEST_SUITE_P(Hf, HybridState, testing::Values("qwen3_5_text", "qwen3_next"));

// The delta rule op alone, on shapes no fixture has: 3 key heads shared by 6
// value heads, odd head dims, a length that leaves a partial last chunk.
// Chunked (one call) against recurrent (one call per token), both head
// orders; tiled order must equal grouped order with value heads permuted.
TEST(DeltaRule, ChunkedMatchesRecurrentOnOtherShapes) {
  auto backend = make_cpu_backend({});
  Backend& b = *backend;
  for (bool tiled : {false, true}) {
    DeltaRuleParams p;
    p.n_k_heads = 3;
    p.n_v_heads = 6;
    p.head_k_dim = 12;
    p.head_v_dim = 10;
    p.tiled_heads = tiled;
    const int64_t T = 157, C = 2 * p.n_k_heads * p.head_k_dim + p.n_v_heads * p.head_v_dim;
    const int64_t state_n = p.n_v_heads * p.head_k_dim * p.head_v_dim;
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> qkv(size_t(T * C)), g(size_t(T * p.n_v_heads)), beta(g.size());
    for (float& x : qkv) x = nd(rng);
    for (float& x : g) x = -std::abs(nd(rng)) * 0.3f;  // log-decays, as the gates make them
    for (float& x : beta) x = 1.0f / (1.0f + std::exp(-nd(rng)));

    std::vector<float> s1(size_t(state_n), 0.0f), s2(size_t(state_n), 0.0f);
    std::vector<float> o1(size_t(T * p.n_v_heads * p.head_v_dim)), o2(o1.size());
    p.n_tokens = T;
    b.gated_delta_rule(qkv.data(), g.data(), beta.data(), s1.data(), p, o1.data());
    p.n_tokens = 1;
    for (int64_t t = 0; t < T; ++t)
      b.gated_delta_rule(&qkv[t * C], &g[t * p.n_v_heads], &beta[t * p.n_v_heads], s2.data(), p,
                         &o2[t * p.n_v_heads * p.head_v_dim]);
    EXPECT_LE(test::max_relative_error(o1, o2), 1e-4) << "tiled " << tiled;
    EXPECT_LE(test::max_relative_error(s1, s2), 1e-4) << "tiled " << tiled;
  }
}

TEST(DeltaRule, ConvStateCarriesAcrossCalls) {
  auto backend = make_cpu_backend({});
  const int64_t T = 9, C = 5, K = 4;
  std::vector<float> x(size_t(T * C)), w(size_t(C * K));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i));
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(float(i));
  std::vector<float> st1(size_t((K - 1) * C), 0.0f), st2 = st1, o1(x.size()), o2(x.size());
  backend->conv1d_silu(x.data(), T, C, w.data(), K, st1.data(), o1.data());
  backend->conv1d_silu(x.data(), 2, C, w.data(), K, st2.data(), o2.data());
  backend->conv1d_silu(&x[2 * C], T - 2, C, w.data(), K, st2.data(), &o2[2 * C]);
  for (size_t i = 0; i < o1.size(); ++i) EXPECT_FLOAT_EQ(o1[i], o2[i]) << i;
  EXPECT_EQ(st1, st2);
}

}  // namespace
}  // namespace kiln
