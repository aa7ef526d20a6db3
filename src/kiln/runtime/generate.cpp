#include "kiln/runtime/generate.h"

#include <algorithm>
#include <chrono>

#include "kiln/core/error.h"

namespace kiln {

const char* stop_reason_name(GenerateResult::Stop s) {
  switch (s) {
    case GenerateResult::Stop::Length: return "length";
    case GenerateResult::Stop::StopToken: return "stop";
    case GenerateResult::Stop::Cancelled: return "cancelled";
    case GenerateResult::Stop::ContextFull: return "context_full";
  }
  return "?";
}

GenerateResult generate(Model& model, SequenceState& state, const GenerateRequest& req,
                        const TokenCallback& on_token) {
  using clock = std::chrono::steady_clock;
  auto seconds = [](clock::time_point a, clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const int64_t vocab = model.spec().vocab_size;
  KILN_CHECK(!req.prompt.empty() || state.position() > 0, "the prompt is empty");
  KILN_CHECK(state.position() + int64_t(req.prompt.size()) <= state.capacity(), "the prompt (",
             req.prompt.size(), " tokens) does not fit the context of ", state.capacity(),
             " tokens (raise --ctx-size)");

  GenerateResult result;
  result.prompt_tokens = int64_t(req.prompt.size());
  std::vector<float> logits(static_cast<size_t>(vocab));
  std::vector<int32_t> history = req.prompt;
  Sampler sampler(req.sampling);

  auto t0 = clock::now();
  if (!req.prompt.empty())
    model.forward(state, req.prompt.data(), int64_t(req.prompt.size()), logits.data(), false);
  auto t1 = clock::now();
  result.prefill_seconds = seconds(t0, t1);

  for (int i = 0; i < req.max_tokens; ++i) {
    const int32_t next = sampler.sample(logits.data(), vocab, history);
    if (std::find(req.stop_ids.begin(), req.stop_ids.end(), next) != req.stop_ids.end()) {
      result.stop = GenerateResult::Stop::StopToken;
      break;
    }
    result.tokens.push_back(next);
    history.push_back(next);
    if (on_token && !on_token(next)) {
      result.stop = GenerateResult::Stop::Cancelled;
      break;
    }
    if (i + 1 == req.max_tokens) break;
    if (state.position() >= state.capacity()) {
      result.stop = GenerateResult::Stop::ContextFull;
      break;
    }
    model.forward(state, &next, 1, logits.data(), false);
  }
  result.decode_seconds = seconds(t1, clock::now());
  return result;
}

}  // namespace kiln
