// forward() and forward_batch() for the models whose forward pass is one
// step over items (Transformer, Hybrid, BitNet): a sequence's tokens go
// through in chunks of its state's max_batch, each chunk a step of one item
// in the state's own activations; a serving step's sequences go through as
// one step of several items in activations shared by every such step.
//
// Derived provides, and befriends SteppedModel for:
//   void allocate(Workspace& ws, int64_t rows);  // activations for rows tokens
//   void step(Item* items, int64_t n_items, Workspace& ws, bool all_logits);
//   static constexpr bool kStepsInParts;  // whether step() may run on parts of a
//                                         // batch at once (Backend::step_parts)
// State has `Workspace ws` and `int64_t max_batch`; Item is
// {State*, tokens, n, logits, const ForwardInputs* inputs, argmax}.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kiln/model/building_blocks.h"
#include "kiln/model/kv_cache.h"
#include "kiln/model/model.h"
#include "kiln/model/multimodal_inputs.h"

namespace kiln {

// The state of a sequence whose every layer attends over one KV cache
// (Transformer, BitNet): the cache, and activations for forward() of up to
// max_batch tokens.
template <class Workspace>
class CachedState final : public SequenceState {
 public:
  CachedState(Backend& b, const ModelSpec& s, const StateOptions& o, int64_t capacity)
      : cache(b, o, s.n_layers, s.n_kv_heads, s.head_dim, capacity) {
    kv_ = &cache;
  }
  size_t bytes() const override { return cache.bytes(); }
  KvCache cache;
  Workspace ws;
  int64_t max_batch = 0;
};

// One sequence's tokens within a step.
template <class State>
struct StepItem {
  State* state;
  const int32_t* tokens;
  int64_t n;
  float* logits;                          // null: none wanted
  const ForwardInputs* inputs = nullptr;  // vision inputs (a single-item step only)
  int32_t* argmax = nullptr;  // the last token's largest logit's index, not the logits
  Candidate* top = nullptr;   // or its top_k candidates (BatchItem::top)
  int64_t top_k = 0;
  const DrawSpec* draw = nullptr;  // with argmax: drawn instead (BatchItem::draw)
};

template <class Derived, class State, class Item, class Workspace>
class SteppedModel : public Model {
 public:
  // Rows per pass through the output head. Each pass unpacks the head's
  // weights into tiles again (on the CPU), so a batched decode step of up to
  // 64 sequences goes through in one; 64 rows of logits are 39 MB at a
  // 151936-token vocabulary.
  static constexpr int64_t kHeadRows = 64;

  void forward(SequenceState& state, const int32_t* tokens, int64_t n, float* logits,
               bool all_logits) override {
    run(state, tokens, n, logits, all_logits, ForwardInputs{});
  }

  void forward_batch(const std::vector<BatchItem>& items) override {
    int64_t total = 0;
    std::vector<Item> batch = batch_items<State, Item>(items, total);
    if (batch.empty()) return;
    const int parts = Derived::kStepsInParts
                          ? std::min(backend_->step_parts(total, weight_bytes_), int(batch.size()))
                          : 1;
    if (parts > 1) return step_in_parts(batch, total, parts);
    Workspace& ws =
        batch_ws_.at_least(total, [&](Workspace& w, int64_t rows) { self().allocate(w, rows); });
    self().step(batch.data(), int64_t(batch.size()), ws, false);
  }

 protected:
  using Model::Model;

  // forward() with vision inputs (each chunk gets its share of them).
  void run(SequenceState& base, const int32_t* tokens, int64_t n, float* logits, bool all_logits,
           const ForwardInputs& inputs) {
    auto& st = static_cast<State&>(base);
    prepare_tokens(st, tokens, n);
    // A state's own activations come with its first forward(): a server's
    // states only ever run in forward_batch, whose workspace is shared (on a
    // GPU, 32 slots' unused logits rows alone would hold a gigabyte).
    if (!st.ws.x.get()) self().allocate(st.ws, st.max_batch);
    for_each_chunk(n, st.max_batch, logits, all_logits,
                   [&](int64_t done, int64_t chunk, float* out) {
                     const InputsChunk in = slice_inputs(inputs, n, done, chunk, spec_.hidden);
                     Item item{&st, tokens + done, chunk, out, &in.view};
                     self().step(&item, 1, st.ws, all_logits);
                   });
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }

  // The step as `parts` steps of consecutive items, about as many rows each,
  // one a thread of the backend (Backend::step_parts), each in its own
  // activations.
  void step_in_parts(std::vector<Item>& batch, int64_t total, int parts) {
    std::vector<int64_t> first(size_t(parts) + 1, int64_t(batch.size()));
    first[0] = 0;
    int64_t rows = 0;
    for (int64_t i = 0, p = 1; i < int64_t(batch.size()) && p < parts; ++i) {
      rows += batch[size_t(i)].n;
      if (rows * parts >= total * p) first[size_t(p++)] = i + 1;
    }
    if (part_ws_.size() < size_t(parts)) part_ws_.resize(size_t(parts));
    std::vector<Workspace*> ws(static_cast<size_t>(parts));
    for (int p = 0; p < parts; ++p) {  // allocated here: the backend's alloc is not for threads
      int64_t n = 0;
      for (int64_t i = first[size_t(p)]; i < first[size_t(p) + 1]; ++i) n += batch[size_t(i)].n;
      ws[size_t(p)] = &part_ws_[size_t(p)].at_least(
          std::max<int64_t>(n, 1), [&](Workspace& w, int64_t r) { self().allocate(w, r); });
    }
    backend_->run_parts(parts, [&](int p) {
      const int64_t i0 = first[size_t(p)], i1 = first[size_t(p) + 1];
      if (i1 > i0) self().step(batch.data() + i0, i1 - i0, *ws[size_t(p)], false);
    });
  }

  BatchWorkspace<Workspace> batch_ws_;
  std::vector<BatchWorkspace<Workspace>> part_ws_;
};

}  // namespace kiln
