#include "kiln/runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <exception>

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

  // Emits one token; false when generation must stop after it. fed: the
  // positions the state holds, not counting a step launched ahead of it.
  auto emit = [&](int32_t id, int64_t fed) {
    result.tokens.push_back(id);
    history.push_back(id);
    if (on_token && !on_token(id)) {
      result.stop = GenerateResult::Stop::Cancelled;
      return false;
    }
    if (int64_t(result.tokens.size()) >= req.max_tokens) return false;
    if (fed >= state.capacity()) {
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
  Backend& backend = model.backend();
  const int64_t top_from =
      req.top_k_rows_from >= 0 ? req.top_k_rows_from : backend.top_k_rows_from();
  const bool top_on_model = model_k > 0 && top_from == 1;
  // Whether a token ends the turn (it is not returned).
  auto is_stop = [&](int32_t id) {
    return std::find(req.stop_ids.begin(), req.stop_ids.end(), id) != req.stop_ids.end();
  };
  // A decode step of one token (null: the pick of the step in flight) that
  // brings back no logits; the caller says what it brings back instead.
  auto one_token_step = [&](const int32_t* token) {
    BatchItem step;
    step.state = &state;
    step.tokens = token;
    step.n = 1;
    return step;
  };
  const bool ahead = (pick_on_model || model_k > 0) &&
                     (req.decode_ahead >= 0 ? req.decode_ahead == 1 : backend.decodes_ahead()) &&
                     state.position() > 0 && state.can_truncate(state.position() - 1);

  // Decoding ahead, from `first` (emitted, not yet fed): the step fed each
  // pick is launched before that pick reaches the host, while the step that
  // makes it is still running, wherever it would be needed unless the pick
  // ends generation (a stop token, the caller cancelling); such a step is
  // then waited for and undone. So the same tokens come out, and the state
  // ends where it would have, as when each step waits. A sampled pick is
  // drawn by the model with the sampler's next draw: the token sample()
  // would draw from the same logits (an undone step's draw is never used).
  // Where the caller forces tokens (req.force, asked before each token as
  // when waiting), the pick of the step in flight gives way to them: that
  // step was fed the last token, as it would have been, and only its pick
  // and its draw are dropped. Returns those forced tokens, for the caller
  // to feed before decoding ahead again; none when generation has ended.
  auto decode_ahead = [&](int32_t first) -> std::vector<int32_t> {
    int32_t picks[2] = {0, 0};
    int slot = 0;
    auto launch = [&](const int32_t* token, int32_t* pick) {
      BatchItem step = one_token_step(token);
      step.argmax = pick;
      DrawSpec draw;
      if (!pick_on_model) {
        draw = sampler.next_draw();
        step.draw = &draw;
      }
      backend.step_ahead();
      model.forward_batch({step});
    };
    // A step in flight copies its pick into `picks` when it is awaited: none
    // may be left in flight when this returns or throws.
    struct AwaitOnUnwind {
      Backend& b;
      ~AwaitOnUnwind() {
        if (std::uncaught_exceptions() == 0) return;
        for (int i = 0; i < 2; ++i) {  // at most two in flight
          try {
            b.await_step();
          } catch (...) {
          }
        }
      }
    } await_on_unwind{backend};
    launch(&first, &picks[0]);
    for (;;) {
      // One step is in flight here: the one fed the last token emitted.
      if (req.force) {
        std::vector<int32_t> forced = req.force(result.tokens);
        if (!forced.empty()) {
          backend.await_step();
          if (!pick_on_model) sampler.unwind_draws(1);
          return forced;
        }
      }
      const bool more = int64_t(result.tokens.size()) + 1 < req.max_tokens &&
                        state.position() < state.capacity();
      if (more) launch(nullptr, &picks[slot ^ 1]);
      backend.await_step();
      const int32_t next = picks[slot];
      slot ^= 1;
      bool go_on = false;
      if (is_stop(next))
        result.stop = GenerateResult::Stop::StopToken;
      else
        go_on = emit(next, state.position() - (more ? 1 : 0));
      if (go_on && more) continue;
      if (more) {  // launched for a pick that ended generation
        backend.await_step();
        const int64_t fed = state.position() - 1;
        state.truncate(fed);
        KILN_CHECK(state.position() == fed, "a step decoded ahead could not be undone");
      }
      return {};
    }
  };
  std::vector<Candidate> top;
  bool picked = false, topped = false;
  int32_t pick = 0;
  std::vector<int32_t> forced_ahead;  // asked for while decoding ahead, not yet fed
  while (int64_t(result.tokens.size()) < req.max_tokens) {
    std::vector<int32_t> forced;
    if (!forced_ahead.empty())
      forced.swap(forced_ahead);
    else if (req.force)
      forced = req.force(result.tokens);
    int32_t next;
    if (!forced.empty()) {
      // Every forced token but the last is fed here; the last like a sampled one.
      bool go_on = true;
      for (size_t i = 0; i + 1 < forced.size() && go_on; ++i) {
        go_on = emit(forced[i], state.position());
        if (go_on) model.forward(state, &forced[i], 1, nullptr, false);
      }
      if (!go_on) break;
      next = forced.back();
    } else {
      next = picked   ? pick
             : topped ? sampler.sample_candidates(top)
                      : sampler.sample(logits, vocab, history);
      if (is_stop(next)) {
        result.stop = GenerateResult::Stop::StopToken;
        break;
      }
    }
    if (!emit(next, state.position())) break;
    if (ahead) {
      forced_ahead = decode_ahead(next);
      if (forced_ahead.empty()) break;
      continue;
    }
    if (pick_on_model || top_on_model) {
      BatchItem step = one_token_step(&next);
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
