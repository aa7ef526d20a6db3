#include "kiln/model/transformer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kiln/core/error.h"
#include "kiln/model/building_blocks.h"
#include "kiln/model/stepped_model.h"
#include "kiln/model/multimodal_inputs.h"

namespace kiln {
namespace {

struct Layer {
  DeviceBuffer attn_norm, ffn_norm, q_norm, k_norm;
  Weight wq, wk, wv, wo;
  // dense feed-forward
  Weight w_gate, w_up, w_down;
  MoeFfn moe;
  bool uses_rope = true;
  bool is_moe = false;
};

// Activations for one forward step of up to max_batch tokens.
struct Workspace {
  DeviceBuffer x, h, q, k, v, attn, out, gate, up, logits;
  MoeScratch moe;
  std::vector<int32_t> positions;
};

using TransformerState = CachedState<Workspace>;
using Item = StepItem<TransformerState>;

class Transformer final : public SteppedModel<Transformer, TransformerState, Item, Workspace> {
  using Base = SteppedModel<Transformer, TransformerState, Item, Workspace>;
  friend Base;
  // Its items share nothing but the weights: a small model's serving step
  // runs as a part a thread (Backend::step_parts).
  static constexpr bool kStepsInParts = true;

 public:
  Transformer(const ModelFile& f, Backend& b) : Base(f.spec(), b) { load(f); }

  std::unique_ptr<SequenceState> new_state(const StateOptions& o) override {
    auto st = make_state<TransformerState>(o);
    return st;
  }

  void forward(SequenceState& base, const int32_t* tokens, int64_t n, float* logits,
               bool all_logits, const ForwardInputs& inputs) override {
    KILN_CHECK(!inputs.mrope_positions || mrope_.enabled(), "the ", spec_.arch,
               " model has no M-RoPE sections: it does not take images");
    run(base, tokens, n, logits, all_logits, inputs);
  }
  using Base::forward;

 private:
  void load(const ModelFile& f) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t H = s.hidden, hd = s.head_dim;
    auto weight = [&](const std::string& name, std::vector<int64_t> shape) {
      Weight w = b.load_weight(f.get(name, shape));
      weight_bytes_ += w.view.nbytes;
      return w;
    };
    embed_ = b.load_weight(f.get("token_embd.weight", {s.vocab_size, H}));
    if (const TensorView* out = f.find("output.weight")) {
      output_ = weight("output.weight", {s.vocab_size, H});
      (void)out;
    } else {
      output_ = embed_;  // tied embeddings
      weight_bytes_ += embed_.view.nbytes;
    }
    output_norm_ = load_vector(b, f.get("output_norm.weight"), H);
    auto inv = rope_inverse_frequencies(s, f.find("rope_freqs.weight"));
    inv_freq_ = DeviceBuffer(b, inv.size() * sizeof(float));
    b.to_device(inv_freq_.get(), inv.data(), inv_freq_.bytes());
    mrope_.init(b, s, inv);

    layers_.resize(size_t(s.n_layers));
    for (int64_t i = 0; i < s.n_layers; ++i) {
      Layer& L = layers_[size_t(i)];
      const std::string p = cat("blk.", i, ".");
      L.uses_rope = s.layer_uses_rope[i];
      L.is_moe = s.layer_is_moe[i];
      L.attn_norm = load_vector(b, f.get(p + "attn_norm.weight"), H);
      L.ffn_norm = load_vector(b, f.get(p + "ffn_norm.weight"), H);
      L.wq = weight(p + "attn_q.weight", {s.n_heads * hd, H});
      L.wk = weight(p + "attn_k.weight", {s.n_kv_heads * hd, H});
      L.wv = weight(p + "attn_v.weight", {s.n_kv_heads * hd, H});
      L.wo = weight(p + "attn_output.weight", {H, s.n_heads * hd});
      if (s.qk_norm) {
        L.q_norm = load_vector(b, f.get(p + "attn_q_norm.weight"), hd);
        L.k_norm = load_vector(b, f.get(p + "attn_k_norm.weight"), hd);
      }
      if (L.is_moe)
        L.moe.load(b, f, p, s, weight_bytes_);
      else {
        L.w_gate = weight(p + "ffn_gate.weight", {s.ffn_hidden, H});
        L.w_up = weight(p + "ffn_up.weight", {s.ffn_hidden, H});
        L.w_down = weight(p + "ffn_down.weight", {H, s.ffn_hidden});
      }
    }
  }

  void allocate(Workspace& ws, int64_t T) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    auto f32 = [&](int64_t n) { return DeviceBuffer(b, size_t(n) * sizeof(float)); };
    const int64_t ffn = std::max(s.ffn_hidden, s.expert_ffn_hidden);
    ws.x = f32(T * s.hidden);
    ws.h = f32(T * s.hidden);
    ws.out = f32(T * s.hidden);
    ws.q = f32(T * s.n_heads * s.head_dim);
    ws.attn = f32(T * s.n_heads * s.head_dim);
    ws.k = f32(T * s.n_kv_heads * s.head_dim);
    ws.v = f32(T * s.n_kv_heads * s.head_dim);
    ws.gate = f32(T * ffn);
    ws.up = f32(T * ffn);
    ws.positions.resize(size_t(T));
    ws.logits = f32(std::min(T, kHeadRows) * s.vocab_size);
    if (s.is_moe()) ws.moe.allocate(b, s, T);
  }

  // One forward step over the items' tokens, concatenated (T rows in all).
  // all_logits (a single item only): logits for every row, not just the last.
  void step(Item* items, int64_t n_items, Workspace& ws, bool all_logits) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t H = s.hidden, hd = s.head_dim;
    int64_t T = 0;
    for (int64_t i = 0; i < n_items; ++i) {
      const Item& it = items[i];
      const int64_t pos0 = it.state->position() + it.state->rope_offset();
      for (int64_t t = 0; t < it.n; ++t) ws.positions[T + t] = int32_t(pos0 + t);
      embed_tokens(b, embed_, it.tokens, it.n, ws.x.f32() + T * H);
      if (it.inputs) place_embeddings(b, *it.inputs, ws.x.f32() + T * H, H);
      T += it.n;
    }

    float* x = ws.x.f32();
    const ForwardInputs* vision = n_items == 1 ? items[0].inputs : nullptr;
    std::vector<AttentionItem> attending(static_cast<size_t>(n_items));
    for (int64_t i = 0, row = 0; i < n_items; row += items[i].n, ++i)
      attending[size_t(i)] = AttentionItem{&items[i].state->cache, items[i].state->position(),
                                           items[i].n, row};
    for (int64_t li = 0; li < s.n_layers; ++li) {
      Layer& L = layers_[size_t(li)];
      // --- attention block
      b.rmsnorm(x, L.attn_norm.f32(), T, H, s.norm_eps, ws.h.f32());
      b.matmul(L.wq, ws.h.f32(), T, ws.q.f32());
      b.matmul(L.wk, ws.h.f32(), T, ws.k.f32());
      b.matmul(L.wv, ws.h.f32(), T, ws.v.f32());
      if (s.qk_norm) {
        b.rmsnorm(ws.q.f32(), L.q_norm.f32(), T * s.n_heads, hd, s.norm_eps, ws.q.f32());
        b.rmsnorm(ws.k.f32(), L.k_norm.f32(), T * s.n_kv_heads, hd, s.norm_eps, ws.k.f32());
      }
      if (L.uses_rope && vision && vision->mrope_positions) {
        mrope_.apply(b, ws.q.f32(), T, s.n_heads, hd, s.rope_dims, vision->mrope_positions,
                     s.rope_style);
        mrope_.apply(b, ws.k.f32(), T, s.n_kv_heads, hd, s.rope_dims, vision->mrope_positions,
                     s.rope_style);
      } else if (L.uses_rope) {
        b.rope(ws.q.f32(), T, s.n_heads, hd, s.rope_dims, ws.positions.data(), inv_freq_.f32(),
               s.rope_style);
        b.rope(ws.k.f32(), T, s.n_kv_heads, hd, s.rope_dims, ws.positions.data(),
               inv_freq_.f32(), s.rope_style);
      }
      attend_items(b, attending, li, s.n_heads, 1.0f / std::sqrt(float(hd)), ws.q.f32(), ws.k.f32(),
                   ws.v.f32(), ws.attn.f32());
      b.matmul(L.wo, ws.attn.f32(), T, ws.out.f32());
      b.add(x, ws.out.f32(), T * H);

      // --- feed-forward block
      b.rmsnorm(x, L.ffn_norm.f32(), T, H, s.norm_eps, ws.h.f32());
      if (L.is_moe) {
        L.moe.forward(b, s, ws.h.f32(), T, ws.moe, ws.out.f32());
      } else {
        b.matmul(L.w_gate, ws.h.f32(), T, ws.gate.f32());
        b.matmul(L.w_up, ws.h.f32(), T, ws.up.f32());
        b.silu_mul(ws.gate.f32(), ws.up.f32(), T * s.ffn_hidden, ws.gate.f32());
        b.matmul(L.w_down, ws.gate.f32(), T, ws.out.f32());
      }
      b.add(x, ws.out.f32(), T * H);
      if (vision) add_deepstack(b, *vision, li, x, H);
    }
    for (int64_t i = 0; i < n_items; ++i) advance(*items[i].state, items[i].n);

    std::vector<HeadRequest> wanted(static_cast<size_t>(n_items));
    for (int64_t i = 0, row = 0; i < n_items; row += items[i].n, ++i)
      wanted[size_t(i)] = head_request(items[i], row);
    head().run(b, x, wanted.data(), n_items, all_logits, ws.h.f32(), ws.logits.f32());
  }

  OutputHead head() const {
    const ModelSpec& s = spec_;
    return OutputHead{&output_, output_norm_.f32(), s.norm_eps, s.hidden, s.vocab_size, kHeadRows};
  }

  Weight embed_, output_;
  DeviceBuffer output_norm_, inv_freq_;
  MropeTables mrope_;
  std::vector<Layer> layers_;
};

}  // namespace

std::unique_ptr<Model> load_transformer(const ModelFile& file, Backend& backend) {
  return std::make_unique<Transformer>(file, backend);
}

}  // namespace kiln
