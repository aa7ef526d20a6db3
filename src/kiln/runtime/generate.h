// The generation loop: prefill the prompt as one batch, then decode one
// token at a time with the KV cache, sampling each next token, until a stop
// token, the token limit, or the caller says stop.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kiln/model/model.h"
#include "kiln/runtime/sampler.h"

namespace kiln {

struct GenerateRequest {
  std::vector<int32_t> prompt;
  int max_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // generating one of these ends the turn (it is not returned)
  // Called before each token is chosen, with the tokens generated so far.
  // Tokens it returns are emitted (and fed to the model) instead of a sampled
  // one: how a thinking budget closes the thought. Counted in max_tokens.
  std::function<std::vector<int32_t>(const std::vector<int32_t>& generated)> force;
  // The prompt was already fed (a multimodal prefill): start sampling from
  // these logits [vocab] instead of running `prompt` through the model.
  const float* prefilled_logits = nullptr;
  // A sampled step (no penalties) brings back its top-k candidates rather
  // than its logits when this is 1 (Sampler::model_top_k); 0: never; -1:
  // when the backend says a lone row's are worth it (Backend::top_k_rows_from).
  int64_t top_k_rows_from = -1;
  // Decoding with no penalties, greedy or sampled with a top-k the model
  // can draw from (Sampler::model_top_k), launches each step before the
  // pick of the one in flight is known on the host, fed that pick where it
  // was made (Backend::step_ahead; a sampled pick drawn there,
  // Backend::draw_rows), when this is 1; 0: never; -1: where the backend
  // gains by it (Backend::decodes_ahead). Models whose state cannot drop
  // its last position (the hybrids' recurrent state) never do: a step
  // launched past a stop token is undone. Forced tokens (force) drop the
  // pick of the step in flight.
  int decode_ahead = -1;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, stop token excluded
  enum class Stop { Length, StopToken, Cancelled, ContextFull } stop = Stop::Length;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

// Called with each generated token; return false to stop.
using TokenCallback = std::function<bool(int32_t token)>;

// Continues `state` (which may already hold earlier turns) with the prompt,
// then generates.
GenerateResult generate(Model& model, SequenceState& state, const GenerateRequest& request,
                        const TokenCallback& on_token);

const char* stop_reason_name(GenerateResult::Stop s);

}  // namespace kiln
