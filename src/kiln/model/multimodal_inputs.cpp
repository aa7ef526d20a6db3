#include "kiln/model/multimodal_inputs.h"

#include <algorithm>

#include "kiln/core/error.h"

namespace kiln {

void Model::forward(SequenceState& state, const int32_t* tokens, int64_t n, float* logits,
                    bool all_logits, const ForwardInputs& inputs) {
  KILN_CHECK(inputs.n_embeds == 0 && !inputs.mrope_positions && state.rope_offset() == 0,
             "the ", spec_.arch, " model does not take images");
  forward(state, tokens, n, logits, all_logits);
}

void MropeTables::init(Backend& b, const ModelSpec& s, const std::vector<float>& inv_freq) {
  enabled_ = !s.mrope_sections.empty();
  if (!enabled_) return;
  const auto& sec = s.mrope_sections;
  const int64_t n = int64_t(inv_freq.size());
  int64_t total = 0;
  for (int64_t v : sec) total += v;
  // Interleaved (Qwen3.5): frequency i goes to height if i % 3 == 1 and
  // i < 3 * sec[1], width likewise, time otherwise, whatever the sections
  // add up to (transformers' apply_interleaved_mrope). In sections
  // (Qwen3-VL): consecutive runs, which must cover the frequencies.
  KILN_CHECK(sec.size() == 3 && (s.mrope_interleaved || total == n), "M-RoPE sections [",
             sec.size() > 0 ? sec[0] : 0, ", ...] must be three that add up to the ", n,
             " rotary frequencies");
  for (int c = 0; c < 3; ++c) {
    std::vector<float> f(inv_freq.size(), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      int comp;
      if (s.mrope_interleaved)
        comp = (i % 3 == 1 && i < 3 * sec[1]) ? 1 : (i % 3 == 2 && i < 3 * sec[2]) ? 2 : 0;
      else
        comp = i < sec[0] ? 0 : i < sec[0] + sec[1] ? 1 : 2;
      if (comp == c) f[size_t(i)] = inv_freq[size_t(i)];
    }
    inv_[c] = DeviceBuffer(b, f.size() * sizeof(float));
    b.to_device(inv_[c].get(), f.data(), inv_[c].bytes());
  }
}

void MropeTables::apply(Backend& b, float* x, int64_t T, int64_t n_heads, int64_t head_dim,
                        int64_t rot_dims, const int32_t* positions, RopeStyle style) const {
  for (int c = 0; c < 3; ++c)
    b.rope(x, T, n_heads, head_dim, rot_dims, positions + c * T, inv_[c].f32(), style);
}

InputsChunk slice_inputs(const ForwardInputs& in, int64_t n_total, int64_t begin, int64_t n,
                         int64_t hidden) {
  InputsChunk c;
  std::vector<int64_t> picked;
  for (int64_t i = 0; i < in.n_embeds; ++i) {
    const int64_t r = in.embed_rows[i];
    KILN_CHECK(r >= 0 && r < n_total, "image embedding row ", r, " is outside the prompt");
    if (r >= begin && r < begin + n) picked.push_back(i);
  }
  for (int64_t i : picked) {
    c.rows.push_back(int32_t(in.embed_rows[i] - begin));
    c.embeds.insert(c.embeds.end(), in.embeds + i * hidden, in.embeds + (i + 1) * hidden);
  }
  for (int64_t l = 0; l < in.n_deepstack && !picked.empty(); ++l)
    for (int64_t i : picked) {
      const float* src = in.deepstack + (l * in.n_embeds + i) * hidden;
      c.deepstack.insert(c.deepstack.end(), src, src + hidden);
    }
  if (in.mrope_positions)
    for (int comp = 0; comp < 3; ++comp)
      c.positions.insert(c.positions.end(), in.mrope_positions + comp * n_total + begin,
                         in.mrope_positions + comp * n_total + begin + n);
  c.view.n_embeds = int64_t(picked.size());
  c.view.embeds = c.embeds.data();
  c.view.embed_rows = c.rows.data();
  c.view.n_deepstack = picked.empty() ? 0 : in.n_deepstack;
  c.view.deepstack = c.deepstack.data();
  c.view.mrope_positions = in.mrope_positions ? c.positions.data() : nullptr;
  return c;
}

void place_embeddings(Backend& b, const ForwardInputs& in, float* x, int64_t hidden) {
  for (int64_t i = 0; i < in.n_embeds; ++i)
    b.to_device(x + int64_t(in.embed_rows[i]) * hidden, in.embeds + i * hidden,
                size_t(hidden) * sizeof(float));
}

void add_deepstack(Backend& b, const ForwardInputs& in, int64_t layer, float* x, int64_t hidden) {
  if (layer >= in.n_deepstack || in.n_embeds == 0) return;
  DeviceBuffer feats(b, size_t(in.n_embeds * hidden) * sizeof(float));
  b.to_device(feats.get(), in.deepstack + layer * in.n_embeds * hidden, feats.bytes());
  const std::vector<float> ones(size_t(in.n_embeds), 1.0f);
  b.scatter_add_rows(x, feats.f32(), in.embed_rows, ones.data(), in.n_embeds, hidden);
}

}  // namespace kiln
