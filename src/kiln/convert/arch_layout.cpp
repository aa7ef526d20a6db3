// The architectures the writers know and the tensors each one's GGUF holds.
#include <array>
#include <cmath>

#include "kiln/convert/parts.h"
#include "kiln/core/error.h"

namespace kiln::convert {
namespace {

constexpr std::array kConvertArchs = {
    ConvertArch{"llama", "llama", true},
    ConvertArch{"qwen3", "qwen3", false},
    ConvertArch{"qwen3moe", "qwen3moe", false},
    ConvertArch{"smollm3", "smollm3", true},
    // BitNet b1.58 as bitnet.cpp's 2B-4T files name it (squared ReLU, q/k permuted).
    ConvertArch{"bitnet", "bitnet-b1.58", true},
    ConvertArch{"qwen35", "qwen35", false},
    ConvertArch{"qwen35moe", "qwen35moe", false},
    ConvertArch{"qwen3next", "qwen3next", false},
};

std::string convert_arch_list() {
  std::string s;
  for (const auto& a : kConvertArchs) s += (s.empty() ? "" : ", ") + std::string(a.arch);
  return s;
}

}  // namespace

const ConvertArch& require_convert_arch(const std::string& arch) {
  for (const auto& a : kConvertArchs)
    if (a.arch == arch) return a;
  fail("converting ", arch, " is not supported yet (kiln converts: ", convert_arch_list(), ")");
}

std::vector<TensorShape> model_tensor_shapes(const ModelSpec& s) {
  require_convert_arch(s.arch);
  if (is_hybrid_arch(s.arch)) return hybrid_tensor_shapes(s);
  const int64_t H = s.hidden, V = s.vocab_size, hd = s.head_dim;
  std::vector<TensorShape> out;
  out.push_back({"token_embd.weight", {V, H}});
  if (s.rope_scaling.kind == RopeScaling::Kind::Llama3)
    out.push_back({"rope_freqs.weight", {s.rope_dims / 2}});
  for (int64_t l = 0; l < s.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    out.push_back({p + "attn_norm.weight", {H}});
    out.push_back({p + "attn_q.weight", {s.n_heads * hd, H}});
    out.push_back({p + "attn_k.weight", {s.n_kv_heads * hd, H}});
    out.push_back({p + "attn_v.weight", {s.n_kv_heads * hd, H}});
    out.push_back({p + "attn_output.weight", {H, s.n_heads * hd}});
    if (s.arch == "bitnet") out.push_back({p + "attn_sub_norm.weight", {s.n_heads * hd}});
    if (s.qk_norm) {
      out.push_back({p + "attn_q_norm.weight", {hd}});
      out.push_back({p + "attn_k_norm.weight", {hd}});
    }
    out.push_back({p + "ffn_norm.weight", {H}});
    if (s.is_moe() && s.layer_is_moe[size_t(l)]) {
      const int64_t E = s.n_experts, I = s.expert_ffn_hidden;
      out.push_back({p + "ffn_gate_inp.weight", {E, H}});
      out.push_back({p + "ffn_gate_exps.weight", {E, I, H}});
      out.push_back({p + "ffn_up_exps.weight", {E, I, H}});
      out.push_back({p + "ffn_down_exps.weight", {E, H, I}});
    } else {
      const int64_t F = s.ffn_hidden;
      KILN_CHECK(F > 0, s.arch, " model: feed-forward size must be positive");
      out.push_back({p + "ffn_gate.weight", {F, H}});
      out.push_back({p + "ffn_up.weight", {F, H}});
      out.push_back({p + "ffn_down.weight", {H, F}});
      if (s.arch == "bitnet") out.push_back({p + "ffn_sub_norm.weight", {F}});
    }
  }
  out.push_back({"output_norm.weight", {H}});
  if (!s.tied_embeddings) out.push_back({"output.weight", {V, H}});
  return out;
}

std::vector<float> llama3_rope_factors(const ModelSpec& s) {
  // Divisors of each inverse frequency: 1 for short wavelengths, `factor`
  // for long ones, a blend between (Llama 3.1's rope scaling).
  const RopeScaling& sc = s.rope_scaling;
  const int64_t half = s.rope_dims / 2;
  const double low_wavelen = double(sc.original_context) / sc.low_freq_factor;
  const double high_wavelen = double(sc.original_context) / sc.high_freq_factor;
  std::vector<float> out(size_t(half), 1.0f);
  for (int64_t i = 0; i < half; ++i) {
    const double freq = 1.0 / std::pow(double(s.rope_theta), double(2 * i) / double(s.rope_dims));
    const double wavelen = 2.0 * M_PI / freq;
    if (wavelen < high_wavelen) {
      out[size_t(i)] = 1.0f;
    } else if (wavelen > low_wavelen) {
      out[size_t(i)] = sc.factor;
    } else {
      const double smooth = (double(sc.original_context) / wavelen - sc.low_freq_factor) /
                            (sc.high_freq_factor - sc.low_freq_factor);
      out[size_t(i)] = float(1.0 / ((1.0 - smooth) / sc.factor + smooth));
    }
  }
  return out;
}

}  // namespace kiln::convert
