// Hugging Face tensor names -> kiln's canonical (llama.cpp GGUF) names.
#include <array>
#include <cctype>
#include <string>
#include <utility>

#include "kiln/model/model_file.h"

namespace kiln {
namespace {

bool consume(std::string& s, std::string_view prefix) {
  if (s.compare(0, prefix.size(), prefix) != 0) return false;
  s.erase(0, prefix.size());
  return true;
}

// Per-layer module paths (after "layers.N.") and their GGUF names.
constexpr std::array<std::pair<std::string_view, std::string_view>, 31> kLayerNames = {{
    {"input_layernorm", "attn_norm"},
    {"post_attention_layernorm", "ffn_norm"},
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"},
    {"self_attn.q_norm", "attn_q_norm"},
    {"self_attn.k_norm", "attn_k_norm"},
    {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
    {"mlp.gate", "ffn_gate_inp"},
    // transformers 5 keeps all experts of a layer in one 3-D tensor
    {"mlp.experts.gate_up_proj", "ffn_gate_up_exps"},
    {"mlp.experts.down_proj", "ffn_down_exps"},
    {"mlp.experts.gate_proj", "ffn_gate_exps"},
    {"mlp.experts.up_proj", "ffn_up_exps"},
    {"mlp.shared_expert_gate", "ffn_gate_inp_shexp"},
    {"mlp.shared_expert.gate_proj", "ffn_gate_shexp"},
    {"mlp.shared_expert.up_proj", "ffn_up_shexp"},
    {"mlp.shared_expert.down_proj", "ffn_down_shexp"},
    // Gated DeltaNet (Qwen3.5 split projections, Qwen3-Next fused ones)
    {"linear_attn.in_proj_qkv", "attn_qkv"},
    {"linear_attn.in_proj_z", "attn_gate"},
    {"linear_attn.in_proj_b", "ssm_beta"},
    {"linear_attn.in_proj_a", "ssm_alpha"},
    {"linear_attn.in_proj_qkvz", "ssm_in"},
    {"linear_attn.in_proj_ba", "ssm_ba"},
    {"linear_attn.conv1d", "ssm_conv1d"},
    {"linear_attn.norm", "ssm_norm"},
    {"linear_attn.out_proj", "ssm_out"},
    // BitNet's SubLN norms (their weight_scale tensors map with the projections)
    {"self_attn.attn_sub_norm", "attn_sub_norm"},
    {"mlp.ffn_sub_norm", "ffn_sub_norm"},
}};

}  // namespace

std::string canonical_name_from_hf(const std::string& hf_name) {
  std::string s = hf_name;
  // Multimodal checkpoints nest the language model.
  if (!consume(s, "model.language_model.") && !consume(s, "language_model.model.")) {
    if (s == "lm_head.weight" || s == "language_model.lm_head.weight") return "output.weight";
    if (!consume(s, "model.")) return "";
  }
  if (s == "embed_tokens.weight") return "token_embd.weight";
  if (s == "norm.weight") return "output_norm.weight";
  if (!consume(s, "layers.")) return "";

  size_t dot = s.find('.');
  if (dot == std::string::npos) return "";
  const std::string layer = s.substr(0, dot);
  s.erase(0, dot + 1);

  size_t last = s.rfind('.');
  if (last == std::string::npos) return "";
  const std::string suffix = s.substr(last);  // ".weight" / ".bias"
  std::string module = s.substr(0, last);
  // DeltaNet parameters that are not a module's weight. A_log keeps its own
  // name: GGUF's ssm_a holds -exp(A_log), already transformed.
  if (module == "linear_attn" && suffix == ".A_log") return "blk." + layer + ".ssm_a_log";
  if (module == "linear_attn" && suffix == ".dt_bias") return "blk." + layer + ".ssm_dt.bias";

  // Per-expert tensors: mlp.experts.E.gate_proj -> ffn_gate_exps.E
  std::string expert;
  if (module.rfind("mlp.experts.", 0) == 0) {
    std::string rest = module.substr(12);
    size_t d = rest.find('.');
    if (d != std::string::npos && std::isdigit(static_cast<unsigned char>(rest[0]))) {
      expert = rest.substr(0, d);
      module = "mlp.experts." + rest.substr(d + 1);
    }
  }
  for (const auto& [hf, gguf] : kLayerNames) {
    if (module == hf) {
      std::string out = "blk." + layer + "." + std::string(gguf);
      if (!expert.empty()) out += "." + expert;
      return out + suffix;
    }
  }
  return "";
}

}  // namespace kiln
