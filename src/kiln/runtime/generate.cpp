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
  const int64_t to_feed = req.prefilled_logits ? 0 : int64_t(req.prompt.size());
  KILN_CHECK(state.position() + to_feed <= state.capacity(), "the prompt (",
             req.prompt.size(), " tokens) does not fit the context of ", state.capacity(),
             " tokens (raise --ctx-size)");

  GenerateResult result;
  result.prompt_tokens = int64_t(req.prompt.size());
  // In the backend's host memory (pinned on a GPU): each step's logits are
  // copied from the device straight there, not staged and copied again.
  HostBuffer logits_mem(model.backend(), size_t(vocab) * sizeof(float));
  float* const logits = logits_mem.f32();
  std::vector<int32_t> history = req.prompt;
  Sampler sampler(req.sampling);

  auto t0 = clock::now();
  if (req.prefilled_logits)
    std::copy_n(req.prefilled_logits, vocab, logits);
  else if (!req.prompt.empty())
    model.forward(state, req.prompt.data(), int64_t(req.prompt.size()), logits, false);
  auto t1 = clock::now();
  result.prefill_seconds = seconds(t0, t1);

  // Emits one token; false when generation must stop after it.
  auto emit = [&](int32_t id) {
    result.tokens.push_back(id);
    history.push_back(id);
    if (on_token && !on_token(id)) {
      result.stop = GenerateResult::Stop::Cancelled;
      return false;
    }
    if (int64_t(result.tokens.size()) >= req.max_tokens) return false;
    if (state.position() >= state.capacity()) {
      result.stop = GenerateResult::Stop::ContextFull;
      return false;
    }
    return true;
  };
  // Greedy without penalties: each decode step returns only its pick (on a
  // GPU the logits stay there, and the 600 KB copy of a 151936-token
  // vocabulary and the host's pass over it are skipped), the same token as
  // argmax over the logits.
  const bool pick_on_model = sampler.plain_argmax();
  // Sampled without penalties: where the backend makes a lone row's top-k
  // candidates for less than bringing its logits over (top_k_rows_from()
  // of 1), each step returns those, and the draw is the one sample() makes
  // from the logits.
  const int64_t model_k = pick_on_model ? 0 : sampler.model_top_k(vocab);
  const int64_t top_from =
      req.top_k_rows_from >= 0 ? req.top_k_rows_from : model.backend().top_k_rows_from();
  const bool top_on_model = model_k > 0 && top_from == 1;
  std::vector<Candidate> top;
  bool picked = false, topped = false;
  int32_t pick = 0;
  while (int64_t(result.tokens.size()) < req.max_tokens) {
    std::vector<int32_t> forced;
    if (req.force) forced = req.force(result.tokens);
    int32_t next;
    if (!forced.empty()) {
      // Every forced token but the last is fed here; the last like a sampled one.
      bool go_on = true;
      for (size_t i = 0; i + 1 < forced.size() && go_on; ++i) {
        go_on = emit(forced[i]);
        if (go_on) model.forward(state, &forced[i], 1, nullptr, false);
      }
      if (!go_on) break;
      next = forced.back();
    } else {
      next = picked   ? pick
             : topped ? sampler.sample_candidates(top)
                      : sampler.sample(logits, vocab, history);
      if (std::find(req.stop_ids.begin(), req.stop_ids.end(), next) != req.stop_ids.end()) {
        result.stop = GenerateResult::Stop::StopToken;
        break;
      }
    }
    if (!emit(next)) break;
    if (pick_on_model || top_on_model) {
      BatchItem step;
      step.state = &state;
      step.tokens = &next;
      step.n = 1;
      if (pick_on_model) {
        step.argmax = &pick;
      } else {
        top.resize(size_t(model_k));  // the draw drops NaN entries and cuts to top_k
        step.top = top.data();
        step.top_k = model_k;
      }
      model.forward_batch({step});
      picked = pick_on_model;
      topped = top_on_model;
    } else {
      model.forward(state, &next, 1, logits, false);
    }
  }
  result.decode_seconds = seconds(t1, clock::now());
  return result;
}

}  // namespace kiln
