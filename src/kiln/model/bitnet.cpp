#include "kiln/model/bitnet.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>

#include "kiln/core/error.h"
#include "kiln/core/half.h"
#include "kiln/io/gguf.h"
#include "kiln/model/building_blocks.h"
#include "kiln/model/stepped_model.h"
#include "kiln/quant/dequantize.h"
#include "kiln/quant/ternary.h"

namespace kiln {
namespace {

// transformers' BitLinear packing: a [rows / 4, cols] uint8 tensor whose
// byte (i, c) holds rows i, i + rows/4, i + rows/2, i + 3 rows/4 of column c
// in bits 0-1, 2-3, 4-5, 6-7, as code = value + 1.
void unpack_hf_ternary(const TensorView& v, int64_t rows, int64_t cols, float scale, float* out) {
  const int64_t R = rows / 4;
  const auto* p = static_cast<const uint8_t*>(v.data);
  for (int64_t r = 0; r < rows; ++r) {
    const int shift = int(2 * (r / R));
    const uint8_t* src = p + (r % R) * cols;
    for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = float(((src[c] >> shift) & 3) - 1) * scale;
  }
}

// Weights already ternary (every nonzero |w| the same): a converter's output.
bool already_ternary(const std::vector<float>& w, float* magnitude) {
  float m = 0.0f;
  for (float x : w) {
    const float a = std::fabs(x);
    if (a == 0.0f) continue;
    if (m == 0.0f) m = a;
    if (std::fabs(a - m) > 1e-6f * m) return false;
  }
  *magnitude = m;
  return true;
}

}  // namespace

I2sLayout bitnet_i2s_layout(const ModelFile& f, std::string* source) {
  if (const GgufFile* g = f.gguf()) {
    const std::string v = g->get_string_or(kI2sLayoutKey, "");
    if (!v.empty()) {
      if (source) *source = std::string("metadata ") + kI2sLayoutKey;
      try {
        return parse_i2s_layout(v);
      } catch (const Error& e) {
        fail(f.path(), ": ", kI2sLayoutKey, ": ", e.what());
      }
    }
  }
  if (const char* env = std::getenv("KILN_I2S_LAYOUT"); env && *env) {
    if (source) *source = "KILN_I2S_LAYOUT";
    try {
      return parse_i2s_layout(env);
    } catch (const Error& e) {
      fail("KILN_I2S_LAYOUT: ", e.what());
    }
  }
  if (source)
    *source = "the default, as bitnet.cpp's files do not say; KILN_I2S_LAYOUT=arm or 1x4 picks another";
  return I2sLayout::X86;
}

const std::vector<std::string>& bitnet_projection_names() {
  static const std::vector<std::string> names = {"attn_q",   "attn_k", "attn_v", "attn_output",
                                                 "ffn_gate", "ffn_up", "ffn_down"};
  return names;
}

std::vector<float> bitnet_ternary_values(const ModelFile& f, const std::string& name,
                                         int64_t rows, int64_t cols) {
  const TensorView& v = f.get(name);
  std::vector<float> out(size_t(rows * cols));
  if (v.dtype == DType::U8) {
    KILN_CHECK(rows % 4 == 0 && v.shape == std::vector<int64_t>({rows / 4, cols}), f.path(),
               ": packed ternary tensor ", name, " has shape ", shape_string(v.shape),
               ", expected [", rows / 4, ", ", cols, "]");
    const std::string scale_name = name.substr(0, name.size() - 7) + ".weight_scale";
    const TensorView& s = f.get(scale_name);
    KILN_CHECK(s.numel() == 1, f.path(), ": ", scale_name, " should hold one value, it has ",
               s.numel());
    float ws = 0.0f;
    dequantize_row(s.dtype, s.data, &ws, 1);
    KILN_CHECK(ws > 0.0f && std::isfinite(ws), f.path(), ": ", scale_name, " is ", ws);
    // BitLinear divides its output by weight_scale.
    unpack_hf_ternary(v, rows, cols, 1.0f / ws, out.data());
    return out;
  }
  KILN_CHECK(v.shape == std::vector<int64_t>({rows, cols}), f.path(), ": tensor ", name,
             " has shape ", shape_string(v.shape), ", the model's settings say [", rows, ", ",
             cols, "]");
  if (v.dtype == DType::I2_S) {
    const I2sLayout layout = bitnet_i2s_layout(f);
    KILN_CHECK(i2s_layout_fits(layout, rows, cols), f.path(), ": I2_S tensor ", name, " [", rows,
               ", ", cols, "] does not fit the ", i2s_layout_name(layout), " layout");
    dequantize_i2s(v.data, rows, cols, layout, out.data());
    return out;
  }
  KILN_CHECK(can_dequantize(v.dtype), f.path(), ": tensor ", name, " has type ",
             dtype_name(v.dtype), ", which kiln cannot read");
  for (int64_t r = 0; r < rows; ++r) dequantize_row(v.dtype, v.row(r), out.data() + r * cols, cols);
  float m = 0.0f;
  if (already_ternary(out, &m)) return out;
  // b1.58's weight quantization: s = 1 / max(mean |W|, 1e-5), W = clip(round(W s), -1, 1) / s.
  // The released checkpoint keeps s as its bf16 weight_scale, and BitLinear
  // divides by that: dividing by the same bf16 value makes the master weights
  // compute exactly what the released ones do (f32 s differs by up to 0.4%).
  double sum = 0;
  for (float x : out) sum += std::fabs(x);
  const float mean = std::max(float(sum / double(out.size())), 1e-5f);
  const float s = 1.0f / mean, stored = bf16_to_f32(f32_to_bf16(s));
  for (float& x : out) x = std::clamp(std::nearbyint(x * s), -1.0f, 1.0f) / stored;
  return out;
}

namespace {

struct Layer {
  DeviceBuffer attn_norm, ffn_norm, attn_sub_norm, ffn_sub_norm;
  Weight wq, wk, wv, wo, w_gate, w_up, w_down;
};

struct Workspace {
  DeviceBuffer x, h, q, k, v, attn, out, gate, up, logits;
  std::vector<int32_t> positions;
};

using BitnetState = CachedState<Workspace>;
using Item = StepItem<BitnetState>;

class Bitnet final : public SteppedModel<Bitnet, BitnetState, Item, Workspace> {
  using Base = SteppedModel<Bitnet, BitnetState, Item, Workspace>;
  friend Base;
  static constexpr bool kStepsInParts = false;

 public:
  Bitnet(const ModelFile& f, Backend& b) : Base(f.spec(), b) { load(f); }

  std::unique_ptr<SequenceState> new_state(const StateOptions& o) override {
    return make_state<BitnetState>(o);
  }

 private:
  // A projection the ternary kernel runs on: a TQ1_0/TQ2_0/I2_S tensor as
  // it is in the file, any other layout turned into I2_S once here.
  Weight ternary(const ModelFile& f, const std::string& name, int64_t rows, int64_t cols) {
    Backend& b = *backend_;
    const TensorView& v = f.get(name);
    Weight w;
    const bool i2s = v.dtype == DType::I2_S;
    const I2sLayout layout = i2s ? bitnet_i2s_layout(f) : I2sLayout::X86;
    if (is_ternary_type(v.dtype) && (i2s || cols % 256 == 0) && layout == I2sLayout::X86) {
      w = b.load_weight(f.get(name, {rows, cols}));
    } else if (i2s && i2s_layout_fits(I2sLayout::X86, rows, cols)) {
      // bitnet.cpp's ARM or 1x4 packing: the same codes and scale, moved
      // once into the x86 layout the kernels read.
      const TensorView& src = f.get(name, {rows, cols});
      KILN_CHECK(i2s_layout_fits(layout, rows, cols), f.path(), ": I2_S tensor ", name, " [",
                 rows, ", ", cols, "] does not fit the ", i2s_layout_name(layout), " layout");
      storage_.emplace_back(i2s_tensor_bytes(rows * cols));
      i2s_repack_to_x86(src.data, rows, cols, layout, storage_.back().data());
      TensorView t = src;
      t.data = storage_.back().data();
      t.nbytes = storage_.back().size();
      w = b.load_weight(t);
    } else {
      const std::vector<float> values = bitnet_ternary_values(f, name, rows, cols);
      storage_.emplace_back(i2s_tensor_bytes(rows * cols));
      quantize_i2s(values.data(), rows * cols, storage_.back().data());
      TensorView t;
      t.name = name;
      t.dtype = DType::I2_S;
      t.shape = {rows, cols};
      t.data = storage_.back().data();
      t.nbytes = storage_.back().size();
      w = b.load_weight(t);
    }
    weight_bytes_ += w.view.nbytes;
    return w;
  }

  void load(const ModelFile& f) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t H = s.hidden, hd = s.head_dim, F = s.ffn_hidden;
    KILN_CHECK(s.n_heads * hd > 0 && F > 0, f.path(), ": BitNet needs heads and a feed-forward size");
    embed_ = b.load_weight(f.get("token_embd.weight", {s.vocab_size, H}));
    if (f.find("output.weight")) {
      output_ = b.load_weight(f.get("output.weight", {s.vocab_size, H}));
    } else {
      output_ = embed_;
    }
    weight_bytes_ += output_.view.nbytes;
    output_norm_ = load_vector(b, f.get("output_norm.weight"), H);
    auto inv = rope_inverse_frequencies(s, f.find("rope_freqs.weight"));
    inv_freq_ = DeviceBuffer(b, inv.size() * sizeof(float));
    b.to_device(inv_freq_.get(), inv.data(), inv_freq_.bytes());

    layers_.resize(size_t(s.n_layers));
    for (int64_t i = 0; i < s.n_layers; ++i) {
      Layer& L = layers_[size_t(i)];
      const std::string p = cat("blk.", i, ".");
      L.attn_norm = load_vector(b, f.get(p + "attn_norm.weight"), H);
      L.ffn_norm = load_vector(b, f.get(p + "ffn_norm.weight"), H);
      L.attn_sub_norm = load_vector(b, f.get(p + "attn_sub_norm.weight"), s.n_heads * hd);
      L.ffn_sub_norm = load_vector(b, f.get(p + "ffn_sub_norm.weight"), F);
      L.wq = ternary(f, p + "attn_q.weight", s.n_heads * hd, H);
      L.wk = ternary(f, p + "attn_k.weight", s.n_kv_heads * hd, H);
      L.wv = ternary(f, p + "attn_v.weight", s.n_kv_heads * hd, H);
      L.wo = ternary(f, p + "attn_output.weight", H, s.n_heads * hd);
      L.w_gate = ternary(f, p + "ffn_gate.weight", F, H);
      L.w_up = ternary(f, p + "ffn_up.weight", F, H);
      L.w_down = ternary(f, p + "ffn_down.weight", H, F);
    }
  }

  void allocate(Workspace& ws, int64_t T) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    auto f32 = [&](int64_t n) { return DeviceBuffer(b, size_t(n) * sizeof(float)); };
    ws.x = f32(T * s.hidden);
    ws.h = f32(T * s.hidden);
    ws.out = f32(T * s.hidden);
    ws.q = f32(T * s.n_heads * s.head_dim);
    ws.attn = f32(T * s.n_heads * s.head_dim);
    ws.k = f32(T * s.n_kv_heads * s.head_dim);
    ws.v = f32(T * s.n_kv_heads * s.head_dim);
    ws.gate = f32(T * s.ffn_hidden);
    ws.up = f32(T * s.ffn_hidden);
    ws.positions.resize(size_t(T));
    ws.logits = f32(std::min(T, kHeadRows) * s.vocab_size);
  }

  // One forward step over the items' tokens, concatenated (T rows in all).
  // all_logits (a single item only): logits for every row, not just the last.
  void step(Item* items, int64_t n_items, Workspace& ws, bool all_logits) {
    const ModelSpec& s = spec_;
    Backend& b = *backend_;
    const int64_t H = s.hidden, hd = s.head_dim, F = s.ffn_hidden;
    float* x = ws.x.f32();
    std::vector<AttentionItem> attending(static_cast<size_t>(n_items));
    int64_t T = 0;
    for (int64_t i = 0; i < n_items; ++i) {
      const Item& it = items[i];
      const int64_t start = it.state->position();
      attending[size_t(i)] = AttentionItem{&it.state->cache, start, it.n, T};
      for (int64_t t = 0; t < it.n; ++t) ws.positions[size_t(T + t)] = int32_t(start + t);
      embed_tokens(b, embed_, it.tokens, it.n, x + T * H);
      T += it.n;
    }
    for (int64_t li = 0; li < s.n_layers; ++li) {
      Layer& L = layers_[size_t(li)];
      // --- attention, with SubLN before the output projection
      b.rmsnorm(x, L.attn_norm.f32(), T, H, s.norm_eps, ws.h.f32());
      b.ternary_matmul(L.wq, ws.h.f32(), T, ws.q.f32());
      b.ternary_matmul(L.wk, ws.h.f32(), T, ws.k.f32());
      b.ternary_matmul(L.wv, ws.h.f32(), T, ws.v.f32());
      b.rope(ws.q.f32(), T, s.n_heads, hd, s.rope_dims, ws.positions.data(), inv_freq_.f32(),
             s.rope_style);
      b.rope(ws.k.f32(), T, s.n_kv_heads, hd, s.rope_dims, ws.positions.data(), inv_freq_.f32(),
             s.rope_style);
      attend_items(b, attending, li, s.n_heads, 1.0f / std::sqrt(float(hd)), ws.q.f32(), ws.k.f32(),
                   ws.v.f32(), ws.attn.f32());
      b.rmsnorm(ws.attn.f32(), L.attn_sub_norm.f32(), T, s.n_heads * hd, s.norm_eps,
                ws.attn.f32());
      b.ternary_matmul(L.wo, ws.attn.f32(), T, ws.out.f32());
      b.add(x, ws.out.f32(), T * H);

      // --- feed-forward, with SubLN before the down projection
      b.rmsnorm(x, L.ffn_norm.f32(), T, H, s.norm_eps, ws.h.f32());
      b.ternary_matmul(L.w_gate, ws.h.f32(), T, ws.gate.f32());
      b.ternary_matmul(L.w_up, ws.h.f32(), T, ws.up.f32());
      if (s.ffn_squared_relu)
        b.relu2_mul(ws.gate.f32(), ws.up.f32(), T * F, ws.gate.f32());
      else
        b.silu_mul(ws.gate.f32(), ws.up.f32(), T * F, ws.gate.f32());
      b.rmsnorm(ws.gate.f32(), L.ffn_sub_norm.f32(), T, F, s.norm_eps, ws.gate.f32());
      b.ternary_matmul(L.w_down, ws.gate.f32(), T, ws.out.f32());
      b.add(x, ws.out.f32(), T * H);
    }
    for (int64_t i = 0; i < n_items; ++i) advance(*items[i].state, items[i].n);

    std::vector<HeadRequest> wanted(static_cast<size_t>(n_items));
    for (int64_t i = 0; i < n_items; ++i)
      wanted[size_t(i)] = head_request(items[i], attending[size_t(i)].row);
    const OutputHead head{&output_, output_norm_.f32(), s.norm_eps, H, s.vocab_size, kHeadRows};
    head.run(b, x, wanted.data(), n_items, all_logits, ws.h.f32(), ws.logits.f32());
  }

  Weight embed_, output_;
  DeviceBuffer output_norm_, inv_freq_;
  std::vector<Layer> layers_;
  std::deque<std::vector<uint8_t>> storage_;  // projections turned into I2_S at load
};

}  // namespace

std::unique_ptr<Model> load_bitnet(const ModelFile& file, Backend& backend) {
  return std::make_unique<Bitnet>(file, backend);
}

}  // namespace kiln
