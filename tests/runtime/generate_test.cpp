// The model hands back less than the logits where a sampler allows: a
// greedy step's pick (generate() asks for it), a sampled step's top-k
// candidates (the server asks for them). Each must give what the logits
// give: the same tokens, seed for seed, and the same candidates.
// (tests/cuda/golden_test.cpp: generate() on the GPU.)
#include <gtest/gtest.h>

#include <cctype>
#include <string>
#include <vector>

#include "kiln/core/draw.h"
#include "kiln/core/error.h"
#include "kiln/core/top_k.h"
#include "kiln/runtime/engine.h"
#include "support/sampled_generation.h"

namespace kiln {
namespace {

const std::string kData = KILN_TEST_DATA;

std::unique_ptr<Engine> load_on_cpu(const std::string& model) {
  LoadOptions lo;
  lo.need_tokenizer = false;
  lo.force_cpu = true;
  return Engine::load(kData + "/" + model, lo);
}

// n sequences fed the same prompt, and one decode step's items feeding each
// the same token: rows of one step with the same inputs have the same
// logits, so what each item brings back can be checked against one row's.
struct FedAlike {
  std::vector<std::unique_ptr<SequenceState>> states;
  std::vector<BatchItem> items;
  const int32_t token = 3;

  FedAlike(Model& model, int n) {  // (items point at token: not copied)
    const std::vector<int32_t> prompt = {1, 5, 9, 13, 2, 7};
    StateOptions so;
    so.context = 16;
    for (int i = 0; i < n; ++i) {
      states.push_back(model.new_state(so));
      model.forward(*states.back(), prompt.data(), int64_t(prompt.size()), nullptr, false);
      BatchItem it;
      it.state = states.back().get();
      it.tokens = &token;
      it.n = 1;
      items.push_back(it);
    }
  }
};

class GenerateOnTheModel : public testing::TestWithParam<std::string> {};

TEST_P(GenerateOnTheModel, DrawsEqualDrawsFromTheLogits) {
  test::expect_generate_equals_sampling_logits(load_on_cpu(GetParam())->model(), GetParam());
}

// Decoding ahead runs on the CPU too (each step completes as it is
// called): what it feeds, draws, undoes and stops on, as the GPU does.
TEST_P(GenerateOnTheModel, DecodingAheadEqualsWaitingForEachStep) {
  auto engine = load_on_cpu(GetParam());
  SamplingParams greedy, sampled;
  greedy.temperature = 0.0f;
  sampled.seed = 7;  // temperature 0.8, top-k 40, top-p 0.95, min-p 0.05
  test::expect_decoding_ahead_equals_waiting(engine->model(), GetParam() + ", greedy", greedy);
  test::expect_decoding_ahead_equals_waiting(engine->model(), GetParam() + ", sampled", sampled);
}

// One decode step of four sequences fed alike: one brings back its logits,
// one its pick, two their top-k candidates (40 and a narrower 5, which the
// step widens to 40 and cuts back); each answer must be what those logits
// give.
TEST_P(GenerateOnTheModel, StepCandidatesAreTheHeadOfItsLogits) {
  auto engine = load_on_cpu(GetParam());
  Model& model = engine->model();
  const int64_t vocab = model.spec().vocab_size;
  FedAlike step(model, 4);
  std::vector<BatchItem>& items = step.items;
  std::vector<float> logits(static_cast<size_t>(vocab));
  int32_t pick = -1;
  std::vector<Candidate> top40(40), top5(5);
  items[0].logits = logits.data();
  items[1].argmax = &pick;
  items[2].top = top40.data();
  items[2].top_k = 40;
  items[3].top = top5.data();
  items[3].top_k = 5;
  model.forward_batch(items);
  EXPECT_EQ(pick, argmax(logits.data(), vocab));
  std::vector<Candidate> want;
  for (auto* got : {&top40, &top5}) {
    top_k_candidates(logits.data(), vocab, got->size(), want);
    sort_candidates(*got);
    ASSERT_EQ(got->size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ((*got)[i].second, want[i].second) << GetParam() << " rank " << i;
      EXPECT_EQ((*got)[i].first, want[i].first) << GetParam() << " rank " << i;
    }
  }
}

// One decode step of four sequences fed alike, one bringing back its logits
// and three their picks drawn by the model, each with its own draw (seed,
// index, top-k): each pick must be the token drawn from those logits. A
// step mixing drawn and greedy picks is refused.
TEST_P(GenerateOnTheModel, StepDrawsAreTheDrawsFromItsLogits) {
  auto engine = load_on_cpu(GetParam());
  Model& model = engine->model();
  const int64_t vocab = model.spec().vocab_size;
  FedAlike step(model, 5);
  std::vector<BatchItem>& items = step.items;
  std::vector<float> logits(static_cast<size_t>(vocab));
  int32_t picks[3] = {-1, -1, -1};
  DrawSpec draws[3];
  draws[0].seed = 1;
  draws[1].seed = 2, draws[1].index = 5, draws[1].top_k = 3, draws[1].temperature = 2.0f;
  draws[2].seed = 3, draws[2].index = 9, draws[2].top_p = 1.0f, draws[2].min_p = 0.0f;
  items[0].logits = logits.data();
  for (int i = 0; i < 3; ++i) {
    items[size_t(i) + 1].argmax = &picks[i];
    items[size_t(i) + 1].draw = &draws[i];
  }
  BatchItem greedy = items[4];  // for the mixed step below
  items.pop_back();
  model.forward_batch(items);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(picks[i], draw_from_logits(logits.data(), vocab, draws[i])) << GetParam() << " " << i;

  int32_t greedy_pick = -1;
  greedy.argmax = &greedy_pick;
  EXPECT_THROW(model.forward_batch({items[1], greedy}), Error) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Models, GenerateOnTheModel,
                         testing::Values("../../models/stories260K.gguf", "hf/qwen3",
                                         "hf/qwen3_5_text", "hf/bitnet"),
                         [](const testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param.substr(info.param.rfind('/') + 1);
                           for (char& c : s)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return s;
                         });

}  // namespace
}  // namespace kiln
