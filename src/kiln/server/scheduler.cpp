#include "kiln/server/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "kiln/core/error.h"
#include "kiln/model/kv_cache.h"

namespace kiln {
namespace {

using Clock = std::chrono::steady_clock;

double now_seconds() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::None: return "none";
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::ContextFull: return "length";
    case FinishReason::Error: return "error";
  }
  return "?";
}

// --- Sequence

bool Sequence::wait(std::vector<TokenEvent>& out, int timeout_ms, int pace_us) {
  std::unique_lock lock(m_);
  // Paced: rest until pace_us after the last take, woken only by the end
  // (push does not notify a resting waiter), so that a stream of tokens
  // costs one wake a pace rather than one a token.
  if (pace_us > 0 && !finished_) {
    const auto until = last_taken_ + std::chrono::microseconds(pace_us);
    if (Clock::now() < until) {
      resting_ = true;
      cv_.wait_until(lock, until, [&] { return finished_; });
      resting_ = false;
    }
  }
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
               [&] { return !events_.empty() || finished_; });
  for (auto& e : events_) out.push_back(std::move(e));
  events_.clear();
  last_taken_ = Clock::now();
  return finished_;
}

FinishReason Sequence::finish_reason() const {
  std::lock_guard lock(m_);
  return reason_;
}

std::string Sequence::error() const {
  std::lock_guard lock(m_);
  return error_;
}

void Sequence::cancel(FinishReason why) {
  {
    std::lock_guard lock(m_);
    if (!cancel_) cancel_reason_ = why;
  }
  cancel_ = true;
}

void Sequence::push(TokenEvent e) {
  bool wake;
  {
    std::lock_guard lock(m_);
    // A waiter waits for a first event; a resting one (paced) only for
    // the end. Any other notify would wake it to sleep again.
    wake = events_.empty() && !resting_;
    events_.push_back(std::move(e));
  }
  if (wake) cv_.notify_all();
}

void Sequence::finish(FinishReason r, std::string error) {
  {
    std::lock_guard lock(m_);
    if (finished_) return;
    finished_ = true;
    reason_ = r;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

// --- Scheduler

Scheduler::Scheduler(Model& model, const SchedulerOptions& o) : model_(model), options_(o) {
  KILN_CHECK(o.slots >= 1, "the server needs at least one slot (--parallel)");
  KILN_CHECK(o.context >= 2, "the context must hold at least 2 positions");
  options_.step_tokens = std::max<int64_t>(o.step_tokens, o.slots + 16);
  StateOptions so;
  so.context = o.context;
  so.kv_dtype = o.kv_dtype;
  so.max_batch = std::min<int64_t>(options_.step_tokens, o.context);
  if (o.kv_block > 0) {
    // One pool for every slot; at least one whole context, so the oldest
    // sequence can always run to its end on its own.
    const int64_t block = o.kv_block;
    const int64_t positions =
        std::max(o.kv_positions > 0 ? o.kv_positions : int64_t(o.slots) * o.context, o.context);
    kv_pool_ = model.new_kv_pool(block, (positions + block - 1) / block, o.kv_dtype);
    so.kv_pool = kv_pool_;
  }
  // A greedy request gets the tokens it would get alone, whoever shares its
  // steps (tests/server: 32 streams against each alone).
  model.backend().set_batch_invariant(true);
  model.backend().keep_weight_tiles(o.weight_tiles_bytes);
  if (o.weight_tiles_bytes > 0) {
    // Pack them now, through one small prompt (4 tokens, logits for all, so
    // that the output head is a product of several tokens too): the first
    // request does not pay for it, and the server's memory stays where it
    // was at start (a load test sees no growth).
    StateOptions warm;
    warm.context = 8;
    warm.max_batch = 8;
    auto state = model.new_state(warm);
    const int32_t ids[4] = {0, 0, 0, 0};
    std::vector<float> logits(size_t(4 * model.spec().vocab_size));
    model.forward(*state, ids, 4, logits.data(), true);
  }
  slots_.resize(size_t(o.slots));
  for (Slot& s : slots_) {
    s.state = model.new_state(so);
    // Pinned on a GPU: a step's logits land there with no staging copy.
    s.logits = HostBuffer(model.backend(), size_t(model.spec().vocab_size) * sizeof(float));
  }
  stats_.slots = o.slots;
  if (kv_pool_) {
    stats_.kv_blocks = kv_pool_->n_blocks();
    stats_.kv_block_positions = kv_pool_->block_positions();
  }
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(m_);
    stopping_ = true;
    draining_ = true;
    for (auto& q : queue_) q->finish(FinishReason::Cancelled);
    queue_.clear();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Scheduler::submit(const std::shared_ptr<Sequence>& seq) {
  KILN_CHECK(!seq->prompt.empty(), "the prompt is empty");
  KILN_CHECK(int64_t(seq->prompt.size()) < options_.context, "the prompt has ",
             seq->prompt.size(), " tokens; the context holds ", options_.context,
             " (the prompt and at least one generated token must fit)");
  const int64_t vocab = model_.spec().vocab_size;
  for (int32_t id : seq->prompt)
    KILN_CHECK(id >= 0 && id < vocab, "token id ", id, " is outside the vocabulary (", vocab,
               " tokens)");
  {
    std::lock_guard lock(m_);
    if (draining_) return false;
    const int free_slots = stats_.slots - stats_.active;
    if (int(queue_.size()) >= options_.max_queue + std::max(free_slots, 0)) return false;
    queue_.push_back(seq);
    stats_.waiting = int(queue_.size());
  }
  wake_.notify_all();
  return true;
}

void Scheduler::drain(bool cancel) {
  std::lock_guard lock(m_);
  draining_ = true;
  if (!cancel) return;
  for (auto& q : queue_) q->finish(FinishReason::Cancelled);
  queue_.clear();
  stats_.waiting = 0;
  for (Slot& s : slots_)
    if (s.seq) s.seq->cancel();
  wake_.notify_all();
}

bool Scheduler::wait_idle(int timeout_ms) {
  std::unique_lock lock(m_);
  return idle_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                        [&] { return stats_.active == 0 && queue_.empty(); });
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(m_);
  SchedulerStats s = stats_;
  const double now = now_seconds(), window = 5.0;
  int64_t tokens = 0;
  for (const auto& [t, n] : recent_)
    if (now - t <= window) tokens += n;
  s.recent_tokens_per_s = double(tokens) / window;
  return s;
}

void Scheduler::loop() {
  for (;;) {
    {
      std::unique_lock lock(m_);
      admit(lock);
      if (stats_.active == 0) {
        idle_.notify_all();
        if (stopping_) return;
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        continue;
      }
    }
    step();
  }
}

void Scheduler::admit(std::unique_lock<std::mutex>&) {
  while (!queue_.empty()) {
    std::shared_ptr<Sequence> seq = queue_.front();
    if (seq->cancelled()) {
      queue_.pop_front();
      seq->finish(FinishReason::Cancelled);
      continue;
    }
    // The free slot sharing the longest prompt head; else the least recently used.
    Slot* best = nullptr;
    size_t best_common = 0;
    for (Slot& s : slots_) {
      if (s.seq) continue;
      size_t c = 0;
      while (c < s.cached.size() && c < seq->prompt.size() && s.cached[c] == seq->prompt[c]) ++c;
      if (!best || c > best_common || (c == best_common && s.last_used < best->last_used))
        best = &s, best_common = c;
    }
    if (!best) break;
    queue_.pop_front();
    try {
      start(*best, seq);
    } catch (const std::exception& e) {
      // A state that cannot take the request (its cache refused to be cut
      // back, a pool out of blocks): the request fails, the server goes on.
      best->state->reset();
      best->cached.clear();
      best->seq.reset();
      seq->finish(FinishReason::Error, e.what());
      continue;
    }
    ++stats_.active;
    ++stats_.requests_started;
  }
  stats_.waiting = int(queue_.size());
}

void Scheduler::start(Slot& slot, std::shared_ptr<Sequence> seq) {
  const auto& prompt = seq->prompt;
  size_t common = 0;
  while (common < slot.cached.size() && common < prompt.size() &&
         slot.cached[common] == prompt[common])
    ++common;
  // Always feed at least one token: its logits start the generation.
  if (common == prompt.size()) --common;
  if (!slot.state->can_truncate(int64_t(common))) common = 0;
  slot.state->truncate(int64_t(common));
  // A paged cache may keep less (never part of a block it shares).
  common = size_t(slot.state->position());
  slot.cached.resize(common);
  if (kv_pool_) {
    share_from_donor(slot, prompt);
    common = slot.cached.size();
  }
  slot.pending.assign(prompt.begin() + int64_t(common), prompt.end());
  slot.history = prompt;
  slot.generated.clear();
  slot.sampler = std::make_unique<Sampler>(seq->sampling);
  slot.logits_ready = false;
  slot.recomputing = false;
  slot.last_used = ++clock_;
  slot.admitted = slot.last_used;
  seq->cached_tokens_ = int64_t(common);
  stats_.prompt_tokens += int64_t(prompt.size());
  stats_.cached_prompt_tokens += int64_t(common);
  slot.seq = std::move(seq);
}

void Scheduler::release(Slot& slot, FinishReason why, const std::string& error) {
  slot.seq->finish(why, error);
  slot.seq.reset();
  slot.pending.clear();
  slot.sampler.reset();
  slot.last_used = ++clock_;
  std::lock_guard lock(m_);
  --stats_.active;
  ++stats_.requests_finished;
  if (stats_.active == 0 && queue_.empty()) idle_.notify_all();
}

void Scheduler::step() {
  // Cancelled (disconnected, stopped) sequences leave first.
  for (Slot& s : slots_)
    if (s.seq && s.seq->cancelled()) {
      FinishReason why;
      {
        std::lock_guard lock(s.seq->m_);
        why = s.seq->cancel_reason_;
      }
      release(s, why);
    }

  // Decoding sequences feed their token(s); prompts share what is left of
  // the step's token budget, in turn.
  std::vector<Slot*> decoders;
  for (Slot& s : slots_) {
    if (!s.decoding()) continue;
    if (s.state->position() + int64_t(s.pending.size()) > s.state->capacity()) {
      release(s, FinishReason::ContextFull);
      continue;
    }
    decoders.push_back(&s);
  }
  if (kv_pool_) {
    int64_t need = 0;
    for (Slot* s : decoders) need += s->state->kv_blocks_needed(int64_t(s->pending.size()));
    if (need > free_kv_blocks()) make_room(need, decoders);
  }

  std::vector<BatchItem> items;
  std::vector<Slot*> owners;
  int64_t budget = options_.step_tokens;
  int64_t planned_blocks = 0;  // blocks this step's items will take
  auto add = [&](Slot& s, int64_t n) {
    BatchItem it;
    it.state = s.state.get();
    it.tokens = s.pending.data();
    it.n = n;
    const bool last = n == int64_t(s.pending.size());
    const bool plain = last && s.seq->top_logprobs < 0 && !s.seq->constraint;
    s.picked = plain && s.sampler->plain_argmax();
    const int64_t k = plain && !s.picked ? s.sampler->model_top_k(model_.spec().vocab_size) : 0;
    s.topped = k > 0;
    if (s.topped) s.top.resize(size_t(k));
    it.logits = last && !s.picked && !s.topped ? s.logits.f32() : nullptr;
    it.argmax = s.picked ? &s.pick : nullptr;
    it.top = s.topped ? s.top.data() : nullptr;
    it.top_k = s.topped ? k : 0;
    items.push_back(it);
    owners.push_back(&s);
    budget -= n;
    if (kv_pool_) planned_blocks += s.state->kv_blocks_needed(n);
  };
  for (Slot* s : decoders) add(*s, int64_t(s->pending.size()));
  // Positions a slot can add with the blocks still free.
  auto fits = [&](const Slot& s) {
    if (!kv_pool_) return std::numeric_limits<int64_t>::max();
    const int64_t blocks_left = free_kv_blocks() - planned_blocks;
    return (s.state->kv_blocks_held() + blocks_left) * kv_pool_->block_positions() -
           s.state->position();
  };
  const size_t n_slots = slots_.size();
  const size_t first = size_t(stats_.steps % int64_t(n_slots));
  for (size_t k = 0; k < n_slots && budget > 0; ++k) {
    Slot& s = slots_[(first + k) % n_slots];
    if (!s.prefilling()) continue;
    int64_t n = std::min<int64_t>(budget, int64_t(s.pending.size()));
    if (kv_pool_ && n > fits(s)) {
      // Idle caches make way for a prompt; running sequences do not.
      while (n > fits(s) && evict_idle()) {
      }
      n = std::min(n, fits(s));
    }
    if (n > 0) add(s, n);
  }
  if (items.empty() && kv_pool_) {
    // Every prompt waits for blocks that running sequences hold: the oldest
    // prompt gets room by preempting younger sequences.
    Slot* oldest = nullptr;
    for (Slot& s : slots_)
      if (s.prefilling() && (!oldest || s.admitted < oldest->admitted)) oldest = &s;
    if (oldest) {
      std::vector<Slot*> none;
      make_room(1, none, oldest);
    }
    return;
  }
  if (items.empty()) return;
  // Too few sampled sequences for the candidates to be worth making with
  // the step: their logits come to the host instead.
  const int64_t top_from = options_.top_k_rows_from >= 0 ? options_.top_k_rows_from
                                                         : model_.backend().top_k_rows_from();
  int64_t topped = 0;
  for (const Slot* s : owners) topped += s->topped;
  if (topped > 0 && (top_from == 0 || topped < top_from)) {
    for (size_t i = 0; i < items.size(); ++i) {
      Slot& s = *owners[i];
      if (!s.topped) continue;
      s.topped = false;
      items[i].top = nullptr;
      items[i].top_k = 0;
      items[i].logits = s.logits.f32();
    }
  }

  const double t0 = now_seconds();
  try {
    model_.forward_batch(items);
  } catch (const std::exception& e) {
    // The caches of this step's sequences are in an unknown state: forget them.
    for (Slot* s : owners) {
      s->state->reset();
      s->cached.clear();
      if (s->seq) release(*s, FinishReason::Error, e.what());
    }
    return;
  }
  const double t1 = now_seconds();

  std::vector<Slot*> ready;  // slots whose logits choose their next token
  for (size_t i = 0; i < items.size(); ++i) {
    Slot& s = *owners[i];
    const int64_t n = items[i].n;
    s.cached.insert(s.cached.end(), s.pending.begin(), s.pending.begin() + n);
    s.pending.erase(s.pending.begin(), s.pending.begin() + n);
    if (!s.pending.empty()) continue;
    s.recomputing = false;
    ready.push_back(&s);
  }
  std::vector<Choice> choices(ready.size());
  // A few slots choose on this thread; more in parallel where they scan
  // their logits (32 sampled slots of a 151936-token vocabulary: ~0.7 ms on
  // one thread, ~2.6 ms when the sampler sorted them, against a 0.6B
  // model's ~5 ms GPU step). A greedy pick made with the step
  // (Slot::picked) scans nothing, nor a draw from the top-k candidates the
  // step brought back (Slot::topped), and a small vocabulary is less work
  // than waking the pool: its workers would then spin beside the next
  // step's threads for nothing.
  constexpr size_t kParallelFrom = 8;
  constexpr int64_t kParallelLogits = int64_t(1) << 18;
  int64_t scanned = 0;  // logits the choices read
  for (const Slot* s : ready)
    if (!s->picked && !s->topped) scanned += model_.spec().vocab_size;
  const bool parallel = ready.size() >= kParallelFrom && scanned >= kParallelLogits;
  if (parallel && !choose_pool_)
    choose_pool_ = std::make_unique<ThreadPool>(std::min(physical_core_count(), 8));
  if (parallel && choose_pool_->size() > 1) {
    choose_pool_->parallel_for(int64_t(ready.size()), [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) choices[size_t(i)] = choose(*ready[size_t(i)]);
    });
  } else {
    for (size_t i = 0; i < ready.size(); ++i) choices[i] = choose(*ready[i]);
  }
  int64_t produced = 0;
  for (size_t i = 0; i < ready.size(); ++i) {
    Slot& s = *ready[i];
    const size_t before = s.generated.size();
    commit(s, std::move(choices[i]));
    produced += int64_t(s.generated.size() - before);
  }
  const double t2 = now_seconds();
  std::lock_guard lock(m_);
  if (kv_pool_) stats_.kv_blocks_used = kv_pool_->n_blocks() - kv_pool_->free_blocks();
  ++stats_.steps;
  stats_.busy_seconds += t1 - t0;
  stats_.sample_seconds += t2 - t1;
  recent_.emplace_back(t1, produced);
  while (!recent_.empty() && t1 - recent_.front().first > 10.0) recent_.pop_front();
}

// --- paged KV pool

int64_t Scheduler::free_kv_blocks() const {
  return kv_pool_ ? kv_pool_->free_blocks() : std::numeric_limits<int64_t>::max() / 4;
}

void Scheduler::share_from_donor(Slot& slot, const std::vector<int32_t>& prompt) {
  // At least one prompt token is always fed: its logits start the answer.
  const size_t limit = prompt.size() - 1;
  const size_t block = size_t(kv_pool_->block_positions());
  Slot* donor = nullptr;
  size_t best = slot.cached.size();
  for (Slot& d : slots_) {
    if (&d == &slot) continue;
    size_t c = 0;
    while (c < d.cached.size() && c < limit && d.cached[c] == prompt[c]) ++c;
    c = c / block * block;
    if (c > best) best = c, donor = &d;
  }
  if (!donor || !slot.state->share_prefix(*donor->state, int64_t(best))) return;
  slot.cached.assign(prompt.begin(), prompt.begin() + int64_t(best));
  stats_.shared_prefix_tokens += int64_t(best);
}

bool Scheduler::evict_idle() {
  Slot* idle = nullptr;
  for (Slot& s : slots_)
    if (!s.seq && s.state->kv_blocks_held() > 0 && (!idle || s.last_used < idle->last_used))
      idle = &s;
  if (!idle) return false;
  idle->state->reset();
  idle->cached.clear();
  return true;
}

bool Scheduler::make_room(int64_t need, std::vector<Slot*>& decoders, const Slot* keep) {
  while (free_kv_blocks() < need) {
    if (evict_idle()) continue;
    Slot* victim = nullptr;
    for (Slot& s : slots_)
      if (s.seq && &s != keep && s.state->kv_blocks_held() > 0 &&
          (!victim || s.admitted > victim->admitted))
        victim = &s;
    if (!victim || (keep && victim->admitted < keep->admitted)) return false;
    auto it = std::find(decoders.begin(), decoders.end(), victim);
    if (it != decoders.end()) {
      need -= victim->state->kv_blocks_needed(int64_t(victim->pending.size()));
      decoders.erase(it);
    }
    preempt(*victim);
  }
  return true;
}

void Scheduler::preempt(Slot& slot) {
  // Everything the cache held is fed again, then what was pending; the
  // logits at the end are those the slot would have had, so the output
  // continues as if nothing happened.
  slot.pending.insert(slot.pending.begin(), slot.cached.begin(), slot.cached.end());
  slot.cached.clear();
  slot.state->reset();
  slot.recomputing = !slot.generated.empty();
  std::lock_guard lock(m_);
  ++stats_.preemptions;
}

Scheduler::Choice Scheduler::choose(Slot& s) const {
  const Sequence& seq = *s.seq;
  const int64_t vocab = model_.spec().vocab_size;
  float* logits = s.logits.f32();
  Choice c;
  if (seq.force) c.forced = seq.force(s.generated);
  if (!c.forced.empty()) return c;

  // Log-probabilities come from the model's distribution, before penalties
  // and filters change the logits.
  float lse = 0;
  std::vector<float> raw;
  if (seq.top_logprobs >= 0) {
    raw.assign(logits, logits + vocab);
    const float mx = *std::max_element(logits, logits + vocab);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(logits[i] - mx));
    lse = mx + float(std::log(sum));
    if (seq.top_logprobs > 0) {
      std::vector<Candidate> top;
      top_k_candidates(logits, vocab, size_t(seq.top_logprobs), top);
      for (const Candidate& t : top) c.top.push_back({t.second, t.first - lse});
    }
  }

  int32_t id = -1;
  if (s.picked) {
    id = s.pick;  // what the sampler's greedy argmax gives, chosen on the device
  } else if (s.topped) {
    id = s.sampler->sample_candidates(s.top);  // what sample() gives over the logits
  } else if (!seq.constraint) {
    id = s.sampler->sample(logits, vocab, s.history);
  } else {
    // Draw; a token the constraint refuses is struck out and the draw
    // repeated; after a few refusals every refused token is struck at once.
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> base(logits, logits + vocab), work;
    std::vector<int32_t> refused;
    for (int tries = 0; tries < 8 && id < 0; ++tries) {
      work = base;
      for (int32_t r : refused) work[size_t(r)] = -inf;
      const int32_t cand = s.sampler->sample(work.data(), vocab, s.history);
      if (work[size_t(cand)] != -inf && seq.constraint->allows(cand)) id = cand;
      else refused.push_back(cand);
    }
    if (id < 0) {
      bool any = false;
      for (int64_t v = 0; v < vocab; ++v)
        if (!seq.constraint->allows(int32_t(v))) base[size_t(v)] = -inf;
        else any = true;
      if (!any) return c;  // id -1: nothing allowed
      id = s.sampler->sample(base.data(), vocab, s.history);
    }
  }
  c.id = id;
  c.logprob = raw.empty() ? 0.0f : raw[size_t(id)] - lse;
  return c;
}

void Scheduler::commit(Slot& s, Choice c) {
  Sequence& seq = *s.seq;
  auto emit = [&](int32_t id, float logprob, std::vector<TokenLogprob> top) {
    s.generated.push_back(id);
    s.history.push_back(id);
    if (seq.constraint) seq.constraint->accept(id);
    ++seq.generated_count_;
    {
      // Counted before the token can finish the request, so a client that
      // reads /metrics after its answer sees its tokens.
      std::lock_guard lock(m_);
      ++stats_.generated_tokens;
    }
    seq.push(TokenEvent{id, logprob, std::move(top)});
  };
  auto done = [&]() -> bool {  // after an emitted token: whether the sequence ends here
    if (int64_t(s.generated.size()) >= seq.max_tokens) return release(s, FinishReason::Length), true;
    if (seq.constraint && seq.constraint->complete()) return release(s, FinishReason::Stop), true;
    if (s.state->position() >= s.state->capacity())
      return release(s, FinishReason::ContextFull), true;
    return false;
  };

  if (!c.forced.empty()) {
    for (size_t i = 0; i < c.forced.size(); ++i) {
      emit(c.forced[i], 0.0f, {});
      if (done()) return;
    }
    s.pending = std::move(c.forced);
    return;
  }
  if (c.id < 0) return release(s, FinishReason::Stop);
  if (std::find(seq.stop_ids.begin(), seq.stop_ids.end(), c.id) != seq.stop_ids.end())
    return release(s, FinishReason::Stop);
  emit(c.id, c.logprob, std::move(c.top));
  if (done()) return;
  s.pending.assign(1, c.id);
}

}  // namespace kiln
