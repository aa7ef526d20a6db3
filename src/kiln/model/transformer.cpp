#include "kiln/model/transformer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kiln/core/error.h"
#include "kiln/model/building_blocks.h"

namespace kiln {
namespace {

struct ExpertWeights {
  Weight gate, up, down;
};

struct Layer {
  DeviceBuffer attn_norm, ffn_norm, q_norm, k_norm;
  Weight wq, wk, wv, wo;
  // dense feed-forward
  Weight w_gate, w_up, w_down;
  // mixture of experts
  Weight router;
  std::vector<ExpertWeights> experts;
  bool uses_rope = true;
  bool is_moe = false;
};

// Activations for one forward step of up to max_batch tokens.
struct Workspace {
  DeviceBuffer x, h, q, k, v, attn, out, gate, up, router_logits, logits;
  DeviceBuffer expert_in, expert_gate, expert_up, expert_out;
  std::vector<int32_t> positions, expert_ids, expert_rows;
  std::vector<float> expert_weights, expert_scales;
};

class TransformerState final : public SequenceState {
 public:
  TransformerState(Backend& b, const ModelSpec& s, const StateOptions& o, int64_t capacity)
      : cache(b, s.n_layers, s.n_kv_heads, s.head_dim, capacity, o.kv_dtype) {}
  size_t bytes() const override { return cache.bytes(); }
  KvCache cache;
  Workspace ws;
  int64_t max_batch = 0;
};

// Views expert e of a 3-D [E, rows, cols] tensor as a 2-D matrix, or a block
// of its rows (for gate and up fused into one tensor).
TensorView expert_slice(const TensorView& t, int64_t e, int64_t row0, int64_t rows) {
  TensorView v = t;
  const int64_t per_expert_rows = t.shape[1];
  v.shape = {rows, t.shape[2]};
  v.data = t.row(e * per_expert_rows + row0);
  v.nbytes = size_t(rows) * v.row_bytes();
  v.name = cat(t.name, "[", e, "]");
  return v;
}

class Transformer final : public Model {
 public:
  static constexpr int64_t kHeadRows = 16;

  Transformer(const ModelFile& f, Backend& b) : Model(f.spec(), b) { load(f); }

  std::unique_ptr<SequenceState> new_state(const StateOptions& o) override {
    int64_t capacity = o.context > 0 ? o.context : std::min<int64_t>(spec_.max_context, 4096);
    auto st = std::make_unique<TransformerState>(*backend_, spec_, o, capacity);
    set_capacity(*st, capacity);
    st->max_batch = std::max<int64_t>(1, std::min(o.max_batch, capacity));
    allocate(st->ws, st->max_batch);
    return st;
  }

  void forward(SequenceState& base, const int32_t* tokens, int64_t n, float* logits,
               bool all_logits) override {
    auto& st = static_cast<TransformerState&>(base);
    KILN_CHECK(st.position() + n <= st.capacity(), "context full: ", st.position() + n,
               " positions needed, the context holds ", st.capacity(), " (raise --ctx-size)");
    for (int64_t i = 0; i < n; ++i)
      KILN_CHECK(tokens[i] >= 0 && tokens[i] < spec_.vocab_size, "token id ", tokens[i],
                 " is outside the vocabulary (", spec_.vocab_size, " tokens)");
    for (int64_t done = 0; done < n;) {
      const int64_t chunk = std::min(st.max_batch, n - done);
      const bool last = done + chunk == n;
      float* chunk_logits = nullptr;
      if (logits && all_logits) chunk_logits = logits + done * spec_.vocab_size;
      if (logits && !all_logits && last) chunk_logits = logits;
      step(st, tokens + done, chunk, chunk_logits, all_logits);
      done += chunk;
    }
  }

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
        load_experts(f, p, L);
      else {
        L.w_gate = weight(p + "ffn_gate.weight", {s.ffn_hidden, H});
        L.w_up = weight(p + "ffn_up.weight", {s.ffn_hidden, H});
        L.w_down = weight(p + "ffn_down.weight", {H, s.ffn_hidden});
      }
    }
  }

  // Experts come as 3-D tensors (GGUF; transformers 5 with gate and up
  // fused) or one 2-D tensor per expert (older safetensors).
  void load_experts(const ModelFile& f, const std::string& p, Layer& L) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t E = s.n_experts, I = s.expert_ffn_hidden, H = s.hidden;
    L.router = b.load_weight(f.get(p + "ffn_gate_inp.weight", {E, H}));
    L.experts.resize(size_t(E));
    // Each token reads k experts' weights, not all of them.
    auto count = [&](const Weight& w) { weight_bytes_ += w.view.nbytes * s.n_experts_used / E; };
    if (const TensorView* down = f.find(p + "ffn_down_exps.weight")) {
      KILN_CHECK(down->shape == std::vector<int64_t>({E, H, I}), "tensor ", down->name,
                 " has shape ", shape_string(down->shape), ", expected ",
                 shape_string({E, H, I}));
      const TensorView* gate = f.find(p + "ffn_gate_exps.weight");
      const TensorView* up = f.find(p + "ffn_up_exps.weight");
      const TensorView* gate_up = f.find(p + "ffn_gate_up_exps.weight");
      if (gate_up) {
        KILN_CHECK(gate_up->shape == std::vector<int64_t>({E, 2 * I, H}), "tensor ",
                   gate_up->name, " has shape ", shape_string(gate_up->shape));
      } else {
        KILN_CHECK(gate && up, f.path(), ": expert gate/up tensors of ", p, " are missing");
        for (const TensorView* t : {gate, up})
          KILN_CHECK(t->shape == std::vector<int64_t>({E, I, H}), "tensor ", t->name,
                     " has shape ", shape_string(t->shape), ", expected ",
                     shape_string({E, I, H}));
      }
      for (int64_t e = 0; e < E; ++e) {
        ExpertWeights& x = L.experts[size_t(e)];
        x.gate = b.load_weight(gate_up ? expert_slice(*gate_up, e, 0, I) : expert_slice(*gate, e, 0, I));
        x.up = b.load_weight(gate_up ? expert_slice(*gate_up, e, I, I) : expert_slice(*up, e, 0, I));
        x.down = b.load_weight(expert_slice(*down, e, 0, H));
        count(x.gate), count(x.up), count(x.down);
      }
    } else {
      for (int64_t e = 0; e < E; ++e) {
        ExpertWeights& x = L.experts[size_t(e)];
        x.gate = b.load_weight(f.get(cat(p, "ffn_gate_exps.", e, ".weight"), {I, H}));
        x.up = b.load_weight(f.get(cat(p, "ffn_up_exps.", e, ".weight"), {I, H}));
        x.down = b.load_weight(f.get(cat(p, "ffn_down_exps.", e, ".weight"), {H, I}));
        count(x.gate), count(x.up), count(x.down);
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
    if (s.is_moe()) {
      ws.router_logits = f32(T * s.n_experts);
      ws.expert_in = f32(T * s.hidden);
      ws.expert_gate = f32(T * s.expert_ffn_hidden);
      ws.expert_up = f32(T * s.expert_ffn_hidden);
      ws.expert_out = f32(T * s.hidden);
      ws.expert_ids.resize(size_t(T * s.n_experts_used));
      ws.expert_weights.resize(size_t(T * s.n_experts_used));
      ws.expert_rows.resize(size_t(T));
      ws.expert_scales.resize(size_t(T));
    }
  }

  void step(TransformerState& st, const int32_t* tokens, int64_t T, float* logits,
            bool all_logits) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    Workspace& ws = st.ws;
    const int64_t H = s.hidden, hd = s.head_dim;
    const int64_t start = st.position();
    for (int64_t t = 0; t < T; ++t) ws.positions[t] = int32_t(start + t);

    float* x = ws.x.f32();
    b.embed(embed_, tokens, T, x);
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
      if (L.uses_rope) {
        b.rope(ws.q.f32(), T, s.n_heads, hd, s.rope_dims, ws.positions.data(), inv_freq_.f32(),
               s.rope_style);
        b.rope(ws.k.f32(), T, s.n_kv_heads, hd, s.rope_dims, ws.positions.data(),
               inv_freq_.f32(), s.rope_style);
      }
      const KvLayer& kv = st.cache.layer(li);
      b.store_kv(kv, ws.k.f32(), ws.v.f32(), T, start);
      AttentionParams ap;
      ap.n_tokens = T;
      ap.start = start;
      ap.n_heads = s.n_heads;
      ap.scale = 1.0f / std::sqrt(float(hd));
      b.attention(ws.q.f32(), kv, ap, ws.attn.f32());
      b.matmul(L.wo, ws.attn.f32(), T, ws.out.f32());
      b.add(x, ws.out.f32(), T * H);

      // --- feed-forward block
      b.rmsnorm(x, L.ffn_norm.f32(), T, H, s.norm_eps, ws.h.f32());
      if (L.is_moe) {
        moe(L, ws, T);
      } else {
        b.matmul(L.w_gate, ws.h.f32(), T, ws.gate.f32());
        b.matmul(L.w_up, ws.h.f32(), T, ws.up.f32());
        b.silu_mul(ws.gate.f32(), ws.up.f32(), T * s.ffn_hidden, ws.gate.f32());
        b.matmul(L.w_down, ws.gate.f32(), T, ws.out.f32());
      }
      b.add(x, ws.out.f32(), T * H);
    }
    advance(st, T);
    if (!logits) return;

    // Only the rows whose logits are wanted go through the head, a few rows
    // at a time so the buffer stays small next to a large vocabulary.
    const int64_t first = all_logits ? 0 : T - 1;
    b.rmsnorm(x + first * H, output_norm_.f32(), T - first, H, s.norm_eps, ws.h.f32());
    for (int64_t r = first; r < T; r += kHeadRows) {
      const int64_t rows = std::min(kHeadRows, T - r);
      b.matmul(output_, ws.h.f32() + (r - first) * H, rows, ws.logits.f32());
      b.to_host(logits + (r - first) * s.vocab_size, ws.logits.get(),
                size_t(rows * s.vocab_size) * sizeof(float));
    }
  }

  // Routes every token to its top-k experts, then runs each expert once over
  // the tokens routed to it (a matrix product, not one product per token).
  void moe(Layer& L, Workspace& ws, int64_t T) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t H = s.hidden, I = s.expert_ffn_hidden, k = s.n_experts_used;
    b.matmul(L.router, ws.h.f32(), T, ws.router_logits.f32());
    b.moe_route(ws.router_logits.f32(), T, s.n_experts, k, s.expert_weights_norm,
                ws.expert_ids.data(), ws.expert_weights.data());
    b.fill_zero(ws.out.get(), size_t(T * H) * sizeof(float));
    for (int64_t e = 0; e < s.n_experts; ++e) {
      int64_t n = 0;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < k; ++j)
          if (ws.expert_ids[t * k + j] == e) {
            ws.expert_rows[n] = int32_t(t);
            ws.expert_scales[n] = ws.expert_weights[t * k + j];
            ++n;
          }
      if (n == 0) continue;
      const ExpertWeights& ex = L.experts[size_t(e)];
      b.gather_rows(ws.h.f32(), ws.expert_rows.data(), n, H, ws.expert_in.f32());
      b.matmul(ex.gate, ws.expert_in.f32(), n, ws.expert_gate.f32());
      b.matmul(ex.up, ws.expert_in.f32(), n, ws.expert_up.f32());
      b.silu_mul(ws.expert_gate.f32(), ws.expert_up.f32(), n * I, ws.expert_gate.f32());
      b.matmul(ex.down, ws.expert_gate.f32(), n, ws.expert_out.f32());
      b.scatter_add_rows(ws.out.f32(), ws.expert_out.f32(), ws.expert_rows.data(),
                         ws.expert_scales.data(), n, H);
    }
  }

  Weight embed_, output_;
  DeviceBuffer output_norm_, inv_freq_;
  std::vector<Layer> layers_;
};

}  // namespace

std::unique_ptr<Model> load_transformer(const ModelFile& file, Backend& backend) {
  return std::make_unique<Transformer>(file, backend);
}

}  // namespace kiln
