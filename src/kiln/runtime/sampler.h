// Turns logits into the next token: penalties on recent tokens, then the
// top-k / top-p / min-p filters, temperature, and a draw from a seeded
// generator (the same seed gives the same tokens). Temperature 0 is greedy.
#pragma once

#include <cstdint>
#include <vector>

#include "kiln/core/argmax.h"
#include "kiln/core/draw.h"
#include "kiln/core/top_k.h"

namespace kiln {

struct SamplingParams {
  float temperature = 0.8f;  // <= 0: greedy
  int top_k = 40;            // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  float min_p = 0.05f;       // <= 0: off
  float repeat_penalty = 1.0f;  // 1: off; divides positive logits of recent tokens
  int repeat_last_n = 64;       // how many recent tokens the penalties look at
  float presence_penalty = 0.0f;   // subtracted once from a recent token's logit
  float frequency_penalty = 0.0f;  // subtracted per occurrence
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // Picks a token from logits[vocab] (modified in place by the penalties),
  // given the tokens of the sequence so far.
  int32_t sample(float* logits, int64_t vocab, const std::vector<int32_t>& history);
  // Whether sample() is argmax(logits): greedy with no penalties, so the
  // choice can be made wherever the logits are (on the device).
  bool plain_argmax() const {
    return params_.temperature <= 0.0f && params_.repeat_penalty == 1.0f &&
           params_.presence_penalty == 0.0f && params_.frequency_penalty == 0.0f;
  }
  const SamplingParams& params() const { return params_; }

  // The most candidates a model step is asked for (Backend::top_k_rows).
  static constexpr int64_t kMaxModelTopK = kDrawMaxTopK;
  // k when sample() depends only on the top-k candidates of the logits as
  // they come (sampled, no penalties, 0 < top-k < vocab, at most
  // kMaxModelTopK), so that the model can hand over those instead of the
  // logits; else 0.
  int64_t model_top_k(int64_t vocab) const;
  // What sample() gives for logits whose top-k candidates are `given`: in
  // any order, at least model_top_k() of them (NaN logits where the row had
  // fewer), as Backend::top_k_rows hands them over. Reorders `given`.
  int32_t sample_candidates(std::vector<Candidate>& given);
  // The next draw, for a backend to make where the logits are
  // (Backend::draw_rows, when model_top_k() > 0): the token sample() would
  // give for the same logits. Counts it, as sample() counts its own.
  DrawSpec next_draw();
  // Takes back the last n draws of next_draw() when their picks went
  // unused (a step launched ahead whose pick gave way to forced tokens), so
  // that the next draw is the one sample() would make.
  void unwind_draws(uint64_t n) { draws_ -= n; }

 private:
  // The filters and the draw, from candidates in by_logit's order.
  int32_t draw(const std::vector<Candidate>& candidates);
  // sample() with top-k off and top-p or min-p on: the draw from as much of
  // the sorted head as the filters keep.
  int32_t sample_head(const float* logits, int64_t vocab);
  SamplingParams params_;
  uint64_t draws_ = 0;  // draws made, this sequence's (each its own random number)
  std::vector<Candidate> candidates_;
  std::vector<float> scratch_;  // sample_head's exps
};

}  // namespace kiln
