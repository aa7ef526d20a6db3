// The reference for generate()'s shortcuts (a greedy step's pick, a
// sampled step's top-k candidates, made by the model): every step's logits
// brought to the host and sampled there, the plain loop.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kiln/model/model.h"
#include "kiln/runtime/generate.h"
#include "kiln/runtime/sampler.h"

namespace kiln::test {

// The tokens of the plain loop: every step's logits to the host, sampled there.
inline std::vector<int32_t> sampled_from_logits(Model& model, const std::vector<int32_t>& prompt,
                                         const SamplingParams& sp, int n) {
  StateOptions so;
  so.context = int64_t(prompt.size()) + n + 1;
  auto state = model.new_state(so);
  const int64_t vocab = model.spec().vocab_size;
  std::vector<float> logits(static_cast<size_t>(vocab));
  model.forward(*state, prompt.data(), int64_t(prompt.size()), logits.data(), false);
  Sampler sampler(sp);
  std::vector<int32_t> history = prompt, out;
  for (int i = 0; i < n; ++i) {
    const int32_t next = sampler.sample(logits.data(), vocab, history);
    out.push_back(next);
    history.push_back(next);
    if (i + 1 < n) model.forward(*state, &next, 1, logits.data(), false);
  }
  return out;
}

// generate()'s tokens for the same prompt and sampling, from a fresh state;
// top_from as GenerateRequest::top_k_rows_from, ahead as its decode_ahead.
inline std::vector<int32_t> generated(Model& model, const std::vector<int32_t>& prompt,
                                      const SamplingParams& sp, int n, int64_t top_from,
                                      int ahead = 0) {
  StateOptions so;
  so.context = int64_t(prompt.size()) + n + 1;
  auto state = model.new_state(so);
  GenerateRequest req;
  req.prompt = prompt;
  req.max_tokens = n;
  req.sampling = sp;
  req.top_k_rows_from = top_from;
  req.decode_ahead = ahead;
  return generate(model, *state, req, nullptr).tokens;
}

// The settings the comparisons run: greedy (the pick), sampled with top-k,
// top-k off, and a penalty (the logits); two seeds each.
inline std::vector<SamplingParams> sampling_settings() {
  struct Setting {
    float temperature;
    int top_k;
    float repeat_penalty;
  };
  std::vector<SamplingParams> out;
  for (const Setting& set : {Setting{0.0f, 40, 1.0f}, Setting{0.8f, 40, 1.0f},
                             Setting{1.5f, 5, 1.0f}, Setting{1.0f, 0, 1.0f},
                             Setting{0.8f, 40, 1.3f}})
    for (uint64_t seed : {uint64_t(1), uint64_t(7)}) {
      SamplingParams sp;
      sp.temperature = set.temperature;
      sp.top_k = set.top_k;
      sp.repeat_penalty = set.repeat_penalty;
      sp.seed = seed;
      out.push_back(sp);
    }
  return out;
}

// generate() against the plain loop for every setting, on a fixed prompt,
// its sampled steps bringing back their logits, then their candidates, then
// decoding ahead (each pick drawn by the model, where the setting allows).
inline void expect_generate_equals_sampling_logits(Model& model, const std::string& label) {
  const std::vector<int32_t> prompt = {1, 5, 9, 13, 2, 7};
  const int n = 24;
  for (const SamplingParams& sp : sampling_settings()) {
    const std::vector<int32_t> want = sampled_from_logits(model, prompt, sp, n);
    const auto setting = [&] {
      return label + " temperature " + std::to_string(sp.temperature) + " top-k " +
             std::to_string(sp.top_k) + " penalty " + std::to_string(sp.repeat_penalty) +
             " seed " + std::to_string(sp.seed);
    };
    for (int64_t top_from : {int64_t(0), int64_t(1)})
      EXPECT_EQ(generated(model, prompt, sp, n, top_from), want)
          << setting() << " candidates from " << top_from;
    EXPECT_EQ(generated(model, prompt, sp, n, 0, /*ahead=*/1), want) << setting() << " ahead";
  }
}

// Decoding ahead (GenerateRequest::decode_ahead), greedy and sampled (the
// model drawing each pick), against each step waited for: the same tokens,
// the same stop, the state at the same position, and a next turn on that
// state the same, when generation runs to its length, meets a stop token
// (the step launched for it undone), is cancelled by the caller, fills the
// context, and has tokens forced into it (the pick in flight dropped).
inline void expect_decoding_ahead_equals_waiting(Model& model, const std::string& label,
                                                 const SamplingParams& sampling) {
  const std::vector<int32_t> prompt = {1, 5, 9, 13, 2, 7};
  const int n = 24;
  struct Run {
    std::vector<int32_t> tokens, next_turn;
    GenerateResult::Stop stop;
    int64_t position;
  };
  const auto fresh_state = [&](int64_t context) {
    StateOptions so;
    so.context = context;
    return model.new_state(so);
  };
  const auto request = [&](int ahead) {
    GenerateRequest req;
    req.prompt = prompt;
    req.max_tokens = n;
    req.sampling = sampling;
    req.decode_ahead = ahead;
    return req;
  };
  // One generation, then a second turn of four tokens on the same state.
  // forced: two tokens forced after the fourth, one after the ninth (as a
  // thinking budget closes a thought).
  const auto run = [&](int ahead, int64_t context, const std::vector<int32_t>& stop_ids,
                       int cancel_at, bool forced = false) {
    auto state = fresh_state(context);
    GenerateRequest req = request(ahead);
    req.stop_ids = stop_ids;
    if (forced)
      req.force = [](const std::vector<int32_t>& g) -> std::vector<int32_t> {
        if (g.size() == 4) return {11, 12};
        if (g.size() == 9) return {13};
        return {};
      };
    int seen = 0;
    const GenerateResult r =
        generate(model, *state, req, [&](int32_t) { return ++seen != cancel_at; });
    Run out{r.tokens, {}, r.stop, state->position()};
    if (state->position() + 5 <= state->capacity()) {
      GenerateRequest turn;
      turn.prompt = {3};
      turn.max_tokens = 4;
      turn.sampling = sampling;
      turn.decode_ahead = ahead;
      out.next_turn = generate(model, *state, turn, nullptr).tokens;
    }
    return out;
  };
  const int64_t roomy = int64_t(prompt.size()) + n + 8;
  const Run plain = run(0, roomy, {}, 0);
  ASSERT_EQ(plain.tokens.size(), size_t(n)) << label;
  const int32_t stop_id = plain.tokens[5];
  struct Case {
    const char* name;
    int64_t context;
    std::vector<int32_t> stop_ids;
    int cancel_at;
    bool forced;
  };
  for (const Case& c :
       {Case{"length", roomy, {}, 0, false}, Case{"stop token", roomy, {stop_id}, 0, false},
        Case{"cancelled", roomy, {}, 7, false},
        Case{"context full", int64_t(prompt.size()) + 10, {}, 0, false},
        Case{"forced tokens", roomy, {}, 0, true},
        Case{"forced tokens, context full", int64_t(prompt.size()) + 10, {}, 0, true}}) {
    const Run want = run(0, c.context, c.stop_ids, c.cancel_at, c.forced);
    const Run got = run(1, c.context, c.stop_ids, c.cancel_at, c.forced);
    EXPECT_EQ(got.tokens, want.tokens) << label << ", " << c.name;
    EXPECT_EQ(int(got.stop), int(want.stop)) << label << ", " << c.name;
    EXPECT_EQ(got.position, want.position) << label << ", " << c.name;
    EXPECT_EQ(got.next_turn, want.next_turn) << label << ", " << c.name;
  }
  // A caller that throws mid-generation: the steps in flight are waited for
  // as it unwinds (they write their picks into generate()'s frame), and the
  // backend goes on as before.
  {
    auto state = fresh_state(roomy);
    int seen = 0;
    EXPECT_THROW(generate(model, *state, request(1),
                          [&](int32_t) -> bool {
                            if (++seen == 7) throw std::runtime_error("caller's error");
                            return true;
                          }),
                 std::runtime_error)
        << label;
    EXPECT_EQ(run(1, roomy, {}, 0).tokens, plain.tokens) << label << ", after a throw";
  }
}

}  // namespace kiln::test
