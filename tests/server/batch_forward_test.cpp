// Model::forward_batch against forward(): several sequences at different
// positions, prompt chunks and single decode tokens mixed in one step, must
// give the logits each sequence gets alone and leave the caches as forward()
// would. Tolerance: 1e-4 of the largest |logit|, and the same greedy token:
// a product over more rows may take a tiled kernel whose sums round
// differently, nothing more.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kiln/core/error.h"
#include "kiln/runtime/engine.h"
#include "kiln/runtime/sampler.h"

namespace kiln {
namespace {

struct Case {
  const char* name;
  std::string path;
};

class BatchForward : public ::testing::TestWithParam<Case> {};

std::vector<int32_t> ids(int64_t n, int64_t vocab, int salt) {
  std::vector<int32_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(int32_t((i * 37 + salt * 101 + 3) % vocab));
  return v;
}

TEST_P(BatchForward, EqualsOneSequenceAtATime) {
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto engine = Engine::load(GetParam().path, lo);
  Model& m = engine->model();
  const int64_t V = m.spec().vocab_size;
  StateOptions so;
  so.context = 256;
  so.max_batch = 64;

  // Three sequences: prompts of 40, 7 and 90 tokens, then 3 decode tokens each.
  const std::vector<std::vector<int32_t>> prompts = {ids(40, V, 1), ids(7, V, 2), ids(90, V, 3)};
  const std::vector<int32_t> decode = {5, 9, 11};
  // Reference: each alone.
  std::vector<std::vector<float>> ref;  // logits after the prompt, then after each decode token
  for (size_t s = 0; s < prompts.size(); ++s) {
    auto st = m.new_state(so);
    std::vector<float> l(static_cast<size_t>(V));
    m.forward(*st, prompts[s].data(), int64_t(prompts[s].size()), l.data(), false);
    ref.push_back(l);
    for (int32_t t : decode) {
      m.forward(*st, &t, 1, l.data(), false);
      ref.push_back(l);
    }
  }

  // Batched: the long prompt in chunks of 30 while the others decode.
  std::vector<std::unique_ptr<SequenceState>> states;
  for (size_t s = 0; s < 3; ++s) states.push_back(m.new_state(so));
  std::vector<std::vector<float>> got(ref.size(), std::vector<float>(size_t(V)));
  auto at = [&](size_t seq, size_t k) { return got[seq * 4 + k].data(); };
  // step 1: prompt 0 whole, prompt 1 whole, first 30 of prompt 2
  m.forward_batch({{states[0].get(), prompts[0].data(), 40, at(0, 0)},
                   {states[1].get(), prompts[1].data(), 7, at(1, 0)},
                   {states[2].get(), prompts[2].data(), 30, nullptr}});
  // steps 2-4: decode tokens for 0 and 1; the rest of prompt 2 in chunks
  for (int k = 0; k < 3; ++k) {
    std::vector<BatchItem> items = {{states[0].get(), &decode[k], 1, at(0, k + 1)},
                                    {states[1].get(), &decode[k], 1, at(1, k + 1)}};
    if (k < 2)
      items.push_back({states[2].get(), prompts[2].data() + 30 + 30 * k, 30,
                       k == 1 ? at(2, 0) : nullptr});
    m.forward_batch(items);
  }
  for (int k = 0; k < 3; ++k) m.forward_batch({{states[2].get(), &decode[k], 1, at(2, k + 1)}});

  for (size_t i = 0; i < ref.size(); ++i) {
    float scale = 0, diff = 0;
    for (int64_t v = 0; v < V; ++v) {
      scale = std::max(scale, std::fabs(ref[i][size_t(v)]));
      diff = std::max(diff, std::fabs(ref[i][size_t(v)] - got[i][size_t(v)]));
    }
    EXPECT_LE(diff, 1e-4f * scale) << "sequence " << i / 4 << ", step " << i % 4;
    EXPECT_EQ(argmax(ref[i].data(), V), argmax(got[i].data(), V)) << "sequence " << i / 4;
  }
  EXPECT_EQ(states[0]->position(), 43);
  EXPECT_EQ(states[1]->position(), 10);
  EXPECT_EQ(states[2]->position(), 93);
}

TEST_P(BatchForward, RejectsWhatForwardRejects) {
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto engine = Engine::load(GetParam().path, lo);
  Model& m = engine->model();
  StateOptions so;
  so.context = 8;
  auto st = m.new_state(so);
  std::vector<int32_t> too_long(9, 1);
  EXPECT_THROW(m.forward_batch({{st.get(), too_long.data(), 9, nullptr}}), Error);
  const int32_t bad = int32_t(m.spec().vocab_size);
  EXPECT_THROW(m.forward_batch({{st.get(), &bad, 1, nullptr}}), Error);
}

const std::string kData = KILN_TEST_DATA;
INSTANTIATE_TEST_SUITE_P(
    Models, BatchForward,
    ::testing::Values(Case{"stories260K", std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf"},
                      Case{"qwen3", kData + "/hf/qwen3"}, Case{"qwen3_moe", kData + "/hf/qwen3_moe"},
                      Case{"smollm3", kData + "/hf/smollm3"},
                      Case{"qwen3_5_text", kData + "/hf/qwen3_5_text"},
                      Case{"qwen3_next", kData + "/hf/qwen3_next"},
                      Case{"bitnet", kData + "/hf/bitnet"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kiln
