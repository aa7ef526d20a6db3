// Turns logits into the next token: penalties on recent tokens, then the
// top-k / top-p / min-p filters, temperature, and a draw from a seeded
// generator (the same seed gives the same tokens). Temperature 0 is greedy.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kiln/core/argmax.h"

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

using Candidate = std::pair<float, int32_t>;  // a logit and its token id

// The k candidates of logits[0, vocab) with the highest logits (the lower
// id first among equal ones; NaNs never), sorted that way, into out: a
// sort of the whole vocabulary's head, made without sorting it.
void top_k_candidates(const float* logits, int64_t vocab, size_t k, std::vector<Candidate>& out);

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

 private:
  double uniform();  // [0, 1), the same sequence on every platform
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<Candidate> candidates_;
};

}  // namespace kiln
