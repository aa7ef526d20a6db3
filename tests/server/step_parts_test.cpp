// A small model's serving step run as parts, a part of its sequences on each
// thread (Backend::step_parts), against the same step whole on one thread:
// every sequence's logits bit for bit, as batch invariance promises (each
// part is an ordinary step of fewer rows). 32 sequences at different
// positions; a step of decode tokens only, and one with a prompt chunk among
// them (parts of unequal rows); float weights and int8 products (q8_0).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kiln/runtime/engine.h"

namespace kiln {
namespace {

class StepParts : public ::testing::TestWithParam<std::string> {};

TEST_P(StepParts, EachSequenceGetsTheWholeStepsBits) {
  std::vector<std::unique_ptr<Engine>> engines;  // one thread (a whole step), two (parts)
  for (int threads : {1, 2}) {
    LoadOptions lo;
    lo.need_tokenizer = false;
    lo.threads = threads;
    engines.push_back(Engine::load(GetParam(), lo));
    engines.back()->model().backend().set_batch_invariant(true);  // as the scheduler asks
  }
  ASSERT_GT(engines[1]->model().backend().step_parts(32, engines[1]->model().weight_bytes()), 1)
      << "the two-thread run would not split its steps";
  const int64_t V = engines[0]->model().spec().vocab_size;
  constexpr int kSeqs = 32;
  std::vector<std::vector<float>> logits[2];
  for (int e = 0; e < 2; ++e) {
    Model& m = engines[size_t(e)]->model();
    StateOptions so;
    so.context = 128;
    so.max_batch = 64;
    std::vector<std::unique_ptr<SequenceState>> states;
    std::vector<float> scratch(static_cast<size_t>(V));
    for (int s = 0; s < kSeqs; ++s) {  // prompts of 1 to 40 tokens
      states.push_back(m.new_state(so));
      std::vector<int32_t> prompt;
      for (int t = 0; t <= (s * 7) % 40; ++t) prompt.push_back(int32_t((s * 131 + t * 17 + 1) % V));
      m.forward(*states.back(), prompt.data(), int64_t(prompt.size()), scratch.data(), false);
    }
    std::vector<int32_t> tokens(kSeqs), chunk(20);
    for (int s = 0; s < kSeqs; ++s) tokens[size_t(s)] = int32_t((s * 29 + 5) % V);
    for (int t = 0; t < 20; ++t) chunk[size_t(t)] = int32_t((t * 13 + 2) % V);
    for (int step = 0; step < 3; ++step) {
      std::vector<BatchItem> items;
      for (int s = 0; s < kSeqs; ++s) {
        logits[e].emplace_back(static_cast<size_t>(V));
        const bool prompt = step == 1 && s == 3;  // a chunk of 20 more prompt tokens
        items.push_back({states[size_t(s)].get(), prompt ? chunk.data() : &tokens[size_t(s)],
                         prompt ? 20 : 1, logits[e].back().data()});
      }
      m.forward_batch(items);
    }
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  for (size_t i = 0; i < logits[0].size(); ++i)
    ASSERT_EQ(logits[0][i], logits[1][i]) << "step " << i / kSeqs << ", sequence " << i % kSeqs;
}

INSTANTIATE_TEST_SUITE_P(
    Models, StepParts,
    ::testing::Values(std::string(KILN_TEST_DATA) + "/../../models/stories260K.gguf",
                      std::string(KILN_TEST_DATA) + "/hf/qwen3/gguf/qwen3-q8_0.gguf"),
    [](const auto& info) { return info.index == 0 ? std::string("stories260K") : std::string("qwen3_q8_0"); });

}  // namespace
}  // namespace kiln
