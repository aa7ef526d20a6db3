// A loaded model: weights resident on a backend, and a forward pass that
// turns token ids at given positions into logits, advancing a sequence's
// state (its KV cache and, for hybrid models, recurrent state).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/core/error.h"
#include "kiln/model/model_file.h"
#include "kiln/model/model_spec.h"

namespace kiln {

class KvBlockPool;
class KvCache;

struct StateOptions {
  int64_t context = 0;         // positions the cache holds; 0 = min(model's, 4096)
  int64_t max_batch = 512;     // tokens per forward step (prompts are fed in chunks)
  DType kv_dtype = DType::F32; // F32 or F16 (a pool brings its own)
  // Paged: the attention caches take blocks from this pool as they grow
  // (Model::new_kv_pool); null: each state allocates its whole context.
  std::shared_ptr<KvBlockPool> kv_pool;
};

// Everything one sequence carries between forward calls.
class SequenceState {
 public:
  virtual ~SequenceState() = default;
  int64_t position() const { return n_past_; }
  // RoPE position of the next text token minus its cache position: after an
  // image, M-RoPE positions run behind the cache (an image of h x w merged
  // tokens fills h * w cells but advances positions by max(h, w)).
  int64_t rope_offset() const { return rope_offset_; }
  void set_rope_offset(int64_t offset) { rope_offset_ = offset; }
  int64_t capacity() const { return capacity_; }
  // Forgets the sequence (the cache is reused; a paged one gives its blocks back).
  virtual void reset();
  // Drops every position from `pos` on, so a shared prefix can be kept. A
  // paged cache may keep fewer (position() tells): never part of a block
  // that another sequence shares, since this one writes there next.
  virtual void truncate(int64_t pos);
  // Whether truncate(pos) is possible: a recurrent state cannot be rewound
  // (except to the start) unless it kept a checkpoint there.
  virtual bool can_truncate(int64_t pos) const { return pos == 0 || pos <= n_past_; }
  // Bytes of device memory this state holds.
  virtual size_t bytes() const = 0;

  // --- paged caches (zero / false otherwise)
  // Blocks the state must take from its pool before n more tokens are fed.
  int64_t kv_blocks_needed(int64_t n) const;
  int64_t kv_blocks_held() const;
  // Starts this sequence over with the first `positions` of donor (a whole
  // number of blocks of the same pool) as its own, sharing their blocks.
  // False, changing nothing, where that cannot be done: contiguous caches,
  // recurrent state (hybrids), M-RoPE offsets.
  virtual bool share_prefix(const SequenceState& donor, int64_t positions);

 protected:
  friend class Model;
  KvCache* kv_ = nullptr;  // the attention layers' cache, registered by the subclass
  int64_t n_past_ = 0;
  int64_t capacity_ = 0;
  int64_t rope_offset_ = 0;
};

// What a vision-language prompt adds to a forward call (host memory): rows
// whose input embedding is given (image tokens) instead of looked up,
// DeepStack features added to those rows after the first layers, and
// M-RoPE (t, h, w) positions for every token of the call.
struct ForwardInputs {
  const float* embeds = nullptr;        // [n_embeds, hidden]
  const int32_t* embed_rows = nullptr;  // which tokens of the call, ascending
  int64_t n_embeds = 0;
  const float* deepstack = nullptr;     // [n_deepstack, n_embeds, hidden]: after layer l
  int64_t n_deepstack = 0;
  const int32_t* mrope_positions = nullptr;  // [3, n]; null: text positions
};

// One sequence's share of a batched forward step.
struct BatchItem {
  SequenceState* state = nullptr;
  // Fed at the state's next positions. Null with n == 1: the token the step
  // before picked (its argmax or draw), read where it was made (decoding
  // ahead, Backend::step_ahead); only in a step of this one item.
  const int32_t* tokens = nullptr;
  int64_t n = 0;
  float* logits = nullptr;  // host [vocab] for the last token, or null
  // Without logits: where the index of the last token's largest logit goes
  // (a greedy step; the logits stay on the device), or null.
  int32_t* argmax = nullptr;
  // With argmax: the pick is drawn with these settings instead, where the
  // logits are (a sampled step; Backend::draw_rows). Not in a step with
  // greedy picks.
  const DrawSpec* draw = nullptr;
  // Without logits or argmax: where the last token's top_k candidates go
  // (a sampled step; Backend::top_k_rows: top_k entries in any order), or
  // null.
  Candidate* top = nullptr;
  int64_t top_k = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  const ModelSpec& spec() const { return spec_; }
  Backend& backend() { return *backend_; }

  virtual std::unique_ptr<SequenceState> new_state(const StateOptions& options) = 0;
  // A pool of n_blocks KV blocks of block_positions each, for states made
  // with StateOptions::kv_pool; null when the backend has no paged caches.
  std::shared_ptr<KvBlockPool> new_kv_pool(int64_t block_positions, int64_t n_blocks,
                                           DType dtype);

  // Feeds tokens at the state's next positions. logits: host memory for
  // [n, vocab] when all_logits, else [vocab] for the last token; may be null
  // when no logits are wanted (a prompt chunk that is not the last).
  virtual void forward(SequenceState& state, const int32_t* tokens, int64_t n, float* logits,
                       bool all_logits) = 0;
  // The same with vision inputs; models without M-RoPE/vision support throw.
  virtual void forward(SequenceState& state, const int32_t* tokens, int64_t n, float* logits,
                       bool all_logits, const ForwardInputs& inputs);

  // Feeds several sequences in one step: what a server runs each iteration
  // (one decode token per running sequence, plus chunks of new prompts).
  // Results equal forward() on each item in turn. The default does exactly
  // that; a model may instead share each weight product across all items.
  virtual void forward_batch(const std::vector<BatchItem>& items);

  // Bytes of weights the model reads per token (for bandwidth figures).
  size_t weight_bytes() const { return weight_bytes_; }

 protected:
  Model(const ModelSpec& spec, Backend& backend) : spec_(spec), backend_(&backend) {}
  static void advance(SequenceState& s, int64_t n) { s.n_past_ += n; }
  // Positions a new state holds: what was asked, else the model's, at most 4096.
  int64_t state_capacity(const StateOptions& o) const;
  // A new State(backend, spec, options, capacity, extra...) with its
  // capacity and its step size (max_batch) set from the options.
  template <class State, class... Extra>
  std::unique_ptr<State> make_state(const StateOptions& o, Extra&&... extra) {
    const int64_t capacity = state_capacity(o);
    auto st = std::make_unique<State>(*backend_, spec_, o, capacity, std::forward<Extra>(extra)...);
    set_capacity(*st, capacity);
    st->max_batch = std::max<int64_t>(1, std::min(o.max_batch, capacity));
    return st;
  }
  // Throws unless n more tokens fit the state and every id is in the
  // vocabulary; then takes the paged cache blocks they will be written to.
  void prepare_tokens(SequenceState& s, const int32_t* tokens, int64_t n) const;
  // Attention layers and their shapes, for new_kv_pool (hybrids have fewer
  // attention layers than layers).
  virtual int64_t attention_layers() const { return spec_.n_layers; }
  // Splits a forward call into steps of at most max_batch tokens: calls
  // step(begin, count, logits) with the chunk's share of forward()'s logits
  // (all its rows with all_logits, else only the last chunk's last row).
  template <class Step>
  void for_each_chunk(int64_t n, int64_t max_batch, float* logits, bool all_logits,
                      Step&& step) const {
    for (int64_t done = 0; done < n;) {
      const int64_t chunk = std::min(max_batch, n - done);
      float* out = nullptr;
      if (logits && all_logits) out = logits + done * spec_.vocab_size;
      if (logits && !all_logits && done + chunk == n) out = logits;
      step(done, chunk, out);
      done += chunk;
    }
  }
  static void set_capacity(SequenceState& s, int64_t c) { s.capacity_ = c; }
  // forward_batch's items that carry tokens, as the model's Item {state,
  // tokens, n, logits, inputs, argmax and draw (only without logits), top
  // and top_k (only without either)}, each state
  // checked and prepared (prepare_tokens) and none twice; total: their tokens.
  template <class State, class Item>
  std::vector<Item> batch_items(const std::vector<BatchItem>& items, int64_t& total) const {
    std::vector<Item> run;
    total = 0;
    for (const BatchItem& it : items) {
      if (it.n <= 0) continue;
      auto* st = static_cast<State*>(it.state);
      KILN_CHECK(it.tokens || items.size() == 1,
                 "only a step of one sequence is fed the last pick");
      prepare_tokens(*st, it.tokens, it.n);
      for (const Item& other : run)
        KILN_CHECK(other.state != st, "a sequence appears twice in one batch");
      const bool picks = it.logits || it.argmax;
      run.push_back(Item{st, it.tokens, it.n, it.logits, nullptr, it.logits ? nullptr : it.argmax,
                         picks ? nullptr : it.top, picks ? 0 : it.top_k,
                         it.logits ? nullptr : it.draw});
      total += it.n;
    }
    return run;
  }

  ModelSpec spec_;
  Backend* backend_;
  size_t weight_bytes_ = 0;
};

// Builds the model for file.spec().arch on the backend. The file must outlive it.
std::unique_ptr<Model> load_model(const ModelFile& file, Backend& backend);

}  // namespace kiln
