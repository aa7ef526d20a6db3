// Continuous batching: a fixed set of slots and a loop that, every step,
// admits waiting requests into free slots, then runs one forward_batch over
// every running sequence: one decode token each, plus a chunk of each prompt
// still being read, so a long prompt never stalls the streams already
// decoding.
//
// Where the backend pages KV caches (the CPU), the slots' attention caches
// take fixed-size blocks from one pool as they grow, so memory follows the
// tokens actually held, not slots x context. A finished slot keeps its
// blocks until the pool runs short: a new request whose prompt begins like
// a cached sequence (the same system prompt, the previous turn of a chat) skips that
// head, sharing the donor's blocks when the donor is another slot. When the
// pool runs out, idle caches go first (least recently used), then the
// youngest running sequence is preempted: its blocks are freed and its
// tokens recomputed once there is room again (its output does not change).
#pragma once

#include <atomic>
#include <chrono>
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

#include "kiln/core/thread_pool.h"
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
  // and every event has been taken. With pace_us > 0, events are taken at
  // most once per pace_us (neither the first take nor the end is held
  // back): a small model's steps take a few hundred microseconds, and a
  // requester that woke for every token spent more of the cores switching
  // threads than the model took.
  bool wait(std::vector<TokenEvent>& out, int timeout_ms, int pace_us = 0);
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
  std::chrono::steady_clock::time_point last_taken_{};  // wait's last take of events
  bool resting_ = false;  // a paced wait sleeping until its pace is over
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
  // Paged KV caches (backends that have them): positions per block, and
  // positions in the shared pool (0 = slots x context, so no sequence ever
  // waits; fewer lets many slots share a smaller budget, at least context).
  int64_t kv_block = 32;
  int64_t kv_positions = 0;
  // Bytes of weights the backend may keep packed for batched steps
  // (Backend::keep_weight_tiles; the serve plan's weight_tiles_bytes).
  size_t weight_tiles_bytes = 0;
  // The fewest sampled sequences in a step for which the step brings back
  // their top-k candidates rather than their logits (Sampler::model_top_k);
  // 0: never; -1: the backend's choice (Backend::top_k_rows_from).
  int64_t top_k_rows_from = -1;
};

struct SchedulerStats {
  int64_t requests_started = 0, requests_finished = 0;
  int64_t prompt_tokens = 0, cached_prompt_tokens = 0, generated_tokens = 0;
  int64_t steps = 0;
  int active = 0, waiting = 0, slots = 0;
  // Paged KV pool (zero without one): blocks in it and in use, and the
  // sequences preempted (recomputed later) because it ran out.
  int64_t kv_blocks = 0, kv_blocks_used = 0, kv_block_positions = 0;
  int64_t preemptions = 0, shared_prefix_tokens = 0;
  double busy_seconds = 0;        // time spent in forward steps
  double sample_seconds = 0;      // time spent choosing and emitting tokens after them
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
    HostBuffer logits;  // [vocab], where the model's step puts this slot's logits
    // Greedy requests without penalties, logprobs or a constraint: the step
    // brings back only the largest logit's index, here (picked: it did).
    int32_t pick = -1;
    bool picked = false;
    // Sampled requests of the same kind whose draw needs only the top-k
    // candidates (Sampler::model_top_k): the step brings back those, here
    // (topped: it did), not the logits.
    std::vector<Candidate> top;
    bool topped = false;
    bool logits_ready = false;  // logits hold the distribution for the next token
    bool recomputing = false;   // preempted: pending re-feeds what the cache lost
    uint64_t last_used = 0;
    uint64_t admitted = 0;      // admission order: the youngest is preempted first
    bool decoding() const { return seq && !generated.empty() && !recomputing && !pending.empty(); }
    bool prefilling() const { return seq && (generated.empty() || recomputing) && !pending.empty(); }
  };
  void loop();
  void admit(std::unique_lock<std::mutex>& lock);
  void start(Slot& slot, std::shared_ptr<Sequence> seq);
  void release(Slot& slot, FinishReason why, const std::string& error = {});
  void step();
  // A slot's next token from its last step's logits, in two halves: choose
  // reads only the slot and its request (so a step's slots choose in
  // parallel), commit emits it and ends the request where it ends.
  struct Choice {
    std::vector<int32_t> forced;  // tokens the request forces instead of a draw
    int32_t id = -1;              // -1 (nothing forced): the constraint allows no token
    float logprob = 0;
    std::vector<TokenLogprob> top;
  };
  Choice choose(Slot& slot) const;
  void commit(Slot& slot, Choice choice);
  // --- paged KV pool
  // Takes the longest head of prompt that another slot's cache holds, in
  // whole blocks, when it is longer than what the slot kept of its own.
  void share_from_donor(Slot& slot, const std::vector<int32_t>& prompt);
  // Frees blocks until `need` are free: idle caches first (least recently
  // used), then running sequences from the youngest, dropping preempted ones
  // from decoders; never keep or a sequence older than it. False if it cannot.
  bool make_room(int64_t need, std::vector<Slot*>& decoders, const Slot* keep = nullptr);
  // Resets the least recently used idle slot holding blocks; false if none.
  bool evict_idle();
  // Frees a running slot's cache; its tokens are fed again later.
  void preempt(Slot& slot);
  int64_t free_kv_blocks() const;

  Model& model_;
  SchedulerOptions options_;
  std::vector<Slot> slots_;
  std::shared_ptr<KvBlockPool> kv_pool_;  // null: each slot's cache is contiguous
  mutable std::mutex m_;
  std::condition_variable wake_, idle_;
  std::deque<std::shared_ptr<Sequence>> queue_;
  bool stopping_ = false, draining_ = false;
  SchedulerStats stats_;
  uint64_t clock_ = 0;
  std::deque<std::pair<double, int64_t>> recent_;  // (time, tokens) of recent steps
  // Threads for choosing many slots' tokens at once (made with the first
  // step that needs them): each argmax or sort reads a whole vocabulary.
  std::unique_ptr<ThreadPool> choose_pool_;
  std::thread thread_;
};

}  // namespace kiln
