// Qwen3.5 and Qwen3-Next as llama.cpp's converter writes them: the tensors
// each layer kind holds, the transforms it applies to the Hugging Face
// weights, and the <arch>.ssm.* metadata its loader reads.
//
// Transforms, as llama.cpp's loaders expect them:
// - RMSNorm weights are zero-centred in Hugging Face (applied as 1 + w) and
//   stored with the 1 added; the DeltaNet output norm (ssm_norm) is not.
// - A_log is stored as A = -exp(A_log) (ssm_a).
// - conv1d [C, 1, K] loses its middle dimension.
// - Qwen3-Next's fused in_proj_qkvz (per key head [q, k, v, z]) becomes
//   attn_qkv (all q, all k, all v) and attn_gate (z); in_proj_ba stays fused.
// - Qwen3.5 regroups value heads from grouped (per key head) to tiled order,
//   so that GGML's broadcast of key heads over value heads applies: every
//   tensor with a value-head axis (v rows of in_proj_qkv and of conv1d,
//   in_proj_z, in_proj_a/b, A_log, dt_bias, columns of out_proj).
#include <cmath>
#include <memory>

#include "kiln/convert/parts.h"
#include "kiln/core/error.h"
#include "kiln/model/model_file.h"
#include "kiln/quant/dequantize.h"

namespace kiln::convert {
namespace {

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Value heads regrouped (Qwen3.5's converter) when there are more of them than key heads.
bool regroups_v_heads(const ModelSpec& s) {
  return s.arch != "qwen3next" && s.linear_v_heads != s.linear_k_heads;
}

// Index i of a value-head axis of heads of `dim` values, in tiled order
// (head p = j * k_heads + g), comes from this index in grouped order
// (head g * per_k + j).
int64_t grouped_index(const ModelSpec& s, int64_t i, int64_t dim) {
  const int64_t nk = s.linear_k_heads, per_k = s.linear_v_heads / s.linear_k_heads;
  const int64_t head = i / dim, j = head / nk, g = head % nk;
  return (g * per_k + j) * dim + i % dim;
}

// Row r of a [q, k, v] channel axis (in_proj_qkv, conv1d): q and k stay, the
// v rows regroup.
int64_t qkv_source_row(const ModelSpec& s, int64_t r) {
  const int64_t qk = 2 * s.linear_k_heads * s.linear_k_dim;
  return r < qk ? r : qk + grouped_index(s, r - qk, s.linear_v_dim);
}

// Every full-attention layer is the k-th: llama.cpp can only say that much.
int64_t full_attention_interval(const ModelSpec& s) {
  for (int64_t k = 1; k <= s.n_layers; ++k) {
    bool match = true;
    for (int64_t i = 0; i < s.n_layers && match; ++i)
      match = s.layer_is_linear[size_t(i)] == ((i + 1) % k != 0);
    if (match) return k;
  }
  return 0;
}

using RowMap = std::function<int64_t(int64_t)>;

PlannedTensor mapped_rows(const TensorShape& ts, const TensorView* v, RowMap map) {
  PlannedTensor p{ts.name, ts.shape, v->dtype};
  if (map)
    p.raw_row = [v, map = std::move(map)](int64_t r) { return v->row(map(r)); };
  else
    p.raw_row = [v](int64_t r) { return v->row(r); };
  return p;
}

// Rows widened to f32 and changed by fn(source row, output row, row index).
PlannedTensor transformed_rows(const TensorShape& ts, const TensorView* v,
                               std::function<void(const float*, float*, int64_t)> fn) {
  PlannedTensor p{ts.name, ts.shape};
  const int64_t cols = v->cols();
  p.generate = [v, cols, fn = std::move(fn)](int64_t r, float* dst) {
    std::vector<float> src(static_cast<size_t>(cols));
    dequantize_row(v->dtype, v->row(r), src.data(), cols);
    fn(src.data(), dst, r);
  };
  return p;
}

const TensorView& source(const ModelFile& f, const std::string& name, int64_t numel,
                         std::set<std::string>& used) {
  const TensorView& v = f.get(name);
  KILN_CHECK(v.numel() == numel, f.path(), ": tensor ", name, " has shape ", shape_string(v.shape),
             ", expected ", numel, " values");
  used.insert(name);
  return v;
}

const TensorView& source(const ModelFile& f, const std::string& name,
                         const std::vector<int64_t>& shape, std::set<std::string>& used) {
  const TensorView& v = f.get(name, shape);
  used.insert(name);
  return v;
}

}  // namespace

bool is_hybrid_arch(const std::string& arch) {
  return arch == "qwen35" || arch == "qwen35moe" || arch == "qwen3next";
}

std::vector<TensorShape> hybrid_tensor_shapes(const ModelSpec& s) {
  const int64_t H = s.hidden, V = s.vocab_size, hd = s.head_dim;
  const int64_t nk = s.linear_k_heads, nv = s.linear_v_heads, dk = s.linear_k_dim;
  const int64_t dv = s.linear_v_dim, C = 2 * nk * dk + nv * dv;
  KILN_CHECK(int64_t(s.layer_is_linear.size()) == s.n_layers, s.arch,
             " model: no layer types to convert");
  std::vector<TensorShape> out;
  out.push_back({"token_embd.weight", {V, H}});
  // Within a layer, llama.cpp's order (that of the Hugging Face names).
  for (int64_t l = 0; l < s.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    out.push_back({p + "attn_norm.weight", {H}});
    if (s.layer_is_linear[size_t(l)]) {
      out.push_back({p + "ssm_a", {nv}});
      out.push_back({p + "ssm_conv1d.weight", {C, s.linear_conv_kernel}});
      out.push_back({p + "ssm_dt.bias", {nv}});
      if (s.arch == "qwen3next") {
        out.push_back({p + "ssm_ba.weight", {2 * nv, H}});
      } else {
        out.push_back({p + "ssm_alpha.weight", {nv, H}});
        out.push_back({p + "ssm_beta.weight", {nv, H}});
      }
      out.push_back({p + "attn_qkv.weight", {C, H}});
      out.push_back({p + "attn_gate.weight", {nv * dv, H}});
      out.push_back({p + "ssm_norm.weight", {dv}});
      out.push_back({p + "ssm_out.weight", {H, nv * dv}});
    }
    if (s.is_moe() && s.layer_is_moe[size_t(l)]) {
      const int64_t E = s.n_experts, I = s.expert_ffn_hidden;
      out.push_back({p + "ffn_down_exps.weight", {E, H, I}});
      out.push_back({p + "ffn_gate_exps.weight", {E, I, H}});
      out.push_back({p + "ffn_up_exps.weight", {E, I, H}});
      out.push_back({p + "ffn_gate_inp.weight", {E, H}});
      if (const int64_t S = s.shared_expert_ffn_hidden; S > 0) {
        out.push_back({p + "ffn_down_shexp.weight", {H, S}});
        out.push_back({p + "ffn_gate_shexp.weight", {S, H}});
        out.push_back({p + "ffn_up_shexp.weight", {S, H}});
        out.push_back({p + "ffn_gate_inp_shexp.weight", {1, H}});
      }
    } else {
      const int64_t F = s.ffn_hidden;
      KILN_CHECK(F > 0, s.arch, " model: feed-forward size must be positive");
      out.push_back({p + "ffn_down.weight", {H, F}});
      out.push_back({p + "ffn_gate.weight", {F, H}});
      out.push_back({p + "ffn_up.weight", {F, H}});
    }
    out.push_back({p + "post_attention_norm.weight", {H}});
    if (!s.layer_is_linear[size_t(l)]) {
      // q carries the output gate: per head [q, gate].
      const int64_t q_rows = (s.attn_output_gate ? 2 : 1) * s.n_heads * hd;
      out.push_back({p + "attn_k_norm.weight", {hd}});
      out.push_back({p + "attn_k.weight", {s.n_kv_heads * hd, H}});
      out.push_back({p + "attn_output.weight", {H, s.n_heads * hd}});
      out.push_back({p + "attn_q_norm.weight", {hd}});
      out.push_back({p + "attn_q.weight", {q_rows, H}});
      out.push_back({p + "attn_v.weight", {s.n_kv_heads * hd, H}});
    }
  }
  out.push_back({"output_norm.weight", {H}});
  if (!s.tied_embeddings) out.push_back({"output.weight", {V, H}});
  return out;
}

bool plan_hybrid_tensor(const ModelFile& f, const TensorShape& ts, std::set<std::string>& used,
                        PlannedTensor& out) {
  const ModelSpec& s = f.spec();
  const std::string& name = ts.name;
  const std::string prefix = name.substr(0, name.find('.', 4) + 1);  // "blk.N."
  const int64_t nk = s.linear_k_heads, nv = s.linear_v_heads, dk = s.linear_k_dim;
  const int64_t dv = s.linear_v_dim, C = 2 * nk * dk + nv * dv;
  const bool regroup = regroups_v_heads(s);

  // Zero-centred norms: stored as 1 + w. Hugging Face's post_attention_layernorm
  // is kiln's ffn_norm and llama.cpp's post_attention_norm here.
  if (ends_with(name, "_norm.weight") && !ends_with(name, ".ssm_norm.weight")) {
    std::string src = name;
    if (ends_with(name, ".post_attention_norm.weight")) src = prefix + "ffn_norm.weight";
    const TensorView& v = source(f, src, ts.shape, used);
    const int64_t n = ts.shape.back();
    const float one = s.norm_unit_offset ? 1.0f : 0.0f;
    out = transformed_rows(ts, &v, [n, one](const float* x, float* y, int64_t) {
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] + one;
    });
    return true;
  }
  if (ends_with(name, ".ssm_a") || ends_with(name, ".ssm_dt.bias")) {
    const bool a = ends_with(name, ".ssm_a");
    const TensorView& v = source(f, a ? prefix + "ssm_a_log" : name, ts.shape, used);
    out = transformed_rows(ts, &v, [&s, nv, a, regroup](const float* x, float* y, int64_t) {
      for (int64_t i = 0; i < nv; ++i) {
        const float src = x[regroup ? grouped_index(s, i, 1) : i];
        y[i] = a ? -std::exp(src) : src;
      }
    });
    return true;
  }
  if (ends_with(name, ".ssm_conv1d.weight")) {
    // [C, 1, K]: one row of K taps per channel; the v channels regroup.
    const TensorView& v = source(f, name, C * s.linear_conv_kernel, used);
    RowMap map;
    if (regroup) map = [&s](int64_t r) { return qkv_source_row(s, r); };
    out = mapped_rows(ts, &v, std::move(map));
    return true;
  }
  if (ends_with(name, ".attn_qkv.weight") || ends_with(name, ".attn_gate.weight")) {
    const bool gate = ends_with(name, ".attn_gate.weight");
    if (f.find(prefix + "ssm_in.weight")) {
      // Qwen3-Next: per key head [q (dk), k (dk), v (rv), z (rv)].
      const TensorView& v = source(f, prefix + "ssm_in.weight", (C + nv * dv) * s.hidden, used);
      const int64_t rv = nv / nk * dv, G = 2 * dk + 2 * rv;
      RowMap map;
      if (gate)
        map = [rv, G, dk](int64_t r) { return r / rv * G + 2 * dk + rv + r % rv; };
      else
        map = [rv, G, dk, nk](int64_t r) {
          const int64_t qk_rows = nk * dk;
          if (r < 2 * qk_rows) {
            const int64_t part = r / qk_rows, i = r % qk_rows;  // q or k
            return i / dk * G + part * dk + i % dk;
          }
          const int64_t i = r - 2 * qk_rows;
          return i / rv * G + 2 * dk + i % rv;
        };
      out = mapped_rows(ts, &v, std::move(map));
      return true;
    }
    const TensorView& v = source(f, name, ts.shape, used);
    RowMap map;
    if (regroup && gate) map = [&s, dv](int64_t r) { return grouped_index(s, r, dv); };
    if (regroup && !gate) map = [&s](int64_t r) { return qkv_source_row(s, r); };
    out = mapped_rows(ts, &v, std::move(map));
    return true;
  }
  if (ends_with(name, ".ssm_alpha.weight") || ends_with(name, ".ssm_beta.weight")) {
    const TensorView& v = source(f, name, ts.shape, used);
    RowMap map;
    if (regroup) map = [&s](int64_t r) { return grouped_index(s, r, 1); };
    out = mapped_rows(ts, &v, std::move(map));
    return true;
  }
  if (ends_with(name, ".ssm_out.weight") && regroup) {
    const TensorView& v = source(f, name, ts.shape, used);
    const int64_t n = ts.shape.back();
    out = transformed_rows(ts, &v, [&s, n, dv](const float* x, float* y, int64_t) {
      for (int64_t i = 0; i < n; ++i) y[i] = x[grouped_index(s, i, dv)];
    });
    return true;
  }
  return false;
}

void write_hybrid_metadata(GgufWriter& w, const ModelSpec& s, const nlohmann::json& config) {
  const std::string a = std::string(require_convert_arch(s.arch).gguf_name) + ".";
  if (s.shared_expert_ffn_hidden > 0)
    w.set_u32(a + "expert_shared_feed_forward_length", uint32_t(s.shared_expert_ffn_hidden));
  w.set_u32(a + "ssm.conv_kernel", uint32_t(s.linear_conv_kernel));
  w.set_u32(a + "ssm.state_size", uint32_t(s.linear_k_dim));
  w.set_u32(a + "ssm.group_count", uint32_t(s.linear_k_heads));
  w.set_u32(a + "ssm.time_step_rank", uint32_t(s.linear_v_heads));
  w.set_u32(a + "ssm.inner_size", uint32_t(s.linear_v_heads * s.linear_v_dim));
  const int64_t k = full_attention_interval(s);
  KILN_CHECK(k > 0, s.arch, ": these layer_types are not periodic; a GGUF can only say \"every "
                    "k-th layer is full attention\"");
  w.set_u32(a + "full_attention_interval", uint32_t(k));
  if (s.arch == "qwen35" || s.arch == "qwen35moe") {
    // Qwen3.5 always runs interleaved M-RoPE; llama.cpp requires the
    // sections, Qwen3.5's own ones when the config leaves them out.
    std::vector<int32_t> sections = {11, 11, 10, 0};
    const nlohmann::json& c = config.contains("text_config") && config["text_config"].is_object()
                                  ? config["text_config"]
                                  : config;
    for (const char* key : {"rope_parameters", "rope_scaling"}) {
      if (!c.contains(key) || !c[key].is_object() || !c[key].contains("mrope_section")) continue;
      const nlohmann::json& m = c[key]["mrope_section"];
      KILN_CHECK(m.is_array() && m.size() <= 4, "config.json: ", key,
                 ".mrope_section must be a list of at most 4 numbers");
      sections.assign(4, 0);
      for (size_t i = 0; i < m.size(); ++i) sections[i] = m[i].get<int32_t>();
      break;
    }
    w.set_i32_array(a + "rope.dimension_sections", sections);
  }
}

}  // namespace kiln::convert
