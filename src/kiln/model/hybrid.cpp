#include "kiln/model/hybrid.h"

#include <algorithm>
#include <cmath>
#include <deque>

#include "kiln/core/error.h"
#include "kiln/model/building_blocks.h"
#include "kiln/model/stepped_model.h"
#include "kiln/model/multimodal_inputs.h"
#include "kiln/quant/dequantize.h"

namespace kiln {
namespace {

// Chunk length of the delta rule's parallel form, as transformers and
// flash-linear-attention use it.
constexpr int64_t kDeltaChunk = 64;

struct Layer {
  bool is_linear = false;
  bool is_moe = false;
  int64_t slot = 0;  // index among the layers of its kind (its state / cache)
  DeviceBuffer attn_norm, ffn_norm;
  // Gated DeltaNet
  Weight w_qkv, w_z, w_b, w_a, w_out;
  DeviceBuffer conv, A, dt_bias, ssm_norm;
  // gated full attention
  Weight wq, wgate, wk, wv, wo;
  DeviceBuffer q_norm, k_norm;
  // feed-forward
  Weight w_gate, w_up, w_down;
  MoeFfn moe;
};

struct Workspace {
  DeviceBuffer x, h, out, logits;
  DeviceBuffer q, gate, k, v, attn;                 // full attention
  DeviceBuffer proj, mixed, z, a, b, core;          // DeltaNet
  DeviceBuffer ffn_gate, ffn_up;
  MoeScratch moe;
  std::vector<int32_t> positions;
};

// A sequence's state: the KV cache of the attention layers and, for each
// DeltaNet layer, a fixed-size convolution window and recurrent state that do
// not grow with the context.
class HybridState final : public SequenceState {
 public:
  HybridState(Backend& b, const ModelSpec& s, const StateOptions& o, int64_t capacity,
              int64_t n_attn, int64_t n_linear)
      : backend_(&b), cache(b, o, n_attn, s.n_kv_heads, s.head_dim, capacity) {
    kv_ = &cache;
    const int64_t channels = 2 * s.linear_k_heads * s.linear_k_dim + s.linear_v_heads * s.linear_v_dim;
    for (int64_t i = 0; i < n_linear; ++i) {
      conv.emplace_back(b, size_t((s.linear_conv_kernel - 1) * channels) * sizeof(float));
      recurrent.emplace_back(
          b, size_t(s.linear_v_heads * s.linear_k_dim * s.linear_v_dim) * sizeof(float));
    }
    clear_recurrent();
  }
  size_t bytes() const override {
    size_t n = cache.bytes();
    for (const auto& c : conv) n += c.bytes();
    for (const auto& r : recurrent) n += r.bytes();
    return n;
  }
  void reset() override {
    SequenceState::reset();
    clear_recurrent();
  }
  // The recurrent state summarises every position at once: it can be kept
  // whole or dropped, not cut back to an earlier position.
  bool can_truncate(int64_t pos) const override { return pos == 0 || pos == position(); }
  void truncate(int64_t pos) override {
    if (pos == position()) return;
    KILN_CHECK(pos == 0, "a hybrid model's recurrent state cannot be cut back to position ", pos,
               " of ", position(), ": only keeping all of it or none is possible");
    reset();
  }
  // Sharing another sequence's prefix would need its recurrent state at that
  // position, which is not kept.
  bool share_prefix(const SequenceState&, int64_t) override { return false; }

  Backend* backend_;
  KvCache cache;
  std::vector<DeviceBuffer> conv, recurrent;
  Workspace ws;
  int64_t max_batch = 0;

 private:
  void clear_recurrent() {
    for (auto& c : conv) backend_->fill_zero(c.get(), c.bytes());
    for (auto& r : recurrent) backend_->fill_zero(r.get(), r.bytes());
  }
};

// One sequence's tokens within a step, and where they sit in it.
struct Item : StepItem<HybridState> {
  int64_t row = 0;  // its first row among the step's activations
};

class Hybrid final : public SteppedModel<Hybrid, HybridState, Item, Workspace> {
  using Base = SteppedModel<Hybrid, HybridState, Item, Workspace>;
  friend Base;
  static constexpr bool kStepsInParts = false;

 public:
  Hybrid(const ModelFile& f, Backend& b) : Base(f.spec(), b) {
    // A gated DeltaNet head whose output nearly cancels is scaled up ~1000x
    // by the norm behind it: bf16-rounded activations put the fixtures'
    // logits 0.3-0.45 (relative) from the exact ones on the GPU.
    b.set_exact_bf16_products(true);
    load(f);
  }

  std::unique_ptr<SequenceState> new_state(const StateOptions& o) override {
    auto st = make_state<HybridState>(o, n_attn_, n_linear_);
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
  int64_t channels() const {
    return 2 * spec_.linear_k_heads * spec_.linear_k_dim + spec_.linear_v_heads * spec_.linear_v_dim;
  }

  Weight weight(const TensorView& t) {
    Weight w = backend_->load_weight(t);
    weight_bytes_ += w.view.nbytes;
    return w;
  }
  Weight weight(const ModelFile& f, const std::string& name, std::vector<int64_t> shape) {
    return weight(f.get(name, shape));
  }

  // A 1-D parameter as f32 with a transform applied on the host.
  template <class Fn>
  DeviceBuffer vector_with(const TensorView& t, int64_t n, Fn fn) {
    KILN_CHECK(t.numel() == n, "tensor ", t.name, " has ", t.numel(), " values, expected ", n);
    std::vector<float> host(static_cast<size_t>(n));
    dequantize_row(t.dtype, t.data, host.data(), n);
    for (float& v : host) v = fn(v);
    DeviceBuffer buf(*backend_, host.size() * sizeof(float));
    backend_->to_device(buf.get(), host.data(), buf.bytes());
    return buf;
  }

  void load(const ModelFile& f) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t H = s.hidden;
    const bool offset = s.norm_unit_offset;
    embed_ = b.load_weight(f.get("token_embd.weight", {s.vocab_size, H}));
    if (f.find("output.weight")) {
      output_ = weight(f, "output.weight", {s.vocab_size, H});
    } else {
      output_ = embed_;  // tied embeddings
      weight_bytes_ += embed_.view.nbytes;
    }
    output_norm_ = load_vector(b, f.get("output_norm.weight"), H, offset);
    auto inv = rope_inverse_frequencies(s, nullptr);
    inv_freq_ = DeviceBuffer(b, std::max<size_t>(1, inv.size()) * sizeof(float));
    if (!inv.empty()) b.to_device(inv_freq_.get(), inv.data(), inv.size() * sizeof(float));
    mrope_.init(b, s, inv);

    layers_.resize(size_t(s.n_layers));
    for (int64_t i = 0; i < s.n_layers; ++i) {
      Layer& L = layers_[size_t(i)];
      const std::string p = cat("blk.", i, ".");
      L.is_linear = !s.layer_is_linear.empty() && s.layer_is_linear[i];
      L.is_moe = s.layer_is_moe[i];
      L.slot = L.is_linear ? n_linear_++ : n_attn_++;
      L.attn_norm = load_vector(b, f.get(p + "attn_norm.weight"), H, offset);
      // llama.cpp names the norm before the feed-forward block post_attention_norm here.
      const TensorView* fn = f.find(p + "ffn_norm.weight");
      L.ffn_norm = load_vector(b, fn ? *fn : f.get(p + "post_attention_norm.weight"), H, offset);
      if (L.is_linear)
        load_linear(f, p, L);
      else
        load_attention(f, p, L);
      if (L.is_moe) {
        L.moe.load(b, f, p, s, weight_bytes_);
      } else {
        L.w_gate = weight(f, p + "ffn_gate.weight", {s.ffn_hidden, H});
        L.w_up = weight(f, p + "ffn_up.weight", {s.ffn_hidden, H});
        L.w_down = weight(f, p + "ffn_down.weight", {H, s.ffn_hidden});
      }
    }
  }

  void load_linear(const ModelFile& f, const std::string& p, Layer& L) {
    const ModelSpec& s = spec_;
    const int64_t H = s.hidden, nk = s.linear_k_heads, nv = s.linear_v_heads;
    const int64_t dk = s.linear_k_dim, dv = s.linear_v_dim, r = nv / nk, C = channels();
    if (f.find(p + "attn_qkv.weight")) {
      L.w_qkv = weight(f, p + "attn_qkv.weight", {C, H});
      L.w_z = weight(f, p + "attn_gate.weight", {nv * dv, H});
    } else {
      // Qwen3-Next's fused projection: per key head [q, k, v (r heads), z (r heads)].
      const TensorView& t = f.get(p + "ssm_in.weight", {C + nv * dv, H});
      const int64_t G = 2 * dk + 2 * r * dv;
      std::vector<int64_t> qkv, z;
      for (int64_t part = 0; part < 3; ++part)  // all q, then all k, then all v
        for (int64_t g = 0; g < nk; ++g) {
          const int64_t off = part == 0 ? 0 : part == 1 ? dk : 2 * dk;
          const int64_t len = part == 2 ? r * dv : dk;
          for (int64_t j = 0; j < len; ++j) qkv.push_back(g * G + off + j);
        }
      for (int64_t g = 0; g < nk; ++g)
        for (int64_t j = 0; j < r * dv; ++j) z.push_back(g * G + 2 * dk + r * dv + j);
      L.w_qkv = weight(copy_rows(t, qkv, p + "attn_qkv.weight", owned_));
      L.w_z = weight(copy_rows(t, z, p + "attn_gate.weight", owned_));
    }
    if (f.find(p + "ssm_beta.weight")) {
      L.w_b = weight(f, p + "ssm_beta.weight", {nv, H});
      L.w_a = weight(f, p + "ssm_alpha.weight", {nv, H});
    } else {
      // Fused per key head: [b (r heads), a (r heads)].
      const TensorView& t = f.get(p + "ssm_ba.weight", {2 * nv, H});
      std::vector<int64_t> rb, ra;
      for (int64_t g = 0; g < nk; ++g)
        for (int64_t j = 0; j < r; ++j) rb.push_back(g * 2 * r + j), ra.push_back(g * 2 * r + r + j);
      L.w_b = weight(copy_rows(t, rb, p + "ssm_beta.weight", owned_));
      L.w_a = weight(copy_rows(t, ra, p + "ssm_alpha.weight", owned_));
    }
    const int64_t K = s.linear_conv_kernel;
    L.conv = load_vector(*backend_, f.get(p + "ssm_conv1d.weight"), C * K);
    if (const TensorView* a = f.find(p + "ssm_a"))
      L.A = load_vector(*backend_, *a, nv);  // stored as -exp(A_log)
    else
      L.A = vector_with(f.get(p + "ssm_a_log"), nv, [](float v) { return -std::exp(v); });
    L.dt_bias = load_vector(*backend_, f.get(p + "ssm_dt.bias"), nv);
    L.ssm_norm = load_vector(*backend_, f.get(p + "ssm_norm.weight"), dv);  // never zero-centred
    L.w_out = weight(f, p + "ssm_out.weight", {H, nv * dv});
  }

  void load_attention(const ModelFile& f, const std::string& p, Layer& L) {
    const ModelSpec& s = spec_;
    const int64_t H = s.hidden, hd = s.head_dim, nh = s.n_heads;
    if (s.attn_output_gate) {
      // Per head [q (head_dim), gate (head_dim)]: split into two matrices.
      const TensorView& t = f.get(p + "attn_q.weight", {2 * nh * hd, H});
      std::vector<int64_t> order;
      for (int64_t part = 0; part < 2; ++part)
        for (int64_t h = 0; h < nh; ++h)
          for (int64_t j = 0; j < hd; ++j) order.push_back((2 * h + part) * hd + j);
      TensorView both = copy_rows(t, order, p + "attn_q.weight", owned_);
      L.wq = weight(row_slice(both, 0, nh * hd, p + "attn_q.weight[q]"));
      L.wgate = weight(row_slice(both, nh * hd, nh * hd, p + "attn_q.weight[gate]"));
    } else {
      L.wq = weight(f, p + "attn_q.weight", {nh * hd, H});
    }
    L.wk = weight(f, p + "attn_k.weight", {s.n_kv_heads * hd, H});
    L.wv = weight(f, p + "attn_v.weight", {s.n_kv_heads * hd, H});
    L.wo = weight(f, p + "attn_output.weight", {H, nh * hd});
    if (s.qk_norm) {
      L.q_norm = load_vector(*backend_, f.get(p + "attn_q_norm.weight"), hd, s.norm_unit_offset);
      L.k_norm = load_vector(*backend_, f.get(p + "attn_k_norm.weight"), hd, s.norm_unit_offset);
    }
  }

  void allocate(Workspace& ws, int64_t T) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    auto f32 = [&](int64_t n) { return DeviceBuffer(b, size_t(std::max<int64_t>(n, 1)) * 4); };
    const int64_t qd = s.n_heads * s.head_dim, kvd = s.n_kv_heads * s.head_dim;
    ws.x = f32(T * s.hidden);
    ws.h = f32(T * s.hidden);
    ws.out = f32(T * s.hidden);
    ws.logits = f32(std::min(T, kHeadRows) * s.vocab_size);
    ws.positions.resize(size_t(T));
    if (n_attn_ > 0) {
      ws.q = f32(T * qd);
      ws.gate = f32(T * qd);
      ws.attn = f32(T * qd);
      ws.k = f32(T * kvd);
      ws.v = f32(T * kvd);
    }
    if (n_linear_ > 0) {
      const int64_t vd = s.linear_v_heads * s.linear_v_dim;
      ws.proj = f32(T * channels());
      ws.mixed = f32(T * channels());
      ws.z = f32(T * vd);
      ws.core = f32(T * vd);
      ws.a = f32(T * s.linear_v_heads);
      ws.b = f32(T * s.linear_v_heads);
    }
    ws.ffn_gate = f32(T * s.ffn_hidden);
    ws.ffn_up = f32(T * s.ffn_hidden);
    if (s.is_moe()) ws.moe.allocate(b, s, T);
  }

  void linear_attention(Item* items, int64_t n_items, Layer& L, Workspace& ws, int64_t T) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t nv = s.linear_v_heads, dv = s.linear_v_dim, C = channels();
    // The inputs of the delta rule, summed in double (see matmul_sum_f64):
    // with f32 sums a nearly cancelling head lands ~1e-4 from the exact
    // logits, as far as an f32 reference does; with these, ~2e-5.
    b.matmul_sum_f64(L.w_qkv, ws.h.f32(), T, ws.proj.f32());
    b.matmul_sum_f64(L.w_z, ws.h.f32(), T, ws.z.f32());
    b.matmul_sum_f64(L.w_b, ws.h.f32(), T, ws.b.f32());
    b.matmul_sum_f64(L.w_a, ws.h.f32(), T, ws.a.f32());
    // g over a, beta over b
    b.deltanet_gates(ws.a.f32(), ws.b.f32(), L.A.f32(), L.dt_bias.f32(), T, nv, ws.a.f32(),
                     ws.b.f32());
    DeltaRuleParams dp;
    dp.n_k_heads = s.linear_k_heads;
    dp.n_v_heads = nv;
    dp.head_k_dim = s.linear_k_dim;
    dp.head_v_dim = dv;
    dp.tiled_heads = s.linear_tiled_heads;
    dp.chunk = kDeltaChunk;
    for (int64_t i = 0; i < n_items; ++i) {
      const Item& it = items[i];
      HybridState& st = *it.state;
      const int64_t r = it.row;
      b.conv1d_silu(ws.proj.f32() + r * C, it.n, C, L.conv.f32(), s.linear_conv_kernel,
                    st.conv[size_t(L.slot)].f32(), ws.mixed.f32() + r * C);
      dp.n_tokens = it.n;
      b.gated_delta_rule(ws.mixed.f32() + r * C, ws.a.f32() + r * nv, ws.b.f32() + r * nv,
                         st.recurrent[size_t(L.slot)].f32(), dp, ws.core.f32() + r * nv * dv);
    }
    b.rmsnorm_gated(ws.core.f32(), L.ssm_norm.f32(), ws.z.f32(), T * nv, dv, s.norm_eps,
                    ws.core.f32());
    b.matmul(L.w_out, ws.core.f32(), T, ws.out.f32());
  }

  void full_attention(const std::vector<AttentionItem>& attending, Layer& L, Workspace& ws,
                      int64_t T, const ForwardInputs* vision) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t hd = s.head_dim;
    b.matmul(L.wq, ws.h.f32(), T, ws.q.f32());
    if (L.wgate) b.matmul(L.wgate, ws.h.f32(), T, ws.gate.f32());
    b.matmul(L.wk, ws.h.f32(), T, ws.k.f32());
    b.matmul(L.wv, ws.h.f32(), T, ws.v.f32());
    if (s.qk_norm) {
      b.rmsnorm(ws.q.f32(), L.q_norm.f32(), T * s.n_heads, hd, s.norm_eps, ws.q.f32());
      b.rmsnorm(ws.k.f32(), L.k_norm.f32(), T * s.n_kv_heads, hd, s.norm_eps, ws.k.f32());
    }
    if (s.rope_dims > 0 && vision && vision->mrope_positions) {
      mrope_.apply(b, ws.q.f32(), T, s.n_heads, hd, s.rope_dims, vision->mrope_positions,
                   s.rope_style);
      mrope_.apply(b, ws.k.f32(), T, s.n_kv_heads, hd, s.rope_dims, vision->mrope_positions,
                   s.rope_style);
    } else if (s.rope_dims > 0) {
      b.rope(ws.q.f32(), T, s.n_heads, hd, s.rope_dims, ws.positions.data(), inv_freq_.f32(),
             s.rope_style);
      b.rope(ws.k.f32(), T, s.n_kv_heads, hd, s.rope_dims, ws.positions.data(), inv_freq_.f32(),
             s.rope_style);
    }
    attend_items(b, attending, L.slot, s.n_heads, 1.0f / std::sqrt(float(hd)), ws.q.f32(),
                 ws.k.f32(), ws.v.f32(), ws.attn.f32());
    if (L.wgate) b.sigmoid_mul(ws.attn.f32(), ws.gate.f32(), T, s.n_heads * hd, false);
    b.matmul(L.wo, ws.attn.f32(), T, ws.out.f32());
  }

  // One forward step over the items' tokens, concatenated (T rows in all).
  // all_logits (a single item only): logits for every row, not just the last.
  void step(Item* items, int64_t n_items, Workspace& ws, bool all_logits) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t H = s.hidden;
    float* x = ws.x.f32();
    int64_t T = 0;
    for (int64_t i = 0; i < n_items; ++i) {
      Item& it = items[i];
      it.row = T;
      const int64_t pos0 = it.state->position() + it.state->rope_offset();
      for (int64_t t = 0; t < it.n; ++t) ws.positions[size_t(T + t)] = int32_t(pos0 + t);
      embed_tokens(b, embed_, it.tokens, it.n, x + T * H);
      if (it.inputs) place_embeddings(b, *it.inputs, x + T * H, H);
      T += it.n;
    }
    const ForwardInputs* vision = n_items == 1 ? items[0].inputs : nullptr;
    std::vector<AttentionItem> attending(static_cast<size_t>(n_items));
    for (int64_t i = 0; i < n_items; ++i)
      attending[size_t(i)] = AttentionItem{&items[i].state->cache, items[i].state->position(),
                                           items[i].n, items[i].row};
    for (Layer& L : layers_) {
      b.rmsnorm(x, L.attn_norm.f32(), T, H, s.norm_eps, ws.h.f32());
      if (L.is_linear)
        linear_attention(items, n_items, L, ws, T);
      else
        full_attention(attending, L, ws, T, vision);
      b.add(x, ws.out.f32(), T * H);

      b.rmsnorm(x, L.ffn_norm.f32(), T, H, s.norm_eps, ws.h.f32());
      if (L.is_moe) {
        L.moe.forward(b, s, ws.h.f32(), T, ws.moe, ws.out.f32());
      } else {
        b.matmul(L.w_gate, ws.h.f32(), T, ws.ffn_gate.f32());
        b.matmul(L.w_up, ws.h.f32(), T, ws.ffn_up.f32());
        b.silu_mul(ws.ffn_gate.f32(), ws.ffn_up.f32(), T * s.ffn_hidden, ws.ffn_gate.f32());
        b.matmul(L.w_down, ws.ffn_gate.f32(), T, ws.out.f32());
      }
      b.add(x, ws.out.f32(), T * H);
    }
    for (int64_t i = 0; i < n_items; ++i) advance(*items[i].state, items[i].n);

    std::vector<HeadRequest> wanted(static_cast<size_t>(n_items));
    for (int64_t i = 0; i < n_items; ++i)
      wanted[size_t(i)] = head_request(items[i], items[i].row);
    const OutputHead head{&output_, output_norm_.f32(), s.norm_eps, H, s.vocab_size, kHeadRows};
    head.run(b, x, wanted.data(), n_items, all_logits, ws.h.f32(), ws.logits.f32());
  }

  Weight embed_, output_;
  DeviceBuffer output_norm_, inv_freq_;
  MropeTables mrope_;
  std::vector<Layer> layers_;
  int64_t attention_layers() const override { return n_attn_; }

  int64_t n_attn_ = 0, n_linear_ = 0;
  // Re-ordered copies of fused weights (see copy_rows); the Weights point here.
  std::deque<std::vector<uint8_t>> owned_;
};

}  // namespace

std::unique_ptr<Model> load_hybrid(const ModelFile& file, Backend& backend) {
  return std::make_unique<Hybrid>(file, backend);
}

}  // namespace kiln
