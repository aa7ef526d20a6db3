#include "kiln/model/building_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kiln/core/error.h"
#include "kiln/quant/dequantize.h"

namespace kiln {

DeviceBuffer load_vector(Backend& backend, const TensorView& t, int64_t expected_len,
                         bool unit_offset) {
  KILN_CHECK(t.numel() == expected_len, "tensor ", t.name, " has ", t.numel(),
             " values, the model's settings say ", expected_len);
  std::vector<float> host(static_cast<size_t>(expected_len));
  dequantize_row(t.dtype, t.data, host.data(), expected_len);
  if (unit_offset)
    for (float& v : host) v += 1.0f;
  DeviceBuffer buf(backend, host.size() * sizeof(float));
  backend.to_device(buf.get(), host.data(), buf.bytes());
  return buf;
}

std::vector<float> rope_inverse_frequencies(const ModelSpec& s, const TensorView* rope_freqs) {
  const int64_t half = s.rope_dims / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv[i] = float(1.0 / std::pow(double(s.rope_theta), double(2 * i) / double(s.rope_dims)));

  const RopeScaling& sc = s.rope_scaling;
  if (sc.kind == RopeScaling::Kind::Linear) {
    for (float& f : inv) f /= sc.factor;
  } else if (sc.kind == RopeScaling::Kind::Llama3 && !rope_freqs) {
    // Long wavelengths slow down by `factor`, short ones stay, the band in
    // between is blended (Llama 3.1's "llama3" rope type).
    const double low_wavelen = double(sc.original_context) / sc.low_freq_factor;
    const double high_wavelen = double(sc.original_context) / sc.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = float(f / sc.factor);
      } else {
        const double smooth = (double(sc.original_context) / wavelen - sc.low_freq_factor) /
                              (sc.high_freq_factor - sc.low_freq_factor);
        f = float((1.0 - smooth) * f / sc.factor + smooth * f);
      }
    }
  }
  if (rope_freqs) {
    // llama.cpp's converter bakes the Llama 3 scaling into per-dim divisors.
    KILN_CHECK(rope_freqs->numel() == half, "tensor rope_freqs.weight has ", rope_freqs->numel(),
               " values, expected ", half);
    std::vector<float> factors(static_cast<size_t>(half));
    dequantize_row(rope_freqs->dtype, rope_freqs->data, factors.data(), half);
    for (int64_t i = 0; i < half; ++i) inv[i] /= factors[i];
  }
  return inv;
}

}  // namespace kiln

namespace kiln {

TensorView copy_rows(const TensorView& t, const std::vector<int64_t>& rows,
                     const std::string& name, std::deque<std::vector<uint8_t>>& storage) {
  const size_t rb = t.row_bytes();
  std::vector<uint8_t>& buf = storage.emplace_back(rows.size() * rb);
  for (size_t i = 0; i < rows.size(); ++i) {
    KILN_CHECK(rows[i] >= 0 && rows[i] < t.rows(), "tensor ", t.name, ": row ", rows[i],
               " is outside its ", t.rows(), " rows");
    std::memcpy(buf.data() + i * rb, t.row(rows[i]), rb);
  }
  TensorView v;
  v.name = name;
  v.dtype = t.dtype;
  v.shape = {int64_t(rows.size()), t.cols()};
  v.data = buf.data();
  v.nbytes = buf.size();
  return v;
}

TensorView row_slice(const TensorView& t, int64_t row0, int64_t n, const std::string& name) {
  KILN_CHECK(row0 >= 0 && n >= 0 && row0 + n <= t.rows(), "tensor ", t.name, ": rows ", row0,
             "..", row0 + n, " are outside its ", t.rows(), " rows");
  TensorView v = t;
  v.name = name;
  v.shape = {n, t.cols()};
  v.data = t.row(row0);
  v.nbytes = size_t(n) * t.row_bytes();
  return v;
}

namespace {

// Expert e of a 3-D [E, rows, cols] tensor as a 2-D matrix, or a block of
// its rows (for gate and up fused into one tensor).
TensorView expert_slice(const TensorView& t, int64_t e, int64_t row0, int64_t rows) {
  TensorView v = t;
  const int64_t per_expert_rows = t.shape[1];
  v.shape = {rows, t.shape[2]};
  v.data = t.row(e * per_expert_rows + row0);
  v.nbytes = size_t(rows) * v.row_bytes();
  v.name = cat(t.name, "[", e, "]");
  return v;
}

}  // namespace

void MoeScratch::allocate(Backend& b, const ModelSpec& s, int64_t T) {
  auto f32 = [&](int64_t n) { return DeviceBuffer(b, size_t(std::max<int64_t>(n, 1)) * 4); };
  router_logits = f32(T * s.n_experts);
  in = f32(T * s.hidden);
  gate = f32(T * s.expert_ffn_hidden);
  up = f32(T * s.expert_ffn_hidden);
  out = f32(T * s.hidden);
  if (s.shared_expert_ffn_hidden > 0) {
    shared_gate = f32(T * s.shared_expert_ffn_hidden);
    shared_up = f32(T * s.shared_expert_ffn_hidden);
    shared_out = f32(T * s.hidden);
    shared_logit = f32(T);
  }
  ids.resize(size_t(T * s.n_experts_used));
  weights.resize(size_t(T * s.n_experts_used));
  rows.resize(size_t(T));
  scales.resize(size_t(T));
}

void MoeFfn::load(Backend& b, const ModelFile& f, const std::string& p, const ModelSpec& s,
                  size_t& weight_bytes) {
  const int64_t E = s.n_experts, I = s.expert_ffn_hidden, H = s.hidden;
  router_ = b.load_weight(f.get(p + "ffn_gate_inp.weight", {E, H}));
  weight_bytes += router_.view.nbytes;
  experts_.resize(size_t(E));
  // Each token reads k experts' weights, not all of them.
  auto count = [&](const Weight& w) { weight_bytes += w.view.nbytes * s.n_experts_used / E; };
  if (const TensorView* down = f.find(p + "ffn_down_exps.weight")) {
    KILN_CHECK(down->shape == std::vector<int64_t>({E, H, I}), "tensor ", down->name,
               " has shape ", shape_string(down->shape), ", expected ", shape_string({E, H, I}));
    const TensorView* gate = f.find(p + "ffn_gate_exps.weight");
    const TensorView* up = f.find(p + "ffn_up_exps.weight");
    const TensorView* gate_up = f.find(p + "ffn_gate_up_exps.weight");
    if (gate_up) {
      KILN_CHECK(gate_up->shape == std::vector<int64_t>({E, 2 * I, H}), "tensor ", gate_up->name,
                 " has shape ", shape_string(gate_up->shape));
    } else {
      KILN_CHECK(gate && up, f.path(), ": expert gate/up tensors of ", p, " are missing");
      for (const TensorView* t : {gate, up})
        KILN_CHECK(t->shape == std::vector<int64_t>({E, I, H}), "tensor ", t->name,
                   " has shape ", shape_string(t->shape), ", expected ", shape_string({E, I, H}));
    }
    for (int64_t e = 0; e < E; ++e) {
      Expert& x = experts_[size_t(e)];
      x.gate = b.load_weight(gate_up ? expert_slice(*gate_up, e, 0, I) : expert_slice(*gate, e, 0, I));
      x.up = b.load_weight(gate_up ? expert_slice(*gate_up, e, I, I) : expert_slice(*up, e, 0, I));
      x.down = b.load_weight(expert_slice(*down, e, 0, H));
      count(x.gate), count(x.up), count(x.down);
    }
  } else {
    for (int64_t e = 0; e < E; ++e) {
      Expert& x = experts_[size_t(e)];
      x.gate = b.load_weight(f.get(cat(p, "ffn_gate_exps.", e, ".weight"), {I, H}));
      x.up = b.load_weight(f.get(cat(p, "ffn_up_exps.", e, ".weight"), {I, H}));
      x.down = b.load_weight(f.get(cat(p, "ffn_down_exps.", e, ".weight"), {H, I}));
      count(x.gate), count(x.up), count(x.down);
    }
  }
  if (s.shared_expert_ffn_hidden > 0) {
    const int64_t S = s.shared_expert_ffn_hidden;
    shared_gate_ = b.load_weight(f.get(p + "ffn_gate_shexp.weight", {S, H}));
    shared_up_ = b.load_weight(f.get(p + "ffn_up_shexp.weight", {S, H}));
    shared_down_ = b.load_weight(f.get(p + "ffn_down_shexp.weight", {H, S}));
    const TensorView& gate = f.get(p + "ffn_gate_inp_shexp.weight");
    KILN_CHECK(gate.numel() == H, "tensor ", gate.name, " has ", gate.numel(), " values, expected ",
               H);
    TensorView g = gate;
    g.shape = {1, H};  // a vector in GGUF, a [1, H] matrix in safetensors
    shared_router_ = b.load_weight(g);
    for (const Weight* w : {&shared_gate_, &shared_up_, &shared_down_, &shared_router_})
      weight_bytes += w->view.nbytes;
  }
}

// Routes every token to its top-k experts, then runs each expert once over
// the tokens routed to it (a matrix product, not one product per token).
void MoeFfn::forward(Backend& b, const ModelSpec& s, const float* h, int64_t T, MoeScratch& ws,
                     float* out) const {
  const int64_t H = s.hidden, I = s.expert_ffn_hidden, k = s.n_experts_used;
  b.matmul(router_, h, T, ws.router_logits.f32());
  b.moe_route(ws.router_logits.f32(), T, s.n_experts, k, s.expert_weights_norm, ws.ids.data(),
              ws.weights.data());
  b.fill_zero(out, size_t(T * H) * sizeof(float));
  for (int64_t e = 0; e < s.n_experts; ++e) {
    int64_t n = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < k; ++j)
        if (ws.ids[t * k + j] == e) {
          ws.rows[n] = int32_t(t);
          ws.scales[n] = ws.weights[t * k + j];
          ++n;
        }
    if (n == 0) continue;
    const Expert& ex = experts_[size_t(e)];
    b.gather_rows(h, ws.rows.data(), n, H, ws.in.f32());
    b.matmul(ex.gate, ws.in.f32(), n, ws.gate.f32());
    b.matmul(ex.up, ws.in.f32(), n, ws.up.f32());
    b.silu_mul(ws.gate.f32(), ws.up.f32(), n * I, ws.gate.f32());
    b.matmul(ex.down, ws.gate.f32(), n, ws.out.f32());
    b.scatter_add_rows(out, ws.out.f32(), ws.rows.data(), ws.scales.data(), n, H);
  }
  if (shared_gate_) {
    const int64_t S = s.shared_expert_ffn_hidden;
    b.matmul(shared_gate_, h, T, ws.shared_gate.f32());
    b.matmul(shared_up_, h, T, ws.shared_up.f32());
    b.silu_mul(ws.shared_gate.f32(), ws.shared_up.f32(), T * S, ws.shared_gate.f32());
    b.matmul(shared_down_, ws.shared_gate.f32(), T, ws.shared_out.f32());
    b.matmul(shared_router_, h, T, ws.shared_logit.f32());
    b.sigmoid_mul(ws.shared_out.f32(), ws.shared_logit.f32(), T, H, /*per_row=*/true);
    b.add(out, ws.shared_out.f32(), T * H);
  }
}

void attend_items(Backend& b, const std::vector<AttentionItem>& items, int64_t layer,
                  int64_t n_heads, float scale, const float* q, const float* k, const float* v,
                  float* out) {
  bool decode_batch = items.size() > 1;
  for (const AttentionItem& it : items) decode_batch = decode_batch && it.n == 1;
  if (decode_batch) {
    std::vector<KvLayer> caches;
    std::vector<int64_t> starts;
    for (const AttentionItem& it : items) {
      caches.push_back(it.cache->layer(layer));
      starts.push_back(it.start);
    }
    b.attention_decode_batch(q, k, v, caches.data(), starts.data(), int64_t(items.size()), n_heads,
                             scale, out);
    return;
  }
  for (const AttentionItem& it : items) {
    const KvLayer kv = it.cache->layer(layer);
    const int64_t q_row = n_heads * kv.head_dim, kv_row = kv.n_kv_heads * kv.head_dim;
    b.store_kv(kv, k + it.row * kv_row, v + it.row * kv_row, it.n, it.start);
    AttentionParams ap;
    ap.n_tokens = it.n;
    ap.start = it.start;
    ap.n_heads = n_heads;
    ap.scale = scale;
    b.attention(q + it.row * q_row, kv, ap, out + it.row * q_row);
  }
}

void OutputHead::run(Backend& b, const float* x, const HeadRequest* reqs, int64_t n_reqs,
                     bool all_logits, float* h_buf, float* logits_buf) const {
  std::vector<void*> dest;        // where logits row j goes
  std::vector<int32_t*> picks;    // where the pick of row logit_rows + j goes
  std::vector<DrawSpec> draws;    // how it is drawn (sampled picks; none: argmax)
  std::vector<Candidate*> tops;   // where the candidates of row pick_end + j go
  int64_t top_k = 0;              // the most any request asked for
  int64_t rows = 0;
  // Rows of x go through the norm into h_buf in runs: a serving step's
  // one-token sequences sit in consecutive rows, and the norm is row by
  // row, so one call a run gives each row the bits it gets alone.
  int64_t run_src = 0, run_n = 0;
  auto end_run = [&] {
    if (run_n > 0)
      b.rmsnorm(x + run_src * hidden, norm, run_n, hidden, eps, h_buf + (rows - run_n) * hidden);
    run_n = 0;
  };
  auto norm_rows = [&](int64_t src, int64_t n) {
    if (run_n > 0 && src != run_src + run_n) end_run();
    if (run_n == 0) run_src = src;
    run_n += n;
    rows += n;
  };
  for (int64_t i = 0; i < n_reqs; ++i) {
    const HeadRequest& r = reqs[i];
    if (!r.logits || r.n <= 0) continue;
    const int64_t first = all_logits ? 0 : r.n - 1;
    norm_rows(r.row + first, r.n - first);
    for (int64_t t = first; t < r.n; ++t) dest.push_back(r.logits + (t - first) * vocab);
  }
  const int64_t logit_rows = rows;
  for (int64_t i = 0; i < n_reqs; ++i) {
    const HeadRequest& r = reqs[i];
    if (r.logits || !r.argmax || r.n <= 0) continue;
    norm_rows(r.row + r.n - 1, 1);
    picks.push_back(r.argmax);
    if (r.draw) draws.push_back(*r.draw);
  }
  KILN_CHECK(draws.empty() || draws.size() == picks.size(),
             "a step's picks are all drawn or all greedy");
  const int64_t pick_end = rows;
  auto wants_top = [](const HeadRequest& r) {
    return !r.logits && !r.argmax && r.top && r.n > 0;
  };
  // Every request gets the most candidates any asked for: the first top_k
  // of them in order are its own top_k.
  for (int64_t i = 0; i < n_reqs; ++i) {
    const HeadRequest& r = reqs[i];
    if (wants_top(r)) top_k = std::max(top_k, r.top_k);
  }
  std::vector<std::vector<Candidate>> wider;  // room for top_k where a request asked for fewer
  for (int64_t i = 0; i < n_reqs; ++i) {
    const HeadRequest& r = reqs[i];
    if (!wants_top(r)) continue;
    norm_rows(r.row + r.n - 1, 1);
    if (r.top_k == top_k) {
      tops.push_back(r.top);
    } else {
      wider.emplace_back(size_t(top_k));
      tops.push_back(wider.back().data());
    }
  }
  end_run();
  for (int64_t r = 0; r < rows; r += head_rows) {
    const int64_t n = std::min(head_rows, rows - r);
    const int64_t with_logits = std::clamp<int64_t>(logit_rows - r, 0, n);
    b.matmul(*output, h_buf + r * hidden, n, logits_buf);
    if (with_logits > 0)
      b.to_host_rows(dest.data() + r, logits_buf, size_t(vocab) * sizeof(float), with_logits);
    // The candidates are asked for before the argmax, which ends the step
    // (a recorded step on a GPU), so that they come back with it.
    const int64_t top_from = std::clamp<int64_t>(pick_end - r, 0, n);
    if (n > top_from)
      b.top_k_rows(logits_buf + top_from * vocab, n - top_from, vocab, top_k,
                   tops.data() + (r + top_from - pick_end));
    if (top_from > with_logits && draws.empty())
      b.argmax_rows(logits_buf + with_logits * vocab, top_from - with_logits, vocab,
                    picks.data() + (r + with_logits - logit_rows));
    else if (top_from > with_logits)
      b.draw_rows(logits_buf + with_logits * vocab, top_from - with_logits, vocab,
                  draws.data() + (r + with_logits - logit_rows),
                  picks.data() + (r + with_logits - logit_rows));
  }
  if (!tops.empty()) b.synchronize();
  size_t w = 0;
  for (int64_t i = 0; i < n_reqs; ++i) {
    const HeadRequest& r = reqs[i];
    if (!wants_top(r) || r.top_k == top_k) continue;
    // The narrower request's own: its top_k first candidates in order.
    std::vector<Candidate>& c = wider[w++];
    sort_candidates(c);
    write_candidates(c, size_t(r.top_k), r.top);
  }
}

}  // namespace kiln
