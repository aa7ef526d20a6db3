// Pieces shared by the forward passes of several architectures: small f32
// parameter vectors, RoPE frequencies, mixture-of-experts
// feed-forward blocks, re-ordered copies of fused weights, the output head
// of a step over several sequences.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "kiln/backend/backend.h"
#include "kiln/core/error.h"
#include "kiln/model/kv_cache.h"
#include "kiln/model/model_file.h"
#include "kiln/model/model_spec.h"

namespace kiln {

// A 1-D parameter (a norm weight, a bias) as f32 in backend memory. With
// unit_offset, 1 is added to each value (zero-centred RMSNorm weights).
DeviceBuffer load_vector(Backend& backend, const TensorView& t, int64_t expected_len,
                         bool unit_offset = false);

// RoPE inverse frequencies for the rotated dims, with the spec's scaling
// applied (Llama 3, linear) and, when given, llama.cpp's rope_freqs factors.
std::vector<float> rope_inverse_frequencies(const ModelSpec& spec, const TensorView* rope_freqs);

// Rows `rows` of matrix t, in that order, copied into a new buffer appended
// to `storage` (which the model keeps for as long as the weights live). Rows
// are self-contained in every block format, so this works on any of them.
// Used where a file interleaves the parts of a fused projection.
TensorView copy_rows(const TensorView& t, const std::vector<int64_t>& rows,
                     const std::string& name, std::deque<std::vector<uint8_t>>& storage);
// Rows [row0, row0 + n) of matrix t, without a copy.
TensorView row_slice(const TensorView& t, int64_t row0, int64_t n, const std::string& name);

// The input embeddings of a step item's n tokens into out; tokens null:
// its one token is the pick of the step before (BatchItem::tokens), read
// where that step made it.
inline void embed_tokens(Backend& b, const Weight& table, const int32_t* tokens, int64_t n,
                         float* out) {
  if (tokens) return b.embed(table, tokens, n, out);
  KILN_CHECK(n == 1, "a step fed the last pick takes one token, not ", n);
  b.embed_last_pick(table, out);
}

// Activations of one MoE block for up to T tokens.
struct MoeScratch {
  DeviceBuffer router_logits, in, gate, up, out;
  DeviceBuffer shared_gate, shared_up, shared_out, shared_logit;
  std::vector<int32_t> ids, rows;
  std::vector<float> weights, scales;
  void allocate(Backend& backend, const ModelSpec& spec, int64_t max_tokens);
};

// A mixture-of-experts feed-forward block: a softmax router picking top-k
// experts per token, and, where the model has one (Qwen3-Next, Qwen3.5-MoE),
// a shared expert scaled by sigmoid(ffn_gate_inp_shexp . x).
class MoeFfn {
 public:
  // Experts come as 3-D tensors (GGUF; transformers 5 with gate and up fused)
  // or one 2-D tensor per expert (older safetensors). weight_bytes grows by
  // what one token reads.
  void load(Backend& backend, const ModelFile& file, const std::string& prefix,
            const ModelSpec& spec, size_t& weight_bytes);
  // out [T, hidden] = the block applied to h [T, hidden].
  void forward(Backend& backend, const ModelSpec& spec, const float* h, int64_t n_tokens,
               MoeScratch& ws, float* out) const;

 private:
  struct Expert {
    Weight gate, up, down;
  };
  Weight router_;
  std::vector<Expert> experts_;
  Weight shared_gate_, shared_up_, shared_down_, shared_router_;
};

// One sequence's rows in a forward step, as a layer's attention sees them.
struct AttentionItem {
  const KvCache* cache = nullptr;
  int64_t start = 0;  // the position of its first row
  int64_t n = 0;      // its rows
  int64_t row = 0;    // its first row among the step's activations
};

// One layer's attention for a step's items: each item's k/v rows stored in
// its cache at its positions, then its q rows attended over that cache.
// q [T, n_heads, head_dim], k/v [T, n_kv_heads, head_dim], out like q. A
// step of several sequences one token each (a serving step) takes one
// attention_decode_batch for all of them instead of two ops per sequence.
void attend_items(Backend& backend, const std::vector<AttentionItem>& items, int64_t layer,
                  int64_t n_heads, float scale, const float* q, const float* k, const float* v,
                  float* out);

// forward_batch's activations: one set for every step, grown to the
// largest step seen (allocate(ws, rows) makes a set for that many rows).
template <class Workspace>
class BatchWorkspace {
 public:
  template <class Allocate>
  Workspace& at_least(int64_t rows, Allocate&& allocate) {
    if (rows > rows_) {
      ws_ = Workspace();
      allocate(ws_, rows);
      rows_ = rows;
    }
    return ws_;
  }

 private:
  Workspace ws_;
  int64_t rows_ = 0;
};

// One sequence's rows in a forward step, as the output head sees them.
struct HeadRequest {
  int64_t row = 0;            // its first row among the step's activations
  int64_t n = 0;              // its rows
  float* logits = nullptr;    // host memory for its logits, or null
  int32_t* argmax = nullptr;  // without logits: where its last row's pick goes, or null
  Candidate* top = nullptr;   // without either: where its last row's top_k candidates go
  int64_t top_k = 0;
  const DrawSpec* draw = nullptr;  // with argmax: the pick drawn with these settings instead
};

// A step's item (StepItem) as the output head sees it, its rows from `row` on.
template <class Item>
HeadRequest head_request(const Item& it, int64_t row) {
  return HeadRequest{row, it.n, it.logits, it.argmax, it.top, it.top_k, it.draw};
}

// The final norm and output projection of a step, only for the rows that are
// wanted: with all_logits (a single request) every row, else each request's
// last. Rows whose logits go to the host come first, then those that bring
// back only their pick (argmax, or drawn where the logits are), then those
// that bring back their top-k candidates (a sampled step drawn on the
// host), at most head_rows rows per product so that logits_buf [head_rows,
// vocab] stays small next to a large vocabulary.
// x [T, hidden]; h_buf holds a row per wanted row.
struct OutputHead {
  const Weight* output = nullptr;
  const float* norm = nullptr;  // f32 [hidden]
  float eps = 0;
  int64_t hidden = 0, vocab = 0, head_rows = 0;
  void run(Backend& backend, const float* x, const HeadRequest* requests, int64_t n_requests,
           bool all_logits, float* h_buf, float* logits_buf) const;
};

}  // namespace kiln
