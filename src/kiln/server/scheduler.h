// Continuous batching: a fixed set of slots (one KV cache each) and a loop
// that, every step, admits waiting requests into free slots, then runs one
// forward_batch over every running sequence: one decode token each, plus a
// chunk of each prompt still being read, so a long prompt never stalls the
// streams already decoding. A finished slot keeps its cache: a new request
// sharing a prompt head with it (the same system prompt, the previous turn
// of a chat) skips that head.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kiln/model/model.h"
#include "kiln/runtime/sampler.h"

namespace kiln {

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
};

// One generated token as the scheduler hands it out.
struct TokenEvent {
  int32_t id = 0;
  float logprob = 0;                // log-probability under the model (before penalties)
  std::vector<TokenLogprob> top;    // the most likely alternatives, when asked for
};

enum class FinishReason { None, Length, Stop, Cancelled, ContextFull, Error };
const char* finish_reason_name(FinishReason r);

// Limits generation to what a constraint allows (JSON mode). The scheduler
// asks before taking a sampled token and tells it each token taken.
class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  virtual bool allows(int32_t id) const = 0;
  virtual void accept(int32_t id) = 0;
  // The output is complete: generation ends (as if a stop token came).
  virtual bool complete() const = 0;
};

// A request, shared by the HTTP thread that made it and the scheduler.
class Sequence {
 public:
  // --- set before submit()
  std::vector<int32_t> prompt;
  int64_t max_tokens = 256;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;
  int top_logprobs = -1;  // < 0: no logprobs; 0: the chosen token's only
  // Tokens to emit instead of sampling (thinking budget); see GenerateRequest::force.
  std::function<std::vector<int32_t>(const std::vector<int32_t>& generated)> force;
  std::unique_ptr<TokenConstraint> constraint;

  // --- written by the scheduler, read by the requester
  // Blocks until events are ready, the sequence ends or timeout passes.
  // Moves new events into out; returns true once the sequence has finished
  // and every event has been taken.
  bool wait(std::vector<TokenEvent>& out, int timeout_ms);
  FinishReason finish_reason() const;
  std::string error() const;
  int64_t cached_tokens() const { return cached_tokens_; }  // prompt tokens reused
  int64_t generated() const { return generated_count_; }

  // Asks the scheduler to stop this sequence (a disconnect, a stop string).
  void cancel(FinishReason why = FinishReason::Cancelled);
  bool cancelled() const { return cancel_.load(); }

 private:
  friend class Scheduler;
  void push(TokenEvent e);
  void finish(FinishReason r, std::string error = {});

  mutable std::mutex m_;
  std::condition_variable cv_;
  std::vector<TokenEvent> events_;
  bool finished_ = false;
  FinishReason reason_ = FinishReason::None;
  FinishReason cancel_reason_ = FinishReason::Cancelled;
  std::string error_;
  std::atomic<bool> cancel_{false};
  std::atomic<int64_t> cached_tokens_{0};
  std::atomic<int64_t> generated_count_{0};
};

struct SchedulerOptions {
  int slots = 4;               // sequences decoded together
  int64_t context = 4096;      // positions per slot
  int64_t step_tokens = 256;   // most tokens one forward step takes (prefill chunking)
  int max_queue = 64;          // waiting requests beyond the slots; more are refused
  DType kv_dtype = DType::F32;
};

struct SchedulerStats {
  int64_t requests_started = 0, requests_finished = 0;
  int64_t prompt_tokens = 0, cached_prompt_tokens = 0, generated_tokens = 0;
  int64_t steps = 0;
  int active = 0, waiting = 0, slots = 0;
  double busy_seconds = 0;        // time spent in forward steps
  double recent_tokens_per_s = 0; // generated tokens per second over the last few seconds
};

class Scheduler {
 public:
  Scheduler(Model& model, const SchedulerOptions& options);
  ~Scheduler();  // cancels what runs, joins the loop

  // Queues a request. Throws kiln::Error for a request that cannot run (a
  // prompt longer than the context); returns false when the queue is full.
  bool submit(const std::shared_ptr<Sequence>& seq);
  // Stops taking requests; with cancel, ends running ones now.
  void drain(bool cancel);
  // Waits until no request is running or queued, or the timeout passes.
  bool wait_idle(int timeout_ms);
  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Slot {
    std::unique_ptr<SequenceState> state;
    std::vector<int32_t> cached;  // ids whose keys/values the cache holds, in order
    std::shared_ptr<Sequence> seq;
    std::vector<int32_t> pending;  // to feed next (prompt rest, or the last token)
    std::vector<int32_t> history;  // prompt + generated, for the penalties
    std::vector<int32_t> generated;
    std::unique_ptr<Sampler> sampler;
    std::vector<float> logits;
    bool logits_ready = false;  // logits hold the distribution for the next token
    uint64_t last_used = 0;
  };
  void loop();
  void admit(std::unique_lock<std::mutex>& lock);
  void start(Slot& slot, std::shared_ptr<Sequence> seq);
  void release(Slot& slot, FinishReason why, const std::string& error = {});
  void step();
  void sample(Slot& slot);

  Model& model_;
  SchedulerOptions options_;
  std::vector<Slot> slots_;
  mutable std::mutex m_;
  std::condition_variable wake_, idle_;
  std::deque<std::shared_ptr<Sequence>> queue_;
  bool stopping_ = false, draining_ = false;
  SchedulerStats stats_;
  uint64_t clock_ = 0;
  std::deque<std::pair<double, int64_t>> recent_;  // (time, tokens) of recent steps
  std::thread thread_;
};

}  // namespace kiln
